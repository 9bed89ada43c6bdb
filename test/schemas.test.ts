import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  DEFAULT_MAX_PAYLOAD_BYTES,
  DEVICE_KINDS,
  EVT1_BIT,
  Evt1Alarm,
  InvalidReason,
  MessageKind,
  SCHEMA_VERSION,
  decodePayload,
  deviceTimeMs,
  isValidId,
  messageId,
  parseSubject,
  schemaTag,
  severityOf,
  subjectFor,
  type DecodeFailure,
  type DeviceEvent,
  type Status,
  type Telemetry,
} from '../schemas/index.ts';

const bytes = (value: unknown): Uint8Array =>
  new TextEncoder().encode(typeof value === 'string' ? value : JSON.stringify(value));

const telemetry: Telemetry = {
  ts: '2025-03-01T12:00:00.250Z',
  seq: 41,
  SoC: 62.5,
  SoH: 97.1,
  DoD: 37.5,
  NCyc: 412,
  V: 768.2,
  VMax: 840,
  VMin: 672,
  A: -12.4,
  W: -9525.7,
  CellVMax: 3.342,
  CellVMin: 3.318,
  CellVAvg: 3.331,
  AChaMax: 150,
  ADisChaMax: 150,
  ModTmpMax: 29.4,
  ModTmpMin: 26.1,
  ModTmpAvg: 27.8,
  StrVMax: 768.9,
  StrVMin: 767.5,
  StrVAvg: 768.2,
  StrAMax: -6.1,
  StrAMin: -6.3,
  StrAAvg: -6.2,
  NCellBal: 3,
  strings: [
    { Idx: 1, SoC: 62.6, SoH: 97.2, A: -6.1, V: 768.9, CellVMax: 3.342, CellVMin: 3.32, CellVAvg: 3.331 },
    { Idx: 2, SoC: 62.4, ModTmpMax: 29.4, ModTmpMin: 26.1, ModTmpAvg: 27.7, ConFail: 'NO_FAILURE' },
  ],
  modules: [{ Str: 1, Idx: 3, ModSoC: 62.6, ModCellVMax: 3.342, ModCellTmpMax: 29.4, ModCellTmpAvg: 27.9 }],
  ac: {
    ACType: 'THREE_PHASE',
    InvSt: 'RUNNING',
    W: -9800,
    VA: 9850,
    Var: 980,
    PF: -0.995,
    Hz: 50.01,
    A: 14.2,
    LLV: 400.3,
    LNV: 231.1,
    TotWhInj: 1_250_000,
    TotWhAbs: 1_390_000,
    TmpAmb: 18.2,
    TmpCab: 24.9,
  },
};
const minimalTelemetry = { ts: 1740830400250, seq: 0, SoC: 0, V: 0, A: 0, W: 0 };
const status: Status = {
  ts: '2025-03-01T13:00:00+01:00',
  seq: 42,
  State: 'CONNECTED',
  ChaSt: 'CHARGING',
  LocRemCtl: 'REMOTE',
  Hb: 3600,
  uptimeS: 3600.5,
  firmware: '2.4.1',
};
const event: DeviceEvent = {
  ts: 1740830400250,
  seq: 43,
  alarm: 'OVER_TEMP_WARNING',
  action: 'raised',
  severity: 'warning',
  message: 'module 3 at 45.2 °C',
};

