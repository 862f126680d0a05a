/**
 * Small statistics for evaluation reports: a seeded RNG, percentile bootstrap intervals (one sample
 * and paired), and the Wilson and normal (Wald) intervals of a proportion.
 *
 * Bootstrap intervals are seeded so that a report is reproducible byte for byte.
 *
 * @module
 */
import { seededRandom } from "../model/rng.ts";

/** A confidence interval around a point estimate. */
export interface Interval {
  /** The statistic on the data as observed. */
  estimate: number;
  /** Lower bound. */
  low: number;
  /** Upper bound. */
  high: number;
  /** Coverage, e.g. 0.95. */
  level: number;
}

/** Options of the bootstrap helpers. */
export interface BootstrapOptions {
  /** Number of resamples. Default 2000. */
  samples?: number;
  /** Coverage of the interval. Default 0.95. */
  level?: number;
  /** RNG seed, so that the interval is reproducible. Default 0. */
  seed?: number;
}

import { mean } from "../util/math.ts";

export { seededRandom }; // re-exported: the statistics here resample with it

/** The arithmetic mean (NaN for an empty list), shared with the trainers from `lib/util/math.ts`. */
export { mean };

// Linear interpolation between order statistics (numpy's default "linear" method).
function quantileSorted(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return NaN;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

function checkLevel(level: number): void {
  if (!(level > 0 && level < 1)) {
    throw new Error(`Confidence level ${level} must lie strictly between 0 and 1.`);
  }
}

/**
 * Percentile bootstrap interval of the mean of `values` (e.g. per-question correctness 0/1).
 *
 * @example
 * ```ts
 * import { bootstrapMeanCI } from "./stats.ts";
 * const ci = bootstrapMeanCI([1, 0, 1, 1, 0, 1, 0, 1], { seed: 1 });
 * console.assert(ci.low <= ci.estimate && ci.estimate <= ci.high);
 * ```
 */
export function bootstrapMeanCI(values: ArrayLike<number>, options: BootstrapOptions = {}): Interval {
  const { samples = 2000, level = 0.95, seed = 0 } = options;
  checkLevel(level);
  const n = values.length;
  const estimate = mean(values);
  if (n === 0) return { estimate, low: NaN, high: NaN, level };
  const rand = seededRandom(seed);
  const stats = new Float64Array(samples);
  for (let b = 0; b < samples; b++) {
    let s = 0;
    for (let i = 0; i < n; i++) s += values[Math.floor(rand() * n)];
    stats[b] = s / n;
  }
  stats.sort();
  const alpha = (1 - level) / 2;
  return { estimate, low: quantileSorted(stats, alpha), high: quantileSorted(stats, 1 - alpha), level };
}

/**
 * Paired percentile bootstrap interval of `mean(a) - mean(b)`, where `a[i]` and `b[i]` are two
 * systems' scores on the same item i (questions are resampled together, which is what makes it paired).
 *
 * @example
 * ```ts
 * import { pairedBootstrapCI } from "./stats.ts";
 * const d = pairedBootstrapCI([1, 1, 1, 0], [0, 1, 0, 0], { seed: 3 });
 * console.assert(d.estimate === 0.5);
 * ```
 */
export function pairedBootstrapCI(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  options: BootstrapOptions = {},
): Interval {
  if (a.length !== b.length) {
    throw new Error(`Paired bootstrap needs equally long score lists, got ${a.length} and ${b.length}.`);
  }
  const diff = new Float64Array(a.length);
  for (let i = 0; i < a.length; i++) diff[i] = a[i] - b[i];
  return bootstrapMeanCI(diff, options);
}

/**
 * Bootstrap interval of the plain mean of several groups' means (e.g. the mean accuracy over
 * benchmarks): every group is resampled on its own, then the group means are averaged.
 */
export function bootstrapMeanOfMeansCI(
  groups: ArrayLike<number>[],
  options: BootstrapOptions = {},
): Interval {
  const { samples = 2000, level = 0.95, seed = 0 } = options;
  checkLevel(level);
  const estimate = mean(groups.map((g) => mean(g)));
  if (groups.length === 0 || groups.some((g) => g.length === 0)) {
    return { estimate, low: NaN, high: NaN, level };
  }
  const rand = seededRandom(seed);
  const stats = new Float64Array(samples);
  for (let b = 0; b < samples; b++) {
    let total = 0;
    for (const g of groups) {
      let s = 0;
      for (let i = 0; i < g.length; i++) s += g[Math.floor(rand() * g.length)];
      total += s / g.length;
    }
    stats[b] = total / groups.length;
  }
  stats.sort();
  const alpha = (1 - level) / 2;
  return { estimate, low: quantileSorted(stats, alpha), high: quantileSorted(stats, 1 - alpha), level };
}

/**
 * The standard normal quantile function (inverse CDF): Acklam's rational approximation (relative
 * error below 1.2e-9, far below what a confidence interval needs).
 */
export function normalQuantile(p: number): number {
  if (!(p > 0 && p < 1)) throw new Error(`Normal quantile needs 0 < p < 1, got ${p}.`);
  const a = [
    -39.69683028665376,
    220.9460984245205,
    -275.9285104469687,
    138.357751867269,
    -30.66479806614716,
    2.506628277459239,
  ];
  const b = [
    -54.47609879822406,
    161.5858368580409,
    -155.6989798598866,
    66.80131188771972,
    -13.28068155288572,
  ];
  const c = [
    -0.007784894002430293,
    -0.3223964580411365,
    -2.400758277161838,
    -2.549732539343734,
    4.374664141464968,
    2.938163982698783,
  ];
  const d = [0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416];
  const pl = 0.02425;
  let x: number;
  if (p < pl) {
    const q = Math.sqrt(-2 * Math.log(p));
    x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
      ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  } else if (p <= 1 - pl) {
    const q = p - 0.5;
    const r = q * q;
    x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
      (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
  } else {
    const q = Math.sqrt(-2 * Math.log(1 - p));
    x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
      ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  }
  return x;
}

/**
 * Wilson score interval of a proportion `successes / n`.
 *
 * @example
 * ```ts
 * import { wilsonInterval } from "./stats.ts";
 * const ci = wilsonInterval(8, 10);
 * console.assert(ci.high < 1 && ci.low > 0.4);
 * ```
 */
export function wilsonInterval(successes: number, n: number, options: { level?: number } = {}): Interval {
  const { level = 0.95 } = options;
  checkLevel(level);
  if (n <= 0) return { estimate: NaN, low: NaN, high: NaN, level };
  const z = normalQuantile(1 - (1 - level) / 2);
  const p = successes / n;
  const z2n = (z * z) / n;
  const centre = (p + z2n / 2) / (1 + z2n);
  const half = (z / (1 + z2n)) * Math.sqrt((p * (1 - p)) / n + z2n / (4 * n));
  return { estimate: p, low: Math.max(0, centre - half), high: Math.min(1, centre + half), level };
}

/** Normal-approximation (Wald) interval of a proportion, clipped to [0, 1]. */
export function normalInterval(successes: number, n: number, options: { level?: number } = {}): Interval {
  const { level = 0.95 } = options;
  checkLevel(level);
  if (n <= 0) return { estimate: NaN, low: NaN, high: NaN, level };
  const z = normalQuantile(1 - (1 - level) / 2);
  const p = successes / n;
  const half = z * Math.sqrt((p * (1 - p)) / n);
  return { estimate: p, low: Math.max(0, p - half), high: Math.min(1, p + half), level };
}
