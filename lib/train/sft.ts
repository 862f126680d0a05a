/**
 * Supervised fine-tuning on chat-templated examples, loss on the assistant turn only (TRL's
 * `assistant_only_loss`), full-parameter or LoRA, with the recipe's defaults: AdamW lr 1e-5, cosine
 * schedule with 5% warmup, weight decay 1e-4, betas (0.9, 0.95), global batch 16 (by gradient accumulation),
 * gradient clipping 1.0.
 *
 * One update: the global batch's examples are split into micro-batches; each micro-batch's summed token
 * loss is divided by the number of labelled tokens in the WHOLE global batch (as the Hugging Face Trainer
 * does with `num_items_in_batch`), gradients are summed, clipped to the global norm, and AdamW steps with
 * the scheduled learning rate. The data order is a seeded permutation per epoch, so a run resumed from a
 * checkpoint sees exactly the batches an uninterrupted run would.
 *
 * @module
 */
import { tf } from "../util/deps.ts";
import { tableRows } from "../util/table.ts";
import type { CausalLM } from "../model/types.ts";
import { saveModel } from "../model/load.ts";
import { deriveSeed, Rng } from "../model/rng.ts";
import { type ChatMessage, loadTokenizer, type Tokenizer } from "../data/tokenizer.ts";
import { buildSftMessages, type PromptOptions, sftTarget } from "../data/prompt.ts";
import type { PromptBuilder } from "../engine/generate_batch.ts";
import type { Row } from "../data/types.ts";
import { IGNORE_INDEX, sftLoss } from "./losses.ts";
import { accumulateGrads, adamw, clipScale, hfParamGroups, valueAndGrads } from "./optimizer.ts";
import { lrSchedule, type ScheduleType } from "./schedule.ts";
import { addLora, type LoraOptions, loraParams, mergeLora } from "../model/lora.ts";
import { loadCheckpoint, saveCheckpoint } from "./checkpoint.ts";
import {
  check,
  checkTrainerKeys,
  resumeDir,
  type StepLogger,
  type StepMetrics,
  type TrainResult,
  withDefaults,
  writeRunConfig,
} from "./trainer.ts";
import { createProgress } from "../util/progress.ts";
import { type ImageInputBuilder, visionInputBuilder } from "../engine/vision_inputs.ts";

/** One tokenized training example. */
export interface SftExample {
  /** Token ids of the whole chat-templated example. */
  inputIds: number[];
  /** Same length; -100 where the loss ignores the token. */
  labels: number[];
}

