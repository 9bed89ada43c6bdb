/**
 * Per-site isolation on the real secure stack (`stack up`: an operator, an account per site, TLS on
 * the leaf link). Everything a compromised gateway holds (its leaf credentials, its bridge's
 * credentials, its own nats-server) is turned against the hub and the other site, and every
 * assertion is on what the real hub and `BSU` hold afterwards.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { OperatorStore } from '../cloud/accounts/operator-store.ts';
import { gatewayTrustLines } from '../cloud/accounts/server-config.ts';
import { addSite, HubStreamConfigSchema } from '../cloud/hub-stream.ts';
import { ensureSiteStreams } from '../edge/site-streams.ts';
import { ensureCa, issueCertificate } from '../lib/certificates.ts';
import { loadConfig } from '../lib/config.ts';
import { connectNats, natsAuthOf, NO_NATS_AUTH, wireHeaders, type NatsAuth } from '../lib/nats.ts';
import { freePort } from '../lib/process.ts';
import { Header, messageId, messageIdScope } from '../schemas/index.ts';
import { HUB_STREAM, siteStreamNames } from '../schemas/streams.ts';
import { siteLeafConnected } from '../stack/leafz.ts';
import { cutLink, healLink } from '../stack/link.ts';
import { natsSpec, ServerRole } from '../stack/server-specs.ts';
import { startServer, stopServer, type RunningServer } from '../stack/server-process.ts';
import { stackUp } from '../stack/up.ts';
import { stackDown } from '../stack/verbs.ts';
import type { Stack } from '../stack/stack-file.ts';
import { waitFor } from './support/servers.ts';
import { runSwitchyard } from './support/process.ts';

const SITES = ['site-1', 'site-2'] as const;
const STREAM_SETTINGS = {
  telemetryMaxBytes: 64 << 20,
  eventsMaxBytes: 16 << 20,
  invalidMaxBytes: 16 << 20,
  maxAgeS: 3600,
  duplicateWindowS: 900,
};

/** Subjects in `BSU` with how many messages each, read as the hub's own user. */
async function subjectsInBsu(jsm: JetStreamManager): Promise<Record<string, number>> {
  const info = await jsm.streams.info(HUB_STREAM, { subjects_filter: '>' });
  return info.state.subjects ?? {};
}

