/**
 * Progress of a long job (probe, evaluate, distill, SFT, GRPO): on a terminal one updating line (step,
 * rate, ETA, the main metrics); when stderr is not a terminal (a log file, CI) a plain line every
 * `every` seconds and at the end; nothing when switched off (`--quiet`). Optionally one JSON line per
 * step in a log file.
 *
 * @module
 */

/** Options of {@linkcode createProgress}. */
export interface ProgressOptions {
  /** Steps in the whole run. */
  total: number;
  /** Shown before the bar. Default `train`. */
  label?: string;
  /** Steps already done (a resumed run): the ETA then counts only new steps. Default 0. */
  start?: number;
  /** Append one JSON object per step to this file (JSON Lines). */
  logFile?: string;
  /**
   * `true`: draw the updating bar on stderr; `false`: print nothing (`--quiet`). Default: the bar when
   * stderr is a terminal, else plain lines every `every` seconds.
   */
  bar?: boolean;
  /**
   * Seconds between plain progress lines when stderr is not a terminal (the last step always prints one).
   * Default 30, or the `MEDTHINK_PROGRESS_EVERY` environment variable.
   */
  every?: number;
  /** Unit of the rate shown (`step`, `question`, ...). Default `step`. */
  unit?: string;
  /** Keys of the step record shown on the bar. Default `["loss", "lr"]`. */
  show?: string[];
}

/** What {@linkcode createProgress} returns. */
export interface Progress {
  /** Record step `step` (1-based) with its metrics: one log line, bar redrawn. */
  update(step: number, metrics: Record<string, unknown>): void;
  /** Finish the bar's line and close the log file. */
  close(): void;
}

/** `3725` s -> `1:02:05`; `65` -> `1:05`. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "?";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const mm = h > 0 ? String(m).padStart(2, "0") : String(m);
  return `${h > 0 ? `${h}:` : ""}${mm}:${String(r).padStart(2, "0")}`;
}

function fmt(v: unknown): string {
  if (typeof v !== "number") return String(v);
  if (v === 0 || (Math.abs(v) >= 1e-3 && Math.abs(v) < 1e5)) return String(Number(v.toPrecision(4)));
  return v.toExponential(2);
}

/** The bar text for `done` of `total` steps, `elapsed` seconds since `start`. */
export function progressLine(
  label: string,
  done: number,
  total: number,
  elapsed: number,
  fromStep: number,
  metrics: Record<string, unknown>,
  show: string[],
  unit?: string,
): string {
  const width = 24;
  const frac = total > 0 ? Math.min(1, done / total) : 1;
  const fill = Math.round(frac * width);
  const rate = (done - fromStep) / Math.max(elapsed, 1e-9);
  const eta = rate > 0 ? (total - done) / rate : NaN;
  const shown = show.filter((k) => metrics[k] !== undefined).map((k) => `${k} ${fmt(metrics[k])}`).join(" ");
  return `${label} [${"#".repeat(fill)}${".".repeat(width - fill)}] ${done}/${total} ${shown} ` +
    `${formatDuration(elapsed)}<${formatDuration(eta)}` + (unit ? ` ${fmtRate(rate)} ${unit}/s` : "");
}

function fmtRate(rate: number): string {
  if (!Number.isFinite(rate)) return "?";
  return rate >= 100 ? rate.toFixed(0) : rate >= 1 ? rate.toFixed(2) : rate.toPrecision(2);
}

function envEvery(): number | undefined {
  try {
    const v = Deno.env.get("MEDTHINK_PROGRESS_EVERY");
    return v !== undefined && Number.isFinite(Number(v)) ? Number(v) : undefined;
  } catch {
    return undefined; // no --allow-env
  }
}

/**
 * A progress reporter: JSON Lines log (one object per step, with `step`, `elapsed` and the metrics) and a
 * bar with rate and ETA on stderr (plain periodic lines when stderr is not a terminal).
 *
 * @example
 * ```ts
 * import { createProgress } from "./progress.ts";
 * const p = createProgress({ total: 2, bar: false });
 * p.update(1, { loss: 1.5, lr: 1e-5 });
 * p.update(2, { loss: 1.2, lr: 1e-5 });
 * p.close();
 * ```
 */
export function createProgress(options: ProgressOptions): Progress {
  const label = options.label ?? "train";
  const show = options.show ?? ["loss", "lr"];
  const start = options.start ?? 0;
  const unit = options.unit ?? "step";
  let bar = options.bar;
  let plain = false;
  if (bar === undefined) {
    try {
      bar = Deno.stderr.isTerminal();
    } catch {
      bar = false;
    }
    plain = !bar;
  }
  const every = options.every ?? envEvery() ?? 30;
  let lastPlain = -Infinity;
  const t0 = performance.now();
  let log: Deno.FsFile | null = null;
  if (options.logFile) {
    log = Deno.openSync(options.logFile, { create: true, append: true });
  }
  const enc = new TextEncoder();
  let drawn = false;
  return {
    update(step, metrics) {
      const elapsed = (performance.now() - t0) / 1000;
      if (log) {
        const line = JSON.stringify({ step, ...metrics, elapsed: Number(elapsed.toFixed(3)) });
        log.writeSync(enc.encode(line + "\n"));
      }
      if (bar) {
        const text = progressLine(label, step, options.total, elapsed, start, metrics, show, unit);
        Deno.stderr.writeSync(enc.encode(`\r${text}\x1b[K`));
        drawn = true;
      } else if (plain && (elapsed - lastPlain >= every || step >= options.total)) {
        lastPlain = elapsed;
        const text = progressLine(label, step, options.total, elapsed, start, metrics, show, unit);
        Deno.stderr.writeSync(enc.encode(`${text}\n`));
      }
    },
    close() {
      if (drawn) Deno.stderr.writeSync(enc.encode("\n"));
      log?.close();
      log = null;
    },
  };
}
