/** The site's MQTT broker: mosquitto, its config and (with auth) its users and ACL. */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { findBinary, HOST, prepare, ServerRole, type ServerSpec } from './server-specs.ts';

export interface MosquittoOptions {
  name: string;
  site?: string;
  dir: string;
  port: number;
}

/** A mosquitto broker with persistence (queued QoS 1 messages of persistent sessions survive). */
export function mosquittoSpec(o: MosquittoOptions): ServerSpec {
  const dataDir = join(o.dir, 'data');
  prepare(dataDir, o.dir);
  const configFile = join(o.dir, 'mosquitto.conf');
  writeFileSync(
    configFile,
    [
      // As root mosquitto drops to user "mosquitto"; stay root so it can write the dirs it was given.
      `user root`,
      `listener ${o.port} ${HOST}`,
      `allow_anonymous true`,
      `persistence true`,
      `persistence_location ${dataDir}/`,
      `autosave_interval 5`,
      // A site keeps queueing for the bridge while it is down: well above the default of 1000.
      `max_queued_messages 1000000`,
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
}

/**
 * The user the bridge reads the broker as (the only one allowed to read), as `mosquittoSpec`
 * wrote it; empty while the broker runs without users.
 */
export function bridgeMqttUser(_broker: Pick<ServerSpec, 'dataDir' | 'logFile'>): MqttUser {
  return { username: '', password: '' };
}
