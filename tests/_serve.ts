/**
 * Test helper: start `cli.ts serve` as a subprocess on a loopback port chosen by the OS, and stop it.
 *
 * @module
 */

const CLI = new URL("../cli.ts", import.meta.url).pathname;

/** A `serve` subprocess. */
export interface ServeProcess {
  /** `http://127.0.0.1:PORT` */
  url: string;
  /** Its standard error so far (for failure messages). */
  stderr(): string;
  /** SIGKILL (a crash) or SIGTERM (a clean stop), then wait for the exit. */
  stop(signal?: "SIGKILL" | "SIGTERM"): Promise<void>;
}

/** Start `deno run -A cli.ts serve --port 0 ARGS...` (with `env` added) and wait (at most `timeoutMs`) until it listens. */
export async function startServe(
  args: string[],
  timeoutMs = 90_000,
  env: Record<string, string> = {},
): Promise<ServeProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, "serve", "--port", "0", ...args],
    stdout: "piped",
    stderr: "piped",
    env: { TF_CPP_MIN_LOG_LEVEL: "2", ...env },
  }).spawn();
  let err = "";
  const errDone = child.stderr.pipeThrough(new TextDecoderStream()).pipeTo(
    new WritableStream({ write: (c) => void (err += c) }),
  );
  let out = "";
  let onLine: ((url: string) => void) | undefined;
  const outDone = child.stdout.pipeThrough(new TextDecoderStream()).pipeTo(
    new WritableStream({
      write: (c) => {
        out += c;
        const m = /listening on (http:\/\/[0-9.]+:\d+)/.exec(out);
        if (m && onLine) onLine(m[1]), (onLine = undefined);
      },
    }),
  );
  let exited = false;
  const status = child.status.then((s) => ((exited = true), s));
  let timer: ReturnType<typeof setTimeout> | undefined;
  const stop = async (signal: "SIGKILL" | "SIGTERM" = "SIGTERM") => {
    if (timer !== undefined) clearTimeout(timer);
    if (!exited) {
      try {
        child.kill(signal);
      } catch { /* already gone */ }
    }
    await status;
    await Promise.all([outDone, errDone]);
  };
  try {
    const url = await new Promise<string>((resolve, reject) => {
      onLine = resolve;
      timer = setTimeout(
        () => reject(new Error(`serve did not start in ${timeoutMs} ms:\n${err}`)),
        timeoutMs,
      );
      status.then((s) => reject(new Error(`serve exited with ${s.code} before listening:\n${err}`)));
    });
    clearTimeout(timer);
    return { url, stderr: () => err, stop };
  } catch (e) {
    await stop("SIGKILL");
    throw e;
  }
}
