/**
 * Reading and writing the safetensors format (Hugging Face's checkpoint files).
 *
 * A file is: 8 bytes little-endian header length N, N bytes of JSON header
 * (`{name: {dtype, shape, data_offsets: [begin, end]}, __metadata__?: {...}}`), then the raw data,
 * offsets relative to the end of the header. Floating tensors are decoded to `Float32Array`
 * (BF16, F16, F32, F64), integer ones to `Int32Array` (I64, I32, I16, I8, U8, BOOL).
 *
 * Tensors are read one at a time from an open file (seek + read), so a shard is never held whole
 * in memory; sharded checkpoints go through `model.safetensors.index.json`.
 *
 * @module
 */
import { faultPoint, replaceDirAtomic, writeFileAtomic } from "../util/atomic.ts";
import { exists } from "../util/fs.ts";

/** Storage dtypes this reader understands, with their byte sizes. */
export const DTYPE_BYTES: Record<string, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

/** Dtypes `writeSafetensors` can store float32 data as. */
export type SaveDtype = "F32" | "BF16" | "F16";

/** One tensor's entry in a safetensors header. */
export interface TensorInfo {
  /** Storage dtype (`BF16`, `F32`, ...). */
  dtype: string;
  /** Dimensions. */
  shape: number[];
  /** `[begin, end)` byte range, relative to the start of the data section. */
  dataOffsets: [number, number];
}

/** A parsed safetensors header. */
export interface SafetensorsHeader {
  /** The file it was read from. */
  file: string;
  /** Byte offset where the data section starts (8 + header length). */
  dataStart: number;
  /** Total file size in bytes. */
  fileSize: number;
  /** Entries by tensor name. */
  tensors: Record<string, TensorInfo>;
  /** The `__metadata__` block. */
  metadata: Record<string, string>;
}

/** A decoded tensor: float data as float32, integer data as int32. */
export interface LoadedTensor {
  /** Storage dtype it was decoded from. */
  dtype: string;
  /** Dimensions. */
  shape: number[];
  /** Row-major values. */
  data: Float32Array | Int32Array;
}

/** A tensor to write: float32 data and its shape. */
export interface TensorToWrite {
  /** Dimensions. */
  shape: number[];
  /** Row-major values. */
  data: Float32Array;
}

