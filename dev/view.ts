/**
 * The live view of `switchyard dev`: plain ANSI, the whole screen redrawn from one DevStatus each
 * second (dev/status.ts). No terminal library: a few tables of text are all it needs.
 */
import { relative } from 'node:path';
import type { DevStatus, ProcessState } from './status.ts';

/** Terminal control sequences the view uses. */
export const Ansi = {
  /** The alternate screen keeps the user's scrollback intact; leaving it restores their screen. */
  enterAltScreen: '\x1b[?1049h',
  leaveAltScreen: '\x1b[?1049l',
  hideCursor: '\x1b[?25l',
  showCursor: '\x1b[?25h',
  home: '\x1b[H',
  clearLine: '\x1b[K',
  clearBelow: '\x1b[J',
} as const;

const Color = { red: 31, green: 32, yellow: 33, dim: 2, bold: 1 } as const;
type Color = keyof typeof Color;

export interface ViewOptions {
  /** ANSI colours (a terminal), or plain text. */
  color: boolean;
  /** Working directory, to show paths short. */
  cwd?: string;
  /** URLs to show under the tables (the console's). */
  links?: Readonly<Record<string, string>>;
}

const thousands = (n: number): string => Math.round(n).toLocaleString('en-US');
const perS = (n: number): string => (n >= 100 ? thousands(n) : n.toFixed(1));
const orDash = (n: number | null, f: (n: number) => string = thousands): string => (n === null ? '-' : f(n));

function ago(ms: number | null): string {
  if (ms === null) return 'never';
  return ms < 60_000 ? `${(ms / 1000).toFixed(1)} s ago` : `${Math.round(ms / 60_000)} min ago`;
}

function clock(s: number): string {
  const pad = (n: number): string => String(n).padStart(2, '0');
  return `${pad(Math.floor(s / 3600))}:${pad(Math.floor((s % 3600) / 60))}:${pad(s % 60)}`;
}

/** Column alignment: numbers right, text left. */
type Cell = { text: string; color?: Color; right?: boolean };

function table(header: string[], rows: Cell[][], paint: (text: string, color?: Color) => string): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]?.text.length ?? 0)));
  const pad = (c: Cell, i: number): string => {
    const w = widths[i]!;
    const text = c.right ? c.text.padStart(w) : c.text.padEnd(w);
    return c.color ? paint(text, c.color) : text;
  };
  const headCells = header.map((h, i) => ({ text: h, right: rows[0]?.[i]?.right ?? false }));
  return [
    paint(headCells.map(pad).join('  ').trimEnd(), 'dim'),
    ...rows.map((r) => r.map(pad).join('  ').trimEnd()),
  ];
}

const stateColor = (state: ProcessState | string): Color | undefined => {
  if (state === 'up' || state === 'running') return 'green';
  if (state === 'starting' || state === 'not ready' || state === 'restarting') return 'yellow';
  if (state === 'down') return 'red';
  return undefined;
};

const num = (text: string): Cell => ({ text, right: true });
const stateCell = (state: string, restarts: number): Cell => {
  const text = restarts > 0 ? `${state} (${restarts}↻)` : state;
  const color = stateColor(state);
  return color ? { text, color } : { text };
};

