/**
 * What the deploy tests share: where deploy/ is, the config schema behind each command that takes
 * settings, and the YAML reader the manifests are checked with.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import type { TObject } from 'typebox';
import { parseAllDocuments } from 'yaml';
import { archiveConsumer } from '../../cloud/archive/consumer.ts';
import { commands } from '../../cli/commands/index.ts';
import { ingestConsumer } from '../../cloud/ingest/consumer.ts';
import { monitorConsumer } from '../../cloud/monitor/consumer.ts';
import { consumerSchema } from '../../cloud/consumer.ts';
import { ConsoleConfigSchema } from '../../cloud/console/config.ts';
import { HubStreamConfigSchema } from '../../cloud/hub-stream.ts';
import { EdgeConfigSchema, SiteInitConfigSchema } from '../../edge/config.ts';
import { envName, envNames, kebab, secretKeys } from '../../lib/config.ts';
import { ENV_PREFIX } from '../../lib/env.ts';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const DEPLOY = join(ROOT, 'deploy');
export const SYSTEMD = join(DEPLOY, 'systemd');
export const K8S = join(DEPLOY, 'k8s');
export const read = (path: string): string => readFileSync(path, 'utf8');

// ---------------------------------------------------------------------------------------------
// Commands and the settings they read

/** The config schema behind each command line that takes settings. */
export const SCHEMAS: Record<string, TObject> = {
  edge: EdgeConfigSchema,
  archive: consumerSchema(archiveConsumer),
  monitor: consumerSchema(monitorConsumer),
  ingest: consumerSchema(ingestConsumer),
  console: ConsoleConfigSchema,
  'site add': HubStreamConfigSchema,
  'site remove': HubStreamConfigSchema,
  'site list': HubStreamConfigSchema,
  'site init': SiteInitConfigSchema,
};
/** Long-running consumers, each a Deployment. */
export const CONSUMERS = ['archive', 'monitor', 'ingest'];
/** Read by every command besides its schema's settings (lib/config.ts). */
export const CONFIG_FILE_VAR = `${ENV_PREFIX}CONFIG`;

export const keyOfEnv = (schema: TObject, name: string): string | undefined =>
  Object.keys(schema.properties).find((k) => envName(k) === name);
export const ALL_VARS = new Set([CONFIG_FILE_VAR, ...Object.values(SCHEMAS).flatMap(envNames)]);

/**
 * The command an argument list runs, as the CLI registers it: `['site', 'add', 'x']` → `site add`.
 * Throws when the first argument is not a command. Also checks that the schema mapped to it is
 * the one its flags come from.
 */
export async function resolveCommand(args: string[]): Promise<string> {
  const entry = commands.find((c) => c.name === args[0]);
  assert.ok(entry, `${JSON.stringify(args)}: "${args[0]}" is not a switchyard command`);
  const program = new Command('switchyard');
  (await entry.load())(program);
  let command = program.commands.find((c) => c.name() === args[0])!;
  const path = [args[0]!];
  for (const arg of args.slice(1)) {
    const sub = command.commands.find((c) => c.name() === arg);
    if (!sub) break;
    command = sub;
    path.push(arg);
  }
  assert.equal(command.commands.length, 0, `${path.join(' ')} needs a subcommand`);
  const name = path.join(' ');
  const schema = SCHEMAS[name];
  assert.ok(schema, `no config schema known for "${name}"`);
  const flags = new Set(command.options.map((o) => o.long));
  // Secrets have no flag (lib/config.ts): `ps` shows arguments.
  const secrets = new Set(secretKeys(schema));
  for (const key of Object.keys(schema.properties))
    if (!secrets.has(key))
      assert.ok(flags.has(`--${kebab(key)}`), `${name} has no --${kebab(key)}: wrong schema mapped`);
  return name;
}

/** Defaults of a schema as JSON text, per property. */
export function defaultOf(schema: TObject, key: string): string {
  return JSON.stringify((schema.properties[key] as { default?: unknown }).default);
}

export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name?: string; generateName?: string; namespace?: string; labels?: Record<string, string> };
  // Manifests are checked field by field below.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  spec?: any;
  data?: Record<string, string>;
  stringData?: Record<string, string>;
  [key: string]: unknown;
}

export function parseYamlFile(path: string): K8sObject[] {
  return parseAllDocuments(read(path)).map((doc) => {
    assert.deepEqual(doc.errors, [], `${relative(ROOT, path)}: ${doc.errors.join('; ')}`);
    const value = doc.toJS() as K8sObject;
    assert.ok(value?.apiVersion && value.kind, `${relative(ROOT, path)}: a document without apiVersion/kind`);
    return value;
  });
}

/** A plain YAML file (Helm values): one document, no errors. Its fields are checked one by one. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function parseYamlValues(path: string): Record<string, any> {
  const docs = parseAllDocuments(read(path));
  assert.equal(docs.length, 1, `${relative(ROOT, path)}: one document`);
  assert.deepEqual(docs[0]!.errors, [], `${relative(ROOT, path)}: ${docs[0]!.errors.join('; ')}`);
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  return docs[0]!.toJS() as Record<string, any>;
}
