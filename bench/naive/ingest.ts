/** The ingest a user would write: a Point per reading through the client's WriteApi, flush, then ack. */
import { InfluxDB, Point } from '@influxdata/influxdb-client';
import { naiveDrain, settings } from './loop.ts';

const writeApi = new InfluxDB({ url: settings.storeUrl, token: '' }).getWriteApi(
  'switchyard',
  'switchyard',
  'ms',
  {
    batchSize: 1_000_000,
    flushInterval: 0,
  },
);

/** Numbers become float fields (nested objects with their path), text becomes string fields. */
function addFields(point: Point, prefix: string, values: Record<string, unknown>): void {
  for (const [k, v] of Object.entries(values)) {
    if (typeof v === 'number') point.floatField(prefix + k, v);
    else if (typeof v === 'string' && k !== 'ts') point.stringField(prefix + k, v);
    else if (v && typeof v === 'object') addFields(point, `${prefix}${k}_`, v as Record<string, unknown>);
  }
}

await naiveDrain(async (batch) => {
  for (const m of batch) {
    const [, site, device, kind] = m.subject.split('.');
    const body = m.json<Record<string, unknown> & { ts: string }>();
    const point = new Point(`naive_${kind}`).tag('site', site!).tag('device', device!);
    addFields(point, '', body);
    writeApi.writePoint(point.timestamp(new Date(body.ts)));
  }
  await writeApi.flush();
});
await writeApi.close();
