/**
 * The Qwen2 decoder (Qwen2, Qwen2.5 and the text part of Qwen2.5-VL), written out layer by layer
 * with the Hugging Face names:
 *
 * ```
 * h = embed_tokens(ids)
 * for each layer:
 *   h = h + o_proj(attention(rope(q_proj(x)), rope(k_proj(x)), v_proj(x)))   x = input_layernorm(h)
 *   h = h + down_proj(silu(gate_proj(x)) * up_proj(x))                       x = post_attention_layernorm(h)
 * logits = lm_head(norm(h))
 * ```
 *
 * RMSNorm is `w * x / sqrt(mean(x^2) + eps)`; RoPE is rotate-half with `inv_freq = theta^(-2i/d)`;
 * attention is grouped-query (q/k/v projections with bias, o_proj without) with a causal plus padding
 * mask; positions come from the attention mask (`cumsum(mask) - 1`).
 *
 * Every linear layer goes through {@linkcode linear}, which adds a LoRA adapter (PEFT semantics) when
 * `model.lora` has one for that module and `model.loraEnabled` is true.
 *
 * The Qwen2.5-VL wrapper reuses {@linkcode decoderForward} with its own input embeddings (image
 * embeddings spliced in) and its own cos/sin (multimodal RoPE, {@linkcode ropeCosSin} with `[3, B, T]`
 * positions), and overrides {@linkcode Qwen2Model.prefill} for generation.
 *
 * @module
 */
import { tf } from "../util/deps.ts";
import type {
  CausalLM,
  ForwardOptions,
  GenerateOptions,
  GenerateResult,
  HalfWeight,
  LoraAdapter,
  ModelConfig,
} from "./types.ts";
import {
  applyRotary,
  attention as fusedAttention,
  attentionFusable,
  fusedOn,
  linearSmall,
  rmsNorm as fusedRmsNorm,
  rowMatMulBT,
  swiglu,
} from "./fused.ts";
import { generate, type PrefillResult } from "./generate.ts";
import type { KVCache } from "./kv_cache.ts";
import {
  hostTensor,
  nativeAttentionInputs,
  nativeHalfRowMatMulBT,
  type NativeLayer,
  nativeLayer,
  nativeLayerOutput,
  nativeRowMatMulBT,
} from "./native_gemv.ts";
import { type LoadModelOptions, registerArchitecture } from "./registry.ts";
import { loadWeights, WEIGHTS_DTYPES, widenHalf, widenHalfRows } from "./weights.ts";

export { disposeCache, emptyCache, selectCacheRows } from "./kv_cache.ts";
export type { KVCache, PrefillResult };

/** The parameters and adapters a forward pass reads (a {@linkcode CausalLM} has them all). */
export interface DecoderWeights {
  /** Sizes, eps, theta. */
  readonly config: ModelConfig;
  /** Parameters under Hub names. */
  readonly params: Record<string, tf.Variable>;
  /** Frozen weights kept at 2 bytes per value, by Hub name (not in `params`). */
  readonly half?: Record<string, HalfWeight>;
  /** LoRA adapters by module name. */
  lora: Record<string, LoraAdapter>;
  /** Whether the adapters apply. */
  loraEnabled: boolean;
  /**
   * Activation checkpointing: each decoder layer keeps only its input for the backward pass and is
   * recomputed there (see {@linkcode checkpointedLayer}). Off (undefined) by default.
   */
  gradientCheckpointing?: boolean;
}

/** Inputs of {@linkcode decoderForward}. */
export interface DecoderInputs {
  /** `[B, T, hidden]` input embeddings (token embeddings, possibly with image embeddings spliced in). */
  inputsEmbeds: tf.Tensor3D;
  /** `[B, T]` float32 mask of the NEW tokens (1 = real). */
  attentionMask: tf.Tensor2D;
  /** `[B, T, headDim]` rotary cosines of the new tokens' positions (see {@linkcode ropeCosSin}). */
  cos: tf.Tensor3D;
  /** `[B, T, headDim]` rotary sines. */
  sin: tf.Tensor3D;
  /** When given, the new keys/values are appended to it (its old tensors are disposed, new ones kept). */
  cache?: KVCache;
}

/** Names and shapes of every parameter a Qwen2 checkpoint with this config holds (Hub names). */
export function expectedParams(config: ModelConfig): Record<string, number[]> {
  const {
    hiddenSize: H,
    intermediateSize: I,
    numAttentionHeads: NH,
    numKeyValueHeads: KV,
    headDim: D,
    vocabSize: V,
  } = config;
  const out: Record<string, number[]> = { "model.embed_tokens.weight": [V, H] };
  for (let i = 0; i < config.numHiddenLayers; i++) {
    const p = `model.layers.${i}`;
    out[`${p}.input_layernorm.weight`] = [H];
    out[`${p}.self_attn.q_proj.weight`] = [NH * D, H];
    out[`${p}.self_attn.q_proj.bias`] = [NH * D];
    out[`${p}.self_attn.k_proj.weight`] = [KV * D, H];
    out[`${p}.self_attn.k_proj.bias`] = [KV * D];
    out[`${p}.self_attn.v_proj.weight`] = [KV * D, H];
    out[`${p}.self_attn.v_proj.bias`] = [KV * D];
    out[`${p}.self_attn.o_proj.weight`] = [H, NH * D];
    out[`${p}.post_attention_layernorm.weight`] = [H];
    out[`${p}.mlp.gate_proj.weight`] = [I, H];
    out[`${p}.mlp.up_proj.weight`] = [I, H];
    out[`${p}.mlp.down_proj.weight`] = [H, I];
  }
  out["model.norm.weight"] = [H];
  if (!config.tieWordEmbeddings) out["lm_head.weight"] = [V, H];
  return out;
}

