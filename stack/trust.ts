/**
 * The local stack runs secure by default, as production does: an operator with one account per
 * site (cloud/accounts/), a CA made with openssl, TLS on the hub's client and leaf ports with the
 * hub verifying each site's certificate, and a Redis ACL user. Everything lives under the stack's
 * DIR; secrets are 0600 files, named (never copied) by the env files.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { OperatorStore } from '../cloud/accounts/operator-store.ts';
import { ensureCa, issueCertificate, type CertificateFiles } from '../lib/certificates.ts';
import { writeSecretFile } from '../lib/secret-file.ts';

/** What the stack's servers and clients are given to trust each other (recorded in stack.json). */
export interface StackTrust {
  /** The operator's directory (keys and JWTs of every account). */
  operatorDir: string;
  /** The CA every TLS peer checks the other against. */
  caFile: string;
  /** The hub's server certificate (client and leaf ports). */
  hubCert: CertificateFiles;
  /** Per site: its leaf's client certificate, its leaf's and its bridge's credentials. */
  sites: Record<
    string,
    { leafCert: CertificateFiles; leafCreds: string; bridgeCreds: string; msgIdKeyFile: string }
  >;
  /** Credentials of the hub account's user (consumers, operators' commands). */
  cloudCreds: string;
  /** The Redis ACL user of the cloud, and the file holding its password. */
  redisUser: string;
  redisPasswordFile: string;
}

/** Names the hub's certificate is valid for. */
const HUB_NAMES = ['127.0.0.1', 'localhost'];
export const REDIS_USER = 'switchyard';

/** Makes the operator, its accounts, the CA and the certificates of a stack of `sites` in `dir`. */
export async function prepareStackTrust(dir: string, sites: readonly string[]): Promise<StackTrust> {
  const store = await OperatorStore.open(join(dir, 'operator'));
  const ca = ensureCa(join(dir, 'ca'), 'Switchyard local stack CA');
  const certs = join(dir, 'ca', 'issued');
  const hubCert = issueCertificate(ca, certs, 'hub', {
    commonName: 'hub',
    usage: 'server',
    names: HUB_NAMES,
  });
  const trust: StackTrust = {
    operatorDir: store.dir,
    caFile: ca.cert,
    hubCert,
    sites: {},
    cloudCreds: store.cloudCreds,
    redisUser: REDIS_USER,
    redisPasswordFile: join(dir, 'redis', 'password'),
  };
  for (const site of sites) {
    await store.enrolSite(site);
    const files = store.siteFiles(site);
    trust.sites[site] = {
      leafCert: issueCertificate(ca, certs, `leaf-${site}`, { commonName: site, usage: 'client' }),
      leafCreds: files.leafCreds,
      bridgeCreds: files.bridgeCreds,
      msgIdKeyFile: files.msgIdKey,
    };
  }
  mkdirSync(join(dir, 'redis'), { recursive: true });
  writeSecretFile(trust.redisPasswordFile, randomBytes(24).toString('base64url'));
  return trust;
}
