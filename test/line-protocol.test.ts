import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  escapeKey,
  escapeMeasurement,
  formatFloat,
  messagePoints,
  quoteString,
  toLine,
  toLines,
  type Point,
} from '../cloud/ingest/line-protocol.ts';
import type { DeviceEvent, Status, Telemetry } from '../schemas/index.ts';

const bytes = (value: unknown): Uint8Array =>
  new TextEncoder().encode(typeof value === 'string' ? value : JSON.stringify(value));
const T = 1_740_830_400_250; // 2025-03-01T12:00:00.250Z
const source = { site: 'site-1', device: 'bsu-7' };

/** The lines ingest writes for one device payload (fails the test if it is not written). */
function linesOf(kind: string, payload: unknown): string[] {
  const result = messagePoints({ ...source, kind, payload: bytes(payload) });
  assert.equal(result.outcome, 'write', JSON.stringify(result));
  return result.outcome === 'write' ? result.points.map(toLine) : [];
}

describe('line protocol text', () => {
  test('escapes commas and spaces in measurements; commas, equals and spaces in keys and tags', () => {
    assert.equal(escapeMeasurement('a b,c=d'), 'a\\ b\\,c=d');
    assert.equal(escapeKey('a b,c=d'), 'a\\ b\\,c\\=d');
  });

  test('quotes string fields, escaping backslashes and double quotes', () => {
    assert.equal(quoteString('say "hi" \\o/'), '"say \\"hi\\" \\\\o/"');
  });

  test('never writes a raw line break: it would end the line', () => {
    assert.equal(quoteString('a\nb\r\tc'), '"a\\nb\\r\\tc"');
    assert.equal(escapeKey('a\nb'), 'a\\nb');
    const line = toLine({ measurement: 'm\n', tags: { t: 'x\ny' }, fields: { 'f\n': 'v\n' }, timeMs: 1 });
    assert.doesNotMatch(line, /[\n\r]/);
  });

  test('writes every number as a float: no integer suffix, -0 as 0, exponents as JavaScript prints them', () => {
    assert.equal(formatFloat(1), '1');
    assert.equal(formatFloat(-12.5), '-12.5');
    assert.equal(formatFloat(-0), '0');
    assert.equal(formatFloat(1e21), '1e+21');
    assert.equal(formatFloat(1e-7), '1e-7');
    assert.throws(() => formatFloat(Number.NaN), RangeError);
    assert.throws(() => formatFloat(Number.POSITIVE_INFINITY), RangeError);
  });

  test('sorts tags and fields, leaves out empty tag values, and truncates the time to whole ms', () => {
    const point: Point = {
      measurement: 'telemetry',
      tags: { site: 's', device: 'd', empty: '' },
      fields: { W: -5, SoC: 50, mode: 'auto' },
      timeMs: 1000.9,
    };
    assert.equal(toLine(point), 'telemetry,device=d,site=s SoC=50,W=-5,mode="auto" 1000');
  });

  test('refuses a point without fields', () => {
    assert.throws(() => toLine({ measurement: 'm', tags: {}, fields: {}, timeMs: 1 }), RangeError);
  });
});