/** Names of the linear modules LoRA can adapt in layer `i` (PEFT module names). */
export function linearModules(config: ModelConfig): string[] {
  const out: string[] = [];
  for (let i = 0; i < config.numHiddenLayers; i++) {
    for (const m of ["q_proj", "k_proj", "v_proj", "o_proj"]) out.push(`model.layers.${i}.self_attn.${m}`);
    for (const m of ["gate_proj", "up_proj", "down_proj"]) out.push(`model.layers.${i}.mlp.${m}`);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Building blocks

/** RMSNorm: `w * x / sqrt(mean(x^2) + eps)` over the last axis. */
export function rmsNorm(x: tf.Tensor, weight: tf.Tensor, eps: number): tf.Tensor {
  if (fusedOn()) return fusedRmsNorm(x, weight, eps); // one dispatch on webgpu (lib/model/fused.ts)
  const variance = tf.mean(tf.square(x), -1, true);
  return tf.mul(weight, tf.mul(x, tf.rsqrt(tf.add(variance, eps))));
}

// The wasm backend runs a matmul through XNNPACK only without transposes; `transposeB` falls back to a
// naive loop that is 4-8x slower (measured: [512,128] x [352,128]^T 87 ms vs 12 ms). So on wasm,
// x W^T is computed as x (W^T) with an explicit transpose, and its gradient likewise avoids transposed
// matmuls. Other backends handle transposeB natively.
// deno-lint-ignore no-explicit-any
const wasmMatMulBT = tf.customGrad(
  ((x: tf.Tensor2D, w: tf.Tensor2D, save: tf.GradSaveFunc) => {
    save([x, w]);
    // Transpose whichever operand is smaller: x W^T = (W x^T)^T (measured with W = [151936, 128]:
    // 1 row 71 ms vs 246 ms, 256 rows 1.26 s vs 1.84 s).
    const value = x.shape[0] < w.shape[0]
      ? tf.transpose(tf.matMul(w, tf.transpose(x)))
      : tf.matMul(x, tf.transpose(w));
    return {
      value,
      gradFunc: (dy: tf.Tensor2D, saved: tf.Tensor[]) => {
        const [sx, sw] = saved as tf.Tensor2D[];
        // dW = dy^T x, as (x^T dy)^T when that transposes less.
        const dw = dy.shape[0] > sx.shape[1]
          ? tf.transpose(tf.matMul(tf.transpose(sx), dy))
          : tf.matMul(tf.transpose(dy), sx);
        return [tf.matMul(dy, sw), dw];
      },
    };
  }) as any,
);

/** `x W^T` for `x` `[M, K]` and `W` `[N, K]` (a linear layer's weight layout), differentiable, fast on every backend. */
export function matMulBT(x: tf.Tensor2D, w: tf.Tensor2D): tf.Tensor2D {
  if (tf.getBackend() !== "wasm") {
    return nativeRowMatMulBT(x, w) ?? rowMatMulBT(x, w) ?? tf.matMul(x, w, false, true);
  }
  return wasmMatMulBT(x, w) as tf.Tensor2D;
}

/** Bytes of float32 rows that {@linkcode halfMatMulBTChunked} widens at once by default (256 MiB). */
export const HEAD_CHUNK_BYTES = 256 * 2 ** 20;

/**
 * `x W^T` for `x` `[M, K]` and a 2-byte weight `W` `[N, K]` (an untied head under `weightsDtype`) without
 * a float32 copy of `W`: its rows are widened `chunkRows` at a time (default: {@linkcode HEAD_CHUNK_BYTES}
 * of float32), each slice multiplied and freed before the next, and the `[M, slice]` products joined.
 * On webgpu a decode-sized `x` reads the packed weight as stored (one dispatch, {@linkcode linearSmall}).
 * The same values as `x widen(W)^T`: each output column is the same dot product either way.
 */
export function halfMatMulBTChunked(x: tf.Tensor2D, w: HalfWeight, chunkRows?: number): tf.Tensor2D {
  const direct = linearSmall(x, w) ?? nativeHalfRowMatMulBT(x, w);
  if (direct) return direct;
  const [N, K] = w.shape;
  let rows = Math.max(1, Math.floor(chunkRows ?? HEAD_CHUNK_BYTES / (4 * K)));
  // A slice must start on a whole packed word: with an odd row length, an even number of rows.
  if (K % 2 === 1) rows = Math.max(2, rows - (rows % 2));
  if (rows >= N) {
    return tf.tidy(() => matMulBT(x, widenHalf(w) as tf.Tensor2D));
  }
  const parts: tf.Tensor2D[] = [];
  try {
    for (let r0 = 0; r0 < N; r0 += rows) {
      const n = Math.min(rows, N - r0);
      // One slice at a time: its widened rows are freed (by this tidy) before the next are made.
      parts.push(tf.tidy(() => matMulBT(x, widenHalfRows(w, r0, n) as tf.Tensor2D)));
    }
    return tf.concat(parts, 1) as tf.Tensor2D;
  } finally {
    tf.dispose(parts);
  }
}

/** 2-D matmuls slice by slice: `a` `[N, M, K]` times `b` `[N, K, S]` (XNNPACK's fast path on wasm). */
function sliceMatMul(a: tf.Tensor3D, b: tf.Tensor3D): tf.Tensor3D {
  const as = tf.unstack(a) as tf.Tensor2D[], bs = tf.unstack(b) as tf.Tensor2D[];
  return tf.stack(as.map((x, i) => tf.matMul(x, bs[i]))) as tf.Tensor3D;
}

// Batched matmuls on wasm all take the naive loop (measured: attention scores [4,2,512,32] x
// [4,2,32,256] 95 ms batched vs 20 ms as 8 separate 2-D matmuls); so do large ones slice by slice,
// with a gradient made of the same untransposed 2-D products.
// deno-lint-ignore no-explicit-any
const wasmBatchMatMul = tf.customGrad(
  ((a: tf.Tensor3D, b: tf.Tensor3D, save: tf.GradSaveFunc) => {
    save([a, b]);
    return {
      value: sliceMatMul(a, b),
      gradFunc: (dy: tf.Tensor3D, saved: tf.Tensor[]) => {
        const [sa, sb] = saved as tf.Tensor3D[];
        return [sliceMatMul(dy, tf.transpose(sb, [0, 2, 1])), sliceMatMul(tf.transpose(sa, [0, 2, 1]), dy)];
      },
    };
  }) as any,
);

/** Work (M x K x S multiply-adds per slice) from which wasm splits a batched matmul into 2-D ones. */
export const WASM_SLICE_MATMUL_MIN_WORK = 1 << 17;

/**
 * Batched `a b` (or `a b^T` with `transposeB`) for rank-4 `a` `[B, H, M, K]`, `b` `[B, H, K, S]`
 * (`[B, H, S, K]` transposed), differentiable; fast on wasm for attention-sized products too.
 */
export function batchMatMul(a: tf.Tensor4D, b: tf.Tensor4D, transposeB = false): tf.Tensor4D {
  const [B, H, M, K] = a.shape;
  const S = transposeB ? b.shape[2] : b.shape[3];
  if (tf.getBackend() !== "wasm" || M * K * S < WASM_SLICE_MATMUL_MIN_WORK) {
    return tf.matMul(a, b, false, transposeB);
  }
  const b3 = tf.reshape(transposeB ? tf.transpose(b, [0, 1, 3, 2]) : b, [B * H, K, S]) as tf.Tensor3D;
  const c = wasmBatchMatMul(tf.reshape(a, [B * H, M, K]) as tf.Tensor3D, b3) as tf.Tensor3D;
  return tf.reshape(c, [B, H, M, S]) as tf.Tensor4D;
}

/**
 * The float32 weight `name`: the variable, or the widened copy of a 2-byte weight (a new tensor, freed
 * by the caller's `tf.tidy`; the decoder's per-layer tidy frees a layer's widened weights with it).
 */
export function weightOf(
  model: Pick<DecoderWeights, "params" | "half">,
  name: string,
): tf.Tensor | undefined {
  const v = model.params[name];
  if (v) return v;
  const h = model.half?.[name];
  return h ? widenHalf(h) : undefined;
}

/**
 * `y = x W^T + b` for the module `name` (weight `${name}.weight`, optional `${name}.bias`), plus
 * `scale * (x A^T) B^T` when a LoRA adapter is registered for `name` and enabled.
 */
export function linear(model: DecoderWeights, x: tf.Tensor, name: string): tf.Tensor {
  const b = model.params[`${name}.bias`];
  const inDim = x.shape[x.shape.length - 1];
  // 2-D inputs (the decoder keeps its hidden states as [B*T, H]) need no reshapes: each is a kernel
  // call with its own overhead on every backend.
  const x2 = (x.rank === 2 ? x : tf.reshape(x, [-1, inDim])) as tf.Tensor2D;
  // webgpu: product and bias in one dispatch; decode-sized x reads a 2-byte weight as stored (fused.ts).
  const hw = model.half?.[`${name}.weight`];
  const pw = model.params[`${name}.weight`];
  const direct = hw || pw ? linearSmall(x2, hw ?? pw, b) : null;
  // tensorflow, one row: a 2-byte weight read as stored by the native loop, not widened whole (native_gemv.ts).
  const halfRow = !direct && hw ? nativeHalfRowMatMulBT(x2, hw) : null;
  const w = direct || halfRow ? null : weightOf(model, `${name}.weight`);
  if (!direct && !halfRow && !w) throw new Error(`The model has no parameter ${name}.weight.`);
  let y: tf.Tensor = direct ?? halfRow ?? matMulBT(x2, w as tf.Tensor2D);
  if (b && !direct) y = tf.add(y, b);
  const ad = model.loraEnabled ? model.lora[name] : undefined;
  if (ad) {
    const low = matMulBT(x2, ad.A as tf.Tensor2D);
    y = tf.add(y, tf.mul(matMulBT(low, ad.B as tf.Tensor2D), ad.scale));
  }
  return x.rank === 2 ? y : tf.reshape(y, [...x.shape.slice(0, -1), y.shape[1] as number]);
}

/**
 * Embedding lookup `W[ids]` with a gradient that every backend can compute: the stock gradient of
 * `gather` is `UnsortedSegmentSum`, which the wasm backend lacks; `scatterND` (which sums duplicate
 * indices) builds the same `[V, H]` gradient without materialising a `[N, V]` one-hot.
 */
export function embeddingLookup(weight: tf.Tensor, ids: tf.Tensor): tf.Tensor {
  const shape = ids.shape;
  // deno-lint-ignore no-explicit-any
  const lookup = tf.customGrad(
    ((w: tf.Tensor, flat: tf.Tensor, save: tf.GradSaveFunc) => {
      save([flat]);
      return {
        value: tf.gather(w as tf.Tensor2D, flat),
        gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
          const idx = saved[0];
          const gradW = tf.scatterND(tf.reshape(idx, [-1, 1]), dy, w.shape);
          return [gradW, tf.zerosLike(idx)];
        },
      };
    }) as any,
  );
  const flat = tf.reshape(ids.dtype === "int32" ? ids : tf.cast(ids, "int32"), [-1]);
  const out = lookup(weight, flat) as tf.Tensor;
  return tf.reshape(out, [...shape, weight.shape[1] as number]);
}

/** Token embeddings `[B, T, hidden]` of int32 ids `[B, T]`. */
export function embedTokens(model: DecoderWeights, ids: tf.Tensor2D): tf.Tensor3D {
  const half = model.half?.["model.embed_tokens.weight"];
  // webgpu's gather moves int32 values through float32 (packed words > 2^24 come out changed): there the
  // whole matrix is widened first.
  if (half && tf.getBackend() === "webgpu") {
    return tf.tidy(() => embeddingLookup(widenHalf(half), ids)) as tf.Tensor3D;
  }
  if (half) {
    // A 2-byte embedding (untied models): gather the rows' packed words, then widen only those rows.
    const [V, H] = half.shape;
    const flat = tf.reshape(ids.dtype === "int32" ? ids : tf.cast(ids, "int32"), [-1]);
    const rows = tf.gather(tf.reshape(half.packed, [V, H / 2]), flat);
    const wide = widenHalf({
      packed: tf.reshape(rows, [-1]) as tf.Tensor1D,
      shape: [...ids.shape, H],
      dtype: half.dtype,
    });
    return wide as tf.Tensor3D;
  }
  return embeddingLookup(model.params["model.embed_tokens.weight"] as tf.Tensor2D, ids) as tf.Tensor3D;
}

/** `inv_freq[i] = theta^(-2i/d)`, i < d/2, computed in float64 then rounded to float32. */
export function inverseFrequencies(config: ModelConfig): Float32Array {
  const d = config.headDim;
  const out = new Float32Array(d / 2);
  for (let i = 0; i < d / 2; i++) out[i] = 1 / Math.pow(config.ropeTheta, (2 * i) / d);
  return out;
}

// Cody-Waite split of 2*pi: C1 has few mantissa bits so k*C1 is exact in float32 for k < 2^16.
const TWO_PI_HI = 6.28125;
const TWO_PI_LO = 2 * Math.PI - 6.28125;

/** cos/sin of float32 angles, reduced to [0, 2pi) first: some GPUs' sin/cos lose accuracy on large arguments. */
function cosSinOf(angle: tf.Tensor): [tf.Tensor, tf.Tensor] {
  const k = tf.floor(tf.mul(angle, 1 / (2 * Math.PI)));
  const r = tf.sub(tf.sub(angle, tf.mul(k, TWO_PI_HI)), tf.mul(k, TWO_PI_LO));
  return [tf.cos(r), tf.sin(r)];
}

/**
 * Rotary cos/sin `[B, T, headDim]` for positions `[B, T]` (text) or `[3, B, T]` (Qwen2.5-VL multimodal
 * RoPE: the temporal, height and width positions fill the head dims by `mropeSection`).
 * Angles are `position * inv_freq` in float32, as Hugging Face computes them.
 */
export function ropeCosSin(
  config: ModelConfig,
  positions: tf.Tensor,
): { cos: tf.Tensor3D; sin: tf.Tensor3D } {
  return tf.tidy(() => {
    const inv = tf.tensor1d(inverseFrequencies(config));
    const pos = positions.dtype === "float32" ? positions : tf.cast(positions, "float32");
    const half = config.headDim / 2;
    if (pos.rank === 2) {
      const freqs = tf.mul(tf.expandDims(pos, -1), inv); // [B, T, d/2]
      const emb = tf.concat([freqs, freqs], -1);
      const [cos, sin] = cosSinOf(emb);
      return { cos: cos as tf.Tensor3D, sin: sin as tf.Tensor3D };
    }
    if (pos.rank !== 3 || pos.shape[0] !== 3) {
      throw new Error(`Position ids must be [B, T] or [3, B, T]; got [${pos.shape}].`);
    }
    const section = config.mropeSection;
    if (!section) {
      throw new Error(
        `Position ids [3, B, T] need a config with mrope_section (model_type ${config.modelType}).`,
      );
    }
    // Which of the 3 position rows drives each of the d dims: sections [a, b, c] repeated for both halves.
    const owner = new Float32Array(3 * config.headDim);
    for (let h = 0; h < 2; h++) {
      let start = h * half;
      section.forEach((len, axis) => {
        for (let j = start; j < start + len; j++) owner[axis * config.headDim + j] = 1;
        start += len;
      });
    }
    const sel = tf.tensor(owner, [3, 1, 1, config.headDim]);
    const freqs = tf.mul(tf.expandDims(pos, -1), inv); // [3, B, T, d/2]
    const [c, s] = cosSinOf(tf.concat([freqs, freqs], -1));
    return { cos: tf.sum(tf.mul(c, sel), 0) as tf.Tensor3D, sin: tf.sum(tf.mul(s, sel), 0) as tf.Tensor3D };
  });
}

/** Positions `[B, T]` from a mask: `cumsum(mask) - 1` (padding gets 0), offset by `past` tokens per row. */
export function positionsFromMask(mask: tf.Tensor2D, past?: tf.Tensor): tf.Tensor2D {
  return tf.tidy(() => {
    let pos = tf.sub(tf.cumsum(mask, 1), 1);
    if (past) pos = tf.add(pos, tf.reshape(past, [-1, 1]));
    return tf.relu(pos) as tf.Tensor2D;
  });
}

/** The rotary factors of one forward pass, prepared once for all layers. */
interface RopeFactors {
  /** `[B, 1, T, d]` cosines (keys). */
  cos: tf.Tensor;
  /** `[B, 1, T, d]` sines with the first half negated (see {@linkcode applyRope}). */
  sin: tf.Tensor;
  /** Cosines for the queries: `cos / sqrt(d)` when that scaling is exact, else `cos`. */
  qCos: tf.Tensor;
  /** Signed sines for the queries, scaled as `qCos`. */
  qSin: tf.Tensor;
  /** Whether the queries' factors carry the attention scale `1 / sqrt(d)`. */
  qScaled: boolean;
}

function ropeFactors(cos3: tf.Tensor3D, sin3: tf.Tensor3D, headDim: number): RopeFactors {
  const cos = tf.expandDims(cos3, 1);
  const [s1, s2] = tf.split(tf.expandDims(sin3, 1), 2, 3);
  const sin = tf.concat([tf.neg(s1), s2], 3);
  // Scaling by a power of two is exact, so folding 1/sqrt(d) into the queries' rotary factors gives
  // bit-identical scores (d = 64: 1/8) with one multiply per layer fewer; otherwise scale separately.
  const scale = 1 / Math.sqrt(headDim);
  const qScaled = Number.isInteger(Math.log2(scale));
  return {
    cos,
    sin,
    qCos: qScaled ? tf.mul(cos, scale) : cos,
    qSin: qScaled ? tf.mul(sin, scale) : sin,
    qScaled,
  };
}

/**
 * `x * cos + rotate_half(x) * sin` with `rotate_half([x1, x2]) = [-x2, x1]`, computed as
 * `x * cos + [x2, x1] * sinSigned` where `sinSigned = [-sin1, sin2]` (negation is exact, so the result
 * is the same bits, with one kernel fewer). x `[B, heads, T, d]`, factors `[B, 1, T, d]`.
 */
function applyRope(x: tf.Tensor4D, cos: tf.Tensor, sinSigned: tf.Tensor): tf.Tensor4D {
  if (fusedOn()) return applyRotary(x, cos, sinSigned); // one dispatch on webgpu (lib/model/fused.ts)
  const d = x.shape[3];
  const [x1, x2] = tf.split(x, [d / 2, d / 2], 3);
  return tf.add(tf.mul(x, cos), tf.mul(tf.concat([x2, x1], 3), sinSigned)) as tf.Tensor4D;
}

/**
 * Additive attention bias `[B, 1, T, S]`: 0 where query i (absolute index `past + i`) may see key j
 * (j <= past + i and key j is a real token), -1e9 elsewhere. A large finite value (not -inf) keeps
 * fully masked rows (left padding) finite.
 */
export function attentionBias(keyMask: tf.Tensor2D, queryLen: number): tf.Tensor4D {
  return tf.tidy(() => {
    const [B, S] = keyMask.shape;
    const past = S - queryLen;
    const causal = new Float32Array(queryLen * S);
    for (let i = 0; i < queryLen; i++) for (let j = 0; j <= past + i; j++) causal[i * S + j] = 1;
    const allowed = tf.mul(tf.tensor(causal, [1, 1, queryLen, S]), tf.reshape(keyMask, [B, 1, 1, S]));
    return tf.mul(tf.sub(1, allowed), -1e9) as tf.Tensor4D;
  });
}

function selfAttention(
  model: DecoderWeights,
  layer: number,
  x: tf.Tensor2D,
  shape: { B: number; T: number },
  bias: tf.Tensor4D,
  rope: RopeFactors,
  cache?: KVCache,
): tf.Tensor2D {
  const p = `model.layers.${layer}.self_attn`;
  const qFlat = linear(model, x, `${p}.q_proj`);
  const kFlat = linear(model, x, `${p}.k_proj`);
  const vFlat = linear(model, x, `${p}.v_proj`);
  const out = attend(model, layer, [qFlat, kFlat, vFlat], shape, bias, rope, cache);
  return linear(model, out, `${p}.o_proj`) as tf.Tensor2D;
}

/**
 * Attention from the projected `q`, `k`, `v` (`[B*T, heads * D]` each): RoPE (unless `rotated`: the native
 * decoding step rotates on the host), the cache, scores, softmax and values; `[B*T, NH * D]` for `o_proj`.
 * Shared by the tf path and the native decoding step.
 */
function attend(
  model: DecoderWeights,
  layer: number,
  [qFlat, kFlat, vFlat]: tf.Tensor[],
  shape: { B: number; T: number },
  bias: tf.Tensor4D,
  rope: RopeFactors,
  cache?: KVCache,
  rotated = false,
): tf.Tensor2D {
  const { numAttentionHeads: NH, numKeyValueHeads: KV, headDim: D } = model.config;
  const { B, T } = shape;
  const G = NH / KV;
  // Grouped-query attention without repeating k/v: query head h = kv * G + g uses kv head kv
  // (as HF's repeat_kv), so the G query heads of a group are stacked along the query axis.
  let q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D;
  if (T === 1) {
    // One new token (decoding): [B, heads * D] is already [B, KV, G, D] in memory, no transposes (the
    // native step makes its tensors in these shapes: a reshape is a TensorFlow op each).
    const as = (t: tf.Tensor, s: [number, number, number, number]) =>
      (t.rank === 4 ? t : tf.reshape(t, s)) as tf.Tensor4D;
    q = as(qFlat, [B, KV, G, D]);
    k = as(kFlat, [B, KV, 1, D]);
    v = as(vFlat, [B, KV, 1, D]);
  } else {
    const heads = (t: tf.Tensor, n: number) =>
      tf.transpose(tf.reshape(t, [B, T, n, D]), [0, 2, 1, 3]) as tf.Tensor4D;
    q = heads(qFlat, NH);
    k = heads(kFlat, KV);
    v = heads(vFlat, KV);
  }
  if (!rotated) {
    q = applyRope(q, rope.qCos, rope.qSin);
    if (!rope.qScaled) q = tf.mul(q, 1 / Math.sqrt(D));
    k = applyRope(k, rope.cos, rope.sin);
  }
  if (cache) {
    const oldK = cache.keys[layer], oldV = cache.values[layer];
    if (oldK && oldV) {
      k = tf.concat([oldK, k], 2);
      v = tf.concat([oldV, v], 2);
      oldK.dispose();
      oldV.dispose();
    }
    cache.keys[layer] = tf.keep(k);
    cache.values[layer] = tf.keep(v);
  }
  const S = k.shape[2];
  let out: tf.Tensor;
  if (attentionFusable(q.shape)) {
    // webgpu: scores, masked softmax and the values in one dispatch (lib/model/fused.ts), same layouts.
    const context = fusedAttention(T === 1 ? q : tf.reshape(q, [B, KV, G * T, D]) as tf.Tensor4D, k, v, bias);
    out = T === 1 ? context : tf.transpose(tf.reshape(context, [B, NH, T, D]), [0, 2, 1, 3]);
  } else if (T === 1) {
    // Scores [B, KV, G, S]: the bias [B, 1, 1, S] broadcasts over groups and heads as it is.
    const probs = tf.softmax(tf.add(batchMatMul(q, k, true), bias)) as tf.Tensor4D;
    out = batchMatMul(probs, v);
  } else {
    const qg = tf.reshape(q, [B, KV, G * T, D]) as tf.Tensor4D;
    const scores = tf.add(tf.reshape(batchMatMul(qg, k, true), [B, NH, T, S]), bias);
    const probs = tf.reshape(tf.softmax(scores), [B, KV, G * T, S]) as tf.Tensor4D;
    const context = tf.reshape(batchMatMul(probs, v), [B, NH, T, D]);
    out = tf.transpose(context, [0, 2, 1, 3]);
  }
  // The native step reads the values as they lie ([1, KV, G, D] is [1, NH * D] in memory).
  return (rotated && T === 1 ? out : tf.reshape(out, [B * T, NH * D])) as tf.Tensor2D;
}

/**
 * The native plans of all decoder layers for a decoding step of one row on `tensorflow`
 * (lib/model/native_gemv.ts), or null where any layer cannot take it: a LoRA adapter enabled on it, a
 * bias where Qwen2 has none, a matrix without host memory (assigned since loading), a tape recording.
 */
function nativeLayers(model: DecoderWeights): NativeLayer[] | null {
  const { params } = model;
  const out: NativeLayer[] = [];
  for (let i = 0; i < model.config.numHiddenLayers; i++) {
    const p = `model.layers.${i}`;
    const a = `${p}.self_attn`, m = `${p}.mlp`;
    const modules = [
      `${a}.q_proj`,
      `${a}.k_proj`,
      `${a}.v_proj`,
      `${a}.o_proj`,
      `${m}.gate_proj`,
      `${m}.up_proj`,
    ];
    modules.push(`${m}.down_proj`);
    if (model.loraEnabled && modules.some((n) => model.lora[n])) return null;
    if (modules.slice(3).some((n) => params[`${n}.bias`])) return null;
    const mat = (n: string) => model.half?.[`${n}.weight`] ?? params[`${n}.weight`];
    const [q, k, v, o, gate, up, down] = modules.map(mat);
    const inputNorm = params[`${p}.input_layernorm.weight`],
      postNorm = params[`${p}.post_attention_layernorm.weight`];
    if (!q || !k || !v || !o || !gate || !up || !down || !inputNorm || !postNorm) return null;
    const plan = nativeLayer({
      inputNorm,
      postNorm,
      q,
      k,
      v,
      o,
      gate,
      up,
      down,
      qBias: params[`${a}.q_proj.bias`],
      kBias: params[`${a}.k_proj.bias`],
      vBias: params[`${a}.v_proj.bias`],
    });
    if (!plan) return null;
    out.push(plan);
  }
  return out;
}

/**
 * {@linkcode applyRope} of heads of `D` values laid end to end, for one position (`cos`, `sinSigned` `[D]`),
 * then times `scale` (1: none) as the tf path's query scaling: each step rounded to float32 as the tf ops
 * round it (`x cos`, `swap(x) sin`, their sum, the scaling).
 */
function rotateHost(
  x: Float32Array,
  cos: Float32Array,
  sinSigned: Float32Array,
  D: number,
  scale: number,
): Float32Array {
  const out = new Float32Array(x.length), half = D / 2, f = Math.fround;
  for (let o = 0; o < x.length; o += D) {
    for (let d = 0; d < D; d++) {
      const swapped = x[o + (d < half ? d + half : d - half)];
      const y = f(f(x[o + d] * cos[d]) + f(swapped * sinSigned[d]));
      out[o + d] = scale === 1 ? y : y * scale;
    }
  }
  return out;
}

/**
 * The decoder layers for one row and one position in C (native_gemv.ts): per layer, RMSNorm and q/k/v
 * in one call, attention with tf ops (RoPE, the cache), then o_proj, the residual, RMSNorm, SwiGLU and
 * down_proj in C. The hidden state stays a host row between layers: ~6 native calls per layer instead of
 * ~49 tfjs ops, the products read the weights as stored. Returns the last layer's output `[1, H]`.
 */
function nativeDecoderLayers(
  model: DecoderWeights,
  plans: NativeLayer[],
  h0: tf.Tensor2D,
  bias: tf.Tensor4D,
  rope: RopeFactors,
  cache?: KVCache,
): tf.Tensor2D {
  const { rmsNormEps: eps, headDim: D, numKeyValueHeads: KV } = model.config;
  // One position: the rotation factors are D values shared by all heads, rotated here on the host (two
  // dozen tfjs ops per layer less); factors of another shape take the tf ops.
  const host = [rope.cos, rope.sin, rope.qCos, rope.qSin].every((t) => t.size === D)
    ? [rope.cos, rope.sin, rope.qCos, rope.qSin].map((t) => t.dataSync() as Float32Array)
    : null;
  const qScale = rope.qScaled ? 1 : Math.fround(1 / Math.sqrt(D));
  let h = h0.dataSync() as Float32Array;
  for (let i = 0; i < plans.length; i++) {
    let { q, k, v } = nativeAttentionInputs(plans[i], h, eps);
    if (host) {
      q = rotateHost(q, host[2], host[3], D, qScale);
      k = rotateHost(k, host[0], host[1], D, 1);
    }
    const out = tf.tidy(() =>
      attend(
        model,
        i,
        [
          hostTensor(q, [1, KV, q.length / (KV * D), D]),
          hostTensor(k, [1, KV, 1, D]),
          hostTensor(v, [1, KV, 1, D]),
        ],
        { B: 1, T: 1 },
        bias,
        rope,
        cache,
        host !== null,
      )
    );
    const attn = out.dataSync() as Float32Array;
    out.dispose();
    h = nativeLayerOutput(plans[i], h, attn, eps);
  }
  return hostTensor(h, [1, h.length]) as tf.Tensor2D;
}

function mlp(model: DecoderWeights, layer: number, x: tf.Tensor): tf.Tensor {
  const p = `model.layers.${layer}.mlp`;
  const gate = linear(model, x, `${p}.gate_proj`);
  const up = linear(model, x, `${p}.up_proj`);
  return linear(model, swiglu(gate, up), `${p}.down_proj`); // silu(gate) * up: one dispatch on webgpu
}

/**
 * The decoder stack on given input embeddings: all layers, then the final RMSNorm.
 * Returns `[B, T, hidden]`. With `cache`, attends to the cached tokens too and appends the new ones.
 * Call inside `tf.tidy` (or dispose the result); cache tensors survive a tidy.
 */
export function decoderForward(model: DecoderWeights, inputs: DecoderInputs): tf.Tensor3D {
  const { config, params } = model;
  const { inputsEmbeds, attentionMask, cache } = inputs;
  const [B, T, H] = inputsEmbeds.shape;
  let keyMask = attentionMask;
  if (cache) {
    const prev = cache.mask;
    keyMask = prev ? tf.concat([prev, attentionMask], 1) : tf.clone(attentionMask);
    prev?.dispose();
    cache.mask = tf.keep(keyMask);
  }
  const bias = attentionBias(keyMask, T);
  const rope = ropeFactors(inputs.cos, inputs.sin, config.headDim);
  // Hidden states stay [B*T, H] through the layers: the linear layers need no reshapes.
  let h = tf.reshape(inputsEmbeds, [B * T, H]) as tf.Tensor2D;
  const eps = config.rmsNormEps;
  // Decoding one row on tensorflow: the layers in C where every layer can (else the tf ops below).
  const plans = B === 1 && T === 1 ? nativeLayers(model) : null;
  if (plans) h = nativeDecoderLayers(model, plans, h, bias, rope, cache);
  for (let i = 0; i < (plans ? 0 : config.numHiddenLayers); i++) {
    const p = `model.layers.${i}`;
    // The layer as a function of its input and of the tensors it shares with the other layers (which
    // a checkpointed layer saves for its backward, as they are freed with this forward pass).
    const layer = (hIn: tf.Tensor2D, shared: tf.Tensor[]): tf.Tensor2D => {
      const [b, cos, sin, qCos, qSin] = shared;
      const r = { cos, sin, qCos, qSin, qScaled: rope.qScaled };
      const x = rmsNorm(hIn, params[`${p}.input_layernorm.weight`], eps) as tf.Tensor2D;
      const mid = tf.add(hIn, selfAttention(model, i, x, { B, T }, b as tf.Tensor4D, r, cache));
      return tf.add(
        mid,
        mlp(model, i, rmsNorm(mid, params[`${p}.post_attention_layernorm.weight`], eps)),
      ) as tf.Tensor2D;
    };
    const hIn = h;
    // One tidy per layer: a layer's intermediates (MLP activations, attention scores) are freed as soon
    // as it is done instead of all 24 layers' staying alive until the caller's tidy ends. Under a
    // gradient tape this is safe: tfjs keeps its own reference to every tensor a backward pass needs.
    // With checkpointing (never with a cache: decoding takes no gradient) the tape keeps only hIn.
    const shared = [bias, rope.cos, rope.sin, rope.qCos, rope.qSin];
    h = tf.tidy(() =>
      model.gradientCheckpointing && !cache
        ? checkpointedLayer(layer, hIn, shared, layerTrainables(model, p))
        : layer(hIn, shared)
    ) as tf.Tensor2D;
  }
  return tf.reshape(rmsNorm(h, params["model.norm.weight"], eps), [B, T, H]) as tf.Tensor3D;
}

// ---------------------------------------------------------------------------------------------
// Activation checkpointing

/** The trainable tensors a decoder layer reads (its own parameters and enabled LoRA adapters). */
function layerTrainables(model: DecoderWeights, prefix: string): tf.Variable[] {
  const out: tf.Variable[] = [];
  const p = prefix + ".";
  for (const [name, v] of Object.entries(model.params)) if (v.trainable && name.startsWith(p)) out.push(v);
  if (model.loraEnabled) {
    for (const [name, ad] of Object.entries(model.lora)) {
      if (!name.startsWith(p)) continue;
      if (ad.A.trainable) out.push(ad.A);
      if (ad.B.trainable) out.push(ad.B);
    }
  }
  return out;
}

/**
 * `layer(x, shared)` with activation checkpointing: the forward runs as one custom op, whose
 * intermediates tfjs frees at once (a kernel's inner ops are not taped), so the tape keeps only `x`
 * and the `shared` constants (attention bias, rotary factors: the same tensors for every layer); the backward
 * recomputes the layer under a fresh tape and takes the gradients of `x` and of `trainables` (the
 * variables `layer` reads that need gradients; they are inputs of the op so that the outer tape routes
 * their gradients). Same values as `layer(x, shared)`; one more forward per layer in the backward pass.
 */
export function checkpointedLayer(
  layer: (x: tf.Tensor2D, shared: tf.Tensor[]) => tf.Tensor2D,
  x: tf.Tensor2D,
  shared: tf.Tensor[],
  trainables: tf.Variable[],
): tf.Tensor2D {
  // deno-lint-ignore no-explicit-any
  const op = tf.customGrad(
    ((...args: any[]) => {
      const save = args[args.length - 1] as tf.GradSaveFunc;
      const input = args[0] as tf.Tensor2D;
      // The saved tensors are kept by tfjs until the backward pass is done with them; `shared` (masks,
      // rotary factors) belongs to the caller's scope, which ends before the backward runs.
      save([input, ...shared]);
      return {
        value: layer(input, shared),
        gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
          const [xSaved, ...sharedSaved] = saved;
          const xs = [xSaved, ...trainables];
          // deno-lint-ignore no-explicit-any
          const state = (tf.engine() as any).state;
          // The nested gradient computation starts (and, back at depth 0, clears) the engine's tape; the
          // outer backward pass (tf.variableGrads) still walks and then cleans its own, so it is restored.
          const outerTape = state.activeTape;
          try {
            // deno-lint-ignore no-explicit-any
            const { value, grads } = (tf.engine() as any).gradients(
              () => layer(xSaved as tf.Tensor2D, sharedSaved),
              xs,
              dy,
              true,
            );
            value.dispose();
            return xs.map((t, i) => grads[i] ?? tf.zerosLike(t));
          } finally {
            state.activeTape = outerTape;
          }
        },
      };
    }) as any,
  );
  return op(x, ...trainables) as tf.Tensor2D;
}

