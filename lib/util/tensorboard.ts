/**
 * TensorBoard event files: scalars (`loss`, `reward`, `eval_accuracy`, ...) and text (sampled
 * completions) that the real TensorBoard (and its `EventAccumulator`) reads.
 *
 * Two writers, one layout (scalars in `<logdir>`, texts in `<logdir>/text`, a TensorBoard run each):
 * - Where the TensorFlow binding runs (the `tensorflow` backend), scalars go through TensorFlow's own
 *   summary writer, the one behind tfjs-node's `tf.node.summaryFileWriter` (the same calls on the active
 *   binding's backend, so it works whether `tfjs-node` or `tfjs-node-gpu` was loaded, without importing a
 *   second copy of either).
 * - Elsewhere (wasm, webgpu, cpu: no binding, so tfjs-node's writer does not exist there), and for text
 *   in every case (tfjs-node's writer has no text summaries), a small writer of the format itself: a
 *   TFRecord file (each record: little-endian uint64 length, masked CRC32C of the length, the bytes,
 *   masked CRC32C of the bytes) of `tensorflow.Event` protobuf messages (`wall_time` = 1, `step` = 2,
 *   `file_version` = 3, `summary` = 5), each summary holding `Summary.Value`s (`tag` = 1, `simple_value` =
 *   2 for scalars; `tensor` = 8 of dtype string with `metadata.plugin_data.plugin_name = "text"` for
 *   text). `tests/tensorboard_test.ts` reads both writers' files back with TensorBoard's own reader.
 *
 * Texts get their own folder because TensorBoard follows only the newest event file of a folder while
 * a run is live: two files written at once in one folder would hide one of them.
 *
 * @module
 */

import { tf } from "./deps.ts";

/** CRC32C (Castagnoli) lookup table, reflected polynomial 0x82F63B78. */
const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
})();

/**
 * CRC32C of `bytes`.
 *
 * @example
 * ```ts
 * import { crc32c } from "./tensorboard.ts";
 * console.assert(crc32c(new TextEncoder().encode("123456789")) === 0xe3069283);
 * ```
 */
