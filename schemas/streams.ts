/**
 * JetStream names both sides agree on. Every site has its own stream names, because flow-control
 * replies are addressed `$JS.FC.<stream>.…` and one shared name across sites would collide once
 * sites are isolated in accounts of their own (docs/edge.md).
 */
import { isValidId, MessageKind, SUBJECT_ROOT } from './subjects.ts';

/** The hub stream every consumer reads. */
export const HUB_STREAM = 'BSU';
/** Dead letters of every consumer. */
export const DLQ_STREAM = 'BSU_DLQ';
/** JetStream domain of the hub. */
export const HUB_DOMAIN = 'hub';

/**
 * A site has three streams with budgets of their own, so that a flood evicts only its own kind:
 * alarms outlive telemetry, and telemetry outlives payloads kept aside as invalid.
 */
export const SiteStreamRole = { telemetry: 'telemetry', events: 'events', invalid: 'invalid' } as const;
export type SiteStreamRole = (typeof SiteStreamRole)[keyof typeof SiteStreamRole];

export interface SiteStreamNames {
  /** Telemetry: evicted oldest-first when over budget. */
  telemetry: string;
  /** Status and events: a separate, smaller budget. */
  events: string;
  /** Payloads kept aside as `invalid`: a broken device's flood evicts only its own kind. */
  invalid: string;
}

export function siteStreamNames(site: string): SiteStreamNames {
  if (!isValidId(site))
    throw new Error(`invalid site id ${JSON.stringify(site)}: use letters, digits, - and _`);
  return {
    telemetry: `SITE_${site}_TELEMETRY`,
    events: `SITE_${site}_EVENTS`,
    invalid: `SITE_${site}_INVALID`,
  };
}

/** Subjects each site stream captures. */
export function siteStreamSubjects(site: string): Record<SiteStreamRole, string[]> {
  const at = (kind: MessageKind): string => `${SUBJECT_ROOT}.${site}.*.${kind}`;
  return {
    telemetry: [at(MessageKind.telemetry)],
    events: [at(MessageKind.status), at(MessageKind.event)],
    invalid: [at(MessageKind.invalid)],
  };
}

/** The JetStream API prefix of a site's domain, as seen from the hub over the leaf link. */
export const siteApiPrefix = (site: string): string => `$JS.${site}.API`;
/** Per-site deliver prefix for the hub's source consumers. */
export const siteDeliverPrefix = (site: string): string => `deliver.${site}`;

/** The site a hub source belongs to, from its stream name; undefined if it is not a site stream. */
export function siteOfStream(stream: string): string | undefined {
  const m = /^SITE_(.+)_(TELEMETRY|EVENTS|INVALID)$/.exec(stream);
  return m?.[1];
}
