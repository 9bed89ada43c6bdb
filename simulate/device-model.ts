/**
 * The physics of a simulated battery storage unit: a lithium-ion (LFP) bank behind a grid inverter.
 * Pure and deterministic: `stepDevice` takes a state, a time step and a seeded random source and
 * returns the next state and the alarms that changed, with no I/O and no clock.
 *
 * What holds between readings, so that consumers see believable data:
 * - power follows a dispatch setpoint (charge, discharge, hold) with a ramp; sign as in SunSpec 701:
 *   positive = discharging;
 * - SoC integrates the energy through the cells against the capacity (derated by SoH);
 * - the DC voltage is the open-circuit voltage of the cells at that SoC, minus I·R;
 * - temperature rises with I²R and relaxes to an ambient that follows the day;
 * - cycle count grows with energy throughput (one cycle = one full charge plus one full discharge);
 * - the AC side is the DC power through an inverter of known efficiency, with energy totals;
 * - the bank goes to STANDBY now and then, and to FAULT rarely (raising an alarm, cleared when it
 *   recovers); threshold alarms (temperature, SoC) raise and clear with hysteresis.
 */
import type { BankState, ChargeStatus, Evt1Alarm } from '../schemas/index.ts';
import { chance, integer, noise, pick, uniform, type Random } from './random.ts';

/** Fixed properties of one unit, drawn once from its seed. */
export interface DeviceSpec {
  /** Nameplate energy capacity, Wh. */
  capacityWh: number;
  /** Charge and discharge power limit at the DC terminals, W. */
  maxPowerW: number;
  /** Cells in series in each string. */
  cellsInSeries: number;
  strings: number;
  modulesPerString: number;
  /** Cells in series per module (cellsInSeries / modulesPerString). */
  cellsPerModule: number;
  /** Bank internal resistance, Ω. */
  internalOhm: number;
  /** One-way inverter efficiency, 0..1. */
  efficiency: number;
  /** Mean ambient temperature, °C. */
  ambientC: number;
  /** Thermal resistance bank → ambient, K/W: steady rise = I²R × this. */
  thermalKPerW: number;
  /** Thermal time constant, s. */
  thermalTauS: number;
  /** Grid nominal frequency, Hz, and line-to-line voltage, V. */
  gridHz: number;
  gridLlV: number;
  /** Lowest and highest SoC the controller allows, %. */
  socMinPct: number;
  socMaxPct: number;
  firmware: string;
}

/** The operating mode the controller is in. */
export const DeviceMode = { dispatch: 'dispatch', standby: 'standby', fault: 'fault' } as const;
export type DeviceMode = (typeof DeviceMode)[keyof typeof DeviceMode];

/** Everything that changes. Energies in Wh, power in W, temperatures in °C, times in ms of device time. */
export interface DeviceState {
  /** Device time since the simulation started, ms. */
  elapsedMs: number;
  /** Uptime at the start of the simulation, s (devices were running before we looked). */
  bootUptimeS: number;
  socPct: number;
  sohPct: number;
  /** DC power at the terminals, W; positive = discharging. */
  powerW: number;
  setpointW: number;
  /** When the dispatch setpoint changes next. */
  setpointUntilMs: number;
  mode: DeviceMode;
  modeUntilMs: number;
  /** Alarm raised with the current fault, cleared when the fault ends. */
  faultAlarm?: Evt1Alarm;
  /** Bank average temperature, °C. */
  tempC: number;
  /** Energy through the cells (charge and discharge), Wh. */
  throughputWh: number;
  cyclesAtStart: number;
  acWhInjected: number;
  acWhAbsorbed: number;
  acVarhInjected: number;
  acVarhAbsorbed: number;
  /** Reactive power the grid operator asks for, as a fraction of apparent power. */
  reactiveShare: number;
  /** Alarms currently raised, with the device time they clear at (Infinity: when the condition goes). */
  alarms: Partial<Record<Evt1Alarm, number>>;
  /** Per-string offsets of SoC (%) and temperature (K) from the bank average: manufacturing spread. */
  stringSocOffset: number[];
  stringTempOffset: number[];
}

