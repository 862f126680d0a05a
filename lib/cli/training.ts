/**
 * What the `sft` and `grpo` commands share: validation while training (`evalEvery` / `evalData`, greedy,
 * the recipe's grader), keeping the best model (`saveBest` / `bestMetric`), TensorBoard logging of every
 * step and evaluation, and the `--resume` rule (a folder that already holds checkpoints is continued
 * only when asked).
 *
 * @module
 */
import type { CausalLM } from "../model/types.ts";
import type { Row } from "../data/types.ts";
import type { ChatTokenizer } from "../engine/generate_batch.ts";
import { latestCheckpoint } from "../train/checkpoint.ts";
import { BestCheckpoint, validationAccuracy, type ValidationResult } from "../train/validation.ts";
import { TensorBoardWriter } from "../util/tensorboard.ts";
import { LAB_TASK } from "./common.ts";

/** Settings of validation while training and of keeping the best model. */
export const VALIDATION_SETTINGS = {
  evalData: {
    kind: "list",
    help: `held-out questions validated during training (files, or ${LAB_TASK}: its held-out split)`,
  },
  evalEvery: {
    kind: "number",
    help: "validate every N steps and at the end (0 = never; the paper: 50)",
    default: 0,
  },
  evalLimit: { kind: "number", help: "validate on the first N held-out questions only" },
  evalMaxNewTokens: { kind: "number", help: "new tokens per greedy validation answer", default: 256 },
  evalBatchSize: { kind: "number", help: "questions per validation generate call", default: 8 },
  evalGrader: {
    kind: "string",
    help: "medvlthinker (the recipe's strict reward) or lenient (its evaluation)",
    default: "medvlthinker",
  },
  saveBest: {
    kind: "boolean",
    help: "keep the best model by bestMetric in <out>/best (Hub layout) with best.json",
    default: false,
  },
  bestMetric: { kind: "string", help: "the metric saveBest compares", default: "eval_accuracy" },
} as const;

/** Settings of resuming. */
export const RESUME_SETTINGS = {
  resume: {
    kind: "boolean",
    help:
      "continue from the latest checkpoint in --out (same settings: rerun with --config <out>/config.yaml)",
    default: false,
  },
} as const;

/** Refuse to start over in a folder that holds checkpoints unless `resume` was asked. */
export async function checkResume(out: string, resume: boolean, command: string): Promise<string | null> {
  const latest = await latestCheckpoint(out);
  if (latest && !resume) {
    throw new Error(
      `${command}: ${out} already holds ${
        latest.slice(out.length + 1)
      }; pass --resume to continue that run ` +
        `or choose another --out.`,
    );
  }
  return latest;
}

/** The per-run logger: TensorBoard scalars and texts, eval.jsonl, and the best-model keeper. */
export interface RunLogger {
  /** Training metrics of `step` (scalars under `train/`). */
  step(step: number, metrics: Record<string, unknown>): void;
  /** Sampled completions of `step` as text. */
  samples(step: number, texts: string[]): void;
  /** Validate after `step` when due (every `evalEvery` steps, and at `lastStep`); returns the result when run. */
  validate(model: CausalLM, step: number, lastStep: number): Promise<ValidationResult | null>;
  /** Close the event file. */
  close(): Promise<void>;
}

/** Open the run's logger. */
export async function openRunLogger(
  out: string,
  config: {
    tensorboard: boolean;
    evalEvery: number;
    evalMaxNewTokens: number;
    evalBatchSize: number;
    evalGrader: string;
    saveBest: boolean;
    bestMetric: string;
    quiet: boolean;
  },
  evalRows: Row[] | null,
  tokenizer: ChatTokenizer,
  command: string,
): Promise<RunLogger> {
  if (config.evalEvery > 0 && !evalRows) {
    throw new Error(
      `${command}: evalEvery ${config.evalEvery} needs evalData (--eval-data FILE or ${LAB_TASK}).`,
    );
  }
  if (config.saveBest && !(config.evalEvery > 0) && config.bestMetric.startsWith("eval_")) {
    throw new Error(`${command}: saveBest by ${config.bestMetric} needs evalEvery > 0 and evalData.`);
  }
  const tb = config.tensorboard ? await TensorBoardWriter.open(`${out}/tensorboard`) : null;
  const best = config.saveBest ? await BestCheckpoint.open(out, config.bestMetric) : null;
  let lastTrain: Record<string, unknown> = {};
  return {
    step(step, metrics) {
      lastTrain = metrics;
      tb?.scalars(
        Object.fromEntries(Object.entries(metrics).filter(([k]) => k !== "step")),
        step,
        "train/",
      );
    },
    samples(step, texts) {
      texts.forEach((t, i) => tb?.text(`samples/completion_${i}`, t, step));
    },
    async validate(model, step, lastStep) {
      const due = config.evalEvery > 0 && (step % config.evalEvery === 0 || step === lastStep);
      let result: ValidationResult | null = null;
      if (due) {
        result = await validationAccuracy(model, evalRows!, {
          tokenizer,
          maxNewTokens: config.evalMaxNewTokens,
          batchSize: config.evalBatchSize,
          grader: config.evalGrader as "medvlthinker",
        });
        await Deno.writeTextFile(`${out}/eval.jsonl`, JSON.stringify({ step, ...result }) + "\n", {
          append: true,
        });
        tb?.scalars({ ...result }, step, "eval/");
        if (!config.quiet) {
          console.error(
            `${command} step ${step}: eval_accuracy ${result.eval_accuracy.toFixed(4)} ` +
              `(format ${result.eval_format_rate.toFixed(3)}, n ${result.eval_n})`,
          );
        }
      }
      // Best by a validation metric: offered after each validation; by a training metric: every step.
      if (best && (result || !config.bestMetric.startsWith("eval_"))) {
        await best.offer(model, step, { ...lastTrain, ...(result ?? {}) });
      }
      await tb?.flush();
      return result;
    },
    async close() {
      await tb?.close();
    },
  };
}
