/**
 * The site's MQTT broker: mosquitto, its config and (with auth) its users and ACL.
 *
 * With auth (the stack's default), the broker's directory holds, all mode 0600:
 * - `passwd`: mosquitto's password file (PBKDF2-SHA512 hashes, as `mosquitto_passwd` writes them);
 * - `acl`: the bridge's user alone reads `bsu/#`; every other user writes only `bsu/<its name>/#`;
 * - `bridge-password`: the bridge's password in plain text, for its env file;
 * - `devices.json`: the enrolled devices' passwords in plain text (simulate/devices-file.ts), for
 *   the stack's simulated devices.
 * `passwd` is always rewritten from the last two, so the plain-text files are the one record.
 */
import { pbkdf2Sync, randomBytes } from 'node:crypto';
import {
  chmodSync,
  closeSync,
  existsSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { UsageError } from '../lib/errors.ts';
import { readDevicesFile, writeDevicesFile } from '../simulate/devices-file.ts';
import { findBinary, HOST, prepare, ServerRole, type ServerSpec } from './server-specs.ts';

/** The MQTT user of the site's bridge: the only user that may read devices' topics. */
export const BRIDGE_MQTT_USERNAME = 'switchyard-bridge';

/** A device id: one MQTT topic level, one NATS subject token, a mosquitto user name. */
export const DEVICE_ID_PATTERN = /^[A-Za-z0-9_-]{1,128}$/;

/** Files of a broker with auth, in its directory. */
export const BrokerFile = {
  passwords: 'passwd',
  acl: 'acl',
  bridgePassword: 'bridge-password',
  devices: 'devices.json',
} as const;

export interface MosquittoOptions {
  name: string;
  site?: string;
  dir: string;
  port: number;
  /**
   * Password file and per-device ACL, nobody anonymous (default true). False: anyone may connect
   * and publish anywhere, for tests and benchmarks of a plain broker.
   */
  auth?: boolean;
  /** Largest MQTT packet accepted (default MQTT_MAX_PACKET_BYTES); 0: mosquitto's own (none). */
  maxPacketBytes?: number;
}

/**
 * The site nats-server's max_payload (1 MiB) less room for the headers the bridge adds: a packet
 * the broker accepts always fits the server. Larger ones are refused at the broker.
 */
export const MQTT_MAX_PACKET_BYTES = 1024 * 1024 - 4096;
/** What the broker queues for the bridge while it is down, beside the message count. */
export const MQTT_MAX_QUEUED_BYTES = 256 * 1024 * 1024;

/** A mosquitto broker with persistence (queued QoS 1 messages of persistent sessions survive). */
export function mosquittoSpec(o: MosquittoOptions): ServerSpec {
  const dataDir = join(o.dir, 'data');
  prepare(dataDir, o.dir);
  const auth = o.auth ?? true;
  if (auth) prepareUsers(o.dir);
  const configFile = join(o.dir, 'mosquitto.conf');
  writeFileSync(
    configFile,
    [
      // As root mosquitto drops to user "mosquitto"; stay root so it can write the dirs it was given.
      `user root`,
      `listener ${o.port} ${HOST}`,
      ...(auth
        ? [
            `allow_anonymous false`,
            `password_file ${join(o.dir, BrokerFile.passwords)}`,
            `acl_file ${join(o.dir, BrokerFile.acl)}`,
          ]
        : [`allow_anonymous true`]),
      `persistence true`,
      `persistence_location ${dataDir}/`,
      `autosave_interval 5`,
      // A site keeps queueing for the bridge while it is down: well above the default of 1000.
      `max_queued_messages 1000000`,
      // Bounded in bytes too, so that queued large payloads cannot fill the gateway's memory.
      `max_queued_bytes ${MQTT_MAX_QUEUED_BYTES}`,
      ...((o.maxPacketBytes ?? MQTT_MAX_PACKET_BYTES) > 0
        ? [`max_packet_size ${o.maxPacketBytes ?? MQTT_MAX_PACKET_BYTES}`]
        : []),
      // The bridge acks in a window; the default of 20 in flight per client would throttle it.
      `max_inflight_messages 1000`,
      `log_dest stdout`,
      `log_type error`,
      `log_type warning`,
      '',
    ].join('\n'),
  );
  return {
    name: o.name,
    role: ServerRole.siteMqtt,
    ...(o.site ? { site: o.site } : {}),
    command: findBinary('mosquitto'),
    args: ['-c', configFile],
    url: `mqtt://${HOST}:${o.port}`,
    dataDir,
    logFile: join(o.dir, 'mosquitto.log'),
  };
}

/** An MQTT user: its name and password. */
export interface MqttUser {
  username: string;
  password: string;
  /** A file (mode 0600) holding just the password, for a `*_PASSWORD_FILE` variable. */
  passwordFile?: string;
}

/** The directory of a broker made by `mosquittoSpec` (its config, users and log). */
export const brokerDir = (broker: Pick<ServerSpec, 'logFile'>): string => dirname(broker.logFile);

/** Whether the broker was made with auth (it has a password file). */
export const brokerHasAuth = (broker: Pick<ServerSpec, 'logFile'>): boolean =>
  existsSync(join(brokerDir(broker), BrokerFile.passwords));

/**
 * The user the bridge reads the broker as (the only one allowed to read), as `mosquittoSpec`
 * wrote it; empty while the broker runs without users.
 */
export function bridgeMqttUser(broker: Pick<ServerSpec, 'dataDir' | 'logFile'>): MqttUser {
  const passwordFile = join(brokerDir(broker), BrokerFile.bridgePassword);
  if (!existsSync(passwordFile)) return { username: '', password: '' };
  return {
    username: BRIDGE_MQTT_USERNAME,
    password: readFileSync(passwordFile, 'utf8').trim(),
    passwordFile,
  };
}

/** Path of the devices file of a broker with auth (the enrolled devices' passwords). */
export const devicesFileOf = (broker: Pick<ServerSpec, 'logFile'>): string =>
  join(brokerDir(broker), BrokerFile.devices);

/** A new random password: 144 bits, in characters that need no quoting in a shell or env file. */
export const newPassword = (): string => randomBytes(18).toString('base64url');

// mosquitto 2.0's own format ($7$: PBKDF2-HMAC-SHA512, 101 iterations, 12-byte salt, 64-byte hash):
// written here so that no password is ever passed on a command line (`mosquitto_passwd -b`).
const PBKDF2_ITERATIONS = 101;

/** One line of a mosquitto password file for `username`. */
export function passwordFileLine(username: string, password: string): string {
  const salt = randomBytes(12);
  const hash = pbkdf2Sync(password, salt, PBKDF2_ITERATIONS, 64, 'sha512');
  return `${username}:$7$${PBKDF2_ITERATIONS}$${salt.toString('base64')}$${hash.toString('base64')}`;
}

/** The ACL: the bridge reads every device's topics; a device writes only under its own id. */
export const ACL_TEXT = [
  '# The bridge reads every device; it is the only user that may read.',
  `user ${BRIDGE_MQTT_USERNAME}`,
  'topic read bsu/#',
  '',
  '# Every user (a device: its user name is its id) may write under its own id only.',
  'pattern write bsu/%u/#',
  '',
].join('\n');

function writePrivate(path: string, text: string): void {
  writeFileSync(`${path}.tmp`, text, { mode: 0o600 });
  chmodSync(`${path}.tmp`, 0o600);
  renameSync(`${path}.tmp`, path);
}

/** Creates the bridge's password if missing (a broker keeps its users across `stack up`s), then the files. */
function prepareUsers(dir: string): void {
  const bridgeFile = join(dir, BrokerFile.bridgePassword);
  if (!existsSync(bridgeFile)) writePrivate(bridgeFile, `${newPassword()}\n`);
  writePrivate(join(dir, BrokerFile.acl), ACL_TEXT);
  writePasswordFile(dir, enrolledDevices(dir));
}

/** The devices enrolled at the broker in `dir`: id → password. */
export function enrolledDevices(dir: string): Record<string, string> {
  const file = join(dir, BrokerFile.devices);
  return existsSync(file) ? readDevicesFile(file) : {};
}

function writePasswordFile(dir: string, devices: Record<string, string>): void {
  const bridge = readFileSync(join(dir, BrokerFile.bridgePassword), 'utf8').trim();
  const lines = [
    passwordFileLine(BRIDGE_MQTT_USERNAME, bridge),
    ...Object.entries(devices).map(([id, password]) => passwordFileLine(id, password)),
  ];
  writePrivate(join(dir, BrokerFile.passwords), `${lines.join('\n')}\n`);
}

/** Holds an exclusive lock on a broker's users while `fn` runs (two `add-device` at once). */
function withUsersLock<T>(dir: string, fn: () => T): T {
  const lock = join(dir, 'users.lock');
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      closeSync(openSync(lock, 'wx', 0o600));
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      if (Date.now() > deadline)
        throw new UsageError(`${lock} has been held for 10 s: remove it if no add-device is running`);
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
    }
  }
  try {
    return fn();
  } finally {
    rmSync(lock, { force: true });
  }
}

