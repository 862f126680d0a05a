/**
 * The benchmark's model: Qwen2.5-0.5B's exact config (hidden 896, 24 layers, 14 heads, 2 KV heads,
 * intermediate 4864, vocab 151936, tied head) with random weights, written ONCE in Hub layout (BF16
 * shards + index, as checkpoints are published) to the cache, so that both sides (`loadModel` and
 * transformers' `from_pretrained`) load the very same file through their real loaders.
 *
 * @module
 */
import { writeCheckpoint } from "../lib/model/safetensors.ts";
import { cacheRoot } from "../lib/util/cache.ts";
import { expectedParams } from "../lib/model/qwen2.ts";
import { parseConfig } from "../lib/model/config.ts";

/** Qwen2.5-0.5B's config.json as published (transformers 4 layout), weights excepted. */
export const QWEN25_05B_CONFIG: Readonly<Record<string, unknown>> = Object.freeze({
  architectures: ["Qwen2ForCausalLM"],
  attention_dropout: 0.0,
  bos_token_id: 151643,
  eos_token_id: 151643,
  hidden_act: "silu",
  hidden_size: 896,
  initializer_range: 0.02,
  intermediate_size: 4864,
  max_position_embeddings: 32768,
  max_window_layers: 24,
  model_type: "qwen2",
  num_attention_heads: 14,
  num_hidden_layers: 24,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000.0,
  sliding_window: 32768,
  tie_word_embeddings: true,
  torch_dtype: "bfloat16",
  transformers_version: "4.40.1",
  use_cache: true,
  use_sliding_window: false,
  vocab_size: 151936,
  _note: "medthink bench: random weights (uniform, std 0.02), seed 1",
});

/** `<cache>/bench-qwen2.5-0.5b-random`. */
export function benchModelDir(): string {
  return `${cacheRoot()}/bench-qwen2.5-0.5b-random`;
}

function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** Uniform values of standard deviation `std`: a cheap counter hash (this is about speed, not statistics). */
function fillUniform(out: Float32Array, seed: number, std: number): void {
  const a = std * Math.sqrt(3) / 2147483648;
  let s = seed | 0;
  for (let i = 0; i < out.length; i++) {
    // xorshift32
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = s * a;
  }
}

/**
 * A smaller model with the same vocabulary (hidden 64, 2 layers): checks the benchmark's code path where
 * Qwen2.5-0.5B does not fit, e.g. WebGPU on Mesa's software Vulkan, whose 128 MiB storage-binding limit
 * is below the 0.5B embedding's 545 MB.
 */
export const SMOKE_CONFIG_OVERRIDES: Readonly<Record<string, unknown>> = Object.freeze({
  hidden_size: 64,
  intermediate_size: 128,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  num_hidden_layers: 2,
  max_window_layers: 2,
  _note: "medthink bench smoke: random weights (uniform, std 0.02), seed 1, hidden 64, 2 layers",
});

/** Write the checkpoint unless it is already there; returns its folder. `overrides` change the config. */
export async function ensureBenchModel(
  dir = benchModelDir(),
  overrides: Readonly<Record<string, unknown>> = {},
): Promise<string> {
  const raw = { ...QWEN25_05B_CONFIG, ...overrides };
  try {
    const cfg = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
    if (cfg._note === raw._note) return dir;
  } catch { /* not there yet */ }
  const config = parseConfig({ ...raw }, "bench config");
  const tensors = Object.entries(expectedParams(config)).map(([name, shape]) => ({
    name,
    shape,
    data: () => {
      const data = new Float32Array(shape.reduce((x, y) => x * y, 1));
      if (name.endsWith("norm.weight")) data.fill(1);
      else fillUniform(data, (hash32(name) ^ 1) | 1, 0.02);
      return data;
    },
  }));
  // Shards of ~0.5 GB keep the writer's memory low and exercise the index path real checkpoints use.
  await writeCheckpoint(dir, raw, tensors, {
    dtype: "BF16",
    maxShardBytes: 512 * 1024 ** 2,
  });
  return dir;
}

if (import.meta.main) {
  const t0 = performance.now();
  const dir = await ensureBenchModel(Deno.args[0]);
  console.log(`${dir} (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
}
