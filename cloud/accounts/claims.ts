/**
 * What each NATS account and user may do, as JWT claims (docs/security.md). One account per site
 * at the hub isolates sites: a leaf's traffic lands in its site's account, which holds nothing of
 * the hub or of another site. The hub account imports from each site account only what sourcing
 * needs; sites import nothing.
 */
import type { Account, Export, Import, User } from '@nats-io/jwt';
import { HUB_DOMAIN, siteApiPrefix, siteDeliverPrefix, siteStreamNames } from '../../schemas/streams.ts';

/** The names of the accounts Switchyard's operator signs. */
export const AccountName = {
  system: 'SYS',
  hub: 'HUB',
  /** A site's account at the hub: its leaf lands there. */
  site: (site: string) => `SITE_${site}`,
  /** A site's account on its own gateway: the bridge and the site's streams live there. */
  siteLocal: (site: string) => `SITE_${site}_LOCAL`,
} as const;

const UNLIMITED = -1;

/** No limit on core NATS (an account JWT without limits allows nothing). */
const NATS_UNLIMITED = {
  subs: UNLIMITED,
  data: UNLIMITED,
  payload: UNLIMITED,
  imports: UNLIMITED,
  exports: UNLIMITED,
  wildcards: true,
  conn: UNLIMITED,
  leaf: UNLIMITED,
};

/** No limit on anything, JetStream included: the hub account and a gateway's local account. */
const JETSTREAM_UNLIMITED: Account['limits'] = {
  ...NATS_UNLIMITED,
  mem_storage: UNLIMITED,
  disk_storage: UNLIMITED,
  streams: UNLIMITED,
  consumer: UNLIMITED,
  max_ack_pending: UNLIMITED,
  mem_max_stream_bytes: 0,
  disk_max_stream_bytes: 0,
  max_bytes_required: false,
} as Account['limits'];

/**
 * The subjects that sourcing one site's streams into `BSU` crosses, each a service or a stream the
 * site account exports and the hub account imports (same subject on both sides):
 * - the hub creates (and on removal deletes) its source consumers on the site's streams through the
 *   site's JetStream API, as the leaf maps it (`$JS.<site>.API`);
 * - the site delivers on `deliver.<site>.>`;
 * - the hub answers the site's flow-control requests on `$JS.FC.<site stream>.>`.
 * Nothing else of the site's API is reachable, and nothing of the hub's from the site.
 */
export function sourcingSubjects(site: string): { subject: string; type: 'service' | 'stream' }[] {
  const api = siteApiPrefix(site);
  const streams = Object.values(siteStreamNames(site));
  return [
    ...streams.flatMap((stream) => [
      // 2.9 creates a filtered source consumer as CONSUMER.CREATE.<stream>.<name>.<filter>.
      { subject: `${api}.CONSUMER.CREATE.${stream}.>`, type: 'service' as const },
      { subject: `${api}.CONSUMER.DELETE.${stream}.*`, type: 'service' as const },
      { subject: `$JS.FC.${stream}.>`, type: 'service' as const },
    ]),
    { subject: `${siteDeliverPrefix(site)}.>`, type: 'stream' as const },
  ];
}

/** A site's account at the hub: exports what sourcing needs, no JetStream, no client connections. */
export function siteAccountClaims(site: string, revocations: Record<string, number> = {}): Partial<Account> {
  return {
    description: `Switchyard site ${site}, as its leaf link lands at the hub`,
    exports: sourcingSubjects(site).map(
      (s): Export => ({ name: s.subject, subject: s.subject, type: s.type }) as Export,
    ),
    limits: {
      ...JETSTREAM_UNLIMITED,
      // No JetStream of its own at the hub. Its users may connect only as leaves; a connection
      // limit of 0 is not the way to say so, since a JWT update applies it to the leaf as well.
      mem_storage: 0,
      disk_storage: 0,
      streams: 0,
      consumer: 0,
    } as Account['limits'],
    revocations,
  };
}

/** The system account: no JetStream. */
export const systemAccountClaims = (): Partial<Account> => ({
  description: 'NATS system account',
  limits: NATS_UNLIMITED as Account['limits'],
});

/** A gateway's own account: its streams (JetStream) and its bridge. */
export function siteLocalAccountClaims(site: string): Partial<Account> {
  return { description: `Switchyard site ${site}, on its gateway`, limits: JETSTREAM_UNLIMITED };
}

/** The hub account: `BSU`, the consumers, the operators' commands; imports each site's sourcing. */
export function hubAccountClaims(sites: { site: string; account: string }[]): Partial<Account> {
  const imports = sites.flatMap(({ site, account }) =>
    sourcingSubjects(site).map(
      (s): Import => ({ name: s.subject, subject: s.subject, account, type: s.type }) as Import,
    ),
  );
  return {
    description: `Switchyard hub (JetStream domain ${HUB_DOMAIN})`,
    imports,
    limits: JETSTREAM_UNLIMITED,
  };
}

/** A leaf user: may connect only as a leaf node, never as a client. */
export const leafUserClaims = (): Partial<User> => ({ allowed_connection_types: ['LEAFNODE'] });

/** A client user (the bridge, the consumers, operators' commands): no leaf connections. */
export const clientUserClaims = (): Partial<User> => ({ allowed_connection_types: ['STANDARD'] });
