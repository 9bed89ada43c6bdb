/**
 * s3rver killed in the middle of a PUT leaves torn files that make every later request on the
 * bucket fail with a 500 (stack/s3rver-store.ts). A restart through the stack removes them, so an
 * outage test that kills s3rver under load gets a working S3 back.
 */
import assert from 'node:assert/strict';
import { readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { GetObjectCommand, HeadBucketCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { createS3Client, listKeys } from '../cloud/archive/s3.ts';
import { killServer, type RunningServer } from '../stack/server-process.ts';
import { s3rverSettings, TestServers } from './support/servers.ts';

const BUCKET = 'switchyard';

describe('s3rver restarted after a kill mid-PUT', () => {
  const servers = new TestServers('s3rver-store');
  let s3server: RunningServer;
  let s3: S3Client;

  before(async () => {
    s3server = await servers.s3([BUCKET]);
    s3 = createS3Client(s3rverSettings(s3server));
  });

  after(async () => {
    s3?.destroy();
    await servers.stopAll();
  });

  const put = (key: string, body: string) =>
    s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: body }));
  /** Where s3rver keeps a key's files (its filesystem store's naming). */
  const file = (key: string, resource: 'object' | 'object.md5' | 'metadata.json') =>
    join(s3server.dataDir, BUCKET, `${key}._S3rver_${resource}`);

  test('serves the bucket again, without the torn objects and with every whole one', async () => {
    await put('a/whole.txt', 'whole');
    await put('a/empty-metadata.txt', 'torn one');
    await put('a/no-metadata.txt', 'torn two');
    await put('a/cut-content.txt', 'torn three, long enough to cut');
    await killServer(s3server);
    // The three ways a kill between s3rver's writes leaves an object.
    writeFileSync(file('a/empty-metadata.txt', 'metadata.json'), '');
    rmSync(file('a/no-metadata.txt', 'metadata.json'));
    truncateSync(file('a/cut-content.txt', 'object'), 4);

    s3server = await servers.restart(s3server);
    await s3.send(new HeadBucketCommand({ Bucket: BUCKET }));
    assert.deepEqual(await listKeys(s3, BUCKET, ''), ['a/whole.txt']);
    const whole = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'a/whole.txt' }));
    assert.equal(await whole.Body?.transformToString(), 'whole');
    // The client of a torn PUT never got its 200 and writes it again.
    await put('a/cut-content.txt', 'written again');
    assert.deepEqual(await listKeys(s3, BUCKET, ''), ['a/cut-content.txt', 'a/whole.txt']);

    const log = readFileSync(s3server.logFile, 'utf8');
    for (const [key, reason] of [
      ['a/empty-metadata.txt', 'metadata cut short'],
      ['a/no-metadata.txt', 'no metadata'],
      ['a/cut-content.txt', 'content does not match its checksum'],
    ])
      assert.match(log, new RegExp(`removed a torn object .*${key}: ${reason}`));
  });
});
