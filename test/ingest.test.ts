/**
 * `switchyard ingest` end to end: a `BSU` stream on a real nats-server, two ingest processes side by
 * side (`--sink influx2` into VictoriaMetrics, `--sink influx1` into InfluxDB 1.x, each with its own
 * durable), and what reached each database counted exactly.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { jetstream, jetstreamManager, StorageType, type JetStreamClient } from '@nats-io/jetstream';
import { connect, headers, type NatsConnection } from '@nats-io/transport-node';
import { childEnv } from '../lib/env.ts';
import { sleep } from '../lib/timers.ts';
import { Header, subjectFor } from '../schemas/index.ts';
import { freePort } from '../lib/process.ts';
import { killServer, stopServer, type RunningServer } from '../stack/server-process.ts';
import { devicePayload } from './support/sink-conformance.ts';
import { TestServers, waitFor } from './support/servers.ts';

const BIN = fileURLToPath(new URL('../bin/switchyard.mjs', import.meta.url));
const SITES = ['north', 'south'];
const DEVICES = ['bsu-1', 'bsu-2'];
const KINDS = ['telemetry', 'status', 'event'] as const;

interface Ingest {
  child: ChildProcess;
  opsUrl: string;
  output(): string;
  exited: Promise<number | string>;
}

/** `switchyard ingest` as a child process, the way an operator runs it. */
function startIngest(args: string[], env: Record<string, string>, opsPort: number): Ingest {
  const child = spawn(process.execPath, [BIN, 'ingest', ...args, '--ops-port', String(opsPort)], {
    env: childEnv({ SWITCHYARD_INSECURE: 'true', ...env }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let text = '';
  child.stdout!.on('data', (d: Buffer) => (text += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (text += d.toString()));
  const exited = new Promise<number | string>((resolve) =>
    child.once('exit', (code, signal) => resolve(code ?? signal ?? -1)),
  );
  return { child, opsUrl: `http://127.0.0.1:${opsPort}`, output: () => text, exited };
}

/** Publishes `perDevice` readings of every device (kinds in turn); returns how many of each kind. */
async function publishReadings(
  js: JetStreamClient,
  clock: Map<string, number>,
  perDevice: number,
  pauseMs = 0,
): Promise<Record<(typeof KINDS)[number], number>> {
  const counts = { telemetry: 0, status: 0, event: 0 };
  for (let i = 0; i < perDevice; i++) {
    for (const site of SITES) {
      for (const device of DEVICES) {
        const n = clock.get(`${site}/${device}`) ?? 0;
        clock.set(`${site}/${device}`, n + 1);
        const kind = KINDS[n % 3]!;
        // Device time: one reading a second, ending well in the past (VictoriaMetrics refuses the future).
        const ts = Date.now() - 1_800_000 + n * 1000;
        await js.publish(subjectFor(site, device, kind), JSON.stringify(devicePayload(kind, n, ts)));
        counts[kind]++;
      }
    }
    if (pauseMs > 0) await sleep(pauseMs);
  }
  return counts;
}

async function influxCount(url: string, q: string): Promise<number> {
  const res = await fetch(`${url}/query?db=switchyard`, { method: 'POST', body: new URLSearchParams({ q }) });
  const body = (await res.json()) as { results: { series?: { values: [string, number][] }[] }[] };
  return body.results[0]?.series?.[0]?.values[0]?.[1] ?? 0;
}

async function vmSamples(url: string, metric: string): Promise<number> {
  await fetch(`${url}/internal/force_flush`);
  const text = await (await fetch(`${url}/api/v1/export?match[]=${metric}`)).text();
  return text
    .split('\n')
    .filter((l) => l.trim())
    .reduce((n, l) => n + (JSON.parse(l) as { values: number[] }).values.length, 0);
}

/** What each database holds: telemetry, status and event readings. */
async function stored(vm: RunningServer, influxdb: RunningServer) {
  return {
    influx2: {
      telemetry: await vmSamples(vm.url, 'telemetry_SoC'),
      status: await vmSamples(vm.url, 'status_State_code'),
      event: await vmSamples(vm.url, 'event_raised'),
    },
    influx1: {
      telemetry: await influxCount(influxdb.url, 'SELECT count(SoC) FROM telemetry'),
      status: await influxCount(influxdb.url, 'SELECT count(State_code) FROM status'),
      event: await influxCount(influxdb.url, 'SELECT count(raised) FROM event'),
    },
  };
}

/** Sum of the samples of `name` whose labels include `label`, from a /metrics endpoint. */
async function metric(opsUrl: string, name: string, label: string): Promise<number> {
  const text = await (await fetch(`${opsUrl}/metrics`)).text();
  return text
    .split('\n')
    .filter((l) => l.startsWith(`${name}{`) && l.includes(label))
    .reduce((n, l) => n + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
}

async function deadLetters(nc: NatsConnection) {
  const jsm = await jetstreamManager(nc);
  const info = await jsm.streams.info('BSU_DLQ').catch(() => undefined);
  const out: { subject: string; reason: string; seq: string }[] = [];
  for (let seq = info?.state.first_seq ?? 1; info && seq <= info.state.last_seq; seq++) {
    const m = await jsm.streams.getMessage('BSU_DLQ', { seq });
    if (!m) continue;
    out.push({
      subject: m.subject,
      reason: m.header?.get(Header.dlqReason) ?? '',
      seq: m.header?.get(Header.dlqSeq) ?? '',
    });
  }
  return out.sort((a, b) => (a.subject < b.subject ? -1 : 1));
}

describe('switchyard ingest', () => {
  const servers = new TestServers('ingest');
  let nats: RunningServer;
  let vm: RunningServer;
  let influxdb: RunningServer;
  let nc: NatsConnection;
  let js: JetStreamClient;
  const ingests: Ingest[] = [];
  const clock = new Map<string, number>();
  const expected = { telemetry: 0, status: 0, event: 0 };
  const add = (counts: typeof expected): void => {
    for (const k of KINDS) expected[k] += counts[k];
  };

  before(async () => {
    [nats, vm, influxdb] = await Promise.all([servers.nats(), servers.victoriaMetrics(), servers.influxdb()]);
    nc = await connect({ servers: nats.url });
    js = jetstream(nc);
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: 'BSU', subjects: ['bsu.>'], storage: StorageType.File });
    const env = {
      SWITCHYARD_NATS_URL: nats.url,
      SWITCHYARD_INFLUX2_URL: vm.url,
      SWITCHYARD_INFLUX2_TOKEN: 'local',
      SWITCHYARD_INFLUX1_URL: influxdb.url,
      SWITCHYARD_LOG_LEVEL: 'warn',
      // Short retry delays, so that the test sees the recovery soon after a database is back.
      SWITCHYARD_BACKOFF_MS: '200,500,1000',
    };
    ingests.push(
      startIngest(['--sink', 'influx2'], env, await freePort()),
      startIngest(['--sink', 'influx1'], env, await freePort()),
    );
  });

  after(async () => {
    for (const p of ingests) if (p.child.exitCode === null) p.child.kill('SIGKILL');
    await nc?.close();
    await servers.stopAll();
  });

  test('writes every reading to both engines, each through its own durable, and dead-letters a poison payload', async () => {
    add(await publishReadings(js, clock, 15));
    // A telemetry reading of the wrong type, and a payload the bridge already set aside (kind invalid).
    const poison = await js.publish(
      subjectFor('north', 'bsu-1', 'telemetry'),
      JSON.stringify({ ts: Date.now() - 60_000, seq: 999, SoC: 'full', V: 1, A: 1, W: 1 }),
    );
    const h = headers();
    h.set(Header.invalidReason, 'malformed JSON');
    h.set(Header.claimedKind, 'telemetry');
    await js.publish('bsu.north.bsu-1.invalid', 'not json', { headers: h });
    add(await publishReadings(js, clock, 15));

    await waitFor(
      'both databases to hold every reading',
      async () => {
        const s = await stored(vm, influxdb);
        return (
          JSON.stringify(s.influx2) === JSON.stringify(expected) &&
          JSON.stringify(s.influx1) === JSON.stringify(expected)
        );
      },
      30_000,
      250,
    ).catch(async (err) => {
      assert.fail(
        `${(err as Error).message}: ${JSON.stringify(await stored(vm, influxdb))} vs ${JSON.stringify(expected)}\n${ingests.map((p) => p.output()).join('\n')}`,
      );
    });

    const jsm = await jetstreamManager(nc);
    const durables = (await jsm.consumers.list('BSU').next()).map((c) => c.name).sort();
    assert.deepEqual(durables, ['ingest-influx1', 'ingest-influx2']);

    const dlq = await waitFor('both dead letters', async () => {
      const letters = await deadLetters(nc);
      return letters.length >= 2 ? letters : undefined;
    });
    assert.ok(dlq);
    assert.deepEqual(
      dlq.map((d) => [d.subject, d.seq]),
      [
        ['dlq.ingest-influx1.bsu.north.bsu-1.telemetry', String(poison.seq)],
        ['dlq.ingest-influx2.bsu.north.bsu-1.telemetry', String(poison.seq)],
      ],
    );
    for (const d of dlq) assert.match(d.reason, /^rejected: .*telemetry\.SoC/);
  });

  test('with both databases down for a while under load, ingest waits, retries and loses nothing', async () => {
    const load = publishReadings(js, clock, 40, 50);
    // Under load: both databases have taken some of it before they go down.
    await waitFor('the load to reach both databases', async () => {
      const s = await stored(vm, influxdb);
      return s.influx2.telemetry > expected.telemetry && s.influx1.telemetry > expected.telemetry;
    });
    // InfluxDB 1.x fsyncs before it answers: a hard kill. VictoriaMetrics acknowledges before its
    // data is on disk (docs/ingest.md): stopped, as an orderly restart would.
    await Promise.all([killServer(influxdb), stopServer(vm)]);
    await sleep(3000);
    [influxdb, vm] = await Promise.all([servers.restart(influxdb), servers.restart(vm)]);
    add(await load);

    await waitFor(
      'both databases to hold every reading after the outage',
      async () => {
        const s = await stored(vm, influxdb);
        return (
          JSON.stringify(s.influx2) === JSON.stringify(expected) &&
          JSON.stringify(s.influx1) === JSON.stringify(expected)
        );
      },
      45_000,
      250,
    ).catch(async (err) => {
      assert.fail(
        `${(err as Error).message}: ${JSON.stringify(await stored(vm, influxdb))} vs ${JSON.stringify(expected)}`,
      );
    });
    assert.equal((await deadLetters(nc)).length, 2, 'nothing dead-lettered by the outage');
    for (const ingest of ingests) {
      const failed = await metric(
        ingest.opsUrl,
        'switchyard_ingest_write_requests_total',
        'outcome="failed"',
      );
      assert.ok(failed > 0, `writes failed while the databases were down (${failed})`);
    }
  });

  test('stops cleanly on SIGTERM', async () => {
    for (const p of ingests) p.child.kill('SIGTERM');
    assert.deepEqual(await Promise.all(ingests.map((p) => p.exited)), [0, 0]);
  });
});