/** What the bank reports at an instant: derived from the state, nothing stored. */
export interface DeviceReadings {
  state: BankState;
  chargeStatus: ChargeStatus;
  /** DC. */
  voltageV: number;
  currentA: number;
  powerW: number;
  ocvV: number;
  cellVAvg: number;
  cellVMax: number;
  cellVMin: number;
  tempMaxC: number;
  tempMinC: number;
  tempAvgC: number;
  cycles: number;
  /** AC. */
  acW: number;
  acVA: number;
  acVar: number;
  acPF: number;
  acA: number;
  acHz: number;
  acLlV: number;
  cabinetC: number;
  ambientC: number;
}

/** Alarms that changed in a step. */
export interface AlarmChanges {
  raised: Evt1Alarm[];
  cleared: Evt1Alarm[];
}

const DAY_MS = 86_400_000;
const HOUR_MS = 3_600_000;
const MINUTE_MS = 60_000;
/** Mean time between events of each kind, device time. */
const STANDBY_EVERY_MS = 2 * HOUR_MS;
const FAULT_EVERY_MS = 12 * HOUR_MS;
const TRANSIENT_ALARM_EVERY_MS = 20 * MINUTE_MS;
/** SoH lost per full cycle, % (LFP: ~20 % over 6000 cycles). */
const SOH_LOSS_PER_CYCLE = 0.0033;

const FAULT_ALARMS: readonly Evt1Alarm[] = [
  'CONTACTOR_ERROR',
  'GROUND_FAULT',
  'COMMUNICATION_ERROR',
  'FAN_ERROR',
  'OVER_TEMP_ALARM',
];
const TRANSIENT_ALARMS: readonly Evt1Alarm[] = [
  'VOLTAGE_IMBALANCE_WARNING',
  'TEMPERATURE_IMBALANCE_WARNING',
  'CURRENT_IMBALANCE_WARNING',
  'COMMUNICATION_ERROR',
  'OPEN_DOOR_ERROR',
  'OTHER_WARNING',
];

/** Threshold alarms: raised above (or below) `on`, cleared only past `off` (hysteresis). */
const THRESHOLDS: readonly {
  alarm: Evt1Alarm;
  value: (r: DeviceReadings, s: DeviceState) => number;
  on: number;
  off: number;
}[] = [
  { alarm: 'OVER_TEMP_WARNING', value: (r) => r.tempMaxC, on: 45, off: 42 },
  { alarm: 'OVER_TEMP_ALARM', value: (r) => r.tempMaxC, on: 55, off: 50 },
  { alarm: 'UNDER_TEMP_WARNING', value: (r) => -r.tempMinC, on: 0, off: -3 },
  { alarm: 'UNDER_SOC_MIN_WARNING', value: (_, s) => -s.socPct, on: -7, off: -10 },
  { alarm: 'OVER_SOC_MAX_WARNING', value: (_, s) => s.socPct, on: 99, off: 97 },
];

/** Draws the fixed properties of a unit. */
export function createDeviceSpec(rng: Random): DeviceSpec {
  const capacityWh = Math.round(uniform(rng, 150_000, 250_000) / 1000) * 1000;
  const strings = integer(rng, 2, 4);
  const modulesPerString = 8;
  const cellsPerModule = 28;
  return {
    capacityWh,
    maxPowerW: Math.round(capacityWh * 0.5),
    cellsInSeries: modulesPerString * cellsPerModule,
    strings,
    modulesPerString,
    cellsPerModule,
    internalOhm: uniform(rng, 0.04, 0.07) / strings,
    efficiency: uniform(rng, 0.955, 0.975),
    ambientC: uniform(rng, 12, 26),
    thermalKPerW: uniform(rng, 0.012, 0.02),
    thermalTauS: uniform(rng, 900, 1800),
    gridHz: 50,
    gridLlV: 400,
    socMinPct: 5,
    socMaxPct: 98,
    firmware: pick(rng, ['2.4.1', '2.4.3', '2.5.0']),
  };
}

