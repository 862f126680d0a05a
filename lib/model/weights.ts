/**
 * Reading a checkpoint's tensors into float32 variables, one shard and one tensor at a time, with the
 * TensorFlow binding's native widening of BF16/F16 where it is the active backend.
 *
 * @module
 */
import { tf } from "../util/deps.ts";
import { uploadNow } from "./backend.ts";
import type { HalfWeight } from "./types.ts";
import { widenHalfProgram } from "./webgpu_fused.ts";
import { hostFloatTensor, hostHalfWords } from "./native_gemv.ts";
import {
  checkpointFiles,
  decodeTensorBytes,
  forEachRawTensor,
  forEachTensor,
  type RawTensor,
  type ReadBuffer,
} from "./safetensors.ts";

export type { HalfWeight };

/** Hub names as transformers 5 may write them for VL models -> the classic names. */
export function canonicalTensorName(name: string): string {
  if (name.startsWith("model.language_model.")) return "model." + name.slice("model.language_model.".length);
  if (name.startsWith("model.visual.")) return name.slice("model.".length);
  return name;
}

/** How `loadModel` keeps the weights that are not trained: `float32`, or 2 bytes each (`bfloat16`, `float16`). */
export type WeightsDtype = "float32" | "bfloat16" | "float16";

/** The weights dtypes `loadModel` accepts. */
export const WEIGHTS_DTYPES: readonly WeightsDtype[] = ["float32", "bfloat16", "float16"];

/** Options of {@linkcode loadWeights}. */
export interface LoadWeightsOptions {
  /** Names that may be absent from the checkpoint. */
  optional?: (name: string) => boolean;
  /** `bfloat16` / `float16`: the tensors `half` selects are kept packed at 2 bytes (default `float32`). */
  weightsDtype?: WeightsDtype;
  /** Which tensors to keep at half size when `weightsDtype` asks for it (default: none). */
  half?: (name: string, shape: number[]) => boolean;
}

/** What {@linkcode loadWeights} returns. */
export interface LoadedWeights {
  /** Float32 variables. */
  params: Record<string, tf.Variable>;
  /** The frozen weights kept at 2 bytes per value. */
  half: Record<string, HalfWeight>;
}

/**
 * Read the named tensors of a checkpoint folder into float32 variables, one shard (and one tensor)
 * at a time, checking each shape. `expected` maps canonical names to shapes; `optional` names may be
 * absent. Tensors the checkpoint has beyond these are not read.
 */
export async function loadTensors(
  dir: string,
  expected: Record<string, number[]>,
  options: { optional?: (name: string) => boolean } = {},
): Promise<Record<string, tf.Variable>> {
  return (await loadWeights(dir, expected, options)).params;
}

/**
 * {@linkcode loadTensors} that can keep the tensors `options.half` selects at 2 bytes per value
 * (`options.weightsDtype` `bfloat16` or `float16`): a checkpoint stored in that format is copied in
 * as it is (no float32 copy of it ever exists), others are rounded to nearest even.
 */
