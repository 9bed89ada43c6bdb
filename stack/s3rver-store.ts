/**
 * Crash recovery for s3rver's filesystem store. s3rver writes an object, its `.md5` and its
 * `metadata.json` one after the other, in place, and a kill in between leaves a torn object that
 * makes every HeadBucket fail with a 500. S3 shows a PUT whole or not at all, so before s3rver
 * starts the torn objects are removed; the client of that PUT got no 200 and writes it again.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join, relative } from 'node:path';

const OBJECT = '._S3rver_object';
const METADATA = '._S3rver_metadata.json';

/** Why an object's files do not make a whole PUT, or undefined if they do. */
function tornReason(objectPath: string): string | undefined {
  const base = objectPath.slice(0, -OBJECT.length);
  let metadata: string;
  try {
    metadata = readFileSync(`${base}${METADATA}`, 'utf8');
  } catch {
    return 'no metadata';
  }
  try {
    JSON.parse(metadata);
  } catch {
    return 'metadata cut short';
  }
  let md5: string;
  try {
    md5 = readFileSync(`${objectPath}.md5`, 'utf8').trim();
  } catch {
    return 'no checksum';
  }
  const actual = createHash('md5').update(readFileSync(objectPath)).digest('hex');
  return md5 === actual ? undefined : 'content does not match its checksum';
}

function* files(dir: string): Generator<string> {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) yield* files(path);
    else yield path;
  }
}

/**
 * Removes every torn object under `dataDir` (an s3rver `-d` directory) with its checksum and
 * metadata files. Returns one line per object removed, for the server's log.
 */
export function repairS3rverStore(dataDir: string): string[] {
  if (!existsSync(dataDir)) return [];
  const removed: string[] = [];
  for (const path of files(dataDir)) {
    if (!path.endsWith(OBJECT)) continue;
    const reason = tornReason(path);
    if (!reason) continue;
    const base = path.slice(0, -OBJECT.length);
    for (const p of [path, `${path}.md5`, `${base}${METADATA}`]) rmSync(p, { force: true });
    removed.push(`${relative(dataDir, base)}: ${reason}`);
  }
  return removed;
}