/** What enrolling did to one device. */
export const EnrolChange = {
  /** A new user with a new password. */
  added: 'added',
  /** Enrolled already: its password is kept (enrolling is idempotent). */
  kept: 'kept',
  /** Enrolled already, and given a new password (`rotate`): the old one stops working. */
  rotated: 'rotated',
} as const;
export type EnrolChange = (typeof EnrolChange)[keyof typeof EnrolChange];

/** A device's MQTT user after enrolling. */
export interface DeviceEnrolment {
  device: string;
  password: string;
  change: EnrolChange;
}

/** Throws a UsageError unless `device` is a valid device id that is not a reserved user name. */
export function checkDeviceId(device: string): void {
  if (!DEVICE_ID_PATTERN.test(device))
    throw new UsageError(`invalid device id "${device}": 1 to 128 letters, digits, - and _`);
  if (device === BRIDGE_MQTT_USERNAME)
    throw new UsageError(`"${device}" is the bridge's user name, not a device id`);
}

/**
 * Enrols `devices` as users of the broker in `dir` (made by `mosquittoSpec` with auth): a device
 * already enrolled keeps its password unless `rotate`. Rewrites `devices.json` and `passwd`; the
 * running broker sees them only once it is sent SIGHUP (stack/verbs.ts `addDevice`).
 */
