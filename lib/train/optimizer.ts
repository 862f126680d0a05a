/**
 * AdamW with PyTorch's semantics, global-norm gradient clipping and gradient accumulation.
 *
 * One update of parameter `p` with gradient `g` at step `t` (1-based), learning rate `lr`:
 * ```
 * p = p * (1 - lr * wd)                      decoupled weight decay
 * m = b1 * m + (1 - b1) * g;  v = b2 * v + (1 - b2) * g^2
 * p = p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 * ```
 * Where tensors live in CPU memory (the `cpu`, `wasm` and `tensorflow` backends) the moments and a copy
 * of each parameter are host `Float32Array`s and each parameter is updated in ONE fused loop: the
 * gradient is read once, the new parameter written back with one `assign` (`_adamw_host.ts`; the loop
 * itself in C through Deno's FFI where a compiler is installed, `_adamw_native.ts`, with the same bits). The
 * tensor-op update allocates about ten parameter-sized temporaries per tensor (545 MB each for Qwen2.5's
 * `[151936, 896]` embedding), which dominated the optimizer's time and a large share of a full fine-tune's
 * peak memory. On `webgpu` the moments are `tf.Variable`s updated in place with tensor ops (reading back to
 * the host would cost more). Either way the number of live tensors does not change from one step to the
 * next.
 *
 * Gradient clipping can be folded into the update: {@linkcode clipScale} measures the global norm, and
 * `step(grads, { gradScale })` multiplies each gradient by the factor as it reads it, instead of
 * {@linkcode clipGradNorm} writing a scaled copy of every gradient first (a whole extra pass over the
 * gradients and as much memory again, for a full fine-tune).
 *
 * @module
 */
import { tf } from "../util/deps.ts";
import { addMany, leanVariableGrads } from "./_ops.ts";
import { type HostParam, hostParam, hostUpdate } from "./_adamw_host.ts";
import { openNativeAdamw } from "./_adamw_native.ts";

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
  /**
   * Keep the moments (and a copy of each parameter) on the host and update each parameter in one fused
   * loop. Default: true on the
   * backends whose tensors live in CPU memory (`cpu`, `wasm`, `tensorflow`), false elsewhere (`webgpu`).
   */
  hostMoments?: boolean;
}

