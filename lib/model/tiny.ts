/**
 * `medthink-tiny`: the embedded default model. A Qwen2-architecture decoder small enough to train on
 * two CPU cores, with the real Qwen vocabulary (151936 ids, so the real tokenizer applies), initialised
 * from a fixed seed and written in the Hub layout to a cache folder on first use; from then on it is
 * loaded by `loadModel` exactly like a downloaded checkpoint.
 *
 * @module
 */
import { cacheRoot } from "../util/cache.ts";
import { parseConfig } from "./config.ts";
import { expectedParams } from "./qwen2.ts";
import { Rng } from "./rng.ts";
import { type LazyTensor, writeCheckpoint } from "./safetensors.ts";

/** The name `loadModel` resolves to the embedded default. */
export const TINY_MODEL_NAME = "medthink-tiny";

/** Seed of the initial weights (changing it changes the model: bump the cache folder too). */
export const TINY_MODEL_SEED = 20251125;

/**
 * config.json of `medthink-tiny` (transformers-4 layout, as Hub Qwen2.5 checkpoints): hidden 128,
 * 4 layers, 4 heads of 32, 2 key/value heads, MLP 352, tied embeddings, Qwen2.5's vocabulary and
 * special ids. About 20M parameters, 19.4M of them the embedding.
 */
export const TINY_CONFIG: Readonly<Record<string, unknown>> = Object.freeze({
  architectures: ["Qwen2ForCausalLM"],
  model_type: "qwen2",
  hidden_size: 128,
  intermediate_size: 352,
  num_hidden_layers: 4,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  hidden_act: "silu",
  rms_norm_eps: 1e-6,
  rope_theta: 1000000.0,
  max_position_embeddings: 32768,
  vocab_size: 151936,
  tie_word_embeddings: true,
  bos_token_id: 151643,
  eos_token_id: [151645, 151643],
  pad_token_id: 151643,
  torch_dtype: "float32",
  use_sliding_window: false,
  sliding_window: 32768,
  attention_dropout: 0.0,
  initializer_range: 0.02,
  _note:
    `medthink-tiny: random init, seed ${TINY_MODEL_SEED}, normal(0, 0.02) weights, unit norms, zero biases.`,
});

/** The cache root (one rule for the whole toolkit: see `lib/util/cache.ts`). */
export { cacheRoot } from "../util/cache.ts";

/** Where `medthink-tiny` lives: `<cache root>/medthink-tiny`. */
export function defaultModelDir(): string {
  return `${cacheRoot()}/${TINY_MODEL_NAME}`;
}

/**
 * The initial weights of `medthink-tiny`, in Hub names: normal(0, 0.02) matrices drawn in name order
 * from one seeded stream, norms 1, biases 0.
 */
export function tinyModelTensors(seed = TINY_MODEL_SEED): LazyTensor[] {
  const config = parseConfig({ ...TINY_CONFIG }, "medthink-tiny config");
  const rng = new Rng(seed);
  const std = (TINY_CONFIG.initializer_range as number) ?? 0.02;
  // Drawn eagerly in a fixed order, so every tensor's values are independent of which are written first.
  return Object.entries(expectedParams(config)).map(([name, shape]) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    if (name.endsWith("norm.weight")) data.fill(1);
    else if (!name.endsWith(".bias")) rng.fillNormal(data, std);
    return { name, shape, data: () => data };
  });
}

/**
 * Create `medthink-tiny` in the cache (if not there yet) and return its folder.
 *
 * @example
 * ```ts ignore
 * import { ensureTinyModel } from "./tiny.ts";
 * const dir = await ensureTinyModel(); // ~/.cache/medthink/medthink-tiny
 * ```
 */
export async function ensureTinyModel(options: { dir?: string } = {}): Promise<string> {
  const dir = options.dir ?? defaultModelDir();
  try {
    const cfg = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
    await Deno.stat(`${dir}/model.safetensors`);
    if (cfg._note === TINY_CONFIG._note) return dir;
  } catch { /* not there yet (or broken): (re)create */ }
  try {
    await writeCheckpoint(dir, { ...TINY_CONFIG }, tinyModelTensors(), { dtype: "F32" });
  } catch (e) {
    // Another process may have created it at the same moment: use theirs if it is complete.
    try {
      await Deno.stat(`${dir}/model.safetensors`);
      return dir;
    } catch {
      throw e;
    }
  }
  return dir;
}
