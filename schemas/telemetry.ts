/**
 * `telemetry` payload, version 1: one reading of a battery bank.
 *
 * Field names are SunSpec's: the top level holds model 802 (battery base) readings and the
 * bank-level points of 803 (lithium-ion bank); `strings` holds 804 string-level points, `modules`
 * 804's repeating module group, `ac` the 701 AC-side measurements. Units are engineering units:
 * V, A, W, VA, var, Wh, varh, Hz, °C, %, Ah.
 *
 * Sign convention (as in 701): power and current are positive when the bank discharges (energy
 * flows out towards the grid) and negative when it charges.
 *
 * Required: `ts`, `seq`, `SoC`, `V`, `A`, `W`. Every other field is optional; unknown extra fields
 * are accepted (and ignored by consumers that do not know them).
 */
import Type, { type Static } from 'typebox';
import {
  AcOperatingState,
  AcWiringType,
  GridConnectionState,
  InverterState,
  StringConnectionFailure,
} from './sunspec.ts';
import { bits32, celsius, count, envelope, index, nonNeg, num, pct, symbol } from './fields.ts';

/** One 804 string (model 804's fixed points, plus 803's per-string group where they overlap). */
export const TelemetryStringSchema = Type.Object({
  Idx: Type.Integer({ minimum: 1, description: 'string index, 1-based' }),
  NMod: count('module count'),
  St: bits32('string status bitfield'),
  ConFail: Type.Optional(symbol(StringConnectionFailure, { description: 'connection failure reason' })),
  NCellBal: count('cells balancing'),
  SoC: pct('string state of charge, %'),
  DoD: pct('string depth of discharge, %'),
  NCyc: count('string cycle count'),
  SoH: pct('string state of health, %'),
  A: num('string current, A'),
  V: nonNeg('string voltage, V'),
  CellVMax: nonNeg('max cell voltage, V'),
  CellVMaxMod: index('module with the max cell voltage'),
  CellVMin: nonNeg('min cell voltage, V'),
  CellVMinMod: index('module with the min cell voltage'),
  CellVAvg: nonNeg('average cell voltage, V'),
  ModTmpMax: celsius('max module temperature, °C'),
  ModTmpMaxMod: index('module with the max temperature'),
  ModTmpMin: celsius('min module temperature, °C'),
  ModTmpMinMod: index('module with the min temperature'),
  ModTmpAvg: celsius('average module temperature, °C'),
  ConSt: bits32('contactor status bitfield'),
  Evt1: bits32('string event bitfield 1'),
  Evt2: bits32('string event bitfield 2'),
  EvtVnd1: bits32('vendor string event bitfield 1'),
  EvtVnd2: bits32('vendor string event bitfield 2'),
});
export type TelemetryString = Static<typeof TelemetryStringSchema>;

/** One module of a string (804's repeating `module` group), addressed by string and module index. */
export const TelemetryModuleSchema = Type.Object({
  Str: Type.Integer({ minimum: 1, description: 'string index, 1-based' }),
  Idx: Type.Integer({ minimum: 1, description: 'module index within the string, 1-based' }),
  ModNCell: count('module cell count'),
  ModSoC: pct('module state of charge, %'),
  ModSoH: pct('module state of health, %'),
  ModCellVMax: nonNeg('max cell voltage, V'),
  ModCellVMaxCell: index('cell with the max voltage'),
  ModCellVMin: nonNeg('min cell voltage, V'),
  ModCellVMinCell: index('cell with the min voltage'),
  ModCellVAvg: nonNeg('average cell voltage, V'),
  ModCellTmpMax: celsius('max cell temperature, °C'),
  ModCellTmpMaxCell: index('cell with the max temperature'),
  ModCellTmpMin: celsius('min cell temperature, °C'),
  ModCellTmpMinCell: index('cell with the min temperature'),
  ModCellTmpAvg: celsius('average cell temperature, °C'),
});
export type TelemetryModule = Static<typeof TelemetryModuleSchema>;

