/**
 * `switchyard dlq` against real servers: dead letters made by the real ingest consumer writing to
 * InfluxDB 1.x, which refuses some of its points — a field type conflict (`SoC` first written as a
 * string to the measurement, so every float `SoC` is refused with 400) and a payload that does not
 * decode. The commands run as the operator runs them, child processes reading their settings from
 * an env file; assertions read the dead-letter stream and the database themselves.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { connect, headers, type NatsConnection } from '@nats-io/transport-node';
import { Registry } from 'prom-client';
import { loadConsumerConfig, startConsumer } from '../cloud/consumer.ts';
import { redriveMessageId, redriveTarget } from '../cloud/dlq-admin.ts';
import { DeadLetterReason, DLQ_STREAM, publishDeadLetter } from '../cloud/dlq.ts';
import { ingestConsumer } from '../cloud/ingest/consumer.ts';
import { silentLogger } from '../lib/log.ts';
import { Header, subjectFor } from '../schemas/index.ts';
import { envFileText } from '../stack/env-vars.ts';
import { stopServer, type RunningServer } from '../stack/server-process.ts';
import { readStream, type StoredMessage } from './support/jetstream.ts';
import { runSwitchyard } from './support/process.ts';
import { devicePayload } from './support/sink-conformance.ts';
import { TestServers, waitFor } from './support/servers.ts';

const DB = 'switchyard';
const DURABLE = 'ingest-influx1';
/** Device time of the readings: yesterday noon UTC, far from a shard boundary (InfluxDB shards by week). */
const T0 = Math.floor(Date.now() / 86_400_000) * 86_400_000 - 12 * 3_600_000;

interface Published {
  seq: number;
  subject: string;
  payload: Uint8Array;
  receivedAt: string;
}

async function influxQuery(url: string, q: string) {
  const res = await fetch(`${url}/query?db=${DB}`, { method: 'POST', body: new URLSearchParams({ q }) });
  assert.equal(res.status, 200, q);
  return (await res.json()) as {
    results: { error?: string; series?: { name: string; values: unknown[][] }[] }[];
  };
}

async function influxCount(url: string, q: string): Promise<number> {
  const body = await influxQuery(url, q);
  return Number(body.results[0]?.series?.[0]?.values[0]?.[1] ?? 0);
}

async function influxWrite(url: string, line: string): Promise<void> {
  const res = await fetch(`${url}/write?db=${DB}&precision=ms`, { method: 'POST', body: line });
  assert.equal(res.status, 204, await res.text());
}

/**
 * Drops every shard of the database. InfluxDB 1.x keeps a field's type per shard even after
 * `DROP MEASUREMENT` (and `DROP SERIES`): only dropping the shard lets a field take another type.
 */
async function dropShards(url: string): Promise<void> {
  const body = await influxQuery(url, 'SHOW SHARDS');
  const shards = body.results[0]?.series?.find((s) => s.name === DB)?.values ?? [];
  for (const [id] of shards) await influxQuery(url, `DROP SHARD ${String(id)}`);
}

/** The last line of the output that is a JSON object with `key`. */
function reportOf(output: string, key: string): Record<string, unknown> {
  for (const line of output.trim().split('\n').reverse()) {
    if (!line.startsWith('{')) continue;
    try {
      const parsed = JSON.parse(line) as Record<string, unknown>;
      if (key in parsed) return parsed;
    } catch {
      // a progress or log line cut by another write
    }
  }
  assert.fail(`no JSON report with ${key} in:\n${output}`);
}

interface ListedLetter {
  dlqSeq: number;
  consumer: string;
  seq: number;
  subject: string;
  reason: string;
  reasonClass: string;
  deliveries: number;
  deadLetteredAt: string;
  payloadBytes: number;
}

interface RedriveJson {
  selected: number;
  redrivenCount: number;
  failedCount: number;
  skippedCount: number;
  redriven: { dlqSeq: number; seq: number }[];
  failed: { dlqSeq: number; seq: number; reason: string; kept: string; replacedBy?: number }[];
  skipped: { dlqSeq: number; reason: string }[];
}

