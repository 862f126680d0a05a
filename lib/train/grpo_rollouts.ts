/**
 * GRPO's rollouts: which rows each round samples (a {@linkcode PromptSampler}), their prompts (rendered,
 * with image inputs for Qwen2.5-VL rows), `numGenerations` completions each from the model or from remote
 * servers (the policy pushed to them first), the rewards, and DAPO's dynamic sampling (groups whose
 * rewards are all equal dropped and refilled with fresh prompts).
 *
 * Every completion's seed derives from (seed, row id, step, round, sample index), so a run is a pure
 * function of its configuration and a resumed run repeats the steps of an uninterrupted one.
 *
 * @module
 */
import { tf } from "../util/deps.ts";
import { mean, std } from "../util/math.ts";
import { padRows } from "../util/padding.ts";
import type { CausalLM, ForwardOptions } from "../model/types.ts";
import { seededRandom } from "../model/rng.ts"; // Mulberry32: the same sequence on every machine
import type { Row } from "../data/types.ts";
import { buildPrompt, type PromptOptions } from "../data/prompt.ts";
import type { NamedReward } from "../reward/types.ts";
import { type PromptBuilder, sampleSeed } from "../engine/generate_batch.ts";
import { type ImageInputBuilder, visionInputBuilder } from "../engine/vision_inputs.ts";
import type { GrpoConfig, GrpoTokenizer, PromptSampler } from "./grpo_config.ts";

/** One prompt's images: its share of the processor's patches and their grids (shared by its group). */
export interface PromptImages {
  /** The prompt's patches. */
  pixelValues: tf.Tensor2D;
  /** `[t, h, w]` per image of the prompt. */
  imageGridThw: number[][];
}

/** A generated completion with what the loss needs. */
export interface Rollout {
  /** The row it answers. */
  row: Row;
  /** Its prompt's token ids. */
  promptIds: number[];
  /** The prompt's images (Qwen2.5-VL image rows only). */
  image?: PromptImages;
  /** Completion token ids (through the stop token, when there is one). */
  tokens: number[];
  /** Sampler log-probs of `tokens`. */
  logprobs: number[];
  /** No stop token within `maxNewTokens`. */
  truncated: boolean;
  /** The decoded completion (special tokens removed). */
  text: string;
  /** Weighted total reward. */
  reward: number;
  /** Each reward function's score. */
  byName: Record<string, number>;
}

/** A step's generation: the kept groups (`numGenerations` rollouts each) and what dynamic sampling saw. */
export interface GeneratedGroups {
  /** Groups kept for training, at most `promptsPerStep`. */
  groups: Rollout[][];
  /** Every rollout generated in the step (dropped groups included). */
  all: Rollout[];
  /** Groups generated. */
  seen: number;
  /** Groups whose rewards were all equal. */
  zeroStd: number;
}

/**
 * The default {@linkcode PromptSampler}: the `k`-th row drawn is row `perm_e[k mod n]` of epoch
 * `e = floor(k / n)`'s seeded permutation (the identity when not shuffling). Its state is the number of
 * rows drawn so far.
 */
export function epochSampler(rows: Row[], options: { seed: number; shuffle: boolean }): PromptSampler {
  const n = rows.length;
  let cursor = 0;
  let permEpoch = -1;
  let perm: number[] = [];
  const at = (k: number): number => {
    if (!options.shuffle) return k % n;
    const epoch = Math.floor(k / n);
    if (epoch !== permEpoch) {
      const r = seededRandom(options.seed * 1_000_003 + epoch);
      perm = Array.from({ length: n }, (_, i) => i);
      for (let i = n - 1; i > 0; i--) {
        const j = Math.floor(r() * (i + 1));
        [perm[i], perm[j]] = [perm[j], perm[i]];
      }
      permEpoch = epoch;
    }
    return perm[k % n];
  };
  return {
    next: (count) => Array.from({ length: count }, () => rows[at(cursor++)]),
    state: () => ({ cursor }),
    restore: (state) => {
      if (!Number.isInteger(state.cursor)) {
        throw new Error(`grpo: the sampler state ${JSON.stringify(state)} has no integer cursor.`);
      }
      cursor = state.cursor as number;
    },
  };
}