/** Power factor: −1..1, its sign that of the active power. */
const pf = (description: string) => Type.Optional(Type.Number({ minimum: -1, maximum: 1, description }));

/** AC side of the inverter (model 701). */
export const TelemetryAcSchema = Type.Object({
  ACType: Type.Optional(symbol(AcWiringType, { description: 'AC wiring type' })),
  St: Type.Optional(symbol(AcOperatingState, { description: 'operating state' })),
  InvSt: Type.Optional(symbol(InverterState, { description: 'inverter state' })),
  ConnSt: Type.Optional(symbol(GridConnectionState, { description: 'grid connection state' })),
  Alrm: bits32('alarm bitfield'),
  DERMode: bits32('DER operational characteristics bitfield'),
  W: num('active power, W; positive when injecting into the grid'),
  VA: nonNeg('apparent power, VA'),
  Var: num('reactive power, var'),
  PF: pf('power factor'),
  A: num('total AC current, A'),
  LLV: nonNeg('line-to-line voltage, V'),
  LNV: nonNeg('line-to-neutral voltage, V'),
  Hz: Type.Optional(Type.Number({ exclusiveMinimum: 0, description: 'frequency, Hz' })),
  TotWhInj: nonNeg('total active energy injected, Wh'),
  TotWhAbs: nonNeg('total active energy absorbed, Wh'),
  TotVarhInj: nonNeg('total reactive energy injected, varh'),
  TotVarhAbs: nonNeg('total reactive energy absorbed, varh'),
  TmpAmb: celsius('ambient temperature, °C'),
  TmpCab: celsius('cabinet temperature, °C'),
  TmpSnk: celsius('heat sink temperature, °C'),
  TmpTrns: celsius('transformer temperature, °C'),
  TmpSw: celsius('IGBT/MOSFET temperature, °C'),
  TmpOt: celsius('other temperature, °C'),
  WL1: num('active power L1, W'),
  VAL1: nonNeg('apparent power L1, VA'),
  VarL1: num('reactive power L1, var'),
  PFL1: pf('power factor L1'),
  AL1: num('current L1, A'),
  VL1L2: nonNeg('voltage L1-L2, V'),
  VL1: nonNeg('voltage L1-N, V'),
  TotWhInjL1: nonNeg('energy injected L1, Wh'),
  TotWhAbsL1: nonNeg('energy absorbed L1, Wh'),
  TotVarhInjL1: nonNeg('reactive energy injected L1, varh'),
  TotVarhAbsL1: nonNeg('reactive energy absorbed L1, varh'),
  WL2: num('active power L2, W'),
  VAL2: nonNeg('apparent power L2, VA'),
  VarL2: num('reactive power L2, var'),
  PFL2: pf('power factor L2'),
  AL2: num('current L2, A'),
  VL2L3: nonNeg('voltage L2-L3, V'),
  VL2: nonNeg('voltage L2-N, V'),
  TotWhInjL2: nonNeg('energy injected L2, Wh'),
  TotWhAbsL2: nonNeg('energy absorbed L2, Wh'),
  TotVarhInjL2: nonNeg('reactive energy injected L2, varh'),
  TotVarhAbsL2: nonNeg('reactive energy absorbed L2, varh'),
  WL3: num('active power L3, W'),
  VAL3: nonNeg('apparent power L3, VA'),
  VarL3: num('reactive power L3, var'),
  PFL3: pf('power factor L3'),
  AL3: num('current L3, A'),
  VL3L1: nonNeg('voltage L3-L1, V'),
  VL3: nonNeg('voltage L3-N, V'),
  TotWhInjL3: nonNeg('energy injected L3, Wh'),
  TotWhAbsL3: nonNeg('energy absorbed L3, Wh'),
  TotVarhInjL3: nonNeg('reactive energy injected L3, varh'),
  TotVarhAbsL3: nonNeg('reactive energy absorbed L3, varh'),
  ThrotPct: pct('throttling, %'),
  ThrotSrc: bits32('throttle source bitfield'),
});
export type TelemetryAc = Static<typeof TelemetryAcSchema>;