export async function loadWeights(
  dir: string,
  expected: Record<string, number[]>,
  options: LoadWeightsOptions = {},
): Promise<LoadedWeights> {
  const { files, weightMap, indexFile } = await checkpointFiles(dir);
  const out: Record<string, tf.Variable> = {};
  const halfOut: Record<string, HalfWeight> = {};
  const halfDtype = options.weightsDtype && options.weightsDtype !== "float32" ? options.weightsDtype : null;
  const isHalf = (name: string, shape: number[]) =>
    halfDtype !== null && shape.reduce((a, d) => a * d, 1) % 2 === 0 &&
    (options.half?.(name, shape) ?? false);
  const seenIn = new Map<string, string>();
  const native = nativeTensorflow();
  const check = (raw: string, file: string, tShape: number[]): number[] => {
    const name = canonicalTensorName(raw);
    const shape = expected[name];
    if (seenIn.has(name)) {
      throw new Error(`Tensor ${raw} appears twice: in ${seenIn.get(name)} and in ${file}.`);
    }
    seenIn.set(name, file);
    if (shape.length !== tShape.length || shape.some((d, i) => d !== tShape[i])) {
      throw new Error(
        `Tensor ${raw} in ${file} has shape [${tShape}] but ${dir}/config.json implies [${shape}].`,
      );
    }
    return shape;
  };
  const keep = (raw: string, init: tf.Tensor) => {
    // The variable shares init's data: on webgpu that data goes to the GPU here, by the fast path.
    out[canonicalTensorName(raw)] = tf.variable(uploadNow(init), true);
    init.dispose();
  };
  const filter = (raw: string) => expected[canonicalTensorName(raw)] !== undefined;
  const readBuffer: ReadBuffer = { bytes: null };
  try {
    for (const file of files) {
      if (native || halfDtype) {
        await forEachRawTensor(file, (raw, t) => {
          const shape = check(raw, file, t.shape);
          const name = canonicalTensorName(raw);
          if (halfDtype && isHalf(name, shape)) {
            const words = packHalf(t, halfDtype, raw, file);
            // In host memory that the native single-row products read (native_gemv.ts) where they are on.
            const packed = (native && shape.length === 2 ? hostHalfWords(words, halfDtype) : null) ??
              packedTensor(words);
            halfOut[name] = { packed, shape, dtype: halfDtype };
            return;
          }
          if (!native) return keep(raw, jsFloatTensor(decodeRaw(t, raw, file), shape));
          // All conversions copy the bytes out before returning, so one read buffer serves every tensor.
          keep(
            raw,
            (shape.length === 2 ? hostMatrix(t, shape) : null) ?? nativeFloatTensor(native, t, shape) ??
              jsFloatTensor(decodeRaw(t, raw, file), shape),
          );
        }, { filter, reuseBuffer: readBuffer });
      } else {
        await forEachTensor(file, (raw, t) => {
          const shape = check(raw, file, t.shape);
          keep(raw, jsFloatTensor(t.data, shape));
        }, { filter });
      }
    }
    for (const name of Object.keys(expected)) {
      if (out[name] || halfOut[name] || options.optional?.(name)) continue;
      const where = weightMap
        ? (Object.keys(weightMap).some((n) => canonicalTensorName(n) === name)
          ? `its shard ${weightMap[Object.keys(weightMap).find((n) => canonicalTensorName(n) === name)!]}`
          : `the index ${indexFile}`)
        : files.join(", ");
      throw new Error(`Checkpoint ${dir} is missing tensor ${name} (not found in ${where}).`);
    }
  } catch (e) {
    for (const v of Object.values(out)) v.dispose();
    for (const h of Object.values(halfOut)) h.packed.dispose();
    throw e;
  }
  return { params: out, half: halfOut };
}

// ---------------------------------------------------------------------------------------------
// 16-bit weights

/**
 * The int32 words of a stored tensor in `dtype`. A tensor stored in that format gives a view of the
 * read buffer (valid until the next tensor is read): {@linkcode packedTensor} copies it.
 */
function packHalf(t: RawTensor, dtype: "bfloat16" | "float16", name: string, file: string): Int32Array {
  const n = t.shape.reduce((a, d) => a * d, 1);
  const stored = dtype === "bfloat16" ? "BF16" : "F16";
  if (t.dtype === stored) return new Int32Array(t.bytes.buffer as ArrayBuffer, 0, n / 2);
  const src = decodeRaw(t, name, file);
  const bits = new Uint32Array(Float32Array.from(src).buffer);
  const codes = new Uint16Array(n);
  if (dtype === "bfloat16") { for (let i = 0; i < n; i++) codes[i] = f32BitsToBf16(bits[i]); }
  else for (let i = 0; i < n; i++) codes[i] = f32BitsToF16(bits[i]);
  return new Int32Array(codes.buffer);
}

/** bfloat16 code of a float32 (bits), rounded to nearest even; NaN stays NaN. */
export function f32BitsToBf16(u: number): number {
  if ((u & 0x7f800000) === 0x7f800000 && (u & 0x7fffff) !== 0) return ((u >>> 16) | 0x40) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** IEEE half code of a float32 (bits), rounded to nearest even (overflow to infinity, underflow to subnormals). */
export function f32BitsToF16(u: number): number {
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  let mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1), half = 1 << (shift - 1);
    if (rem > half || (rem === half && (h & 1))) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  // A carry out of the mantissa correctly bumps the exponent (up to infinity).
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++;
  return sign | h;
}

