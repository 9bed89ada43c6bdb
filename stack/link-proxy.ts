/**
 * A cuttable TCP link between a site and the hub, standing in for the site's uplink.
 * `--listen HOST:PORT --target HOST:PORT`. SIGUSR1 cuts it (drops every connection and refuses new
 * ones), SIGUSR2 heals it. Its state is written to `link.state` beside its log for `stack status`.
 */
import { writeFileSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: { listen: { type: 'string' }, target: { type: 'string' }, state: { type: 'string' } },
});
const split = (hostPort: string | undefined, flag: string): [string, number] => {
  const m = /^(.+):(\d+)$/.exec(hostPort ?? '');
  if (!m) {
    process.stderr.write(`link-proxy: --${flag} HOST:PORT is required\n`);
    process.exit(2);
  }
  return [m[1]!, Number(m[2])];
};
const [listenHost, listenPort] = split(values.listen, 'listen');
const [targetHost, targetPort] = split(values.target, 'target');
const stateFile = values.state ?? 'link.state';

const sockets = new Set<Socket>();
let cut = false;

const server = createServer((client) => {
  if (cut) return client.destroy();
  const upstream = connect({ host: targetHost, port: targetPort });
  for (const s of [client, upstream]) {
    sockets.add(s);
    s.setNoDelay(true);
    s.once('close', () => sockets.delete(s));
    s.on('error', () => {
      client.destroy();
      upstream.destroy();
    });
  }
  client.pipe(upstream);
  upstream.pipe(client);
  client.once('close', () => upstream.destroy());
  upstream.once('close', () => client.destroy());
});

function listen(): void {
  server.listen(listenPort, listenHost);
}

function setState(next: 'up' | 'cut'): void {
  writeFileSync(stateFile, `${next}\n`);
  process.stdout.write(`${new Date().toISOString()} link ${next}\n`);
}

process.on('SIGUSR1', () => {
  if (cut) return;
  cut = true;
  server.close();
  for (const s of sockets) s.destroy();
  setState('cut');
});
process.on('SIGUSR2', () => {
  if (!cut) return;
  cut = false;
  listen();
  setState('up');
});
process.on('SIGTERM', () => process.exit(0));

// While cut there is no open handle left; keep the process alive until SIGTERM.
setInterval(() => undefined, 1 << 30);
listen();
setState('up');
