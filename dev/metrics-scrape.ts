/**
 * Reading the `/metrics` endpoint of a Switchyard process: the Prometheus text format parsed just
 * enough for counters and gauges, and rates computed from successive scrapes.
 */

/** One sample line: `name{labels} value`. */
export interface MetricSample {
  name: string;
  labels: Readonly<Record<string, string>>;
  value: number;
}

const LABEL = /([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

function parseValue(text: string): number {
  if (text === '+Inf') return Infinity;
  if (text === '-Inf') return -Infinity;
  return Number(text);
}

/**
 * The samples of a Prometheus text exposition (comments and histogram buckets included as lines;
 * timestamps ignored). Lines that do not parse are skipped: a scrape is for display, not proof.
 */
export function parsePrometheusText(text: string): MetricSample[] {
  const samples: MetricSample[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const brace = line.indexOf('{');
    const space = line.indexOf(' ');
    let name: string;
    let rest: string;
    const labels: Record<string, string> = {};
    if (brace >= 0 && (space < 0 || brace < space)) {
      const close = line.lastIndexOf('}');
      if (close < brace) continue;
      name = line.slice(0, brace);
      for (const m of line.slice(brace + 1, close).matchAll(LABEL))
        labels[m[1]!] = m[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
      rest = line.slice(close + 1).trim();
    } else {
      if (space < 0) continue;
      name = line.slice(0, space);
      rest = line.slice(space + 1).trim();
    }
    const value = parseValue(rest.split(/\s+/)[0] ?? '');
    if (!Number.isNaN(value)) samples.push({ name, labels, value });
  }
  return samples;
}

/** The samples of one scrape, with sums by metric name. */
export class MetricsSnapshot {
  constructor(
    readonly samples: readonly MetricSample[],
    /** When the scrape answered (epoch ms). */
    readonly atMs: number,
  ) {}

  /**
   * Sum of every sample of `name` whose labels include `match`; undefined when there is none
   * (a counter not incremented yet is absent when it has labels).
   */
  sum(name: string, match: Readonly<Record<string, string>> = {}): number | undefined {
    let total: number | undefined;
    for (const s of this.samples) {
      if (s.name !== name) continue;
      if (Object.entries(match).some(([k, v]) => s.labels[k] !== v)) continue;
      total = (total ?? 0) + s.value;
    }
    return total;
  }
}

/** GETs `${opsUrl}/metrics`; undefined when the process does not answer within `timeoutMs`. */
export async function scrapeMetrics(opsUrl: string, timeoutMs = 1000): Promise<MetricsSnapshot | undefined> {
  try {
    const res = await fetch(`${opsUrl}/metrics`, { signal: AbortSignal.timeout(timeoutMs) });
    if (!res.ok) return undefined;
    return new MetricsSnapshot(parsePrometheusText(await res.text()), Date.now());
  } catch {
    return undefined;
  }
}

/**
 * Per-second rate of a counter over a sliding window of observations. A counter that goes down
 * belongs to a restarted process: the window starts again from there.
 */
export class RateMeter {
  private readonly points: { atMs: number; value: number }[] = [];

  /** @param windowMs how far back the rate looks (ms): longer is smoother, shorter reacts faster. */
  constructor(private readonly windowMs = 5000) {}

  add(atMs: number, value: number): void {
    const last = this.points.at(-1);
    if (last && value < last.value) this.points.length = 0;
    this.points.push({ atMs, value });
    // Keep one point at or beyond the window's start, so the rate spans the whole window.
    while (this.points.length > 2 && atMs - this.points[1]!.atMs >= this.windowMs) this.points.shift();
  }

  /** Forget the history (the process is gone). */
  reset(): void {
    this.points.length = 0;
  }

  /** Units per second over the window; 0 until there are two observations. */
  get perS(): number {
    const first = this.points[0];
    const last = this.points.at(-1);
    if (!first || !last || last.atMs <= first.atMs) return 0;
    return ((last.value - first.value) * 1000) / (last.atMs - first.atMs);
  }
}

/**
 * A counter summed across the restarts of the process that reports it: each process starts its
 * counters at 0, and the operator wants the total since dev started.
 */
export class CounterAcrossRestarts {
  private offset = 0;
  private last = 0;
  private generation: unknown;

  /** `value` as reported by the process `generation` (its PID). */
  observe(generation: unknown, value: number): void {
    if (generation !== this.generation || value < this.last) {
      this.offset += this.last;
      this.last = 0;
      this.generation = generation;
    }
    this.last = value;
  }

  get total(): number {
    return this.offset + this.last;
  }
}
