/**
 * Subjects of the hub and site streams: `bsu.<site>.<device>.<kind>`. Site and device ids are
 * single NATS tokens: letters, digits, `-` and `_` (no dots, wildcards or spaces).
 */
export const MessageKind = {
  telemetry: 'telemetry',
  status: 'status',
  event: 'event',
  /** A payload that failed validation, kept byte for byte with the reason in a header. */
  invalid: 'invalid',
} as const;
export type MessageKind = (typeof MessageKind)[keyof typeof MessageKind];

/** The kinds a device may publish (everything but `invalid`). */
export const DEVICE_KINDS = [MessageKind.telemetry, MessageKind.status, MessageKind.event] as const;
export type DeviceKind = (typeof DEVICE_KINDS)[number];

const KINDS = new Set<string>(Object.values(MessageKind));
const TOKEN = /^[A-Za-z0-9_-]{1,128}$/;

export const SUBJECT_ROOT = 'bsu';

/** Is `id` usable as a site or device id (one NATS subject token)? */
export const isValidId = (id: string): boolean => TOKEN.test(id);

export const isMessageKind = (kind: string): kind is MessageKind => KINDS.has(kind);
export const isDeviceKind = (kind: string): kind is DeviceKind =>
  kind !== MessageKind.invalid && KINDS.has(kind);

export interface SubjectParts {
  site: string;
  device: string;
  kind: MessageKind;
}

/** `bsu.<site>.<device>.<kind>`; throws on an id that is not a single token. */
export function subjectFor(site: string, device: string, kind: MessageKind): string {
  if (!isValidId(site))
    throw new Error(`invalid site id ${JSON.stringify(site)}: use letters, digits, - and _`);
  if (!isValidId(device))
    throw new Error(`invalid device id ${JSON.stringify(device)}: use letters, digits, - and _`);
  return `${SUBJECT_ROOT}.${site}.${device}.${kind}`;
}

/** The parts of a stream subject, or undefined if it is not one of ours. */
export function parseSubject(subject: string): SubjectParts | undefined {
  const parts = subject.split('.');
  if (parts.length !== 4 || parts[0] !== SUBJECT_ROOT) return undefined;
  const [, site, device, kind] = parts as [string, string, string, string];
  if (!isValidId(site) || !isValidId(device) || !isMessageKind(kind)) return undefined;
  return { site, device, kind };
}

/** Filter subject for one site's messages (`bsu.<site>.>`), or all sites when omitted. */
export const siteFilter = (site?: string): string =>
  site ? `${SUBJECT_ROOT}.${site}.>` : `${SUBJECT_ROOT}.>`;

/** Filter subject for one kind across sites and devices (`bsu.*.*.<kind>`). */
export const kindFilter = (kind: MessageKind): string => `${SUBJECT_ROOT}.*.*.${kind}`;
