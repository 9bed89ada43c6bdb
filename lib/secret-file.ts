/** Files that hold a secret: readable by their owner only. */
import { chmodSync, writeFileSync } from 'node:fs';

/** Writes `content` to `path` with mode 0600 (also when the file existed with another mode). */
export function writeSecretFile(path: string, content: string | Uint8Array): void {
  writeFileSync(path, content, { mode: 0o600 });
  chmodSync(path, 0o600);
}
