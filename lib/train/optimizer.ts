/**
 * AdamW with PyTorch's semantics, global-norm gradient clipping and gradient accumulation.
 *
 * One update of parameter `p` with gradient `g` at step `t` (1-based), learning rate `lr`:
 * ```
 * p = p * (1 - lr * wd)                      decoupled weight decay
 * m = b1 * m + (1 - b1) * g;  v = b2 * v + (1 - b2) * g^2
 * p = p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 * ```
 * Moments live in `tf.Variable`s created up front and updated in place, so the number of live tensors does
 * not change from one step to the next.
 *
 * @module
 */
import { tf } from "../deps.ts";
import { addMany } from "./_ops.ts";

/** Parameters that share a weight decay. */
export interface ParamGroup {
  /** Parameter names (keys of the `params` record). */
  names: string[];
  /** Decoupled weight decay of this group. */
  weightDecay: number;
}

/** Options of {@linkcode adamw}. */
export interface AdamWOptions {
  /** The tensors to train, by name. */
  params: Record<string, tf.Variable>;
  /** Learning rate (each `step` may override it, e.g. from a schedule). Default 1e-3 (PyTorch). */
  lr?: number;
  /** Default (0.9, 0.999) as PyTorch. */
  betas?: [number, number];
  /** Added after the square root. Default 1e-8. */
  eps?: number;
  /** Weight decay of every parameter not in `paramGroups`. Default 0.01 (PyTorch). */
  weightDecay?: number;
  /** Per-group weight decay (e.g. {@linkcode hfParamGroups}); names not listed use `weightDecay`. */
  paramGroups?: ParamGroup[];
}

/** The optimizer state as plain data plus tensors (for checkpoints). */
export interface AdamWState {
  /** Updates taken so far. */
  step: number;
  /** First moments by parameter name (PyTorch's `exp_avg`). */
  expAvg: Record<string, tf.Tensor>;
  /** Second moments by parameter name (PyTorch's `exp_avg_sq`). */
  expAvgSq: Record<string, tf.Tensor>;
}

/** What {@linkcode adamw} returns. */
export interface AdamW {
  /** The learning rate used when `step` is not given one. */
  lr: number;
  /** Adam's (beta1, beta2). */
  readonly betas: [number, number];
  /** Adam's epsilon. */
  readonly eps: number;
  /** Updates taken so far. */
  readonly stepCount: number;
  /** Weight decay of each parameter, by name. */
  readonly weightDecay: Record<string, number>;
  /**
   * One update from `grads` (by parameter name; a name without a gradient is left alone, as PyTorch skips
   * parameters whose `.grad` is None). The gradients are not disposed.
   */
  step(grads: Record<string, tf.Tensor>, options?: { lr?: number }): void;
  /** The current state (tensors are the live moment variables: copy them before changing anything). */
  state(): AdamWState;
  /** Overwrite the state (moments copied in; shapes must match). */
  loadState(state: AdamWState): void;
  /** Free the moment variables. */
  dispose(): void;
}

// transformers 5.x Trainer.get_decay_parameter_names: these patterns, searched in the lower-cased name
// (nn.LayerNorm layers are excluded too; Qwen models have none, their norms are RMSNorms matched by name).
const NO_DECAY_PATTERNS = [/bias/, /layernorm/, /rmsnorm/, /(?:^|\.)norm(?:$|\.)/, /_norm(?:$|\.)/];

function isNoDecay(name: string): boolean {
  const lower = name.toLowerCase();
  return NO_DECAY_PATTERNS.some((p) => p.test(lower));
}

/**
 * The Hugging Face Trainer's parameter groups: `weightDecay` on every tensor except those whose lower-cased
 * name contains `bias`, `layernorm` or `rmsnorm`, or a `norm` / `_norm` module (transformers 5.x
 * `get_decay_parameter_names`), which get 0. (As there, Qwen2.5-VL's vision `norm1` / `norm2` are decayed.)
 *
 * @example
 * ```ts ignore
 * const opt = adamw({ params: model.params, paramGroups: hfParamGroups(Object.keys(model.params), 1e-4) });
 * ```
 */
export function hfParamGroups(names: string[], weightDecay: number): ParamGroup[] {
  return [
    { names: names.filter((n) => !isNoDecay(n)), weightDecay },
    { names: names.filter(isNoDecay), weightDecay: 0 },
  ];
}

/**
 * AdamW with PyTorch's semantics (decoupled weight decay, bias-corrected moments, eps after the root).
 *
 * @example
 * ```ts
 * import { tf } from "../deps.ts";
 * import { adamw } from "./optimizer.ts";
 * const w = tf.variable(tf.ones([2]));
 * const opt = adamw({ params: { w }, lr: 0.1, weightDecay: 0 });
 * opt.step({ w: tf.tensor1d([1, -1]) });
 * ```
 */