// ---------------------------------------------------------------------------------------------
// The model

/** Int32 `[B, T]` tensor from nested arrays or a tensor (a tensor is cast, not copied, when already int32). */
export function toIdTensor(ids: number[][] | tf.Tensor2D): tf.Tensor2D {
  if (ids instanceof tf.Tensor) return (ids.dtype === "int32" ? ids : tf.cast(ids, "int32")) as tf.Tensor2D;
  if (!Array.isArray(ids) || !ids.length || !Array.isArray(ids[0])) {
    throw new Error("Input ids must be a non-empty [B, T] nested array or a 2-D tensor.");
  }
  const T = ids[0].length;
  if (ids.some((r) => r.length !== T)) {
    throw new Error(
      "Input ids rows have different lengths: left-pad them to one length and pass an attention mask.",
    );
  }
  return tf.tensor2d(ids, [ids.length, T], "int32");
}

/** Float32 `[B, T]` mask from nested arrays, a tensor, or all ones when absent. */
export function toMaskTensor(
  mask: number[][] | tf.Tensor2D | undefined,
  shape: [number, number],
): tf.Tensor2D {
  if (mask === undefined) return tf.ones(shape, "float32") as tf.Tensor2D;
  const t = mask instanceof tf.Tensor
    ? (mask.dtype === "float32" ? mask : tf.cast(mask, "float32"))
    : tf.tensor2d(mask, undefined, "float32");
  if (t.shape[0] !== shape[0] || t.shape[1] !== shape[1]) {
    throw new Error(`Attention mask has shape [${t.shape}] but the input ids have [${shape}].`);
  }
  return t as tf.Tensor2D;
}