describe('device payload schemas', () => {
  test('valid payloads of every kind decode with their device time and counter', () => {
    const cases = [
      ['telemetry', telemetry, Date.UTC(2025, 2, 1, 12, 0, 0, 250), 41],
      ['telemetry', minimalTelemetry, 1740830400250, 0],
      ['status', status, Date.UTC(2025, 2, 1, 12, 0, 0), 42],
      ['status', { ts: 5, seq: 1, State: 'SOC_PROTECTION', ChaSt: 'HOLDING' }, 5, 1],
      ['event', event, 1740830400250, 43],
      [
        'event',
        { ts: '2025-03-01T12:00:00Z', seq: 7, alarm: 'GROUND_FAULT', action: 'cleared' },
        1740830400000,
        7,
      ],
    ] as const;
    for (const [kind, payload, tsMs, seq] of cases) {
      const result = decodePayload(kind, bytes(payload));
      assert.deepEqual(
        result,
        { ok: true, kind, tsMs, seq, value: payload },
        `${kind} ${JSON.stringify(payload)}`,
      );
    }
  });

  test('unknown extra fields are accepted and kept', () => {
    const extra = { ...minimalTelemetry, vendorTemp: 'hot', Evt1: 6, ac: { W: 1, custom: [1, 2] } };
    const result = decodePayload('telemetry', bytes(extra));
    assert.equal(result.ok, true);
    assert.deepEqual(result.ok && result.value, extra);
    assert.equal(decodePayload('status', bytes({ ...status, extra: { nested: true } })).ok, true);
    assert.equal(decodePayload('event', bytes({ ...event, code: 17 })).ok, true);
  });

  test('a byte-order mark before the JSON is tolerated', () => {
    const withBom = new Uint8Array([0xef, 0xbb, 0xbf, ...bytes(minimalTelemetry)]);
    assert.equal(decodePayload('telemetry', withBom).ok, true);
  });

  const rejected: [string, string, unknown | Uint8Array, string, DecodeFailure][] = [
    [
      'a number sent as text',
      'telemetry',
      { ...minimalTelemetry, SoC: '87%' },
      'telemetry.SoC: expected number, got "87%"',
      InvalidReason.schema,
    ],
    [
      'text that mentions UTF-8, which is still a schema problem',
      'telemetry',
      { ...minimalTelemetry, SoC: 'UTF-8' },
      'telemetry.SoC: expected number, got "UTF-8"',
      InvalidReason.schema,
    ],
    [
      'a required field missing',
      'status',
      { ts: 1, seq: 1, ChaSt: 'OFF' },
      'status.State: required, missing',
      InvalidReason.schema,
    ],
    [
      'several required fields missing',
      'telemetry',
      { ts: 1, seq: 1, SoC: 50 },
      'telemetry.V: required, missing; telemetry.A: required, missing; telemetry.W: required, missing',
      InvalidReason.schema,
    ],
    [
      'SoC above 100',
      'telemetry',
      { ...minimalTelemetry, SoC: 120 },
      'telemetry.SoC: must be at most 100, got 120',
      InvalidReason.schema,
    ],
    [
      'SoH below 0',
      'telemetry',
      { ...minimalTelemetry, SoH: -1 },
      'telemetry.SoH: must be at least 0, got -1',
      InvalidReason.schema,
    ],
    [
      'a negative voltage',
      'telemetry',
      { ...minimalTelemetry, V: -3 },
      'telemetry.V: must be at least 0, got -3',
      InvalidReason.schema,
    ],
    [
      'a power factor beyond 1',
      'telemetry',
      { ...minimalTelemetry, ac: { PF: 1.2 } },
      'telemetry.ac.PF: must be at most 1, got 1.2',
      InvalidReason.schema,
    ],
    [
      'a frequency of 0',
      'telemetry',
      { ...minimalTelemetry, ac: { Hz: 0 } },
      'telemetry.ac.Hz: must be greater than 0, got 0',
      InvalidReason.schema,
    ],
    [
      'a string index of 0',
      'telemetry',
      { ...minimalTelemetry, strings: [{ Idx: 1 }, { Idx: 0 }] },
      'telemetry.strings[1].Idx: must be at least 1, got 0',
      InvalidReason.schema,
    ],
    [
      'a module without its string',
      'telemetry',
      { ...minimalTelemetry, modules: [{ Idx: 1 }] },
      'telemetry.modules[0].Str: required, missing',
      InvalidReason.schema,
    ],
    [
      'a fractional cycle count',
      'telemetry',
      { ...minimalTelemetry, NCyc: 1.5 },
      'telemetry.NCyc: expected integer, got 1.5',
      InvalidReason.schema,
    ],
    [
      'strings not a list',
      'telemetry',
      { ...minimalTelemetry, strings: {} },
      'telemetry.strings: expected array, got an object',
      InvalidReason.schema,
    ],
    [
      'a negative seq',
      'event',
      { ...event, seq: -1 },
      'event.seq: must be at least 0, got -1',
      InvalidReason.schema,
    ],
    [
      'a fractional seq',
      'event',
      { ...event, seq: 2.5 },
      'event.seq: expected integer, got 2.5',
      InvalidReason.schema,
    ],
    [
      'ts of the wrong type',
      'status',
      { ...status, ts: true },
      'status.ts: expected string or number, got true',
      InvalidReason.schema,
    ],
    [
      'a negative epoch ts',
      'status',
      { ...status, ts: -5 },
      'status.ts: must be at least 0, got -5',
      InvalidReason.schema,
    ],
    [
      'a State that is not an 802 symbol',
      'status',
      { ...status, State: 'ONLINE' },
      'status.State: expected one of DISCONNECTED, INITIALIZING, CONNECTED, STANDBY, SOC_PROTECTION, SUSPENDING or FAULT, got "ONLINE"',
      InvalidReason.schema,
    ],
    [
      'a State sent as its register value',
      'status',
      { ...status, State: 3 },
      'status.State: expected one of DISCONNECTED, INITIALIZING, CONNECTED, STANDBY, SOC_PROTECTION, SUSPENDING or FAULT, got 3',
      InvalidReason.schema,
    ],
    [
      'a bad control mode',
      'status',
      { ...status, LocRemCtl: 'AUTO' },
      'status.LocRemCtl: expected REMOTE or LOCAL, got "AUTO"',
      InvalidReason.schema,
    ],
    [
      'an alarm that is not an Evt1 bit',
      'event',
      { ...event, alarm: 'ON_FIRE' },
      'event.alarm: expected one of COMMUNICATION_ERROR, OVER_TEMP_ALARM, OVER_TEMP_WARNING, UNDER_TEMP_ALARM, UNDER_TEMP_WARNING, OVER_CHARGE_CURRENT_ALARM, … (29 in all), got "ON_FIRE"',
      InvalidReason.schema,
    ],
    [
      'the reserved Evt1 bit',
      'event',
      { ...event, alarm: 'RESERVED_1' },
      'event.alarm: expected one of COMMUNICATION_ERROR, OVER_TEMP_ALARM, OVER_TEMP_WARNING, UNDER_TEMP_ALARM, UNDER_TEMP_WARNING, OVER_CHARGE_CURRENT_ALARM, … (29 in all), got "RESERVED_1"',
      InvalidReason.schema,
    ],
    [
      'a bad action',
      'event',
      { ...event, action: 'set' },
      'event.action: expected raised or cleared, got "set"',
      InvalidReason.schema,
    ],
    [
      'a bad severity',
      'event',
      { ...event, severity: 'info' },
      'event.severity: expected alarm or warning, got "info"',
      InvalidReason.schema,
    ],
    [
      'an array',
      'telemetry',
      [minimalTelemetry],
      'telemetry: expected a JSON object, got an array',
      InvalidReason.schema,
    ],
    ['a bare number', 'status', '42', 'status: expected a JSON object, got 42', InvalidReason.schema],
    ['null', 'event', 'null', 'event: expected a JSON object, got null', InvalidReason.schema],
    [
      'malformed JSON',
      'telemetry',
      '{"ts": 1, "seq": ',
      `malformed JSON: ${jsonError('{"ts": 1, "seq": ')}`,
      InvalidReason.malformedJson,
    ],
    [
      'not UTF-8',
      'telemetry',
      new Uint8Array([0x7b, 0x22, 0xff, 0x22, 0x7d]),
      'payload is not valid UTF-8',
      InvalidReason.notUtf8,
    ],
    [
      'over the size limit',
      'telemetry',
      bytes(' '.repeat(70_000)),
      'payload is 70000 bytes, over the 65536-byte limit',
      InvalidReason.tooLarge,
    ],
    ['an unknown kind', 'foo', minimalTelemetry, 'unknown kind "foo"', InvalidReason.unknownKind],
    [
      'the invalid kind, which no device sends',
      'invalid',
      minimalTelemetry,
      'unknown kind "invalid"',
      InvalidReason.unknownKind,
    ],
    [
      'ts text that is no time',
      'telemetry',
      { ...minimalTelemetry, ts: 'yesterday' },
      'telemetry.ts: not a valid time',
      InvalidReason.schema,
    ],
    [
      'ts without a timezone',
      'telemetry',
      { ...minimalTelemetry, ts: '2025-03-01T12:00:00' },
      'telemetry.ts: not a valid time',
      InvalidReason.schema,
    ],
    [
      'ts on 30 February',
      'event',
      { ...event, ts: '2025-02-30T12:00:00Z' },
      'event.ts: not a valid time',
      InvalidReason.schema,
    ],
  ];
  for (const [what, kind, payload, reason, code] of rejected) {
    test(`rejects ${what}, with code ${code}`, () => {
      const raw = payload instanceof Uint8Array ? payload : bytes(payload);
      assert.deepEqual(decodePayload(kind, raw), { ok: false, code, reason });
    });
  }

  test('the size limit can be set per call', () => {
    const raw = bytes(minimalTelemetry);
    assert.deepEqual(decodePayload('telemetry', raw, { maxBytes: 10 }), {
      ok: false,
      code: InvalidReason.tooLarge,
      reason: `payload is ${raw.byteLength} bytes, over the 10-byte limit`,
    });
    // Exactly at the default limit is accepted; one byte more is not.
    const json = JSON.stringify(minimalTelemetry);
    const atLimit = bytes(' '.repeat(DEFAULT_MAX_PAYLOAD_BYTES - json.length) + json);
    assert.equal(atLimit.byteLength, DEFAULT_MAX_PAYLOAD_BYTES);
    assert.equal(decodePayload('telemetry', atLimit).ok, true);
    assert.equal(decodePayload('telemetry', bytes(` ${new TextDecoder().decode(atLimit)}`)).ok, false);
    assert.equal(
      decodePayload('telemetry', bytes(JSON.stringify(minimalTelemetry)), { maxBytes: 1e6 }).ok,
      true,
    );
  });

  test('every reason is a single line', () => {
    for (const [, kind, payload] of rejected) {
      const result = decodePayload(kind, payload instanceof Uint8Array ? payload : bytes(payload));
      assert.ok(!result.ok && !result.reason.includes('\n'), JSON.stringify(result));
    }
  });

  test('schema tags carry the version', () => {
    assert.equal(SCHEMA_VERSION, 1);
    assert.deepEqual(DEVICE_KINDS.map(schemaTag), ['telemetry/1', 'status/1', 'event/1']);
  });

  test('severity follows the Evt1 name, bits follow the 802 model', () => {
    assert.equal(Evt1Alarm.length, 29);
    assert.equal(severityOf('OVER_TEMP_ALARM'), 'alarm');
    assert.equal(severityOf('UNDER_SOC_MIN_WARNING'), 'warning');
    assert.equal(severityOf('GROUND_FAULT'), 'alarm');
    assert.equal(severityOf('FAN_ERROR'), 'alarm');
    assert.equal(EVT1_BIT.COMMUNICATION_ERROR, 0);
    assert.equal(EVT1_BIT.OTHER_WARNING, 26);
    assert.equal(EVT1_BIT.CONFIGURATION_ALARM, 28);
    assert.equal(EVT1_BIT.CONFIGURATION_WARNING, 29);
  });
});

