/**
 * Secure by default: a service refuses to run anonymous or in plain text across machines unless
 * told so with `--insecure`, and then says so loudly on every start.
 */
import Type from 'typebox';
import { ConfigError } from './errors.ts';
import type { Logger } from './log.ts';

/** The setting that lets a service run anonymous or in plain text (tests, a laptop). */
export const InsecureSchema = Type.Object({
  insecure: Type.Boolean({
    default: false,
    description: 'Run even without credentials or TLS (a test setup; logged as a warning at start)',
  }),
});

const LOOPBACK = new Set(['localhost', '127.0.0.1', '::1', '[::1]']);

/** True when `url`'s host is this machine (nothing crosses a network). */
export function isLoopbackUrl(url: string): boolean {
  try {
    const host = new URL(url.includes('://') ? url : `nats://${url}`).hostname;
    return LOOPBACK.has(host) || host.startsWith('127.');
  } catch {
    return false;
  }
}

/**
 * Throws a ConfigError (exit 2) listing `insecurities` unless `insecure` is set; with it, logs each
 * one as a warning and goes on.
 */
export function requireSecure(insecurities: readonly string[], insecure: boolean, log?: Logger): void {
  if (insecurities.length === 0) return;
  if (!insecure)
    throw new ConfigError([
      ...insecurities,
      'refusing to run anonymous or in plain text: fix the above, or pass --insecure (SWITCHYARD_INSECURE=true) for a test setup',
    ]);
  for (const reason of insecurities)
    log?.warn({ insecure: true, reason }, 'INSECURE: running without protection');
}
