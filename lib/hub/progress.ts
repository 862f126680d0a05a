/**
 * One progress display per downloaded file: an updating line on a terminal, a plain line every few seconds
 * otherwise (logs, CI), nothing when quiet.
 *
 * @module
 */

/** `1536` -> `1.5 KB`. */
export function formatBytes(n: number): string {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) [n, i] = [n / 1000, i + 1];
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

/** The text shown for `done` of `total` bytes after `seconds`. */
export function downloadLine(name: string, done: number, total: number | undefined, seconds: number): string {
  const rate = seconds > 0 ? done / seconds : 0;
  const speed = rate > 0 ? ` ${formatBytes(rate)}/s` : "";
  if (!total) return `${name}: ${formatBytes(done)}${speed}`;
  const width = 20;
  const fill = Math.round(Math.min(1, done / total) * width);
  return `${name} [${"#".repeat(fill)}${".".repeat(width - fill)}] ${formatBytes(done)}/${
    formatBytes(total)
  }` +
    `${speed}`;
}

/** What {@linkcode fileProgress} returns. */
export interface FileProgress {
  /** `done` bytes are now in the file. */
  update(done: number): void;
  /** The file is complete (or failed: `ok` false). */
  close(ok: boolean): void;
}

/** A progress display for one file; `mode` `tty` (one updating line), `lines` (periodic lines) or `quiet`. */
export function fileProgress(
  name: string,
  total: number | undefined,
  start: number,
  mode: "tty" | "lines" | "quiet",
): FileProgress {
  const enc = new TextEncoder();
  const t0 = performance.now();
  let last = t0;
  let done = start;
  const write = (s: string) => Deno.stderr.writeSync(enc.encode(s));
  const elapsed = () => (performance.now() - t0) / 1000;
  if (mode === "lines" && start > 0) write(`${name}: resuming at ${formatBytes(start)}\n`);
  return {
    update(n) {
      done = n;
      const now = performance.now();
      if (mode === "tty" && now - last > 100) {
        write(`\r${downloadLine(name, done, total, elapsed())}\x1b[K`);
        last = now;
      } else if (mode === "lines" && now - last > 5000) {
        write(`${downloadLine(name, done, total, elapsed())}\n`);
        last = now;
      }
    },
    close(ok) {
      if (mode === "quiet") return;
      const text = downloadLine(name, done, total, elapsed()) + (ok ? "" : " (interrupted)");
      write(mode === "tty" ? `\r${text}\x1b[K\n` : `${text}\n`);
    },
  };
}

/** The display mode: `quiet` when asked, else `tty` when stderr is a terminal, else `lines`. */
export function progressMode(quiet: boolean): "tty" | "lines" | "quiet" {
  if (quiet) return "quiet";
  try {
    return Deno.stderr.isTerminal() ? "tty" : "lines";
  } catch {
    return "lines";
  }
}