describe('device time', () => {
  test('reads ISO-8601 with a zone and epoch milliseconds', () => {
    assert.equal(deviceTimeMs('2025-03-01T12:00:00Z'), Date.UTC(2025, 2, 1, 12));
    assert.equal(deviceTimeMs('2025-03-01T13:30:00+01:30'), Date.UTC(2025, 2, 1, 12));
    assert.equal(deviceTimeMs('2025-03-01T07:00:00-0500'), Date.UTC(2025, 2, 1, 12));
    assert.equal(deviceTimeMs('2025-03-01 12:00:00.123456789Z'), Date.UTC(2025, 2, 1, 12, 0, 0, 123));
    assert.equal(deviceTimeMs('2025-03-01T12:00Z'), Date.UTC(2025, 2, 1, 12));
    assert.equal(deviceTimeMs('2024-02-29T00:00:00Z'), Date.UTC(2024, 1, 29));
    assert.equal(deviceTimeMs(1740830400250), 1740830400250);
  });

  test('is NaN for anything else', () => {
    for (const bad of [
      '',
      'now',
      '2025-03-01',
      '2025-03-01T12:00:00',
      '2025-13-01T00:00:00Z',
      '2025-02-29T00:00:00Z',
      '2025-03-01T24:00:00Z',
      '2025-03-01T12:00:00+25:00',
    ])
      assert.ok(Number.isNaN(deviceTimeMs(bad)), bad);
    assert.ok(Number.isNaN(deviceTimeMs(-1)));
    assert.ok(Number.isNaN(deviceTimeMs(Number.POSITIVE_INFINITY)));
  });
});