export function enrolDevices(
  dir: string,
  devices: readonly string[],
  options: { rotate?: boolean } = {},
): DeviceEnrolment[] {
  for (const device of devices) checkDeviceId(device);
  if (!existsSync(join(dir, BrokerFile.passwords)))
    throw new UsageError(`the broker in ${dir} runs without users (allow_anonymous): nothing to enrol`);
  return withUsersLock(dir, () => {
    const known = enrolledDevices(dir);
    const out = devices.map((device): DeviceEnrolment => {
      const old = known[device];
      if (old !== undefined && !options.rotate) return { device, password: old, change: EnrolChange.kept };
      known[device] = newPassword();
      return {
        device,
        password: known[device],
        change: old === undefined ? EnrolChange.added : EnrolChange.rotated,
      };
    });
    if (out.some((e) => e.change !== EnrolChange.kept)) {
      writeDevicesFile(join(dir, BrokerFile.devices), known);
      writePasswordFile(dir, known);
    }
    return out;
  });
}

/**
 * Removes `device`'s user from the broker in `dir`; false if it was not enrolled. As with
 * `enrolDevices`, the running broker sees it once sent SIGHUP (which also disconnects the device).
 */
export function removeDeviceUser(dir: string, device: string): boolean {
  checkDeviceId(device);
  return withUsersLock(dir, () => {
    const known = enrolledDevices(dir);
    if (known[device] === undefined) return false;
    delete known[device];
    writeDevicesFile(join(dir, BrokerFile.devices), known);
    writePasswordFile(dir, known);
    return true;
  });
}
