/**
 * Validation while training, as the paper validated every 50 steps: greedy answers to held-out
 * questions graded by the recipe's grader, and keeping the best checkpoint by a named metric
 * (`best/` in Hub layout, with `best.json` saying which step and value).
 *
 * The accuracy loop is written on `lib/engine` (batched generation) and `lib/reward` (graders), not on
 * `lib/eval` (a sibling of `lib/train`, which this layer may not import).
 *
 * @module
 */
import type { CausalLM } from "../model/types.ts";
import { saveModel } from "../model/load.ts";
import type { Row } from "../data/types.ts";
import { buildPrompt } from "../data/prompt.ts";
import { type ChatTokenizer, generateCompletions, type PromptBuilder } from "../engine/generate_batch.ts";
import { formatScore, medvlthinkerReward } from "../reward/medvlthinker.ts";
import { lenientGrade } from "../reward/lenient.ts";
import { checkOptionKeys } from "../util/options.ts";

/** Graders of {@linkcode validationAccuracy}. */
export type ValidationGrader = "medvlthinker" | "lenient";

/** Options of {@linkcode validationAccuracy}. */
export interface ValidationOptions {
  /** Tokenizer of the model (renders and decodes). */
  tokenizer: ChatTokenizer;
  /** Row -> chat messages. Default: the recipe's prompt (`buildPrompt`). */
  prompt?: PromptBuilder;
  /** `medvlthinker` (default: the recipe's strict reward, format and answer) or `lenient` (its evaluation). */
  grader?: ValidationGrader;
  /** New tokens per answer. Default 256. */
  maxNewTokens?: number;
  /** Questions per generate call. Default 8. */
  batchSize?: number;
}

const VALIDATION_DEFAULTS: Required<Omit<ValidationOptions, "tokenizer" | "prompt">> & {
  tokenizer: undefined;
  prompt: undefined;
} = { tokenizer: undefined, prompt: undefined, grader: "medvlthinker", maxNewTokens: 256, batchSize: 8 };

/** What {@linkcode validationAccuracy} returns (the keys are the metric names written to the logs). */
export interface ValidationResult {
  /** Share of questions answered correctly by the grader. */
  eval_accuracy: number;
  /** Share of answers in the recipe's `<think>...</think><answer>...</answer>` format. */
  eval_format_rate: number;
  /** Mean answer length in tokens. */
  eval_length_mean: number;
  /** Questions graded. */
  eval_n: number;
}

/**
 * Greedy answers of `model` to `rows`, graded: accuracy, format rate and mean length.
 *
 * @example
 * ```ts ignore
 * const v = await validationAccuracy(model, heldOut, { tokenizer, maxNewTokens: 64 });
 * console.log(v.eval_accuracy);
 * ```
 */
export async function validationAccuracy(
  model: CausalLM,
  rows: Row[],
  options: ValidationOptions,
): Promise<ValidationResult> {
  checkOptionKeys(options, VALIDATION_DEFAULTS, "validation options");
  if (rows.length === 0) throw new Error("validation: the evaluation set has no rows; give evalData rows.");
  const grader = options.grader ?? "medvlthinker";
  if (grader !== "medvlthinker" && grader !== "lenient") {
    throw new Error(`validation: grader '${grader}' is not one of medvlthinker, lenient.`);
  }
  const batchSize = options.batchSize ?? 8;
  let correct = 0, formatted = 0, tokens = 0;
  for (let at = 0; at < rows.length; at += batchSize) {
    const batch = rows.slice(at, at + batchSize);
    const out = await generateCompletions(model, batch, {
      tokenizer: options.tokenizer,
      prompt: options.prompt ?? ((r) => buildPrompt(r)),
      n: 1,
      temperature: 0,
      maxNewTokens: options.maxNewTokens ?? 256,
    });
    out.forEach((r, i) => {
      const text = r.completions[0];
      const ok = grader === "lenient"
        ? lenientGrade(text, batch[i]).correct
        : medvlthinkerReward(text, batch[i]).reward > 0.5;
      correct += ok ? 1 : 0;
      formatted += formatScore(text);
      tokens += r.lengths[0];
    });
  }
  return {
    eval_accuracy: correct / rows.length,
    eval_format_rate: formatted / rows.length,
    eval_length_mean: tokens / rows.length,
    eval_n: rows.length,
  };
}

/** `best.json`: which step holds the best value of the metric. */
export interface BestRecord {
  /** The metric compared. */
  metric: string;
  /** Its best value. */
  value: number;
  /** The training step it was measured after. */
  step: number;
  /** Higher is better (`max`) or lower (`min`). */
  mode: "max" | "min";
  /** Folder of the kept model (Hub layout). */
  dir: string;
}

/**
 * Keeps the model with the best value of one metric in `<outDir>/best` (Hub layout, loadable with
 * `loadModel`), and `<outDir>/best.json`. A resumed run picks up the previous best from `best.json`.
 */
export class BestCheckpoint {
  /** The record of the kept model, or null before the first offer. */
  best: BestRecord | null = null;
  readonly #outDir: string;
  readonly #metric: string;
  readonly #mode: "max" | "min";

  private constructor(outDir: string, metric: string, mode: "max" | "min") {
    this.#outDir = outDir.replace(/\/+$/, "");
    this.#metric = metric;
    this.#mode = mode;
  }

  /**
   * Open the keeper for `metric` (`max`: higher is better, the default for accuracies; `min` for losses)
   * and read an existing `best.json` of the same metric.
   */
  static async open(outDir: string, metric: string, mode?: "max" | "min"): Promise<BestCheckpoint> {
    const m = mode ?? (/loss|kl|length/.test(metric) ? "min" : "max");
    const keeper = new BestCheckpoint(outDir, metric, m);
    try {
      const rec = JSON.parse(await Deno.readTextFile(`${keeper.#outDir}/best.json`)) as BestRecord;
      if (rec.metric === metric) keeper.best = rec;
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    return keeper;
  }

  /**
   * Offer the model after `step` with its `metrics`: when the metric beats the kept value, the model is
   * saved to `best/` (replacing the old one only once written) and `best.json` is rewritten. Returns
   * whether it was kept. A metrics object without the metric is an error naming it.
   */
  async offer(model: CausalLM, step: number, metrics: Record<string, unknown>): Promise<boolean> {
    const value = metrics[this.#metric];
    if (typeof value !== "number") {
      throw new Error(
        `saveBest: metric '${this.#metric}' is not among the recorded metrics (${
          Object.keys(metrics).join(", ")
        }); set bestMetric to one of them.`,
      );
    }
    if (!Number.isFinite(value)) return false;
    const b = this.best;
    if (b && (this.#mode === "max" ? value <= b.value : value >= b.value)) return false;
    const dir = `${this.#outDir}/best`;
    const tmp = `${dir}.tmp-${crypto.randomUUID().slice(0, 8)}`;
    await saveModel(model, tmp);
    await Deno.remove(dir, { recursive: true }).catch((e) => {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    });
    await Deno.rename(tmp, dir);
    this.best = { metric: this.#metric, value, step, mode: this.#mode, dir };
    await Deno.writeTextFile(`${this.#outDir}/best.json`, JSON.stringify(this.best, null, 2) + "\n");
    return true;
  }
}
