/**
 * `medthink-tiny-vl`: the embedded default vision-language model. The Qwen2.5-VL architecture (the
 * decoder of `medthink-tiny` plus a small vision tower with window and full attention blocks), the
 * real Qwen vocabulary (151936 ids) and vision token ids, so the real tokenizer, chat template and
 * image processor apply. Initialised from a fixed seed and written in the Hub layout (`config.json`,
 * `model.safetensors`, `preprocessor_config.json`) to a cache folder on first use; from then on
 * `loadModel` loads it exactly like a downloaded checkpoint.
 *
 * @module
 */
import { parseConfig } from "./config.ts";
import { expectedParams } from "./qwen2.ts";
import { Rng } from "./rng.ts";
import { type LazyTensor, writeCheckpoint } from "./safetensors.ts";
import { cacheRoot } from "../util/cache.ts";
import { visionExpectedParams } from "./vision.ts";

/** The name `loadModel` resolves to the embedded VL default. */
export const TINY_VL_MODEL_NAME = "medthink-tiny-vl";

/** Seed of the initial weights (changing it changes the model: the `_note` changes with it). */
export const TINY_VL_MODEL_SEED = 20251126;

/**
 * config.json of `medthink-tiny-vl`, in the layout of the Hub's Qwen2.5-VL checkpoints (flat text
 * fields, `rope_scaling` with `mrope_section`, nested `vision_config` with `in_chans`). Decoder: hidden
 * 128, 4 layers, 4 heads of 32, 2 key/value heads, tied embeddings, `mrope_section` [4, 6, 6] (the
 * 3B model's 16:24:24 split scaled to head_dim 32). Vision: 4 blocks of hidden 64 (4 heads), full
 * attention in blocks 1 and 3, window attention (112 px) in 0 and 2, merger to 128.
 */
export const TINY_VL_CONFIG: Readonly<Record<string, unknown>> = Object.freeze({
  architectures: ["Qwen2_5_VLForConditionalGeneration"],
  model_type: "qwen2_5_vl",
  hidden_size: 128,
  intermediate_size: 352,
  num_hidden_layers: 4,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  hidden_act: "silu",
  rms_norm_eps: 1e-6,
  rope_theta: 1000000.0,
  rope_scaling: { type: "mrope", mrope_section: [4, 6, 6] },
  max_position_embeddings: 128000,
  vocab_size: 151936,
  tie_word_embeddings: true,
  bos_token_id: 151643,
  eos_token_id: 151645,
  pad_token_id: 151643,
  vision_start_token_id: 151652,
  vision_end_token_id: 151653,
  vision_token_id: 151654,
  image_token_id: 151655,
  video_token_id: 151656,
  torch_dtype: "float32",
  use_sliding_window: false,
  sliding_window: 32768,
  max_window_layers: 4,
  attention_dropout: 0.0,
  initializer_range: 0.02,
  vision_config: {
    depth: 4,
    hidden_act: "silu",
    hidden_size: 64,
    intermediate_size: 128,
    num_heads: 4,
    in_chans: 3,
    out_hidden_size: 128,
    patch_size: 14,
    spatial_merge_size: 2,
    spatial_patch_size: 14,
    window_size: 112,
    fullatt_block_indexes: [1, 3],
    tokens_per_second: 2,
    temporal_patch_size: 2,
  },
  _note:
    `medthink-tiny-vl: random init, seed ${TINY_VL_MODEL_SEED}, normal(0, 0.02) weights, unit norms, zero biases.`,
});

/**
 * The `preprocessor_config.json` the Hub's Qwen2.5-VL checkpoints ship (Python defaults apply to the
 * keys it leaves out: resize on, BICUBIC, rescale 1/255, normalise). `saveModel` writes it for a VL
 * model whose source folder had none.
 */
