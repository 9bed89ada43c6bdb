/**
 * Device payloads as a BSU publishes them (schemas/ version 1), built from the device model, and
 * the invalid ones the simulator sends on purpose to exercise the pipeline's invalid path.
 */
import {
  InvalidReason,
  severityOf,
  type DecodeFailure,
  type DeviceEvent,
  type DeviceKind,
  type Evt1Alarm,
  type Status,
  type Telemetry,
} from '../schemas/index.ts';
import { readingsOf, type DeviceSpec, type DeviceState } from './device-model.ts';
import { integer, noise, round, type Random } from './random.ts';

/** Device time as a device writes it: ISO-8601 UTC with milliseconds. */
export const isoTime = (ms: number): string => new Date(ms).toISOString();

/**
 * A telemetry reading (~300 bytes as JSON): the 802 bank values, the 803 bank summary and the 701
 * AC side. With `detail`, also the 804 per-string and per-module readings (several kB).
 */
export function telemetryPayload(
  spec: DeviceSpec,
  s: DeviceState,
  ts: string | number,
  seq: number,
  rng: Random,
  detail = false,
): Telemetry {
  const r = readingsOf(spec, s);
  const stringA = r.currentA / spec.strings;
  const payload: Telemetry = {
    ts,
    seq,
    SoC: round(s.socPct, 2),
    SoH: round(s.sohPct, 2),
    NCyc: r.cycles,
    V: round(r.voltageV + noise(rng, 0.05), 1),
    A: round(r.currentA, 1),
    W: Math.round(r.powerW),
    CellVMax: round(r.cellVMax, 3),
    CellVMin: round(r.cellVMin, 3),
    CellVAvg: round(r.cellVAvg, 3),
    ModTmpMax: round(r.tempMaxC, 1),
    ModTmpMin: round(r.tempMinC, 1),
    ModTmpAvg: round(r.tempAvgC, 1),
    ac: {
      W: Math.round(r.acW),
      VA: Math.round(r.acVA),
      Var: Math.round(r.acVar),
      PF: round(r.acPF, 3),
      Hz: round(r.acHz + noise(rng, 0.01), 2),
      LLV: round(r.acLlV + noise(rng, 1), 1),
      TotWhInj: Math.round(s.acWhInjected),
      TotWhAbs: Math.round(s.acWhAbsorbed),
    },
  };
  if (detail) {
    const strings: NonNullable<Telemetry['strings']> = [];
    const modules: NonNullable<Telemetry['modules']> = [];
    for (let i = 0; i < spec.strings; i++) {
      const soc = Math.min(100, Math.max(0, s.socPct + (s.stringSocOffset[i] ?? 0)));
      const dT = s.stringTempOffset[i] ?? 0;
      strings.push({
        Idx: i + 1,
        NMod: spec.modulesPerString,
        SoC: round(soc, 2),
        SoH: round(s.sohPct, 2),
        A: round(stringA, 1),
        V: round(r.voltageV, 1),
        CellVMax: round(r.cellVMax, 3),
        CellVMin: round(r.cellVMin, 3),
        CellVAvg: round(r.cellVAvg, 3),
        ModTmpMax: round(r.tempMaxC + dT, 1),
        ModTmpMin: round(r.tempMinC + dT, 1),
        ModTmpAvg: round(r.tempAvgC + dT, 1),
      });
      for (let m = 0; m < spec.modulesPerString; m++) {
        const t = r.tempAvgC + dT + noise(rng, 0.4);
        const v = r.cellVAvg + noise(rng, 0.001);
        modules.push({
          Str: i + 1,
          Idx: m + 1,
          ModNCell: spec.cellsPerModule,
          ModSoC: round(Math.min(100, Math.max(0, soc + noise(rng, 0.2))), 1),
          ModCellVMax: round(v + 0.003, 3),
          ModCellVMin: round(v - 0.002, 3),
          ModCellVAvg: round(v, 3),
          ModCellTmpMax: round(t + 0.8, 1),
          ModCellTmpMin: round(t - 0.6, 1),
          ModCellTmpAvg: round(t, 1),
        });
      }
    }
    payload.strings = strings;
    payload.modules = modules;
  }
  return payload;
}

