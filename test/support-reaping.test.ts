/**
 * What tests and benchmarks start dies with them: a test process killed with SIGKILL (a runner
 * timeout, a developer's ^C twice) runs no exit handler, and must still leave no server and no
 * switchyard process behind, holding ports and directories. And stopping a server signals only
 * the process that was started, never a later one that reused its PID.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { waitFor } from './support/servers.ts';
import { isAlive, processStartTicks } from '../lib/process.ts';
import { stopServer } from '../stack/server-process.ts';

const dir = mkdtempSync(join(tmpdir(), 'switchyard-reaping-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const harness = (file: string): string => fileURLToPath(new URL(`./support/${file}`, import.meta.url));

test('servers and switchyard processes a test started die with it when it is SIGKILLed', async () => {
  const script = join(dir, 'owner.mts');
  writeFileSync(
    script,
    `import { TestServers } from ${JSON.stringify(harness('servers.ts'))};
import { startSwitchyard } from ${JSON.stringify(harness('process.ts'))};
import { freePort } from ${JSON.stringify(fileURLToPath(new URL('../lib/process.ts', import.meta.url)))};
const servers = new TestServers('reaping');
const nats = await servers.nats();
const opsPort = await freePort();
// Waits for a Redis that never comes: a process that runs until it is stopped.
const monitor = startSwitchyard(['monitor'], {
  SWITCHYARD_NATS_URL: nats.url,
  SWITCHYARD_REDIS_URL: 'redis://127.0.0.1:1',
  SWITCHYARD_OPS_PORT: String(opsPort),
});
console.log(JSON.stringify({ nats: nats.pid, monitor: monitor.child.pid, opsPort }));
setInterval(() => undefined, 1000);
`,
  );
  const owner = spawn(process.execPath, ['--import', 'tsx', script], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise((resolve) => owner.once('exit', resolve));
  try {
    const line = await new Promise<string>((resolve, reject) => {
      createInterface({ input: owner.stdout! }).once('line', resolve);
      owner.once('exit', (code) => reject(new Error(`the owner exited (${code}) before starting anything`)));
    });
    const pids = JSON.parse(line) as { nats: number; monitor: number; opsPort: number };
    // The monitor is up (it answers /healthz while it waits for Redis).
    await waitFor(
      'the monitor to serve /healthz',
      async () =>
        (await fetch(`http://127.0.0.1:${pids.opsPort}/healthz`).catch(() => undefined))?.ok === true,
    );
    assert.ok(isAlive(pids.nats), 'nats-server runs');
    assert.ok(isAlive(pids.monitor), 'the monitor runs');

    owner.kill('SIGKILL');
    await exited;
    await waitFor(
      'nats-server and the monitor to be gone',
      () => !isAlive(pids.nats) && !isAlive(pids.monitor),
      5_000,
    );
  } finally {
    owner.kill('SIGKILL');
  }
});

test('stopping a server never signals a process that took its PID', async () => {
  const child = spawn('sleep', ['60'], { stdio: 'ignore' });
  const exited = new Promise((resolve) => child.once('exit', (_code, signal) => resolve(signal)));
  try {
    const ticks = processStartTicks(child.pid!);
    assert.ok(ticks !== undefined, 'the start time is readable');
    // What a server recorded before its process ended and the PID went to this one.
    await stopServer({ pid: child.pid!, startTicks: ticks - 1 }, 200);
    assert.ok(isAlive(child.pid!), 'a stranger with the PID is left alone');
    await stopServer({ pid: child.pid!, startTicks: ticks }, 2_000);
    assert.equal(await exited, 'SIGTERM', 'the recorded process is stopped');
  } finally {
    child.kill('SIGKILL');
  }
});
