/**
 * The main job's settings on its embedded default (`medthink-tiny` on the lab-value task), in one place:
 * `examples/grpo_text.ts` runs them and `bench/demo_grpo_sweep.ts` measures variations of them, so the two
 * cannot drift apart.
 *
 * @module
 */
import type { GrpoOptions, Row } from "../mod.ts";

/** The format-only SFT warm-up of the embedded demo. */
export const LAB_DEMO_WARMUP = {
  /** Optimizer updates (the CI-sized run takes `quickSteps`). */
  steps: 80,
  quickSteps: 60,
  /** Examples per update. */
  batchSize: 16,
  /** Learning rate (constant). */
  learningRate: 4e-3,
  /**
   * The think block's words: the same for every question, so the warm-up says nothing about the answer.
   * `{analyte}`, `{value}` and `{unit}` restate the question (measured: 120 steps do not teach this model
   * to copy the value, bench/demo_runs.md).
   */
  reasoning: "compare",
} as const;

/** The GRPO stage of the embedded demo (`quick`: the CI-sized run). */
export function labDemoGrpo(quick: boolean): Partial<GrpoOptions> {
  return {
    numGenerations: 4,
    promptsPerStep: 16,
    // Two optimizer updates per generation batch (as the recipe's 256 prompts in mini-batches of 128).
    miniBatchPrompts: 8,
    microBatchSize: 64,
    maxNewTokens: 16,
    temperature: 1,
    learningRate: 1e-3,
    lrSchedulerType: "constant",
    warmupRatio: 0.1,
    weightDecay: 0,
    maxGradNorm: 1,
    lossType: "dapo",
    // A KL penalty to the warm-up policy: without it this tiny model's format tokens drift under the
    // reward noise until a whole batch breaks the format at once (reward 0 everywhere, no gradient left);
    // measured: runs at beta 0 lost the format after 40-110 updates, none at 0.04.
    beta: 0.04,
    epsilonLow: 0.2,
    epsilonHigh: 0.28,
    scaleRewards: "group",
    recomputeOldLogps: false,
    maxSteps: quick ? 4 : 90,
  };
}

const LETTERS = ["A", "B", "C", "D", "E"];

/**
 * The warm-up's answer letter for a row: a seeded hash of (seed, row id, position), never the row's
 * answer, so the warm-up data carry no information about the task on any machine.
 */
export function warmupLetter(seed: number, row: Row, position: number): string {
  const letters = Object.keys(row.options).filter((k) => LETTERS.includes(k));
  let h = 2166136261 ^ seed;
  for (const ch of `${row.id}#${position}`) h = Math.imul(h ^ ch.charCodeAt(0), 16777619);
  return letters[(h >>> 0) % letters.length];
}

/** The SFT target of the demo's answer format: `<think> {reasoning} </think>\n<answer> {letter} </answer><|im_end|>`. */
export function labDemoTarget(reasoning: string, letter: string): string {
  return `<think> ${reasoning} </think>\n<answer> ${letter} </answer><|im_end|>`;
}