export function crc32c(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** TFRecord's masked CRC: rotate right by 15 bits and add 0xa282ead8 (mod 2^32). */
export function maskedCrc32c(bytes: Uint8Array): number {
  const c = crc32c(bytes);
  return ((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0;
}

/** One TFRecord: length, masked CRC of the length, data, masked CRC of the data. */
export function tfRecord(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.length + 4);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(data.length), true);
  view.setUint32(8, maskedCrc32c(out.subarray(0, 8)), true);
  out.set(data, 12);
  view.setUint32(12 + data.length, maskedCrc32c(data), true);
  return out;
}

// --- a minimal protobuf encoder (the few field types the Event messages use) ---

function varint(n: number | bigint): number[] {
  let v = BigInt.asUintN(64, BigInt(n));
  const out: number[] = [];
  while (v >= 0x80n) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
  return out;
}

function key(field: number, wire: number): number[] {
  return varint((field << 3) | wire);
}

function bytesField(field: number, data: Uint8Array): number[] {
  return [...key(field, 2), ...varint(data.length), ...data];
}

const enc = new TextEncoder();

function concat(parts: (number[] | Uint8Array)[]): Uint8Array {
  const n = parts.reduce((s, p) => s + p.length, 0);
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** A `tensorflow.Event` message with the given wall time, step and payload field. */
function eventBytes(wallTime: number, step: number, payload: number[]): Uint8Array {
  const wt = new Uint8Array(8);
  new DataView(wt.buffer).setFloat64(0, wallTime, true);
  return concat([key(1, 1), wt, key(2, 0), varint(step), payload]);
}

/** `Summary { value { tag, simple_value } }`. */
function scalarSummary(tag: string, value: number): number[] {
  const f = new Uint8Array(4);
  new DataView(f.buffer).setFloat32(0, value, true);
  const v = concat([bytesField(1, enc.encode(tag)), key(2, 5), f]);
  return bytesField(5, concat([bytesField(1, v)]));
}

/** `Summary { value { tag, metadata { plugin_data { plugin_name: "text" } }, tensor { DT_STRING, string_val } } }`. */
function textSummary(tag: string, text: string): number[] {
  const pluginData = concat([bytesField(1, enc.encode("text"))]);
  const metadata = concat([bytesField(1, pluginData)]);
  // TensorProto: dtype = 7 (DT_STRING), tensor_shape {} (a scalar), string_val = the text.
  const tensor = concat([
    key(1, 0),
    varint(7),
    bytesField(2, new Uint8Array()),
    bytesField(8, enc.encode(text)),
  ]);
  const v = concat([bytesField(1, enc.encode(tag)), bytesField(9, metadata), bytesField(8, tensor)]);
  return bytesField(5, concat([bytesField(1, v)]));
}

/** Options of {@linkcode TensorBoardWriter.open}. */
export interface TensorBoardOptions {
  /**
   * Who writes the scalars: `auto` (default): TensorFlow's writer when the `tensorflow` backend is active,
   * else the built-in one; `tensorflow`: TensorFlow's (an error when the backend is not active);
   * `builtin`: the built-in writer on every backend.
   */
  scalars?: "auto" | "tensorflow" | "builtin";
}

let fileCounter = 0;

/** A new event file in `dir` (`events.out.tfevents.<time>.<host>.<pid>.<n>`), starting with the version event. */
async function openEventFile(dir: string): Promise<{ path: string; file: Deno.FsFile }> {
  await Deno.mkdir(dir, { recursive: true });
  let host = "localhost";
  try {
    host = Deno.hostname();
  } catch { /* no --allow-sys: a fixed name is fine */ }
  const now = Date.now() / 1000;
  const path = `${dir}/events.out.tfevents.${Math.floor(now)}.${host}.${Deno.pid}.${fileCounter++}`;
  const file = await Deno.open(path, { create: true, write: true, truncate: true });
  // The first event names the file format version, as TensorFlow's writers do.
  writeRecord(file, eventBytes(now, 0, bytesField(3, enc.encode("brain.Event:2"))));
  return { path, file };
}

function writeRecord(file: Deno.FsFile, event: Uint8Array): void {
  const rec = tfRecord(event);
  let at = 0;
  while (at < rec.length) at += file.writeSync(rec.subarray(at));
}

interface ScalarSink {
  scalar(tag: string, value: number, step: number, wallTime: number): void;
  flush(): Promise<void>;
  close(): Promise<void>;
}

/** The built-in writer's scalars: one event file, written as they come. */
async function builtinSink(dir: string): Promise<ScalarSink & { path: string }> {
  const { path, file } = await openEventFile(dir);
  return {
    path,
    scalar: (tag, value, step, wallTime) =>
      writeRecord(file, eventBytes(wallTime, step, scalarSummary(tag, value))),
    flush: () => file.sync(),
    close: async () => {
      await file.sync();
      file.close();
    },
  };
}

// deno-lint-ignore no-explicit-any
type NodeBackend = any;
const bindingWriters = new Map<string, unknown>();

/**
 * TensorFlow's summary writer on the active binding (what `tf.node.summaryFileWriter(dir)` does:
 * `summaryWriter` + `createSummaryFileWriter`, then `writeScalarSummary` / `flushSummaryWriter`), or
 * null when the `tensorflow` backend is not the active one.
 */
function tensorflowSink(dir: string): ScalarSink | null {
  if (tf.getBackend() !== "tensorflow") return null;
  const backend: NodeBackend = tf.findBackend("tensorflow");
  if (typeof backend?.summaryWriter !== "function") return null;
  // One TensorFlow writer resource per folder, as tfjs-node caches them.
  let res = bindingWriters.get(dir);
  if (!res) {
    res = backend.summaryWriter(dir);
    backend.createSummaryFileWriter(res, dir, 10, 120_000, ".v2");
    bindingWriters.set(dir, res);
  }
  return {
    scalar: (tag, value, step) => backend.writeScalarSummary(res, step, tag, value),
    flush: () => Promise.resolve(backend.flushSummaryWriter(res)),
    close: () => Promise.resolve(backend.flushSummaryWriter(res)),
  };
}

/**
 * Writes a run's TensorBoard events: scalars into `logdir`, texts into `<logdir>/text`. Records are
 * written as they come; `close()` flushes.
 *
 * @example
 * ```ts
 * import { TensorBoardWriter } from "./tensorboard.ts";
 * const dir = await Deno.makeTempDir();
 * const tb = await TensorBoardWriter.open(dir, { scalars: "builtin" });
 * tb.scalar("train/loss", 1.25, 1);
 * tb.text("samples/completion", "<think> ... </think>", 1);
 * await tb.close();
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export class TensorBoardWriter {
  /** The folder of the scalars (texts are in `<logdir>/text`). */
  readonly logdir: string;
  /** Who writes the scalars: `tensorflow` (the binding's writer) or `builtin`. */
  readonly scalarWriter: "tensorflow" | "builtin";
  #scalars: ScalarSink;
  #text: { path: string; file: Deno.FsFile } | null = null;
  #textPending: Promise<void> = Promise.resolve();
  #closed = false;

  private constructor(logdir: string, sink: ScalarSink, who: "tensorflow" | "builtin") {
    this.logdir = logdir;
    this.#scalars = sink;
    this.scalarWriter = who;
  }

  /** Start writing into `logdir` (created if needed). */
  static async open(logdir: string, options: TensorBoardOptions = {}): Promise<TensorBoardWriter> {
    const dir = logdir.replace(/\/+$/, "");
    const mode = options.scalars ?? "auto";
    if (!["auto", "tensorflow", "builtin"].includes(mode)) {
      throw new Error(`TensorBoard option scalars '${mode}' is not one of auto, tensorflow, builtin.`);
    }
    await Deno.mkdir(dir, { recursive: true });
    const tfSink = mode === "builtin" ? null : tensorflowSink(dir);
    if (mode === "tensorflow" && !tfSink) {
      throw new Error(
        `TensorBoard scalars 'tensorflow' need the tensorflow backend active (it is '${tf.getBackend()}'); ` +
          `use scalars: auto or builtin.`,
      );
    }
    return tfSink
      ? new TensorBoardWriter(dir, tfSink, "tensorflow")
      : new TensorBoardWriter(dir, await builtinSink(dir), "builtin");
  }

  #check(): void {
    if (this.#closed) throw new Error(`TensorBoard writer of ${this.logdir} is closed; open a new one.`);
  }

  /** Record scalar `value` under `tag` at `step`. */
  scalar(tag: string, value: number, step: number, wallTime: number = Date.now() / 1000): void {
    this.#check();
    this.#scalars.scalar(tag, value, step, wallTime);
  }

  /** Record every finite number of `values` as a scalar `<prefix><key>` at `step`; returns the tags written. */
  scalars(values: Record<string, unknown>, step: number, prefix = ""): string[] {
    const tags: string[] = [];
    const now = Date.now() / 1000;
    for (const [k, v] of Object.entries(values)) {
      if (typeof v !== "number" || !Number.isFinite(v)) continue;
      this.scalar(prefix + k, v, step, now);
      tags.push(prefix + k);
    }
    return tags;
  }

  /** Record `text` (markdown, shown by TensorBoard's Text tab) under `tag` at `step`, in `<logdir>/text`. */
  text(tag: string, text: string, step: number, wallTime: number = Date.now() / 1000): void {
    this.#check();
    const event = eventBytes(wallTime, step, textSummary(tag, text));
    // The text file is opened on first use (most writers never write text).
    this.#textPending = this.#textPending.then(async () => {
      this.#text ??= await openEventFile(`${this.logdir}/text`);
      writeRecord(this.#text.file, event);
    });
  }

  /** Flush everything written so far to disk. */
  async flush(): Promise<void> {
    await this.#textPending;
    await this.#text?.file.sync();
    await this.#scalars.flush();
  }

  /** Flush and close. */
  async close(): Promise<void> {
    if (this.#closed) return;
    await this.flush();
    await this.#scalars.close();
    this.#text?.file.close();
    this.#closed = true;
  }
}