/** The whole screen for one snapshot, as lines without trailing newlines. */
export function renderView(status: DevStatus, options: ViewOptions): string[] {
  const paint = (text: string, color?: Color): string =>
    options.color && color ? `\x1b[${Color[color]}m${text}\x1b[0m` : text;
  const short = (path: string): string => {
    const rel = relative(options.cwd ?? process.cwd(), path);
    return rel && !rel.startsWith('..') ? rel : path;
  };
  const lines: string[] = [];
  const phase = status.phase === 'running' ? '' : ` · ${status.phase}`;
  lines.push(
    `${paint('switchyard dev', 'bold')} · ${status.sites.length} site(s) · up ${clock(status.uptimeS)} · ${short(status.dir)}${phase}`,
    '',
  );

  lines.push(
    ...table(
      [
        'SITE',
        'DEVICES',
        'SENT/S',
        'BRIDGE',
        'RECEIVED/S',
        'STORED/S',
        'INVALID',
        'IN FLIGHT',
        'HUB LAG',
        'HUB CONTACT',
      ],
      status.sites.map((s) => [
        { text: s.site },
        stateCell(s.simulator.state, s.simulator.restarts),
        num(perS(s.simulator.perS)),
        stateCell(s.bridge.state, s.bridge.restarts),
        num(perS(s.bridge.receivedPerS)),
        num(perS(s.bridge.publishedPerS)),
        num(thousands(s.bridge.invalid)),
        num(orDash(s.bridge.inFlight)),
        num(orDash(s.hubLag)),
        { text: s.hubErrors.length > 0 ? s.hubErrors.join('; ') : ago(s.lastContactMs) },
      ]),
      paint,
    ),
    '',
  );

  const hubCount =
    status.hub.messages === null ? paint('hub not answering', 'red') : thousands(status.hub.messages);
  lines.push(`hub stream BSU: ${hubCount} messages, +${perS(status.hub.perS)}/s`, '');

  lines.push(
    ...table(
      ['CONSUMER', 'STATE', 'PID', 'PROCESSED/S', 'ACKED', 'ACKED/S', 'RETRIED', 'DEAD-LETTERED', 'LAG'],
      status.consumers.map((c) => [
        { text: c.name },
        stateCell(c.state, c.restarts),
        num(c.pid === null ? '-' : String(c.pid)),
        num(perS(c.processedPerS)),
        num(thousands(c.acked)),
        num(perS(c.ackedPerS)),
        num(thousands(c.retried)),
        c.deadLettered > 0 ? { ...num(thousands(c.deadLettered)), color: 'yellow' } : num('0'),
        num(orDash(c.lag)),
      ]),
      paint,
    ),
  );

  const notReady = [
    ...status.sites.flatMap((s) =>
      s.bridge.notReady.length ? [`edge-${s.site}: ${s.bridge.notReady.join('; ')}`] : [],
    ),
    ...status.consumers.flatMap((c) => (c.notReady.length ? [`${c.name}: ${c.notReady.join('; ')}`] : [])),
  ];
  if (notReady.length > 0) lines.push('', ...notReady.map((l) => paint(`not ready: ${l}`, 'yellow')));

  if (status.events.length > 0) {
    lines.push('', paint('events', 'dim'));
    for (const e of status.events) {
      const color: Color | undefined =
        e.level === 'error' ? 'red' : e.level === 'warn' ? 'yellow' : undefined;
      lines.push(paint(`  ${e.at.slice(11, 19)} ${e.name}: ${e.message}`, color));
    }
  }

  for (const [name, url] of Object.entries(options.links ?? {}))
    lines.push('', paint(`${name}: ${url}`, 'bold'));
  lines.push(
    '',
    paint(
      `logs: ${short(status.logsDir)}/ (dev.log, edge-<site>.log, archive.log, monitor.log, ingest.log) · ` +
        `settings: ${short(status.dir)}/env/*.env · Ctrl-C stops everything dev started`,
      'dim',
    ),
  );
  return lines;
}

/** The frame that replaces the previous one in place: home, each line cleared to its end. */
export function frame(lines: readonly string[]): string {
  return `${Ansi.home}${lines.map((l) => `${l}${Ansi.clearLine}`).join('\n')}\n${Ansi.clearBelow}`;
}

/** The `--no-view` status line: the snapshot as one line of JSON. */
export function statusLine(status: DevStatus): string {
  return JSON.stringify(status);
}

export interface TerminalOutputOptions {
  /** Draw the live view (stdout is a terminal), or print JSON status lines. */
  view: boolean;
  /** Without the view: at most one status line per this many ms. */
  statusIntervalMs: number;
  color: boolean;
}

/**
 * dev's output on a terminal: the live view on the alternate screen, or one JSON status line per
 * interval on stdout; notes go to stderr, except while the view is on screen (it shows the events).
 */
export class TerminalOutput {
  private onScreen = false;
  private closed = false;
  private lastLineAtMs = 0;
  private readonly links: Record<string, string> = {};

  constructor(
    private readonly stdout: NodeJS.WritableStream,
    private readonly stderr: NodeJS.WritableStream,
    private readonly options: TerminalOutputOptions,
  ) {}

  status(status: DevStatus): void {
    if (this.closed) return;
    if (this.options.view) {
      if (!this.onScreen) {
        this.stdout.write(`${Ansi.enterAltScreen}${Ansi.hideCursor}`);
        this.onScreen = true;
      }
      this.stdout.write(frame(renderView(status, { color: this.options.color, links: this.links })));
      return;
    }
    const now = Date.now();
    // A little slack: snapshots come about once a second and would otherwise skip one interval.
    if (now - this.lastLineAtMs < this.options.statusIntervalMs - 100) return;
    this.lastLineAtMs = now;
    this.stdout.write(`${statusLine(status)}\n`);
  }

  note(line: string): void {
    if (!this.onScreen) this.stderr.write(`dev: ${line}\n`);
  }

  link(name: string, url: string): void {
    this.links[name] = url;
  }

  /** Leaves the view for good (stopping): the screen the user had comes back, notes print again. */
  close(): void {
    this.closed = true;
    if (!this.onScreen) return;
    this.stdout.write(`${Ansi.showCursor}${Ansi.leaveAltScreen}`);
    this.onScreen = false;
  }
}
