/**
 * Batched, KV-cached generation: prefill the left-padded prompts once, repeat each prompt's cache
 * `numSamples` times, then decode one token per step for every row.
 *
 * Token choice happens on the CPU from the downloaded log-probabilities, with one seeded generator
 * per output row: a row's sample depends only on its seed and its own logits, not on the rest of
 * the batch. Order of the sampling filters as in Hugging Face: temperature, top-k, then top-p.
 *
 * @module
 */
import { tf } from "../util/deps.ts";
import type { ForwardOptions, GenerateOptions, GenerateResult, ModelConfig } from "./types.ts";
import { disposeCache, emptyCache, type KVCache, selectCacheRows } from "./kv_cache.ts";
import { deriveSeed, Rng } from "./rng.ts";
import { checkGenerateOptions } from "./generation_options.ts";

/** What a decoder's prefill returns. */
export interface PrefillResult {
  /** `[B, V]` logits at the last prompt position. */
  logits: tf.Tensor2D;
  /** `[B]` float32 rotary position of the first generated token of each row. */
  nextPositions: tf.Tensor1D;
}

/** A model that can prefill a cache and decode one token at a time (Qwen2Model and its VL subclass). */
export interface CachedDecoder {
  /** The model's config (eos ids, layer count for the cache). */
  readonly config: ModelConfig;
  /** Run the prompts, fill `cache`, return last-position logits and next positions. */
  prefill(ids: tf.Tensor2D, mask: tf.Tensor2D, cache: KVCache, options?: ForwardOptions): PrefillResult;
  /** One token per row at `positions`: logits `[B, V]`, cache extended. */
  decodeStep(tokens: tf.Tensor2D, positions: tf.Tensor1D, cache: KVCache): tf.Tensor2D;
}

/** Sampling settings of one token choice. */
export interface SamplingOptions {
  /** 0 = greedy. */
  temperature: number;
  /** 0 = off. */
  topK: number;
  /** 1 = off. */
  topP: number;
}

async function toRows(x: number[][] | tf.Tensor2D, what: string): Promise<number[][]> {
  const rows = x instanceof tf.Tensor ? (await x.array()) as number[][] : x;
  if (!Array.isArray(rows) || !rows.length || !Array.isArray(rows[0])) {
    throw new Error(`${what} must be a non-empty [B, T] nested array or a 2-D tensor.`);
  }
  const T = rows[0].length;
  if (rows.some((r) => r.length !== T)) {
    throw new Error(
      `${what} rows have different lengths: left-pad the prompts to one length and pass an attention mask.`,
    );
  }
  return rows;
}

/** Index of the largest value (the first one on ties, as torch.argmax). */
function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

/**
 * The smallest log-prob `tau` such that, walking the values in ascending order and summing their
 * probabilities `probs[i]`, the sum exceeds `target` at `tau`: everything below `tau` is what HF's
 * sort-and-cumsum top-p filter drops. One histogram pass plus the sort of a single bin, instead of
 * sorting the ~150k-entry vocabulary on every step.
 */
function ascendingCrossing(lp: Float32Array, probs: Float64Array, target: number): number {
  const V = lp.length;
  let lo = Infinity, hi = -Infinity;
  for (let i = 0; i < V; i++) {
    if (lp[i] < lo) lo = lp[i];
    if (lp[i] > hi) hi = lp[i];
  }
  if (!(hi > lo)) return hi;
  const NB = 4096;
  const scale = (NB - 1) / (hi - lo);
  const mass = new Float64Array(NB);
  for (let i = 0; i < V; i++) mass[Math.floor((lp[i] - lo) * scale)] += probs[i];
  let cum = 0, b = 0;
  for (; b < NB; b++) {
    if (cum + mass[b] > target) break;
    cum += mass[b];
  }
  if (b === NB) return hi; // rounding: keep at least the most likely
  const inBin: number[] = [];
  for (let i = 0; i < V; i++) if (Math.floor((lp[i] - lo) * scale) === b) inBin.push(i);
  inBin.sort((x, y) => lp[x] - lp[y]);
  for (const i of inBin) {
    cum += probs[i];
    if (cum > target) return lp[i];
  }
  return lp[inBin[inBin.length - 1]];
}

/** Indices (ascending) of the k largest log-probs, ties with the k-th included (HF's TopKLogitsWarper). */
function topKIndices(lp: Float32Array, k: number): number[] {
  // Histogram the values, find the bin holding the k-th largest, then sort only what lies above it.
  const V = lp.length;
  let lo = Infinity, hi = -Infinity;
  for (let i = 0; i < V; i++) {
    if (lp[i] < lo) lo = lp[i];
    if (lp[i] > hi) hi = lp[i];
  }
  const NB = 4096;
  const scale = hi > lo ? (NB - 1) / (hi - lo) : 0;
  const count = new Uint32Array(NB);
  for (let i = 0; i < V; i++) count[Math.floor((lp[i] - lo) * scale)]++;
  let b = NB - 1, above = 0;
  for (; b > 0 && above + count[b] < k; b--) above += count[b];
  const idx: number[] = [];
  for (let i = 0; i < V; i++) if (Math.floor((lp[i] - lo) * scale) >= b) idx.push(i);
  idx.sort((x, y) => lp[y] - lp[x]);
  const kth = lp[idx[k - 1]];
  return idx.filter((i) => lp[i] >= kth).sort((x, y) => x - y);
}

