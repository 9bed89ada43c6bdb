/**
 * MQTT topic patterns → (device, kind). A pattern is a topic with whole-level placeholders
 * `{device}` and `{kind}`, e.g. `bsu/{device}/{kind}` or `site/+/units/{device}/{kind}`.
 */
export interface TopicRoute {
  device: string;
  kind: string;
}

interface CompiledPattern {
  pattern: string;
  filter: string;
  levels: string[];
}

export class TopicMapper {
  private readonly patterns: CompiledPattern[];

  constructor(patterns: readonly string[]) {
    this.patterns = patterns.map((pattern) => {
      const levels = pattern.split('/');
      for (const placeholder of ['{device}', '{kind}']) {
        if (levels.filter((l) => l === placeholder).length !== 1) {
          throw new Error(`topic pattern "${pattern}" needs exactly one whole level ${placeholder}`);
        }
      }
      if (levels.some((l) => l.includes('#') || (l.includes('{') && !/^\{(device|kind)\}$/.test(l)))) {
        throw new Error(
          `topic pattern "${pattern}": use + or whole-level {device}/{kind}, not # or partial levels`,
        );
      }
      const filter = levels.map((l) => (l.startsWith('{') ? '+' : l)).join('/');
      return { pattern, filter, levels };
    });
  }

  /** Subscription filters for the broker. */
  get filters(): string[] {
    return [...new Set(this.patterns.map((p) => p.filter))];
  }

  /** The device and kind a topic names, or undefined if no pattern matches. */
  match(topic: string): TopicRoute | undefined {
    const parts = topic.split('/');
    for (const p of this.patterns) {
      if (parts.length !== p.levels.length) continue;
      let device: string | undefined;
      let kind: string | undefined;
      let ok = true;
      for (let i = 0; i < parts.length && ok; i++) {
        const level = p.levels[i]!;
        const part = parts[i]!;
        if (level === '{device}') device = part;
        else if (level === '{kind}') kind = part;
        else ok = level === '+' || level === part;
      }
      if (ok && device !== undefined && kind !== undefined) return { device, kind };
    }
    return undefined;
  }
}