/** Options of {@linkcode sft} (the same names as `grpo`'s for the same ideas); the defaults are {@linkcode SFT_DEFAULTS}. */
export interface SftOptions {
  /** Tokenizer with the chat template. Default: the model folder's own, else the embedded Qwen2.5 one. */
  tokenizer?: Tokenizer;
  /** Padding id. Default: the tokenizer's, else the model config's pad (else first EOS) id. */
  padTokenId?: number;
  /**
   * How question rows become the prompt's chat messages (the recipe's target is the assistant turn): options
   * of the recipe's `buildPrompt` (template, instruction, system prompt), or a function of the row (as
   * `grpo`, `probe` and `evaluate` take it). Default: the recipe's prompt.
   */
  prompt?: PromptOptions | PromptBuilder;
  /** Passes over the data. */
  epochs?: number;
  /** Optimizer updates in the run (the schedule spans them); wins over `epochs`, cycling the data. */
  maxSteps?: number;
  /** Examples per optimizer update (global batch; the recipe: 16). */
  batchSize?: number;
  /** Examples per forward/backward pass; the rest is gradient accumulation. Default min(4, batchSize). */
  microBatchSize?: number;
  /** Peak learning rate (the recipe: 1e-5). */
  learningRate?: number;
  /** Learning-rate schedule shape. */
  lrSchedulerType?: ScheduleType;
  /** Warmup as a fraction of the updates (ignored when `warmupSteps` is set). */
  warmupRatio?: number;
  /** Warmup in optimizer updates (wins over `warmupRatio`). */
  warmupSteps?: number;
  /** AdamW decoupled weight decay. */
  weightDecay?: number;
  /** AdamW betas. */
  betas?: [number, number];
  /** AdamW's epsilon, added to the root of the second moment (TRL's `adam_epsilon`). */
  adamEpsilon?: number;
  /** Clip the global gradient norm to this (0 = off). */
  maxGradNorm?: number;
  /** `hf`: no decay on biases and norm weights (HF Trainer); `all`: decay on every tensor. */
  paramGroups?: "hf" | "all";
  /** Examples longer than this are cut (from the right). */
  maxLength?: number;
  /** Seed of the data order and of new LoRA adapters. */
  seed?: number;
  /** Shuffle each epoch. */
  shuffle?: boolean;
  /** Train LoRA adapters (added unless the model already has some) instead of all weights. */
  lora?: LoraOptions;
  /** Activation checkpointing: recompute each decoder layer in the backward pass (less memory). */
  gradientCheckpointing?: boolean;
  /** Folder for `config.json`, `metrics.jsonl` and checkpoints (`checkpoint-N`). Default: nothing written. */
  outputDir?: string;
  /** Checkpoint every N updates (and always at the end when `outputDir` is set); 0 = only at the end. */
  saveSteps?: number;
  /** Draw a progress bar on stderr. Default: when stderr is a terminal. */
  progress?: boolean;
  /** Resume from this checkpoint folder, or `true` for the latest under `outputDir` (none found: start fresh). */
  resumeFrom?: string | boolean;
  /** Stop (after a checkpoint) once this many updates are done; the schedule still spans the whole run. */
  stopAfterSteps?: number;
  /** Stop (after a checkpoint) after this many seconds (the update in progress finishes). Default: no limit. */
  maxSeconds?: number;
  /** At the end, save the model in Hub layout here (LoRA adapters merged into the weights first). */
  exportDir?: string;
  /** Storage dtype of the export. */
  exportDtype?: string;
  /** Rows of the vocabulary head computed at once (memory bound). Default: the loss's own. */
  chunkSize?: number;
  /**
   * Image inputs for rows with images (Qwen2.5-VL models): default `visionInputBuilder(model)` (the model
   * folder's processor settings). Images are decoded and processed batch by batch.
   */
  images?: ImageInputBuilder;
  /** Called after every update with its metrics. */
  onStep?: (metrics: SftStepMetrics) => unknown;
  /** Receive every update's metrics (TensorBoard, evaluation hooks). */
  loggers?: StepLogger[];
}

/** The option keys of {@linkcode SFT_DEFAULTS} that have a default value (set in every resolved configuration). */
export type SftDefaultedKey =
  | "epochs"
  | "batchSize"
  | "learningRate"
  | "lrSchedulerType"
  | "warmupRatio"
  | "weightDecay"
  | "betas"
  | "adamEpsilon"
  | "maxGradNorm"
  | "paramGroups"
  | "maxLength"
  | "seed"
  | "shuffle"
  | "gradientCheckpointing"
  | "saveSteps"
  | "exportDtype"
  | "loggers";

/** Every option key of {@linkcode sft}, each with its default (`undefined`: none, or derived as documented). */
export const SFT_DEFAULTS: Readonly<
  { [K in keyof Required<SftOptions>]: K extends SftDefaultedKey ? NonNullable<SftOptions[K]> : undefined }
> = Object.freeze({
  tokenizer: undefined,
  padTokenId: undefined,
  prompt: undefined,
  epochs: 1,
  maxSteps: undefined,
  batchSize: 16,
  microBatchSize: undefined,
  learningRate: 1e-5,
  lrSchedulerType: "cosine" as ScheduleType,
  warmupRatio: 0.05,
  warmupSteps: undefined,
  weightDecay: 1e-4,
  betas: [0.9, 0.95] as [number, number],
  adamEpsilon: 1e-8,
  maxGradNorm: 1,
  paramGroups: "hf" as "hf" | "all",
  maxLength: 4096,
  seed: 42,
  shuffle: true,
  lora: undefined,
  gradientCheckpointing: false,
  outputDir: undefined,
  saveSteps: 0,
  progress: undefined,
  resumeFrom: undefined,
  stopAfterSteps: undefined,
  maxSeconds: undefined,
  exportDir: undefined,
  exportDtype: "float32",
  chunkSize: undefined,
  images: undefined,
  onStep: undefined,
  loggers: [] as StepLogger[],
});