export function adamw(options: AdamWOptions): AdamW {
  const params = options.params;
  const names = Object.keys(params);
  const [b1, b2] = options.betas ?? [0.9, 0.999];
  const eps = options.eps ?? 1e-8;
  const decay: Record<string, number> = {};
  for (const n of names) decay[n] = options.weightDecay ?? 0.01;
  for (const g of options.paramGroups ?? []) {
    for (const n of g.names) {
      if (!(n in params)) {
        throw new Error(`adamw: parameter group names '${n}', which is not among the params.`);
      }
      decay[n] = g.weightDecay;
    }
  }
  const m: Record<string, tf.Variable> = {};
  const v: Record<string, tf.Variable> = {};
  for (const n of names) {
    // tf.variable copies its initial value: build the zeros inside tidy so they are freed.
    m[n] = tf.tidy(() => tf.variable(tf.zerosLike(params[n]), false));
    v[n] = tf.tidy(() => tf.variable(tf.zerosLike(params[n]), false));
  }
  let t = 0;
  const opt: AdamW = {
    lr: options.lr ?? 1e-3,
    betas: [b1, b2],
    eps,
    get stepCount() {
      return t;
    },
    weightDecay: decay,
    step(grads, stepOptions = {}) {
      const lr = stepOptions.lr ?? opt.lr;
      for (const g of Object.keys(grads)) {
        if (!(g in params)) {
          throw new Error(`adamw: got a gradient for '${g}', which is not among the params.`);
        }
      }
      t += 1;
      const bc1 = 1 - b1 ** t;
      const bc2Sqrt = Math.sqrt(1 - b2 ** t);
      const stepSize = lr / bc1;
      for (const n of names) {
        const g = grads[n];
        if (!g) continue;
        // Each sub-expression in its own tidy: its temporaries are freed before the next one starts, so
        // at most ~3 parameter-sized temporaries exist at once (not ~10), which matters for a
        // [151936, 896] embedding.
        tf.tidy(() => {
          const p = params[n];
          m[n].assign(tf.tidy(() => m[n].mul(b1).add(g.mul(1 - b1))));
          v[n].assign(tf.tidy(() => v[n].mul(b2).add(g.square().mul(1 - b2))));
          const update = tf.tidy(() => m[n].div(v[n].sqrt().div(bc2Sqrt).add(eps)).mul(stepSize));
          p.assign(tf.tidy(() => (decay[n] !== 0 ? p.mul(1 - lr * decay[n]) : p).sub(update)));
        });
      }
    },
    state() {
      return { step: t, expAvg: { ...m }, expAvgSq: { ...v } };
    },
    loadState(state) {
      for (const n of names) {
        for (
          const [src, dst, what] of [[state.expAvg, m, "expAvg"], [state.expAvgSq, v, "expAvgSq"]] as const
        ) {
          const s = src[n];
          if (!s) throw new Error(`adamw: the optimizer state lacks ${what} of '${n}'.`);
          if (s.shape.join(",") !== dst[n].shape.join(",")) {
            throw new Error(
              `adamw: ${what} of '${n}' has shape [${s.shape}], the parameter [${dst[n].shape}].`,
            );
          }
          dst[n].assign(s);
        }
      }
      t = state.step;
    },
    dispose() {
      for (const n of names) tf.dispose([m[n], v[n]]);
    },
  };
  return opt;
}

/**
 * Clip gradients to a global L2 norm, as `torch.nn.utils.clip_grad_norm_`: every gradient is scaled by
 * `min(1, maxNorm / (norm + 1e-6))`. The record is updated IN PLACE (old tensors disposed); returns the norm
 * before clipping. `maxNorm` of 0 or Infinity only measures.
 *
 * @example
 * ```ts
 * import { tf } from "../deps.ts";
 * import { clipGradNorm } from "./optimizer.ts";
 * const grads = { a: tf.tensor1d([3, 4]) };
 * const norm = await clipGradNorm(grads, 1); // 5; grads.a is now [0.6, 0.8]
 * ```
 */
export async function clipGradNorm(grads: Record<string, tf.Tensor>, maxNorm: number): Promise<number> {
  const names = Object.keys(grads);
  if (names.length === 0) return 0;
  const normT = tf.tidy(() => addMany(names.map((n) => grads[n].square().sum())).sqrt());
  const norm = (await normT.data())[0];
  normT.dispose();
  if (maxNorm > 0 && Number.isFinite(maxNorm)) {
    const coef = maxNorm / (norm + 1e-6);
    if (coef < 1) {
      for (const n of names) {
        const old = grads[n];
        grads[n] = old.mul(coef);
        old.dispose();
      }
    }
  }
  return norm;
}

/**
 * Add `grads` into the running sum `into` (gradient accumulation); both records are keyed by name.
 * Disposes `grads` and the old sums; returns the new sums (`grads` itself when `into` is empty).
 */
export function accumulateGrads(
  into: Record<string, tf.Tensor> | null,
  grads: Record<string, tf.Tensor>,
): Record<string, tf.Tensor> {
  if (!into) return grads;
  const out: Record<string, tf.Tensor> = {};
  for (const n of Object.keys(grads)) {
    out[n] = into[n] ? into[n].add(grads[n]) : grads[n].clone();
    into[n]?.dispose();
    grads[n].dispose();
  }
  for (const n of Object.keys(into)) if (!(n in out)) out[n] = into[n];
  return out;
}

/**
 * `tf.variableGrads` keyed by OUR parameter names (tfjs keys gradients by its internal variable names).
 *
 * @example
 * ```ts
 * import { tf } from "../deps.ts";
 * import { valueAndGrads } from "./optimizer.ts";
 * const w = tf.variable(tf.scalar(3));
 * const { value, grads } = valueAndGrads(() => w.square() as tf.Scalar, { "w.weight": w }); // grads["w.weight"] = 6
 * ```
 */
export function valueAndGrads(
  f: () => tf.Scalar,
  params: Record<string, tf.Variable>,
): { value: tf.Scalar; grads: Record<string, tf.Tensor> } {
  const names = Object.keys(params);
  const { value, grads } = tf.variableGrads(f, names.map((n) => params[n]));
  const out: Record<string, tf.Tensor> = {};
  for (const n of names) {
    const g = grads[params[n].name];
    if (g) out[n] = g;
  }
  return { value, grads: out };
}
