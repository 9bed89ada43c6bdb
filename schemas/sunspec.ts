/**
 * Symbol names from the SunSpec battery models (802 battery base, 803 lithium-ion bank, 804
 * lithium-ion string) and the 701 AC model, as devices write them in JSON payloads. Copied here so
 * that nothing at run or test time depends on the model files.
 *
 * Enumerations travel as their symbol names, not their register values, so a payload reads on its
 * own. Where a SunSpec symbol contains a space (802 State `SOC PROTECTION`, Typ
 * `NOT APPLICABLE_UNKNOWN`, ReqInvState `NO REQUEST`) the JSON name has `_` instead, like every
 * other symbol.
 */

/** 802 `State`: state of the battery bank. */
export const BankState = [
  'DISCONNECTED',
  'INITIALIZING',
  'CONNECTED',
  'STANDBY',
  'SOC_PROTECTION',
  'SUSPENDING',
  'FAULT',
] as const;
export type BankState = (typeof BankState)[number];

/** 802 `ChaSt`: charge status. */
export const ChargeStatus = [
  'OFF',
  'EMPTY',
  'DISCHARGING',
  'CHARGING',
  'FULL',
  'HOLDING',
  'TESTING',
] as const;
export type ChargeStatus = (typeof ChargeStatus)[number];

/** 802 `LocRemCtl`: control mode. */
export const ControlMode = ['REMOTE', 'LOCAL'] as const;
export type ControlMode = (typeof ControlMode)[number];

/**
 * 802 `Evt1` bit names, in bit order (bit 0 first). Bit 27, `RESERVED_1`, is left out: the model
 * says "Do not implement", so a device naming it is wrong.
 */
export const Evt1Alarm = [
  'COMMUNICATION_ERROR',
  'OVER_TEMP_ALARM',
  'OVER_TEMP_WARNING',
  'UNDER_TEMP_ALARM',
  'UNDER_TEMP_WARNING',
  'OVER_CHARGE_CURRENT_ALARM',
  'OVER_CHARGE_CURRENT_WARNING',
  'OVER_DISCHARGE_CURRENT_ALARM',
  'OVER_DISCHARGE_CURRENT_WARNING',
  'OVER_VOLT_ALARM',
  'OVER_VOLT_WARNING',
  'UNDER_VOLT_ALARM',
  'UNDER_VOLT_WARNING',
  'UNDER_SOC_MIN_ALARM',
  'UNDER_SOC_MIN_WARNING',
  'OVER_SOC_MAX_ALARM',
  'OVER_SOC_MAX_WARNING',
  'VOLTAGE_IMBALANCE_WARNING',
  'TEMPERATURE_IMBALANCE_ALARM',
  'TEMPERATURE_IMBALANCE_WARNING',
  'CONTACTOR_ERROR',
  'FAN_ERROR',
  'GROUND_FAULT',
  'OPEN_DOOR_ERROR',
  'CURRENT_IMBALANCE_WARNING',
  'OTHER_ALARM',
  'OTHER_WARNING',
  'CONFIGURATION_ALARM',
  'CONFIGURATION_WARNING',
] as const;
export type Evt1Alarm = (typeof Evt1Alarm)[number];

/** Bit position of each `Evt1` name in the 802 bitfield. */
export const EVT1_BIT: Readonly<Record<Evt1Alarm, number>> = Object.fromEntries(
  Evt1Alarm.map((name, i) => [name, i < 27 ? i : i + 1]),
) as Record<Evt1Alarm, number>;

/** 803/804 string connection failure reason (`StrConFail` / `ConFail`). */
export const StringConnectionFailure = [
  'NO_FAILURE',
  'BUTTON_PUSHED',
  'STR_GROUND_FAULT',
  'OUTSIDE_VOLTAGE_RANGE',
  'STRING_NOT_ENABLED',
  'FUSE_OPEN',
  'CONTACTOR_FAILURE',
  'PRECHARGE_FAILURE',
  'STRING_FAULT',
] as const;

/** 701 `ACType`. */
export const AcWiringType = ['SINGLE_PHASE', 'SPLIT_PHASE', 'THREE_PHASE'] as const;
/** 701 `St`. */
export const AcOperatingState = ['OFF', 'ON'] as const;
/** 701 `InvSt`. */
export const InverterState = [
  'OFF',
  'SLEEPING',
  'STARTING',
  'RUNNING',
  'THROTTLED',
  'SHUTTING_DOWN',
  'FAULT',
  'STANDBY',
] as const;
/** 701 `ConnSt`. */
export const GridConnectionState = ['DISCONNECTED', 'CONNECTED'] as const;
