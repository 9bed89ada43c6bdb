/**
 * Gives account JWTs to the hub's full resolver: a system-account user publishes each on
 * `$SYS.REQ.CLAIMS.UPDATE`, and the hub takes it at once, without a restart or a reload.
 */
import type { NatsConnection } from '@nats-io/transport-node';
import type { AccountJwt } from './operator-store.ts';

/** The hub refused an account JWT. */
export class ClaimsUpdateError extends Error {
  override name = 'ClaimsUpdateError';
}

interface ClaimsReply {
  data?: { account?: string; code?: number; message?: string };
  error?: { account?: string; code?: number; description?: string };
}

/** Pushes each JWT through `system` (a connection of the system account's user), in order. */
export async function pushAccountJwts(
  system: NatsConnection,
  accounts: readonly AccountJwt[],
): Promise<void> {
  for (const account of accounts) {
    const reply = await system.request('$SYS.REQ.CLAIMS.UPDATE', account.jwt, { timeout: 5_000 });
    const body = reply.json<ClaimsReply>();
    if (body.error || (body.data?.code ?? 200) >= 300)
      throw new ClaimsUpdateError(
        `the hub refused the JWT of account ${account.name}: ${body.error?.description ?? body.data?.message ?? 'no reason given'}`,
      );
  }
}