/** Left-pad token rows to one width; the mask marks real tokens. */
export function leftPad(rows: number[][], pad: number): { ids: number[][]; mask: number[][] } {
  return padRows(rows, pad, { side: "left" });
}

/** Right-pad token rows to one width (at least 1). */
export function rightPad(rows: number[][], pad: number): number[][] {
  return padRows(rows, pad, { side: "right", minWidth: 1 }).ids;
}

/** Mean (NaN for no values) and sample standard deviation (n - 1): the toolkit's one pair, `lib/util/math.ts`. */
export { mean as meanOf, std as stdOf };

/** The row -> rendered prompt string of a configuration: `promptText`, else `prompt` through the chat template. */
export function promptRenderer(
  tokenizer: GrpoTokenizer,
  prompt: PromptOptions | PromptBuilder | undefined,
  promptText: ((row: Row) => string) | undefined,
): (row: Row) => Promise<string> {
  if (promptText) return (row) => Promise.resolve(promptText(row));
  const apply = tokenizer.applyChatTemplate;
  if (!apply) {
    throw new Error(
      "grpo: give options.promptText, or a tokenizer with applyChatTemplate (e.g. loadTokenizer()).",
    );
  }
  const messages: PromptBuilder = typeof prompt === "function" ? prompt : (row) => buildPrompt(row, prompt);
  return async (row) => {
    const m = await messages(row);
    if (!Array.isArray(m)) {
      throw new Error(
        `grpo: options.prompt returned ${typeof m} for row ${row.id}, not chat messages; pass a function ` +
          `that returns the rendered prompt string as promptText instead.`,
      );
    }
    return apply.call(tokenizer, m, { addGenerationPrompt: true });
  };
}

/**
 * Generates and scores rollouts for `grpo`: locally with `model.generate` or through `remote`, with
 * image inputs for Qwen2.5-VL rows. Holds the image tensors it made until {@linkcode release}.
 */
export class RolloutGenerator {
  private readonly render: (row: Row) => Promise<string>;
  private readonly buildImages?: ImageInputBuilder;
  private readonly eosIds: Set<number>;
  private readonly liveImages = new Set<tf.Tensor>();
  /** Optimizer updates so far; remote servers are synced when it moved since their last sync. */
  policyVersion = 0;
  private syncedVersion = -1;
  private remoteModel = "";

  constructor(
    private readonly model: CausalLM,
    private readonly c: GrpoConfig,
    private readonly rewards: NamedReward[],
    private readonly sampler: PromptSampler,
  ) {
    this.render = promptRenderer(c.tokenizer, c.prompt, c.promptText);
    this.buildImages = model.config.vision ? (c.images ?? visionInputBuilder(model)) : undefined;
    this.eosIds = new Set(model.config.eosTokenIds);
  }

  /**
   * A step's groups, with DAPO's dynamic sampling when `dropZeroStdGroups` is on: rounds of fresh
   * prompts until `promptsPerStep` groups with a reward spread are kept or `maxRefillRounds` ran out.
   */
  async generateGroups(step: number): Promise<GeneratedGroups> {
    const { promptsPerStep, numGenerations: n, dropZeroStdGroups } = this.c;
    const out: GeneratedGroups = { groups: [], all: [], seen: 0, zeroStd: 0 };
    for (let round = 0; out.groups.length < promptsPerStep; round++) {
      const rows = await this.sampler.next(promptsPerStep - out.groups.length, step);
      const fresh = await this.round(rows, step * 1000 + round);
      out.all.push(...fresh);
      const observed: { row: Row; rewards: number[] }[] = [];
      for (let g = 0; g < fresh.length; g += n) {
        const group = fresh.slice(g, g + n);
        out.seen++;
        const flat = std(group.map((x) => x.reward)) === 0;
        if (flat) out.zeroStd++;
        if (!(dropZeroStdGroups && flat)) out.groups.push(group);
        observed.push({ row: group[0].row, rewards: group.map((x) => x.reward) });
      }
      await this.sampler.observe?.(observed, step);
      if (!dropZeroStdGroups || round + 1 >= this.c.maxRefillRounds) break;
    }
    out.groups = out.groups.slice(0, promptsPerStep);
    return out;
  }

