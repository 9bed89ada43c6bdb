/**
 * A small certificate authority made with `openssl` (Node has no API that issues X.509
 * certificates): a CA, server certificates for the names a server is reached by, and client
 * certificates for mutual TLS. Keys are written 0600.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Where a certificate and its key are (PEM files). */
export interface CertificateFiles {
  cert: string;
  key: string;
}

/** A CA's files; `cert` is what clients and servers are given to verify each other. */
export type CaFiles = CertificateFiles;

const DAYS = '825';

function openssl(args: string[], cwd: string): void {
  try {
    execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim();
    throw new Error(`openssl ${args[0]} failed${stderr ? `: ${stderr.split('\n')[0]}` : ''}`, { cause: err });
  }
}

/** An EC P-256 key in `path`, readable by its owner only. */
function newKey(path: string, cwd: string): void {
  openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', path], cwd);
  chmodSync(path, 0o600);
}

/** Creates a CA in `dir` (`ca.pem`, `ca-key.pem`), or returns the one already there. */
export function ensureCa(dir: string, name = 'Switchyard CA'): CaFiles {
  mkdirSync(dir, { recursive: true });
  const files = { cert: join(dir, 'ca.pem'), key: join(dir, 'ca-key.pem') };
  if (existsSync(files.cert) && existsSync(files.key)) return files;
  newKey(files.key, dir);
  openssl(
    [
      'req',
      '-x509',
      '-new',
      '-key',
      files.key,
      '-sha256',
      '-days',
      DAYS,
      '-subj',
      `/CN=${name}`,
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
      '-out',
      files.cert,
    ],
    dir,
  );
  return files;
}

export interface IssueOptions {
  /** Common name: the site id of a leaf's client certificate, the server's name otherwise. */
  commonName: string;
  /** `server` certificates carry `names` as subject alternative names. */
  usage: 'server' | 'client';
  /** DNS names and IP addresses the server is reached by (server certificates). */
  names?: string[];
}

/** Issues `<dir>/<file>.pem` and `<dir>/<file>-key.pem`, signed by `ca`. */
export function issueCertificate(ca: CaFiles, dir: string, file: string, o: IssueOptions): CertificateFiles {
  mkdirSync(dir, { recursive: true });
  const files = { cert: join(dir, `${file}.pem`), key: join(dir, `${file}-key.pem`) };
  newKey(files.key, dir);
  const csr = join(dir, `${file}.csr`);
  openssl(['req', '-new', '-key', files.key, '-subj', `/CN=${o.commonName}`, '-out', csr], dir);
  const ext = join(dir, `${file}.ext`);
  const sans = (o.names ?? []).map((n) => (/^[\d.]+$|:/.test(n) ? `IP:${n}` : `DNS:${n}`));
  writeFileSync(
    ext,
    [
      'basicConstraints=critical,CA:FALSE',
      'keyUsage=critical,digitalSignature,keyEncipherment',
      `extendedKeyUsage=${o.usage === 'server' ? 'serverAuth' : 'clientAuth'}`,
      ...(sans.length > 0 ? [`subjectAltName=${sans.join(',')}`] : []),
      '',
    ].join('\n'),
  );
  openssl(
    [
      'x509',
      '-req',
      '-in',
      csr,
      '-CA',
      ca.cert,
      '-CAkey',
      ca.key,
      '-CAcreateserial',
      '-sha256',
      '-days',
      DAYS,
      '-extfile',
      ext,
      '-out',
      files.cert,
    ],
    dir,
  );
  return files;
}