export const QWEN25VL_PREPROCESSOR: Readonly<Record<string, unknown>> = Object.freeze({
  min_pixels: 3136,
  max_pixels: 12845056,
  patch_size: 14,
  temporal_patch_size: 2,
  merge_size: 2,
  image_mean: [0.48145466, 0.4578275, 0.40821073],
  image_std: [0.26862954, 0.26130258, 0.27577711],
  image_processor_type: "Qwen2VLImageProcessor",
  processor_class: "Qwen2_5_VLProcessor",
});

/**
 * preprocessor_config.json of `medthink-tiny-vl`: Qwen2.5-VL's, with `max_pixels` 200704 (at most
 * 256 image tokens per image) so image examples stay fast on CPU, and the Python defaults spelled out
 * (transformers.js would otherwise skip resizing and normalising).
 */
export const TINY_VL_PREPROCESSOR: Readonly<Record<string, unknown>> = Object.freeze({
  ...QWEN25VL_PREPROCESSOR,
  max_pixels: 200704,
  do_resize: true,
  do_rescale: true,
  rescale_factor: 1 / 255,
  do_normalize: true,
  do_convert_rgb: true,
  resample: 3,
});

/** Where `medthink-tiny-vl` lives: `<cache root>/medthink-tiny-vl`. */
export function defaultVLModelDir(): string {
  return `${cacheRoot()}/${TINY_VL_MODEL_NAME}`;
}

/**
 * The initial weights of `medthink-tiny-vl` in Hub names (vision tower first, then the decoder):
 * normal(0, 0.02) matrices drawn in that order from one seeded stream, norms 1, biases 0.
 */
export function tinyVLModelTensors(seed = TINY_VL_MODEL_SEED): LazyTensor[] {
  const config = parseConfig({ ...TINY_VL_CONFIG }, "medthink-tiny-vl config");
  const rng = new Rng(seed);
  const std = TINY_VL_CONFIG.initializer_range as number;
  const shapes = { ...visionExpectedParams(config.vision!), ...expectedParams(config) };
  return Object.entries(shapes).map(([name, shape]) => {
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    if (/norm[12]?\.weight$|ln_q\.weight$/.test(name)) data.fill(1);
    else if (!name.endsWith(".bias")) rng.fillNormal(data, std);
    return { name, shape, data: () => data };
  });
}

/**
 * Create `medthink-tiny-vl` in the cache (if not there yet) and return its folder.
 *
 * @example
 * ```ts ignore
 * import { ensureTinyVLModel } from "./tiny_vl.ts";
 * const dir = await ensureTinyVLModel(); // ~/.cache/medthink/medthink-tiny-vl
 * ```
 */
export async function ensureTinyVLModel(options: { dir?: string } = {}): Promise<string> {
  const dir = options.dir ?? defaultVLModelDir();
  try {
    const cfg = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
    await Deno.stat(`${dir}/model.safetensors`);
    await Deno.stat(`${dir}/preprocessor_config.json`);
    if (cfg._note === TINY_VL_CONFIG._note) return dir;
  } catch { /* not there yet (or incomplete): (re)create */ }
  const aux = await Deno.makeTempDir({ prefix: "medthink-tiny-vl-" });
  try {
    // The processor config travels with the weights, so the folder appears complete or not at all.
    await Deno.writeTextFile(
      `${aux}/preprocessor_config.json`,
      JSON.stringify(TINY_VL_PREPROCESSOR, null, 2) + "\n",
    );
    await writeCheckpoint(
      dir,
      structuredClone(TINY_VL_CONFIG) as Record<string, unknown>,
      tinyVLModelTensors(),
      {
        dtype: "F32",
        copyFiles: [`${aux}/preprocessor_config.json`],
      },
    );
  } catch (e) {
    // Another process may have created it at the same moment: use theirs if it is complete.
    try {
      await Deno.stat(`${dir}/model.safetensors`);
      await Deno.stat(`${dir}/preprocessor_config.json`);
      return dir;
    } catch {
      throw e;
    }
  } finally {
    await Deno.remove(aux, { recursive: true }).catch(() => {});
  }
  return dir;
}
