/**
 * `switchyard stack` end to end: the CLI starts a real two-site stack in a temp dir, and every
 * assertion is on what the real servers answer to their own clients.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { ListBucketsCommand, S3Client } from '@aws-sdk/client-s3';
import { jetstream, jetstreamManager, StorageType } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import mqtt from 'mqtt';
import { createClient } from 'redis';
import { childEnv } from '../lib/env.ts';
import { hubLeafs } from '../stack/leafz.ts';
import { isAlive, listPids, processCwd } from '../lib/process.ts';
import { findBinary, MissingBinaryError, ServerRole } from '../stack/server-specs.ts';
import { leafCount } from '../stack/server-readiness.ts';
import { readStack, tryReadStack, type Stack, type StackServer } from '../stack/stack-file.ts';
import { loadConfig } from '../lib/config.ts';
import { connectNats, natsAuthOf, NO_NATS_AUTH } from '../lib/nats.ts';
import { redisClientOptions, RedisConnectionSchema } from '../lib/redis.ts';
import { addDevices, stackDown, type StackStatus } from '../stack/verbs.ts';
import { bridgeMqttUser } from '../stack/mosquitto.ts';
import { waitFor } from './support/servers.ts';

const CLI = fileURLToPath(new URL('../bin/switchyard.mjs', import.meta.url));

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs `switchyard ARGS` as its own process, as a user would. */
function cli(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      env: childEnv(env),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr, ms: Date.now() - started }));
  });
}

/** PIDs of live processes whose working directory is under `dir` (every stack server's is). */
function processesUnder(dir: string): number[] {
  return listPids().filter((pid) => processCwd(pid)?.startsWith(dir) && isAlive(pid));
}

const envFile = (path: string): Record<string, string> =>
  Object.fromEntries(
    readFileSync(path, 'utf8')
      .trim()
      .split('\n')
      .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]),
  );

/** A NATS client of `server` with the credentials the stack gives: the cloud's at the hub, a bridge's at a site. */
const natsClient = (stack: Stack, server: StackServer): Promise<NatsConnection> =>
  connectNats({
    url: server.url,
    name: 'stack-test',
    waitForServer: false,
    auth: server.site
      ? { ...NO_NATS_AUTH, natsCreds: stack.trust.sites[server.site]!.bridgeCreds }
      : natsAuthOf(stack.cloudSettings()),
  });

/** Cleanup for a test dir: stops whatever a failed test left running, then deletes it. */
async function removeStack(dir: string): Promise<void> {
  if (tryReadStack(dir)) await stackDown(dir, { graceMs: 2000 });
  rmSync(dir, { recursive: true, force: true });
}