function prod(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

async function readExactly(
  f: Deno.FsFile,
  position: number,
  length: number,
  file: string,
): Promise<Uint8Array> {
  const buf = new Uint8Array(length);
  await readInto(f, position, buf, file);
  return buf;
}

/** Fill `buf` with the bytes at `position` of an open file. */
async function readInto(f: Deno.FsFile, position: number, buf: Uint8Array, file: string): Promise<void> {
  const length = buf.byteLength;
  await f.seek(position, Deno.SeekMode.Start);
  let got = 0;
  while (got < length) {
    const n = await f.read(buf.subarray(got));
    if (n === null) {
      throw new Error(
        `Safetensors file ${file} is truncated: wanted ${length} bytes at offset ${position}, got ${got}.`,
      );
    }
    got += n;
  }
}

/** Largest header accepted, as the reference (Rust) implementation's `MAX_HEADER_SIZE`. */
export const MAX_HEADER_BYTES = 100_000_000;

function isCount(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

/**
 * Parse the header of an open safetensors file and validate it as strictly as the reference library:
 * a sane header length, a JSON object, a string->string `__metadata__`, known dtypes, shapes and offsets
 * of non-negative integers, byte lengths that match shape x dtype size, and tensors that cover the data
 * section exactly (sorted by offset: contiguous from 0 to the end of the file, so none overlap and no
 * bytes are unaccounted for). A reader that trusted the offsets could be pointed outside a tensor's
 * bytes or made to allocate without bound by a crafted file.
 */
async function parseHeader(f: Deno.FsFile, file: string): Promise<SafetensorsHeader> {
  const fileSize = (await f.stat()).size;
  if (fileSize < 8) {
    throw new Error(
      `Safetensors file ${file} is truncated: ${fileSize} bytes, fewer than the 8-byte header length.`,
    );
  }
  const lenBytes = await readExactly(f, 0, 8, file);
  const n64 = new DataView(lenBytes.buffer).getBigUint64(0, true);
  if (n64 > BigInt(MAX_HEADER_BYTES)) {
    throw new Error(
      `Safetensors file ${file} is corrupt: its header length (${n64} bytes) exceeds the ${MAX_HEADER_BYTES}-byte limit.`,
    );
  }
  const n = Number(n64);
  if (8 + n > fileSize) {
    throw new Error(
      `Safetensors file ${file} is corrupt: its header length (${n} bytes) runs past the end of the file (${fileSize} bytes).`,
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(await readExactly(f, 8, n, file)));
  } catch (e) {
    throw new Error(
      `Safetensors file ${file} has a header that is not valid UTF-8 JSON (${(e as Error).message}).`,
    );
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new Error(`Safetensors file ${file} has a header that is not a JSON object.`);
  }
  const dataStart = 8 + n;
  const dataBytes = fileSize - dataStart;
  const tensors: Record<string, TensorInfo> = {};
  let metadata: Record<string, string> = {};
  for (const [name, v] of Object.entries(json as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (v === null) continue;
      if (typeof v !== "object" || Array.isArray(v) || Object.values(v).some((x) => typeof x !== "string")) {
        throw new Error(
          `Safetensors file ${file} has a __metadata__ that is not a map of strings to strings.`,
        );
      }
      metadata = { ...(v as Record<string, string>) };
      continue;
    }
    const e = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof e !== "object" || e === null || Array.isArray(e)) {
      throw new Error(`Safetensors file ${file}: the header entry of tensor ${name} is not an object.`);
    }
    if (typeof e.dtype !== "string") {
      throw new Error(`Safetensors file ${file}: tensor ${name} has no string 'dtype'.`);
    }
    const size = DTYPE_BYTES[e.dtype];
    if (size === undefined) {
      throw new Error(
        `Safetensors file ${file}: tensor ${name} has unknown dtype '${e.dtype}' (known: ${
          Object.keys(DTYPE_BYTES).join(", ")
        }).`,
      );
    }
    if (!Array.isArray(e.shape) || !e.shape.every(isCount)) {
      throw new Error(
        `Safetensors file ${file}: tensor ${name} has shape ${
          JSON.stringify(e.shape)
        }; a shape is a list of non-negative integers.`,
      );
    }
    const shape = e.shape as number[];
    const offsets = e.data_offsets;
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount)) {
      throw new Error(
        `Safetensors file ${file}: tensor ${name} has data_offsets ${
          JSON.stringify(offsets)
        }; they must be two non-negative integers [begin, end].`,
      );
    }
    const [begin, end] = offsets as [number, number];
    if (begin > end) {
      throw new Error(
        `Safetensors file ${file}: tensor ${name} has data_offsets [${begin}, ${end}] with begin after end.`,
      );
    }
    if (end > dataBytes) {
      throw new Error(
        `Safetensors file ${file} is truncated or corrupt: tensor ${name} ends at data byte ${end} but the data section has ${dataBytes} bytes.`,
      );
    }
    const count = prod(shape);
    if (!Number.isSafeInteger(count * size) || end - begin !== count * size) {
      throw new Error(
        `Safetensors file ${file}: tensor ${name} has ${
          end - begin
        } bytes but shape [${shape}] of ${e.dtype} needs ${count * size}.`,
      );
    }
    tensors[name] = { dtype: e.dtype, shape: shape.slice(), dataOffsets: [begin, end] };
  }
  // Sorted by offset, the tensors must tile the data section: each starts where the previous ended
  // (a smaller start is an overlap, a larger one a gap), and the last ends at the end of the file.
  let at = 0;
  let prev: string | null = null;
  const order = Object.entries(tensors).sort((a, b) =>
    a[1].dataOffsets[0] - b[1].dataOffsets[0] || a[1].dataOffsets[1] - b[1].dataOffsets[1]
  );
  for (const [name, info] of order) {
    const [begin] = info.dataOffsets;
    if (begin < at) {
      throw new Error(
        `Safetensors file ${file}: tensor ${name} (bytes ${
          info.dataOffsets.join("-")
        }) overlaps tensor ${prev}, which ends at ${at}.`,
      );
    }
    if (begin > at) {
      throw new Error(
        `Safetensors file ${file}: bytes ${at}-${begin} of the data section before tensor ${name} belong to no tensor.`,
      );
    }
    at = info.dataOffsets[1];
    prev = name;
  }
  if (at !== dataBytes) {
    throw new Error(
      `Safetensors file ${file}: its data section has ${dataBytes} bytes but the tensors cover ${at}${
        prev ? ` (the last, ${prev}, ends there)` : ""
      }; the file is corrupt or has trailing bytes.`,
    );
  }
  return { file, dataStart, fileSize, tensors, metadata };
}

