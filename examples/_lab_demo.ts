/**
 * The main job's settings on its embedded default (`medthink-tiny` on the lab-value task), in one place:
 * `examples/grpo_text.ts` runs them and `bench/demo_grpo_sweep.ts` measures variations of them, so the two
 * cannot drift apart.
 *
 * @module
 */
import type { GrpoOptions, Row } from "../mod.ts";

/**
 * The format-only SFT warm-up of the embedded demo. Every warm-up question is trained three times in the
 * same batch, once with each option letter as the answer ({@linkcode uniformLetterExamples}): the best the
 * model can do is answer each letter with probability 1/3 whatever the question, so the warm-up teaches
 * the format and nothing about the task, on every machine. (The earlier random letters left the letter
 * probabilities skewed, 0.15/0.31/0.53, which put most of GRPO's groups at zero variance:
 * bench/demo_runs.md.)
 */
export const LAB_DEMO_WARMUP = {
  /** Optimizer updates (the CI-sized run takes `quickSteps`). */
  steps: 80,
  quickSteps: 60,
  /** Examples per update: 6 questions x 3 letters. */
  batchSize: 18,
  /** Learning rate (constant). */
  learningRate: 4e-3,
  /**
   * The think block's words: the same for every question, so the warm-up says nothing about the answer.
   * `{analyte}`, `{value}` and `{unit}` restate the question (measured: 120 steps do not teach this model
   * to copy the value, bench/demo_runs.md).
   */
  reasoning: "compare",
} as const;

/**
 * The GRPO stage of the embedded demo (`quick`: the CI-sized run). Measured (bench/demo_runs.md, stop 26):
 * with 4 completions per question one update's effect on how the letter depends on the question is as
 * often negative as positive (its sign is sampling noise) and the policy only swings between letters for
 * all questions; with 16 it is positive in every draw, close to an SFT update's. Seed 0 leaves chance at
 * step 25-30 (73.0% after 60 steps); seeds 1 and 2 had not by step 35, seed 1 not by step 100: the take-off
 * is not yet reliable (issue #21).
 */
export function labDemoGrpo(quick: boolean): Partial<GrpoOptions> {
  return {
    numGenerations: 16,
    // 12 questions per step in class-interleaved order (classInterleaved): 4 low, 4 normal, 4 high.
    promptsPerStep: 12,
    // Two optimizer updates per generation batch (as the recipe's 256 prompts in mini-batches of 128).
    miniBatchPrompts: 6,
    microBatchSize: 96,
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
    maxSteps: quick ? 2 : 60,
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

/**
 * The warm-up's examples: each question three times in a row, once with each option letter as the
 * answer, so the letter a question gets carries no information about it (format only, by construction).
 */
export function uniformLetterExamples(rows: Row[], count: number): { row: Row; letter: string }[] {
  return Array.from({ length: count }, (_, i) => {
    const row = rows[Math.floor(i / 3) % rows.length];
    const letters = Object.keys(row.options).filter((k) => LETTERS.includes(k));
    return { row, letter: letters[i % letters.length] };
  });
}

/**
 * Rows reordered so that their answer letters cycle (A, B, C, A, ...): every run of GRPO prompts that is a
 * multiple of the number of letters is class-balanced, so a step's update carries no push toward one
 * letter from the batch's make-up (as a shuffled order's random imbalance would). Rows keep their order
 * within a letter; the order is cut where the rarest letter runs out.
 */
export function classInterleaved(rows: Row[]): Row[] {
  const letters = [...new Set(rows.map((r) => r.answerLabel))].sort();
  const by = letters.map((l) => rows.filter((r) => r.answerLabel === l));
  const n = Math.min(...by.map((b) => b.length));
  return Array.from(
    { length: letters.length * n },
    (_, i) => by[i % letters.length][Math.floor(i / letters.length)],
  );
}
