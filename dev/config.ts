/**
 * Settings of `switchyard dev`, one flat TypeBox schema: flags (`--sites`), environment
 * (`SWITCHYARD_SITES`) and `--config FILE` all come from it (lib/config.ts).
 */
import Type, { type Static } from 'typebox';
import { MAX_SITES } from '../stack/up.ts';

/** Where `switchyard dev` keeps its stack and logs unless told otherwise (relative to the working dir). */
export const DEFAULT_DEV_DIR = '.switchyard/dev';

export const DevConfigSchema = Type.Object({
  dir: Type.String({
    minLength: 1,
    default: DEFAULT_DEV_DIR,
    description: "dev's directory: the stack (stack.json, env files, every server's data) and logs/",
  }),
  sites: Type.Integer({
    minimum: 1,
    maximum: MAX_SITES,
    default: 2,
    description: 'number of sites (site-1 … site-N), each with its servers, a bridge and simulated devices',
  }),
  rate: Type.Number({
    exclusiveMinimum: 0,
    maximum: 100_000,
    default: 200,
    description: "messages per second from each site's simulated devices",
  }),
  devices: Type.Integer({
    minimum: 1,
    maximum: 100_000,
    default: 20,
    description: 'simulated BSUs per site',
  }),
  invalidRatio: Type.Number({
    minimum: 0,
    maximum: 1,
    default: 0.01,
    description: 'share of payloads sent invalid on purpose, 0..1 (the bridge keeps them as kind invalid)',
  }),
  view: Type.Boolean({
    default: true,
    description: 'live view in the terminal; off (--no-view, or stdout not a terminal): JSON status lines',
  }),
  statusIntervalMs: Type.Integer({
    minimum: 200,
    default: 2000,
    description: 'how often a JSON status line is printed without the view (ms)',
  }),
});
export type DevConfig = Static<typeof DevConfigSchema>;