/** Options of one {@linkcode AdamW} `step`. */
export interface AdamWStepOptions {
  /** Learning rate of this update (e.g. from a schedule). Default: the optimizer's `lr`. */
  lr?: number;
  /**
   * Factor every gradient is multiplied by (in float32) before the update: the `scale` of
   * {@linkcode clipScale}, which makes `clipScale` + `step(grads, { gradScale })` give the same update as
   * `clipGradNorm` + `step(grads)` without a scaled copy of the gradients. Default 1.
   */
  gradScale?: number;
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
  step(grads: Record<string, tf.Tensor>, options?: AdamWStepOptions): void;
  /**
   * The current state. The tensors are the live moments (with host moments: tensors over the moments' own
   * arrays, freed by the next `step`, `loadState` or `dispose`): read their data, or copy it (a `clone`
   * shares the storage), before the optimizer changes anything.
   */
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
 * import { tf } from "../util/deps.ts";
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
  const host = options.hostMoments ?? HOST_BACKENDS.has(tf.getBackend());
  if (host && !HOST_BACKENDS.has(tf.getBackend())) {
    throw new Error(
      `adamw: hostMoments needs a backend whose tensors live in CPU memory (cpu, wasm, tensorflow), not '${tf.getBackend()}'.`,
    );
  }
  // Tensor path: moments as variables. Host path: moments and the parameters' host copies as
  // Float32Arrays (no tensors at all; memory is committed as it is first written).
  const m: Record<string, tf.Variable> = {};
  const v: Record<string, tf.Variable> = {};
  const hp: Record<string, HostParam> = {};
  for (const n of names) {
    if (host) {
      hp[n] = hostParam(params[n].size);
    } else {
      // tf.variable copies its initial value: build the zeros inside tidy so they are freed.
      m[n] = tf.tidy(() => tf.variable(tf.zerosLike(params[n]), false));
      v[n] = tf.tidy(() => tf.variable(tf.zerosLike(params[n]), false));
    }
  }
  // Host path: tensors handed out by state(), freed when the moments change or go away.
  let stateViews: tf.Tensor[] = [];
  function dropViews(): void {
    tf.dispose(stateViews);
    stateViews = [];
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
      // The factor as the float32 scalar a `g.mul(scale)` would use.
      const scale = Math.fround(stepOptions.gradScale ?? 1);
      for (const g of Object.keys(grads)) {
        if (!(g in params)) {
          throw new Error(`adamw: got a gradient for '${g}', which is not among the params.`);
        }
        if (grads[g].size !== params[g].size) {
          throw new Error(
            `adamw: the gradient of '${g}' has shape [${grads[g].shape}], the parameter [${
              params[g].shape
            }].`,
          );
        }
      }
      dropViews();
      t += 1;
      const bc1 = 1 - b1 ** t;
      const bc2Sqrt = Math.sqrt(1 - b2 ** t);
      const stepSize = lr / bc1;
      if (host) {
        // The host loop in C for this step where it builds (closed after: see openNativeAdamw).
        const native = openNativeAdamw();
        try {
          for (const n of names) {
            const g = grads[n];
            if (!g) continue;
            const k = { b1, b2, eps, stepSize, bc2Sqrt, keep: 1 - lr * decay[n], scale };
            hostUpdate(params[n], g, hp[n], k, native?.update ?? null);
          }
        } finally {
          native?.close();
        }
        return;
      }
      for (const n of names) {
        const g = grads[n];
        if (!g) continue;
        // Each sub-expression in its own tidy: its temporaries are freed before the next one starts, so
        // at most ~3 parameter-sized temporaries exist at once (not ~10), which matters for a
        // [151936, 896] embedding.
        tf.tidy(() => {
          const p = params[n];
          const gs = scale !== 1 ? g.mul(scale) : g;
          m[n].assign(tf.tidy(() => m[n].mul(b1).add(gs.mul(1 - b1))));
          v[n].assign(tf.tidy(() => v[n].mul(b2).add(gs.square().mul(1 - b2))));
          const update = tf.tidy(() => m[n].div(v[n].sqrt().div(bc2Sqrt).add(eps)).mul(stepSize));
          p.assign(tf.tidy(() => (decay[n] !== 0 ? p.mul(1 - lr * decay[n]) : p).sub(update)));
        });
      }
    },
    state() {
      if (!host) return { step: t, expAvg: { ...m }, expAvgSq: { ...v } };
      dropViews();
      const expAvg: Record<string, tf.Tensor> = {};
      const expAvgSq: Record<string, tf.Tensor> = {};
      for (const n of names) {
        expAvg[n] = tf.tensor(hp[n].m, params[n].shape, "float32");
        expAvgSq[n] = tf.tensor(hp[n].v, params[n].shape, "float32");
        stateViews.push(expAvg[n], expAvgSq[n]);
      }
      return { step: t, expAvg, expAvgSq };
    },
    loadState(state) {
      for (const n of names) {
        for (
          const [src, what] of [[state.expAvg, "expAvg"], [state.expAvgSq, "expAvgSq"]] as const
        ) {
          const s = src[n];
          if (!s) throw new Error(`adamw: the optimizer state lacks ${what} of '${n}'.`);
          if (s.shape.join(",") !== params[n].shape.join(",")) {
            throw new Error(
              `adamw: ${what} of '${n}' has shape [${s.shape}], the parameter [${params[n].shape}].`,
            );
          }
        }
      }
      // Read everything before writing: `state` may be this optimizer's own state() views.
      if (host) {
        const read = names.map((n) => [
          state.expAvg[n].dataSync() as Float32Array,
          state.expAvgSq[n].dataSync() as Float32Array,
        ]);
        dropViews();
        names.forEach((n, i) => {
          hp[n].m.set(read[i][0]);
          hp[n].v.set(read[i][1]);
          hp[n].zeroMoments = false;
        });
      } else {
        // A real copy (assign alone would share storage): host-moment state() tensors are views of arrays
        // that their optimizer updates in place.
        for (const n of names) {
          tf.tidy(() => {
            m[n].assign(state.expAvg[n].mul(1));
            v[n].assign(state.expAvgSq[n].mul(1));
          });
        }
      }
      t = state.step;
    },
    dispose() {
      dropViews();
      for (const n of names) {
        if (!host) tf.dispose([m[n], v[n]]);
        delete hp[n];
      }
    },
  };
  return opt;
}

// Backends whose tensors are plain CPU memory: reading one back is a copy, not a device transfer.
const HOST_BACKENDS = new Set(["cpu", "wasm", "tensorflow"]);