/**
 * Read only the header of a safetensors file (names, dtypes, shapes), validated against the file size.
 *
 * @example
 * ```ts ignore
 * const h = await readSafetensorsHeader("model.safetensors");
 * console.log(Object.keys(h.tensors));
 * ```
 */
export async function readSafetensorsHeader(file: string): Promise<SafetensorsHeader> {
  const f = await Deno.open(file, { read: true });
  try {
    return await parseHeader(f, file);
  } finally {
    f.close();
  }
}

let f16Table: Float32Array | null = null;

/** float16 bits -> float32 value, for all 65536 bit patterns (decoding is then one lookup per element). */
function halfTable(): Float32Array {
  if (f16Table) return f16Table;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 0x1f;
    const m = h & 0x3ff;
    if (e === 0) t[h] = s * m * 2 ** -24;
    else if (e === 31) t[h] = m ? NaN : s * Infinity;
    else t[h] = s * (1 + m / 1024) * 2 ** (e - 15);
  }
  return (f16Table = t);
}

/** Decode raw little-endian bytes of `dtype` into float32 (floats) or int32 (integers). */
export function decodeTensorBytes(
  bytes: Uint8Array,
  dtype: string,
  name = "?",
  file = "?",
): Float32Array | Int32Array {
  // Copy into a fresh aligned buffer: offsets in a safetensors file need not be 4-aligned.
  const buf = bytes.byteOffset % 8 === 0 ? bytes : bytes.slice();
  const n = buf.byteLength / (DTYPE_BYTES[dtype] ?? 1);
  switch (dtype) {
    case "F32":
      return new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
    case "BF16": {
      const src = new Uint16Array(buf.buffer, buf.byteOffset, n);
      const out = new Uint32Array(n);
      for (let i = 0; i < n; i++) out[i] = src[i] << 16;
      return new Float32Array(out.buffer);
    }
    case "F16": {
      const src = new Uint16Array(buf.buffer, buf.byteOffset, n);
      const t = halfTable();
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = t[src[i]];
      return out;
    }
    case "F64":
      return Float32Array.from(new Float64Array(buf.buffer, buf.byteOffset, n));
    case "I64": {
      const src = new BigInt64Array(buf.buffer, buf.byteOffset, n);
      const out = new Int32Array(n);
      for (let i = 0; i < n; i++) out[i] = Number(src[i]);
      return out;
    }
    case "I32":
      return new Int32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
    case "I16":
      return Int32Array.from(new Int16Array(buf.buffer, buf.byteOffset, n));
    case "I8":
      return Int32Array.from(new Int8Array(buf.buffer, buf.byteOffset, n));
    case "U8":
    case "BOOL":
      return Int32Array.from(buf);
    default:
      throw new Error(`Safetensors file ${file}: tensor ${name} has unknown dtype '${dtype}'.`);
  }
}

/**
 * Read tensors of one safetensors file, one at a time, calling `onTensor` for each
 * (so at most one decoded tensor is alive in this function). `filter` selects which are read.
 */
export function forEachTensor(
  file: string,
  onTensor: (name: string, tensor: LoadedTensor) => void | Promise<void>,
  options: { filter?: (name: string) => boolean } = {},
): Promise<SafetensorsHeader> {
  return walkTensors(file, options.filter, async (name, info, f, position, length) => {
    let data: Float32Array | Int32Array;
    if (info.dtype === "BF16") {
      // Read the 2-byte values into the upper half of the float32 output and widen them in place
      // (front to back, each write lands on bytes already consumed): no second buffer per tensor.
      const n = length / 2;
      const out = new Uint32Array(n);
      await readInto(f, position, new Uint8Array(out.buffer, length, length), file);
      const src = new Uint16Array(out.buffer, length, n);
      for (let i = 0; i < n; i++) out[i] = src[i] << 16;
      data = new Float32Array(out.buffer);
    } else {
      data = decodeTensorBytes(await readExactly(f, position, length, file), info.dtype, name, file);
    }
    await onTensor(name, { dtype: info.dtype, shape: info.shape, data });
  });
}

