/**
 * The wire contract of Switchyard: subjects, headers and the device payload schemas (version
 * SCHEMA_VERSION). Everything that reads or writes stream messages imports it from here.
 */
export {
  MessageKind,
  DEVICE_KINDS,
  type DeviceKind,
  type SubjectParts,
  SUBJECT_ROOT,
  subjectFor,
  parseSubject,
  isValidId,
  isMessageKind,
  isDeviceKind,
  siteFilter,
  kindFilter,
} from './subjects.ts';
export { Header, messageId, messageIdScope } from './headers.ts';
export {
  SCHEMA_VERSION,
  DEFAULT_MAX_PAYLOAD_BYTES,
  PAYLOAD_SCHEMAS,
  schemaTag,
  decodePayload,
  InvalidReason,
  type DecodeFailure,
  type DecodedPayload,
  type DecodeResult,
  type DecodeOptions,
  type PayloadOf,
} from './decode.ts';
export { deviceTimeMs } from './time.ts';
export {
  TelemetrySchema,
  TelemetryStringSchema,
  TelemetryModuleSchema,
  TelemetryAcSchema,
  type Telemetry,
  type TelemetryString,
  type TelemetryModule,
  type TelemetryAc,
} from './telemetry.ts';
export { StatusSchema, type Status } from './status.ts';
export { DeviceEventSchema, EventAction, Severity, severityOf, type DeviceEvent } from './event.ts';
export { BankState, ChargeStatus, ControlMode, Evt1Alarm, EVT1_BIT } from './sunspec.ts';
export { formatErrors } from './format-errors.ts';