/** Options of the {@linkcode Qwen2Model} constructor. */
export interface Qwen2ModelOptions {
  /** The checkpoint folder it came from. */
  dir?: string;
  /** The backend name to report (default: the active one). */
  backend?: string;
  /** Frozen weights kept at 2 bytes per value (see `loadModel`'s `weightsDtype`). */
  half?: Record<string, HalfWeight>;
}

/**
 * A Qwen2-family causal LM in tfjs variables (the {@linkcode CausalLM} contract).
 * Build one with `loadModel` (lib/model/load.ts).
 */
export class Qwen2Model implements CausalLM {
  /** The normalised config. */
  readonly config: ModelConfig;
  /** Directory it was loaded from, if any. */
  readonly dir?: string;
  /** The tfjs backend in use. */
  readonly backend: string;
  /** All parameters as float32 variables under Hub names (those in `half` excepted). */
  readonly params: Record<string, tf.Variable>;
  /** Frozen weights kept at 2 bytes per value, by Hub name. */
  readonly half: Record<string, HalfWeight>;
  /** LoRA adapters keyed by module name. */
  lora: Record<string, LoraAdapter> = {};
  /** When false, adapters are ignored. */
  loraEnabled = true;
  /** Activation checkpointing of the decoder layers in training (see {@linkcode checkpointedLayer}). */
  gradientCheckpointing = false;
  /**
   * Rows of a 2-byte head widened at once when computing logits (undefined: as many as make
   * {@linkcode HEAD_CHUNK_BYTES} of float32). The tests set a small value to run several slices.
   */
  headChunkRows?: number;