/** A tensor's bytes as stored (little-endian, not decoded). */
export interface RawTensor {
  /** Storage dtype (`BF16`, `F32`, ...). */
  dtype: string;
  /** Dimensions. */
  shape: number[];
  /**
   * The stored bytes, at offset 0 of an `ArrayBuffer` whose length is rounded up to a multiple of 4
   * (so the whole buffer can be viewed as 32-bit words; the padding is zero).
   */
  bytes: Uint8Array;
}

/** Options of {@linkcode forEachRawTensor}. */
export interface RawTensorOptions {
  /** Which tensors to read (all when absent). */
  filter?: (name: string) => boolean;
  /**
   * Read every tensor into one buffer (grown to the largest selected tensor) instead of a fresh one
   * each: the bytes passed to `onTensor` are then valid only until it returns (for callers that copy
   * them out at once, so a load leaves no garbage the size of the checkpoint behind). Pass the same
   * {@linkcode ReadBuffer} to the calls for every shard to share one buffer among them.
   */
  reuseBuffer?: boolean | ReadBuffer;
}

/** A read buffer that {@linkcode forEachRawTensor} calls share (`bytes` grows as needed). */
export interface ReadBuffer {
  /** The buffer, null until first needed. */
  bytes: Uint8Array | null;
}

/**
 * Like {@linkcode forEachTensor}, without decoding: `onTensor` gets each tensor's stored bytes, for
 * callers that convert them elsewhere (the `tensorflow` backend widens BF16 natively at load).
 */
export function forEachRawTensor(
  file: string,
  onTensor: (name: string, tensor: RawTensor) => void | Promise<void>,
  options: RawTensorOptions = {},
): Promise<SafetensorsHeader> {
  const reuse = options.reuseBuffer;
  const shared: ReadBuffer | null = reuse ? (reuse === true ? { bytes: null } : reuse) : null;
  return walkTensors(file, options.filter, async (name, info, f, position, length, largest) => {
    const padded = Math.ceil(length / 4) * 4;
    let buf: Uint8Array;
    if (shared) {
      if (!shared.bytes || shared.bytes.byteLength < padded) {
        shared.bytes = null; // let the old one go before allocating the larger one
        shared.bytes = new Uint8Array(Math.ceil(largest / 4) * 4);
      }
      buf = shared.bytes;
      buf.fill(0, length, padded);
    } else {
      buf = new Uint8Array(padded);
    }
    const bytes = buf.subarray(0, length);
    await readInto(f, position, bytes, file);
    await onTensor(name, { dtype: info.dtype, shape: info.shape, bytes });
  });
}

/**
 * Open `file`, parse its header, and visit the selected tensors in file order (sequential IO);
 * `visit` also learns the byte length of the largest selected tensor.
 */
async function walkTensors(
  file: string,
  filter: ((name: string) => boolean) | undefined,
  visit: (
    name: string,
    info: TensorInfo,
    f: Deno.FsFile,
    position: number,
    length: number,
    largest: number,
  ) => Promise<void>,
): Promise<SafetensorsHeader> {
  const f = await Deno.open(file, { read: true });
  try {
    const header = await parseHeader(f, file);
    const entries = Object.entries(header.tensors)
      .filter(([name]) => !filter || filter(name))
      .sort((a, b) => a[1].dataOffsets[0] - b[1].dataOffsets[0]);
    const largest = Math.max(0, ...entries.map(([, i]) => i.dataOffsets[1] - i.dataOffsets[0]));
    for (const [name, info] of entries) {
      const [begin, end] = info.dataOffsets;
      await visit(name, info, f, header.dataStart + begin, end - begin, largest);
    }
    return header;
  } finally {
    f.close();
  }
}

