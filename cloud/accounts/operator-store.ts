/**
 * The operator's directory: every key and JWT of Switchyard's NATS trust chain (operator → accounts
 * → users), kept on the machine that onboards sites. Seeds are written 0600 and never logged.
 *
 *   operator.nk, operator.jwt        the operator (signs every account)
 *   SYS.nk, SYS.jwt, sys.creds       the system account; its user pushes account JWTs to the hub
 *   HUB.nk, HUB.jwt, cloud.creds     the hub account (BSU, consumers, operators' commands)
 *   sites/<site>/                    one site: see `SiteFiles`
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  Algorithms,
  createAccount,
  createOperator,
  createUser,
  encodeAccount,
  encodeOperator,
  encodeUser,
  fmtCreds,
  fromSeed,
  type Account,
  type KeyPair,
} from '@nats-io/jwt';
import { writeSecretFile } from '../../lib/secret-file.ts';
import { isValidId } from '../../schemas/index.ts';
import {
  AccountName,
  clientUserClaims,
  hubAccountClaims,
  leafUserClaims,
  siteAccountClaims,
  siteLocalAccountClaims,
  systemAccountClaims,
} from './claims.ts';

/** The files of one site, under `sites/<site>/` of the operator's directory. */
export interface SiteFiles {
  dir: string;
  /** The site's account at the hub (seed, JWT). */
  accountSeed: string;
  accountJwt: string;
  /** The gateway's own account (seed, JWT). */
  localSeed: string;
  localJwt: string;
  /** What the gateway's nats-server connects its leaf with (a leaf-only user of the site's account). */
  leafCreds: string;
  /** What the bridge connects to the gateway's nats-server with. */
  bridgeCreds: string;
  /** The bridge's message-id key (schemas/headers.ts `messageIdScope`). */
  msgIdKey: string;
}

/** Public keys and JWTs a nats-server needs to trust the operator's accounts. */
export interface AccountJwt {
  name: string;
  publicKey: string;
  jwt: string;
}

const enc = { algorithm: Algorithms.v2 };
const SITES = 'sites';
/** Marks a site's directory: its account's users are revoked. */
const REVOKED = 'REVOKED';

function checkSite(site: string): void {
  if (!isValidId(site))
    throw new Error(`invalid site id ${JSON.stringify(site)}: use letters, digits, - and _`);
}

export class OperatorStore {
  private constructor(
    readonly dir: string,
    private readonly operator: KeyPair,
  ) {}

  /** Opens the store in `dir`, creating the operator, SYS and HUB (and their users) the first time. */
  static async open(dir: string): Promise<OperatorStore> {
    mkdirSync(join(dir, SITES), { recursive: true, mode: 0o700 });
    const operator = loadOrCreate(join(dir, 'operator.nk'), createOperator);
    const store = new OperatorStore(dir, operator);
    if (!existsSync(store.path('operator.jwt'))) {
      const system = loadOrCreate(store.path('SYS.nk'), createAccount);
      await store.signAccount(AccountName.system, system, systemAccountClaims());
      const jwt = await encodeOperator(
        'switchyard',
        operator,
        { system_account: system.getPublicKey() },
        enc,
      );
      writeFileSync(store.path('operator.jwt'), jwt);
      await store.issueUser(system, 'sys', store.path('sys.creds'), clientUserClaims());
      const hub = loadOrCreate(store.path('HUB.nk'), createAccount);
      await store.signHub();
      await store.issueUser(hub, 'cloud', store.path('cloud.creds'), clientUserClaims());
    }
    return store;
  }

  private path(...parts: string[]): string {
    return join(this.dir, ...parts);
  }

  get operatorJwtFile(): string {
    return this.path('operator.jwt');
  }
  /** Credentials of the system user, which pushes account JWTs to the hub's resolver. */
  get systemCreds(): string {
    return this.path('sys.creds');
  }
  /** Credentials of the hub account's user: the consumers and operators' commands. */
  get cloudCreds(): string {
    return this.path('cloud.creds');
  }
  get system(): AccountJwt {
    return this.account(AccountName.system, 'SYS');
  }
  get hub(): AccountJwt {
    return this.account(AccountName.hub, 'HUB');
  }

  private account(name: string, file: string): AccountJwt {
    const kp = fromSeed(readFileSync(this.path(`${file}.nk`)));
    return { name, publicKey: kp.getPublicKey(), jwt: readFileSync(this.path(`${file}.jwt`), 'utf8') };
  }

  /** The files of `site` (they exist once `enrolSite` ran). */
  siteFiles(site: string): SiteFiles {
    checkSite(site);
    const dir = this.path(SITES, site);
    return {
      dir,
      accountSeed: join(dir, 'account.nk'),
      accountJwt: join(dir, 'account.jwt'),
      localSeed: join(dir, 'local.nk'),
      localJwt: join(dir, 'local.jwt'),
      leafCreds: join(dir, 'leaf.creds'),
      bridgeCreds: join(dir, 'bridge.creds'),
      msgIdKey: join(dir, 'msg-id.key'),
    };
  }

