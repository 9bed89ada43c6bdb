/**
 * The trust settings of Switchyard's nats-servers, as config lines: the hub runs a full resolver
 * (account JWTs pushed to it take effect at once); a gateway's server trusts the same operator and
 * knows only the system account and its own.
 */
import type { OperatorStore } from './operator-store.ts';

const q = (value: string): string => JSON.stringify(value);

/** Operator mode with a full resolver in `resolverDir`; SYS, HUB and the sites enrolled so far preloaded. */
export function hubTrustLines(store: OperatorStore, resolverDir: string): string[] {
  const { system, hub } = store;
  return [
    `operator: ${q(store.operatorJwtFile)}`,
    `system_account: ${q(system.publicKey)}`,
    'resolver {',
    '  type: full',
    `  dir: ${q(resolverDir)}`,
    '  allow_delete: true',
    '  interval: "2m"',
    '}',
    // A stored JWT newer than these (the hub account once sites were added) is kept on restart.
    'resolver_preload {',
    ...[system, hub, ...store.sites().map((site) => store.siteAccount(site))].map(
      (account) => `  ${account.publicKey}: ${q(account.jwt)}`,
    ),
    '}',
  ];
}

/** Operator mode on a gateway: the system account and the site's own, from memory. */
export function gatewayTrustLines(store: OperatorStore, site: string): string[] {
  const { system } = store;
  const local = store.siteLocalAccount(site);
  return [
    `operator: ${q(store.operatorJwtFile)}`,
    `system_account: ${q(system.publicKey)}`,
    'resolver: MEMORY',
    'resolver_preload {',
    `  ${system.publicKey}: ${q(system.jwt)}`,
    `  ${local.publicKey}: ${q(local.jwt)}`,
    '}',
  ];
}