/**
 * Read every tensor of one safetensors file into memory.
 *
 * @example
 * ```ts ignore
 * const tensors = await readSafetensors("model.safetensors");
 * console.log(tensors["model.norm.weight"].shape);
 * ```
 */
export async function readSafetensors(file: string): Promise<Record<string, LoadedTensor>> {
  const out: Record<string, LoadedTensor> = {};
  await forEachTensor(file, (name, t) => {
    out[name] = t;
  });
  return out;
}

/** The shard files of a checkpoint directory and which tensor lives where. */
export interface CheckpointFiles {
  /** Shard file paths, in order. */
  files: string[];
  /** tensor name -> shard path, when an index file exists. */
  weightMap?: Record<string, string>;
  /** The index file, when sharded. */
  indexFile?: string;
}

/**
 * A shard name from an index must name a file inside the checkpoint folder: a relative path without
 * `..` segments (a symlink inside the folder, as the Hub cache makes, stays allowed).
 */
function checkShardName(shard: unknown, tensor: string, indexFile: string): asserts shard is string {
  if (typeof shard !== "string" || shard === "") {
    throw new Error(
      `Index file ${indexFile} maps tensor ${tensor} to ${JSON.stringify(shard)}, not a file name.`,
    );
  }
  const parts = shard.split(/[\\/]/);
  if (shard.startsWith("/") || /^[A-Za-z]:/.test(shard) || shard.startsWith("\\") || parts.includes("..")) {
    throw new Error(
      `Index file ${indexFile} maps tensor ${tensor} to the shard '${shard}', which lies outside the checkpoint folder; shard names must be relative paths inside it.`,
    );
  }
}

/** Find the safetensors files of a checkpoint directory (`model.safetensors.index.json` or `model.safetensors`). */
export async function checkpointFiles(dir: string): Promise<CheckpointFiles> {
  const indexFile = `${dir}/model.safetensors.index.json`;
  if (await exists(indexFile)) {
    let index: { weight_map?: Record<string, string> };
    try {
      index = JSON.parse(await Deno.readTextFile(indexFile));
    } catch (e) {
      throw new Error(`Index file ${indexFile} is not valid JSON (${(e as Error).message}).`);
    }
    if (!index.weight_map || typeof index.weight_map !== "object") {
      throw new Error(`Index file ${indexFile} has no 'weight_map'.`);
    }
    const weightMap: Record<string, string> = {};
    const files: string[] = [];
    for (const [name, shard] of Object.entries(index.weight_map)) {
      checkShardName(shard, name, indexFile);
      const path = `${dir}/${shard}`;
      weightMap[name] = path;
      if (!files.includes(path)) files.push(path);
    }
    for (const path of files) {
      if (!(await exists(path))) {
        const tensor = Object.entries(weightMap).find(([, p]) => p === path)![0];
        throw new Error(`Shard ${path} (listed in ${indexFile} for tensor ${tensor}) does not exist.`);
      }
    }
    return { files, weightMap, indexFile };
  }
  const single = `${dir}/model.safetensors`;
  if (await exists(single)) return { files: [single] };
  const others: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      if (e.name.endsWith(".safetensors")) others.push(`${dir}/${e.name}`);
    }
  } catch {
    throw new Error(`Checkpoint directory ${dir} does not exist or cannot be read.`);
  }
  if (others.length) return { files: others.sort() };
  throw new Error(`Checkpoint directory ${dir} has no model.safetensors or model.safetensors.index.json.`);
}

// ---------------------------------------------------------------------------------------------
// Writing

/** float32 -> bfloat16 bits, round to nearest even (as torch does). */
function f32ToBf16(src: Float32Array): Uint16Array {
  const u = new Uint32Array(src.buffer, src.byteOffset, src.length);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < u.length; i++) {
    const x = u[i];
    if ((x & 0x7fffffff) > 0x7f800000) out[i] = (x >>> 16) | 0x40; // quiet NaN
    else out[i] = (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
  }
  return out;
}

