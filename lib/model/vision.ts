/**
 * The Qwen2.5-VL vision tower (`Qwen2_5_VisionTransformerPretrainedModel`) in tfjs, written out
 * layer by layer with Hugging Face's semantics:
 *
 * 1. patch embedding: each row of the processor's `pixel_values` (3 x 2 x 14 x 14 values) times the
 *    Conv3d kernel flattened to `[hidden, 1176]` (the kernel equals its stride, so it is a matmul);
 * 2. the tokens are reordered window by window (`windowIndex`, in merged units of 2 x 2 patches);
 * 3. blocks `x += proj(attn(RMSNorm1(x)))`, `x += down(act(gate(h)) * up(h))`, with a 2-D rotary
 *    embedding (patch row, patch column) on q and k; blocks in `fullatt_block_indexes` attend within
 *    each image (frame group), the others within each window;
 * 4. the patch merger (`ln_q`, 4 patches concatenated, MLP with exact GELU) and the inverse reordering.
 *
 * @module
 */
import { tf } from "../util/deps.ts";
import type { VisionConfig } from "./types.ts";
import { batchMatMul, checkpointedLayer, matMulBT } from "./qwen2.ts";

/** Index bookkeeping of one vision call, the quantities Hugging Face computes on the host. */
export interface VisionLayout {
  /** `[hp, wp]` patch coordinates of each `pixel_values` row. */
  rotPosIds: number[][];
  /** Merged units (groups of 4 rows, numbered across all images) in window order. */
  windowIndex: number[];
  /** Cumulative window lengths in patches over the window-ordered sequence (zero-length windows dropped). */
  cuWindowSeqlens: number[];
  /** Cumulative lengths of the full-attention spans (one per image frame group). */
  cuSeqlens: number[];
}

/** Check `imageGridThw` against the config and the number of `pixel_values` rows. */
function checkGrid(gridThw: number[][], config: VisionConfig, rows?: number): void {
  const m = config.spatialMergeSize;
  let total = 0;
  gridThw.forEach((g, i) => {
    if (!Array.isArray(g) || g.length !== 3 || g.some((v) => !Number.isInteger(v) || v <= 0)) {
      throw new Error(
        `imageGridThw[${i}] must be three positive integers [t, h, w], got ${JSON.stringify(g)}.`,
      );
    }
    if (g[1] % m !== 0 || g[2] % m !== 0) {
      throw new Error(
        `imageGridThw[${i}] = ${JSON.stringify(g)}: h and w must be multiples of spatial_merge_size ${m}.`,
      );
    }
    total += g[0] * g[1] * g[2];
  });
  if (rows !== undefined && rows !== total) {
    throw new Error(
      `pixelValues has ${rows} rows but imageGridThw ${JSON.stringify(gridThw)} describes ${total} patches.`,
    );
  }
}

/**
 * The host-side index bookkeeping of a vision call (Hugging Face's `rot_pos_emb` ids,
 * `get_window_index` and `cu_seqlens`), for images given as `[t, h, w]` patch grids.
 *
 * @example
 * ```ts
 * import { visionLayout } from "./vision.ts";
 * const layout = visionLayout([[1, 4, 4]], { spatialMergeSize: 2, patchSize: 14, windowSize: 112 });
 * // layout.cuSeqlens = [0, 16]
 * ```
 */
export function visionLayout(
  gridThw: number[][],
  config: Pick<VisionConfig, "spatialMergeSize" | "patchSize" | "windowSize">,
): VisionLayout {
  const m = config.spatialMergeSize;
  const unit = m * m;
  const win = Math.floor(config.windowSize / m / config.patchSize); // window side in merged units
  const rotPosIds: number[][] = [];
  const windowIndex: number[] = [];
  const cuWindowSeqlens = [0];
  const cuSeqlens = [0];
  let unitOffset = 0;
  for (const [t, h, w] of gridThw) {
    for (let f = 0; f < t; f++) {
      for (let bh = 0; bh < h / m; bh++) {
        for (let bw = 0; bw < w / m; bw++) {
          for (let mh = 0; mh < m; mh++) {
            for (let mw = 0; mw < m; mw++) rotPosIds.push([bh * m + mh, bw * m + mw]);
          }
        }
      }
      cuSeqlens.push(cuSeqlens.at(-1)! + h * w);
    }
    const gh = h / m, gw = w / m;
    for (let f = 0; f < t; f++) {
      for (let wy = 0; wy < gh; wy += win) {
        for (let wx = 0; wx < gw; wx += win) {
          let n = 0;
          for (let y = wy; y < Math.min(wy + win, gh); y++) {
            for (let x = wx; x < Math.min(wx + win, gw); x++) {
              windowIndex.push(unitOffset + (f * gh + y) * gw + x);
              n++;
            }
          }
          cuWindowSeqlens.push(cuWindowSeqlens.at(-1)! + n * unit);
        }
      }
    }
    unitOffset += t * gh * gw;
  }
  return { rotPosIds, windowIndex, cuWindowSeqlens, cuSeqlens };
}