/** A unit part-way through its life, at a random SoC, idle. */
export function createDeviceState(spec: DeviceSpec, rng: Random): DeviceState {
  const cyclesAtStart = integer(rng, 50, 2500);
  const stringSocOffset = Array.from({ length: spec.strings }, () => noise(rng, 0.4));
  const stringTempOffset = Array.from({ length: spec.strings }, () => noise(rng, 0.8));
  return {
    elapsedMs: 0,
    bootUptimeS: integer(rng, 60, 30 * 86_400),
    socPct: uniform(rng, 20, 80),
    sohPct: 100 - cyclesAtStart * SOH_LOSS_PER_CYCLE - uniform(rng, 0, 1.5),
    powerW: 0,
    setpointW: 0,
    setpointUntilMs: 0,
    mode: DeviceMode.dispatch,
    modeUntilMs: Infinity,
    tempC: spec.ambientC + uniform(rng, 0, 3),
    throughputWh: 0,
    cyclesAtStart,
    acWhInjected: Math.round(cyclesAtStart * spec.capacityWh * 0.9),
    acWhAbsorbed: Math.round(cyclesAtStart * spec.capacityWh * 0.98),
    acVarhInjected: Math.round(cyclesAtStart * spec.capacityWh * 0.05),
    acVarhAbsorbed: Math.round(cyclesAtStart * spec.capacityWh * 0.04),
    reactiveShare: uniform(rng, 0, 0.12),
    alarms: {},
    stringSocOffset,
    stringTempOffset,
  };
}

/** Open-circuit voltage of one LFP cell at a state of charge (%): flat in the middle, steep at the ends. */
export function cellOcvV(socPct: number): number {
  const s = Math.min(Math.max(socPct, 0), 100) / 100;
  return 3.0 + 0.3 * s + (0.12 * Math.max(0, s - 0.9)) / 0.1 - (0.3 * Math.max(0, 0.08 - s)) / 0.08;
}

/** Ambient temperature at a device time: the mean plus a daily swing, coolest before dawn. */
export const ambientAt = (spec: DeviceSpec, elapsedMs: number): number =>
  spec.ambientC + 5 * Math.sin((2 * Math.PI * (elapsedMs - 0.375 * DAY_MS)) / DAY_MS);

/** Current and terminal voltage of the bank delivering `powerW` (solves V = OCV − I·R with I = P/V). */
export function dcOperatingPoint(
  spec: DeviceSpec,
  socPct: number,
  powerW: number,
): { ocvV: number; voltageV: number; currentA: number } {
  const ocvV = cellOcvV(socPct) * spec.cellsInSeries;
  const disc = Math.max(ocvV * ocvV - 4 * powerW * spec.internalOhm, 0);
  const voltageV = (ocvV + Math.sqrt(disc)) / 2;
  return { ocvV, voltageV, currentA: powerW / voltageV };
}

/** The readings of a state (no randomness: noise is in the state, or added by the payload builder). */
export function readingsOf(spec: DeviceSpec, s: DeviceState): DeviceReadings {
  const { ocvV, voltageV, currentA } = dcOperatingPoint(spec, s.socPct, s.powerW);
  const cellVAvg = voltageV / spec.cellsInSeries;
  // Cells drift apart at the ends of the SoC range, where the OCV curve is steep.
  const endness = Math.max(0, Math.abs(s.socPct - 50) - 35) / 15;
  const spreadV = 0.004 + 0.03 * endness + Math.abs(currentA) * 0.00003;
  const heatW = currentA * currentA * spec.internalOhm;
  const spreadK = 1.2 + heatW * spec.thermalKPerW * 0.25;
  const acW = s.powerW >= 0 ? s.powerW * spec.efficiency : s.powerW / spec.efficiency;
  const acVar = Math.abs(acW) * s.reactiveShare;
  const acVA = Math.hypot(acW, acVar);
  const acPF = acVA < 1 ? 1 : Math.sign(acW || 1) * (Math.abs(acW) / acVA);
  const ambientC = ambientAt(spec, s.elapsedMs);
  return {
    state: stateOf(spec, s),
    chargeStatus: chargeStatusOf(spec, s),
    voltageV,
    currentA,
    powerW: s.powerW,
    ocvV,
    cellVAvg,
    cellVMax: cellVAvg + spreadV * 0.6,
    cellVMin: cellVAvg - spreadV * 0.4,
    tempAvgC: s.tempC,
    tempMaxC: s.tempC + spreadK,
    tempMinC: s.tempC - spreadK * 0.7,
    cycles: s.cyclesAtStart + Math.floor(s.throughputWh / (2 * spec.capacityWh)),
    acW,
    acVA,
    acVar,
    acPF,
    acA: acVA / (Math.sqrt(3) * spec.gridLlV),
    acHz: spec.gridHz,
    acLlV: spec.gridLlV,
    cabinetC: ambientC + 4 + heatW * spec.thermalKPerW * 0.3,
    ambientC,
  };
}