/** float32 -> float16 bits, round to nearest even. */
function f32ToF16(src: Float32Array): Uint16Array {
  const u = new Uint32Array(src.buffer, src.byteOffset, src.length);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < u.length; i++) {
    const x = u[i];
    const sign = (x >>> 16) & 0x8000;
    const e = (x >>> 23) & 0xff;
    let m = x & 0x7fffff;
    if (e === 0xff) {
      out[i] = sign | 0x7c00 | (m ? 0x200 : 0);
      continue;
    }
    let he = e - 127 + 15;
    if (he >= 31) {
      out[i] = sign | 0x7c00; // overflow -> inf
      continue;
    }
    if (he <= 0) {
      if (he < -10) {
        out[i] = sign;
        continue;
      }
      m |= 0x800000;
      const shift = 14 - he;
      let hm = m >>> shift;
      const rem = m & ((1 << shift) - 1);
      const half = 1 << (shift - 1);
      if (rem > half || (rem === half && (hm & 1))) hm++;
      out[i] = sign | hm;
      continue;
    }
    let hm = m >>> 13;
    const rem = m & 0x1fff;
    if (rem > 0x1000 || (rem === 0x1000 && (hm & 1))) {
      hm++;
      if (hm === 0x400) {
        hm = 0;
        he++;
        if (he >= 31) {
          out[i] = sign | 0x7c00;
          continue;
        }
      }
    }
    out[i] = sign | (he << 10) | hm;
  }
  return out;
}

function encode(data: Float32Array, dtype: SaveDtype): Uint8Array {
  const d = data.byteOffset % 4 === 0 ? data : data.slice();
  switch (dtype) {
    case "F32":
      return new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
    case "BF16": {
      const b = f32ToBf16(d);
      return new Uint8Array(b.buffer);
    }
    case "F16": {
      const b = f32ToF16(d);
      return new Uint8Array(b.buffer);
    }
  }
}

/** Map a config dtype (`bfloat16`, `float16`, `float32`) or a safetensors one to a save dtype. */
export function toSaveDtype(dtype: string): SaveDtype {
  switch (dtype.toLowerCase()) {
    case "f32":
    case "float32":
    case "float":
      return "F32";
    case "bf16":
    case "bfloat16":
      return "BF16";
    case "f16":
    case "float16":
    case "half":
      return "F16";
    default:
      throw new Error(`Cannot save tensors as dtype '${dtype}': choose float32, bfloat16 or float16.`);
  }
}

/**
 * Write float32 tensors to one safetensors file, stored as `dtype` (default F32).
 * Written with {@linkcode writeFileAtomic} (a synced temporary file renamed into place), so a crash never
 * leaves a half-written file under the real name.
 *
 * @example
 * ```ts ignore
 * await writeSafetensors("/tmp/x.safetensors", { w: { shape: [2], data: new Float32Array([1, 2]) } });
 * ```
 */
export async function writeSafetensors(
  file: string,
  tensors: Record<string, TensorToWrite>,
  options: { dtype?: SaveDtype; metadata?: Record<string, string> } = {},
): Promise<void> {
  const dtype = options.dtype ?? "F32";
  const header: Record<string, unknown> = { __metadata__: { format: "pt", ...(options.metadata ?? {}) } };
  const bytesPer = DTYPE_BYTES[dtype];
  let offset = 0;
  const names = Object.keys(tensors);
  for (const name of names) {
    const t = tensors[name];
    if (t.data.length !== prod(t.shape)) {
      throw new Error(`Tensor ${name} has ${t.data.length} values but shape [${t.shape}] (writing ${file}).`);
    }
    const size = t.data.length * bytesPer;
    header[name] = { dtype, shape: t.shape, data_offsets: [offset, offset + size] };
    offset += size;
  }
  let json = new TextEncoder().encode(JSON.stringify(header));
  // Pad the header with spaces to a multiple of 8 so the data section is aligned (as the reference writer does).
  const padded = Math.ceil(json.length / 8) * 8;
  if (padded !== json.length) {
    const p = new Uint8Array(padded).fill(0x20);
    p.set(json);
    json = p;
  }
  await writeFileAtomic(file, async (f) => {
    const len = new Uint8Array(8);
    new DataView(len.buffer).setBigUint64(0, BigInt(json.length), true);
    await writeAll(f, len);
    await writeAll(f, json);
    for (const name of names) {
      await writeAll(f, encode(tensors[name].data, dtype));
      faultPoint("safetensors:tensor-written");
    }
  });
}

