/**
 * An append-only JSONL file that a long job writes as it goes and reads back to resume.
 *
 * The first line holds the settings the records were produced with (`{"_meta": {...}}`); resuming
 * with different settings is an error rather than a silent mix of two runs. A final line cut short
 * by a crash is ignored (and overwritten by the next append), any other unparsable line is an error.
 *
 * @module
 */

/** An open store: the records already on disk and a way to add more. */
export interface JsonlStore<T> {
  /** The file's path. */
  readonly path: string;
  /** The records read when the store was opened, then every appended one, in file order. */
  readonly records: T[];
  /** Append records and flush them to disk (one write per call). */
  append(records: T[]): Promise<void>;
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
  };
}