describe('switchyard dlq', () => {
  const servers = new TestServers('dlq');
  let nats: RunningServer;
  let influx: RunningServer;
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  let env: string;
  const published: Published[] = [];
  /** Original sequences of the telemetry readings InfluxDB refuses while `SoC` is a string. */
  const conflicted: number[] = [];
  let poison: Published;
  let unicode: Published;

  const dlq = async (args: string[]) => runSwitchyard(['dlq', ...args, '--env-file', env]);
  const dlqJson = async (args: string[], key: string) => {
    const r = await dlq([...args, '--json']);
    return { ...r, report: reportOf(r.output, key) };
  };
  const deadLetters = (): Promise<StoredMessage[]> => readStream(nc, DLQ_STREAM);
  const bySeq = (letters: StoredMessage[]) =>
    letters.map((l) => Number(l.headers[Header.dlqSeq])).sort((a, b) => a - b);

  before(async () => {
    [nats, influx] = await Promise.all([servers.nats(), servers.influxdb()]);
    const dir = mkdtempSync(join(tmpdir(), 'switchyard-dlq-'));
    env = join(dir, 'cloud.env');
    writeFileSync(
      env,
      envFileText({ natsUrl: nats.url, influx1Url: influx.url, influx1Database: DB, sink: 'influx1' }),
    );
    nc = await connect({ servers: nats.url });
    jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: 'BSU', subjects: ['bsu.>'] });

    // The series' SoC is a string from now on: every telemetry point with a float SoC is refused.
    await influxWrite(influx.url, `telemetry,site=north,device=bsu-0 SoC="offline" ${T0 - 1_000}`);

    const js = jetstream(nc);
    const publish = async (subject: string, payload: Uint8Array, i: number): Promise<Published> => {
      const receivedAt = new Date(T0 + i * 1_000).toISOString();
      const h = headers();
      h.set(Header.receivedAt, receivedAt);
      h.set(Header.site, 'north');
      const ack = await js.publish(subject, payload, { headers: h, msgID: `north.${i}` });
      const p = { seq: ack.seq, subject, payload, receivedAt };
      published.push(p);
      return p;
    };
    const json = (value: unknown) => new TextEncoder().encode(JSON.stringify(value));
    for (let i = 0; i < 6; i++) {
      const payload = devicePayload('telemetry', i, T0 + i * 1_000);
      // An extra field the schema lets through, so that `show` has multi-byte text to keep exact.
      if (i === 4) payload.note = 'Zürich — ⚡ 95 %';
      const p = await publish(subjectFor('north', `bsu-${i % 3}`, 'telemetry'), json(payload), i);
      conflicted.push(p.seq);
      if (i === 4) unicode = p;
    }
    for (let i = 6; i < 9; i++)
      await publish(
        subjectFor('north', `bsu-${i % 3}`, 'status'),
        json(devicePayload('status', i, T0 + i * 1_000)),
        i,
      );
    poison = await publish(
      subjectFor('north', 'bsu-9', 'telemetry'),
      new Uint8Array([0xff, 0xfe, 0x00, 0x7b]),
      9,
    );

    // The real ingest consumer dead-letters what InfluxDB refuses and writes the rest.
    const controller = new AbortController();
    const config = loadConsumerConfig(ingestConsumer, {
      env: {},
      flags: {
        natsUrl: nats.url,
        sink: 'influx1',
        influx1Url: influx.url,
        influx1Database: DB,
        fetchExpiresMs: '1000',
      },
    });
    const run = await startConsumer(ingestConsumer, config, {
      log: silentLogger,
      registry: new Registry(),
      signal: controller.signal,
    });
    await waitFor(
      'ingest settled every message',
      async () => (await jsm.consumers.info('BSU', DURABLE)).ack_floor.stream_seq === poison.seq,
    );
    controller.abort();
    await run.done;
    assert.equal(await influxCount(influx.url, 'SELECT count(Hb) FROM status'), 3, 'status points written');
    assert.equal(await influxCount(influx.url, 'SELECT count(W) FROM telemetry'), 0, 'telemetry refused');
    assert.deepEqual(bySeq(await deadLetters()), [...conflicted, poison.seq]);
  });

  after(async () => {
    await nc?.close();
    await servers.stopAll();
  });

  test('list shows every dead letter with its consumer, original sequence and reason', async () => {
    const { code, output, report } = await dlqJson(['list'], 'deadLetters');
    assert.equal(code, 0, output);
    const letters = report.deadLetters as ListedLetter[];
    assert.deepEqual(
      letters.map((l) => l.seq),
      [...conflicted, poison.seq],
    );
    for (const l of letters) {
      const original = published.find((p) => p.seq === l.seq)!;
      assert.equal(l.consumer, DURABLE);
      assert.equal(l.subject, original.subject);
      assert.equal(l.deliveries, 1);
      assert.equal(l.reasonClass, DeadLetterReason.rejected);
      assert.equal(l.payloadBytes, original.payload.byteLength);
      assert.ok(Date.parse(l.deadLetteredAt) > Date.now() - 600_000, l.deadLetteredAt);
      if (l.seq === poison.seq) assert.match(l.reason, /^rejected: payload does not decode/);
      else assert.match(l.reason, /^rejected: influx1 refused the points: .*field type conflict.*"SoC"/);
    }
    assert.equal(report.total, 7);
    assert.deepEqual(report.byConsumer, { [DURABLE]: 7 });
    assert.deepEqual(report.byReason, { rejected: 7 });

    const text = await dlq(['list', '--limit', '2']);
    assert.equal(text.code, 0, text.output);
    const rows = text.output
      .split('\n')
      .filter((line) => line.includes(DURABLE) && line.includes('rejected:'));
    assert.equal(rows.length, 2, text.output);
    assert.match(rows[0]!, new RegExp(`\\b${conflicted[0]}\\s+bsu\\.north\\.bsu-0\\.telemetry\\b`));
    assert.match(
      text.output,
      new RegExp(
        `7 dead letters in BSU_DLQ \\(2 listed\\); by consumer: ${DURABLE} 7; by reason: rejected 7`,
      ),
    );

    const other = await dlq(['list', '--consumer', 'archive']);
    assert.equal(other.code, 0, other.output);
    assert.match(other.output, /no dead letters in BSU_DLQ/);
    const bad = await dlq(['list', '--consumer', 'ingest.*']);
    assert.equal(bad.code, 2, bad.output);
  });

  test('show prints one dead letter in full, its payload byte for byte', async () => {
    const letters = await deadLetters();
    const dlqSeqOf = (seq: number) => letters.find((l) => Number(l.headers[Header.dlqSeq]) === seq)!.seq;

    const { code, output, report } = await dlqJson(['show', String(dlqSeqOf(unicode.seq))], 'payload');
    assert.equal(code, 0, output);
    assert.equal(report.payloadEncoding, 'utf8');
    assert.deepEqual(Buffer.from(report.payload as string, 'utf8'), Buffer.from(unicode.payload));
    assert.equal(report.seq, unicode.seq);
    const h = report.headers as Record<string, string[]>;
    assert.deepEqual(h[Header.receivedAt], [unicode.receivedAt]);
    assert.deepEqual(h[Header.dlqConsumer], [DURABLE]);
    assert.deepEqual(h[Header.dlqSubject], [unicode.subject]);

    const text = await dlq(['show', String(dlqSeqOf(unicode.seq))]);
    assert.equal(text.code, 0, text.output);
    assert.ok(text.output.includes(`\n${Buffer.from(unicode.payload).toString('utf8')}\n`), text.output);
    assert.match(text.output, /reason: +rejected: influx1 refused the points/);

    const binary = await dlqJson(['show', String(dlqSeqOf(poison.seq))], 'payload');
    assert.equal(binary.code, 0, binary.output);
    assert.equal(binary.report.payloadEncoding, 'base64');
    assert.deepEqual(Buffer.from(binary.report.payload as string, 'base64'), Buffer.from(poison.payload));

    const missing = await dlq(['show', '9999']);
    assert.equal(missing.code, 1, missing.output);
    assert.match(missing.output, /no dead letter at sequence 9999 of BSU_DLQ/);
  });

  test('redrive asks first: without a terminal it refuses unless --yes; a dry run changes nothing', async () => {
    const before = await deadLetters();
    const refused = await dlq(['redrive']);
    assert.equal(refused.code, 2, refused.output);
    assert.match(refused.output, /no terminal to ask; run again with --yes/);

    const dry = await dlqJson(['redrive', '--dry-run'], 'redrivenCount');
    assert.equal(dry.code, 0, dry.output);
    assert.equal(dry.report.dryRun, true);
    assert.equal(dry.report.redrivenCount, 7);
    assert.deepEqual(
      (await deadLetters()).map((l) => l.seq),
      before.map((l) => l.seq),
      'the dead letters are untouched',
    );
    assert.equal(await influxCount(influx.url, 'SELECT count(W) FROM telemetry'), 0);
  });

  test('redrive keeps what the sink still refuses, once each, with the new reason', async () => {
    // Another conflict than the one they were dead-lettered for: now `V` is the string field.
    await dropShards(influx.url);
    await influxWrite(influx.url, `telemetry,site=north,device=bsu-0 V="offline" ${T0 - 1_000}`);
    const before = await deadLetters();

    const { code, output, report } = await dlqJson(
      ['redrive', '--consumer', DURABLE, '--yes'],
      'redrivenCount',
    );
    assert.equal(code, 1, output);
    const r = report as unknown as RedriveJson;
    assert.equal(r.selected, 7);
    assert.equal(r.redrivenCount, 0);
    assert.equal(r.failedCount, 7);
    assert.equal(r.skippedCount, 0);
    const oldSeqs = new Set(before.map((l) => l.seq));
    for (const f of r.failed) {
      assert.equal(f.kept, 'replaced');
      assert.ok(oldSeqs.has(f.dlqSeq) && f.replacedBy! > Math.max(...oldSeqs), JSON.stringify(f));
    }

    const after = await deadLetters();
    assert.deepEqual(bySeq(after), [...conflicted, poison.seq], 'each kept once');
    assert.ok(
      after.every((l) => !oldSeqs.has(l.seq)),
      'the old dead letters are gone',
    );
    for (const l of after) {
      const reason = l.headers[Header.dlqReason]!;
      if (Number(l.headers[Header.dlqSeq]) === poison.seq)
        assert.match(reason, /^rejected: .*does not decode/);
      else assert.match(reason, /^rejected: influx1 refused the points: .*field type conflict.*"V"/);
      assert.equal(l.headers[Header.dlqConsumer], DURABLE);
      const original = published.find((p) => p.seq === Number(l.headers[Header.dlqSeq]))!;
      assert.deepEqual(Buffer.from(l.payload), Buffer.from(original.payload));
      assert.equal(l.headers[Header.receivedAt], original.receivedAt);
    }
    assert.equal(await influxCount(influx.url, 'SELECT count(W) FROM telemetry'), 0);
  });

  test('redrive writes what the sink now takes and removes it from the dead-letter stream', async () => {
    await dropShards(influx.url);
    // A dead letter of a durable no consumer owns: skipped and left where it is.
    await publishDeadLetter(jetstream(nc), {
      consumer: 'reporting',
      stream: 'BSU',
      seq: published[6]!.seq,
      subject: published[6]!.subject,
      deliveries: 3,
      reason: DeadLetterReason.permanent,
      detail: 'the reporting store refused it',
      payload: published[6]!.payload,
      headers: undefined,
    });
    const letters = await deadLetters();
    const telemetry = letters.filter((l) => conflicted.includes(Number(l.headers[Header.dlqSeq])));
    assert.equal(telemetry.length, 6);

    const { code, output, report } = await dlqJson(
      ['redrive', '--seq', telemetry.map((l) => l.seq).join(','), '--yes'],
      'redrivenCount',
    );
    assert.equal(code, 0, output);
    const r = report as unknown as RedriveJson;
    assert.equal(r.redrivenCount, 6);
    assert.equal(r.failedCount, 0);
    assert.deepEqual(
      r.redriven.map((x) => x.seq),
      conflicted,
    );
    assert.equal(await influxCount(influx.url, 'SELECT count(W) FROM telemetry'), 6);
    assert.equal(await influxCount(influx.url, 'SELECT count(SoC) FROM telemetry'), 6);
    for (let i = 0; i < 3; i++)
      assert.equal(
        await influxCount(influx.url, `SELECT count(W) FROM telemetry WHERE device = 'bsu-${i}'`),
        2,
      );
    const left = await deadLetters();
    assert.deepEqual(
      left.map((l) => l.headers[Header.dlqConsumer]),
      [DURABLE, 'reporting'],
    );
    assert.equal(Number(left[0]!.headers[Header.dlqSeq]), poison.seq);

    // Everything else: the poison fails again (exit 1), the unknown consumer's is skipped.
    const rest = await dlqJson(['redrive', '--yes'], 'redrivenCount');
    assert.equal(rest.code, 1, rest.output);
    const all = rest.report as unknown as RedriveJson;
    assert.equal(all.redrivenCount, 0);
    assert.equal(all.failedCount, 1);
    assert.equal(all.failed[0]!.seq, poison.seq);
    assert.equal(all.skippedCount, 1);
    assert.match(all.skipped[0]!.reason, /no consumer owns durable reporting/);
    assert.deepEqual(
      (await deadLetters()).map((l) => [l.headers[Header.dlqConsumer], Number(l.headers[Header.dlqSeq])]),
      [
        ['reporting', published[6]!.seq],
        [DURABLE, poison.seq],
      ],
    );
    assert.equal(await influxCount(influx.url, 'SELECT count(W) FROM telemetry'), 6, 'nothing written twice');
  });

  test('a letter is kept when it fails again even if JetStream remembers its replacement id', async () => {
    const [letter] = (await deadLetters()).filter((l) => l.headers[Header.dlqConsumer] === DURABLE);
    assert.equal(Number(letter!.headers[Header.dlqSeq]), poison.seq);
    // What a redrive stopped between storing a replacement and deleting the old letter leaves, once
    // that replacement was redriven and deleted: its id stays in the duplicate window.
    const h = headers();
    for (const [key, value] of Object.entries(letter!.headers)) if (!/^nats-/i.test(key)) h.set(key, value);
    const earlier = await jetstream(nc).publish(letter!.subject, letter!.payload, {
      msgID: redriveMessageId(DURABLE, poison.seq, letter!.seq),
      headers: h,
    });
    await jsm.streams.deleteMessage(DLQ_STREAM, earlier.seq);

    const { code, output, report } = await dlqJson(
      ['redrive', '--seq', String(letter!.seq), '--yes'],
      'redrivenCount',
    );
    assert.equal(code, 1, output);
    const r = report as unknown as RedriveJson;
    assert.equal(r.failedCount, 1);
    assert.equal(r.failed[0]!.kept, 'replaced');
    assert.ok(r.failed[0]!.replacedBy! > earlier.seq, JSON.stringify(r.failed[0]));
    const mine = (await deadLetters()).filter((l) => l.headers[Header.dlqConsumer] === DURABLE);
    assert.deepEqual(
      mine.map((l) => [l.seq, Number(l.headers[Header.dlqSeq])]),
      [[r.failed[0]!.replacedBy, poison.seq]],
    );
  });

  test('a full dead-letter stream keeps a letter that fails again as it was, never deleted unreplaced', async () => {
    const info = await jsm.streams.info(DLQ_STREAM);
    // Discard `new` (cloud/dlq.ts): a stream at its byte limit refuses the replacement.
    await jsm.streams.update(DLQ_STREAM, { ...info.config, max_bytes: info.state.bytes + 16 });
    try {
      const before = await deadLetters();
      const { code, output, report } = await dlqJson(
        ['redrive', '--consumer', DURABLE, '--yes'],
        'redrivenCount',
      );
      assert.equal(code, 1, output);
      const r = report as unknown as RedriveJson;
      assert.equal(r.failedCount, 1);
      assert.equal(r.failed[0]!.kept, 'unchanged');
      assert.match(r.failed[0]!.reason, /the new reason not stored: maximum bytes exceeded/);
      const after = await deadLetters();
      assert.deepEqual(
        after.map((l) => [l.seq, l.headers[Header.dlqReason]]),
        before.map((l) => [l.seq, l.headers[Header.dlqReason]]),
      );
    } finally {
      await jsm.streams.update(DLQ_STREAM, info.config);
    }
  });

  test('a sink that cannot be reached leaves every dead letter as it was', async () => {
    const before = await deadLetters();
    await stopServer(influx);
    const { code, output, report } = await dlqJson(
      ['redrive', '--consumer', DURABLE, '--yes'],
      'redrivenCount',
    );
    assert.equal(code, 1, output);
    const r = report as unknown as RedriveJson;
    assert.equal(r.failedCount, 1);
    assert.equal(r.failed[0]!.kept, 'unchanged');
    assert.match(r.failed[0]!.reason, /the sink could not be opened/);
    assert.deepEqual(
      (await deadLetters()).map((l) => [l.seq, l.headers[Header.dlqReason]]),
      before.map((l) => [l.seq, l.headers[Header.dlqReason]]),
    );
  });

  test('a dead letter names its consumer: archive, monitor and ingest-<sink> are redriven through them', () => {
    assert.deepEqual(redriveTarget('archive'), { consumer: 'archive', overrides: { durable: 'archive' } });
    assert.deepEqual(redriveTarget('monitor'), { consumer: 'monitor', overrides: { durable: 'monitor' } });
    assert.deepEqual(redriveTarget('ingest-influx2'), {
      consumer: 'ingest',
      overrides: { sink: 'influx2', durable: 'ingest-influx2' },
    });
    assert.equal(redriveTarget('reporting'), undefined);
  });
});