function stateOf(spec: DeviceSpec, s: DeviceState): BankState {
  if (s.mode === DeviceMode.fault) return 'FAULT';
  if (s.mode === DeviceMode.standby) return 'STANDBY';
  if (s.setpointW > 0 && s.socPct <= spec.socMinPct) return 'SOC_PROTECTION';
  return 'CONNECTED';
}

function chargeStatusOf(spec: DeviceSpec, s: DeviceState): ChargeStatus {
  if (s.mode === DeviceMode.fault) return 'OFF';
  const idle = Math.abs(s.powerW) < spec.maxPowerW * 0.01;
  if (idle && s.socPct >= spec.socMaxPct - 0.5) return 'FULL';
  if (idle && s.socPct <= spec.socMinPct + 0.5) return 'EMPTY';
  if (idle) return 'HOLDING';
  return s.powerW > 0 ? 'DISCHARGING' : 'CHARGING';
}

/** A new dispatch setpoint: charge, discharge or hold, for 5 to 30 minutes. */
function nextSetpoint(spec: DeviceSpec, s: DeviceState, rng: Random): number {
  const r = rng();
  // Lean towards whatever brings SoC back to the middle, as a real dispatcher would.
  const towardsMiddle = s.socPct > 50 ? 0.55 : 0.3;
  if (r < 0.15) return 0;
  const magnitude = spec.maxPowerW * uniform(rng, 0.2, 1);
  return rng() < towardsMiddle ? magnitude : -magnitude;
}

/**
 * Advances a unit by `dtMs` of device time. Returns the next state (the input is not modified)
 * and the alarms raised and cleared during the step.
 */