/** Keys `sft` took before `sft` and `grpo` shared one vocabulary, and their names now. */
export const SFT_RENAMED: Readonly<Record<string, string>> = Object.freeze({
  lr: "learningRate",
  scheduler: "lrSchedulerType",
  logFile: "outputDir",
  eps: "adamEpsilon",
});

/** The resolved configuration of an `sft` run: every default filled in. */
export type SftConfig = SftOptions & Required<Pick<SftOptions, SftDefaultedKey | "microBatchSize">>;

const WHERE = "sft options";

/**
 * Validate `options` and fill in every default: unknown keys are errors naming the closest known key,
 * out-of-range values are errors naming the key.
 *
 * @example
 * ```ts
 * import { resolveSftConfig } from "./sft.ts";
 * const c = resolveSftConfig({ batchSize: 2 });
 * console.assert(c.microBatchSize === 2 && c.learningRate === 1e-5);
 * ```
 */
export function resolveSftConfig(options: SftOptions): SftConfig {
  checkTrainerKeys(options, SFT_DEFAULTS, SFT_RENAMED, WHERE);
  const c = withDefaults(SFT_DEFAULTS as unknown as SftOptions, options) as SftConfig;
  check.int(WHERE, "batchSize", c.batchSize, 1);
  c.microBatchSize = Math.min(c.microBatchSize ?? 4, c.batchSize);
  check.int(WHERE, "microBatchSize", c.microBatchSize, 1);
  check.int(WHERE, "epochs", c.epochs, 1);
  if (c.maxSteps !== undefined) check.int(WHERE, "maxSteps", c.maxSteps, 1);
  check.range(WHERE, "learningRate", c.learningRate, 0);
  check.oneOf(WHERE, "lrSchedulerType", c.lrSchedulerType, ["constant", "linear", "cosine"]);
  check.range(WHERE, "warmupRatio", c.warmupRatio, 0, 1);
  if (c.warmupSteps !== undefined) check.int(WHERE, "warmupSteps", c.warmupSteps, 0);
  check.range(WHERE, "weightDecay", c.weightDecay, 0);
  check.range(WHERE, "adamEpsilon", c.adamEpsilon, 0);
  check.range(WHERE, "maxGradNorm", c.maxGradNorm, 0);
  check.oneOf(WHERE, "paramGroups", c.paramGroups, ["hf", "all"]);
  check.int(WHERE, "maxLength", c.maxLength, 1);
  check.int(WHERE, "seed", c.seed, 0);
  check.int(WHERE, "saveSteps", c.saveSteps, 0);
  if (c.stopAfterSteps !== undefined) check.int(WHERE, "stopAfterSteps", c.stopAfterSteps, 0);
  if (c.maxSeconds !== undefined) check.range(WHERE, "maxSeconds", c.maxSeconds, 0);
  if (c.chunkSize !== undefined) check.int(WHERE, "chunkSize", c.chunkSize, 1);
  return c;
}

/** One update's metrics under TRL's names (also the JSON line written to `metrics.jsonl`). */
export interface SftStepMetrics extends StepMetrics {
  /** Labelled (assistant) tokens in the batch. */
  num_tokens: number;
  /** All real tokens processed per second in this update (forward, backward, optimizer). */
  tokens_per_second: number;
  /** Live tfjs tensors after the update (constant in a leak-free run). */
  num_tensors: number;
}

/** What {@linkcode sft} returns (the shape `grpo` returns too). */
export type SftResult = TrainResult<SftStepMetrics>;

/**
 * A dataset row as `sft` takes it: `text`, `messages`, question columns (`question`, `options`,
 * `answerLabel` / `answer_label` / `answer_idx`, `reasoning`), or `inputIds` (+ `labels`).
 */
// deno-lint-ignore no-explicit-any
export type SftRow = Record<string, any>;

