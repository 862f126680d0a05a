/**
 * Progress reporting of probe and evaluate: a callback with counts, elapsed time and ETA, and a
 * one-line bar on stderr when it is a terminal.
 *
 * @module
 */

/** Where a long job stands. */
export interface ProgressInfo {
  label: string;
  done: number;
  total: number;
  /** Seconds since the job started. */
  elapsedS: number;
  /** Estimated seconds left (from the items done in this session); NaN before the first item. */
  etaS: number;
}

/** A live progress report. */
export interface Progress {
  update(done: number): void;
  finish(): void;
}

/** Options of {@linkcode createProgress}. */
export interface CreateProgressOptions {
  total: number;
  label: string;
  /** Draw the bar on stderr; default: when stderr is a terminal. */
  enabled?: boolean;
  onProgress?: (info: ProgressInfo) => void;
}

function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return "--:--";
  const t = Math.round(s);
  const h = Math.floor(t / 3600);
  const m = Math.floor((t % 3600) / 60);
  const sec = t % 60;
  const mm = String(m).padStart(2, "0");
  const ss = String(sec).padStart(2, "0");
  return h > 0 ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

function stderrIsTerminal(): boolean {
  try {
    return Deno.stderr.isTerminal();
  } catch {
    return false;
  }
}

/** Start a progress report. The ETA counts only items done after it started (resumed ones are free). */
export function createProgress(options: CreateProgressOptions): Progress {
  const { total, label, onProgress } = options;
  const enabled = options.enabled ?? stderrIsTerminal();
  const t0 = performance.now();
  let first: number | undefined;
  let last = 0;
  const encoder = new TextEncoder();
  function info(done: number): ProgressInfo {
    const elapsedS = (performance.now() - t0) / 1000;
    const fresh = done - (first ?? done);
    const etaS = fresh > 0 ? (elapsedS / fresh) * (total - done) : NaN;
    return { label, done, total, elapsedS, etaS };
  }
  function draw(p: ProgressInfo, end: string): void {
    if (!enabled) return;
    const width = 30;
    const filled = total > 0 ? Math.round((p.done / total) * width) : width;
    const bar = "#".repeat(filled) + "-".repeat(width - filled);
    const line = `\r${label} [${bar}] ${p.done}/${total} elapsed ${formatSeconds(p.elapsedS)} eta ${
      formatSeconds(p.etaS)
    }${end}`;
    Deno.stderr.writeSync(encoder.encode(line));
  }
  return {
    update(done: number): void {
      if (first === undefined) first = done;
      last = done;
      const p = info(done);
      onProgress?.(p);
      draw(p, "");
    },
    finish(): void {
      draw(info(last), "\n");
    },
  };
}
