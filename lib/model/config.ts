/**
 * `config.json` of Qwen2 and Qwen2.5-VL checkpoints -> a normalised {@linkcode ModelConfig}.
 *
 * Two layouts exist in the wild:
 * - transformers 4 (the Hub originals): flat text fields, `rope_theta`, `rope_scaling.mrope_section`,
 *   `torch_dtype`, vision fields under `vision_config` with `in_chans`.
 * - transformers 5 (current fine-tunes): `rope_parameters: {rope_theta, rope_type, mrope_section}`,
 *   `dtype`, and for Qwen2.5-VL the text fields nested under `text_config` (`in_channels` in the vision part).
 *
 * @module
 */
import type { ModelConfig, VisionConfig } from "./types.ts";

export type { ModelConfig, VisionConfig };

/** A parsed `config.json` before normalisation (any JSON object). */
export type Raw = Record<string, unknown>;

function isObject(x: unknown): x is Raw {
  return typeof x === "object" && x !== null && !Array.isArray(x);
}

function num(src: Raw, key: string, file: string, fallback?: number): number {
  const v = src[key];
  if (v === undefined || v === null) {
    if (fallback !== undefined) return fallback;
    throw new Error(`Config ${file} is missing the required field '${key}'.`);
  }
  if (typeof v !== "number" || !Number.isFinite(v)) {
    throw new Error(`Config ${file} has a non-numeric value for '${key}': ${JSON.stringify(v)}.`);
  }
  return v;
}

function optInt(src: Raw, key: string): number | undefined {
  const v = src[key];
  return typeof v === "number" ? v : undefined;
}

/** The vision tower's config (Qwen2.5-VL `vision_config`), both layouts. */
export function parseVisionConfig(v: Raw, file: string): VisionConfig {
  const f = `${file} (vision_config)`;
  const inCh = v.in_channels ?? v.in_chans;
  return {
    depth: num(v, "depth", f),
    hiddenSize: num(v, "hidden_size", f),
    intermediateSize: num(v, "intermediate_size", f),
    numHeads: num(v, "num_heads", f),
    outHiddenSize: num(v, "out_hidden_size", f),
    patchSize: num(v, "patch_size", f, typeof v.spatial_patch_size === "number" ? v.spatial_patch_size : 14),
    spatialMergeSize: num(v, "spatial_merge_size", f, 2),
    temporalPatchSize: num(v, "temporal_patch_size", f, 2),
    inChannels: typeof inCh === "number" ? inCh : 3,
    windowSize: num(v, "window_size", f, 112),
    fullattBlockIndexes: Array.isArray(v.fullatt_block_indexes)
      ? (v.fullatt_block_indexes as number[]).slice()
      : [],
    hiddenAct: typeof v.hidden_act === "string" ? v.hidden_act : "silu",
  };
}

function idList(v: unknown): number[] {
  if (typeof v === "number") return [v];
  if (Array.isArray(v)) return v.filter((x) => typeof x === "number");
  return [];
}

/**
 * Normalise a parsed `config.json` (`file` is only used in error messages).
 * Supports `model_type` `qwen2` and the text part of `qwen2_5_vl` (plus its `vision` block).
 *
 * @example
 * ```ts
 * import { parseConfig } from "./config.ts";
 * const cfg = parseConfig({
 *   model_type: "qwen2", vocab_size: 300, hidden_size: 64, intermediate_size: 160,
 *   num_hidden_layers: 3, num_attention_heads: 4, num_key_value_heads: 2, eos_token_id: 2,
 * }, "config.json");
 * console.log(cfg.headDim); // 16
 * ```
 */
