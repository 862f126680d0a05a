/**
 * An append-only JSONL file that a long job writes as it goes and reads back to resume.
 *
 * The first line holds the settings the records were produced with (`{"_meta": {...}}`); resuming
 * with different settings is an error rather than a silent mix of two runs. A final line cut short
 * by a crash is ignored (and overwritten by the next append), any other unparsable line is an error.
 *
 * The file is locked while a store is open (`PATH.lock`, see {@linkcode lockOutput}): a second process
 * writing the same output is refused instead of interleaving its lines.
 *
 * @module
 */
import { pidAlive, writeFileAtomic } from "../util/atomic.ts";

/** An open store: the records already on disk and a way to add more. */
export interface JsonlStore<T> {
  /** The file's path. */
  readonly path: string;
  /** The records read when the store was opened, then every appended one, in file order. */
  readonly records: T[];
  /** Append records and flush them to disk (one write per call). */
  append(records: T[]): Promise<void>;
  /** Release the file's lock (also released when the process exits). */
  close(): Promise<void>;
}

/** Options of {@linkcode openJsonlStore}. */
export interface OpenJsonlStoreOptions {
  /**
   * Settings that define the run. Written as the first line of a new file; an existing file must
   * carry equal settings (compared as JSON), else opening fails.
   */
  meta?: Record<string, unknown>;
  /** Start from an empty file even if one exists. Default false. */
  overwrite?: boolean;
  /**
   * Take the file's lock (`PATH.lock`), so that a second process writing the same file is refused.
   * Default true.
   */
  lock?: boolean;
}

/** A held output lock. */
export interface OutputLock {
  /** The lock file (`PATH.lock`). */
  readonly path: string;
  /** Remove the lock file (once). */
  release(): Promise<void>;
}

function hostName(): string {
  try {
    return Deno.hostname();
  } catch {
    return "unknown-host"; // no --allow-sys: locks still compare pids
  }
}

/** Lock files this process holds, with how many opens hold each: removed when the process exits. */
const heldLocks = new Map<string, number>();
let unloadHooked = false;

/**
 * Lock `path` against a second writer: create `PATH.lock` (exclusively, `createNew`) holding this
 * process's pid and host name. A lock held by another live process is an error naming it; a stale one
 * (its pid no longer alive on this host, as a killed run leaves it) is taken over. This process may
 * lock the same path again (a resumed call in the same program).
 *
 * @example
 * ```ts
 * import { lockOutput } from "./jsonl_store.ts";
 * const path = await Deno.makeTempFile({ suffix: ".jsonl" });
 * const lock = await lockOutput(path);
 * await lock.release();
 * ```
 */
export async function lockOutput(path: string): Promise<OutputLock> {
  const file = `${path}.lock`;
  const host = hostName();
  const body = JSON.stringify({ pid: Deno.pid, hostname: host }) + "\n";
  const dir = path.replace(/[\\/][^\\/]*$/, "");
  if (dir && dir !== path) await Deno.mkdir(dir, { recursive: true });
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      await Deno.writeTextFile(file, body, { createNew: true });
      return held(file);
    } catch (e) {
      if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
    }
    let owner: { pid?: unknown; hostname?: unknown } = {};
    try {
      owner = JSON.parse(await Deno.readTextFile(file));
    } catch { /* being written, or garbage: judged below */ }
    const pid = Number(owner.pid);
    if (owner.hostname === host && pid === Deno.pid) return held(file);
    const stale = owner.hostname === host && Number.isInteger(pid) && !pidAlive(pid);
    if (!stale) {
      throw new Error(
        `${path} is being written by another process (pid ${owner.pid ?? "?"} on ${owner.hostname ?? "?"}, ` +
          `lock ${file}): wait for it to finish, choose another output path, or delete the lock if that process is gone.`,
      );
    }
    await Deno.remove(file).catch(() => {}); // a dead writer's lock: take it over
  }
  throw new Error(`${path}: could not take the lock ${file} (other processes keep taking it).`);
}

function held(file: string): OutputLock {
  heldLocks.set(file, (heldLocks.get(file) ?? 0) + 1);
  if (!unloadHooked) {
    unloadHooked = true;
    globalThis.addEventListener("unload", () => {
      for (const f of heldLocks.keys()) {
        try {
          Deno.removeSync(f);
        } catch { /* already gone */ }
      }
    });
  }
  let released = false;
  return {
    path: file,
    async release() {
      if (released) return;
      released = true;
      const n = (heldLocks.get(file) ?? 1) - 1;
      if (n > 0) return void heldLocks.set(file, n);
      heldLocks.delete(file);
      await Deno.remove(file).catch(() => {});
    },
  };
}

/**
 * Cut a JSON Lines log back to the rows of steps `<= step` (rows without a numeric `step`, such as a
 * settings line, are kept; a last line cut short by a crash is dropped), crash-safely. A resumed run
 * calls it with its checkpoint's step before appending, so each step is in the log once, as after an
 * uninterrupted run. A missing file is left missing. Returns the rows kept.
 *
 * @example
 * ```ts
 * import { truncateJsonlToStep } from "./jsonl_store.ts";
 * const path = await Deno.makeTempFile({ suffix: ".jsonl" });
 * await Deno.writeTextFile(path, '{"step":1}\n{"step":2}\n{"step":3}\n');
 * console.assert((await truncateJsonlToStep(path, 2)) === 2);
 * ```
 */