/** float32 value of every 16-bit code of `dtype`. */
function decodeTable(dtype: "bfloat16" | "float16"): Float32Array {
  const out = new Float32Array(65536);
  if (dtype === "bfloat16") {
    const bits = new Uint32Array(out.buffer);
    for (let c = 0; c < 65536; c++) bits[c] = c << 16;
    return out;
  }
  for (let c = 0; c < 65536; c++) {
    const s = c & 0x8000 ? -1 : 1, e = (c >>> 10) & 0x1f, m = c & 0x3ff;
    out[c] = e === 0
      ? s * m * 2 ** -24
      : e === 31
      ? (m ? NaN : s * Infinity)
      : s * (1 + m / 1024) * 2 ** (e - 15);
  }
  return out;
}

/**
 * A tensor of packed words, copied out of `words` (which may be the reused read buffer). On TensorFlow
 * the copy is made by TensorFlow (`words + 0` into new memory): the binding adopts some buffers instead of
 * copying them (it depends on their alignment), and a JavaScript copy would stay behind as garbage the
 * size of the weights until the next collection (measured: 129 MB peak instead of 80 MB for 80 MB).
 */
function packedTensor(words: Int32Array): tf.Tensor1D {
  const be = nativeTensorflow();
  if (!be) return tf.tensor1d(words.slice(), "int32");
  const b = be.binding;
  const temps = [
    b.createTensor([words.length], b.TF_INT32, words),
    b.createTensor([], b.TF_INT32, new Int32Array(1)),
  ];
  try {
    const [out] = b.executeOp("AddV2", [{ name: "T", type: b.TF_ATTR_TYPE, value: b.TF_INT32 }], temps, 1);
    return be.createOutputTensor(out) as tf.Tensor1D;
  } finally {
    for (const id of temps) b.deleteTensor(id);
  }
}

// Per backend and format: [table of low-half codes, table indexed by the signed high half + 32768].
const TABLES = new Map<string, [tf.Tensor1D, tf.Tensor1D]>();

function tablesFor(dtype: "bfloat16" | "float16"): [tf.Tensor1D, tf.Tensor1D] {
  const key = `${tf.getBackend()}:${dtype}`;
  const have = TABLES.get(key);
  if (have && !have[0].isDisposed && !have[1].isDisposed) return have;
  const t = decodeTable(dtype);
  // The high half arrives as a signed int16 (floorDiv of the word): code c sits at (c ^ 0x8000).
  const hi = new Float32Array(65536);
  for (let c = 0; c < 65536; c++) hi[c ^ 0x8000] = t[c];
  const made: [tf.Tensor1D, tf.Tensor1D] = tf.tidy(() => [tf.keep(tf.tensor1d(t)), tf.keep(tf.tensor1d(hi))]);
  TABLES.set(key, made);
  return made;
}

/**
 * The float32 tensor of a {@linkcode HalfWeight} (exact: every 16-bit value is a float32), a new
 * tensor for the caller to dispose (or to leave to its `tf.tidy`). On TensorFlow it is the binding's
 * `Bitcast` + `Cast`; elsewhere two table lookups per word (tfjs has no bitcast).
 */
export function widenHalf(w: HalfWeight): tf.Tensor {
  const be = nativeTensorflow();
  if (be) return nativeWiden(be, w);
  // tfjs-webgpu's int32 kernels compute in float32 (30720 of the 65536 bf16 codes came out wrong through
  // the tf ops below): a WGSL program of bit operations widens exactly (lib/model/webgpu_fused.ts).
  if (tf.getBackend() === "webgpu") return widenHalfProgram(w.packed, w.shape, w.dtype);
  return tf.tidy(() => {
    const words = w.packed;
    const base = tf.scalar(65536, "int32");
    // The signed high half and the low half, exactly: webgpu's int32 floorDiv divides in float32 and
    // can be one off near multiples of 65536, so the remainder is brought back into [0, 65536) (int32
    // products wrap alike on every backend, so an off-by-one at the top of the range corrects too).
    const high0 = tf.floorDiv(words, base);
    const low0 = tf.sub(words, tf.mul(high0, base));
    const adjust = tf.sub(tf.cast(tf.less(low0, 0), "int32"), tf.cast(tf.greaterEqual(low0, base), "int32"));
    const high = tf.sub(high0, adjust);
    const low = tf.add(low0, tf.mul(adjust, base));
    const [tLow, tHigh] = tablesFor(w.dtype);
    const pair = tf.stack(
      [tf.gather(tLow, low), tf.gather(tHigh, tf.add(high, tf.scalar(32768, "int32")))],
      1,
    );
    return tf.reshape(pair, w.shape);
  });
}

