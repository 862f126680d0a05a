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
import type { CausalLM } from "../model/types.ts";
import { saveModel } from "../model/load.ts";
import { deriveSeed, Rng } from "../model/rng.ts";
import { type ChatMessage, loadTokenizer, type Tokenizer } from "../data/tokenizer.ts";
import { buildSftMessages, type PromptOptions } from "../data/prompt.ts";
import type { Row } from "../data/types.ts";
import { IGNORE_INDEX, sftLoss } from "./losses.ts";
import { accumulateGrads, adamw, clipScale, hfParamGroups, valueAndGrads } from "./optimizer.ts";
import { lrSchedule, type ScheduleType } from "./schedule.ts";
import { addLora, type LoraOptions, loraParams, mergeLora } from "../model/lora.ts";
import { latestCheckpoint, loadCheckpoint, saveCheckpoint, type TrainerState } from "./checkpoint.ts";
import { createProgress } from "../util/progress.ts";
import { type ImageInputBuilder, visionInputBuilder } from "../engine/vision_inputs.ts";
import { truncateJsonlToStep } from "../data/jsonl_store.ts";

/** One tokenized training example. */
export interface SftExample {
  /** Token ids of the whole chat-templated example. */
  inputIds: number[];
  /** Same length; -100 where the loss ignores the token. */
  labels: number[];
}

/** Options of {@linkcode sft}. */
export interface SftOptions {
  /** Tokenizer with the chat template. Default: the model folder's own, else the embedded Qwen2.5 one. */
  tokenizer?: Tokenizer;
  /** Padding id. Default: the tokenizer's, else the model config's pad (else first EOS) id. */
  padTokenId?: number;
  /** How question rows become the user turn (template, instruction, system prompt). */
  prompt?: PromptOptions;
  /** Passes over the data. Default 1. */
  epochs?: number;
  /** Optimizer updates in the run (the schedule spans them); wins over `epochs`, cycling the data. */
  maxSteps?: number;
  /** Examples per optimizer update (global batch). Default 16 (the recipe). */
  batchSize?: number;
  /** Examples per forward/backward pass; the rest is gradient accumulation. Default min(4, batchSize). */
  microBatchSize?: number;
  /** Peak learning rate. Default 1e-5. */
  lr?: number;
  /** Default `cosine`. */
  scheduler?: ScheduleType;
  /** Default 0.05 (ignored when `warmupSteps` is set). */
  warmupRatio?: number;
  /** Warmup in optimizer updates (overrides `warmupRatio`). */
  warmupSteps?: number;
  /** Default 1e-4. */
  weightDecay?: number;
  /** Default (0.9, 0.95). */
  betas?: [number, number];
  /** Default 1e-8. */
  eps?: number;
  /** Global gradient-norm clip; 0 = off. Default 1. */
  maxGradNorm?: number;
  /** `hf` (default): no decay on biases and norm weights (HF Trainer); `all`: decay on every tensor. */
  paramGroups?: "hf" | "all";
  /** Examples longer than this are cut (from the right). Default 4096. */
  maxLength?: number;
  /** Seed of the data order (and LoRA init). Default 42. */
  seed?: number;
  /** Shuffle each epoch. Default true. */
  shuffle?: boolean;
  /** Train LoRA adapters (added unless the model already has some) instead of all weights. */
  lora?: LoraOptions;
  /** Activation checkpointing: recompute each decoder layer in the backward pass (less memory). Default false. */
  gradientCheckpointing?: boolean;
  /** Where checkpoints (`checkpoint-N`) and the log go. */
  outputDir?: string;
  /** Checkpoint every N updates (and always at the end when `outputDir` is set). Default 0 = only at the end. */
  saveSteps?: number;
  /** JSON Lines log, one object per update. Default `<outputDir>/log.jsonl` when `outputDir` is set. */
  logFile?: string;
  /** Draw a progress bar on stderr. Default: when stderr is a terminal. */
  progress?: boolean;
  /** Resume from this checkpoint folder, or `true` for the latest under `outputDir` (none found: start fresh). */
  resumeFrom?: string | boolean;
  /** Stop (after a checkpoint) once this many updates are done; the schedule still spans the whole run. */
  stopAfterSteps?: number;
  /** At the end, save the model in Hub layout here (LoRA adapters merged into the weights first). */
  exportDir?: string;
  /** Storage dtype of the export. Default float32. */
  exportDtype?: string;
  /** Rows of the vocabulary head computed at once (memory bound). */
  chunkSize?: number;
  /**
   * Image inputs for rows with images (Qwen2.5-VL models): default `visionInputBuilder(model)` (the model
   * folder's processor settings). Images are decoded and processed batch by batch.
   */
  images?: ImageInputBuilder;
  /** Called after every update with its log record. */
  onStep?: (record: SftStepRecord) => void;
}

