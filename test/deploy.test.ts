/**
 * What deploy/ promises, checked against the code it deploys: every SWITCHYARD_* variable it sets
 * is one the command really reads (names derived from the config schemas with envName()), the
 * values parse through the commands' own config loader, every command it runs exists, probes and
 * scrapes hit the ops port the command binds, the systemd units and install.sh work on a scratch
 * root, and the site nats-server template is a config a real nats-server runs with: a leaf of a
 * real hub whose stream sources the site.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  appendFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, posix, relative } from 'node:path';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import mqtt from 'mqtt';
import type { NatsConnection } from '@nats-io/transport-node';
import { commands } from '../cli/commands/index.ts';
import { OperatorStore } from '../cloud/accounts/operator-store.ts';
import { hubTrustLines } from '../cloud/accounts/server-config.ts';
import { DYNAMIC_DEFAULTS, envValue, renderEnvExample, UNIT_SETTINGS } from '../deploy/env-example.ts';
import { EDGE_NODE_OPTIONS, EdgeConfigSchema, SiteStreamConfigSchema } from '../edge/config.ts';
import { ensureSiteStreams } from '../edge/site-streams.ts';
import { ensureCa, issueCertificate } from '../lib/certificates.ts';
import { envName, envNames, loadConfig } from '../lib/config.ts';
import { childEnv } from '../lib/env.ts';
import { connectNats, NO_NATS_AUTH } from '../lib/nats.ts';
import { HUB_STREAM } from '../schemas/streams.ts';
import { freePort } from '../lib/process.ts';
import { hubLeafs, isLeafOfSite } from '../stack/leafz.ts';
import { newPassword, passwordFileLine } from '../stack/mosquitto.ts';
import { findBinary, natsSpec, ServerRole, type ServerSpec } from '../stack/server-specs.ts';
import { streamCount } from './support/jetstream.ts';
import { runSwitchyard } from './support/process.ts';
import { TestServers, waitFor } from './support/servers.ts';
import {
  ALL_VARS,
  DEPLOY,
  K8S,
  parseYamlFile,
  read,
  resolveCommand,
  ROOT,
  SYSTEMD,
} from './support/deploy.ts';

const INSTALL = join(SYSTEMD, 'install.sh');

// ---------------------------------------------------------------------------------------------
// File formats

/** An env file's variables: set (`KEY=value`) and commented out (`#KEY=value`). */
function parseEnvFile(text: string): { set: Map<string, string>; commented: Map<string, string> } {
  const set = new Map<string, string>();
  const commented = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^(#?)(SWITCHYARD_[A-Z0-9_]+)=(.*)$/.exec(line);
    if (!m) continue;
    const value = m[3]!.replace(/^'(.*)'$/, '$1');
    (m[1] ? commented : set).set(m[2]!, value);
  }
  return { set, commented };
}

/** A systemd unit: section → key → values (a key may repeat). */
function parseUnit(text: string): Map<string, Map<string, string[]>> {
  const sections = new Map<string, Map<string, string[]>>();
  let current: Map<string, string[]> | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header) {
      current = new Map();
      sections.set(header[1]!, current);
      continue;
    }
    const eq = line.indexOf('=');
    assert.ok(current && eq > 0, `not a unit file line: ${line}`);
    const key = line.slice(0, eq).trim();
    current.set(key, [...(current.get(key) ?? []), line.slice(eq + 1).trim()]);
  }
  return sections;
}

function unitValue(
  unit: Map<string, Map<string, string[]>>,
  section: string,
  key: string,
): string | undefined {
  return unit.get(section)?.get(key)?.at(-1);
}

