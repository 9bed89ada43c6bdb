/**
 * The bridge a user would write with MQTT.js and nats.js alone: a persistent QoS 1 session, each
 * message published to JetStream with a message id from its payload, and MQTT.js's PUBACK only once
 * the PubAck is in (`handleMessage`'s callback), one message at a time. No validation beyond
 * parsing, no invalid stream, no ordering across a failure, no metrics. Settings come as one JSON
 * argument; the result is one JSON line (NaiveResult) over the window from the first message
 * stored to the last, as bench/edge.ts measures the bridge.
 */
import { jetstream } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import mqtt from 'mqtt';
import type { NaiveResult } from './loop.ts';

const settings = JSON.parse(process.argv[2] ?? '{}') as {
  mqttUrl: string;
  clientId: string;
  natsUrl: string;
  site: string;
  messages: number;
};

const nc = await connect({ servers: settings.natsUrl });
const js = jetstream(nc);
let stored = 0;
let window: { ms: number; cpu: NodeJS.CpuUsage } | undefined;
const result = await new Promise<NaiveResult>((resolve) => {
  const client = mqtt.connect(settings.mqttUrl, {
    clientId: settings.clientId,
    clean: false,
    manualConnect: true,
  });
  client.handleMessage = (packet, callback) => {
    const [, device, kind] = packet.topic.split('/');
    const payload = packet.payload as Buffer;
    const reading = JSON.parse(payload.toString()) as { seq: number; ts: number };
    js.publish(`naive.${settings.site}.${device}.${kind}`, payload, {
      msgID: `${settings.site}.${device}.${kind}.${reading.seq}.${reading.ts}`,
    }).then(
      () => {
        callback();
        stored++;
        window ??= { ms: performance.now(), cpu: process.cpuUsage() };
        if (stored === settings.messages) {
          const cpu = process.cpuUsage(window.cpu);
          resolve({ messages: stored - 1, ms: performance.now() - window.ms, cpuUs: cpu.user + cpu.system });
          client.end();
        }
      },
      (err: unknown) => callback(err as Error),
    );
  };
  client.connect();
});
await nc.close();
process.stdout.write(`${JSON.stringify(result)}\n`);