/** Raw MedVLThinker / MedAgents columns -> the canonical Row the prompt builder takes. */
function canonicalRow(r: SftRow, index: number): Row {
  let options = r.options;
  if (typeof options === "string") {
    try {
      options = JSON.parse(options);
    } catch {
      throw new Error(`sft: row ${index} has an options string that is not JSON.`);
    }
  }
  const answerLabel = r.answerLabel ?? r.answer_label ?? r.answer_idx;
  if (typeof r.question !== "string" || !options || typeof answerLabel !== "string") {
    throw new Error(
      `sft: row ${index} has neither a 'text' nor 'messages' column, nor question/options/answer label columns.`,
    );
  }
  return {
    id: String(r.id ?? index),
    question: r.question,
    options,
    answerLabel,
    answer: r.answer ?? options[answerLabel] ?? "",
    images: Array.isArray(r.images) ? r.images : [],
    reasoning: r.reasoning,
  };
}

/** The chat-templated text of one dataset row (a `text` column, a `messages` column, or question columns). */
export function sftText(
  tokenizer: Tokenizer,
  row: SftRow,
  index: number,
  prompt: PromptOptions = {},
  options: { allowImages?: boolean } = {},
): string {
  if (typeof row.text === "string") return row.text;
  if (Array.isArray(row.messages)) return tokenizer.applyChatTemplate(row.messages as ChatMessage[]);
  const r = canonicalRow(row, index);
  if (r.images.length > 0 && (prompt.includeImages ?? true) && !options.allowImages) {
    throw new Error(
      `sft: row ${r.id} has images but the model is text-only: use a Qwen2.5-VL checkpoint, or set ` +
        `prompt.includeImages to false to train on the text alone.`,
    );
  }
  return tokenizer.applyChatTemplate(buildSftMessages(r, prompt));
}

/**
 * The chat-templated text of a question row with either form of `prompt`: `buildPrompt` options (as
 * {@linkcode sftText}) or a function of the row returning the prompt's messages; the recipe's target is
 * the assistant turn. Rows with `text` or `messages` are used as they are.
 */
export async function sftPromptText(
  tokenizer: Tokenizer,
  row: SftRow,
  index: number,
  prompt: PromptOptions | PromptBuilder = {},
): Promise<string> {
  if (typeof prompt !== "function" || typeof row.text === "string" || Array.isArray(row.messages)) {
    return sftText(tokenizer, row, index, typeof prompt === "function" ? {} : prompt, { allowImages: true });
  }
  const r = canonicalRow(row, index);
  const messages = await prompt(r);
  if (!Array.isArray(messages)) {
    throw new Error(`sft: options.prompt returned ${typeof messages} for row ${r.id}, not chat messages.`);
  }
  return tokenizer.applyChatTemplate([...messages, {
    role: "assistant",
    content: [{ type: "text", text: sftTarget(r) }],
  }]);
}

/** A row with images: rendered now, tokenized per batch once its image tokens are expanded. */
interface ImageItem {
  row: Row;
  text: string;
  index: number;
}

function isVision(model: CausalLM): boolean {
  return Boolean(model.config.vision) || model.config.modelType === "qwen2_5_vl";
}

/**
 * Labels for TRL's assistant-only loss: the tokens after each `<|im_start|>assistant\n` through the closing
 * `<|im_end|>` (inclusive) keep their ids; everything else is -100.
 */
export function assistantLabels(tokenizer: Tokenizer, ids: number[]): number[] {
  const imStart = tokenizer.tokenToId("<|im_start|>");
  if (imStart === undefined) {
    throw new Error("The tokenizer has no <|im_start|> token: cannot find assistant turns.");
  }
  const header = tokenizer.encode("assistant\n");
  const labels = new Array<number>(ids.length).fill(IGNORE_INDEX);
  for (let i = 0; i < ids.length; i++) {
    if (ids[i] !== imStart) continue;
    let k = 0;
    while (k < header.length && ids[i + 1 + k] === header[k]) k++;
    if (k !== header.length) continue;
    let j = i + 1 + header.length;
    for (; j < ids.length; j++) {
      labels[j] = ids[j];
      if (ids[j] === tokenizer.imEndId) break;
    }
    i = j;
  }
  return labels;
}