export function parseConfig(raw: Raw, file = "config.json"): ModelConfig {
  if (!isObject(raw)) throw new Error(`Config ${file} is not a JSON object.`);
  const modelType = raw.model_type;
  if (typeof modelType !== "string") {
    throw new Error(`Config ${file} is missing the required field 'model_type'.`);
  }
  if (!["qwen2", "qwen2_5_vl", "qwen2_vl"].includes(modelType)) {
    throw new Error(
      `Config ${file} has model_type '${modelType}', which is not supported (qwen2, qwen2_5_vl).`,
    );
  }
  // transformers 5 nests the text model under text_config; its fields win over the top level's.
  const text: Raw = isObject(raw.text_config) ? { ...raw, ...raw.text_config } : raw;
  const where = isObject(raw.text_config) ? `${file} (text_config)` : file;

  const ropeParams = isObject(text.rope_parameters)
    ? text.rope_parameters
    : isObject(raw.rope_parameters)
    ? raw.rope_parameters
    : undefined;
  const ropeScaling = isObject(text.rope_scaling)
    ? text.rope_scaling
    : isObject(raw.rope_scaling)
    ? raw.rope_scaling
    : undefined;
  const ropeTheta = typeof ropeParams?.rope_theta === "number"
    ? ropeParams.rope_theta
    : typeof text.rope_theta === "number"
    ? text.rope_theta
    : 10000; // Qwen2Config's default
  const ropeType = (ropeParams?.rope_type ?? ropeScaling?.rope_type ?? ropeScaling?.type) as
    | string
    | undefined;
  if (ropeType && !["default", "mrope"].includes(ropeType)) {
    throw new Error(`Config ${file} uses rope type '${ropeType}', which is not supported (default, mrope).`);
  }
  const mrope = (ropeParams?.mrope_section ?? ropeScaling?.mrope_section) as number[] | undefined;

  const hiddenSize = num(text, "hidden_size", where);
  const numAttentionHeads = num(text, "num_attention_heads", where);
  const headDim = num(text, "head_dim", where, hiddenSize / numAttentionHeads);
  if (!Number.isInteger(headDim)) {
    throw new Error(
      `Config ${where}: hidden_size ${hiddenSize} is not divisible by num_attention_heads ${numAttentionHeads}.`,
    );
  }
  const numKeyValueHeads = num(text, "num_key_value_heads", where, numAttentionHeads);
  if (numAttentionHeads % numKeyValueHeads !== 0) {
    throw new Error(
      `Config ${where}: num_attention_heads ${numAttentionHeads} is not a multiple of num_key_value_heads ${numKeyValueHeads}.`,
    );
  }
  if (mrope && mrope.reduce((a, b) => a + b, 0) * 2 !== headDim) {
    throw new Error(
      `Config ${file}: mrope_section [${mrope}] does not sum to head_dim / 2 = ${headDim / 2}.`,
    );
  }
  const eos = idList(text.eos_token_id);
  const dtype = (raw.dtype ?? raw.torch_dtype ?? text.dtype ?? text.torch_dtype ?? "float32") as string;
  const tie = raw.tie_word_embeddings ?? text.tie_word_embeddings;

  const cfg: ModelConfig = {
    modelType,
    vocabSize: num(text, "vocab_size", where),
    hiddenSize,
    intermediateSize: num(text, "intermediate_size", where),
    numHiddenLayers: num(text, "num_hidden_layers", where),
    numAttentionHeads,
    numKeyValueHeads,
    headDim,
    rmsNormEps: num(text, "rms_norm_eps", where, 1e-6),
    ropeTheta,
    tieWordEmbeddings: typeof tie === "boolean" ? tie : false,
    maxPositionEmbeddings: num(text, "max_position_embeddings", where, 32768),
    bosTokenId: optInt(text, "bos_token_id"),
    eosTokenIds: eos,
    padTokenId: optInt(text, "pad_token_id"),
    dtype,
    raw,
  };
  if (mrope) cfg.mropeSection = mrope.slice();
  const img = optInt(raw, "image_token_id") ?? optInt(text, "image_token_id");
  if (img !== undefined) cfg.imageTokenId = img;
  const vs = optInt(raw, "vision_start_token_id") ?? optInt(text, "vision_start_token_id");
  if (vs !== undefined) cfg.visionStartTokenId = vs;
  const ve = optInt(raw, "vision_end_token_id") ?? optInt(text, "vision_end_token_id");
  if (ve !== undefined) cfg.visionEndTokenId = ve;
  if (isObject(raw.vision_config)) cfg.vision = parseVisionConfig(raw.vision_config, file);
  if (typeof text.hidden_act === "string" && text.hidden_act !== "silu") {
    throw new Error(`Config ${where} has hidden_act '${text.hidden_act}'; only silu (SwiGLU) is supported.`);
  }
  return cfg;
}

/**
 * Read and parse `<dir>/config.json` (plus the eos ids of `generation_config.json` when present).
 *
 * @example
 * ```ts ignore
 * const cfg = await readConfig("path/to/Qwen2.5-0.5B-Instruct");
 * ```
 */
export async function readConfig(dir: string): Promise<ModelConfig> {
  const file = `${dir}/config.json`;
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch {
    throw new Error(`Config ${file} does not exist or cannot be read.`);
  }
  let raw: Raw;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new Error(`Config ${file} is not valid JSON (${(e as Error).message}).`);
  }
  const cfg = parseConfig(raw, file);
  // Hugging Face generate stops on generation_config.json's eos ids (instruct checkpoints list
  // <|im_end|> and <|endoftext|> there while config.json names one): use both.
  try {
    const gen = JSON.parse(await Deno.readTextFile(`${dir}/generation_config.json`));
    for (const id of idList(gen?.eos_token_id)) if (!cfg.eosTokenIds.includes(id)) cfg.eosTokenIds.push(id);
    if (cfg.padTokenId === undefined && typeof gen?.pad_token_id === "number") {
      cfg.padTokenId = gen.pad_token_id;
    }
  } catch { /* no (readable) generation_config.json */ }
  return cfg;
}

/**
 * The config.json to write for `cfg` when its weights are saved as `dtype` (e.g. `bfloat16`):
 * the original object with its dtype key updated, in the layout it came in.
 */
export function configToJson(cfg: ModelConfig, dtype: string): Raw {
  const raw: Raw = structuredClone(cfg.raw);
  if ("dtype" in raw || !("torch_dtype" in raw)) raw.dtype = dtype;
  if ("torch_dtype" in raw) raw.torch_dtype = dtype;
  if (isObject(raw.text_config)) {
    const t = raw.text_config;
    if ("dtype" in t) t.dtype = dtype;
    if ("torch_dtype" in t) t.torch_dtype = dtype;
  }
  return raw;
}