describe('switchyard stack with two sites', () => {
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-stack-'));
  let up: CliResult;

  before(async () => {
    up = await cli(['stack', 'up', '--dir', dir, '--sites', '2']);
  });
  after(() => removeStack(dir));

  test('up starts every server, records it in stack.json and exits 0', (t) => {
    assert.equal(up.code, 0, up.stderr);
    const stack = readStack(dir);
    assert.equal(stack.file.state, 'up');
    assert.deepEqual(
      stack.servers.map((s) => s.name).sort(),
      [
        'hub',
        'influxdb',
        'link-site-1',
        'link-site-2',
        'mqtt-site-1',
        'mqtt-site-2',
        'redis',
        's3',
        'site-1',
        'site-2',
        'victoria-metrics',
      ].sort(),
    );
    for (const server of stack.servers) {
      assert.ok(isAlive(server.pid), `${server.name} (pid ${server.pid}) runs`);
      assert.ok(server.command && server.args.length > 0, `${server.name} has its spec recorded`);
      assert.ok(server.dataDir.startsWith(dir), `${server.name} keeps its data under the stack dir`);
    }
    assert.deepEqual(
      stack.byRole(ServerRole.siteNats).map((s) => s.site),
      ['site-1', 'site-2'],
    );
    // Both links forward to the hub's one leaf port.
    assert.match(stack.link('site-1').target ?? '', /^127\.0\.0\.1:\d+$/);
    assert.equal(stack.link('site-2').target, stack.link('site-1').target);
    t.diagnostic(`stack up --sites 2 took ${up.ms} ms, the CLI process included`);
  });

  test('every server answers its own client', async () => {
    const stack = readStack(dir);

    for (const server of stack.byRole(ServerRole.hubNats).concat(stack.byRole(ServerRole.siteNats))) {
      const nc = await natsClient(stack, server);
      try {
        const info = await (await jetstreamManager(nc)).getAccountInfo();
        assert.equal(info.domain, server.site ?? 'hub', `${server.name} is in its own JetStream domain`);
      } finally {
        await nc.close();
      }
    }

    for (const site of stack.sites) {
      const { url } = stack.mqtt(site);
      // The broker takes no anonymous client: the bridge's user reads, an enrolled device writes.
      const bridge = bridgeMqttUser(stack.mqtt(site));
      const device = (await addDevices(dir, site, ['stack-test'])).devices[0]!;
      const client = await mqtt.connectAsync(url, {
        clientId: `stack-test-${site}`,
        username: bridge.username,
        password: bridge.password,
      });
      const publisher = await mqtt.connectAsync(url, { username: 'stack-test', password: device.password });
      try {
        const seen: string[] = [];
        client.on('message', (_topic, payload) => seen.push(payload.toString()));
        await client.subscribeAsync('bsu/stack-test/#', { qos: 1 });
        await publisher.publishAsync('bsu/stack-test/client', 'from mqtt.js', { qos: 1 });
        const { port } = new URL(url);
        await promisify(execFile)('mosquitto_pub', [
          '-h',
          '127.0.0.1',
          '-p',
          port,
          '-u',
          'stack-test',
          '-P',
          device.password,
          '-q',
          '1',
          '-t',
          'bsu/stack-test/cli',
          '-m',
          'from mosquitto_pub',
        ]);
        await waitFor(`both messages through ${site}'s mosquitto`, () => seen.length === 2, 5000);
        assert.deepEqual(seen.sort(), ['from mosquitto_pub', 'from mqtt.js']);
      } finally {
        await client.endAsync();
        await publisher.endAsync();
      }
    }

    const redis = createClient(
      redisClientOptions(loadConfig(RedisConnectionSchema, { env: stack.cloudEnv() })),
    );
    await redis.connect();
    try {
      assert.equal(await redis.ping(), 'PONG');
    } finally {
      await redis.close();
    }

    const health = await fetch(`${stack.victoriaMetrics.url}/health`);
    assert.equal(health.status, 200);

    const show = await fetch(`${stack.influxdb.url}/query?q=${encodeURIComponent('SHOW DATABASES')}`);
    const body = (await show.json()) as { results: { series?: { values: string[][] }[] }[] };
    assert.ok(
      body.results[0]?.series?.[0]?.values.flat().includes('switchyard'),
      'InfluxDB has the database',
    );

    const s3 = new S3Client({
      endpoint: stack.s3.url,
      region: 'us-east-1',
      forcePathStyle: true,
      credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
    });
    try {
      const buckets = await s3.send(new ListBucketsCommand({}));
      assert.ok(
        buckets.Buckets?.some((b) => b.Name === 'switchyard'),
        's3rver has the bucket',
      );
    } finally {
      s3.destroy();
    }
  });

  test('writes env files that a shell can source, one per site and one for the cloud', async () => {
    const stack = readStack(dir);
    const site1 = envFile(join(dir, 'env', 'site-1.env'));
    const trust = stack.trust.sites['site-1']!;
    assert.deepEqual(site1, {
      SWITCHYARD_SITE: 'site-1',
      SWITCHYARD_MQTT_URL: stack.mqtt('site-1').url,
      SWITCHYARD_MQTT_USERNAME: 'switchyard-bridge',
      SWITCHYARD_MQTT_PASSWORD_FILE: site1.SWITCHYARD_MQTT_PASSWORD_FILE,
      SWITCHYARD_NATS_URL: stack.siteNats('site-1').url,
      SWITCHYARD_NATS_CREDS: trust.bridgeCreds,
      SWITCHYARD_LEAF_CREDS: trust.leafCreds,
      SWITCHYARD_MSG_ID_KEY_FILE: trust.msgIdKeyFile,
    });
    // Every secret is a file of its own, readable by its owner only; the env files only name them.
    for (const file of [
      site1.SWITCHYARD_MQTT_PASSWORD_FILE!,
      trust.bridgeCreds,
      trust.leafCreds,
      trust.msgIdKeyFile,
      stack.trust.cloudCreds,
      stack.trust.redisPasswordFile,
    ])
      assert.equal(statSync(file).mode & 0o077, 0, `${file} is readable by others`);
    assert.equal(envFile(join(dir, 'env', 'site-2.env')).SWITCHYARD_NATS_URL, stack.siteNats('site-2').url);
    const cloud = envFile(join(dir, 'env', 'cloud.env'));
    assert.deepEqual(cloud, {
      SWITCHYARD_NATS_URL: stack.hub.url,
      SWITCHYARD_NATS_CREDS: stack.trust.cloudCreds,
      SWITCHYARD_NATS_CA: stack.trust.caFile,
      SWITCHYARD_REDIS_URL: stack.redis.url,
      SWITCHYARD_REDIS_USERNAME: 'switchyard',
      SWITCHYARD_REDIS_PASSWORD_FILE: stack.trust.redisPasswordFile,
      SWITCHYARD_S3_ENDPOINT: stack.s3.url,
      SWITCHYARD_S3_BUCKET: 'switchyard',
      SWITCHYARD_S3_REGION: 'us-east-1',
      SWITCHYARD_S3_ACCESS_KEY_ID: 'S3RVER',
      SWITCHYARD_S3_SECRET_ACCESS_KEY: 'S3RVER',
      SWITCHYARD_INFLUX2_URL: stack.victoriaMetrics.url,
      SWITCHYARD_INFLUX2_ORG: 'switchyard',
      SWITCHYARD_INFLUX2_BUCKET: 'switchyard',
      SWITCHYARD_INFLUX2_TOKEN: 'local',
      SWITCHYARD_INFLUX1_URL: stack.influxdb.url,
      SWITCHYARD_INFLUX1_DATABASE: 'switchyard',
      SWITCHYARD_SINK: 'influx2',
    });
    assert.deepEqual(stack.cloudEnv(), cloud);
    const { stdout } = await promisify(execFile)('bash', [
      '-c',
      `set -a; . ${join(dir, 'env', 'site-1.env')}; echo "$SWITCHYARD_SITE $SWITCHYARD_NATS_URL"`,
    ]);
    assert.equal(stdout.trim(), `site-1 ${stack.siteNats('site-1').url}`);
  });

  test('status lists every server up and exits 0', async () => {
    const table = await cli(['stack', 'status', '--dir', dir]);
    assert.equal(table.code, 0, table.stdout + table.stderr);
    for (const server of readStack(dir).servers)
      assert.match(table.stdout, new RegExp(`^${server.name} .* up `, 'm'));
  });

  test('a second up on a running stack exits 2 and says so', async () => {
    const again = await cli(['stack', 'up', '--dir', dir]);
    assert.equal(again.code, 2);
    assert.equal(
      again.stderr.trim(),
      `switchyard: a stack is already running in ${dir}: run 'switchyard stack down --dir ${dir}' first`,
    );
  });

  test('a killed site nats-server restarts on the same port with its JetStream data', async () => {
    const before = readStack(dir).siteNats('site-1');
    let nc = await natsClient(readStack(dir), before);
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: 'STACK_TEST', subjects: ['stack-test.>'], storage: StorageType.File });
    const js = jetstream(nc);
    for (let i = 0; i < 10; i++) await js.publish(`stack-test.${i}`, `message ${i}`);
    await nc.close();

    const killed = await cli(['stack', 'kill', 'site-1', '--dir', dir]);
    assert.equal(killed.code, 0, killed.stderr);
    assert.ok(!isAlive(before.pid), 'the killed process is gone');
    const down = await cli(['stack', 'status', '--dir', dir, '--json']);
    assert.equal(down.code, 1, 'status exits 1 while a server is down');
    const status = JSON.parse(down.stdout) as StackStatus;
    assert.equal(status.servers.find((s) => s.name === 'site-1')?.state, 'down');

    const restarted = await cli(['stack', 'restart', 'site-1', '--dir', dir]);
    assert.equal(restarted.code, 0, restarted.stderr);
    const after = readStack(dir).siteNats('site-1');
    assert.notEqual(after.pid, before.pid);
    assert.ok(isAlive(after.pid));
    assert.equal(after.url, before.url);

    nc = await natsClient(readStack(dir), after);
    try {
      const info = await (await jetstreamManager(nc)).streams.info('STACK_TEST');
      assert.equal(info.state.messages, 10);
    } finally {
      await nc.close();
    }
  });

  test("cut-link drops the site's leaf at the hub, heal-link brings it back", async () => {
    const stack = readStack(dir);
    const monitor = stack.hub.monitorUrl!;
    assert.equal(await leafCount(monitor), 2);

    const cut = await cli(['stack', 'cut-link', 'site-1', '--dir', dir]);
    assert.equal(cut.code, 0, cut.stderr);
    assert.equal(await leafCount(monitor), 1);
    assert.deepEqual(
      (await hubLeafs(monitor))?.flatMap((l) => l.domains),
      ['site-2'],
    );
    const status = JSON.parse((await cli(['stack', 'status', '--dir', dir, '--json'])).stdout) as StackStatus;
    assert.equal(status.servers.find((s) => s.name === 'link-site-1')?.state, 'cut');
    assert.equal(status.servers.find((s) => s.name === 'site-1')?.leaf, 'down');
    assert.ok(status.allUp, 'a cut link is not a down server');

    const heal = await cli(['stack', 'heal-link', 'site-1', '--dir', dir]);
    assert.equal(heal.code, 0, heal.stderr);
    assert.equal(await leafCount(monitor), 2);
    assert.deepEqual((await hubLeafs(monitor))?.flatMap((l) => l.domains).sort(), ['site-1', 'site-2']);
  });

  test('down stops every recorded process and keeps the data', async () => {
    const stack = readStack(dir);
    const down = await cli(['stack', 'down', '--dir', dir]);
    assert.equal(down.code, 0, down.stderr);
    for (const server of stack.servers)
      assert.ok(!isAlive(server.pid), `${server.name} (pid ${server.pid}) stopped`);
    assert.deepEqual(processesUnder(dir), []);
    assert.ok(!existsSync(join(dir, 'stack.json')));
    assert.ok(existsSync(join(dir, 'site-1', 'data', 'jetstream')), 'JetStream data is kept');
  });
});