  /** Wrap loaded parameters (validated by the loader) as a model. */
  constructor(config: ModelConfig, params: Record<string, tf.Variable>, options: Qwen2ModelOptions = {}) {
    this.config = config;
    this.params = params;
    this.half = options.half ?? {};
    this.dir = options.dir;
    this.backend = options.backend ?? tf.getBackend();
  }

  /** Rotary cos/sin of a forward pass: explicit `positionIds`, else from the mask. */
  protected rope(mask: tf.Tensor2D, options: ForwardOptions): { cos: tf.Tensor3D; sin: tf.Tensor3D } {
    const pos = options.positionIds ?? positionsFromMask(mask);
    return ropeCosSin(this.config, pos);
  }

  /** The input embeddings of a forward pass (the VL model splices image embeddings in here). */
  protected inputsEmbeds(ids: tf.Tensor2D, _options: ForwardOptions): tf.Tensor3D {
    return embedTokens(this, ids);
  }

  /** Final-norm hidden states `[B, T, H]` (differentiable). */
  hidden(inputIds: number[][] | tf.Tensor2D, options: ForwardOptions = {}): tf.Tensor3D {
    return tf.tidy(() => {
      const ids = toIdTensor(inputIds);
      const mask = toMaskTensor(options.attentionMask, ids.shape as [number, number]);
      const { cos, sin } = this.rope(mask, options);
      return decoderForward(this, {
        inputsEmbeds: this.inputsEmbeds(ids, options),
        attentionMask: mask,
        cos,
        sin,
      });
    });
  }

