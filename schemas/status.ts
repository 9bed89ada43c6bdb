/**
 * `status` payload, version 1: the state of a BSU, sent periodically and on every change.
 * `State`, `ChaSt` and `LocRemCtl` are 802 enumeration symbols (see sunspec.ts); `Hb` is 802's
 * battery heartbeat counter. Required: `ts`, `seq`, `State`, `ChaSt`.
 */
import Type, { type Static } from 'typebox';
import { envelope, symbol } from './fields.ts';
import { BankState, ChargeStatus, ControlMode } from './sunspec.ts';

export const StatusSchema = Type.Object({
  ...envelope,
  State: symbol(BankState, { description: 'state of the battery bank (802 State)' }),
  ChaSt: symbol(ChargeStatus, { description: 'charge status (802 ChaSt)' }),
  LocRemCtl: Type.Optional(symbol(ControlMode, { description: 'control mode (802 LocRemCtl)' })),
  Hb: Type.Optional(Type.Integer({ minimum: 0, description: 'battery heartbeat counter' })),
  uptimeS: Type.Optional(Type.Number({ minimum: 0, description: 'seconds since the device started' })),
  firmware: Type.Optional(Type.String({ maxLength: 256, description: 'firmware version' })),
});
export type Status = Static<typeof StatusSchema>;
