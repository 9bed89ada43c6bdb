/**
 * Progress of long CLI work (replay, backfill, redrive): a bar with done/total, rate and time left
 * on a terminal; one JSON line every `everyMs` otherwise (logs, CI, Kubernetes jobs). Both go to
 * stderr, so a command's report on stdout stays machine-readable.
 */
import cliProgress from 'cli-progress';

export interface Progress {
  /** Adds `n` to what is done. */
  increment(n: number): void;
  /** The total may only be known (or grow) once the work has started. */
  setTotal(total: number): void;
  /** Draws the last state and releases the terminal. */
  stop(): void;
}

export interface ProgressOptions {
  /** What is being done, e.g. `replay → ingest`. */
  label: string;
  /** Units of the counts, e.g. `msgs`. */
  unit: string;
  total: number;
  /** Where it goes (default: stderr). */
  stream?: NodeJS.WriteStream;
  /** Interval of the JSON lines when the stream is not a terminal, in ms (default 5 s). */
  everyMs?: number;
}

export function createProgress(options: ProgressOptions): Progress {
  const stream = options.stream ?? process.stderr;
  return stream.isTTY ? terminalBar(options, stream) : jsonLines(options, stream);
}

function terminalBar(options: ProgressOptions, stream: NodeJS.WriteStream): Progress {
  const bar = new cliProgress.SingleBar(
    {
      format: `${options.label} [{bar}] {percentage}% | {value}/{total} ${options.unit} | {rate}/s | eta {eta_formatted}`,
      stream,
      hideCursor: true,
      etaBuffer: 50,
      fps: 5,
    },
    cliProgress.Presets.shades_classic,
  );
  const startedMs = performance.now();
  let done = 0;
  const rate = (): string =>
    String(Math.round(done / Math.max(0.001, (performance.now() - startedMs) / 1000)));
  bar.start(options.total, 0, { rate: '0' });
  return {
    increment: (n) => {
      done += n;
      bar.increment(n, { rate: rate() });
    },
    setTotal: (total) => bar.setTotal(total),
    stop: () => bar.stop(),
  };
}

function jsonLines(options: ProgressOptions, stream: NodeJS.WriteStream): Progress {
  const startedMs = performance.now();
  let done = 0;
  let total = options.total;
  const line = (final: boolean): void => {
    const seconds = (performance.now() - startedMs) / 1000;
    const rate = done / Math.max(0.001, seconds);
    const left = total > done && rate > 0 ? (total - done) / rate : 0;
    stream.write(
      `${JSON.stringify({
        progress: options.label,
        done,
        total,
        unit: options.unit,
        ratePerS: Math.round(rate),
        elapsedS: Math.round(seconds),
        ...(final ? { final: true } : { etaS: Math.round(left) }),
      })}\n`,
    );
  };
  const timer = setInterval(() => line(false), options.everyMs ?? 5_000);
  timer.unref();
  let stopped = false;
  return {
    increment: (n) => void (done += n),
    setTotal: (t) => void (total = t),
    stop: () => {
      if (stopped) return;
      stopped = true;
      clearInterval(timer);
      line(true);
    },
  };
}