/**
 * Rows `[start, start + count)` of a 2-byte matrix {@linkcode HalfWeight} `[N, K]`, widened to float32
 * `[count, K]` (a new tensor). `start * K` must be even (a slice starts on a whole packed word). On
 * webgpu the program reads from that word on (tfjs-webgpu's int32 `slice` goes through float32 and
 * would change the words); elsewhere the words are sliced, then widened.
 */
export function widenHalfRows(w: HalfWeight, start: number, count: number): tf.Tensor {
  const K = w.shape[w.shape.length - 1];
  if (w.shape.length !== 2 || (start * K) % 2 !== 0 || start < 0 || start + count > w.shape[0]) {
    throw new Error(
      `widenHalfRows: rows [${start}, ${start + count}) of [${w.shape}] do not start on a word.`,
    );
  }
  if (tf.getBackend() === "webgpu") return widenHalfProgram(w.packed, [count, K], w.dtype, (start * K) / 2);
  return tf.tidy(() => {
    const packed = tf.slice(w.packed, [(start * K) / 2], [(count * K) / 2]) as tf.Tensor1D;
    return widenHalf({ packed, shape: [count, K], dtype: w.dtype });
  });
}

function nativeWiden(be: TfNodeBackend, w: HalfWeight): tf.Tensor {
  const b = be.binding;
  const half = w.dtype === "bfloat16" ? TF_BFLOAT16 : TF_HALF;
  const type = (name: string, value: number) => ({ name, type: b.TF_ATTR_TYPE, value });
  const [words] = be.getInputTensorIds([w.packed]);
  const temps: number[] = [];
  try {
    const [halves] = b.executeOp("Bitcast", [type("T", b.TF_INT32), type("type", half)], [words], 1);
    temps.push(halves.id);
    const [wide] = b.executeOp(
      "Cast",
      [type("SrcT", half), type("DstT", b.TF_FLOAT), {
        name: "Truncate",
        type: b.TF_ATTR_BOOL,
        value: false,
      }],
      [halves.id],
      1,
    );
    temps.push(wide.id);
    const dims = b.createTensor([w.shape.length], b.TF_INT32, Int32Array.from(w.shape));
    temps.push(dims);
    const [out] = b.executeOp(
      "Reshape",
      [type("T", b.TF_FLOAT), type("Tshape", b.TF_INT32)],
      [wide.id, dims],
      1,
    );
    return be.createOutputTensor(out);
  } finally {
    for (const id of temps) b.deleteTensor(id);
  }
}

function jsFloatTensor(data: Float32Array | Int32Array, shape: number[]): tf.Tensor {
  return tf.tensor(data instanceof Float32Array ? data : Float32Array.from(data), shape, "float32");
}

function decodeRaw(t: RawTensor, name: string, file: string): Float32Array | Int32Array {
  return decodeTensorBytes(t.bytes, t.dtype, name, file);
}

/** The parts of tfjs-node's kernel backend that {@linkcode nativeFloatTensor} uses. */
interface TfNodeBackend {
  binding: {
    TF_FLOAT: number;
    TF_INT32: number;
    TF_ATTR_TYPE: number;
    TF_ATTR_BOOL: number;
    createTensor(shape: number[], dtype: number, values: Float32Array | Int32Array): number;
    executeOp(
      name: string,
      attrs: { name: string; type: number; value: unknown }[],
      inputs: number[],
      outputs: number,
    ): TfNodeTensorMeta[];
    deleteTensor(id: number): void;
  };
  createOutputTensor(meta: TfNodeTensorMeta): tf.Tensor;
  getInputTensorIds(tensors: tf.Tensor[]): number[];
}

/** A TensorFlow eager tensor handle as the binding returns it. */
interface TfNodeTensorMeta {
  id: number;
  shape: number[];
  dtype: number;
}