/**
 * Choose one token from a row of log-probabilities at temperature T (`log_softmax(logits / T)`):
 * greedy when `temperature` is 0, else top-k, then top-p (nucleus) filtering and an inverse-CDF draw
 * from the renormalised rest (tokens in id order) with `u` uniform in [0, 1).
 *
 * @example
 * ```ts
 * import { sampleToken } from "./generate.ts";
 * const lp = new Float32Array([Math.log(0.7), Math.log(0.2), Math.log(0.1)]);
 * sampleToken(lp, { temperature: 1, topK: 0, topP: 1 }, 0.8); // 1
 * ```
 */
export function sampleToken(lp: Float32Array, opts: SamplingOptions, u: number): number {
  if (opts.temperature <= 0) return argmax(lp);
  const V = lp.length;
  if (opts.topK > 0 && opts.topK < V) {
    let idx = topKIndices(lp, opts.topK);
    if (opts.topP < 1) {
      // The same ascending cumulative rule on the (small) renormalised top-k set.
      let Z = 0;
      for (const i of idx) Z += Math.exp(lp[i]);
      const asc = idx.slice().sort((a, b) => lp[a] - lp[b]);
      let cum = 0, tau = lp[asc[asc.length - 1]];
      for (const i of asc) {
        cum += Math.exp(lp[i]) / Z;
        if (cum > 1 - opts.topP) {
          tau = lp[i];
          break;
        }
      }
      idx = idx.filter((i) => lp[i] >= tau);
    }
    return drawAmong(lp, idx, u);
  }
  if (opts.topP < 1) {
    const probs = new Float64Array(V);
    let Z = 0;
    for (let i = 0; i < V; i++) Z += probs[i] = Math.exp(lp[i]);
    const tau = ascendingCrossing(lp, probs, (1 - opts.topP) * Z);
    let total = 0;
    for (let i = 0; i < V; i++) if (lp[i] >= tau) total += probs[i];
    const target = u * total;
    let acc = 0, last = 0;
    for (let i = 0; i < V; i++) {
      if (lp[i] < tau) continue;
      acc += probs[i];
      last = i;
      if (acc > target) return i;
    }
    return last;
  }
  // Plain sampling: the row is normalised, so walk until the mass passes u (half a pass on average).
  let acc = 0;
  for (let i = 0; i < V; i++) {
    acc += Math.exp(lp[i]);
    if (acc > u) return i;
  }
  return drawAmong(lp, null, u); // rounding left u beyond the total: redo against the true total
}

/** Inverse-CDF draw among `idx` (all tokens when null) with weights exp(lp), `u` in [0, 1). */
function drawAmong(lp: Float32Array, idx: number[] | null, u: number): number {
  const ids = idx ?? Array.from(lp.keys());
  let total = 0;
  for (const i of ids) total += Math.exp(lp[i]);
  const target = u * total;
  let acc = 0;
  for (const i of ids) {
    acc += Math.exp(lp[i]);
    if (acc > target) return i;
  }
  return ids[ids.length - 1];
}

/**
 * Generate continuations of left-padded prompts with a KV cache.
 * Output row `i * numSamples + j` is sample j of prompt i. Tokens stop after an EOS id (included),
 * or after `maxNewTokens`.
 *
 * @example
 * ```ts ignore
 * const out = await generate(model, [[1, 2, 3]], { maxNewTokens: 8, temperature: 0 });
 * console.log(out.tokens[0], out.finishReasons[0]);
 * ```
 */