/**
 * Rows of `x` gathered by `fwd` where index `x.shape[0]` stands for a row of zeros. Every row of `x`
 * appears at most once, so the gradient is the same kind of gather (`bwd[j]` = where row j went, or
 * `fwd.length` when it went nowhere): no `UnsortedSegmentSum`, which the wasm backend lacks.
 */
export function injectiveGather(x: tf.Tensor2D, fwd: number[], bwd: number[]): tf.Tensor2D {
  const f = tf.customGrad((...inputs: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const x2 = inputs[0] as tf.Tensor2D;
    const idx = tf.tensor1d(fwd, "int32");
    const padded = tf.concat([x2, tf.zeros([1, x2.shape[1]])], 0);
    const value = tf.gather(padded, idx);
    return {
      value,
      gradFunc: (dy: tf.Tensor) => {
        const back = tf.tensor1d(bwd, "int32");
        const dyz = tf.concat([dy as tf.Tensor2D, tf.zeros([1, dy.shape[1]!])], 0);
        return [tf.gather(dyz, back)];
      },
    };
  });
  return f(x) as tf.Tensor2D;
}

/** Where each row of a segmented sequence goes in a padded `[S, L]` layout, and back. */
interface SegmentPlan {
  S: number;
  L: number;
  /** true when all segments have length L (a reshape suffices). */
  uniform: boolean;
  /** padded slot -> row (or N for padding) */
  toPadded: number[];
  /** row -> padded slot */
  fromPadded: number[];
  /** `[S, 1, 1, L]` additive mask: 0 on real keys, -1e9 on padding (null when uniform). */
  keyBias: number[] | null;
}

function segmentPlan(cu: number[]): SegmentPlan {
  const lens: number[] = [];
  for (let i = 1; i < cu.length; i++) if (cu[i] > cu[i - 1]) lens.push(cu[i] - cu[i - 1]);
  const N = cu.at(-1)!;
  const S = lens.length, L = Math.max(...lens);
  const uniform = lens.every((n) => n === L);
  const toPadded = new Array(S * L).fill(N);
  const fromPadded = new Array(N);
  const keyBias = uniform ? null : new Array(S * L).fill(-1e9);
  let row = 0;
  lens.forEach((n, s) => {
    for (let j = 0; j < n; j++) {
      toPadded[s * L + j] = row;
      fromPadded[row] = s * L + j;
      if (keyBias) keyBias[s * L + j] = 0;
      row++;
    }
  });
  return { S, L, uniform, toPadded, fromPadded, keyBias };
}

function linear(x: tf.Tensor2D, w: tf.Tensor, b?: tf.Tensor): tf.Tensor2D {
  const y = matMulBT(x, w as tf.Tensor2D);
  return b ? tf.add(y, b) as tf.Tensor2D : y;
}

function rmsNorm(x: tf.Tensor2D, w: tf.Tensor, eps: number): tf.Tensor2D {
  const ms = tf.mean(tf.square(x), -1, true);
  return tf.mul(tf.mul(x, tf.rsqrt(tf.add(ms, eps))), w);
}

/** Exact (erf) GELU. */
function gelu(x: tf.Tensor): tf.Tensor {
  return tf.mul(tf.mul(x, 0.5), tf.add(1, tf.erf(tf.mul(x, Math.SQRT1_2))));
}

