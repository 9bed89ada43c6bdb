/**
 * Which sites are connected to the hub right now, read from the hub's HTTP monitor (`/leafz`).
 *
 * nats-server 2.9 does not name a leaf connection in `/leafz` (no `name`; every site is in the
 * same account `$G` in the local stack), but a site's leaf carries the subscriptions of its own
 * JetStream API, `$JS.<domain>.API.>`; the site's domain is its id. Later servers also report the
 * remote's `server_name` as `name`, which the stack sets to the site id: either identifies it.
 */

/** One leaf connection as the hub sees it. */
export interface HubLeaf {
  account: string;
  /** The remote's server name, where the hub reports it (nats-server ≥ 2.10). */
  name?: string;
  ip: string;
  port: number;
  /** JetStream domains whose API this leaf serves. */
  domains: string[];
}

interface LeafzBody {
  leafs?: { account?: string; name?: string; ip?: string; port?: number; subscriptions_list?: string[] }[];
}

const JS_API = /^\$JS\.([^.]+)\.API\./;

/**
 * The hub's leaf connections, or undefined when its monitor does not answer (within 2 s).
 * `monitorUrl` is the hub's HTTP monitor, e.g. `http://127.0.0.1:8222`.
 */
export async function hubLeafs(monitorUrl: string): Promise<HubLeaf[] | undefined> {
  let body: LeafzBody;
  try {
    const res = await fetch(`${monitorUrl}/leafz?subs=1`, { signal: AbortSignal.timeout(2000) });
    if (!res.ok) return undefined;
    body = (await res.json()) as LeafzBody;
  } catch {
    return undefined;
  }
  return (body.leafs ?? []).map((leaf) => {
    const domains = new Set<string>();
    for (const subject of leaf.subscriptions_list ?? []) {
      const domain = JS_API.exec(subject)?.[1];
      if (domain) domains.add(domain);
    }
    return {
      account: leaf.account ?? '',
      ...(leaf.name ? { name: leaf.name } : {}),
      ip: leaf.ip ?? '',
      port: leaf.port ?? 0,
      domains: [...domains],
    };
  });
}

/** Is `leaf` the connection of site `site` (by server name or by JetStream domain)? */
export const isLeafOfSite = (leaf: HubLeaf, site: string): boolean =>
  leaf.name === site || leaf.domains.includes(site);

/**
 * Whether site `site` has a leaf connection to the hub now; undefined when the hub's monitor does
 * not answer.
 */
export async function siteLeafConnected(monitorUrl: string, site: string): Promise<boolean | undefined> {
  const leafs = await hubLeafs(monitorUrl);
  return leafs?.some((leaf) => isLeafOfSite(leaf, site));
}
