/** The monitor a user would write: each reading's fields into the device's Redis hash, then ack. */
import { createClient } from 'redis';
import { naiveDrain, settings } from './loop.ts';

const redis = createClient({ url: settings.storeUrl });
await redis.connect();

await naiveDrain(async (batch) => {
  // node-redis pipelines the commands of one tick.
  await Promise.all(
    batch.map((m) => {
      const [, site, device, kind] = m.subject.split('.');
      const fields: Record<string, string> = {};
      for (const [k, v] of Object.entries(m.json<Record<string, unknown>>()))
        fields[`${kind}.${k}`] = typeof v === 'object' ? JSON.stringify(v) : String(v);
      return redis.hSet(`naive:${site}:${device}`, fields);
    }),
  );
});
await redis.quit();