describe('switchyard stack up when a server cannot start', () => {
  test('names the install command when a binary is missing, and starts nothing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'switchyard-stack-missing-'));
    try {
      const up = await cli(['stack', 'up', '--dir', dir], {
        SWITCHYARD_BIN_NATS_SERVER: '/nonexistent/nats-server',
      });
      assert.equal(up.code, 2);
      const lines = up.stderr.trim().split('\n');
      assert.equal(lines.length, 1, up.stderr);
      assert.match(lines[0]!, /nats-server is not installed.*bash scripts\/install-servers\.sh/);
      assert.deepEqual(processesUnder(dir), []);
      assert.ok(!existsSync(join(dir, 'stack.json')));
    } finally {
      await removeStack(dir);
    }
    assert.throws(() => findBinary('switchyard-no-such-server'), MissingBinaryError);
  });

  test('stops every server it started when one fails midway, and exits 1', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'switchyard-stack-fail-'));
    try {
      // /bin/false stands in for influxd: it runs, and exits at once.
      const up = await cli(['stack', 'up', '--dir', dir], { SWITCHYARD_BIN_INFLUXD: '/bin/false' });
      assert.equal(up.code, 1);
      assert.match(up.stderr, /stack up failed \(stopped every server it started\): influxdb exited/);
      assert.deepEqual(processesUnder(dir), []);
      assert.ok(!existsSync(join(dir, 'stack.json')));
    } finally {
      await removeStack(dir);
    }
  });
});