  /** Every enrolled site. */
  sites(): string[] {
    return readdirSync(this.path(SITES), { withFileTypes: true })
      .filter((d) => {
        const dir = join(this.path(SITES), d.name);
        return d.isDirectory() && existsSync(join(dir, 'account.jwt')) && !existsSync(join(dir, REVOKED));
      })
      .map((d) => d.name)
      .sort();
  }

  /** The site's account at the hub. */
  siteAccount(site: string): AccountJwt {
    const files = this.siteFiles(site);
    return {
      name: AccountName.site(site),
      publicKey: fromSeed(readFileSync(files.accountSeed)).getPublicKey(),
      jwt: readFileSync(files.accountJwt, 'utf8'),
    };
  }

  /** The gateway's own account. */
  siteLocalAccount(site: string): AccountJwt {
    const files = this.siteFiles(site);
    return {
      name: AccountName.siteLocal(site),
      publicKey: fromSeed(readFileSync(files.localSeed)).getPublicKey(),
      jwt: readFileSync(files.localJwt, 'utf8'),
    };
  }

  /**
   * Creates (or renews) `site`'s accounts and users and re-signs the hub account with its imports.
   * Returns the JWTs the hub must be given (the site's account and the hub's), in that order.
   * Idempotent: keys that exist are kept, so a re-run does not invalidate the site's credentials.
   */
  async enrolSite(site: string): Promise<AccountJwt[]> {
    const files = this.siteFiles(site);
    if (existsSync(join(files.dir, REVOKED)))
      throw new Error(`${site} was revoked: move ${files.dir} away to enrol it again with new credentials`);
    mkdirSync(files.dir, { recursive: true, mode: 0o700 });
    const account = loadOrCreate(files.accountSeed, createAccount);
    const local = loadOrCreate(files.localSeed, createAccount);
    writeFileSync(
      files.accountJwt,
      await this.encode(AccountName.site(site), account, siteAccountClaims(site)),
    );
    writeFileSync(
      files.localJwt,
      await this.encode(AccountName.siteLocal(site), local, siteLocalAccountClaims(site)),
    );
    if (!existsSync(files.leafCreds))
      await this.issueUser(account, `${site}-leaf`, files.leafCreds, leafUserClaims());
    if (!existsSync(files.msgIdKey)) writeSecretFile(files.msgIdKey, randomBytes(32).toString('base64url'));
    if (!existsSync(files.bridgeCreds))
      await this.issueUser(local, `${site}-bridge`, files.bridgeCreds, clientUserClaims());
    await this.signHub();
    return [this.siteAccount(site), this.hub];
  }

  /**
   * Revokes every user of `site`'s account (its leaf is disconnected and cannot come back) and drops
   * its imports from the hub account; its files stay, marked revoked. Returns the JWTs the hub must
   * be given.
   */
  async revokeSite(site: string): Promise<AccountJwt[]> {
    const files = this.siteFiles(site);
    if (!existsSync(files.accountJwt) || existsSync(join(files.dir, REVOKED)))
      throw new Error(`${site} is not enrolled in ${this.dir}`);
    const account = fromSeed(readFileSync(files.accountSeed));
    // Every user issued up to now, whatever its key: the "*" revocation.
    const revocations = { '*': Math.floor(Date.now() / 1000) + 1 };
    const revoked = await this.encode(AccountName.site(site), account, siteAccountClaims(site, revocations));
    writeFileSync(files.accountJwt, revoked);
    const siteJwt = this.siteAccount(site);
    writeFileSync(join(files.dir, REVOKED), `${new Date().toISOString()}\n`);
    await this.signHub();
    return [siteJwt, this.hub];
  }

  /** Re-signs the hub account with the imports of every enrolled site. */
  private async signHub(): Promise<void> {
    const hub = fromSeed(readFileSync(this.path('HUB.nk')));
    const sites = this.sites().map((site) => ({ site, account: this.siteAccount(site).publicKey }));
    await this.signAccount(AccountName.hub, hub, hubAccountClaims(sites));
  }

  private async signAccount(name: string, kp: KeyPair, claims: Partial<Account>): Promise<void> {
    const file = name === AccountName.system ? 'SYS' : 'HUB';
    writeFileSync(this.path(`${file}.jwt`), await this.encode(name, kp, claims));
  }

  private encode(name: string, kp: KeyPair, claims: Partial<Account>): Promise<string> {
    return encodeAccount(name, kp, claims, { ...enc, signer: this.operator });
  }

  private async issueUser(
    account: KeyPair,
    name: string,
    path: string,
    claims: Parameters<typeof encodeUser>[3],
  ): Promise<void> {
    const user = createUser();
    const jwt = await encodeUser(name, user, account, claims, enc);
    writeSecretFile(path, fmtCreds(jwt, user));
  }
}

/** The key pair whose seed is in `path`, created (0600) if the file does not exist. */
function loadOrCreate(path: string, create: () => KeyPair): KeyPair {
  if (existsSync(path)) return fromSeed(readFileSync(path));
  const kp = create();
  writeSecretFile(path, kp.getSeed());
  return kp;
}