describe('a compromised site against the secure stack', { timeout: 240_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-security-'));
  let stack: Stack;
  let cloud: NatsConnection;
  let jsm: JetStreamManager;
  const site: Record<string, NatsConnection> = {};
  const extra: RunningServer[] = [];
  const cloudAuth = (): NatsAuth => natsAuthOf(stack.cloudSettings());
  const bridgeAuth = (name: string): NatsAuth => ({
    ...NO_NATS_AUTH,
    natsCreds: stack.trust.sites[name]!.bridgeCreds,
  });
  const keys: Record<string, string> = {};
  const keyOf = (name: string): string =>
    (keys[name] ??= readFileSync(stack.trust.sites[name]!.msgIdKeyFile, 'utf8'));

  /** Publishes `count` readings of `device` as site `name`'s bridge would (its keyed message ids). */
  async function publishReadings(name: string, device: string, count: number, firstSeq = 1): Promise<void> {
    const js = jetstream(site[name]!);
    const scope = messageIdScope(name, keyOf(name));
    for (let seq = firstSeq; seq < firstSeq + count; seq++) {
      const ts = 1_800_000_000_000 + seq * 1000;
      await js.publish(`bsu.${name}.${device}.telemetry`, JSON.stringify({ ts, seq, SoC: 50 }), {
        headers: wireHeaders([[Header.msgId, messageId(scope, device, 'telemetry', seq, ts)]]),
      });
    }
  }

  before(async () => {
    stack = await stackUp({ dir, sites: SITES.length });
    cloud = await connectNats({
      url: stack.hub.url,
      name: 'security-cloud',
      auth: cloudAuth(),
      waitForServer: false,
    });
    jsm = await jetstreamManager(cloud);
    const hubConfig = loadConfig(HubStreamConfigSchema, { env: {} });
    for (const name of SITES) {
      site[name] = await connectNats({
        url: stack.siteNats(name).url,
        name: `security-${name}`,
        auth: bridgeAuth(name),
        waitForServer: false,
      });
      await ensureSiteStreams(await jetstreamManager(site[name]!), {
        site: name,
        natsUrl: '',
        ...STREAM_SETTINGS,
      });
      await addSite(jsm, name, hubConfig);
      keyOf(name);
    }
  });

  after(async () => {
    await Promise.all([cloud, ...Object.values(site)].map((nc) => nc?.close().catch(() => undefined)));
    await Promise.all(extra.map((s) => stopServer(s, 3000)));
    await stackDown(dir, { graceMs: 3000 }).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  });

  test("hub sourcing brings each site's readings into BSU under its own name, over TLS", async () => {
    await publishReadings('site-1', 'bsu-a', 20);
    await publishReadings('site-2', 'bsu-b', 20);
    await waitFor('both sites sourced', async () => {
      const subjects = await subjectsInBsu(jsm);
      return subjects['bsu.site-1.bsu-a.telemetry'] === 20 && subjects['bsu.site-2.bsu-b.telemetry'] === 20;
    });
    const leafz = (await (await fetch(`${stack.hub.monitorUrl}/leafz`)).json()) as {
      leafs: { account: string }[];
    };
    const store = await OperatorStore.open(stack.trust.operatorDir);
    assert.deepEqual(
      leafz.leafs.map((l) => l.account).sort(),
      SITES.map((name) => store.siteAccount(name).publicKey).sort(),
      "each leaf lands in its own site's account",
    );
  });

  test('every uplink cut at once: each site keeps its readings and BSU catches up for each after the heal', async () => {
    const device = (name: string): string => `cut-${name}`;
    await Promise.all(SITES.map((name) => cutLink(dir, name)));
    try {
      await Promise.all(SITES.map((name) => publishReadings(name, device(name), 200)));
      for (const name of SITES) {
        const subject = `bsu.${name}.${device(name)}.telemetry`;
        const telemetry = await (
          await jetstreamManager(site[name]!)
        ).streams.info(siteStreamNames(name).telemetry, { subjects_filter: subject });
        assert.equal(telemetry.state.subjects?.[subject], 200, `${name} keeps its readings while cut off`);
      }
      const during = await subjectsInBsu(jsm);
      for (const name of SITES) assert.equal(during[`bsu.${name}.${device(name)}.telemetry`], undefined);
    } finally {
      await Promise.all(SITES.map((name) => healLink(dir, name)));
    }
    const subjects = await waitFor('BSU to catch up with both sites', async () => {
      const s = await subjectsInBsu(jsm);
      return SITES.every((name) => (s[`bsu.${name}.${device(name)}.telemetry`] ?? 0) >= 200) ? s : undefined;
    });
    for (const name of SITES) assert.equal(subjects[`bsu.${name}.${device(name)}.telemetry`], 200, name);
  });

  test("a site sees nothing of another site's traffic and reaches no JetStream API but its own", async () => {
    const attacker = site['site-1']!;
    const seen: string[] = [];
    for (const subject of ['bsu.site-2.>', 'deliver.site-2.>', '$JS.FC.SITE_site-2_TELEMETRY.>', '>']) {
      const sub = attacker.subscribe(subject);
      void (async () => {
        for await (const m of sub) if (m.subject.includes('site-2')) seen.push(m.subject);
      })();
    }
    await attacker.flush();
    const before = await subjectsInBsu(jsm);
    await publishReadings('site-2', 'bsu-w', 10);
    await waitFor(
      'site-2 sourced again',
      async () => (await subjectsInBsu(jsm))['bsu.site-2.bsu-w.telemetry'] === 10,
    );

    await attacker.flush();
    assert.deepEqual(seen, [], "site-1 received site-2's messages");

    const refused: string[] = [];
    for (const subject of [
      `$JS.hub.API.STREAM.INFO.${HUB_STREAM}`,
      `$JS.hub.API.STREAM.PURGE.${HUB_STREAM}`,
      `$JS.hub.API.STREAM.DELETE.${HUB_STREAM}`,
      `$JS.hub.API.CONSUMER.INFO.${HUB_STREAM}.archive`,
      '$JS.hub.API.STREAM.CREATE.STOLEN',
      `$JS.site-2.API.STREAM.INFO.${siteStreamNames('site-2').telemetry}`,
      `$JS.site-2.API.STREAM.PURGE.${siteStreamNames('site-2').telemetry}`,
      `$JS.site-2.API.CONSUMER.CREATE.${siteStreamNames('site-2').telemetry}`,
    ]) {
      const body = subject.endsWith('STOLEN') ? JSON.stringify({ name: 'STOLEN', subjects: ['stolen'] }) : '';
      const answer = await attacker.request(subject, body, { timeout: 1500 }).then(
        (m) => m.string(),
        (err: Error) => err.message,
      );
      // An answer, if any, is a refusal: nothing of the hub's or site-2's API may serve the request.
      if (!/no responders|timeout|TIMEOUT|503|not enabled/i.test(answer))
        refused.push(`${subject} → ${answer}`);
    }
    assert.deepEqual(refused, [], 'requests served across the account boundary');
    const info = await jsm.streams.info(HUB_STREAM);
    assert.equal(info.state.messages, Object.values(before).reduce((a, b) => a + b, 0) + 10, 'BSU intact');
    assert.ok((await jsm.streams.names().next()).includes(HUB_STREAM));
    await assert.rejects(jsm.streams.info('STOLEN'), 'no stream was made at the hub');
  });

  test("a stream capturing another site's subjects, and its message ids sent first, change nothing in BSU", async () => {
    const attackerJsm = await jetstreamManager(site['site-1']!);
    const names = siteStreamNames('site-1');
    const own = await attackerJsm.streams.info(names.telemetry);
    await attackerJsm.streams.update(names.telemetry, {
      ...own.config,
      subjects: [...own.config.subjects, 'bsu.site-2.*.telemetry'],
    });
    const js = jetstream(site['site-1']!);
    for (let seq = 1; seq <= 10; seq++) {
      const ts = 1_800_000_000_000 + seq * 1000;
      // Spoofing: site-2's subject, stored in site-1's own stream.
      await js.publish('bsu.site-2.bsu-s.telemetry', JSON.stringify({ ts, seq, SoC: 1 }));
      // Suppression: site-2's next ids as anyone can predict them, under site-1's own subject.
      for (const scope of [messageIdScope('site-2', '')])
        await js.publish(`bsu.site-1.decoy.telemetry`, JSON.stringify({ ts, seq }), {
          headers: wireHeaders([[Header.msgId, messageId(scope, 'bsu-s', 'telemetry', seq, ts)]]),
        });
    }
    await waitFor(
      'the decoys sourced',
      async () => (await subjectsInBsu(jsm))['bsu.site-1.decoy.telemetry'] === 10,
    );
    // Then site-2's real readings with those sequences.
    await publishReadings('site-2', 'bsu-s', 10);
    await waitFor(
      "site-2's real readings 1–10",
      async () => (await subjectsInBsu(jsm))['bsu.site-2.bsu-s.telemetry'] === 10,
    );

    const reader = await jsm.streams.get(HUB_STREAM);
    const seqs: number[] = [];
    const info = await jsm.streams.info(HUB_STREAM);
    for (let s = info.state.first_seq; s <= info.state.last_seq; s++) {
      const m = await reader.getMessage({ seq: s });
      if (m?.subject !== 'bsu.site-2.bsu-s.telemetry') continue;
      const body = m.json<{ seq: number; SoC: number }>();
      assert.equal(body.SoC, 50, `a reading under site-2's name that site-2 did not send: ${m.string()}`);
      seqs.push(body.seq);
    }
    assert.deepEqual(
      seqs.sort((a, b) => a - b),
      Array.from({ length: 10 }, (_, i) => i + 1),
      'every real reading of site-2, once',
    );
  });

  test('a client with leaf credentials, or a gateway user, is refused on the hub client port', async () => {
    for (const creds of [stack.trust.sites['site-1']!.leafCreds, stack.trust.sites['site-1']!.bridgeCreds]) {
      await assert.rejects(
        connectNats({
          url: stack.hub.url,
          name: 'security-intruder',
          auth: { ...NO_NATS_AUTH, natsCreds: creds, natsCa: stack.trust.caFile },
          waitForServer: false,
          connectTimeoutMs: 3000,
        }),
        /Authorization|AUTHORIZATION|authentication/i,
      );
    }
    await assert.rejects(
      connectNats({
        url: stack.hub.url,
        name: 'security-anonymous',
        auth: { ...NO_NATS_AUTH, natsCa: stack.trust.caFile },
        waitForServer: false,
        connectTimeoutMs: 3000,
      }),
      /Authorization|AUTHORIZATION|authentication/i,
    );
  });

  /** The hub's leaf port (the link proxies bypassed). */
  const hubLeafPort = (): number =>
    Number(
      /listen: "127\.0\.0\.1:(\d+)"/.exec(
        readFileSync(join(dir, 'hub', 'nats-server.conf'), 'utf8').split('leafnodes')[1]!,
      )![1],
    );
  const REFUSED = /authentication error|Authorization Violation|TLS leafnode handshake error|TLS Required/g;
  /** How many leaf connections the hub has refused so far, from its log. */
  const refusals = (): number =>
    readFileSync(join(dir, 'hub', 'nats-server.log'), 'utf8').match(REFUSED)?.length ?? 0;

  /** Starts a gateway that leafs straight to the hub with `remote`, until the hub refused it twice. */
  async function rogueGateway(
    name: string,
    remote: NonNullable<Parameters<typeof natsSpec>[0]['leafRemote']>,
  ): Promise<void> {
    const store = await OperatorStore.open(stack.trust.operatorDir);
    const before = refusals();
    const spec = natsSpec({
      name,
      role: ServerRole.siteNats,
      dir: join(dir, name),
      port: await freePort(),
      monitorPort: await freePort(),
      domain: name,
      leafRemoteUrl: `nats-leaf://127.0.0.1:${hubLeafPort()}`,
      trust: gatewayTrustLines(store, 'site-1'),
      leafRemote: remote,
    });
    const server = await startServer({ ...spec, waitForLeaf: false }, { detached: false });
    extra.push(server);
    await waitFor(`the hub to refuse ${name} twice`, () => refusals() >= before + 2);
    assert.equal(await siteLeafConnected(stack.hub.monitorUrl!, name), false, `${name} became a leaf`);
    await stopServer(server, 3000);
  }

  test('a leaf with no credentials, no certificate, or a certificate of another CA is refused', async () => {
    const store = await OperatorStore.open(stack.trust.operatorDir);
    const account = store.siteLocalAccount('site-1').publicKey;
    const legit = stack.trust.sites['site-1']!;
    const foreignCa = ensureCa(join(dir, 'foreign-ca'), 'Somebody else');
    const foreign = issueCertificate(foreignCa, join(dir, 'foreign-ca'), 'leaf', {
      commonName: 'site-1',
      usage: 'client',
    });
    await rogueGateway('rogue-anonymous', { account, tls: { ca: stack.trust.caFile, ...legit.leafCert } });
    await rogueGateway('rogue-foreign-ca', {
      credentials: legit.leafCreds,
      account,
      tls: { ca: stack.trust.caFile, ...foreign },
    });
    await rogueGateway('rogue-no-certificate', {
      credentials: legit.leafCreds,
      account,
      tls: { ca: stack.trust.caFile },
    });
  });

  test('the leaf port speaks TLS only: a plain-text CONNECT is refused', async () => {
    const socket = connect({ host: '127.0.0.1', port: hubLeafPort() });
    const info = await new Promise<string>((resolve, reject) => {
      socket.once('data', (d: Buffer) => resolve(d.toString()));
      socket.once('error', reject);
    });
    assert.match(info, /"tls_required":true/);
    const reply = new Promise<string>((resolve) => {
      let text = '';
      socket.on('data', (d: Buffer) => (text += d.toString()));
      socket.once('close', () => resolve(text));
    });
    const creds = readFileSync(stack.trust.sites['site-1']!.leafCreds, 'utf8');
    const jwt = /-----BEGIN NATS USER JWT-----\s+(\S+)/.exec(creds)![1]!;
    socket.write(`CONNECT ${JSON.stringify({ jwt, name: 'plain' })}\r\nPING\r\n`);
    const text = await reply;
    assert.ok(!text.includes('PONG'), `the hub answered a plain-text leaf: ${text}`);
    assert.equal(await siteLeafConnected(stack.hub.monitorUrl!, 'plain'), false);
  });

  test('site remove revokes the site: its leaf is cut and cannot come back; the other site carries on', async () => {
    const result = await runSwitchyard(
      ['site', 'remove', 'site-1', '--operator-dir', stack.trust.operatorDir],
      {
        ...stack.cloudEnv(),
        SWITCHYARD_INSECURE: 'false',
      },
    );
    assert.equal(result.code, 0, result.output);
    await waitFor(
      'site-1 cut',
      async () => (await siteLeafConnected(stack.hub.monitorUrl!, 'site-1')) === false,
    );
    // The site's nats-server retries every second: it is refused each time and stays out.
    const siteLog = (): string => readFileSync(join(dir, 'site-1', 'nats-server.log'), 'utf8');
    const refusedHere = (): number => siteLog().match(/Leafnode Error '[^']*'/g)?.length ?? 0;
    const before = refusedHere();
    await waitFor('site-1 refused on reconnect', () => refusedHere() >= before + 2).catch((err: unknown) => {
      throw new Error(`${String(err)}; site-1's log ends: ${siteLog().slice(-2000)}`);
    });
    assert.equal(await siteLeafConnected(stack.hub.monitorUrl!, 'site-1'), false);
    await publishReadings('site-2', 'bsu-r', 5);
    await waitFor(
      'site-2 still sourced',
      async () => (await subjectsInBsu(jsm))['bsu.site-2.bsu-r.telemetry'] === 5,
    );
  });

  test('no secret of the stack is in a log file or on a command line', () => {
    const secrets: string[] = [readFileSync(stack.trust.redisPasswordFile, 'utf8')];
    const seeds = (text: string) => text.match(/\bS[OAU][A-Z2-7]{50,}\b/g) ?? [];
    const walk = (path: string): string[] =>
      statSync(path).isDirectory() ? readdirSync(path).flatMap((f) => walk(join(path, f))) : [path];
    for (const file of walk(stack.trust.operatorDir)) secrets.push(...seeds(readFileSync(file, 'utf8')));
    for (const name of SITES) secrets.push(keyOf(name));
    assert.ok(secrets.length > 6, 'the stack has seeds and passwords to look for');
    const logs = walk(dir).filter((f) => f.endsWith('.log'));
    assert.ok(logs.length > 5);
    for (const file of logs) {
      const text = readFileSync(file, 'utf8');
      for (const secret of secrets) assert.ok(!text.includes(secret), `a secret in ${file}`);
    }
    for (const server of stack.servers) {
      const cmdline = readFileSync(`/proc/${server.pid}/cmdline`, 'utf8');
      for (const secret of secrets)
        assert.ok(!cmdline.includes(secret), `a secret on ${server.name}'s command line`);
    }
  });
});