  /**
   * The output projection `[V, H]` (the embedding matrix when tied). A float32 head is the model's own
   * variable: do not dispose it. A head kept at 2 bytes (an untied head under `weightsDtype`) comes back
   * as a float32 copy widened for this call, a new tensor for the caller's `tf.tidy` to free (the model's
   * own logits never make that copy: see {@linkcode Qwen2Model.project}).
   */
  lmHeadWeight(): tf.Tensor2D {
    const hw = this.half["lm_head.weight"];
    if (hw) return widenHalf(hw) as tf.Tensor2D;
    return (this.params["lm_head.weight"] ?? this.params["model.embed_tokens.weight"]) as tf.Tensor2D;
  }

  /**
   * `[..., H]` hidden states -> `[..., V]` logits. `headT` is the output matrix already transposed
   * (`[H, V]`), which decoding keeps for the whole generation on wasm (see {@linkcode matMulBT}). A head
   * kept at 2 bytes is multiplied slice by slice of its rows ({@linkcode halfMatMulBTChunked}), so no
   * float32 copy of the whole head ever exists.
   */
  project(hidden: tf.Tensor, headT?: tf.Tensor2D | null): tf.Tensor {
    return tf.tidy(() => {
      const H = hidden.shape[hidden.shape.length - 1];
      const h2 = tf.reshape(hidden, [-1, H]) as tf.Tensor2D;
      const hw = this.half["lm_head.weight"];
      const y = headT
        ? tf.matMul(h2, headT)
        : hw
        ? halfMatMulBTChunked(h2, hw, this.headChunkRows)
        : matMulBT(h2, this.lmHeadWeight());
      return tf.reshape(y, [...hidden.shape.slice(0, -1), y.shape[1] as number]);
    });
  }

