/**
 * TensorBoard event files: scalars (`loss`, `reward`, `eval_accuracy`, ...) and text (sampled
 * completions) that the real TensorBoard (and its `EventAccumulator`) reads.
 *
 * Why a writer of our own: tfjs-node's `tf.node.summaryFileWriter` exists only where the native
 * TensorFlow binding is built (not on the wasm, webgpu or cpu backends, so a run's logging would
 * depend on its backend), writes only scalars and histograms (no text summaries, so the sampled
 * completions could not go in), and flushes through the TensorFlow runtime. The format itself is small
 * and stable: a TFRecord file (each record: little-endian uint64 length, masked CRC32C of the length,
 * the bytes, masked CRC32C of the bytes) of `tensorflow.Event` protobuf messages (`wall_time` = 1,
 * `step` = 2, `file_version` = 3, `summary` = 5), each summary holding `Summary.Value`s (`tag` = 1,
 * `simple_value` = 2 for scalars; `tensor` = 8 of dtype string with `metadata.plugin_data.plugin_name =
 * "text"` for text). So this file writes it directly, on every backend, one file per writer, and
 * `tests/tensorboard_test.ts` reads the files back with TensorBoard's own reader. When the binding is
 * active, {@linkcode TensorBoardWriter.open} can ALSO mirror the scalars through tfjs-node's writer
 * (`{ tfjsNode: true }`, into `<logdir>/tfjs-node`), for those who prefer that writer's files.
 *
 * @module
 */

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
  /** Added to the file name (after the host name), e.g. `.train`. Default none. */
  filenameSuffix?: string;
  /**
   * Also write the scalars through tfjs-node's `tf.node.summaryFileWriter` into `<logdir>/tfjs-node`
   * when the `tensorflow` backend is active (ignored otherwise). Default false.
   */
  tfjsNode?: boolean;
}

let fileCounter = 0;

interface TfjsNodeWriter {
  scalar(name: string, value: number, step: number): void;
  flush(): void;
}

/**
 * Writes one TensorBoard event file. Records are written as they come (a crash loses nothing written);
 * `close()` flushes and closes the file.
 *
 * @example
 * ```ts
 * import { TensorBoardWriter } from "./tensorboard.ts";
 * const dir = await Deno.makeTempDir();
 * const tb = await TensorBoardWriter.open(dir);
 * tb.scalar("train/loss", 1.25, 1);
 * tb.text("samples/completion", "<think> ... </think>", 1);
 * await tb.close();
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export class TensorBoardWriter {
  /** The event file's path. */
  readonly path: string;
  #file: Deno.FsFile | null;
  #node: TfjsNodeWriter | null;

  private constructor(path: string, file: Deno.FsFile, node: TfjsNodeWriter | null) {
    this.path = path;
    this.#file = file;
    this.#node = node;
  }

  /** Create `logdir` if needed and start a new event file there (`events.out.tfevents.<time>.<host>.<pid>.<n>`). */
  static async open(logdir: string, options: TensorBoardOptions = {}): Promise<TensorBoardWriter> {
    await Deno.mkdir(logdir, { recursive: true });
    let host = "localhost";
    try {
      host = Deno.hostname();
    } catch { /* no --allow-sys: a fixed name is fine */ }
    const now = Date.now() / 1000;
    const name = `events.out.tfevents.${Math.floor(now)}.${host}.${Deno.pid}.${fileCounter++}${
      options.filenameSuffix ?? ""
    }`;
    const path = `${logdir.replace(/\/+$/, "")}/${name}`;
    const file = await Deno.open(path, { create: true, write: true, truncate: true });
    let node: TfjsNodeWriter | null = null;
    if (options.tfjsNode) node = await tfjsNodeWriter(`${logdir.replace(/\/+$/, "")}/tfjs-node`);
    const w = new TensorBoardWriter(path, file, node);
    // The first event names the file format version, as TensorFlow's writers do.
    w.#write(concat([eventBytes(now, 0, bytesField(3, enc.encode("brain.Event:2")))]));
    return w;
  }

  #write(event: Uint8Array): void {
    if (!this.#file) throw new Error(`TensorBoard file ${this.path} is closed; open a new writer.`);
    const rec = tfRecord(event);
    let at = 0;
    while (at < rec.length) at += this.#file.writeSync(rec.subarray(at));
  }

  /** Record scalar `value` under `tag` at `step` (non-finite values are written as they are: TensorBoard shows NaN). */
  scalar(tag: string, value: number, step: number, wallTime: number = Date.now() / 1000): void {
    this.#write(eventBytes(wallTime, step, scalarSummary(tag, value)));
    this.#node?.scalar(tag, value, step);
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

  /** Record `text` (markdown, shown by TensorBoard's Text tab) under `tag` at `step`. */
  text(tag: string, text: string, step: number, wallTime: number = Date.now() / 1000): void {
    this.#write(eventBytes(wallTime, step, textSummary(tag, text)));
  }

  /** Flush to disk (records are written unbuffered; this also syncs the file). */
  async flush(): Promise<void> {
    await this.#file?.sync();
    this.#node?.flush();
  }

  /** Flush and close the file. */
  async close(): Promise<void> {
    if (!this.#file) return;
    await this.flush();
    this.#file.close();
    this.#file = null;
  }
}

/** tfjs-node's summary writer when the `tensorflow` backend is active, else null. */
async function tfjsNodeWriter(dir: string): Promise<TfjsNodeWriter | null> {
  // Only load the module when the binding already runs (loading it otherwise would try to start it).
  const { tf } = await import("./deps.ts");
  if (tf.getBackend() !== "tensorflow") return null;
  const spec = ["npm:@tensorflow", "tfjs-node@4.22.0"].join("/");
  try {
    const mod = await import(spec);
    const node = mod.node ?? mod.default?.node;
    return node?.summaryFileWriter ? node.summaryFileWriter(dir) as TfjsNodeWriter : null;
  } catch {
    return null;
  }
}