describe('subjects and headers', () => {
  test('subjects round trip', () => {
    for (const kind of Object.values(MessageKind)) {
      const subject = subjectFor('site-7', 'bsu-0001', kind);
      assert.equal(subject, `bsu.site-7.bsu-0001.${kind}`);
      assert.deepEqual(parseSubject(subject), { site: 'site-7', device: 'bsu-0001', kind });
    }
  });

  test('ids with dots, wildcards or spaces are refused', () => {
    for (const bad of ['a.b', '*', '>', 'a b', '', 'x'.repeat(129)]) {
      assert.equal(isValidId(bad), false, bad);
      assert.throws(() => subjectFor(bad, 'bsu-1', 'telemetry'), /invalid site id/);
      assert.throws(() => subjectFor('site', bad, 'telemetry'), /invalid device id/);
    }
  });

  test('subjects that are not ours do not parse', () => {
    for (const bad of [
      'bsu.site.dev',
      'bsu.site.dev.telemetry.x',
      'foo.site.dev.telemetry',
      'bsu.*.dev.telemetry',
      'bsu.site.>.status',
      'bsu.site.dev.bogus',
    ])
      assert.equal(parseSubject(bad), undefined, bad);
  });

  test('message ids are deterministic and include device time', () => {
    const a = messageId('site-1', 'bsu-0001', 'telemetry', 41, 1740830400250);
    assert.equal(a, 'site-1.bsu-0001.telemetry.41.1740830400250');
    assert.equal(messageId('site-1', 'bsu-0001', 'telemetry', 41, 1740830400250), a);
    assert.notEqual(messageId('site-1', 'bsu-0001', 'telemetry', 41, 1740830400251), a);
  });
});

function jsonError(text: string): string {
  try {
    JSON.parse(text);
  } catch (err) {
    return (err as Error).message.replace(/\s+/g, ' ').trim();
  }
  throw new Error('expected a parse error');
}
