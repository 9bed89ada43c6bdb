/**
 * `npm run bench [-- SUITE ...]`: runs the benchmarks against real servers on this machine and
 * writes the figures to bench/results.json (and a table to stdout). Suites: edge, consumers (both by
 * default), replay, fleet (`--sites 10,25,50`), sources (`--sites 250,500,...`), archive-sites
 * (`--sites 10,100,1000`); `--quick` runs
 * each with fewer messages and shorter runs. docs/benchmarks.md explains the figures.
 */
import { writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { parseArgs } from 'node:util';
import { benchArchiveSites } from './archive-sites.ts';
import { benchConsumers } from './consumers.ts';
import { benchEdge } from './edge.ts';
import { benchFleet } from './fleet.ts';
import { benchHubSources } from './hub-sources.ts';
import { benchReplay } from './replay.ts';
import { met, type Figure } from './support/common.ts';

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    out: { type: 'string', default: new URL('./results.json', import.meta.url).pathname },
    quick: { type: 'boolean', default: false },
    sites: { type: 'string' },
  },
});
/** `--sites N,N,...`, or the suite's own steps. */
const siteCounts = (steps: number[]): number[] => values.sites?.split(',').map(Number) ?? steps;
const suites = positionals.length > 0 ? positionals : ['edge', 'consumers'];
const log = (line: string): void => void process.stderr.write(`${line}\n`);

const figures: Figure[] = [];
const started = new Date();
for (const suite of suites) {
  if (suite === 'edge') {
    figures.push(
      ...(await benchEdge({
        messages: values.quick ? 10_000 : 40_000,
        cutS: values.quick ? 10 : 60,
        memoryS: values.quick ? 5 : 20,
        log,
      })),
    );
  } else if (suite === 'consumers') {
    figures.push(
      ...(await benchConsumers({
        // The archive writes batches of 5,000 and holds up to four at once: --quick still needs
        // several times that, so that filling the pipeline is a small part of the run.
        messages: values.quick ? 40_000 : 100_000,
        e2eS: values.quick ? 8 : 20,
        e2eRate: 1000,
        log,
      })),
    );
  } else if (suite === 'replay') {
    figures.push(
      ...(await benchReplay({
        messages: values.quick ? 20_000 : 100_000,
        dayUnits: values.quick ? 50 : 500,
        log,
      })),
    );
  } else if (suite === 'fleet') {
    figures.push(
      ...(await benchFleet({
        siteCounts: siteCounts([10, 25, 50]),
        ratePerSite: 20,
        steadyS: values.quick ? 10 : 30,
        cutS: values.quick ? 15 : 60,
        log,
      })),
    );
  } else if (suite === 'sources') {
    figures.push(
      ...(await benchHubSources({
        siteCounts: siteCounts(values.quick ? [250, 500] : [250, 500, 1000, 1500, 2000, 3000]),
        idleS: values.quick ? 5 : 10,
        log,
      })),
    );
  } else if (suite === 'archive-sites') {
    figures.push(
      ...(await benchArchiveSites({
        siteCounts: siteCounts([10, 100, 1000]),
        messages: values.quick ? 20_000 : 50_000,
        log,
      })),
    );
  } else {
    log(`unknown suite ${suite}: use edge, consumers, replay, fleet, sources or archive-sites`);
    process.exit(2);
  }
}

const machine = {
  cpus: cpus().length,
  cpuModel: cpus()[0]?.model,
  memoryGiB: Math.round(totalmem() / 1024 ** 3),
  node: process.version,
};
writeFileSync(
  values.out!,
  `${JSON.stringify({ started: started.toISOString(), machine, quick: values.quick, figures }, null, 2)}\n`,
);

const rows = figures.map((f) => [
  f.stage,
  f.name,
  `${f.value} ${f.unit}`,
  f.baseline ? `${f.baseline.value} (${f.baseline.name})` : '',
  f.ratio !== undefined ? f.ratio.toFixed(2) : '',
  f.target ? `${f.target.op} ${f.target.value}${f.target.of === 'ratio' ? ' ×' : ` ${f.unit}`}` : '',
  met(f) === undefined ? '' : met(f) ? 'met' : 'NOT MET',
]);
const header = ['stage', 'figure', 'value', 'baseline', 'ratio', 'target', ''];
process.stdout.write(`| ${header.join(' | ')} |\n|${header.map(() => '---').join('|')}|\n`);
for (const r of rows) process.stdout.write(`| ${r.join(' | ')} |\n`);
for (const f of figures) if (f.note) process.stdout.write(`- ${f.name}: ${f.note}\n`);
log(`figures written to ${values.out}`);
