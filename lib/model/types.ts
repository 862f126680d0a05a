/**
 * The shared contract of the model layer. Every other layer (training, GRPO, data, eval,
 * vision) programs against these interfaces, not against a concrete class.
 *
 * Conventions:
 * - Token-id inputs may be nested arrays (`number[][]`) or int32 tensors `[B, T]`.
 * - Prompts in a batch are LEFT-padded; the attention mask is 1 on real tokens, 0 on padding.
 * - Positions always come from the mask: `position = cumsum(mask) - 1` (as Hugging Face generate).
 * - All parameters are float32 `tf.Variable`s named with their Hub (safetensors) names.
 *
 * @module
 */
import type { tf } from "../deps.ts";

/** Which tfjs backend runs the model. `auto` = `tensorflow` when its binding loads, else `wasm`. */
export type BackendName = "auto" | "tensorflow" | "wasm" | "webgpu" | "cpu";

/** The vision tower's hyperparameters of a Qwen2.5-VL checkpoint (see `lib/model/config.ts`). */
export interface VisionConfig {
  depth: number;
  hiddenSize: number;
  intermediateSize: number;
  numHeads: number;
  outHiddenSize: number;
  patchSize: number;
  spatialMergeSize: number;
  temporalPatchSize: number;
  inChannels: number;
  windowSize: number;
  fullattBlockIndexes: number[];
  hiddenAct: string;
}

/** A normalised model config: the fields of Qwen2 / Qwen2.5-VL (text part) in camelCase. */
export interface ModelConfig {
  /** `qwen2` or `qwen2_5_vl` (the `model_type` of config.json). */
  modelType: string;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  numKeyValueHeads: number;
  /** hiddenSize / numAttentionHeads unless the config says otherwise. */
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  tieWordEmbeddings: boolean;
  maxPositionEmbeddings: number;
  bosTokenId?: number;
  /** All ids that end a generation. */
  eosTokenIds: number[];
  padTokenId?: number;
  /** dtype the checkpoint was saved in (`bfloat16`, `float16`, `float32`). */
  dtype: string;
  /** Multimodal RoPE sections (Qwen2.5-VL), e.g. [16, 24, 24]. */
  mropeSection?: number[];
  imageTokenId?: number;
  visionStartTokenId?: number;
  visionEndTokenId?: number;
  vision?: VisionConfig;
  /** The config.json as read, so saving can write it back faithfully. */
  raw: Record<string, unknown>;
}

/** LoRA adapter on one linear module (PEFT semantics: y = W x + b + (alpha / r) * B (A x)). */
export interface LoraAdapter {
  /** `[r, in]` */
  A: tf.Variable;
  /** `[out, r]` */
  B: tf.Variable;
  /** alpha / r */
  scale: number;
}

/** Options of one forward pass. */
export interface ForwardOptions {
  /** `[B, T]` 1 = real token, 0 = padding. Default all ones. */
  attentionMask?: number[][] | tf.Tensor2D;
  /** Explicit positions `[B, T]` (text) or `[3, B, T]` (multimodal RoPE). Default from the mask. */
  positionIds?: tf.Tensor;
  /** Qwen2.5-VL: the processor's `pixel_values` `[patches, C*tp*p*p]`. */
  pixelValues?: tf.Tensor2D;
  /** Qwen2.5-VL: `[images, 3]` (t, h, w) patch grid per image. */
  imageGridThw?: number[][];
}

/** Options of `model.generate`. */
export interface GenerateOptions extends ForwardOptions {
  /** Maximum new tokens per sequence. Default 32. */
  maxNewTokens?: number;
  /** Sampling temperature; 0 = greedy. Default 1. */
  temperature?: number;
  /** Nucleus sampling mass. Default 1 (off). */
  topP?: number;
  /** Keep only the k most likely tokens; 0 = off. Default 0. */
  topK?: number;
  /** Completions per prompt; output row `i * numSamples + j` is sample j of prompt i. Default 1. */
  numSamples?: number;
  /** Ids that end a sequence. Default: the config's eosTokenIds. */
  eosTokenIds?: number[];
  /** One base seed for the whole call (each output row derives its own stream from it and its row index). */
  seed?: number;
  /** One seed per output row (length B * numSamples): a row's sample then does not depend on the rest of the batch. */
  seeds?: number[];
  /** Id written after a sequence ended (default: padTokenId, else the first eos id). */
  padTokenId?: number;
}

/** What `model.generate` returns, one entry per output row. */
export interface GenerateResult {
  /** The new tokens of each sequence (including the stop token when it stopped on one). */
  tokens: number[][];
  /** log p(token) of each chosen token under the model at the sampling temperature (T = 1 when greedy). */
  logprobs: number[][];
  finishReasons: ("stop" | "length")[];
}

/** A Qwen2-family causal language model held in tfjs variables. */
export interface CausalLM {
  readonly config: ModelConfig;
  /** Directory it was loaded from, if any. */
  readonly dir?: string;
  /** The tfjs backend in use. */
  readonly backend: string;
  /** All parameters as float32 variables under their Hub names (`model.layers.0.self_attn.q_proj.weight`, ...). */
  readonly params: Record<string, tf.Variable>;
  /** LoRA adapters keyed by module name (`model.layers.0.self_attn.q_proj`); empty when none. */
  lora: Record<string, LoraAdapter>;
  /** When false, adapters are ignored (the reference model of GRPO with LoRA). */
  loraEnabled: boolean;
  /** Final-norm hidden states `[B, T, H]` (differentiable; no logits materialised). */
  hidden(inputIds: number[][] | tf.Tensor2D, options?: ForwardOptions): tf.Tensor3D;
  /** The output projection `[V, H]` (the embedding matrix when tied). */
  lmHeadWeight(): tf.Tensor2D;
  /** Full logits `[B, T, V]`. */
  logits(inputIds: number[][] | tf.Tensor2D, options?: ForwardOptions): tf.Tensor3D;
  /** Batched, KV-cached generation from left-padded prompts. */
  generate(inputIds: number[][] | tf.Tensor2D, options?: GenerateOptions): Promise<GenerateResult>;
  /** Free every tensor the model holds. */
  dispose(): void;
}