  /** On wasm, the transposed output matrix kept in the cache for the whole generation. */
  protected cachedHeadT(cache: KVCache): tf.Tensor2D | null {
    // A 2-byte head is never widened whole (project multiplies it slice by slice).
    if (tf.getBackend() !== "wasm" || this.half["lm_head.weight"]) return null;
    if (!cache.lmHeadT) cache.lmHeadT = tf.keep(tf.transpose(this.lmHeadWeight()));
    return cache.lmHeadT;
  }

  /**
   * Full logits `[B, T, V]`.
   *
   * @example
   * ```ts ignore
   * const logits = model.logits([[1, 2, 3]]);
   * ```
   */
  logits(inputIds: number[][] | tf.Tensor2D, options: ForwardOptions = {}): tf.Tensor3D {
    return tf.tidy(() => this.project(this.hidden(inputIds, options)) as tf.Tensor3D);
  }

  /**
   * Run the prompts through the decoder, filling `cache`: last-position logits and the position of
   * the next token per row. The VL model overrides this (image embeddings, 3-D positions).
   */
  prefill(ids: tf.Tensor2D, mask: tf.Tensor2D, cache: KVCache, options: ForwardOptions = {}): PrefillResult {
    return tf.tidy(() => {
      const { cos, sin } = this.rope(mask, options);
      const h = decoderForward(this, {
        inputsEmbeds: this.inputsEmbeds(ids, options),
        attentionMask: mask,
        cos,
        sin,
        cache,
      });
      const [B, T, H] = h.shape;
      const last = tf.slice(h, [0, T - 1, 0], [B, 1, H]);
      // The next token's position: one past the largest position so far (for the VL model's 3-D
      // positions that is where its text positions continue; for text it equals the count of real tokens).
      const pid = options.positionIds;
      const nextPositions = pid
        ? tf.add(tf.max(tf.cast(pid.rank === 3 ? tf.max(pid, 0) : pid, "float32"), 1), 1)
        : tf.sum(mask, 1);
      return {
        logits: tf.reshape(this.project(last, this.cachedHeadT(cache)), [B, -1]) as tf.Tensor2D,
        nextPositions: tf.reshape(nextPositions, [B]) as tf.Tensor1D,
      };
    });
  }