/** `telemetry/1`: see the module comment. */
export const TelemetrySchema = Type.Object({
  ...envelope,
  // 802 nameplate (static; a device may repeat them so a reading stands alone)
  AHRtg: nonNeg('nameplate charge capacity, Ah'),
  WHRtg: nonNeg('nameplate energy capacity, Wh'),
  WChaRteMax: nonNeg('nameplate max charge rate, W'),
  WDisChaRteMax: nonNeg('nameplate max discharge rate, W'),
  DisChaRte: nonNeg('self-discharge rate, % of WHRtg per day'),
  SoCMax: pct('nameplate max SoC, % of WHRtg'),
  SoCMin: pct('nameplate min SoC, % of WHRtg'),
  SocRsvMax: pct('max reserve, % of WHRtg'),
  SoCRsvMin: pct('min reserve, % of WHRtg'),
  // 802 measurements
  SoC: Type.Number({ minimum: 0, maximum: 100, description: 'state of charge, % of WHRtg' }),
  DoD: pct('depth of discharge, %'),
  SoH: pct('state of health, %'),
  NCyc: count('cycle count'),
  V: Type.Number({ minimum: 0, description: 'DC bus voltage, V' }),
  VMax: nonNeg('max battery voltage, V'),
  VMin: nonNeg('min battery voltage, V'),
  CellVMax: nonNeg('max cell voltage, V'),
  CellVMaxStr: index('string with the max cell voltage'),
  CellVMaxMod: index('module with the max cell voltage'),
  CellVMin: nonNeg('min cell voltage, V'),
  CellVMinStr: index('string with the min cell voltage'),
  CellVMinMod: index('module with the min cell voltage'),
  CellVAvg: nonNeg('average cell voltage, V'),
  A: Type.Number({ description: 'total DC current, A; positive when discharging' }),
  AChaMax: nonNeg('max charge current, A'),
  ADisChaMax: nonNeg('max discharge current, A'),
  W: Type.Number({ description: 'total DC power, W; positive when discharging' }),
  ReqW: num('battery power request, W'),
  Evt1: bits32('battery event bitfield 1 (802 Evt1)'),
  Evt2: bits32('battery event bitfield 2'),
  EvtVnd1: bits32('vendor event bitfield 1'),
  EvtVnd2: bits32('vendor event bitfield 2'),
  // 803 bank-level points
  NStr: count('string count'),
  NStrCon: count('connected string count'),
  ModTmpMax: celsius('max module temperature, °C'),
  ModTmpMaxStr: index('string with the max module temperature'),
  ModTmpMaxMod: index('module with the max temperature'),
  ModTmpMin: celsius('min module temperature, °C'),
  ModTmpMinStr: index('string with the min module temperature'),
  ModTmpMinMod: index('module with the min temperature'),
  ModTmpAvg: celsius('average module temperature, °C'),
  StrVMax: nonNeg('max string voltage, V'),
  StrVMaxStr: index('string with the max voltage'),
  StrVMin: nonNeg('min string voltage, V'),
  StrVMinStr: index('string with the min voltage'),
  StrVAvg: nonNeg('average string voltage, V'),
  StrAMax: num('max string current, A'),
  StrAMaxStr: index('string with the max current'),
  StrAMin: num('min string current, A'),
  StrAMinStr: index('string with the min current'),
  StrAAvg: num('average string current, A'),
  NCellBal: count('cells balancing'),
  // groups
  strings: Type.Optional(Type.Array(TelemetryStringSchema, { description: '804 strings' })),
  modules: Type.Optional(Type.Array(TelemetryModuleSchema, { description: '804 modules' })),
  ac: Type.Optional(TelemetryAcSchema),
});
export type Telemetry = Static<typeof TelemetrySchema>;
