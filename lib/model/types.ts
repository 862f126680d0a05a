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
import type { tf } from "../util/deps.ts";

/** Which tfjs backend runs the model. `auto` = `tensorflow` when its binding loads, else `wasm`. */
export type BackendName = "auto" | "tensorflow" | "wasm" | "webgpu" | "cpu";

/** The vision tower's hyperparameters of a Qwen2.5-VL checkpoint (see `lib/model/config.ts`). */
export interface VisionConfig {
  /** Transformer blocks of the vision tower. */
  depth: number;
  /** Width of the vision tower. */
  hiddenSize: number;
  /** MLP width of the vision blocks. */
  intermediateSize: number;
  /** Attention heads of the vision blocks. */
  numHeads: number;
  /** Width of the merged patch embeddings handed to the language model (its hidden size). */
  outHiddenSize: number;
  /** Side of a square image patch in pixels (14). */
  patchSize: number;
  /** Patches merged per side into one language-model token (2: a 2x2 merge). */
  spatialMergeSize: number;
  /** Frames per temporal patch (2; a still image is repeated). */
  temporalPatchSize: number;
  /** Colour channels of the input (3). */
  inChannels: number;
  /** Side of the attention window in pixels for windowed-attention blocks (112). */
  windowSize: number;
  /** Indexes of the blocks with full (not windowed) attention. */
  fullattBlockIndexes: number[];
  /** Activation of the vision MLP (`silu`). */
  hiddenAct: string;
}

/** A normalised model config: the fields of Qwen2 / Qwen2.5-VL (text part) in camelCase. */
export interface ModelConfig {
  /** `qwen2` or `qwen2_5_vl` (the `model_type` of config.json). */
  modelType: string;
  /** Vocabulary size (rows of the embedding and of the head). */
  vocabSize: number;
  /** Width of the residual stream. */
  hiddenSize: number;
  /** MLP width. */
  intermediateSize: number;
  /** Decoder layers. */
  numHiddenLayers: number;
  /** Query heads. */
  numAttentionHeads: number;
  /** Key/value heads (grouped-query attention). */
  numKeyValueHeads: number;
  /** hiddenSize / numAttentionHeads unless the config says otherwise. */
  headDim: number;
  /** Epsilon of RMSNorm. */
  rmsNormEps: number;
  /** Base of the rotary position embedding. */
  ropeTheta: number;
  /** Whether the output head shares the embedding matrix. */
  tieWordEmbeddings: boolean;
  /** Longest context the checkpoint was trained for. */
  maxPositionEmbeddings: number;
  /** Beginning-of-sequence token id, if any. */
  bosTokenId?: number;
  /** All ids that end a generation. */
  eosTokenIds: number[];
  /** Padding token id, if the config names one. */
  padTokenId?: number;
  /** dtype the checkpoint was saved in (`bfloat16`, `float16`, `float32`). */
  dtype: string;
  /** Multimodal RoPE sections (Qwen2.5-VL), e.g. [16, 24, 24]. */
  mropeSection?: number[];
  /** Id of `<|image_pad|>` (Qwen2.5-VL). */
  imageTokenId?: number;
  /** Id of `<|vision_start|>` (Qwen2.5-VL). */
  visionStartTokenId?: number;
  /** Id of `<|vision_end|>` (Qwen2.5-VL). */
  visionEndTokenId?: number;
  /** The vision tower's settings (Qwen2.5-VL only). */
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

/**
 * A frozen weight kept at 2 bytes per value (`loadModel`'s `weightsDtype`): int32 words holding two
 * 16-bit codes each (element `2i` in the low half), widened to float32 just before each use.
 */
export interface HalfWeight {
  /** `[size / 2]` int32 words. */
  packed: tf.Tensor1D;
  /** The logical shape. */
  shape: number[];
  /** Which 16-bit format the codes are. */
  dtype: "bfloat16" | "float16";
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
  /** Why each sequence ended: `stop` (a stop token) or `length` (`maxNewTokens` reached). */
  finishReasons: ("stop" | "length")[];
}

/** A Qwen2-family causal language model held in tfjs variables. */
export interface CausalLM {
  /** The normalised config. */
  readonly config: ModelConfig;
  /** Directory it was loaded from, if any. */
  readonly dir?: string;
  /** The tfjs backend in use. */
  readonly backend: string;
  /** All parameters as float32 variables under their Hub names (`model.layers.0.self_attn.q_proj.weight`, ...). */
  readonly params: Record<string, tf.Variable>;
  /**
   * Frozen weights kept at 2 bytes per value (loaded with `weightsDtype` `bfloat16`/`float16`), by Hub
   * name; these names are then not in `params`. Absent or empty for a float32 model.
   */
  readonly half?: Record<string, HalfWeight>;
  /** LoRA adapters keyed by module name (`model.layers.0.self_attn.q_proj`); empty when none. */
  lora: Record<string, LoraAdapter>;
  /** When false, adapters are ignored (the reference model of GRPO with LoRA). */
  loraEnabled: boolean;
  /**
   * Activation checkpointing in training: each decoder layer keeps only its input for the backward pass
   * and is recomputed there (less memory, one more forward per layer). Default false.
   */
  gradientCheckpointing?: boolean;
  /** Final-norm hidden states `[B, T, H]` (differentiable; no logits materialised). */
  hidden(inputIds: number[][] | tf.Tensor2D, options?: ForwardOptions): tf.Tensor3D;
  /**
   * The output projection `[V, H]` (the embedding matrix when tied): the model's own float32 variable, or
   * for a head kept at 2 bytes (`weightsDtype`) a float32 copy widened for this call (a new tensor: call it
   * inside a `tf.tidy`).
   */
  lmHeadWeight(): tf.Tensor2D;
  /** Full logits `[B, T, V]`. */
  logits(inputIds: number[][] | tf.Tensor2D, options?: ForwardOptions): tf.Tensor3D;
  /** Batched, KV-cached generation from left-padded prompts. */
  generate(inputIds: number[][] | tf.Tensor2D, options?: GenerateOptions): Promise<GenerateResult>;
  /** Free every tensor the model holds. */
  dispose(): void;
}
