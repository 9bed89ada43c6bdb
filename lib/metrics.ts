/** Metric helpers for hot paths. */
import { Counter, type Metric, type Registry } from 'prom-client';

/**
 * A counter with one label whose hot path is a Map increment: prom-client hashes the label set on
 * every `inc`, which at tens of thousands of messages per second is measurable. The totals are
 * handed to prom-client when /metrics is scraped.
 */
export class LabelledCount {
  private readonly counts = new Map<string, number>();

  constructor(options: { name: string; help: string; labelName: string; registry: Registry }) {
    const counts = this.counts;
    new Counter({
      name: options.name,
      help: options.help,
      labelNames: [options.labelName],
      registers: [options.registry],
      collect() {
        this.reset();
        for (const [value, n] of counts) this.inc({ [options.labelName]: value }, n);
      },
    });
  }

  add(labelValue: string, n = 1): void {
    this.counts.set(labelValue, (this.counts.get(labelValue) ?? 0) + n);
  }

  /** Current total for one label value (tests, the dev view). */
  get(labelValue: string): number {
    return this.counts.get(labelValue) ?? 0;
  }
}

/**
 * The metric already registered under `name`, or a new one from `make`. Several consumers (or a
 * consumer and its sink) may share one registry in a process; each metric must exist once.
 */
export function registered<M extends Metric<string>>(registry: Registry, name: string, make: () => M): M {
  return (registry.getSingleMetric(name) as M | undefined) ?? make();
}

/** A labelled counter, registered once per registry. */
export function registeredCounter<L extends string>(
  registry: Registry,
  name: string,
  help: string,
  labelNames: L[],
): Counter<L> {
  return registered(registry, name, () => new Counter<L>({ name, help, labelNames, registers: [registry] }));
}
