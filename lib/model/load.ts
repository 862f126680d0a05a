/**
 * Loading and saving checkpoints in the Hugging Face layout (`config.json` + safetensors).
 *
 * `loadModel` dispatches on `model_type` through the table in `registry.ts`, which each model file
 * (`qwen2.ts`, `qwen25vl.ts`, listed in `architectures.ts`) adds itself to; another architecture is one
 * {@linkcode registerArchitecture} call away.
 *
 * @module
 */
import { recoverInterrupted } from "../util/atomic.ts";
import { useBackend } from "./backend.ts";
import type { CausalLM } from "./types.ts";
import { configToJson, readConfig } from "./config.ts";
import { type LazyTensor, toSaveDtype, writeCheckpoint } from "./safetensors.ts";
import { architectureFor, type LoadModelOptions, registeredArchitectures } from "./registry.ts";
import { widenHalf } from "./weights.ts";
import "./architectures.ts"; // each built-in architecture adds itself to the registry
import { ensureTinyModel, TINY_MODEL_NAME } from "./tiny.ts";
import { ensureTinyVLModel, QWEN25VL_PREPROCESSOR, TINY_VL_MODEL_NAME } from "./tiny_vl.ts";
import { resolveModelDir } from "../hub/models.ts";

export {
  architectureFor,
  type ArchitectureLoader,
  type LoadModelOptions,
  registerArchitecture,
} from "./registry.ts";
export { canonicalTensorName, loadTensors, loadWeights, type WeightsDtype } from "./weights.ts";
export { loadQwen2 } from "./qwen2.ts";

/**
 * Load a checkpoint folder (Hub layout: `config.json` + `model.safetensors` or shards with
 * `model.safetensors.index.json`) into float32 variables on the chosen backend.
 * `"medthink-tiny"` names the embedded default model (created in the cache on first use),
 * `"medthink-tiny-vl"` the embedded vision-language default. A Hub id (`org/name`, `org/name@revision`)
 * names a model in the Hugging Face cache, downloaded there when missing; a folder that exists wins.
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
  await recoverInterrupted(dir); // a save killed between its two renames left the old copy aside
  dir = await resolveModelDir(dir);
  const config = await readConfig(dir);
  const loader = architectureFor(config.modelType);
  if (!loader) {
    throw new Error(
      `Config ${dir}/config.json has model_type '${config.modelType}', which has no loader ` +
        `(registered: ${registeredArchitectures().join(", ")}).`,
    );
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
  // Weights kept at 2 bytes (weightsDtype) are widened one at a time as the writer reaches them.
  for (const [name, h] of Object.entries(model.half ?? {})) {
    tensors.push({
      name,
      shape: h.shape.slice(),
      data: async () => {
        const t = widenHalf(h);
        try {
          return (await t.data()) as Float32Array;
        } finally {
          t.dispose();
        }
      },
    });
  }
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