export async function generate(
  model: CachedDecoder,
  inputIds: number[][] | tf.Tensor2D,
  options: GenerateOptions = {},
): Promise<GenerateResult> {
  const ids = await toRows(inputIds, "Input ids");
  const B = ids.length, T = ids[0].length;
  const mask = options.attentionMask === undefined
    ? ids.map((r) => r.map(() => 1))
    : await toRows(options.attentionMask, "Attention mask");
  if (mask.length !== B || mask[0].length !== T) {
    throw new Error(
      `Attention mask has shape [${mask.length}, ${mask[0].length}] but the input ids have [${B}, ${T}].`,
    );
  }
  for (let b = 0; b < B; b++) {
    if (mask[b][T - 1] !== 1) {
      throw new Error(
        `Prompt row ${b} does not end with a real token: prompts must be LEFT-padded (mask 1 at the end).`,
      );
    }
  }
  checkGenerateOptions(options as GenerateOptions & Record<string, unknown>);
  const maxNew = options.maxNewTokens ?? 32;
  const n = options.numSamples ?? 1;
  if (!Number.isInteger(n) || n < 1) throw new Error(`numSamples must be a positive integer, got ${n}.`);
  const R = B * n;
  const temperature = options.temperature ?? 1;
  const sampling: SamplingOptions = { temperature, topK: options.topK ?? 0, topP: options.topP ?? 1 };
  const eos = new Set(options.eosTokenIds ?? model.config.eosTokenIds);
  if (options.seeds && options.seeds.length !== R) {
    throw new Error(
      `seeds has ${options.seeds.length} entries but there are ${R} output rows (prompts x numSamples).`,
    );
  }
  const base = options.seed ?? Math.floor(Math.random() * 2 ** 32);
  const rngs = Array.from(
    { length: R },
    (_, r) => new Rng(options.seeds ? options.seeds[r] : deriveSeed(base, r)),
  );

  const tokens: number[][] = Array.from({ length: R }, () => []);
  const logprobs: number[][] = Array.from({ length: R }, () => []);
  const finishReasons: ("stop" | "length")[] = new Array(R).fill("length");
  if (maxNew <= 0) return { tokens, logprobs, finishReasons };

  const cache = emptyCache(model.config);
  let logits: tf.Tensor2D | null = null;
  let positions: tf.Tensor1D | null = null;
  try {
    const pre = tf.tidy(() => {
      const idT = tf.tensor2d(ids, [B, T], "int32");
      const maskT = tf.tensor2d(mask, [B, T], "float32");
      return model.prefill(idT, maskT, cache, options) as unknown as tf.TensorContainer;
    }) as unknown as PrefillResult;
    logits = pre.logits;
    positions = pre.nextPositions;
    if (maxNew > 1) {
      // Steps take rotary cos/sin from a table of the positions they can reach (one read of B numbers).
      const start = await positions.data();
      let top = 0;
      for (const p of start) top = Math.max(top, p);
      if (Number.isFinite(top)) cache.ropeLimit = Math.ceil(top) + maxNew;
    }
    if (n > 1 && logits && positions) {
      // Prefill each prompt once, then copy its cache for every sample.
      const rows = Array.from({ length: R }, (_, r) => Math.floor(r / n));
      selectCacheRows(cache, rows);
      const idx = tf.tensor1d(rows, "int32");
      const l2 = tf.gather(logits, idx), p2 = tf.gather(positions, idx);
      idx.dispose();
      logits.dispose();
      positions.dispose();
      logits = l2 as tf.Tensor2D;
      positions = p2 as tf.Tensor1D;
    }
    // `active[j]` = the output row held at batch position j; finished rows leave the batch.
    let active = Array.from({ length: R }, (_, r) => r);
    const greedy = !(temperature > 0);
    for (let step = 0; step < maxNew; step++) {
      const A = active.length;
      const chosen: number[] = new Array(A);
      if (greedy) {
        // Greedy needs only the argmax and its log-prob: download 2 numbers per row, not the vocabulary.
        const [idxT, lpT] = tf.tidy(() => {
          const l = logits!;
          return [tf.argMax(l, 1), tf.sub(tf.max(l, 1), tf.logSumExp(l, 1))];
        });
        const [idx, lpv] = [await idxT.data(), await lpT.data()];
        tf.dispose([idxT, lpT]);
        for (let j = 0; j < A; j++) {
          chosen[j] = idx[j];
          logprobs[active[j]].push(lpv[j]);
        }
      } else {
        const lpT = tf.tidy(() => tf.logSoftmax(tf.div(logits!, temperature)));
        const lp = (await lpT.data()) as Float32Array;
        lpT.dispose();
        const V = lp.length / A;
        for (let j = 0; j < A; j++) {
          const row = lp.subarray(j * V, (j + 1) * V);
          chosen[j] = sampleToken(row, sampling, rngs[active[j]].next());
          logprobs[active[j]].push(row[chosen[j]]);
        }
      }
      const keep: number[] = [];
      for (let j = 0; j < A; j++) {
        const r = active[j];
        tokens[r].push(chosen[j]);
        if (eos.has(chosen[j])) finishReasons[r] = "stop";
        else keep.push(j);
      }
      if (step === maxNew - 1 || keep.length === 0) break;
      let prevPos: tf.Tensor1D = positions!;
      if (keep.length < A) {
        // Drop finished rows from the cache so later steps compute only live ones.
        selectCacheRows(cache, keep);
        const idx = tf.tensor1d(keep, "int32");
        const p2 = tf.gather(prevPos, idx) as tf.Tensor1D;
        idx.dispose();
        prevPos.dispose();
        prevPos = p2;
        active = keep.map((j) => active[j]);
      }
      const prevLogits: tf.Tensor2D = logits!;
      const tokT = tf.tensor2d(keep.map((j) => [chosen[j]]), [keep.length, 1], "int32");
      logits = model.decodeStep(tokT, prevPos, cache);
      positions = tf.tidy(() => tf.add(prevPos, 1) as tf.Tensor1D);
      tokT.dispose();
      prevLogits.dispose();
      prevPos.dispose();
    }
  } finally {
    logits?.dispose();
    positions?.dispose();
    disposeCache(cache);
  }
  return { tokens, logprobs, finishReasons };
}
