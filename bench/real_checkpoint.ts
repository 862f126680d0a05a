/**
 * Real-size checkpoints for `deno task bench --rows real`: Qwen2.5-VL-3B-Instruct's and
 * Qwen2.5-VL-7B-Instruct's published configs with random weights, written ONCE in the Hub's sharded
 * layout (BF16 shards of at most 4 GB + `model.safetensors.index.json` + `preprocessor_config.json`) to
 * the cache, so that medthink's `loadModel` and transformers' `from_pretrained` read the very same
 * files through their real loaders. 3B: 7.5 GB on disk; 7B: 16.6 GB. The writer holds one tensor at a
 * time (the largest, the 7B's embedding, is 2.2 GB as float32 while it is converted).
 *
 *   deno run -A bench/real_checkpoint.ts 3b|7b|smoke [DIR]
 *
 * @module
 */
import { writeCheckpoint } from "../lib/model/safetensors.ts";
import { cacheRoot } from "../lib/model/tiny.ts";
import { parseConfig } from "../lib/model/config.ts";
import { vlExpectedParams } from "../lib/model/qwen25vl.ts";
import { QWEN25VL_PREPROCESSOR } from "../lib/model/tiny_vl.ts";

const VL_COMMON = {
  architectures: ["Qwen2_5_VLForConditionalGeneration"],
  attention_dropout: 0.0,
  bos_token_id: 151643,
  eos_token_id: 151645,
  vision_start_token_id: 151652,
  vision_end_token_id: 151653,
  vision_token_id: 151654,
  image_token_id: 151655,
  video_token_id: 151656,
  hidden_act: "silu",
  initializer_range: 0.02,
  max_position_embeddings: 128000,
  model_type: "qwen2_5_vl",
  rms_norm_eps: 1e-6,
  rope_theta: 1000000.0,
  sliding_window: 32768,
  torch_dtype: "bfloat16",
  transformers_version: "4.41.2",
  use_cache: true,
  use_sliding_window: false,
  rope_scaling: { type: "mrope", mrope_section: [16, 24, 24] },
};

function visionConfig(outHidden: number): Record<string, unknown> {
  return {
    depth: 32,
    hidden_act: "silu",
    hidden_size: 1280,
    intermediate_size: 3420,
    num_heads: 16,
    in_chans: 3,
    out_hidden_size: outHidden,
    patch_size: 14,
    spatial_merge_size: 2,
    spatial_patch_size: 14,
    window_size: 112,
    fullatt_block_indexes: [7, 15, 23, 31],
    tokens_per_second: 2,
    temporal_patch_size: 2,
  };
}

/** Qwen2.5-VL-3B-Instruct's config.json as published (transformers 4 layout), weights excepted. */
export const QWEN25VL_3B_CONFIG: Readonly<Record<string, unknown>> = Object.freeze({
  ...VL_COMMON,
  hidden_size: 2048,
  intermediate_size: 11008,
  max_window_layers: 70,
  num_attention_heads: 16,
  num_hidden_layers: 36,
  num_key_value_heads: 2,
  tie_word_embeddings: true,
  vision_config: visionConfig(2048),
  vocab_size: 151936,
  _note: "medthink real bench: Qwen2.5-VL-3B-Instruct config, random BF16 weights (uniform, std 0.02)",
});

/** Qwen2.5-VL-7B-Instruct's config.json as published, weights excepted. */
export const QWEN25VL_7B_CONFIG: Readonly<Record<string, unknown>> = Object.freeze({
  ...VL_COMMON,
  hidden_size: 3584,
  intermediate_size: 18944,
  max_window_layers: 28,
  num_attention_heads: 28,
  num_hidden_layers: 28,
  num_key_value_heads: 4,
  tie_word_embeddings: false,
  vision_config: visionConfig(3584),
  vocab_size: 152064,
  _note: "medthink real bench: Qwen2.5-VL-7B-Instruct config, random BF16 weights (uniform, std 0.02)",
});

/**
 * The 3B's shapes cut down (2 layers, a 4-block vision tower of width 128) with the real vocabulary and
 * token ids: the bench's code path, checked in seconds.
 */
export const QWEN25VL_SMOKE_CONFIG: Readonly<Record<string, unknown>> = Object.freeze({
  ...QWEN25VL_3B_CONFIG,
  hidden_size: 128,
  intermediate_size: 256,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  num_hidden_layers: 2,
  max_window_layers: 2,
  rope_scaling: { type: "mrope", mrope_section: [4, 6, 6] },
  vision_config: {
    ...visionConfig(128),
    depth: 4,
    hidden_size: 128,
    intermediate_size: 256,
    num_heads: 4,
    fullatt_block_indexes: [1, 3],
  },
  _note: "medthink real bench smoke: Qwen2.5-VL-3B shapes cut down, random BF16 weights",
});

/** The sizes `--size` names. */
export const REAL_CONFIGS: Readonly<Record<string, Readonly<Record<string, unknown>>>> = Object.freeze({
  "3b": QWEN25VL_3B_CONFIG,
  "7b": QWEN25VL_7B_CONFIG,
  smoke: QWEN25VL_SMOKE_CONFIG,
});

/** `<cache>/bench-qwen2.5-vl-<size>-random`. */
export function realModelDir(size: string): string {
  return `${cacheRoot()}/bench-qwen2.5-vl-${size}-random`;
}

function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** Uniform values of standard deviation `std` (xorshift32: this is about speed and memory, not statistics). */
function fillUniform(out: Float32Array, seed: number, std: number): void {
  const a = std * Math.sqrt(3) / 2147483648;
  let s = seed | 0;
  for (let i = 0; i < out.length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = s * a;
  }
}

/** Write the checkpoint of `size` (`3b`, `7b`, `smoke`) unless it is already there; returns its folder. */
export async function ensureRealCheckpoint(size: string, dir = realModelDir(size)): Promise<string> {
  const raw = REAL_CONFIGS[size];
  if (!raw) {
    throw new Error(
      `Unknown real checkpoint size '${size}': choose from ${Object.keys(REAL_CONFIGS).join(", ")}.`,
    );
  }
  try {
    const cfg = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
    await Deno.stat(`${dir}/preprocessor_config.json`);
    if (cfg._note === raw._note) return dir;
  } catch { /* not there yet */ }
  const config = parseConfig(structuredClone(raw) as Record<string, unknown>, "bench config");
  const tensors = Object.entries(vlExpectedParams(config)).map(([name, shape]) => ({
    name,
    shape,
    data: () => {
      const data = new Float32Array(shape.reduce((x, y) => x * y, 1));
      if (/norm[12]?\.weight$|ln_q\.weight$/.test(name)) data.fill(1);
      else fillUniform(data, (hash32(name) ^ 1) | 1, 0.02);
      return data;
    },
  }));
  await writeCheckpoint(dir, structuredClone(raw) as Record<string, unknown>, tensors, {
    dtype: "BF16",
    maxShardBytes: 4 * 1024 ** 3,
  });
  await Deno.writeTextFile(
    `${dir}/preprocessor_config.json`,
    JSON.stringify(QWEN25VL_PREPROCESSOR, null, 2) + "\n",
  );
  return dir;
}

if (import.meta.main) {
  const t0 = performance.now();
  const dir = await ensureRealCheckpoint(Deno.args[0] ?? "smoke", Deno.args[1]);
  console.log(`${dir} (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
}
