/**
 * Writes the example environment file of a command from its config schema, so that the variable
 * names, descriptions and defaults in deploy/ are the ones the command really reads:
 *
 *   node --import tsx deploy/env-example.ts edge > deploy/systemd/edge.env
 *
 * Every setting is listed. A required one (no default) is an uncommented `KEY=` line to fill in;
 * every other one is commented out with its default as the value, so uncommenting a line changes
 * nothing until its value is changed. test/deploy.test.ts checks the committed file against this.
 */
import { pathToFileURL } from 'node:url';
import type { TObject } from 'typebox';
import { EdgeConfigSchema } from '../edge/config.ts';
import { envName } from '../lib/config.ts';

interface Described {
  description?: string;
  default?: unknown;
  secret?: boolean;
}

/** Defaults computed on the machine that runs the command: shown as a placeholder, not a value. */
export const DYNAMIC_DEFAULTS: Record<string, Record<string, string>> = {
  edge: { gateway: "<this host's name>" },
};

/**
 * Settings the command's systemd unit sets itself (Environment=), pointing at the secrets it loads
 * with LoadCredential=: systemd expands %d (the credentials directory) in a unit, not in an
 * EnvironmentFile.
 */
export const UNIT_SETTINGS: Record<string, Record<string, string>> = {
  edge: {
    natsCreds: '%d/bridge.creds',
    mqttPassword: '%d/mqtt-password',
    msgIdKey: '%d/msg-id.key',
  },
};

/** What each command's example is for, and where it goes. */
const HEADERS: Record<string, string[]> = {
  edge: [
    '/etc/switchyard/edge.env: settings of `switchyard edge` (switchyard-edge.service reads it with',
    'EnvironmentFile=). systemd reads KEY=value lines; quote a value with spaces.',
  ],
};

/** How a value is written: as is, or single-quoted when systemd or a shell would not read it so. */
export function envValue(value: unknown): string {
  const text = Array.isArray(value) ? value.join(',') : String(value);
  return /^[\w.:/@,{}+=%-]*$/.test(text) ? text : `'${text.replace(/'/g, `'\\''`)}'`;
}

function wrap(text: string, width = 96): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/)) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line) lines.push(line);
  return lines;
}

/** The example environment file of `command`, whose settings are `schema`. */
export function renderEnvExample(command: string, schema: TObject): string {
  const dynamic = DYNAMIC_DEFAULTS[command] ?? {};
  const unitSet = UNIT_SETTINGS[command] ?? {};
  const out: string[] = [
    ...(HEADERS[command] ?? [`Settings of \`switchyard ${command}\`.`]).map((l) => `# ${l}`),
    '#',
    `# Every setting \`switchyard ${command}\` reads; a commented line shows its default. Settings may`,
    '# also come from a YAML file named by SWITCHYARD_CONFIG; these variables take precedence over it.',
    `# Generated from the config schema: node --import tsx deploy/env-example.ts ${command}`,
  ];
  for (const [key, raw] of Object.entries(schema.properties)) {
    const prop = raw as Described;
    const required = prop.default === undefined && !(key in dynamic);
    const text = (prop.description ?? key).replace(/\s*\.$/, '');
    const note = required ? 'Required.' : key in dynamic ? `Default: ${dynamic[key]}.` : '';
    out.push('', ...wrap(`${text}.${note ? ` ${note}` : ''}`).map((l) => `# ${l}`));
    const fromUnit = unitSet[key];
    if (fromUnit) {
      const variable = prop.secret ? `${envName(key)}_FILE` : envName(key);
      out.push(
        `# The unit sets ${variable}=${fromUnit} (LoadCredential=; install.sh puts the file in place).`,
      );
    }
    if (prop.secret) {
      // A secret is better kept out of this file: in one of its own, e.g. through LoadCredential=.
      out.push(
        `# Secret: prefer ${envName(key)}_FILE naming a file that holds it (%d/<name> with LoadCredential=).`,
        `#${envName(key)}_FILE=`,
      );
    }
    if (required) out.push(`${envName(key)}=`);
    else out.push(`#${envName(key)}=${key in dynamic ? dynamic[key] : envValue(prop.default)}`);
  }
  return `${out.join('\n')}\n`;
}

/** The config schema of each command that has an example. */
export const EXAMPLE_SCHEMAS: Record<string, TObject> = { edge: EdgeConfigSchema };

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const command = process.argv[2] ?? '';
  const schema = EXAMPLE_SCHEMAS[command];
  if (!schema) {
    process.stderr.write(`usage: env-example.ts ${Object.keys(EXAMPLE_SCHEMAS).join('|')}\n`);
    process.exitCode = 2;
  } else process.stdout.write(renderEnvExample(command, schema));
}
