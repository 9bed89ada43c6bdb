/**
 * A service run by lib/service.ts that misbehaves as asked (argv[2]), each leaving a handle open
 * that would keep the event loop alive: `start-fails` (its start throws), `start-hangs` (its start
 * never ends), `stop-hangs` (its stop never ends, with a 500 ms grace).
 */
import { createServer } from 'node:net';
import { runService } from '../../lib/service.ts';

const mode = process.argv[2];
// An open listener and a timer: what a client left behind would look like to the event loop.
const listener = createServer().listen(0, '127.0.0.1');
const timer = setInterval(() => undefined, 1_000);

await runService({
  name: 'switchyard-fixture',
  opsHost: '127.0.0.1',
  opsPort: 0,
  logLevel: 'info',
  stopGraceMs: 500,
  start: async () => {
    if (mode === 'start-fails') throw new Error('cannot reach the store at 127.0.0.1:9: connection refused');
    if (mode === 'start-hangs') await new Promise(() => undefined);
    return { readiness: () => ({ ready: true }), stop: () => new Promise(() => undefined) };
  },
});
// Not reached: runService ends the process.
listener.close();
clearInterval(timer);
