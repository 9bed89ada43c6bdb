/**
 * A site's uplink in the local stack: `cut-link` and `heal-link` signal the site's link process
 * (stack/link-proxy.ts) and wait until the hub sees the change.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { UsageError } from '../lib/errors.ts';
import { isRunning } from '../lib/process.ts';
import { waitUntil } from '../lib/timers.ts';
import { siteLeafConnected } from './leafz.ts';
import { isReady } from './server-readiness.ts';
import { readStack, type Stack, type StackServer } from './stack-file.ts';

/** What a link process last wrote to its `link.state`; undefined before it wrote anything. */
export async function linkState(link: StackServer): Promise<'up' | 'cut' | undefined> {
  try {
    const text = readFileSync(join(link.dataDir, 'link.state'), 'utf8').trim();
    return text === 'cut' ? 'cut' : text === 'up' ? 'up' : undefined;
  } catch {
    return undefined;
  }
}

export interface LinkOptions {
  /** How long to wait for the hub to see the site's leaf gone (cut) or back (heal), in ms. */
  timeoutMs?: number;
}

export interface LinkResult {
  site: string;
  /** How long the hub took to see the change, in ms. */
  elapsedMs: number;
}

function runningLink(stack: Stack, site: string): StackServer {
  stack.checkSite(site);
  const link = stack.link(site);
  if (!isRunning(link))
    throw new UsageError(
      `${link.name} is not running: start it with 'switchyard stack restart ${link.name} --dir ${stack.dir}'`,
    );
  return link;
}

/**
 * Cuts a site's uplink (SIGUSR1 to its link: every connection dropped, new ones refused) and
 * resolves once the hub's `/leafz` no longer shows the site. When the hub does not answer, resolves
 * once the link reports itself cut.
 */
export async function cutLink(dir: string, site: string, options: LinkOptions = {}): Promise<LinkResult> {
  const stack = readStack(dir);
  const link = runningLink(stack, site);
  const started = Date.now();
  process.kill(link.pid, 'SIGUSR1');
  const hubMonitor = stack.hub.monitorUrl!;
  await waitUntil(
    `the hub to drop ${site}'s leaf`,
    async () => (await linkState(link)) === 'cut' && (await siteLeafConnected(hubMonitor, site)) !== true,
    { timeoutMs: options.timeoutMs ?? 15_000, everyMs: 50 },
  );
  return { site, elapsedMs: Date.now() - started };
}

/**
 * Heals a site's uplink (SIGUSR2 to its link) and resolves once the hub's `/leafz` shows the site
 * again (the site's nats-server retries its leaf every second). When the hub or the site's nats-server is
 * not running, resolves once the link accepts connections again.
 */
export async function healLink(dir: string, site: string, options: LinkOptions = {}): Promise<LinkResult> {
  const stack = readStack(dir);
  const link = runningLink(stack, site);
  const started = Date.now();
  process.kill(link.pid, 'SIGUSR2');
  const hub = stack.hub;
  const expectLeaf = isRunning(hub) && isRunning(stack.siteNats(site));
  await waitUntil(
    expectLeaf ? `${site}'s leaf to reach the hub again` : `${link.name} to accept connections`,
    async () =>
      (await linkState(link)) === 'up' &&
      (expectLeaf ? (await siteLeafConnected(hub.monitorUrl!, site)) === true : await isReady(link)),
    { timeoutMs: options.timeoutMs ?? 20_000, everyMs: 50 },
  );
  return { site, elapsedMs: Date.now() - started };
}