/** Runs install.sh; never throws. */
function install(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync('bash', [INSTALL, ...args], { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A release as install.sh expects one from make-release.sh, with a stand-in build. */
function fakeRelease(dir: string, build = 'one'): string {
  mkdirSync(join(dir, 'dist/cli'), { recursive: true });
  mkdirSync(join(dir, 'node_modules/dependency'), { recursive: true });
  writeFileSync(join(dir, 'dist/cli/main.js'), `// build ${build}\n`);
  writeFileSync(join(dir, 'package.json'), read(join(ROOT, 'package.json')));
  writeFileSync(join(dir, 'package-lock.json'), '{}\n');
  writeFileSync(join(dir, 'node_modules/dependency/index.js'), '\n');
  writeFileSync(join(dir, '.switchyard-release'), 'switchyard test\n');
  return dir;
}

/** A fresh root `dir`/`name` and install.sh's arguments for it: a stand-in release, then `extra`. */
function freshRoot(dir: string, name: string, extra: string[] = []): { prefix: string; args: string[] } {
  const prefix = join(dir, name);
  mkdirSync(prefix);
  return {
    prefix,
    args: ['--prefix', prefix, '--release', fakeRelease(join(dir, `${name}-release`)), ...extra],
  };
}

const lastLine = (text: string): string => text.trim().split('\n').at(-1) ?? '';

/**
 * install.sh's arguments for `site`'s NATS trust: the bundle `switchyard site add --operator-dir`
 * writes in `dir`/operator (enrolled here unless it is already), the CA in `dir`/ca (made with
 * openssl) as the hub's, and a client certificate it issues for the site's leaf.
 */
async function siteBundleArgs(dir: string, site: string): Promise<string[]> {
  const store = await OperatorStore.open(join(dir, 'operator'));
  if (!store.sites().includes(site)) await store.enrolSite(site);
  const ca = ensureCa(join(dir, 'ca'));
  const leaf = issueCertificate(ca, join(dir, 'ca', 'issued'), `leaf-${site}`, {
    commonName: site,
    usage: 'client',
  });
  return [
    '--site-bundle',
    store.siteFiles(site).dir,
    '--hub-ca',
    ca.cert,
    '--leaf-cert',
    leaf.cert,
    '--leaf-key',
    leaf.key,
  ];
}

/**
 * Points a rendered nats-site.conf (and the nats-trust.conf it includes) of `prefix` at the files
 * under `prefix` instead of /etc/switchyard, in place; optional further replacements on the site conf.
 */
function localizeSiteConf(prefix: string, moves: [string, string][] = []): string {
  const etc = join(prefix, 'etc/switchyard');
  for (const name of ['nats-site.conf', 'nats-trust.conf']) {
    const file = join(etc, name);
    if (!existsSync(file)) continue;
    let text = read(file).replaceAll('"/etc/switchyard/', `"${etc}/`);
    if (name === 'nats-site.conf')
      for (const [from, to] of moves) {
        assert.ok(text.includes(from), `the template has ${from}`);
        text = text.replace(from, to);
      }
    writeFileSync(file, text);
  }
  return join(etc, 'nats-site.conf');
}

// ---------------------------------------------------------------------------------------------

describe('every SWITCHYARD_* variable in deploy/', () => {
  test('is one that a Switchyard command reads', () => {
    const files: string[] = [];
    const walk = (dir: string): void => {
      for (const e of readdirSync(dir, { withFileTypes: true }))
        if (e.isDirectory()) walk(join(dir, e.name));
        else files.push(join(dir, e.name));
    };
    walk(DEPLOY);
    const unknown: string[] = [];
    for (const file of files)
      for (const [name] of read(file).matchAll(/SWITCHYARD_[A-Z0-9_]*[A-Z0-9]/g))
        if (!ALL_VARS.has(name)) unknown.push(`${relative(ROOT, file)}: ${name}`);
    assert.deepEqual(unknown, []);
  });
});

describe('edge.env, the example of the bridge settings', () => {
  const text = read(join(SYSTEMD, 'edge.env'));
  const { set, commented } = parseEnvFile(text);

  test('lists every setting the bridge reads, and nothing else', () => {
    const listed = [...set.keys(), ...commented.keys()].sort();
    assert.deepEqual(listed, envNames(EdgeConfigSchema).sort());
  });

  test('is what deploy/env-example.ts writes from the schema (regenerate it if this fails)', () => {
    assert.equal(text, renderEnvExample('edge', EdgeConfigSchema));
  });

  test('leaves only the required settings uncommented, and shows every default as the schema has it', () => {
    const dynamic = DYNAMIC_DEFAULTS.edge ?? {};
    for (const [key, prop] of Object.entries(EdgeConfigSchema.properties)) {
      const name = envName(key);
      const def = (prop as { default?: unknown }).default;
      if (key in dynamic) assert.equal(commented.get(name), dynamic[key], name);
      else if (def === undefined)
        assert.equal(set.get(name), '', `${name} is required: an empty line to fill in`);
      else assert.equal(commented.get(name), envValue(def).replace(/^'(.*)'$/, '$1'), name);
    }
  });

  test('uncommented as it stands, loads through the bridge config to the defaults', () => {
    const env: Record<string, string> = {
      ...Object.fromEntries(commented),
      ...Object.fromEntries(set),
      SWITCHYARD_SITE: 'site-7',
    };
    for (const key of Object.keys(DYNAMIC_DEFAULTS.edge ?? {})) delete env[envName(key)];
    const loaded = loadConfig(EdgeConfigSchema, { env });
    assert.deepEqual(loaded, loadConfig(EdgeConfigSchema, { env: { SWITCHYARD_SITE: 'site-7' } }));
  });
});

describe('systemd units', () => {
  const edge = parseUnit(read(join(SYSTEMD, 'switchyard-edge.service')));
  const nats = parseUnit(read(join(SYSTEMD, 'switchyard-nats.service')));

  test('switchyard-edge runs the compiled CLI with plain node, as user switchyard, with edge.env', async () => {
    const exec = unitValue(edge, 'Service', 'ExecStart')!.split(/\s+/);
    assert.equal(exec[0], '/usr/bin/node');
    // tsc compiles cli/main.ts to <outDir>/cli/main.js (tsconfig: rootDir "."), under /opt/switchyard.
    const tsconfig = JSON.parse(read(join(ROOT, 'tsconfig.json'))) as {
      compilerOptions: { outDir: string; rootDir: string };
    };
    assert.equal(tsconfig.compilerOptions.rootDir, '.');
    assert.equal(exec[1], `/opt/switchyard/${tsconfig.compilerOptions.outDir}/cli/main.js`);
    assert.ok(existsSync(join(ROOT, 'cli/main.ts')));
    assert.equal(await resolveCommand(exec.slice(2)), 'edge');
    assert.equal(unitValue(edge, 'Service', 'EnvironmentFile'), '/etc/switchyard/edge.env');
    assert.equal(unitValue(edge, 'Service', 'User'), 'switchyard');
    assert.match(unitValue(edge, 'Service', 'Type')!, /^(exec|simple)$/);
  });

  test('switchyard-edge runs with the V8 settings the benchmarks measure (EDGE_NODE_OPTIONS)', () => {
    const environment = unitValue(edge, 'Service', 'Environment') ?? '';
    const nodeOptions = /NODE_OPTIONS="([^"]*)"/.exec(environment)?.[1];
    assert.deepEqual(nodeOptions?.split(' '), [...EDGE_NODE_OPTIONS]);
  });

  test('switchyard-edge restarts on failure but not on bad config, and stops with SIGTERM in time', () => {
    assert.equal(unitValue(edge, 'Service', 'Restart'), 'always');
    assert.equal(unitValue(edge, 'Service', 'RestartSec'), '2');
    assert.equal(unitValue(edge, 'Service', 'RestartPreventExitStatus'), '2');
    assert.equal(unitValue(edge, 'Unit', 'StartLimitIntervalSec'), '0');
    assert.equal(unitValue(edge, 'Service', 'KillSignal'), 'SIGTERM');
    // The bridge waits up to 10 s for the messages in hand (edge/mqtt-source.ts), then drains NATS.
    assert.ok(Number(unitValue(edge, 'Service', 'TimeoutStopSec')) >= 20);
  });

  test('switchyard-edge is confined and writes nowhere', () => {
    // The sandbox both units share is checked below.
    assert.equal(unitValue(edge, 'Service', 'MemoryMax'), '256M');
    assert.match(unitValue(edge, 'Service', 'LimitNOFILE') ?? '', /^\d+$/);
    for (const key of ['ReadWritePaths', 'StateDirectory', 'RuntimeDirectory', 'LogsDirectory'])
      assert.equal(unitValue(edge, 'Service', key), undefined, `${key}: the bridge keeps no state`);
    // V8 compiles to writable, executable memory.
    assert.notEqual(unitValue(edge, 'Service', 'MemoryDenyWriteExecute'), 'yes');
    // Loopback only: its nats-server, its broker and its probes are on this machine.
    assert.deepEqual(edge.get('Service')?.get('IPAddressDeny'), ['any']);
    assert.deepEqual(edge.get('Service')?.get('IPAddressAllow'), ['localhost']);
  });

  test('both units filter system calls and address families, and the site server is hardened', () => {
    const shared: Record<string, string> = {
      SystemCallFilter: '@system-service',
      SystemCallArchitectures: 'native',
      SystemCallErrorNumber: 'EPERM',
      RestrictAddressFamilies: 'AF_INET AF_INET6 AF_UNIX',
      NoNewPrivileges: 'yes',
      ProtectSystem: 'strict',
      ProtectHome: 'yes',
      PrivateTmp: 'yes',
      PrivateDevices: 'yes',
      ProtectKernelTunables: 'yes',
      ProtectKernelModules: 'yes',
      ProtectKernelLogs: 'yes',
      ProtectControlGroups: 'yes',
      LockPersonality: 'yes',
      RestrictNamespaces: 'yes',
      RestrictSUIDSGID: 'yes',
      CapabilityBoundingSet: '',
    };
    for (const [name, unit] of [
      ['switchyard-edge', edge],
      ['switchyard-nats', nats],
    ] as const)
      for (const [key, value] of Object.entries(shared))
        assert.equal(unitValue(unit, 'Service', key), value, `${name}: ${key}`);
    // Go compiles ahead of time: nats-server needs no writable, executable memory.
    assert.equal(unitValue(nats, 'Service', 'MemoryDenyWriteExecute'), 'yes');
    // The leaf dials the hub, wherever it is.
    assert.equal(unitValue(nats, 'Service', 'IPAddressDeny'), undefined);
  });

  test('switchyard-edge gets every secret through LoadCredential=, named by its *_FILE settings', () => {
    const loaded = new Map(
      (edge.get('Service')?.get('LoadCredential') ?? []).map((v) => v.split(':') as [string, string]),
    );
    const environment = new Map(
      (edge.get('Service')?.get('Environment') ?? []).map((v) => {
        const eq = v.indexOf('=');
        return [v.slice(0, eq), v.slice(eq + 1)] as const;
      }),
    );
    const expected: [string, string][] = [
      ['SWITCHYARD_MQTT_PASSWORD_FILE', 'mqtt-password'],
      ['SWITCHYARD_NATS_CREDS', 'bridge.creds'],
      ['SWITCHYARD_MSG_ID_KEY_FILE', 'msg-id.key'],
    ];
    for (const [variable, credential] of expected) {
      assert.equal(environment.get(variable), `%d/${credential}`, variable);
      assert.equal(loaded.get(credential), `/etc/switchyard/credentials/${credential}`, credential);
    }
    assert.equal(loaded.size, expected.length);
    // edge.env says so, from the same table its generator uses.
    const envText = read(join(SYSTEMD, 'edge.env'));
    for (const [key, value] of Object.entries(UNIT_SETTINGS.edge!)) {
      const variable = expected.find(([, credential]) => value === `%d/${credential}`)?.[0];
      assert.ok(variable?.startsWith(envName(key)), `${key}: ${value} is a credential the unit loads`);
      assert.ok(envText.includes(`# The unit sets ${variable}=${value} `), `edge.env notes ${variable}`);
    }
    // The bridge's config loader reads each of them (secrets from *_FILE, the creds by path).
    const dir = mkdtempSync(join(tmpdir(), 'switchyard-credentials-'));
    try {
      const env: Record<string, string> = { SWITCHYARD_SITE: 'site-7' };
      for (const [variable, credential] of expected) {
        writeFileSync(join(dir, credential), `${credential} content\n`);
        env[variable] = environment.get(variable)!.replace('%d', dir);
      }
      const config = loadConfig(EdgeConfigSchema, { env });
      assert.equal(config.mqttPassword, 'mqtt-password content');
      assert.equal(config.msgIdKey, 'msg-id.key content');
      assert.equal(config.natsCreds, join(dir, 'bridge.creds'));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('switchyard-nats runs nats-server on nats-site.conf, with its store as the state directory', () => {
    assert.equal(
      unitValue(nats, 'Service', 'ExecStart'),
      '/usr/sbin/nats-server -c /etc/switchyard/nats-site.conf',
    );
    assert.equal(unitValue(nats, 'Service', 'User'), 'switchyard-nats');
    const template = read(join(SYSTEMD, 'nats-site.conf'));
    const storeDir = /^\s*store_dir:\s*"([^"]+)"/m.exec(template)?.[1];
    assert.equal(storeDir, `/var/lib/${unitValue(nats, 'Service', 'StateDirectory')}`);
    assert.equal(unitValue(nats, 'Service', 'Restart'), 'always');
  });

  test('the bridge orders itself after the site nats-server and both start at boot', () => {
    assert.match(unitValue(edge, 'Unit', 'After')!, /switchyard-nats\.service/);
    assert.equal(unitValue(edge, 'Install', 'WantedBy'), 'multi-user.target');
    assert.equal(unitValue(nats, 'Install', 'WantedBy'), 'multi-user.target');
  });

  test('systemd-analyze verify finds nothing to report', (t) => {
    const which = spawnSync('sh', ['-c', 'command -v systemd-analyze'], { encoding: 'utf8' });
    if (which.status !== 0) return t.skip('systemd-analyze is not installed');
    const r = spawnSync(
      'systemd-analyze',
      ['verify', join(SYSTEMD, 'switchyard-edge.service'), join(SYSTEMD, 'switchyard-nats.service')],
      { encoding: 'utf8' },
    );
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr.trim(), '', 'no warnings either (an unknown key is only a warning)');
  });
});

describe('install.sh', () => {
  let dir: string;
  let bundle: string[];
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'switchyard-install-'));
    bundle = await siteBundleArgs(dir, 'site-7');
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('is valid bash and answers --help', () => {
    const syntax = spawnSync('bash', ['-n', INSTALL], { encoding: 'utf8' });
    assert.equal(syntax.status, 0, syntax.stderr);
    const help = install(['--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /--dry-run/);
  });

  test('--dry-run into a prefix prints every action and changes nothing', () => {
    const release = fakeRelease(join(dir, 'dry-release'));
    const prefix = join(dir, 'dry-root');
    mkdirSync(prefix);
    const r = install([
      '--dry-run',
      '--prefix',
      prefix,
      '--release',
      release,
      '--site',
      'site-7',
      '--hub-leaf-url',
      'tls://hub.example.net:7422',
      ...bundle,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '');
    for (const action of [
      '/opt/switchyard',
      '/etc/switchyard/edge.env',
      '/etc/switchyard/nats-site.conf',
      '/etc/switchyard/nats-trust.conf',
      '/etc/switchyard/nats/leaf.creds',
      '/etc/switchyard/nats/leaf.key',
      '/etc/switchyard/nats/hub-ca.crt',
      '/etc/switchyard/credentials/bridge.creds',
      '/etc/switchyard/credentials/msg-id.key',
      'switchyard-edge.service',
      'switchyard-nats.service',
      'create users',
    ])
      assert.match(r.stdout, new RegExp(`would .*${action.replace(/[.]/g, '\\.')}`), action);
    assert.match(lastLine(r.stdout), /^install\.sh: dry run: \d+ changes? would be made$/);
    assert.deepEqual(readdirSync(prefix), []);
  });

  test('--dry-run on this machine names the systemctl calls and changes nothing', () => {
    const release = fakeRelease(join(dir, 'live-release'));
    const r = install([
      '--dry-run',
      '--release',
      release,
      '--site',
      'site-7',
      '--hub-leaf-url',
      'tls://hub:7422',
      ...bundle,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /would run: systemctl enable --now switchyard-edge\.service/);
    assert.match(r.stdout, /would run: systemctl enable --now switchyard-nats\.service/);
  });

  test('refuses bad usage with exit 2 and one line', () => {
    const release = fakeRelease(join(dir, 'usage-release'));
    const prefix = join(dir, 'usage-root');
    mkdirSync(prefix);
    for (const args of [
      ['--site', 'no spaces'],
      ['--hub-leaf-url', 'http://hub:80'],
      ['--bogus'],
      // A fresh root has no nats-site.conf: it needs the site and the hub.
      ['--prefix', prefix, '--release', release, ...bundle],
      ['--release', join(dir, 'nowhere'), '--dry-run'],
      // Secure by default: no bundle, or a bundle without the leaf's TLS, is refused.
      ['--prefix', prefix, '--release', release, '--site', 's', '--hub-leaf-url', 'tls://hub:7422'],
      [
        '--prefix',
        prefix,
        '--release',
        release,
        '--site',
        's',
        '--hub-leaf-url',
        'tls://hub:7422',
        ...bundle.slice(0, 2),
      ],
      ['--site-bundle', join(dir, 'nowhere'), '--dry-run'],
      ['--leaf-cert', bundle[5]!, '--dry-run'],
    ]) {
      const r = install(args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
      assert.match(r.stderr, /^install\.sh: .+\n$/);
    }
  });

  test('installs into a root, and a second run changes nothing and keeps edited config', (t) => {
    if (process.getuid?.() !== 0) return t.skip('needs root (it chowns files to the new users)');
    const { prefix, args } = freshRoot(dir, 'root', [
      '--site',
      'site-7',
      '--hub-leaf-url',
      'tls://127.0.0.1:7422',
      ...bundle,
    ]);
    const release = join(dir, 'root-release');
    const first = install(args);
    assert.equal(first.code, 0, first.stderr);
    assert.match(lastLine(first.stdout), /^install\.sh: done: [1-9]\d* changes?$/);

    // What the units name is there.
    assert.ok(existsSync(join(prefix, 'opt/switchyard/dist/cli/main.js')));
    assert.ok(existsSync(join(prefix, 'opt/switchyard/node_modules/dependency/index.js')));
    const passwd = read(join(prefix, 'etc/passwd'));
    assert.match(passwd, /^switchyard:x:\d+:\d+:[^:]*:[^:]*:\/usr\/sbin\/nologin$/m);
    assert.match(passwd, /^switchyard-nats:x:\d+:/m);
    const gid = (group: string): number =>
      Number(new RegExp(`^${group}:x:(\\d+):`, 'm').exec(read(join(prefix, 'etc/group')))?.[1]);
    const env = statSync(join(prefix, 'etc/switchyard/edge.env'));
    assert.equal(env.mode & 0o777, 0o640);
    assert.equal(env.gid, gid('switchyard'));
    assert.equal(statSync(join(prefix, 'etc/switchyard/nats-site.conf')).gid, gid('switchyard-nats'));
    // The bundle: what nats-server reads is its group's; the bridge's secrets are root's alone
    // (the edge unit gets them through LoadCredential=); the hub's CA and the certificate are public.
    const modes: [string, number, string][] = [
      ['etc/switchyard/nats-trust.conf', 0o640, 'switchyard-nats'],
      ['etc/switchyard/nats/operator.jwt', 0o640, 'switchyard-nats'],
      ['etc/switchyard/nats/leaf.creds', 0o640, 'switchyard-nats'],
      ['etc/switchyard/nats/leaf.key', 0o640, 'switchyard-nats'],
      ['etc/switchyard/nats/leaf.crt', 0o644, 'root'],
      ['etc/switchyard/nats/hub-ca.crt', 0o644, 'root'],
      ['etc/switchyard/credentials/bridge.creds', 0o600, 'root'],
      ['etc/switchyard/credentials/msg-id.key', 0o600, 'root'],
      ['etc/switchyard/credentials/mqtt-password', 0o600, 'root'],
    ];
    for (const [file, mode, group] of modes) {
      const st = statSync(join(prefix, file));
      assert.equal(st.mode & 0o777, mode, `${file} mode`);
      assert.equal(st.uid, 0, `${file} owner`);
      assert.equal(st.gid, group === 'root' ? 0 : gid(group), `${file} group`);
    }
    assert.equal(statSync(join(prefix, 'etc/switchyard/credentials')).mode & 0o777, 0o700);
    const siteFiles = join(dir, 'operator/sites/site-7');
    for (const name of ['bridge.creds', 'msg-id.key'])
      assert.equal(read(join(prefix, 'etc/switchyard/credentials', name)), read(join(siteFiles, name)));
    assert.equal(read(join(prefix, 'etc/switchyard/nats/leaf.creds')), read(join(siteFiles, 'leaf.creds')));
    // The seeds of the accounts stay with the operator.
    for (const seed of ['account.nk', 'local.nk'])
      assert.equal(
        spawnSync('grep', ['-rqF', read(join(siteFiles, seed)).trim(), join(prefix, 'etc')]).status,
        1,
        `${seed} is nowhere on the gateway`,
      );
    assert.ok(!existsSync(join(prefix, 'etc/systemd/system/switchyard-edge.service.d')));
    assert.equal(
      parseEnvFile(read(join(prefix, 'etc/switchyard/edge.env'))).set.get('SWITCHYARD_SITE'),
      'site-7',
    );
    for (const unit of ['switchyard-edge.service', 'switchyard-nats.service']) {
      assert.equal(read(join(prefix, 'etc/systemd/system', unit)), read(join(SYSTEMD, unit)));
      assert.equal(
        readlinkSync(join(prefix, 'etc/systemd/system/multi-user.target.wants', unit)),
        `/etc/systemd/system/${unit}`,
      );
    }

    appendFileSync(join(prefix, 'etc/switchyard/edge.env'), 'SWITCHYARD_LOG_LEVEL=debug\n');
    const again = install(args);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(lastLine(again.stdout), 'install.sh: done: 0 changes');
    assert.match(read(join(prefix, 'etc/switchyard/edge.env')), /^SWITCHYARD_LOG_LEVEL=debug$/m);

    // A new build is the one change of the next run.
    writeFileSync(join(release, 'dist/cli/main.js'), '// build two\n');
    const upgrade = install(args);
    assert.equal(upgrade.code, 0, upgrade.stderr);
    assert.equal(lastLine(upgrade.stdout), 'install.sh: done: 1 change');
    assert.equal(read(join(prefix, 'opt/switchyard/dist/cli/main.js')), '// build two\n');
    assert.ok(
      !existsSync(join(prefix, 'opt/switchyard.old')) && !existsSync(join(prefix, 'opt/switchyard.new')),
    );
  });

  test('--insecure is loud, renders a plain-text anonymous site and a unit without NATS secrets', (t) => {
    if (process.getuid?.() !== 0) return t.skip('needs root (it chowns files to the new users)');
    const { prefix, args } = freshRoot(dir, 'insecure-root', [
      '--site',
      'site-7',
      '--hub-leaf-url',
      'nats-leaf://127.0.0.1:7422',
      '--insecure',
    ]);
    const r = install(args);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout.split('\n')[0]!, /^install\.sh: WARNING: --insecure: /);
    const body = read(join(prefix, 'etc/switchyard/nats-site.conf'))
      .split('\n')
      .filter((l) => !l.trim().startsWith('#'))
      .join('\n');
    assert.doesNotMatch(body, /include|credentials:|tls \{/);
    const dropIn = read(join(prefix, 'etc/systemd/system/switchyard-edge.service.d/insecure.conf'));
    assert.match(dropIn, /^LoadCredential=$/m);
    assert.match(dropIn, /^Environment=.*SWITCHYARD_INSECURE=true/m);
    if (spawnSync('sh', ['-c', 'command -v systemd-analyze']).status === 0) {
      // The unit with its drop-in, as systemd would load them from the root's unit directory.
      const units = join(prefix, 'etc/systemd/system');
      const verify = spawnSync('systemd-analyze', ['verify', join(units, 'switchyard-edge.service')], {
        encoding: 'utf8',
        env: childEnv({ SYSTEMD_UNIT_PATH: `${units}:` }),
      });
      assert.equal(verify.status, 0, verify.stderr);
      assert.equal(verify.stderr.trim(), '');
    }
    assert.ok(!existsSync(join(prefix, 'etc/switchyard/credentials/bridge.creds')));

    // Given a bundle later, the bridge gets its secrets and loses the drop-in; the kept conf is
    // named as not using the bundle.
    const secured = install([...args.filter((a) => a !== '--insecure'), ...bundle]);
    assert.equal(secured.code, 0, secured.stderr);
    assert.ok(existsSync(join(prefix, 'etc/switchyard/credentials/bridge.creds')));
    assert.ok(!existsSync(join(prefix, 'etc/systemd/system/switchyard-edge.service.d/insecure.conf')));
    assert.match(
      secured.stdout,
      /warning: \/etc\/switchyard\/nats-site\.conf does not include nats-trust\.conf/,
    );
  });

  test('refuses stream budgets that do not fit max_file_store, with one line, unless --force', (t) => {
    if (process.getuid?.() !== 0) return t.skip('needs root (it chowns files to the new users)');
    const args = (name: string): string[] =>
      freshRoot(dir, name, [
        '--site',
        'site-7',
        '--hub-leaf-url',
        'tls://127.0.0.1:7422',
        ...bundle,
        // Below the default budgets: telemetry 8 GiB + events 1 GiB + invalid.
        '--max-file-store',
        String(4 * 1024 ** 3),
      ]).args;
    const refused = install(args('budget-root'));
    assert.equal(refused.code, 1, refused.stdout);
    // The bridge's own defaults, as its config loads them.
    const { telemetryMaxBytes, eventsMaxBytes, invalidMaxBytes } = loadConfig(SiteStreamConfigSchema, {
      env: { SWITCHYARD_SITE: 'site-7' },
    });
    const total = telemetryMaxBytes + eventsMaxBytes + invalidMaxBytes;
    assert.equal(
      refused.stderr,
      `install.sh: stream budgets (telemetry ${telemetryMaxBytes} + events ${eventsMaxBytes} + invalid ${invalidMaxBytes} = ${total} bytes) exceed max_file_store 4294967296 of /etc/switchyard/nats-site.conf: lower them in edge.env or raise max_file_store (--force to install anyway)\n`,
    );
    // Nothing is enabled after a refusal.
    assert.ok(!existsSync(join(dir, 'budget-root/etc/systemd/system/multi-user.target.wants')));

    const forced = install([...args('budget-forced-root'), '--force']);
    assert.equal(forced.code, 0, forced.stderr);
    assert.match(forced.stdout, /^install\.sh: WARNING: --force: stream budgets .* exceed max_file_store/m);
  });
});

describe('nats-site.conf, the site nats-server template', () => {
  const servers = new TestServers('deploy');
  let dir: string;
  const connections: NatsConnection[] = [];
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'switchyard-nats-conf-'));
  });
  after(async () => {
    await Promise.all(connections.map((nc) => nc.close().catch(() => undefined)));
    await servers.stopAll();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Renders nats-site.conf as install.sh does into a fresh root; returns the root. */
  function render(name: string, extra: string[]): string {
    const { prefix, args } = freshRoot(dir, name, extra);
    const run = install(args);
    assert.equal(run.code, 0, run.stderr);
    return prefix;
  }

  test('renders to a config nats-server accepts: operator mode and a TLS leaf, or --insecure', async (t) => {
    if (process.getuid?.() !== 0) return t.skip('install.sh needs root');
    const natsServer = findBinary('nats-server');
    const bundle = await siteBundleArgs(dir, 'site-7');
    for (const [name, extra] of [
      ['secure', bundle],
      ['insecure', ['--insecure']],
    ] as const) {
      const prefix = render(name, [
        '--site',
        'site-7',
        '--hub-leaf-url',
        'tls://hub.example.net:7422',
        ...extra,
      ]);
      const text = read(join(prefix, 'etc/switchyard/nats-site.conf'));
      const body = text
        .split('\n')
        .filter((l) => !l.trim().startsWith('#'))
        .join('\n');
      assert.doesNotMatch(body, /@[A-Z_]+@/, 'placeholders left');
      assert.match(body, /domain: "site-7"/);
      const secure = name === 'secure';
      assert.equal(/^include "nats-trust\.conf"$/m.test(body), secure);
      assert.equal(/credentials: "\/etc\/switchyard\/nats\/leaf\.creds"/.test(body), secure);
      assert.equal(/ca_file: "\/etc\/switchyard\/nats\/hub-ca\.crt"/.test(body), secure);
      assert.equal(/cert_file: "\/etc\/switchyard\/nats\/leaf\.crt"/.test(body), secure);
      const check = spawnSync(natsServer, ['-t', '-c', localizeSiteConf(prefix)], { encoding: 'utf8' });
      assert.equal(check.status, 0, check.stderr);
    }
    // And the test flag would catch a bad file (it is no mere parse of the syntax).
    const bad = join(dir, 'bad.conf');
    writeFileSync(bad, 'jetstream { store_dir: "/tmp/x", no_such_setting: 1 }\n');
    assert.notEqual(spawnSync(natsServer, ['-t', '-c', bad]).status, 0);
  });

  test('with the bundle of `site add`, runs a site that is a TLS leaf of a secure hub whose BSU sources it', async (t) => {
    if (process.getuid?.() !== 0) return t.skip('install.sh needs root');
    const site = 'site-deploy';
    // A secure hub as `stack up` runs one: operator mode with a full resolver, TLS on both ports,
    // and leaves verified against the CA.
    const trustDir = join(dir, 'live');
    const store = await OperatorStore.open(join(trustDir, 'operator'));
    const ca = ensureCa(join(trustDir, 'ca'));
    const hubCert = issueCertificate(ca, join(trustDir, 'ca', 'issued'), 'hub', {
      commonName: 'hub',
      usage: 'server',
      names: ['127.0.0.1', 'localhost'],
    });
    const leafPort = await freePort();
    const hub = await servers.start(
      natsSpec({
        name: 'hub',
        role: ServerRole.hubNats,
        dir: join(dir, 'hub'),
        port: await freePort(),
        monitorPort: await freePort(),
        domain: 'hub',
        leafListenPort: leafPort,
        trust: hubTrustLines(store, join(dir, 'hub', 'jwt')),
        tls: hubCert,
        leafTls: { ...hubCert, ca: ca.cert, verify: true },
      }),
    );
    const cloudEnv = {
      SWITCHYARD_NATS_URL: hub.url,
      SWITCHYARD_NATS_CREDS: store.cloudCreds,
      SWITCHYARD_NATS_CA: ca.cert,
    };
    // The operator onboards the site: its accounts and the gateway's files, pushed to the hub.
    const added = await runSwitchyard(['site', 'add', site, '--operator-dir', store.dir], cloudEnv);
    assert.equal(added.code, 0, added.output);

    // The gateway is installed from that directory, its CA and a certificate for its leaf.
    const prefix = render('live-root', [
      '--site',
      site,
      '--hub-leaf-url',
      `tls://127.0.0.1:${leafPort}`,
      ...(await siteBundleArgs(trustDir, site)),
    ]);
    // The gateway's fixed ports and store, moved to free ones and a temp dir for this machine.
    const [port, monitorPort] = [await freePort(), await freePort()];
    const storeDir = join(dir, 'store');
    const conf = localizeSiteConf(prefix, [
      ['listen: "127.0.0.1:4222"', `listen: "127.0.0.1:${port}"`],
      ['http: "127.0.0.1:8222"', `http: "127.0.0.1:${monitorPort}"`],
      ['store_dir: "/var/lib/switchyard/nats"', `store_dir: "${storeDir}"`],
    ]);
    const spec: ServerSpec = {
      name: site,
      role: ServerRole.siteNats,
      site,
      command: findBinary('nats-server'),
      args: ['-c', conf],
      url: `nats://127.0.0.1:${port}`,
      monitorUrl: `http://127.0.0.1:${monitorPort}`,
      dataDir: storeDir,
      logFile: join(dir, 'site-nats.log'),
      waitForLeaf: true,
    };
    mkdirSync(storeDir);
    await servers.start(spec); // ready once JetStream is up and the leaf is connected
    // The leaf landed in the site's own account at the hub.
    const leafs = await hubLeafs(hub.monitorUrl!);
    assert.deepEqual(
      leafs?.filter((leaf) => isLeafOfSite(leaf, site)).map((leaf) => leaf.account),
      [store.siteAccount(site).publicKey],
    );

    // The local client port takes the bridge's credentials, as installed, and nobody anonymous.
    const anonymous = await connectNats({ url: spec.url, name: 'anonymous', waitForServer: false }).then(
      (nc) => nc.close().then(() => 'connected'),
      (err: unknown) => String(err),
    );
    assert.match(anonymous, /authorization|authentication/i);
    const bridgeNc = await connectNats({
      url: spec.url,
      name: 'deploy-bridge',
      waitForServer: false,
      auth: { ...NO_NATS_AUTH, natsCreds: join(prefix, 'etc/switchyard/credentials/bridge.creds') },
    });
    connections.push(bridgeNc);
    await ensureSiteStreams(await jetstreamManager(bridgeNc), {
      ...loadConfig(SiteStreamConfigSchema, { env: { SWITCHYARD_SITE: site } }),
      telemetryMaxBytes: 64 * 1024 * 1024,
      eventsMaxBytes: 16 * 1024 * 1024,
    });
    await jetstream(bridgeNc).publish(`bsu.${site}.bsu-1.status`, '{"ts":1,"seq":1}', { msgID: 'deploy-1' });
    const cloudNc = await connectNats({
      url: hub.url,
      name: 'deploy-cloud',
      waitForServer: false,
      auth: { ...NO_NATS_AUTH, natsCreds: store.cloudCreds, natsCa: ca.cert },
    });
    connections.push(cloudNc);
    // The hub reaches the site's JetStream API as $JS.<domain>.API: the domain is the site id.
    await waitFor(
      'the site message in the hub stream',
      async () => (await streamCount(cloudNc, HUB_STREAM)) === 1,
      30_000,
    );
  });
});

describe('mosquitto-switchyard.conf', () => {
  const servers = new TestServers('deploy-mqtt');
  after(() => servers.stopAll());

  /** A numeric setting of a mosquitto (`key value`) or nats-server (`key: value`) config. */
  const setting = (text: string, key: string, sep: string): number =>
    Number(new RegExp(`^\\s*${key}${sep}\\s*(\\d+)\\s*$`, 'm').exec(text)?.[1]);

  test("bounds packets below the site server's max_payload and the queue in bytes", () => {
    const conf = read(join(SYSTEMD, 'mosquitto-switchyard.conf'));
    const maxPayload = setting(read(join(SYSTEMD, 'nats-site.conf')), 'max_payload', ':');
    assert.equal(maxPayload, 1024 * 1024);
    // Room for the headers the bridge adds when it publishes a packet to the site server.
    assert.equal(setting(conf, 'max_packet_size', ' '), maxPayload - 4096);
    assert.equal(setting(conf, 'max_queued_bytes', ' '), 256 * 1024 * 1024);
    assert.ok(setting(conf, 'max_queued_messages', ' ') > 0);
  });

  test('is accepted by mosquitto as a conf.d snippet, with its ACL and a password file; a packet over max_packet_size is refused', async () => {
    const confd = join(servers.dir, 'conf.d');
    mkdirSync(confd);
    const port = await freePort();
    // As install.sh renders it (test/site-broker.test.ts runs that, and what it allows), here at
    // this test's paths and port.
    const users = join(servers.dir, 'switchyard');
    mkdirSync(users);
    cpSync(join(SYSTEMD, 'mosquitto-switchyard.acl'), join(users, 'acl'));
    const password = newPassword();
    writeFileSync(join(users, 'passwd'), `${passwordFileLine('bsu-1', password)}\n`);
    const snippet = read(join(SYSTEMD, 'mosquitto-switchyard.conf'))
      .replace(/^@LISTENERS@$/m, `listener ${port} 127.0.0.1`)
      .replaceAll('/etc/mosquitto/switchyard/', `${users}/`);
    writeFileSync(join(confd, 'switchyard.conf'), snippet);
    const conf = join(servers.dir, 'mosquitto.conf');
    writeFileSync(conf, `user root\ninclude_dir ${confd}\n`);
    // startServer rejects, with mosquitto's log, if mosquitto refuses the file and exits.
    await servers.start({
      name: 'mosquitto',
      role: ServerRole.siteMqtt,
      command: findBinary('mosquitto'),
      args: ['-c', conf],
      url: `mqtt://127.0.0.1:${port}`,
      dataDir: servers.dir,
      logFile: join(servers.dir, 'mosquitto.log'),
    });

    const device = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, {
      username: 'bsu-1',
      password,
      clientId: 'bsu-1',
      reconnectPeriod: 0,
    });
    try {
      const limit = setting(read(join(SYSTEMD, 'mosquitto-switchyard.conf')), 'max_packet_size', ' ');
      const topic = 'bsu/bsu-1/telemetry';
      // mosquitto compares a PUBLISH's remaining length (topic with its 2-byte length, the
      // packet id, the payload) plus one against the limit.
      const overhead = 2 + topic.length + 2;
      await device.publishAsync(topic, Buffer.alloc(limit - 1 - overhead, 'a'), { qos: 1 });
      let closed = false;
      device.once('close', () => (closed = true));
      device.publish(topic, Buffer.alloc(limit, 'a'), { qos: 1 });
      // The broker drops a client whose packet is over the limit.
      await waitFor('the broker to drop the client', () => closed, 10_000);
    } finally {
      await device.endAsync(true);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// The image

/** One Dockerfile instruction: `COPY --from=build /app/dist ./dist` → COPY, {from: build}, args. */
interface DockerInstruction {
  op: string;
  flags: Record<string, string>;
  args: string[];
  /** Everything after the op, as written (a RUN's shell command). */
  rest: string;
}

interface DockerStage {
  image: string;
  name?: string;
  instructions: DockerInstruction[];
}

/** A Dockerfile's stages, continuation lines joined and comments dropped. */
function dockerStages(text: string): DockerStage[] {
  const stages: DockerStage[] = [];
  const lines = text
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  for (const line of lines) {
    const [, op, rest] = /^(\S+)\s+(.*)$/.exec(line) ?? [];
    assert.ok(op && rest, `not a Dockerfile instruction: ${line}`);
    if (op.toUpperCase() === 'FROM') {
      const [, image, name] = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(rest) ?? [];
      assert.ok(image, `FROM ${rest}`);
      stages.push({ image, ...(name ? { name } : {}), instructions: [] });
      continue;
    }
    const stage = stages.at(-1);
    assert.ok(stage, `${op} before FROM`);
    const words = rest.split(/\s+/);
    const flags: Record<string, string> = {};
    while (words[0]?.startsWith('--')) {
      const [key, value = ''] = words.shift()!.slice(2).split('=');
      flags[key!] = value;
    }
    stage.instructions.push({ op: op.toUpperCase(), flags, args: words, rest });
  }
  return stages;
}

/**
 * .dockerignore as Docker reads it: patterns relative to the context, a path left out when it or
 * a folder above it matches, `!` taking a path back in, the last matching line deciding.
 */
function dockerIgnore(text: string): (path: string) => boolean {
  const rules = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
    .map((line) => {
      const negate = line.startsWith('!');
      const glob = (negate ? line.slice(1) : line).replace(/^\/+|\/+$/g, '');
      assert.doesNotMatch(glob, /[[\\]/, `.dockerignore: ${line}: character classes are not read here`);
      const source = glob
        .split(/(\*\*\/|\*\*|\*|\?)/)
        .map((part) =>
          part === '**/'
            ? '(?:.*/)?'
            : part === '**'
              ? '.*'
              : part === '*'
                ? '[^/]*'
                : part === '?'
                  ? '[^/]'
                  : part.replace(/[.+^${}()|]/g, '\\$&'),
        )
        .join('');
      return { negate, pattern: new RegExp(`^${source}$`) };
    });
  return (path) => {
    const parts = path.split('/');
    const self = parts.map((_, i) => parts.slice(0, i + 1).join('/'));
    let ignored = false;
    for (const rule of rules) if (self.some((p) => rule.pattern.test(p))) ignored = !rule.negate;
    return ignored;
  };
}

/** Every file under `dir`, as paths relative to it. */
function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => relative(dir, join(e.parentPath, e.name)));
}

/**
 * A process environment as an image gives it: PATH (to find node and npm), HOME and the stage's
 * ENV, none of this test process's own variables.
 */
function imageEnv(stageEnv: Record<string, string>): NodeJS.ProcessEnv {
  const { PATH, HOME } = childEnv();
  return { PATH, HOME, ...stageEnv };
}

/** What a build of one stage did, in a directory standing for the container's root. */
interface StageBuild {
  rootfs: string;
  workdir: string;
  env: Record<string, string>;
  entrypoint?: string[];
  /** Folders COPY took from the context, as container paths. */
  copiedFolders: { context: string; container: string }[];
}

/**
 * Builds one Dockerfile stage without a Docker engine: COPY takes exactly the paths it names from
 * the build context (this checkout, less what .dockerignore leaves out) or from an earlier stage;
 * `npm ci` links this checkout's node_modules (it holds the dev dependencies as well, so a
 * runtime import of one is not caught); every other RUN runs with sh in the stage's WORKDIR.
 */
function buildStage(
  stage: DockerStage,
  rootfs: string,
  built: Map<string, StageBuild>,
  ignored: (path: string) => boolean,
): StageBuild {
  const result: StageBuild = { rootfs, workdir: '/', env: {}, copiedFolders: [] };
  const host = (containerPath: string): string => join(rootfs, posix.resolve(result.workdir, containerPath));
  for (const { op, flags, args, rest } of stage.instructions) {
    switch (op) {
      case 'WORKDIR':
        result.workdir = posix.resolve(result.workdir, args[0]!);
        mkdirSync(host('.'), { recursive: true });
        break;
      case 'ENV':
        for (const pair of args) {
          const eq = pair.indexOf('=');
          assert.ok(eq > 0, `ENV ${rest}: only KEY=value is read here`);
          result.env[pair.slice(0, eq)] = pair.slice(eq + 1);
        }
        break;
      case 'COPY': {
        assert.ok(!rest.trimStart().startsWith('['), `COPY ${rest}: only the plain form is read here`);
        const sources = args.slice(0, -1);
        const dest = args.at(-1)!;
        const from = flags.from === undefined ? undefined : built.get(flags.from);
        assert.ok(flags.from === undefined || from, `COPY --from=${flags.from}: no such stage before it`);
        for (const source of sources) {
          assert.doesNotMatch(source, /[*?[]/, `COPY ${source}: wildcards are not read here`);
          const intoDir = dest.endsWith('/') || sources.length > 1;
          let origin: string;
          if (from) origin = join(from.rootfs, posix.resolve(from.workdir, source));
          else {
            const path = posix.normalize(source).replace(/\/$/, '');
            assert.ok(!path.startsWith('..') && !ignored(path), `COPY ${source}: not in the build context`);
            origin = join(ROOT, path);
          }
          assert.ok(existsSync(origin), `COPY ${source}: no such file`);
          if (statSync(origin).isDirectory()) {
            // A folder's contents go to the destination, as Docker copies them.
            const target = host(dest);
            cpSync(origin, target, {
              recursive: true,
              filter: (p) => from !== undefined || !ignored(relative(ROOT, p)),
            });
            if (!from)
              result.copiedFolders.push({
                context: relative(ROOT, origin),
                container: posix.resolve(result.workdir, dest),
              });
          } else {
            const target = intoDir ? join(host(dest), basename(source)) : host(dest);
            mkdirSync(dirname(target), { recursive: true });
            cpSync(origin, target);
          }
        }
        break;
      }
      case 'RUN':
        if (/^npm ci\b/.test(rest)) symlinkSync(join(ROOT, 'node_modules'), host('node_modules'), 'dir');
        else {
          const r = spawnSync('/bin/sh', ['-c', rest], {
            cwd: host('.'),
            env: imageEnv(result.env),
            encoding: 'utf8',
          });
          assert.equal(r.status, 0, `RUN ${rest}:\n${r.stdout}${r.stderr}`);
        }
        break;
      case 'ENTRYPOINT':
        result.entrypoint = JSON.parse(rest) as string[];
        break;
      case 'USER':
        break;
      default:
        assert.fail(`${op}: not an instruction this test knows how to build`);
    }
  }
  return result;
}

describe('Dockerfile', () => {
  const stages = dockerStages(read(join(ROOT, 'Dockerfile')));
  const buildStageOf = stages.find((s) => s.name === 'build');
  const final = stages.at(-1)!;
  const tsconfig = JSON.parse(read(join(ROOT, 'tsconfig.json'))) as {
    compilerOptions: { outDir: string; rootDir: string };
  };
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'switchyard-image-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('compiles in a build stage and runs the compiled CLI from node slim, as a non-root user', () => {
    assert.ok(buildStageOf, 'a stage named build');
    const copied = new Set(
      buildStageOf.instructions.filter((i) => i.op === 'COPY' && !i.flags.from).flatMap((i) => i.args),
    );
    // The full build below fails on a missing folder too; this names it.
    const build = JSON.parse(read(join(ROOT, 'tsconfig.build.json'))) as { include: string[] };
    for (const folder of build.include) assert.ok(copied.has(folder), `COPY ${folder}`);
    assert.ok(final.instructions.some((i) => i.op === 'RUN' && /^npm ci --omit=dev\b/.test(i.rest)));
    for (const stage of stages) assert.match(stage.image, /^node:(20|22|24)-slim$/);
    const last = final.instructions.at(-1)!;
    assert.equal(`${last.op} ${last.rest}`, 'ENTRYPOINT ["node", "dist/cli/main.js"]');
    const user = final.instructions.filter((i) => i.op === 'USER').at(-1);
    const uid = Number(/^(\d+)/.exec(user?.rest ?? '')?.[1]);
    assert.ok(uid > 0, 'a numeric, non-root USER (Kubernetes checks runAsNonRoot by number)');
    const k8sUid = parseYamlFile(join(K8S, 'archive.yaml'))[0]!.spec.template.spec.securityContext.runAsUser;
    assert.equal(k8sUid, uid);
  });

  test(
    'builds from exactly the files it copies, and the image runs every command with its files',
    { timeout: 600_000 },
    () => {
      const ignored = dockerIgnore(read(join(ROOT, '.dockerignore')));
      const built = new Map<string, StageBuild>();
      let image: StageBuild | undefined;
      stages.forEach((stage, i) => {
        const result = buildStage(stage, join(dir, `stage-${i}`), built, ignored);
        built.set(stage.name ?? String(i), result);
        image = result;
      });
      assert.ok(image?.entrypoint);
      const compiled = built.get('build')!;
      const dist = posix.join(compiled.workdir, tsconfig.compilerOptions.outDir);
      assert.ok(
        existsSync(join(compiled.rootfs, dist, 'cli/main.js')),
        `the build wrote ${dist}/cli/main.js`,
      );

      // tsc emits only what it compiles (rootDir "." keeps the layout): a file any module may read at
      // run time, such as a Redis script, must be beside the JavaScript in the image.
      const missing: string[] = [];
      for (const folder of compiled.copiedFolders)
        for (const file of filesUnder(join(ROOT, folder.context))) {
          if (file.endsWith('.ts') || ignored(posix.join(folder.context, file))) continue;
          const at = posix.join(compiled.workdir, tsconfig.compilerOptions.rootDir);
          const inDist = posix.join(dist, posix.relative(at, posix.join(folder.container, file)));
          if (!existsSync(join(image.rootfs, inDist))) missing.push(`${folder.context}/${file} → ${inDist}`);
        }
      assert.deepEqual(missing, [], 'files of the copied folders missing from the image');

      const [command, ...args] = image.entrypoint;
      const run = (extra: string[]) =>
        spawnSync(command!, [...args, ...extra], {
          cwd: join(image!.rootfs, image!.workdir),
          env: imageEnv(image!.env),
          encoding: 'utf8',
        });
      const help = run(['--help']);
      assert.equal(help.status, 0, help.stderr);
      assert.match(help.stdout, /^Usage: switchyard /);
      // Each command is loaded only when it runs: its --help imports all it needs.
      for (const { name } of commands) {
        const r = run([name, '--help']);
        assert.equal(r.status, 0, `${name} --help: ${r.stderr}`);
        assert.match(r.stdout, new RegExp(`^Usage: switchyard ${name} `), name);
      }
    },
  );

  test('.dockerignore keeps the host build and dependencies out of the context', () => {
    const ignored = dockerIgnore(read(join(ROOT, '.dockerignore')));
    for (const path of ['node_modules', 'dist', '.git', 'dist/cli/main.js']) assert.ok(ignored(path), path);
    for (const path of ['cli', 'cloud/runner.ts', 'package.json', 'deploy/build.sh'])
      assert.ok(!ignored(path), path);
  });
});
