/**
 * What a reward function is, and how several are named, weighted and combined.
 *
 * @module
 */
import type { Row } from "../data/types.ts";

export type { Row };

/**
 * A reward: a plain (sync or async) function of a completion (decoded WITHOUT special tokens) and
 * its dataset row, returning a number (the recipe's are 0 or 1).
 */
export type RewardFunction = (completion: string, row: Row) => number | Promise<number>;

/** A reward function with the name it is logged under and its weight in the total. */
export interface NamedReward {
  /** Name in logs and metrics (`reward/<name>/mean`). */
  name: string;
  /** The function. */
  fn: RewardFunction;
  /** Weight in the weighted sum. Default 1. */
  weight: number;
}

/** Options of {@linkcode namedReward}. */
export interface NamedRewardOptions {
  /** Weight in the weighted sum. Default 1. */
  weight?: number;
}

/**
 * Names a reward function and gives it a weight.
 *
 * @example
 * ```ts
 * import { namedReward } from "./types.ts";
 * const length = namedReward("short", (c) => (c.length < 200 ? 1 : 0), { weight: 0.1 });
 * ```
 */
export function namedReward(name: string, fn: RewardFunction, options: NamedRewardOptions = {}): NamedReward {
  const weight = options.weight ?? 1;
  if (!Number.isFinite(weight)) {
    throw new Error(`Reward '${name}' has a weight that is not a finite number: ${weight}.`);
  }
  return { name, fn, weight };
}

/** A reward given as a bare function, a named one, or `[name, fn, weight]`. */
export type RewardSpec = RewardFunction | NamedReward | [string, RewardFunction, number?];

/** Turns a list of reward specs into named rewards (bare functions are named by `fn.name` or `reward_<i>`). */
export function normalizeRewards(specs: RewardSpec | RewardSpec[]): NamedReward[] {
  const list = Array.isArray(specs) && typeof specs[0] !== "string"
    ? specs as RewardSpec[]
    : [specs as RewardSpec];
  const out = list.map((s, i): NamedReward => {
    if (typeof s === "function") return namedReward(s.name || `reward_${i}`, s);
    if (Array.isArray(s)) return namedReward(s[0], s[1], { weight: s[2] });
    return namedReward(s.name, s.fn, { weight: s.weight });
  });
  const names = new Set<string>();
  for (const r of out) {
    if (names.has(r.name)) {
      throw new Error(`Two reward functions are named '${r.name}': give them distinct names.`);
    }
    names.add(r.name);
  }
  return out;
}

/** Per-reward and weighted-total scores of a list of completions. */
export interface RewardScores {
  /** Weighted sum per completion. */
  total: number[];
  /** Each reward's raw score per completion, by name. */
  byName: Record<string, number[]>;
}

/**
 * Scores completions (row `i` grades completion `i`) with every reward, awaiting async ones.
 *
 * @example
 * ```ts
 * import { scoreCompletions } from "./types.ts";
 * import { medvlthinkerRewardFn } from "./medvlthinker.ts";
 * const row = { id: "1", question: "q", options: { A: "x", B: "y" }, answerLabel: "B", answer: "y", images: [] };
 * const { total } = await scoreCompletions(["<think>.</think><answer>B</answer>"], [row], [medvlthinkerRewardFn]);
 * // total = [1]
 * ```
 */
export async function scoreCompletions(
  completions: string[],
  rows: Row[],
  rewards: RewardSpec | RewardSpec[],
): Promise<RewardScores> {
  if (completions.length !== rows.length) {
    throw new Error(`scoreCompletions got ${completions.length} completions but ${rows.length} rows.`);
  }
  const named = normalizeRewards(rewards);
  const total = new Array(completions.length).fill(0);
  const byName: Record<string, number[]> = {};
  for (const r of named) {
    const scores = await Promise.all(completions.map((c, i) => r.fn(c, rows[i])));
    scores.forEach((s, i) => {
      if (typeof s !== "number" || Number.isNaN(s)) {
        throw new Error(`Reward '${r.name}' returned ${s} for completion ${i}: a reward must be a number.`);
      }
      total[i] += r.weight * s;
    });
    byName[r.name] = scores;
  }
  return { total, byName };
}