  /** Dispose the image tensors of `rollouts` (all that are held when none are given). */
  release(rollouts?: Rollout[]): void {
    if (!rollouts) {
      tf.dispose([...this.liveImages]);
      this.liveImages.clear();
      return;
    }
    for (const r of rollouts) {
      if (!r.image) continue;
      this.liveImages.delete(r.image.pixelValues);
      r.image.pixelValues.dispose();
    }
  }

  /** One generation round: `numGenerations` completions for each row, scored. `seedStep` keys the seeds. */
  private async round(batch: Row[], seedStep: number): Promise<Rollout[]> {
    const { tokenizer, maxPromptLength, numGenerations: n, seed } = this.c;
    const texts = await Promise.all(batch.map((r) => this.render(r)));
    const { images: promptImages, forward: genImages } = await this.imageInputs(batch, texts);
    const encoded = batch.map((r, i) => {
      const ids = tokenizer.encode(texts[i]);
      if (!maxPromptLength || ids.length <= maxPromptLength) return ids;
      if (promptImages[i]) {
        throw new Error(
          `grpo: row ${r.id} has ${ids.length} prompt tokens with its images, over maxPromptLength ${maxPromptLength}.`,
        );
      }
      return ids.slice(-maxPromptLength);
    });
    const seeds: number[] = [];
    for (const r of batch) for (let j = 0; j < n; j++) seeds.push(sampleSeed(seed, `${r.id}@${seedStep}`, j));
    let out: { tokens: number[][]; logprobs: number[][] };
    try {
      out = this.c.remote ? await this.remoteGenerate(encoded, seeds) : await this.localGenerate(
        encoded,
        seeds,
        genImages,
      );
    } finally {
      genImages.pixelValues?.dispose();
    }
    const result: Rollout[] = [];
    for (let i = 0; i < batch.length; i++) {
      for (let j = 0; j < n; j++) {
        const k = i * n + j;
        let tokens = out.tokens[k];
        const stop = tokens.findIndex((t) => this.eosIds.has(t));
        // Keep the stop token (its probability is part of the policy) and drop what follows it.
        if (stop >= 0) tokens = tokens.slice(0, stop + 1);
        result.push({
          row: batch[i],
          promptIds: encoded[i],
          image: promptImages[i],
          tokens,
          logprobs: out.logprobs[k].slice(0, tokens.length),
          truncated: stop < 0,
          text: tokenizer.decode(tokens, { skipSpecialTokens: true }),
          reward: 0,
          byName: {},
        });
      }
    }
    await this.score(result);
    return result;
  }

  /** Each reward function over every rollout; the total is their weighted sum. */
  private async score(result: Rollout[]): Promise<void> {
    for (const r of this.rewards) {
      const scores = await Promise.all(result.map((x) => r.fn(x.text, x.row)));
      scores.forEach((s, i) => {
        if (typeof s !== "number" || Number.isNaN(s)) {
          throw new Error(
            `grpo: reward '${r.name}' returned ${s} for row ${result[i].row.id}; a reward must be a number.`,
          );
        }
        result[i].byName[r.name] = s;
        result[i].reward += r.weight * s;
      });
    }
  }

