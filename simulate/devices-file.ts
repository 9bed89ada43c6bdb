/**
 * A devices file: the MQTT passwords of simulated devices, one user per device (the user name is
 * the device id), as `switchyard stack add-device` keeps them for a site (`DIR/mqtt-<site>/devices.json`)
 * and `switchyard simulate --devices-file` reads them. It holds passwords in plain text: mode 0600.
 */
import { chmodSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { ConfigError } from '../lib/errors.ts';

/** The content of a devices file. */
export interface DevicesFile {
  version: 1;
  /** Device id (its MQTT user name) → its MQTT password. */
  devices: Record<string, string>;
}

/**
 * The device passwords in `path`; a ConfigError (exit 2) naming the file when it cannot be read or
 * is not a devices file. The passwords never appear in the error.
 */
export function readDevicesFile(path: string): Record<string, string> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError([`devicesFile: cannot read ${path} (${(err as NodeJS.ErrnoException).code})`]);
  }
  let parsed: Partial<DevicesFile>;
  try {
    parsed = JSON.parse(text) as Partial<DevicesFile>;
  } catch {
    throw new ConfigError([`devicesFile: ${path} is not JSON`]);
  }
  const devices = parsed.devices;
  if (
    parsed.version !== 1 ||
    typeof devices !== 'object' ||
    devices === null ||
    Object.values(devices).some((p) => typeof p !== 'string' || p === '')
  )
    throw new ConfigError([`devicesFile: ${path} is not a devices file ({"version":1,"devices":{…}})`]);
  return { ...devices };
}

/** Writes `devices` to `path` (mode 0600) through a rename, so a reader never sees half a file. */
export function writeDevicesFile(path: string, devices: Record<string, string>): void {
  const sorted = Object.fromEntries(Object.entries(devices).sort(([a], [b]) => a.localeCompare(b)));
  const body: DevicesFile = { version: 1, devices: sorted };
  writeFileSync(`${path}.tmp`, `${JSON.stringify(body, null, 2)}\n`, { mode: 0o600 });
  // The mode of writeFileSync applies only to a file it creates.
  chmodSync(`${path}.tmp`, 0o600);
  renameSync(`${path}.tmp`, path);
}
