/**
 * `KEY=value` files, as `switchyard stack up` writes them (`DIR/env/cloud.env`) and as shells and
 * systemd read them: blank lines and `#` comments ignored, a value either bare or single-quoted
 * (`'it'\''s'`).
 */
import { readFileSync } from 'node:fs';
import { ConfigError } from './errors.ts';

/** The variables of an env file; throws ConfigError naming the file and line of what it cannot read. */
export function readEnvFile(path: string): Record<string, string> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError([`${path}: ${(err as Error).message}`]);
  }
  const out: Record<string, string> = {};
  const problems: string[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const m = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
    const value = m ? unquote(m[2]!) : undefined;
    if (!m || value === undefined) problems.push(`${path}:${i + 1}: expected KEY=value`);
    else out[m[1]!] = value;
  });
  if (problems.length > 0) throw new ConfigError(problems);
  return out;
}

/** A bare word, or single-quoted segments joined by `\'` (POSIX shell quoting); undefined if neither. */
function unquote(value: string): string | undefined {
  if (!value.startsWith("'")) return /\s|'|"/.test(value) ? undefined : value;
  let out = '';
  for (let i = 0; i < value.length;) {
    if (value[i] === "'") {
      const end = value.indexOf("'", i + 1);
      if (end < 0) return undefined;
      out += value.slice(i + 1, end);
      i = end + 1;
    } else if (value.startsWith("\\'", i)) {
      out += "'";
      i += 2;
    } else {
      return undefined;
    }
  }
  return out;
}