/**
 * A float32 matrix in host memory that the native single-row products read (lib/model/native_gemv.ts;
 * TensorFlow adopts that memory, so it is the weight's only copy), from a stored F32, BF16 or F16 tensor;
 * null where the native products are off or for other dtypes (the caller's TensorFlow-made tensor then).
 */
function hostMatrix(t: RawTensor, shape: number[]): tf.Tensor | null {
  const n = shape.reduce((a, d) => a * d, 1);
  const buf = t.bytes.buffer as ArrayBuffer;
  if (t.dtype === "F32") return hostFloatTensor(new Float32Array(buf, 0, n), shape);
  if (t.dtype === "BF16" || t.dtype === "F16") {
    return hostFloatTensor(new Uint16Array(buf, 0, n), shape, t.dtype === "BF16" ? "bfloat16" : "float16");
  }
  return null;
}

/** The active backend when it is tfjs-node's (the TensorFlow C binding), else null. */
function nativeTensorflow(): TfNodeBackend | null {
  if (tf.getBackend() !== "tensorflow") return null;
  const be = tf.backend() as unknown as Partial<TfNodeBackend>;
  return typeof be.binding?.executeOp === "function" && typeof be.createOutputTensor === "function"
    ? be as TfNodeBackend
    : null;
}

// TF_DataType values of the TensorFlow C API (stable), which the binding does not export.
const TF_HALF = 19;
const TF_BFLOAT16 = 14;

/**
 * A float32 tensor made by TensorFlow itself from a tensor's stored bytes: F32 is copied in once,
 * BF16/F16 are passed in as 32-bit words and widened by TensorFlow's `Bitcast` + `Cast` (exact, and
 * native code instead of a JavaScript loop). Unlike `tf.tensor`, which the binding keeps as a
 * JavaScript array until first use, the result already lives in TensorFlow's memory, so no second
 * copy of the weights stays in the JavaScript heap. null for what this does not handle (other dtypes,
 * an odd count of 16-bit values).
 */
function nativeFloatTensor(be: TfNodeBackend, t: RawTensor, shape: number[]): tf.Tensor | null {
  const b = be.binding;
  const n = shape.reduce((a, d) => a * d, 1);
  const buf = t.bytes.buffer as ArrayBuffer;
  if (t.dtype === "F32") {
    // A copy: the binding may adopt a float32 array's memory (measured: it does for some buffers)
    // rather than copy it, and the caller reuses `t.bytes`.
    const id = b.createTensor(shape, b.TF_FLOAT, new Float32Array(buf, 0, n).slice());
    return be.createOutputTensor({ id, shape, dtype: b.TF_FLOAT });
  }
  const half = t.dtype === "BF16" ? TF_BFLOAT16 : t.dtype === "F16" ? TF_HALF : 0;
  if (!half || n % 2 !== 0 || n === 0) return null;
  const type = (name: string, value: number) => ({ name, type: b.TF_ATTR_TYPE, value });
  // The 32-bit words are consumed by `Cast` (which writes new memory) before this returns, so it does
  // not matter whether the binding copies them or adopts `t.bytes`.
  const temps: number[] = [];
  try {
    const words = b.createTensor([n / 2], b.TF_INT32, new Int32Array(buf, 0, n / 2));
    temps.push(words);
    const [halves] = b.executeOp("Bitcast", [type("T", b.TF_INT32), type("type", half)], [words], 1);
    temps.push(halves.id);
    const [wide] = b.executeOp(
      "Cast",
      [
        type("SrcT", half),
        type("DstT", b.TF_FLOAT),
        { name: "Truncate", type: b.TF_ATTR_BOOL, value: false },
      ],
      [halves.id],
      1,
    );
    temps.push(wide.id);
    const dims = b.createTensor([shape.length], b.TF_INT32, Int32Array.from(shape));
    temps.push(dims);
    const [out] = b.executeOp(
      "Reshape",
      [type("T", b.TF_FLOAT), type("Tshape", b.TF_INT32)],
      [wide.id, dims],
      1,
    );
    return be.createOutputTensor(out);
  } finally {
    for (const id of temps) b.deleteTensor(id);
  }
}
