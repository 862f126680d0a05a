/**
 * Reading a checkpoint's tensors into float32 variables, one shard and one tensor at a time, with the
 * TensorFlow binding's native widening of BF16/F16 where it is the active backend.
 *
 * @module
 */
import { tf } from "../util/deps.ts";
import { uploadNow } from "./backend.ts";
import {
  checkpointFiles,
  decodeTensorBytes,
  forEachRawTensor,
  forEachTensor,
  type RawTensor,
  type ReadBuffer,
} from "./safetensors.ts";

/** Hub names as transformers 5 may write them for VL models -> the classic names. */
export function canonicalTensorName(name: string): string {
  if (name.startsWith("model.language_model.")) return "model." + name.slice("model.language_model.".length);
  if (name.startsWith("model.visual.")) return name.slice("model.".length);
  return name;
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
  const { files, weightMap, indexFile } = await checkpointFiles(dir);
  const out: Record<string, tf.Variable> = {};
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
      if (native) {
        await forEachRawTensor(file, (raw, t) => {
          const shape = check(raw, file, t.shape);
          // Both conversions copy the bytes out before returning, so one read buffer serves every tensor.
          keep(raw, nativeFloatTensor(native, t, shape) ?? jsFloatTensor(decodeRaw(t, raw, file), shape));
        }, { filter, reuseBuffer: readBuffer });
      } else {
        await forEachTensor(file, (raw, t) => {
          const shape = check(raw, file, t.shape);
          keep(raw, jsFloatTensor(t.data, shape));
        }, { filter });
      }
    }
    for (const name of Object.keys(expected)) {
      if (out[name] || options.optional?.(name)) continue;
      const where = weightMap
        ? (Object.keys(weightMap).some((n) => canonicalTensorName(n) === name)
          ? `its shard ${weightMap[Object.keys(weightMap).find((n) => canonicalTensorName(n) === name)!]}`
          : `the index ${indexFile}`)
        : files.join(", ");
      throw new Error(`Checkpoint ${dir} is missing tensor ${name} (not found in ${where}).`);
    }
  } catch (e) {
    for (const v of Object.values(out)) v.dispose();
    throw e;
  }
  return out;
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
}

/** A TensorFlow eager tensor handle as the binding returns it. */
interface TfNodeTensorMeta {
  id: number;
  shape: number[];
  dtype: number;
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