function activation(name: string, x: tf.Tensor): tf.Tensor {
  switch (name) {
    case "silu":
    case "swish":
      return tf.mul(x, tf.sigmoid(x));
    case "gelu":
      return gelu(x);
    case "gelu_pytorch_tanh":
    case "gelu_new": {
      const c = Math.sqrt(2 / Math.PI);
      const inner = tf.mul(tf.add(x, tf.mul(tf.pow(x, 3), 0.044715)), c);
      return tf.mul(tf.mul(x, 0.5), tf.add(1, tf.tanh(inner)));
    }
    case "quick_gelu":
      return tf.mul(x, tf.sigmoid(tf.mul(x, 1.702)));
    default:
      throw new Error(`vision_config.hidden_act '${name}' is not supported (use silu, gelu or quick_gelu).`);
  }
}

function rotateHalf(x: tf.Tensor3D): tf.Tensor3D {
  const d = x.shape[2] / 2;
  const x1 = tf.slice(x, [0, 0, 0], [-1, -1, d]);
  const x2 = tf.slice(x, [0, 0, d], [-1, -1, d]);
  return tf.concat([tf.neg(x2), x1], -1);
}

/** `[N, d]` cos and sin of the 2-D rotary angles for the given `[hp, wp]` ids. */
function visionRotary(posIds: number[][], headDim: number): { cos: tf.Tensor2D; sin: tf.Tensor2D } {
  const q = headDim / 4; // frequencies per spatial axis
  const inv = Array.from({ length: q }, (_, j) => 1 / Math.pow(10000, (2 * j) / (headDim / 2)));
  const cos = new Float32Array(posIds.length * headDim);
  const sin = new Float32Array(posIds.length * headDim);
  posIds.forEach(([hp, wp], r) => {
    for (let j = 0; j < q; j++) {
      const ah = hp * inv[j], aw = wp * inv[j];
      for (const rep of [0, headDim / 2]) {
        cos[r * headDim + rep + j] = Math.cos(ah);
        sin[r * headDim + rep + j] = Math.sin(ah);
        cos[r * headDim + rep + q + j] = Math.cos(aw);
        sin[r * headDim + rep + q + j] = Math.sin(aw);
      }
    }
  });
  return {
    cos: tf.tensor2d(cos, [posIds.length, headDim]),
    sin: tf.tensor2d(sin, [posIds.length, headDim]),
  };
}

/** Multi-head attention within segments of the (window-ordered) sequence. */
function segmentAttention(
  q: tf.Tensor2D,
  k: tf.Tensor2D,
  v: tf.Tensor2D,
  plan: SegmentPlan,
  heads: number,
  maxScores: number,
): tf.Tensor2D {
  const D = q.shape[1], hd = D / heads;
  const toSegments = (x: tf.Tensor2D): tf.Tensor4D =>
    tf.transpose(
      tf.reshape(plan.uniform ? x : injectiveGather(x, plan.toPadded, plan.fromPadded), [
        plan.S,
        plan.L,
        heads,
        hd,
      ]),
      [0, 2, 1, 3],
    ) as tf.Tensor4D;
  const qs = toSegments(q), ks = toSegments(k), vs = toSegments(v);
  const bias = plan.keyBias ? tf.tensor4d(plan.keyBias, [plan.S, 1, 1, plan.L]) : null;
  const attend = (qc: tf.Tensor4D): tf.Tensor4D => {
    let scores: tf.Tensor = tf.mul(batchMatMul(qc, ks, true), 1 / Math.sqrt(hd));
    if (bias) scores = tf.add(scores, bias);
    return batchMatMul(tf.softmax(scores) as tf.Tensor4D, vs);
  };
  // Full attention over a large image has S*H*L*L scores (16 heads x 6808^2 patches = 3 GB for one
  // 1291 x 1024 px scan): queries go in chunks, each freed before the next when no gradient is taken.
  const rows = Math.max(1, Math.floor(maxScores / (plan.S * heads * plan.L)));
  let out: tf.Tensor4D; // [S, H, L, hd]
  if (rows >= plan.L) out = attend(qs);
  else {
    const parts: tf.Tensor4D[] = [];
    for (let r0 = 0; r0 < plan.L; r0 += rows) {
      const n = Math.min(rows, plan.L - r0);
      parts.push(tf.tidy(() => attend(tf.slice(qs, [0, 0, r0, 0], [-1, -1, n, -1]))));
    }
    out = tf.concat(parts, 2);
  }
  const flat = tf.reshape(tf.transpose(out, [0, 2, 1, 3]), [plan.S * plan.L, D]) as tf.Tensor2D;
  if (plan.uniform) return flat;
  // Padding slots (toPadded = N) went nowhere: N is also the index of the zero row of the gradient.
  return injectiveGather(flat, plan.fromPadded, plan.toPadded);
}

