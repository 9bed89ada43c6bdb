/**
 * The replicated hub: `BSU` R3 on a 3-node JetStream cluster (real nats-servers on loopback) keeps
 * every acknowledged message, exactly once, while its leader is SIGKILLed under load and restarted;
 * the restarted node catches up and a durable consumer reads on across the leader change.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { AckPolicy, jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { Registry } from 'prom-client';
import { DLQ_STREAM, ensureDlqStream } from '../cloud/dlq.ts';
import { ensureHubStream } from '../cloud/hub-stream.ts';
import { runConsumer } from '../cloud/runner.ts';
import type { Sink } from '../cloud/sink.ts';
import { silentLogger } from '../lib/log.ts';
import { ReplicasNotSupportedError } from '../lib/nats.ts';
import { killServer } from '../stack/server-process.ts';
import { HUB_STREAM } from '../schemas/streams.ts';
import { startHubCluster, replicaState, type HubCluster } from './support/cluster.ts';
import { natsConnect, readStream } from './support/jetstream.ts';
import { TestServers, waitFor } from './support/servers.ts';

const LIMITS = { hubMaxAgeS: 3600, hubMaxBytes: -1, hubDuplicateWindowS: 900 };
const SUBJECT = 'bsu.site-1.u1.telemetry';
const msgId = (i: number): string => `site-1.u1.${i}`;

describe('hub cluster: BSU R3', () => {
  const servers = new TestServers('hub-cluster');
  let cluster: HubCluster;
  let nc: NatsConnection;
  let jsm: JetStreamManager;

  before(async () => {
    cluster = await startHubCluster(servers);
    nc = await connect({ servers: cluster.urls, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
    // Healthy nodes may still be electing the JetStream meta leader.
    jsm = await waitFor('the cluster to answer JetStream', () => jetstreamManager(nc).catch(() => undefined));
  });
  after(async () => {
    await nc?.close();
    await servers.stopAll();
  });

  test('a single server refuses replicas with an error naming the setting', async () => {
    const single = await servers.nats();
    const snc = await natsConnect(single.url);
    try {
      const sjsm = await jetstreamManager(snc);
      await assert.rejects(
        ensureHubStream(sjsm, { ...LIMITS, hubReplicas: 3 }),
        (err: unknown) => err instanceof ReplicasNotSupportedError && /hubReplicas/.test(err.message),
      );
      await assert.rejects(
        ensureDlqStream(sjsm, { replicas: 3 }),
        (err: unknown) => err instanceof ReplicasNotSupportedError && /dlqReplicas/.test(err.message),
      );
    } finally {
      await snc.close();
    }
  });

  test('BSU is created R1 and changed to R3 in place', async () => {
    const created = await ensureHubStream(jsm, LIMITS);
    assert.equal(created.config.num_replicas, 1);
    await ensureHubStream(jsm, { ...LIMITS, hubReplicas: 3 });
    const info = await waitFor('3 current replicas', async () => {
      const i = await jsm.streams.info(HUB_STREAM);
      return i.cluster?.leader && i.cluster.replicas?.filter((r) => r.current).length === 2 ? i : undefined;
    });
    assert.equal(info.config.num_replicas, 3);
    // Without a setting, the count stays what it is.
    assert.equal((await ensureHubStream(jsm, LIMITS)).config.num_replicas, 3);
  });

  test('a consumer creates a missing BSU_DLQ with its dlqReplicas', async () => {
    await assert.rejects(jsm.streams.info(DLQ_STREAM), /stream not found/);
    // A durable's filter needs subjects on BSU: these stand in for the sites' sources.
    const bsu = await jsm.streams.info(HUB_STREAM);
    await jsm.streams.update(HUB_STREAM, { ...bsu.config, subjects: ['bsu.>'] });
    const controller = new AbortController();
    const sink: Sink = {
      name: 'none',
      open: async () => undefined,
      write: async () => ({ rejected: [] }),
      readiness: async () => ({ ready: true, reasons: [] }),
      close: async () => undefined,
    };
    const run = runConsumer({
      nc,
      durable: 'dlq-replicas',
      filterSubjects: ['bsu.>'],
      dlqReplicas: 3,
      sink,
      log: silentLogger,
      registry: new Registry(),
      signal: controller.signal,
    });
    try {
      const dlq = await waitFor('the consumer to create BSU_DLQ', () =>
        jsm.streams.info(DLQ_STREAM).catch(() => undefined),
      );
      assert.equal(dlq.config.num_replicas, 3);
      await waitFor('the consumer to start', () =>
        jsm.consumers.info(HUB_STREAM, 'dlq-replicas').catch(() => undefined),
      );
    } finally {
      controller.abort();
      await run.done;
      await jsm.consumers.delete(HUB_STREAM, 'dlq-replicas').catch(() => undefined);
    }
  });

  test('BSU_DLQ changes its replica count in place; without the option it keeps its count', async () => {
    await ensureDlqStream(jsm);
    assert.equal((await jsm.streams.info(DLQ_STREAM)).config.num_replicas, 3);
    await ensureDlqStream(jsm, { replicas: 1 });
    assert.equal((await jsm.streams.info(DLQ_STREAM)).config.num_replicas, 1);
    await ensureDlqStream(jsm, { replicas: 3 });
    assert.equal((await jsm.streams.info(DLQ_STREAM)).config.num_replicas, 3);
  });

  test('the leader is killed under load and restarted: every message once, the node catches up', async () => {
    // BSU takes its data by sourcing the sites; here a publisher stands in for the sources, so the
    // test gives BSU the sites' subjects (what a source writes is replicated the same way).
    const before = await jsm.streams.info(HUB_STREAM);
    await jsm.streams.update(HUB_STREAM, { ...before.config, subjects: ['bsu.>'] });
    await jsm.consumers.add(HUB_STREAM, { durable_name: 'reader', ack_policy: AckPolicy.Explicit });

    const js = jetstream(nc, { timeout: 2000 });
    const seen = new Map<string, number>();
    const messages = await (await js.consumers.get(HUB_STREAM, 'reader')).consume({ max_messages: 100 });
    const reading = (async () => {
      for await (const m of messages) {
        const id = m.headers?.get('Nats-Msg-Id') ?? '';
        seen.set(id, (seen.get(id) ?? 0) + 1);
        m.ack();
      }
    })();

    const total = 2000;
    let published = 0;
    let retries = 0;
    let stallMs = 0;
    const publishing = (async () => {
      for (let i = 0; i < total; i++) {
        const first = Date.now();
        for (;;) {
          try {
            await js.publish(SUBJECT, new TextEncoder().encode(`{"i":${i}}`), { msgID: msgId(i) });
            break;
          } catch {
            retries++;
            await new Promise((r) => setTimeout(r, 50));
          }
        }
        stallMs = Math.max(stallMs, Date.now() - first);
        published = i + 1;
        await new Promise((r) => setTimeout(r, 4));
      }
    })();

    await waitFor('a quarter published', () => published >= total / 4, 30_000);
    const leaderName = (await jsm.streams.info(HUB_STREAM)).cluster!.leader!;
    const leader = cluster.nodes.get(leaderName)!;
    await killServer(leader);
    const killedAt = published;
    const newLeader = await waitFor(
      'a new leader',
      async () => {
        const l = (await jsm.streams.info(HUB_STREAM).catch(() => undefined))?.cluster?.leader;
        return l && l !== leaderName ? l : undefined;
      },
      30_000,
    );
    await waitFor('publishing goes on without the old leader', () => published >= killedAt + 200, 30_000);
    const restarted = await servers.restart(leader);
    cluster.nodes.set(leaderName, restarted);
    await publishing;

    const info = await waitFor(
      'every replica current',
      async () => {
        const i = await jsm.streams.info(HUB_STREAM);
        const replicas = i.cluster?.replicas ?? [];
        return replicas.length === 2 && replicas.every((r) => r.current && !r.offline) ? i : undefined;
      },
      30_000,
    );
    assert.equal(info.state.messages, total);
    assert.equal(info.state.last_seq, total);

    // Every message exactly once, in publish order.
    const stored = await readStream(nc, HUB_STREAM);
    assert.deepEqual(
      stored.map((m) => m.headers['Nats-Msg-Id']),
      Array.from({ length: total }, (_, i) => msgId(i)),
    );
    // The restarted node's own copy holds all of it (its monitor, not the leader's answer).
    for (const node of cluster.nodes.values()) {
      const state = await waitFor(`${node.name}'s replica complete`, async () => {
        const s = await replicaState(node, HUB_STREAM);
        return s?.messages === total ? s : undefined;
      });
      assert.equal(state.last_seq, total, node.name);
    }

    // The durable consumer read on across the leader change: every id, none lost.
    await waitFor('the consumer read everything', () => seen.size === total, 30_000);
    messages.stop();
    await reading;
    const redelivered = [...seen.values()].filter((n) => n > 1).length;
    console.log(
      `killed leader ${leaderName} at ${killedAt}/${total}; new leader ${newLeader}; ` +
        `publish retries ${retries}; longest publish stall ${stallMs} ms; consumer redeliveries ${redelivered}`,
    );
  });
});