  /**
   * Rotary cos/sin `[B, 1, headDim]` of one decoding step: rows of the cache's table when the
   * caller set `cache.ropeLimit` (the same float32 operations per element, so the same values), else
   * computed from the positions.
   */
  protected stepRope(positions: tf.Tensor1D, cache: KVCache): { cos: tf.Tensor3D; sin: tf.Tensor3D } {
    const B = positions.shape[0];
    const limit = cache.ropeLimit;
    if (!limit) return ropeCosSin(this.config, tf.reshape(positions, [B, 1]));
    if (!cache.ropeTable) {
      const table = tf.tidy(() => {
        const { cos, sin } = ropeCosSin(
          this.config,
          tf.reshape(tf.range(0, limit, 1, "float32"), [1, limit]),
        );
        const D = this.config.headDim;
        return {
          cos: tf.reshape(cos, [limit, D]) as tf.Tensor2D,
          sin: tf.reshape(sin, [limit, D]) as tf.Tensor2D,
        };
      });
      cache.ropeTable = { cos: tf.keep(table.cos), sin: tf.keep(table.sin) };
    }
    const { cos, sin } = cache.ropeTable;
    const idx = tf.cast(positions, "int32");
    const D = this.config.headDim;
    return {
      cos: tf.reshape(tf.gather(cos, idx), [B, 1, D]) as tf.Tensor3D,
      sin: tf.reshape(tf.gather(sin, idx), [B, 1, D]) as tf.Tensor3D,
    };
  }

  /** One decoding step: `tokens` `[B, 1]` at `positions` `[B]` -> logits `[B, V]`, cache extended. */
  decodeStep(tokens: tf.Tensor2D, positions: tf.Tensor1D, cache: KVCache): tf.Tensor2D {
    return tf.tidy(() => {
      const B = tokens.shape[0];
      const { cos, sin } = this.stepRope(positions, cache);
      const h = decoderForward(this, {
        inputsEmbeds: embedTokens(this, tokens),
        attentionMask: tf.ones([B, 1]) as tf.Tensor2D,
        cos,
        sin,
        cache,
      });
      return tf.reshape(this.project(h, this.cachedHeadT(cache)), [B, -1]) as tf.Tensor2D;
    });
  }

  /** Batched, KV-cached generation from left-padded prompts (see lib/model/generate.ts). */
  generate(inputIds: number[][] | tf.Tensor2D, options: GenerateOptions = {}): Promise<GenerateResult> {
    return generate(this, inputIds, options);
  }

  /** Free every tensor the model holds (parameters and adapters). */
  dispose(): void {
    for (const v of Object.values(this.params)) v.dispose();
    for (const h of Object.values(this.half)) h.packed.dispose();
    for (const a of Object.values(this.lora)) {
      a.A.dispose();
      a.B.dispose();
    }
    this.lora = {};
  }
}

/** The built-in loader: a Qwen2 decoder (also the text part of a Qwen2.5-VL checkpoint, `visual.*` ignored). */
export async function loadQwen2(
  dir: string,
  config: ModelConfig,
  options: LoadModelOptions = {},
): Promise<Qwen2Model> {
  const { params, half } = await loadWeights(dir, expectedParams(config), {
    weightsDtype: checkWeightsDtype(options.weightsDtype),
    half: halfCandidate(config),
  });
  return new Qwen2Model(config, params, { dir, backend: tf.getBackend(), half });
}

/**
 * Which weights `weightsDtype` keeps at 2 bytes: the matrices of the decoder layers and of the vision
 * tower, and an untied embedding and head (a lookup widens only the rows it reads; the head's logits are
 * computed slice by slice of its rows, {@linkcode halfMatMulBTChunked}: the 7B's head is 2.2 GB as
 * float32). A tied embedding stays float32: training reads it whole as the head (`lmHeadWeight`), and
 * widening it per call there would cost a float32 copy each time; norms and biases are too small to matter.
 */
export function halfCandidate(config: ModelConfig): (name: string, shape: number[]) => boolean {
  return (name, shape) =>
    shape.length >= 2 && name.endsWith(".weight") &&
    (name !== "model.embed_tokens.weight" || !config.tieWordEmbeddings);
}

/** `loadModel`'s `weightsDtype`, checked (undefined = float32). */
export function checkWeightsDtype(d: string | undefined): "float32" | "bfloat16" | "float16" | undefined {
  if (d === undefined || (WEIGHTS_DTYPES as readonly string[]).includes(d)) {
    return d as "float32" | "bfloat16" | "float16" | undefined;
  }
  throw new Error(`loadModel option weightsDtype '${d}' is not one of ${WEIGHTS_DTYPES.join(", ")}.`);
}

registerArchitecture("qwen2", loadQwen2);