/** The log record of one update. */
export interface SftStepRecord {
  /** Optimizer update index (1-based). */
  step: number;
  /** Epoch the update belongs to (0-based). */
  epoch: number;
  /** Mean loss over the update's labelled tokens. */
  loss: number;
  /** Learning rate of the update. */
  lr: number;
  /** Global gradient norm before clipping. */
  gradNorm: number;
  /** Labelled (assistant) tokens in the batch. */
  tokens: number;
  /** All real tokens processed per second in this update (forward, backward, optimizer). */
  tokensPerSec: number;
  /** Live tfjs tensors after the update (constant in a leak-free run). */
  numTensors: number;
}

/** What {@linkcode sft} returns: plain data. */
export interface SftResult {
  /** Loss of every update of the run (including those before a resume). */
  losses: number[];
  /** Learning rate of every update. */
  lrs: number[];
  /** Gradient norm (before clipping) of every update. */
  gradNorms: number[];
  /** Tokens per second of every update. */
  tokensPerSec: number[];
  /** Updates done so far. */
  steps: number;
  /** Updates the full run has. */
  totalSteps: number;
  /** Examples used (rows without any assistant token after truncation are dropped). */
  numExamples: number;
  /** The last checkpoint written, if any. */
  checkpointDir: string | null;
  /** The Hub-layout export, if any. */
  exportDir: string | null;
  /** The JSON Lines log, if any. */
  logFile: string | null;
}

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
  if (Array.isArray(dataset)) return dataset;
  // deno-lint-ignore no-explicit-any
  const t = dataset as any;
  if (t && typeof t.objects === "function") return t.objects();
  throw new Error("sft: the dataset must be an arquero table or an array of rows.");
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
 * console.log(result.losses.at(-1), result.checkpointDir);
 * ```
 */
export async function sft(model: CausalLM, dataset: unknown, options: SftOptions = {}): Promise<SftResult> {
  const rows = datasetRows(dataset);
  if (rows.length === 0) throw new Error("sft: the dataset has no rows.");
  // Loaded only when some row needs tokenizing (pre-tokenized rows do not).
  let tokenizer = options.tokenizer;
  const maxLength = options.maxLength ?? 4096;
  const batchSize = options.batchSize ?? 16;
  const micro = Math.min(options.microBatchSize ?? 4, batchSize);
  const epochs = options.epochs ?? 1;
  const seed = options.seed ?? 42;
  const shuffle = options.shuffle ?? true;
  if (!(batchSize >= 1 && micro >= 1)) throw new Error("sft: batchSize and microBatchSize must be >= 1.");

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
  for (let i = 0; i < rows.length; i++) {
    const row = rows[i];
    const withImages = vision && !Array.isArray(row.inputIds) && typeof row.text !== "string" &&
      !Array.isArray(row.messages) && Array.isArray(row.images) && row.images.length > 0 &&
      (options.prompt?.includeImages ?? true);
    if (withImages) {
      tokenizer ??= await loadTokenizer(model.dir);
      const text = sftText(tokenizer, row, i, options.prompt, { allowImages: true });
      examples.push({ row: canonicalRow(row, i), text, index: i });
      continue;
    }
    const ex = Array.isArray(row.inputIds)
      ? pretokenized(row, i, maxLength)
      : encodeSftExample(tokenizer ??= await loadTokenizer(model.dir), row, {
        index: i,
        prompt: options.prompt,
        maxLength,
      });
    checkIds(ex, i);
    if (countLabels(ex) > 0) examples.push(ex);
  }
  if (examples.length === 0) throw new Error("sft: no row has an assistant turn left after truncation.");

  const padTokenId = options.padTokenId ?? tokenizer?.padTokenId ?? model.config.padTokenId ??
    model.config.eosTokenIds[0] ?? 0;
  const images = options.images ?? (vision ? visionInputBuilder(model) : undefined);

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
  const totalSteps = options.maxSteps ?? epochs * stepsPerEpoch;
  if (!(Number.isInteger(totalSteps) && totalSteps >= 1)) {
    throw new Error(`sft: maxSteps must be a positive integer.`);
  }
  const schedule = lrSchedule({
    lr: options.lr ?? 1e-5,
    type: options.scheduler ?? "cosine",
    totalSteps,
    warmupSteps: options.warmupSteps,
    warmupRatio: options.warmupRatio ?? 0.05,
  });

  if (options.gradientCheckpointing) model.gradientCheckpointing = true;
  let trainable: Record<string, tf.Variable>;
  if (options.lora) {
    trainable = Object.keys(model.lora).length > 0
      ? loraParams(model)
      : addLora(model, { seed, ...options.lora });
    model.loraEnabled = true;
  } else {
    // Frozen tensors (e.g. a Qwen2.5-VL vision tower after freezeVision()) get no gradient: leave them out.
    trainable = Object.fromEntries(Object.entries(model.params).filter(([, v]) => v.trainable));
  }
  const names = Object.keys(trainable);
  const weightDecay = options.weightDecay ?? 1e-4;
  const optimizer = adamw({
    params: trainable,
    lr: options.lr ?? 1e-5,
    betas: options.betas ?? [0.9, 0.95],
    eps: options.eps ?? 1e-8,
    weightDecay,
    paramGroups: (options.paramGroups ?? "hf") === "hf" ? hfParamGroups(names, weightDecay) : undefined,
  });

  const result: SftResult = {
    losses: [],
    lrs: [],
    gradNorms: [],
    tokensPerSec: [],
    steps: 0,
    totalSteps,
    numExamples: examples.length,
    checkpointDir: null,
    exportDir: null,
    logFile: options.logFile ?? (options.outputDir ? `${options.outputDir}/log.jsonl` : null),
  };

  let step = 0;
  if (options.resumeFrom) {
    const dir = options.resumeFrom === true
      ? (options.outputDir ? await latestCheckpoint(options.outputDir) : null)
      : options.resumeFrom;
    if (options.resumeFrom === true && !options.outputDir) {
      throw new Error("sft: resumeFrom true needs an outputDir.");
    }
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
      result.losses = [...state.losses];
      result.lrs = [...((state.lrs as number[]) ?? [])];
      result.gradNorms = [...((state.gradNorms as number[]) ?? [])];
      result.tokensPerSec = [...((state.tokensPerSec as number[]) ?? [])];
      result.checkpointDir = dir;
    }
  }

  if (options.outputDir) await Deno.mkdir(options.outputDir, { recursive: true });
  // the log then holds each step once, as after an uninterrupted run: steps after the checkpoint run again
  if (result.logFile) await truncateJsonlToStep(result.logFile, step);
  const progress = createProgress({
    total: totalSteps,
    label: "sft",
    start: step,
    logFile: result.logFile ?? undefined,
    bar: options.progress,
    show: ["loss", "lr", "gradNorm", "tokensPerSec"],
  });

  const stateAt = (k: number): TrainerState => ({
    step: k,
    totalSteps,
    dataPosition: { epoch: Math.floor(k / stepsPerEpoch), batch: k % stepsPerEpoch },
    rng: { seed, epoch: Math.floor(k / stepsPerEpoch) },
    losses: result.losses,
    lrs: result.lrs,
    gradNorms: result.gradNorms,
    tokensPerSec: result.tokensPerSec,
    options: { batchSize, microBatchSize: micro, epochs, seed, shuffle, maxLength },
  });
  const checkpoint = async (k: number) => {
    if (!options.outputDir) return;
    result.checkpointDir = await saveCheckpoint(`${options.outputDir}/checkpoint-${k}`, {
      model,
      optimizer,
      state: stateAt(k),
    });
  };

  const stopAt = Math.min(totalSteps, options.stopAfterSteps ?? Infinity);
  let order: number[] = [];
  let orderEpoch = -1;
  try {
    while (step < stopAt) {
      const t0 = performance.now();
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
            () =>
              sftLoss(model, { ...mb.batch, numItems, chunkSize: options.chunkSize, forward: mb.forward }),
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
      const { norm: gradNorm, scale } = await clipScale(acc!, options.maxGradNorm ?? 1);
      const lr = schedule(step);
      optimizer.step(acc!, { lr, gradScale: scale });
      tf.dispose(Object.values(acc!));
      // A read from one parameter waits for the update to finish, so the timing covers it (async backends).
      // One value, not the tensor: reading a whole (e.g. [151936, 896]) parameter back is a copy of it.
      const probe = tf.tidy(() => Object.values(trainable)[0].reshape([-1]).slice(0, 1));
      await probe.data();
      probe.dispose();
      step += 1;
      const seconds = (performance.now() - t0) / 1000;
      const record: SftStepRecord = {
        step,
        epoch,
        loss: lossSum,
        lr,
        gradNorm,
        tokens: numItems,
        tokensPerSec: realTokens / seconds,
        numTensors: tf.memory().numTensors,
      };
      result.losses.push(lossSum);
      result.lrs.push(lr);
      result.gradNorms.push(gradNorm);
      result.tokensPerSec.push(record.tokensPerSec);
      result.steps = step;
      progress.update(step, { ...record });
      options.onStep?.(record);
      if (options.saveSteps && step % options.saveSteps === 0 && step < stopAt) await checkpoint(step);
    }
    result.steps = step;
    if (options.outputDir && !result.checkpointDir?.endsWith(`checkpoint-${step}`)) await checkpoint(step);
  } finally {
    progress.close();
    optimizer.dispose();
  }
  if (options.exportDir && step >= totalSteps) {
    if (Object.keys(model.lora).length > 0) mergeLora(model);
    await saveModel(model, options.exportDir, { dtype: options.exportDtype ?? "float32" });
    result.exportDir = options.exportDir;
  }
  return result;
}