/** Names and shapes of the vision tower's parameters (Hub names, `visual.` prefix). */
export function visionExpectedParams(v: VisionConfig): Record<string, number[]> {
  const D = v.hiddenSize, I = v.intermediateSize, M = D * v.spatialMergeSize ** 2;
  const out: Record<string, number[]> = {
    "visual.patch_embed.proj.weight": [D, v.inChannels, v.temporalPatchSize, v.patchSize, v.patchSize],
  };
  for (let i = 0; i < v.depth; i++) {
    const b = `visual.blocks.${i}.`;
    out[b + "norm1.weight"] = [D];
    out[b + "norm2.weight"] = [D];
    out[b + "attn.qkv.weight"] = [3 * D, D];
    out[b + "attn.qkv.bias"] = [3 * D];
    out[b + "attn.proj.weight"] = [D, D];
    out[b + "attn.proj.bias"] = [D];
    for (const m of ["gate_proj", "up_proj"]) {
      out[b + `mlp.${m}.weight`] = [I, D];
      out[b + `mlp.${m}.bias`] = [I];
    }
    out[b + "mlp.down_proj.weight"] = [D, I];
    out[b + "mlp.down_proj.bias"] = [D];
  }
  out["visual.merger.ln_q.weight"] = [D];
  out["visual.merger.mlp.0.weight"] = [M, M];
  out["visual.merger.mlp.0.bias"] = [M];
  out["visual.merger.mlp.2.weight"] = [v.outHiddenSize, M];
  out["visual.merger.mlp.2.bias"] = [v.outHiddenSize];
  return out;
}

/** Options of {@linkcode visionForward}. */
export interface VisionForwardOptions {
  /** Parameter-name prefix of the tower (default `visual.`). */
  prefix?: string;
  /** RMSNorm epsilon (default 1e-6). */
  eps?: number;
  /** Stop after the last block and return its output `[N, hidden]` in `pixel_values` row order. */
  returnLastHidden?: boolean;
  /** Largest attention-score tensor (values) computed at once; longer query spans go in chunks. Default 2^25. */
  maxAttentionScores?: number;
  /** Activation checkpointing of the blocks (see `checkpointedLayer` in qwen2.ts). Default false. */
  gradientCheckpointing?: boolean;
  /** The trainable variables under a parameter-name prefix (`visual.blocks.3.`), for checkpointing. */
  trainables?: (prefix: string) => tf.Variable[];
}

/**
 * The vision tower: `pixel_values` `[N, C*tp*p*p]` of the images `gridThw` -> merged image
 * embeddings `[N / merge^2, out_hidden]`, in merged-unit order, image after image. Differentiable
 * with respect to the parameters.
 *
 * @example
 * ```ts ignore
 * const embeds = visionForward(model.params, model.config.vision!, pixelValues, [[1, 10, 10]]);
 * ```
 */