async function writeAll(f: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.length) done += await f.write(bytes.subarray(done));
}

// ---------------------------------------------------------------------------------------------
// Whole checkpoints

/** A tensor of a checkpoint being written, fetched only when its shard is written. */
export interface LazyTensor {
  /** Hub name. */
  name: string;
  /** Dimensions. */
  shape: number[];
  /** Produces the row-major values (e.g. downloads a variable). */
  data: () => Float32Array | Promise<Float32Array>;
}

/** Options of {@linkcode writeCheckpoint}. */
export interface WriteCheckpointOptions {
  /** Storage dtype of the tensors. Default F32. */
  dtype?: SaveDtype;
  /** Largest shard in bytes before a new one starts (a single bigger tensor gets its own). Default 2 GiB. */
  maxShardBytes?: number;
  /** Other files to copy into the checkpoint (e.g. the source model's tokenizer files). */
  copyFiles?: string[];
}

/** Files of a checkpoint folder that a save replaces (everything else there is kept). */
function isWeightOrConfig(name: string): boolean {
  return name === "config.json" || name.endsWith(".safetensors") || name === "model.safetensors.index.json";
}

/**
 * Write `config.json` and the tensors (one `model.safetensors`, or `model-0000i-of-0000n.safetensors`
 * shards plus `model.safetensors.index.json`) to `dir` crash-safely with {@linkcode replaceDirAtomic}: after
 * a kill at any point `dir` holds the complete old or the complete new checkpoint. Files already in `dir` that are not weights or
 * config (tokenizer files, ...) are carried over.
 */
export async function writeCheckpoint(
  dir: string,
  config: Record<string, unknown>,
  tensors: LazyTensor[],
  options: WriteCheckpointOptions = {},
): Promise<void> {
  const dtype = options.dtype ?? "F32";
  const maxBytes = options.maxShardBytes ?? 2 * 1024 ** 3;
  const bytesPer = DTYPE_BYTES[dtype];
  const shards: LazyTensor[][] = [];
  let size = Infinity;
  let total = 0;
  for (const t of tensors) {
    const b = prod(t.shape) * bytesPer;
    total += b;
    if (size + b > maxBytes && (shards.at(-1)?.length ?? 0) > 0 || !shards.length) {
      shards.push([]);
      size = 0;
    }
    shards.at(-1)!.push(t);
    size += b;
  }
  const clean = dir.replace(/\/+$/, "");
  await replaceDirAtomic(clean, async (tmp) => {
    const names = shards.length === 1
      ? ["model.safetensors"]
      : shards.map((_, i) =>
        `model-${String(i + 1).padStart(5, "0")}-of-${String(shards.length).padStart(5, "0")}.safetensors`
      );
    const weightMap: Record<string, string> = {};
    for (let s = 0; s < shards.length; s++) {
      const record: Record<string, TensorToWrite> = {};
      for (const t of shards[s]) {
        record[t.name] = { shape: t.shape, data: await t.data() };
        weightMap[t.name] = names[s];
      }
      await writeSafetensors(`${tmp}/${names[s]}`, record, { dtype });
    }
    if (shards.length > 1) {
      const index = { metadata: { total_size: total }, weight_map: weightMap };
      await Deno.writeTextFile(`${tmp}/model.safetensors.index.json`, JSON.stringify(index, null, 2) + "\n");
    }
    await Deno.writeTextFile(`${tmp}/config.json`, JSON.stringify(config, null, 2) + "\n");
    for (const src of options.copyFiles ?? []) {
      const base = src.slice(src.lastIndexOf("/") + 1);
      if (!isWeightOrConfig(base)) await Deno.copyFile(src, `${tmp}/${base}`);
    }
    if (await exists(clean)) {
      for await (const e of Deno.readDir(clean)) {
        if (e.isFile && !isWeightOrConfig(e.name) && !(await exists(`${tmp}/${e.name}`))) {
          await Deno.copyFile(`${clean}/${e.name}`, `${tmp}/${e.name}`);
        }
      }
    }
  });
}
