/**
 * The built-in reward functions by name, so a YAML config or a CLI flag can list them
 * (`rewards: [{name: medvlthinker, weight: 1}, {name: soft_format, weight: 0.1}]`).
 *
 * @module
 */
import type { RewardFunction } from "./types.ts";
import { accuracyReward, formatReward, medvlthinkerRewardFn } from "./medvlthinker.ts";
import { lenientRewardFn } from "./lenient.ts";
import { softFormatReward } from "./soft_format.ts";

/** Built-in rewards: `medvlthinker` (the recipe's), `format`, `accuracy`, `lenient`, `soft_format`. */
export const BUILTIN_REWARDS: Readonly<Record<string, RewardFunction>> = Object.freeze({
  medvlthinker: medvlthinkerRewardFn,
  format: formatReward,
  accuracy: accuracyReward,
  lenient: lenientRewardFn,
  soft_format: softFormatReward,
});

/** The built-in reward called `name`; an unknown name is an error listing the known ones. */
export function rewardByName(name: string): RewardFunction {
  const fn = BUILTIN_REWARDS[name];
  if (!fn) {
    throw new Error(`Unknown reward '${name}': choose one of ${Object.keys(BUILTIN_REWARDS).join(", ")}.`);
  }
  return fn;
}