/**
 * The global L2 norm of `grads` and the factor `torch.nn.utils.clip_grad_norm_` would scale them by:
 * `min(1, maxNorm / (norm + 1e-6))` (1 when `maxNorm` is 0 or Infinity: only measure). Changes nothing:
 * pass `scale` to the optimizer's `step(grads, { gradScale })`, which applies it while it reads each
 * gradient (no scaled copy of the gradients, as {@linkcode clipGradNorm} makes).
 *
 * @example
 * ```ts
 * import { tf } from "../util/deps.ts";
 * import { adamw, clipScale } from "./optimizer.ts";
 * const w = tf.variable(tf.zeros([2]));
 * const grads = { w: tf.tensor1d([3, 4]) };
 * const { norm, scale } = await clipScale(grads, 1); // 5, 1 / (5 + 1e-6)
 * adamw({ params: { w } }).step(grads, { gradScale: scale });
 * ```
 */
export async function clipScale(
  grads: Record<string, tf.Tensor>,
  maxNorm: number,
): Promise<{ norm: number; scale: number }> {
  const names = Object.keys(grads);
  if (names.length === 0) return { norm: 0, scale: 1 };
  // One tidy per tensor: only one gradient-sized temporary (its square) exists at a time.
  const sums = names.map((n) => tf.tidy(() => grads[n].square().sum()));
  const normT = tf.tidy(() => addMany(sums).sqrt());
  tf.dispose(sums);
  const norm = (await normT.data())[0];
  normT.dispose();
  const clips = maxNorm > 0 && Number.isFinite(maxNorm);
  return { norm, scale: clips ? Math.min(1, maxNorm / (norm + 1e-6)) : 1 };
}

/**
 * Clip gradients to a global L2 norm, as `torch.nn.utils.clip_grad_norm_`: every gradient is scaled by
 * `min(1, maxNorm / (norm + 1e-6))`. The record is updated IN PLACE (old tensors disposed); returns the norm
 * before clipping. `maxNorm` of 0 or Infinity only measures. (Before an AdamW step, {@linkcode clipScale}
 * with the step's `gradScale` does the same without the scaled copies.)
 *
 * @example
 * ```ts
 * import { tf } from "../util/deps.ts";
 * import { clipGradNorm } from "./optimizer.ts";
 * const grads = { a: tf.tensor1d([3, 4]) };
 * const norm = await clipGradNorm(grads, 1); // 5; grads.a is now [0.6, 0.8]
 * ```
 */
export async function clipGradNorm(grads: Record<string, tf.Tensor>, maxNorm: number): Promise<number> {
  const { norm, scale } = await clipScale(grads, maxNorm);
  if (scale < 1) {
    for (const n of Object.keys(grads)) {
      const old = grads[n];
      grads[n] = old.mul(scale);
      old.dispose();
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

/** Options of {@linkcode valueAndGrads}. */
export interface ValueAndGradsOptions {
  /**
   * Running gradient sums by name (gradient accumulation): the new gradients are added to them as soon as
   * each is complete, so the sums and a whole second set of gradients never coexist. The given sums are
   * disposed; the returned `grads` are the new sums (as {@linkcode accumulateGrads}).
   */
  accumulate?: Record<string, tf.Tensor> | null;
}

/**
 * `tf.variableGrads` keyed by OUR parameter names (tfjs keys gradients by its internal variable names),
 * freeing each intermediate gradient and saved activation as soon as the backward pass is past it.
 *
 * @example
 * ```ts
 * import { tf } from "../util/deps.ts";
 * import { valueAndGrads } from "./optimizer.ts";
 * const w = tf.variable(tf.scalar(3));
 * const { value, grads } = valueAndGrads(() => w.square() as tf.Scalar, { "w.weight": w }); // grads["w.weight"] = 6
 * ```
 */
export function valueAndGrads(
  f: () => tf.Scalar,
  params: Record<string, tf.Variable>,
  options: ValueAndGradsOptions = {},
): { value: tf.Scalar; grads: Record<string, tf.Tensor> } {
  const names = Object.keys(params);
  const into = options.accumulate ?? undefined;
  // tf.variableGrads' result, with each intermediate gradient and saved activation freed as soon as the
  // backward is past it (see leanVariableGrads): about half the peak memory of a full fine-tune's backward.
  const { value, grads } = leanVariableGrads(
    f,
    names.map((n) => params[n]),
    into ? names.map((n) => into[n]) : undefined,
  );
  const out: Record<string, tf.Tensor> = {};
  names.forEach((n, i) => {
    const g = grads[i];
    if (g) out[n] = g;
  });
  // Sums of names that are not among `params` are carried over untouched.
  if (into) { for (const n of Object.keys(into)) if (!(n in params)) out[n] = into[n]; }
  return { value, grads: out };
}
