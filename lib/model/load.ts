/**
 * Loading and saving checkpoints in the Hugging Face layout (`config.json` + safetensors).
 *
 * `loadModel` dispatches on `model_type` through a registry: `qwen2` is built in, and `qwen2_5_vl`
 * loads its text part until the vision model registers its own loader with
 * {@linkcode registerArchitecture}.
 *
 * @module
 */
import { tf } from "../deps.ts";
import { uploadNow, useBackend } from "../backend.ts";
import type { CausalLM, ModelConfig } from "./types.ts";
import { configToJson, readConfig } from "./config.ts";
import {
  checkpointFiles,
  decodeTensorBytes,
  forEachRawTensor,
  forEachTensor,
  type LazyTensor,
  type RawTensor,
  type ReadBuffer,
  toSaveDtype,
  writeCheckpoint,
} from "./safetensors.ts";
import { expectedParams, Qwen2Model } from "./qwen2.ts";
import { ensureTinyModel, TINY_MODEL_NAME } from "./tiny.ts";
import { ensureTinyVLModel, QWEN25VL_PREPROCESSOR, TINY_VL_MODEL_NAME } from "./tiny_vl.ts";

/** Options of {@linkcode loadModel}. */
export interface LoadModelOptions {
  /** tfjs backend (`auto`, `tensorflow`, `wasm`, `webgpu`, `cpu`); default `MEDTHINK_BACKEND`, else `auto`. */
  backend?: string;
}

/** Builds a model of one `model_type` from a checkpoint folder and its parsed config (backend already selected). */
export type ArchitectureLoader = (
  dir: string,
  config: ModelConfig,
  options: LoadModelOptions,
) => Promise<CausalLM>;

const ARCHITECTURES = new Map<string, ArchitectureLoader>();

/**
 * Register (or replace) the loader for a `model_type`, e.g. the Qwen2.5-VL model:
 * `registerArchitecture("qwen2_5_vl", loadQwen25VL)`.
 */
export function registerArchitecture(modelType: string, loader: ArchitectureLoader): void {
  ARCHITECTURES.set(modelType, loader);
}

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

/** The built-in loader: a Qwen2 decoder (also the text part of a Qwen2.5-VL checkpoint, `visual.*` ignored). */
export async function loadQwen2(
  dir: string,
  config: ModelConfig,
  _options: LoadModelOptions = {},
): Promise<Qwen2Model> {
  const params = await loadTensors(dir, expectedParams(config));
  return new Qwen2Model(config, params, { dir, backend: tf.getBackend() });
}

registerArchitecture("qwen2", loadQwen2);

/**
 * Load a checkpoint folder (Hub layout: `config.json` + `model.safetensors` or shards with
 * `model.safetensors.index.json`) into float32 variables on the chosen backend.
 * `"medthink-tiny"` names the embedded default model (created in the cache on first use),
 * `"medthink-tiny-vl"` the embedded vision-language default.
 *
 * @example
 * ```ts ignore
 * import { loadModel } from "./load.ts";
 * const model = await loadModel("medthink-tiny", { backend: "wasm" });
 * const out = await model.generate([[151644, 872]], { maxNewTokens: 4, temperature: 0 });
 * ```
 */
export async function loadModel(dir: string, options: LoadModelOptions = {}): Promise<CausalLM> {
  await useBackend(options.backend);
  if (dir === TINY_MODEL_NAME) dir = await ensureTinyModel();
  if (dir === TINY_VL_MODEL_NAME) dir = await ensureTinyVLModel();
  const config = await readConfig(dir);
  // The VL model registers its loader when imported; it imports this module, so load it lazily.
  if (config.modelType === "qwen2_5_vl" && !ARCHITECTURES.has("qwen2_5_vl")) await import("./qwen25vl.ts");
  const loader = ARCHITECTURES.get(config.modelType) ??
    (config.modelType.startsWith("qwen2") ? loadQwen2 : undefined);
  if (!loader) {
    throw new Error(`Config ${dir}/config.json has model_type '${config.modelType}', which has no loader.`);
  }
  return await loader(dir, config, options);
}

/** Options of {@linkcode saveModel}. */
export interface SaveModelOptions {
  /** Storage dtype: `float32` (default; save -> load is exact), `bfloat16` or `float16`. */
  dtype?: string;
  /** Largest shard in bytes (default 2 GiB); bigger checkpoints get shards and an index. */
  maxShardBytes?: number;
  /** Copy the source folder's other files (tokenizer, chat template, processor config). Default true. */
  copyAuxFiles?: boolean;
}

const AUX_FILES = [
  "tokenizer.json",
  "tokenizer_config.json",
  "vocab.json",
  "merges.txt",
  "special_tokens_map.json",
  "added_tokens.json",
  "chat_template.json",
  "chat_template.jinja",
  "generation_config.json",
  "preprocessor_config.json",
];

/**
 * Save a model's parameters in the Hub layout: `config.json` (the original, dtype updated) and
 * safetensors (sharded with an index when large), atomically. LoRA adapters are not included
 * (merge them into the weights first if they should be).
 *
 * @example
 * ```ts ignore
 * await saveModel(model, "runs/sft/checkpoint", { dtype: "bfloat16" });
 * ```
 */
export async function saveModel(model: CausalLM, dir: string, options: SaveModelOptions = {}): Promise<void> {
  const dtype = toSaveDtype(options.dtype ?? "float32");
  const dtypeName = { F32: "float32", BF16: "bfloat16", F16: "float16" }[dtype];
  const tensors: LazyTensor[] = Object.entries(model.params).map(([name, v]) => ({
    name,
    shape: v.shape.slice(),
    data: async () => (await v.data()) as Float32Array,
  }));
  const copyFiles: string[] = [];
  if (model.dir && (options.copyAuxFiles ?? true)) {
    for (const f of AUX_FILES) {
      try {
        if ((await Deno.stat(`${model.dir}/${f}`)).isFile) copyFiles.push(`${model.dir}/${f}`);
      } catch { /* not there */ }
    }
  }
  // A vision-language checkpoint needs its image processor's settings to be usable elsewhere: write
  // Qwen2.5-VL's published ones when the source folder had none.
  let aux: string | undefined;
  if (model.config.vision && !copyFiles.some((f) => f.endsWith("/preprocessor_config.json"))) {
    aux = await Deno.makeTempDir({ prefix: "medthink-save-" });
    await Deno.writeTextFile(
      `${aux}/preprocessor_config.json`,
      JSON.stringify(QWEN25VL_PREPROCESSOR, null, 2) + "\n",
    );
    copyFiles.push(`${aux}/preprocessor_config.json`);
  }
  try {
    await writeCheckpoint(dir, configToJson(model.config, dtypeName), tensors, {
      dtype,
      maxShardBytes: options.maxShardBytes,
      copyFiles,
    });
  } finally {
    if (aux) await Deno.remove(aux, { recursive: true }).catch(() => {});
  }
}