function pretokenized(row: SftRow, index: number, maxLength: number): SftExample {
  const ids = row.inputIds as number[];
  const labels = (row.labels as number[] | undefined) ?? ids;
  if (labels.length !== ids.length) {
    throw new Error(`sft: row ${index} has ${ids.length} inputIds but ${labels.length} labels.`);
  }
  return { inputIds: ids.slice(0, maxLength), labels: labels.slice(0, maxLength) };
}

/** Tokenize one row into ids and assistant-only labels, cut to `maxLength`. */
export function encodeSftExample(
  tokenizer: Tokenizer,
  row: SftRow,
  options: { index?: number; prompt?: PromptOptions; maxLength?: number } = {},
): SftExample {
  const text = sftText(tokenizer, row, options.index ?? 0, options.prompt);
  const ids = tokenizer.encode(text).slice(0, options.maxLength ?? Infinity);
  return { inputIds: ids, labels: assistantLabels(tokenizer, ids) };
}

/** Right-pad examples into a batch (pad id, mask 0, label -100). */
export function collate(
  examples: SftExample[],
  padTokenId: number,
): { inputIds: number[][]; attentionMask: number[][]; labels: number[][] } {
  const t = Math.max(...examples.map((e) => e.inputIds.length));
  const pad = (xs: number[], v: number) => xs.concat(new Array(t - xs.length).fill(v));
  return {
    inputIds: examples.map((e) => pad(e.inputIds, padTokenId)),
    attentionMask: examples.map((e) => pad(e.inputIds.map(() => 1), 0)),
    labels: examples.map((e) => pad(e.labels, IGNORE_INDEX)),
  };
}

/** The row order of one epoch: a seeded Fisher-Yates permutation (identity when not shuffling). */
export function epochOrder(n: number, seed: number, epoch: number, shuffle = true): number[] {
  const order = Array.from({ length: n }, (_, i) => i);
  if (!shuffle) return order;
  const rng = new Rng(deriveSeed(seed, epoch));
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  return order;
}

function datasetRows(dataset: unknown): SftRow[] {
  return tableRows(dataset as SftRow[], "The sft dataset");
}

function countLabels(e: SftExample): number {
  let n = 0;
  for (let t = 1; t < e.labels.length; t++) if (e.labels[t] !== IGNORE_INDEX) n++;
  return n;
}

/**
 * Fine-tune `model` on `dataset` (an arquero table or an array of rows) with the loss on the assistant turn.
 * Rows are `text` (a chat-templated string), `messages` (chat messages), question rows
 * (`question`, `options`, answer label, `reasoning`) turned into the recipe's prompt and target
 * `<think> {reasoning} </think>\n<answer> {letter} </answer>`, or pre-tokenized `inputIds` (+ optional
 * `labels`, -100 = ignored; default every token).
 *
 * @example
 * ```ts ignore
 * import { loadModel } from "../model/load.ts";
 * import { loadDataset } from "../data/dataset.ts";
 * const model = await loadModel("medthink-tiny");
 * const data = await loadDataset("data/m23k.parquet");
 * const result = await sft(model, data, { outputDir: "runs/sft", epochs: 3, saveSteps: 500 });
 * console.log(result.history.at(-1)?.loss, result.checkpointDir);
 * ```
 */