  private localGenerate(
    encoded: number[][],
    seeds: number[],
    images: Pick<ForwardOptions, "pixelValues" | "imageGridThw">,
  ) {
    const { ids, mask } = leftPad(encoded, this.c.tokenizer.padTokenId);
    return this.model.generate(ids, {
      attentionMask: mask,
      numSamples: this.c.numGenerations,
      temperature: this.c.temperature,
      topP: this.c.topP,
      topK: this.c.topK,
      maxNewTokens: this.c.maxNewTokens,
      seeds,
      ...images,
    });
  }

  /** Rollouts from the servers, in `model.generate`'s row order, after pushing the policy if it changed. */
  private async remoteGenerate(prompts: number[][], seeds: number[]) {
    const remote = this.c.remote!;
    const n = this.c.numGenerations;
    if (this.syncedVersion !== this.policyVersion) {
      this.remoteModel = await remote.sync(this.model, this.policyVersion);
      this.syncedVersion = this.policyVersion;
    }
    const res = await remote.engine.complete(
      prompts.map((p, i) => ({ promptIds: p, seeds: seeds.slice(i * n, (i + 1) * n) })),
      {
        temperature: this.c.temperature,
        topP: this.c.topP,
        topK: this.c.topK,
        maxNewTokens: this.c.maxNewTokens,
        model: this.remoteModel,
      },
    );
    const samples = res.flat();
    return {
      // servers that return no token ids (SGLang's OpenAI API) get their text re-encoded
      tokens: samples.map((x) => x.tokenIds.length || !x.text ? x.tokenIds : this.c.tokenizer.encode(x.text)),
      logprobs: samples.map((x) => x.logprobs),
    };
  }

  /**
   * The images of a batch of prompts (Qwen2.5-VL): the rendered texts get their image tokens expanded
   * in place; returns each image row's own patches (kept for the training passes) and the whole batch's
   * for generation (the caller disposes it).
   */
  private async imageInputs(
    batch: Row[],
    texts: string[],
  ): Promise<
    { images: (PromptImages | undefined)[]; forward: Pick<ForwardOptions, "pixelValues" | "imageGridThw"> }
  > {
    const images: (PromptImages | undefined)[] = batch.map(() => undefined);
    // Rows whose prompt names no image (a prompt function that drops them) are text-only rows.
    const picked = batch.flatMap((r, i) =>
      (r.images?.length ?? 0) > 0 && texts[i].includes("<|image_pad|>") ? [i] : []
    );
    if (picked.length === 0) return { images, forward: {} };
    const first = batch[picked[0]];
    if (!this.buildImages) {
      throw new Error(
        `grpo: row ${first.id} holds an image but the model (${this.model.config.modelType}) is text-only; use a Qwen2.5-VL checkpoint or a prompt without images.`,
      );
    }
    if (this.c.remote) {
      throw new Error(
        `grpo: row ${first.id} holds an image but remote rollouts take token ids only; train image rows locally.`,
      );
    }
    const built = await this.buildImages(picked.map((i) => batch[i]), picked.map((i) => texts[i]));
    picked.forEach((i, k) => texts[i] = built.texts[k]);
    if (built.pixelValues === undefined) return { images, forward: {} };
    const pv = built.pixelValues instanceof tf.Tensor
      ? built.pixelValues as tf.Tensor2D
      : tf.tensor2d(built.pixelValues as number[][]);
    const grids = built.imageGridThw ?? [];
    let g = 0;
    let at = 0;
    for (const i of picked) {
      const mine = grids.slice(g, g + batch[i].images.length);
      g += mine.length;
      const patches = mine.reduce((s, [t, h, w]) => s + t * h * w, 0);
      if (mine.length !== batch[i].images.length || at + patches > pv.shape[0]) {
        pv.dispose();
        throw new Error(
          `grpo: the image inputs of row ${batch[i].id} do not match its ${batch[i].images.length} images.`,
        );
      }
      const own = pv.slice([at, 0], [patches, -1]) as tf.Tensor2D;
      this.liveImages.add(own);
      images[i] = { pixelValues: own, imageGridThw: mine };
      at += patches;
    }
    return { images, forward: { pixelValues: pv, imageGridThw: grids } };
  }
}
