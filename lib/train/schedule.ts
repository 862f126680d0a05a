/**
 * Learning-rate schedules with the Hugging Face semantics (`transformers.get_scheduler`): the optimizer
 * update number `k` (0-based: the first update is k = 0) uses `lr * factor(k)`, so with warmup the very
 * first update has learning rate 0, exactly as the Trainer does.
 *
 * @module
 */

/** Schedule shapes: `constant` (after an optional linear warmup), `linear` decay to 0, `cosine` half-wave to 0. */
export type ScheduleType = "constant" | "linear" | "cosine";

/** Options of {@linkcode lrSchedule}. */
export interface ScheduleOptions {
  /** Peak learning rate. */
  lr: number;
  /** Shape after warmup. Default `cosine`. */
  type?: ScheduleType;
  /** Optimizer updates in the whole run (needed by `linear` and `cosine`). */
  totalSteps: number;
  /** Warmup updates; wins over `warmupRatio`. */
  warmupSteps?: number;
  /** Warmup as a fraction of `totalSteps`, rounded up (HF `get_warmup_steps`). Default 0. */
  warmupRatio?: number;
}

/** The warmup length in updates: `warmupSteps`, else `ceil(warmupRatio * totalSteps)`. */
export function warmupStepsOf(options: ScheduleOptions): number {
  if (options.warmupSteps !== undefined) return Math.max(0, Math.floor(options.warmupSteps));
  return Math.ceil((options.warmupRatio ?? 0) * options.totalSteps);
}

/**
 * A function from the optimizer update index (0-based) to the learning rate.
 *
 * @example
 * ```ts
 * import { lrSchedule } from "./schedule.ts";
 * const lrAt = lrSchedule({ lr: 1e-5, type: "cosine", totalSteps: 100, warmupRatio: 0.05 });
 * lrAt(0); // 0 (warmup starts at zero)
 * lrAt(5); // 1e-5 (peak)
 * ```
 */
export function lrSchedule(options: ScheduleOptions): (step: number) => number {
  const type = options.type ?? "cosine";
  if (!["constant", "linear", "cosine"].includes(type)) {
    throw new Error(`Unknown learning-rate schedule '${type}': choose constant, linear or cosine.`);
  }
  if (!(options.lr >= 0)) throw new Error(`The learning rate must be >= 0, got ${options.lr}.`);
  const total = options.totalSteps;
  const warmup = warmupStepsOf(options);
  return (step: number) => {
    if (step < warmup) return options.lr * step / Math.max(1, warmup);
    if (type === "constant") return options.lr;
    if (type === "linear") return options.lr * Math.max(0, (total - step) / Math.max(1, total - warmup));
    const progress = (step - warmup) / Math.max(1, total - warmup);
    return options.lr * Math.max(0, 0.5 * (1 + Math.cos(Math.PI * progress)));
  };
}
