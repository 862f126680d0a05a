/**
 * Real-size checkpoints for `deno task bench --rows real`: Qwen2.5-VL-3B-Instruct's and
 * Qwen2.5-VL-7B-Instruct's published configs with random weights, written ONCE in the Hub's sharded
 * layout (BF16 shards of at most 4 GB + `model.safetensors.index.json` + `preprocessor_config.json`) to
 * the cache, so that medthink's `loadModel` and transformers' `from_pretrained` read the very same
 * files through their real loaders. 3B: 7.5 GB on disk; 7B: 16.6 GB. The writer streams the values (at
 * most 64 MB of them in memory at a time).
 *
 *   deno run -A bench/real_checkpoint.ts 3b|7b|smoke [DIR]
 *
 * @module
 */
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

/** Values per chunk of generated weights: the writer never holds more than this (64 MB as float32). */
const CHUNK = 1 << 24;
// One set of buffers for every tensor: a fresh pair per tensor piled up 8.8 GB of garbage (measured, 7B).
const f32 = new Float32Array(CHUNK);
const bits = new Uint32Array(f32.buffer);
const out = new Uint16Array(CHUNK);

/**
 * Write `count` BF16 values of one tensor to `file`, made `CHUNK` at a time: ones for norm weights, else
 * uniform of standard deviation 0.02 (xorshift32 seeded by the name: this is about speed and memory, not
 * statistics), rounded to nearest even.
 */
async function writeTensorBf16(file: Deno.FsFile, name: string, count: number): Promise<void> {
  const ones = /norm[12]?\.weight$|ln_q\.weight$/.test(name);
  const a = 0.02 * Math.sqrt(3) / 2147483648;
  let s = (hash32(name) ^ 1) | 1;
  for (let done = 0; done < count; done += CHUNK) {
    const n = Math.min(CHUNK, count - done);
    for (let i = 0; i < n; i++) {
      if (ones) {
        f32[i] = 1;
        continue;
      }
      s ^= s << 13;
      s ^= s >>> 17;
      s ^= s << 5;
      f32[i] = s * a;
    }
    for (let i = 0; i < n; i++) {
      const u = bits[i];
      out[i] = ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
    }
    const bytes = new Uint8Array(out.buffer, 0, n * 2);
    for (let off = 0; off < bytes.length;) off += await file.write(bytes.subarray(off));
  }
}

/**
 * Write the checkpoint of `size` (`3b`, `7b`, `smoke`) unless it is already there; returns its folder.
 * The shards are streamed tensor by tensor and chunk by chunk (lib's `writeCheckpoint` holds a whole shard
 * as float32: 8 GB for a 4 GB shard), into a temporary folder renamed at the end.
 */
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
  const entries = Object.entries(vlExpectedParams(config));
  const maxShard = 4 * 1024 ** 3;
  const shards: [string, number[]][][] = [[]];
  let used = 0;
  for (const e of entries) {
    const b = e[1].reduce((x, y) => x * y, 1) * 2;
    if (used + b > maxShard && shards.at(-1)!.length) {
      shards.push([]);
      used = 0;
    }
    shards.at(-1)!.push(e);
    used += b;
  }
  const tmp = `${dir}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  await Deno.mkdir(tmp, { recursive: true });
  const names = shards.map((_, i) =>
    shards.length === 1
      ? "model.safetensors"
      : `model-${String(i + 1).padStart(5, "0")}-of-${String(shards.length).padStart(5, "0")}.safetensors`
  );
  const weightMap: Record<string, string> = {};
  let total = 0;
  for (let s = 0; s < shards.length; s++) {
    const header: Record<string, unknown> = { __metadata__: { format: "pt" } };
    let offset = 0;
    for (const [name, shape] of shards[s]) {
      const bytes = shape.reduce((x, y) => x * y, 1) * 2;
      header[name] = { dtype: "BF16", shape, data_offsets: [offset, offset + bytes] };
      offset += bytes;
      weightMap[name] = names[s];
    }
    total += offset;
    let json = JSON.stringify(header);
    json += " ".repeat((8 - (json.length % 8)) % 8); // the data section 8-byte aligned, as the reference writer does
    const f = await Deno.open(`${tmp}/${names[s]}`, { write: true, create: true, truncate: true });
    try {
      const len = new Uint8Array(8);
      new DataView(len.buffer).setBigUint64(0, BigInt(json.length), true);
      await f.write(len);
      const hj = new TextEncoder().encode(json);
      for (let off = 0; off < hj.length;) off += await f.write(hj.subarray(off));
      for (const [name, shape] of shards[s]) await writeTensorBf16(f, name, shape.reduce((x, y) => x * y, 1));
    } finally {
      f.close();
    }
  }
  if (shards.length > 1) {
    await Deno.writeTextFile(
      `${tmp}/model.safetensors.index.json`,
      JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2) + "\n",
    );
  }
  await Deno.writeTextFile(`${tmp}/config.json`, JSON.stringify(raw, null, 2) + "\n");
  await Deno.writeTextFile(
    `${tmp}/preprocessor_config.json`,
    JSON.stringify(QWEN25VL_PREPROCESSOR, null, 2) + "\n",
  );
  await Deno.remove(dir, { recursive: true }).catch(() => {});
  await Deno.rename(tmp, dir);
  return dir;
}

if (import.meta.main) {
  const t0 = performance.now();
  const dir = await ensureRealCheckpoint(Deno.args[0] ?? "smoke", Deno.args[1]);
  console.log(`${dir} (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
}