/** A status message: 802 state, charge status, heartbeat (one count per second), uptime, firmware. */
export function statusPayload(spec: DeviceSpec, s: DeviceState, ts: string | number, seq: number): Status {
  const r = readingsOf(spec, s);
  const uptimeS = s.bootUptimeS + s.elapsedMs / 1000;
  return {
    ts,
    seq,
    State: r.state,
    ChaSt: r.chargeStatus,
    LocRemCtl: 'REMOTE',
    Hb: Math.floor(uptimeS) % 65_536,
    uptimeS: round(uptimeS, 1),
    firmware: spec.firmware,
  };
}

/** An event: an Evt1 condition raised or cleared, with what the device knows about it. */
export function eventPayload(
  spec: DeviceSpec,
  s: DeviceState,
  ts: string | number,
  seq: number,
  alarm: Evt1Alarm,
  action: 'raised' | 'cleared',
): DeviceEvent {
  const r = readingsOf(spec, s);
  return {
    ts,
    seq,
    alarm,
    action,
    severity: severityOf(alarm),
    message: `${alarm.toLowerCase().replace(/_/g, ' ')} ${action} at SoC ${round(s.socPct, 1)} %, ${round(r.tempMaxC, 1)} °C`,
  };
}

/**
 * Ways the simulator spoils a payload on purpose. Not the pipeline's InvalidReason (schemas/): that
 * is what the bridge finds, and several corruptions are found as the same reason (CORRUPTION_FOUND_AS).
 */
export const Corruption = {
  malformedJson: 'malformed-json',
  wrongType: 'wrong-type',
  missingField: 'missing-field',
  outOfRange: 'out-of-range',
  notAnObject: 'not-an-object',
} as const;
export type Corruption = (typeof Corruption)[keyof typeof Corruption];
export const CORRUPTIONS = Object.values(Corruption);

/** The code decodePayload returns for a payload spoiled each way. */
export const CORRUPTION_FOUND_AS = {
  [Corruption.malformedJson]: InvalidReason.malformedJson,
  [Corruption.wrongType]: InvalidReason.schema,
  [Corruption.missingField]: InvalidReason.schema,
  [Corruption.outOfRange]: InvalidReason.schema,
  [Corruption.notAnObject]: InvalidReason.schema,
} as const satisfies Record<Corruption, DecodeFailure>;

/**
 * The JSON text of `payload` (a valid payload of `kind`) spoiled by `corruption`: cut short, a
 * number sent as text, a required field left out, a value out of its range, or not an object at all.
 */
export function invalidPayload(
  kind: DeviceKind,
  payload: Telemetry | Status | DeviceEvent,
  corruption: Corruption,
  rng: Random,
): string {
  const copy: Record<string, unknown> = { ...payload };
  switch (corruption) {
    case Corruption.malformedJson: {
      const text = JSON.stringify(payload);
      // Any proper prefix of an object's JSON text is unterminated, hence not JSON.
      return text.slice(0, integer(rng, 1, text.length - 1));
    }
    case Corruption.wrongType:
      if (kind === 'telemetry') copy.SoC = `${String(copy.SoC)}%`;
      else if (kind === 'status')
        copy.State = 3; // the register value instead of the symbol
      else copy.seq = String(copy.seq);
      return JSON.stringify(copy);
    case Corruption.missingField:
      delete copy[kind === 'telemetry' ? 'W' : kind === 'status' ? 'State' : 'alarm'];
      return JSON.stringify(copy);
    case Corruption.outOfRange:
      if (kind === 'telemetry') copy.SoC = round(100 + integer(rng, 1, 50) + rng(), 2);
      else if (kind === 'status') copy.uptimeS = -integer(rng, 1, 1000);
      else copy.seq = -1;
      return JSON.stringify(copy);
    case Corruption.notAnObject:
      return JSON.stringify([payload]);
  }
}
