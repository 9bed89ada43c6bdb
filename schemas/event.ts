/**
 * `event` payload, version 1: an 802 `Evt1` condition raised or cleared. `alarm` is the bit's
 * name. `severity` is optional because the name implies it: consumers use `severityOf(alarm)`
 * when a device leaves it out.
 * Required: `ts`, `seq`, `alarm`, `action`.
 */
import Type, { type Static } from 'typebox';
import { envelope, symbol } from './fields.ts';
import { Evt1Alarm } from './sunspec.ts';

export const EventAction = { raised: 'raised', cleared: 'cleared' } as const;
export type EventAction = (typeof EventAction)[keyof typeof EventAction];

export const Severity = { alarm: 'alarm', warning: 'warning' } as const;
export type Severity = (typeof Severity)[keyof typeof Severity];

export const DeviceEventSchema = Type.Object({
  ...envelope,
  alarm: symbol(Evt1Alarm, { description: 'an 802 Evt1 bit name' }),
  action: symbol([EventAction.raised, EventAction.cleared] as const, { description: 'raised or cleared' }),
  severity: Type.Optional(symbol([Severity.alarm, Severity.warning] as const)),
  message: Type.Optional(Type.String({ maxLength: 1024, description: 'free text from the device' })),
});
export type DeviceEvent = Static<typeof DeviceEventSchema>;

/**
 * Severity of an Evt1 condition from its name: `…_WARNING` is a warning; `…_ALARM`, errors and
 * faults (`COMMUNICATION_ERROR`, `GROUND_FAULT`, …) are alarms.
 */
export const severityOf = (alarm: Evt1Alarm): Severity =>
  alarm.endsWith('_WARNING') ? Severity.warning : Severity.alarm;