export async function truncateJsonlToStep(path: string, step: number, key = "step"): Promise<number> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return 0;
    throw e;
  }
  const lines = text.split("\n");
  lines.pop(); // "" after the final newline, or a line cut short by a crash
  const kept: string[] = [];
  for (const [i, line] of lines.entries()) {
    if (line.trim() === "") continue;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      throw new Error(`${path}, line ${i + 1}: not valid JSON; cannot cut the log back to step ${step}.`);
    }
    const s = (value as Record<string, unknown> | null)?.[key];
    if (typeof s === "number" && s > step) continue;
    kept.push(line);
  }
  await writeFileAtomic(path, kept.map((l) => l + "\n").join(""));
  return kept.length;
}

function stableJson(value: unknown): string {
  // Key order must not make two equal settings look different.
  return JSON.stringify(
    value,
    (_k, v) =>
      v && typeof v === "object" && !Array.isArray(v)
        ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, v[k]]))
        : v,
  );
}

/**
 * Read all complete records of a JSONL file (the `_meta` line excluded). A missing file gives [].
 *
 * @example
 * ```ts
 * import { readJsonl } from "./jsonl_store.ts";
 * const rows = await readJsonl("/nonexistent/file.jsonl");
 * console.assert(rows.length === 0);
 * ```
 */
export async function readJsonl<T = Record<string, unknown>>(path: string): Promise<T[]> {
  return (await readStore<T>(path)).records;
}

async function readStore<T>(
  path: string,
): Promise<{ meta?: unknown; records: T[]; validBytes: number; size: number }> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return { records: [], validBytes: 0, size: 0 };
    throw e;
  }
  const text = new TextDecoder().decode(bytes);
  const records: T[] = [];
  let meta: unknown;
  let offset = 0; // bytes of complete, parsed lines
  const encoder = new TextEncoder();
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const isLast = i === lines.length - 1;
    if (isLast && line === "") break; // file ends with a newline
    if (isLast) break; // no trailing newline: the write was cut short, drop it
    const lineBytes = encoder.encode(line).length + 1;
    if (line.trim() === "") {
      offset += lineBytes;
      continue;
    }
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      throw new Error(
        `${path}, line ${i + 1}: not valid JSON; the file is corrupt (delete it to start over).`,
      );
    }
    if (i === 0 && value && typeof value === "object" && "_meta" in value) {
      meta = (value as { _meta: unknown })._meta;
    } else {
      records.push(value as T);
    }
    offset += lineBytes;
  }
  return { meta, records, validBytes: offset, size: bytes.length };
}

/**
 * Open (or create) an append-only JSONL store for resumable jobs.
 *
 * @example
 * ```ts
 * import { openJsonlStore } from "./jsonl_store.ts";
 * const path = await Deno.makeTempFile({ suffix: ".jsonl" });
 * const store = await openJsonlStore<{ id: string }>(path, { meta: { n: 4 }, overwrite: true });
 * await store.append([{ id: "q1" }]);
 * const again = await openJsonlStore<{ id: string }>(path, { meta: { n: 4 } });
 * console.assert(again.records.length === 1);
 * ```
 */
export async function openJsonlStore<T>(
  path: string,
  options: OpenJsonlStoreOptions = {},
): Promise<JsonlStore<T>> {
  const { meta, overwrite = false } = options;
  const lock = options.lock === false ? undefined : await lockOutput(path);
  try {
    return await openLocked<T>(path, meta, overwrite, lock);
  } catch (e) {
    await lock?.release();
    throw e;
  }
}

async function openLocked<T>(
  path: string,
  meta: Record<string, unknown> | undefined,
  overwrite: boolean,
  lock: OutputLock | undefined,
): Promise<JsonlStore<T>> {
  const found = overwrite
    ? { meta: undefined, records: [] as T[], validBytes: 0, size: 0 }
    : await readStore<T>(path);
  const encoder = new TextEncoder();
  const dir = path.replace(/[\\/][^\\/]*$/, "");
  if (dir && dir !== path) await Deno.mkdir(dir, { recursive: true });
  if (found.size > 0 && found.validBytes === 0 && found.records.length === 0 && found.meta === undefined) {
    // Only a partial first line: treat as empty.
  } else if (found.validBytes > 0 && meta !== undefined) {
    if (found.meta === undefined) {
      throw new Error(
        `${path} has no settings line; it was not written by this run type (choose another output path).`,
      );
    }
    if (stableJson(found.meta) !== stableJson(meta)) {
      throw new Error(
        `${path} was written with different settings (${stableJson(found.meta)}, now ${stableJson(meta)}); ` +
          `delete it or choose another output path to start over.`,
      );
    }
  }
  if (found.validBytes === 0) {
    const head = meta !== undefined ? JSON.stringify({ _meta: meta }) + "\n" : "";
    await Deno.writeFile(path, encoder.encode(head));
  } else if (found.validBytes < found.size) {
    await Deno.truncate(path, found.validBytes); // drop a line cut short by a crash
  }
  const records = found.records;
  return {
    path,
    records,
    async append(batch: T[]): Promise<void> {
      if (batch.length === 0) return;
      const text = batch.map((r) => JSON.stringify(r)).join("\n") + "\n";
      await Deno.writeFile(path, encoder.encode(text), { append: true });
      records.push(...batch);
    },
    async close(): Promise<void> {
      await lock?.release();
    },
  };
}