describe('telemetry → points', () => {
  const telemetry: Telemetry = {
    ts: '2025-03-01T12:00:00.250Z',
    seq: 41,
    SoC: 62.5,
    SoH: 97,
    V: 768.2,
    A: -12.4,
    W: -9525,
    CellVMax: 3.342,
    strings: [
      { Idx: 1, SoC: 62.6, A: -6.1 },
      { Idx: 2, SoC: 62.4, ConFail: 'FUSE_OPEN' },
    ],
    modules: [
      { Str: 1, Idx: 3, ModSoC: 62.6, ModCellTmpMax: 29.4 },
      { Str: 2, Idx: 1 },
    ],
    ac: { InvSt: 'RUNNING', W: -9800, PF: -0.995, Hz: 50.01, TotWhInj: 1_250_000 },
  };

  test('bank-level fields and ac_ fields in one telemetry point; one point per string and module row', () => {
    assert.deepEqual(linesOf('telemetry', telemetry), [
      'telemetry,device=bsu-7,site=site-1 A=-12.4,CellVMax=3.342,SoC=62.5,SoH=97,V=768.2,W=-9525,' +
        'ac_Hz=50.01,ac_InvSt="RUNNING",ac_InvSt_code=3,ac_PF=-0.995,ac_TotWhInj=1250000,ac_W=-9800,seq=41 ' +
        T,
      `telemetry_string,device=bsu-7,site=site-1,string=1 A=-6.1,SoC=62.6 ${T}`,
      `telemetry_string,device=bsu-7,site=site-1,string=2 ConFail="FUSE_OPEN",ConFail_code=5,SoC=62.4 ${T}`,
      // The module without readings ({Str: 2, Idx: 1}) has no fields: no point.
      `telemetry_module,device=bsu-7,module=3,site=site-1,string=1 ModCellTmpMax=29.4,ModSoC=62.6 ${T}`,
    ]);
  });

  test('unknown extra fields: numbers and text are written, booleans as 1/0, objects and nulls are not', () => {
    const [line] = linesOf('telemetry', {
      ts: T,
      seq: 1,
      SoC: 1,
      V: 2,
      A: 3,
      W: 4,
      vendorTemp: 21,
      mode: 'eco',
      fanOn: true,
      nested: { x: 1 },
      list: [1],
      nothing: null,
    });
    assert.equal(
      line,
      `telemetry,device=bsu-7,site=site-1 A=3,SoC=1,V=2,W=4,fanOn=1,mode="eco",seq=1,vendorTemp=21 ${T}`,
    );
  });

  test('the same payload always gives the same bytes, whatever the order of its keys', () => {
    const reordered = Object.fromEntries(Object.entries(telemetry).reverse());
    assert.deepEqual(linesOf('telemetry', reordered), linesOf('telemetry', telemetry));
  });
});

describe('status and event → points', () => {
  test('status: enumerations as text plus their SunSpec value in <name>_code', () => {
    const status: Status = {
      ts: T,
      seq: 9,
      State: 'SOC_PROTECTION',
      ChaSt: 'HOLDING',
      LocRemCtl: 'REMOTE',
      Hb: 1200,
      uptimeS: 86_400.5,
      firmware: '2.4.1 "stable"',
    };
    assert.deepEqual(linesOf('status', status), [
      'status,device=bsu-7,site=site-1 ChaSt="HOLDING",ChaSt_code=6,Hb=1200,LocRemCtl="REMOTE",LocRemCtl_code=0,' +
        `State="SOC_PROTECTION",State_code=5,firmware="2.4.1 \\"stable\\"",seq=9,uptimeS=86400.5 ${T}`,
    ]);
  });

  test('event: alarm and severity are tags, raised is 1 or 0, severity derived when not sent', () => {
    const raised: DeviceEvent = {
      ts: T,
      seq: 3,
      alarm: 'OVER_TEMP_WARNING',
      action: 'raised',
      message: 'cabinet at 51 °C',
    };
    assert.deepEqual(linesOf('event', raised), [
      'event,alarm=OVER_TEMP_WARNING,device=bsu-7,severity=warning,site=site-1 ' +
        `action="raised",message="cabinet at 51 °C",raised=1,seq=3 ${T}`,
    ]);
    const cleared: DeviceEvent = {
      ts: T,
      seq: 4,
      alarm: 'GROUND_FAULT',
      action: 'cleared',
      severity: 'warning',
    };
    assert.deepEqual(linesOf('event', cleared), [
      `event,alarm=GROUND_FAULT,device=bsu-7,severity=warning,site=site-1 action="cleared",raised=0,seq=4 ${T}`,
    ]);
  });
});

describe('messages ingest does not write', () => {
  test('a device payload that does not decode is rejected with the reason', () => {
    const result = messagePoints({
      ...source,
      kind: 'telemetry',
      payload: bytes({ ts: T, seq: 1, SoC: '87%', V: 1, A: 1, W: 1 }),
    });
    assert.equal(result.outcome, 'reject');
    assert.match(
      result.outcome === 'reject' ? result.reason : '',
      /^payload does not decode: telemetry\.SoC: /,
    );
  });

  test('malformed JSON is rejected too', () => {
    const result = messagePoints({ ...source, kind: 'status', payload: bytes('{"ts": 1,') });
    assert.equal(result.outcome, 'reject');
  });

  test('a message of kind invalid is skipped: the archive keeps it', () => {
    const result = messagePoints({ ...source, kind: 'invalid', payload: bytes('garbage') });
    assert.deepEqual(result, { outcome: 'skip', reason: 'kind invalid is not ingested' });
  });
});

test('toLines joins points with newlines', () => {
  const p: Point = { measurement: 'm', tags: {}, fields: { v: 1 }, timeMs: 5 };
  assert.equal(toLines([p, p]), 'm v=1 5\nm v=1 5');
});