export async function sft(model: CausalLM, dataset: unknown, options: SftOptions = {}): Promise<SftResult> {
  const c = resolveSftConfig(options);
  const t0 = performance.now();
  const rows = datasetRows(dataset);
  if (rows.length === 0) throw new Error("sft: the dataset has no rows.");
  // Loaded only when some row needs tokenizing (pre-tokenized rows do not).
  let tokenizer = c.tokenizer;
  const { maxLength, batchSize, microBatchSize: micro, seed, shuffle } = c;

  // Tokenize everything up front: rows without any assistant token cannot teach anything and are dropped.
  const vision = isVision(model);
  const checkIds = (ex: SftExample, i: number) => {
    for (const id of ex.inputIds) {
      if (id >= model.config.vocabSize) {
        throw new Error(
          `sft: row ${i} has token id ${id}, beyond the model's vocabulary of ${model.config.vocabSize}: wrong tokenizer?`,
        );
      }
    }
  };
  const examples: (SftExample | ImageItem)[] = [];
  const builder = typeof c.prompt === "function" ? c.prompt : undefined;
  const promptOptions = typeof c.prompt === "function" ? undefined : c.prompt;
  for (let i = 0; i < rows.length; i++) {
    const row = rows[i];
    if (
      builder && !Array.isArray(row.inputIds) && typeof row.text !== "string" && !Array.isArray(row.messages)
    ) {
      // A prompt function: its messages, then the recipe's target as the assistant turn.
      tokenizer ??= await loadTokenizer(model.dir);
      const r = canonicalRow(row, i);
      const text = await sftPromptText(tokenizer, row, i, builder);
      if (text.includes("<|image_pad|>")) {
        if (!vision) {
          throw new Error(
            `sft: row ${r.id}'s prompt holds an image but the model is text-only: use a Qwen2.5-VL checkpoint, ` +
              `or a prompt function without image parts.`,
          );
        }
        examples.push({ row: r, text, index: i });
        continue;
      }
      const ids = tokenizer.encode(text).slice(0, maxLength);
      const ex = { inputIds: ids, labels: assistantLabels(tokenizer, ids) };
      checkIds(ex, i);
      if (countLabels(ex) > 0) examples.push(ex);
      continue;
    }
    const withImages = vision && !Array.isArray(row.inputIds) && typeof row.text !== "string" &&
      !Array.isArray(row.messages) && Array.isArray(row.images) && row.images.length > 0 &&
      (promptOptions?.includeImages ?? true);
    if (withImages) {
      tokenizer ??= await loadTokenizer(model.dir);
      const text = sftText(tokenizer, row, i, promptOptions, { allowImages: true });
      examples.push({ row: canonicalRow(row, i), text, index: i });
      continue;
    }
    const ex = Array.isArray(row.inputIds)
      ? pretokenized(row, i, maxLength)
      : encodeSftExample(tokenizer ??= await loadTokenizer(model.dir), row, {
        index: i,
        prompt: promptOptions,
        maxLength,
      });
    checkIds(ex, i);
    if (countLabels(ex) > 0) examples.push(ex);
  }
  if (examples.length === 0) throw new Error("sft: no row has an assistant turn left after truncation.");

  const padTokenId = c.padTokenId ?? tokenizer?.padTokenId ?? model.config.padTokenId ??
    model.config.eosTokenIds[0] ?? 0;
  const images = c.images ?? (vision ? visionInputBuilder(model) : undefined);

  // One micro-batch ready for the model: image rows get their image tokens expanded and pixel values.
  interface Micro {
    batch: ReturnType<typeof collate>;
    forward: { pixelValues?: tf.Tensor2D; imageGridThw?: number[][] };
    labelled: number;
  }
  const prepare = async (items: (SftExample | ImageItem)[]): Promise<Micro> => {
    const ready: SftExample[] = [];
    const pending = items.filter((x): x is ImageItem => "row" in x);
    const forward: Micro["forward"] = {};
    if (pending.length > 0) {
      const built = await images!(pending.map((p) => p.row), pending.map((p) => p.text));
      if (built.pixelValues !== undefined) {
        forward.pixelValues = built.pixelValues as tf.Tensor2D;
        forward.imageGridThw = built.imageGridThw;
      }
      pending.forEach((p, k) => {
        const ids = tokenizer!.encode(built.texts[k]);
        if (ids.length > maxLength) {
          throw new Error(
            `sft: row ${p.row.id} has ${ids.length} tokens with its images, over maxLength ${maxLength}.`,
          );
        }
        const ex = { inputIds: ids, labels: assistantLabels(tokenizer!, ids) };
        checkIds(ex, p.index);
        ready.push(ex);
      });
    }
    // Image rows first, in the order their pixel values were built (the model consumes images in order).
    const all = [...ready, ...items.filter((x): x is SftExample => !("row" in x))];
    return {
      batch: collate(all, padTokenId),
      forward,
      labelled: all.reduce((s, e) => s + countLabels(e), 0),
    };
  };
  const stepsPerEpoch = Math.ceil(examples.length / batchSize);
  // As the HF Trainer: maxSteps, when set, wins over epochs (the data is cycled as needed).
  const totalSteps = c.maxSteps ?? c.epochs * stepsPerEpoch;
  const schedule = lrSchedule({
    lr: c.learningRate,
    type: c.lrSchedulerType,
    totalSteps,
    warmupSteps: c.warmupSteps,
    warmupRatio: c.warmupRatio,
  });

  if (c.gradientCheckpointing) model.gradientCheckpointing = true;
  let trainable: Record<string, tf.Variable>;
  if (c.lora) {
    trainable = Object.keys(model.lora).length > 0 ? loraParams(model) : addLora(model, { seed, ...c.lora });
    model.loraEnabled = true;
  } else {
    // Frozen tensors (e.g. a Qwen2.5-VL vision tower after freezeVision()) get no gradient: leave them out.
    trainable = Object.fromEntries(Object.entries(model.params).filter(([, v]) => v.trainable));
  }
  const names = Object.keys(trainable);
  const optimizer = adamw({
    params: trainable,
    lr: c.learningRate,
    betas: c.betas,
    eps: c.adamEpsilon,
    weightDecay: c.weightDecay,
    paramGroups: c.paramGroups === "hf" ? hfParamGroups(names, c.weightDecay) : undefined,
  });

  const result: SftResult = {
    steps: 0,
    totalSteps,
    history: [],
    seconds: 0,
    numExamples: examples.length,
    files: {},
    checkpointDir: null,
    exportDir: null,
  };

  // Resume (the one place it happens): weights or adapters, optimizer moments, step and metrics so far.
  let step = 0;
  const dir = await resumeDir(c.resumeFrom, c.outputDir, "sft");
  if (dir) {
    const state = await loadCheckpoint(dir, { model, optimizer });
    if (state.totalSteps !== totalSteps) {
      throw new Error(
        `sft: checkpoint ${dir} belongs to a run of ${state.totalSteps} updates, this one has ${totalSteps}: ` +
          `use the same data, batch size, epochs and maxSteps to resume.`,
      );
    }
    step = state.step;
    const pos = state.dataPosition.epoch * stepsPerEpoch + state.dataPosition.batch;
    if (pos !== step) throw new Error(`sft: checkpoint ${dir} has data position ${pos} but step ${step}.`);
    // Checkpoints written before the shared vocabulary kept per-metric lists instead of the history.
    const lists = state as unknown as Record<string, number[] | undefined>;
    result.history = (state.history as SftStepMetrics[] | undefined) ?? state.losses.map((loss, i) => ({
      step: i + 1,
      epoch: (i + 1) / stepsPerEpoch,
      loss,
      learning_rate: lists.lrs?.[i] ?? NaN,
      grad_norm: lists.gradNorms?.[i] ?? NaN,
      num_tokens: NaN,
      tokens_per_second: lists.tokensPerSec?.[i] ?? NaN,
      num_tensors: NaN,
    }));
    result.history = [...result.history];
    result.checkpointDir = dir;
  }
  result.steps = step;

  if (c.outputDir) {
    await Deno.mkdir(c.outputDir, { recursive: true });
    result.files.config = await writeRunConfig(c.outputDir, "sft", { ...c, totalSteps });
    // A resumed run rewrites the log up to its checkpoint, then appends.
    result.files.metrics = `${c.outputDir}/metrics.jsonl`;
    await Deno.writeTextFile(
      result.files.metrics,
      result.history.map((m) => JSON.stringify(m) + "\n").join(""),
    );
  }
  const progress = createProgress({
    total: totalSteps,
    label: "sft",
    start: step,
    bar: c.progress,
    show: ["loss", "learning_rate", "grad_norm", "tokens_per_second"],
  });

  const checkpoint = async (k: number) => {
    if (!c.outputDir) return;
    result.checkpointDir = await saveCheckpoint(`${c.outputDir}/checkpoint-${k}`, {
      model,
      optimizer,
      state: {
        step: k,
        totalSteps,
        dataPosition: { epoch: Math.floor(k / stepsPerEpoch), batch: k % stepsPerEpoch },
        rng: { seed, epoch: Math.floor(k / stepsPerEpoch) },
        losses: result.history.map((m) => m.loss),
        history: result.history,
        options: { batchSize, microBatchSize: micro, epochs: c.epochs, seed, shuffle, maxLength },
      },
    });
  };

  const stopAt = Math.min(totalSteps, c.stopAfterSteps ?? Infinity);
  let order: number[] = [];
  let orderEpoch = -1;
  try {
    while (step < stopAt) {
      if (c.maxSeconds !== undefined && (performance.now() - t0) / 1000 >= c.maxSeconds) break;
      const tStep = performance.now();
      const epoch = Math.floor(step / stepsPerEpoch);
      if (epoch !== orderEpoch) {
        order = epochOrder(examples.length, seed, epoch, shuffle);
        orderEpoch = epoch;
      }
      const b = step % stepsPerEpoch;
      const batch = order.slice(b * batchSize, (b + 1) * batchSize).map((i) => examples[i]);
      // All micro-batches are prepared first: the loss is normalised by the labelled tokens of the whole batch.
      const micros: Micro[] = [];
      let numItems = 0;
      let realTokens = 0;
      let acc: Record<string, tf.Tensor> | null = null;
      let lossSum = 0;
      try {
        for (let m = 0; m < batch.length; m += micro) micros.push(await prepare(batch.slice(m, m + micro)));
        numItems = micros.reduce((s, mb) => s + mb.labelled, 0);
        for (const mb of micros) {
          realTokens += mb.batch.attentionMask.reduce((s, r) => s + r.reduce((a, x) => a + x, 0), 0);
          if (mb.labelled === 0) continue;
          const { value, grads } = valueAndGrads(
            () => sftLoss(model, { ...mb.batch, numItems, chunkSize: c.chunkSize, forward: mb.forward }),
            trainable,
          );
          lossSum += (await value.data())[0];
          value.dispose();
          acc = accumulateGrads(acc, grads);
        }
      } finally {
        for (const mb of micros) mb.forward.pixelValues?.dispose();
      }
      if (!acc) throw new Error(`sft: update ${step + 1} has no assistant token to learn from.`);
      // The clip factor is applied by the optimizer as it reads each gradient (no scaled copy).
      const { norm: gradNorm, scale } = await clipScale(acc!, c.maxGradNorm);
      const lr = schedule(step);
      optimizer.step(acc!, { lr, gradScale: scale });
      tf.dispose(Object.values(acc!));
      // A read from one parameter waits for the update to finish, so the timing covers it (async backends).
      // One value, not the tensor: reading a whole (e.g. [151936, 896]) parameter back is a copy of it.
      const probe = tf.tidy(() => Object.values(trainable)[0].reshape([-1]).slice(0, 1));
      await probe.data();
      probe.dispose();
      step += 1;
      const seconds = (performance.now() - tStep) / 1000;
      const metrics: SftStepMetrics = {
        step,
        epoch: step / stepsPerEpoch,
        loss: lossSum,
        learning_rate: lr,
        grad_norm: gradNorm,
        num_tokens: numItems,
        tokens_per_second: realTokens / seconds,
        num_tensors: tf.memory().numTensors,
      };
      result.history.push(metrics);
      result.steps = step;
      progress.update(step, { ...metrics });
      for (const logger of c.loggers) await logger.logStep(metrics);
      // After the loggers, as grpo: a logger may add metrics of its own to the step (validation).
      if (result.files.metrics) {
        await Deno.writeTextFile(result.files.metrics, JSON.stringify(metrics) + "\n", { append: true });
      }
      await c.onStep?.(metrics);
      if (c.saveSteps && step % c.saveSteps === 0 && step < stopAt) await checkpoint(step);
    }
    result.steps = step;
    if (c.outputDir && !result.checkpointDir?.endsWith(`checkpoint-${step}`)) await checkpoint(step);
  } finally {
    progress.close();
    optimizer.dispose();
    for (const logger of c.loggers) await logger.close?.();
  }
  if (c.exportDir && step >= totalSteps) {
    if (Object.keys(model.lora).length > 0) mergeLora(model);
    await saveModel(model, c.exportDir, { dtype: c.exportDtype });
    result.exportDir = c.exportDir;
  }
  result.seconds = (performance.now() - t0) / 1000;
  return result;
}