export function stepDevice(
  spec: DeviceSpec,
  prev: DeviceState,
  dtMs: number,
  rng: Random,
): { state: DeviceState; changes: AlarmChanges } {
  const dtS = dtMs / 1000;
  const s: DeviceState = { ...prev, alarms: { ...prev.alarms }, elapsedMs: prev.elapsedMs + dtMs };
  const changes: AlarmChanges = { raised: [], cleared: [] };
  const raise = (alarm: Evt1Alarm, untilMs: number): void => {
    if (s.alarms[alarm] !== undefined) return;
    s.alarms[alarm] = untilMs;
    changes.raised.push(alarm);
  };
  const clear = (alarm: Evt1Alarm): void => {
    if (s.alarms[alarm] === undefined) return;
    delete s.alarms[alarm];
    changes.cleared.push(alarm);
  };
  // Poisson events: probability of at least one in dt for a mean interval.
  const happens = (everyMs: number): boolean => chance(rng, 1 - Math.exp(-dtMs / everyMs));

  // Mode: recover from standby or fault when its time is up; otherwise, now and then, leave dispatch.
  if (s.mode !== DeviceMode.dispatch && s.elapsedMs >= s.modeUntilMs) {
    if (s.faultAlarm) clear(s.faultAlarm);
    s.faultAlarm = undefined;
    s.mode = DeviceMode.dispatch;
    s.modeUntilMs = Infinity;
    s.setpointUntilMs = s.elapsedMs;
  } else if (s.mode === DeviceMode.dispatch) {
    if (happens(FAULT_EVERY_MS)) {
      s.mode = DeviceMode.fault;
      s.modeUntilMs = s.elapsedMs + uniform(rng, 1, 5) * MINUTE_MS;
      s.faultAlarm = pick(rng, FAULT_ALARMS);
      if (s.alarms[s.faultAlarm] !== undefined) s.faultAlarm = undefined;
      else raise(s.faultAlarm, Infinity);
    } else if (happens(STANDBY_EVERY_MS)) {
      s.mode = DeviceMode.standby;
      s.modeUntilMs = s.elapsedMs + uniform(rng, 2, 10) * MINUTE_MS;
    }
  }

  // Setpoint: the dispatcher's request, limited by what the cells can take.
  if (s.mode === DeviceMode.dispatch && s.elapsedMs >= s.setpointUntilMs) {
    s.setpointW = nextSetpoint(spec, s, rng);
    s.setpointUntilMs = s.elapsedMs + uniform(rng, 5, 30) * MINUTE_MS;
  }
  let targetW = s.mode === DeviceMode.dispatch ? s.setpointW : 0;
  if (targetW > 0 && s.socPct <= spec.socMinPct) targetW = 0;
  if (targetW < 0 && s.socPct >= spec.socMaxPct) targetW = 0;
  // Constant-voltage phase: charging tapers off over the last 10 % before the maximum.
  if (targetW < 0) targetW *= Math.min(1, Math.max(0.05, (spec.socMaxPct - s.socPct) / 10));
  if (s.mode === DeviceMode.fault) s.powerW = 0;
  else {
    const rampW = spec.maxPowerW * 0.1 * dtS;
    s.powerW += Math.max(-rampW, Math.min(rampW, targetW - s.powerW));
    if (targetW !== 0) s.powerW += noise(rng, spec.maxPowerW * 0.004);
    else if (Math.abs(s.powerW) < spec.maxPowerW * 0.005) s.powerW = 0;
    s.powerW = Math.max(-spec.maxPowerW, Math.min(spec.maxPowerW, s.powerW));
  }

  // Energy through the cells (OCV × I: the I²R loss is not stored charge), SoC, wear. The battery
  // management stops at the SoC limits within a step too, so power and SoC stay consistent.
  const usableWh = (spec.capacityWh * s.sohPct) / 100;
  let { ocvV, currentA } = dcOperatingPoint(spec, s.socPct, s.powerW);
  let cellWh = (ocvV * currentA * dtS) / 3600;
  const roomWh =
    cellWh > 0
      ? ((s.socPct - spec.socMinPct) / 100) * usableWh
      : ((spec.socMaxPct - s.socPct) / 100) * usableWh;
  if (cellWh !== 0 && Math.abs(cellWh) > roomWh) {
    s.powerW *= Math.max(0, roomWh) / Math.abs(cellWh);
    ({ ocvV, currentA } = dcOperatingPoint(spec, s.socPct, s.powerW));
    cellWh = (ocvV * currentA * dtS) / 3600;
  }
  s.socPct = Math.min(100, Math.max(0, s.socPct - (cellWh / usableWh) * 100));
  s.throughputWh += Math.abs(cellWh);
  s.sohPct = Math.max(0, s.sohPct - (Math.abs(cellWh) / (2 * spec.capacityWh)) * SOH_LOSS_PER_CYCLE);

  // Temperature: first-order towards ambient plus the I²R rise.
  const heatW = currentA * currentA * spec.internalOhm;
  const targetC = ambientAt(spec, s.elapsedMs) + heatW * spec.thermalKPerW;
  s.tempC += (targetC - s.tempC) * (1 - Math.exp(-dtS / spec.thermalTauS));

  // AC energy totals.
  const r = readingsOf(spec, s);
  const dtH = dtS / 3600;
  if (r.acW > 0) s.acWhInjected += r.acW * dtH;
  else s.acWhAbsorbed -= r.acW * dtH;
  if (r.acW > 0) s.acVarhInjected += r.acVar * dtH;
  else s.acVarhAbsorbed += r.acVar * dtH;

  // Alarms: thresholds with hysteresis, transient ones that clear by themselves.
  for (const t of THRESHOLDS) {
    const v = t.value(r, s);
    if (v > t.on) raise(t.alarm, Infinity);
    else if (v < t.off && s.faultAlarm !== t.alarm) clear(t.alarm);
  }
  for (const [alarm, untilMs] of Object.entries(s.alarms) as [Evt1Alarm, number][])
    if (s.elapsedMs >= untilMs) clear(alarm);
  if (happens(TRANSIENT_ALARM_EVERY_MS)) {
    const alarm = pick(rng, TRANSIENT_ALARMS);
    if (alarm !== s.faultAlarm) raise(alarm, s.elapsedMs + uniform(rng, 0.3, 5) * MINUTE_MS);
  }
  return { state: s, changes };
}