export function visionForward(
  params: Record<string, tf.Tensor> | ((name: string) => tf.Tensor | undefined),
  config: VisionConfig,
  pixelValues: tf.Tensor2D,
  gridThw: number[][],
  options: VisionForwardOptions = {},
): tf.Tensor2D {
  const prefix = options.prefix ?? "visual.";
  const eps = options.eps ?? 1e-6;
  const unit = config.spatialMergeSize ** 2;
  const C = config.inChannels * config.temporalPatchSize * config.patchSize ** 2;
  if (pixelValues.rank !== 2 || pixelValues.shape[1] !== C) {
    throw new Error(
      `pixelValues must be [patches, ${C}] (the processor's flattened layout), got [${pixelValues.shape}].`,
    );
  }
  checkGrid(gridThw, config, pixelValues.shape[0]);
  const p = (name: string): tf.Tensor => {
    const t = typeof params === "function" ? params(prefix + name) : params[prefix + name];
    if (!t) throw new Error(`The vision tower parameter '${prefix + name}' is missing.`);
    return t;
  };
  const layout = visionLayout(gridThw, config);
  const N = pixelValues.shape[0];
  const heads = config.numHeads, D = config.hiddenSize, hd = D / heads;
  // Window order at the granularity of rows: unit u's 4 rows follow each other.
  const order: number[] = [];
  for (const u of layout.windowIndex) for (let j = 0; j < unit; j++) order.push(u * unit + j);
  const inverse = new Array(N);
  order.forEach((r, i) => (inverse[r] = i));

  return tf.tidy(() => {
    // The reordering of the inputs needs no gradient: pixel values and angles are constants.
    const pv = tf.gather(pixelValues, tf.tensor1d(order, "int32")) as tf.Tensor2D;
    const w = tf.reshape(p("patch_embed.proj.weight"), [D, C]);
    let x = matMulBT(pv, w as tf.Tensor2D);
    const { cos, sin } = visionRotary(order.map((r) => layout.rotPosIds[r]), hd);
    const cos3 = tf.expandDims(cos, 1), sin3 = tf.expandDims(sin, 1);
    const rope = (t: tf.Tensor2D, c: tf.Tensor, s: tf.Tensor): tf.Tensor2D => {
      const t3 = tf.reshape(t, [N, heads, hd]) as tf.Tensor3D;
      return tf.reshape(tf.add(tf.mul(t3, c), tf.mul(rotateHalf(t3), s)), [N, D]);
    };
    const windowPlan = segmentPlan(layout.cuWindowSeqlens);
    const fullPlan = segmentPlan(layout.cuSeqlens);
    for (let i = 0; i < config.depth; i++) {
      const b = `blocks.${i}.`;
      const plan = config.fullattBlockIndexes.includes(i) ? fullPlan : windowPlan;
      const xIn = x;
      // One tidy per block (as the decoder's per layer): a block's activations (and its weights, when
      // widened from 2 bytes) are freed when it is done, not after all 32 blocks; memory then grows with
      // one block's activations, linear in the patches for the windowed blocks. A gradient tape keeps
      // what its backward pass needs by itself.
      // The block as a function of its input and of the rotary factors (which a checkpointed block saves
      // for its backward: they belong to this call's scope, which ends before the backward runs).
      const block = (xIn: tf.Tensor2D, [c, s]: tf.Tensor[]): tf.Tensor2D => {
        const h = rmsNorm(xIn, p(b + "norm1.weight"), eps);
        const qkv = linear(h, p(b + "attn.qkv.weight"), p(b + "attn.qkv.bias"));
        const [q, k, v] = tf.split(qkv, 3, 1) as tf.Tensor2D[];
        const attn = segmentAttention(
          rope(q, c, s),
          rope(k, c, s),
          v,
          plan,
          heads,
          options.maxAttentionScores ?? 2 ** 25,
        );
        const mid = tf.add(
          xIn,
          linear(attn, p(b + "attn.proj.weight"), p(b + "attn.proj.bias")),
        ) as tf.Tensor2D;
        const h2 = rmsNorm(mid, p(b + "norm2.weight"), eps);
        const gate = activation(
          config.hiddenAct,
          linear(h2, p(b + "mlp.gate_proj.weight"), p(b + "mlp.gate_proj.bias")),
        );
        const up = linear(h2, p(b + "mlp.up_proj.weight"), p(b + "mlp.up_proj.bias"));
        return tf.add(
          mid,
          linear(tf.mul(gate, up) as tf.Tensor2D, p(b + "mlp.down_proj.weight"), p(b + "mlp.down_proj.bias")),
        ) as tf.Tensor2D;
      };
      // With checkpointing the tape keeps only each block's input (even for a frozen tower, whose taped
      // activations would otherwise stay alive until the backward pass ends).
      x = tf.tidy(() =>
        options.gradientCheckpointing
          ? checkpointedLayer(block, xIn, [cos3, sin3], options.trainables?.(prefix + b) ?? [])
          : block(xIn, [cos3, sin3])
      );
    }
    if (options.returnLastHidden) return injectiveGather(x, inverse, order);
    const merged = tf.reshape(rmsNorm(x, p("merger.ln_q.weight"), eps), [N / unit, D * unit]) as tf.Tensor2D;
    const hidden = gelu(linear(merged, p("merger.mlp.0.weight"), p("merger.mlp.0.bias"))) as tf.Tensor2D;
    const out = linear(hidden, p("merger.mlp.2.weight"), p("merger.mlp.2.bias"));
    // Back from window order to merged-unit order.
    const rev = new Array(layout.windowIndex.length);
    layout.windowIndex.forEach((u, i) => (rev[u] = i));
    return injectiveGather(out, rev, layout.windowIndex);
  });
}
