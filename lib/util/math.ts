/**
 * The mean and standard deviation every layer uses (GRPO's group statistics, evaluation summaries).
 *
 * @module
 */

/**
 * Arithmetic mean; NaN for an empty list.
 *
 * @example
 * ```ts
 * import { mean } from "./math.ts";
 * console.assert(mean([1, 2, 3]) === 2 && Number.isNaN(mean([])));
 * ```
 */
export function mean(values: ArrayLike<number>): number {
  if (values.length === 0) return NaN;
  let s = 0;
  for (let i = 0; i < values.length; i++) s += values[i];
  return s / values.length;
}

/**
 * Unbiased (n - 1) standard deviation, torch.std's default; 0 for fewer than two values.
 *
 * @example
 * ```ts
 * import { std } from "./math.ts";
 * console.assert(std([1, 3]) === Math.SQRT2 && std([5]) === 0);
 * ```
 */
export function std(values: ArrayLike<number>): number {
  if (values.length < 2) return 0;
  const m = mean(values);
  let s = 0;
  for (let i = 0; i < values.length; i++) s += (values[i] - m) ** 2;
  return Math.sqrt(s / (values.length - 1));
}
