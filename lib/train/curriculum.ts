/**
 * An adaptive curriculum for GRPO (the MedVLThinker paper's stated future work): instead of probing every
 * question once before training and keeping those with a pass count of 1..n-1 (the static probe-then-filter
 * pipeline), keep a live estimate of each question's pass rate from the rollouts themselves (every group
 * of `numGenerations` completions is a free probe) and sample the questions whose next group is likely to
 * have mixed rewards, the only groups GRPO learns from.
 *
 * The estimate is a Beta posterior per question over its pass rate, with successes counted as the rewards
 * clamped to [0, 1] (for the recipe's binary reward: correct completions). Its evidence decays with a
 * half-life in steps, so a question not seen for a while drifts back to the prior and is revisited: the
 * policy changes under it. A question's sampling weight is the posterior probability that its next group
 * is mixed,
 *
 *   P(mixed) = 1 - E[p^n] - E[(1-p)^n],  E[p^n] = prod_{k<n} (a + k) / (a + b + k)  for p ~ Beta(a, b),
 *
 * raised to an exploration floor, so no question is starved. Questions are drawn without replacement
 * within a step (Efraimidis-Spirakis keys), from a seeded generator: the same seed and the same observed
 * rewards give the same draws on every machine.
 *
 * @module
 */

import { checkOptionKeys } from "../util/options.ts";

/** Options of {@linkcode AdaptiveCurriculum}. */
export interface CurriculumOptions {
  /** Completions per question in a group (GRPO's `numGenerations`). Default 8. */
  numGenerations?: number;
  /** Beta prior of every question's pass rate, `[a, b]`. Default `[0.5, 0.5]` (Jeffreys). */
  prior?: [number, number];
  /** Steps after which a question's evidence counts half (it drifts back to the prior). Default 20. */
  halfLife?: number;
  /** Smallest sampling weight, so that every question keeps a chance to be revisited. Default 0.05. */
  floor?: number;
  /** Pass counts (of `numGenerations`) that count as inside the band. Default `[1, numGenerations - 1]`. */
  band?: [number, number];
  /** Seed of the draws. Default 0. */
  seed?: number;
}

/** The defaults of {@linkcode CurriculumOptions} (also the known option keys). */
export const CURRICULUM_DEFAULTS: Readonly<
  Required<Omit<CurriculumOptions, "band">> & { band?: [number, number] }
> = Object.freeze({
  numGenerations: 8,
  prior: [0.5, 0.5] as [number, number],
  halfLife: 20,
  floor: 0.05,
  band: undefined,
  seed: 0,
});

/** One question's posterior at a given step. */
export interface PassRateEstimate {
  /** Beta parameter a (prior plus decayed successes). */
  a: number;
  /** Beta parameter b (prior plus decayed failures). */
  b: number;
  /** Posterior mean pass rate `a / (a + b)`. */
  mean: number;
  /** Posterior probability that the next group of `numGenerations` has mixed rewards. */
  pMixed: number;
  /** Whether the expected pass count `numGenerations * mean` lies inside the band. */
  inBand: boolean;
  /** Groups observed for this question. */
  visits: number;
}

/** Curriculum metrics of one step (merged into GRPO's per-step metrics). */
export interface CurriculumStats {
  /** Fraction of the questions seen so far whose estimate is inside the band. */
  band_occupancy: number;
  /** Fraction of the last draw's questions whose estimate was inside the band when drawn. */
  band_occupancy_sampled: number;
  /** Fraction of all questions observed at least once. */
  visited_fraction: number;
  /** Mean posterior pass rate over the questions seen so far. */
  mean_pass_rate: number;
}

/**
 * `E[p^k]` for `p ~ Beta(a, b)`: `prod_{j<k} (a + j) / (a + b + j)`.
 *
 * @example
 * ```ts
 * import { betaMoment } from "./curriculum.ts";
 * console.assert(Math.abs(betaMoment(1, 1, 2) - 1 / 3) < 1e-12); // uniform: E[p^2] = 1/3
 * ```
 */
export function betaMoment(a: number, b: number, k: number): number {
  let m = 1;
  for (let j = 0; j < k; j++) m *= (a + j) / (a + b + j);
  return m;
}

/**
 * Posterior probability that `n` draws with pass rate `p ~ Beta(a, b)` are neither all successes nor all
 * failures: `1 - E[p^n] - E[(1-p)^n]`.
 *
 * @example
 * ```ts
 * import { mixedProbability } from "./curriculum.ts";
 * console.assert(Math.abs(mixedProbability(1, 1, 2) - 1 / 3) < 1e-12);
 * ```
 */
export function mixedProbability(a: number, b: number, n: number): number {
  return Math.max(0, 1 - betaMoment(a, b, n) - betaMoment(b, a, n));
}

/**
 * A prompt sampler for GRPO that favours the questions whose groups will have mixed rewards, from a
 * live pass-rate estimate per question: `next(count, step)` draws row indices, `observe(index, rewards,
 * step)` feeds back a group's rewards.
 *
 * @example
 * ```ts
 * import { AdaptiveCurriculum } from "./curriculum.ts";
 * const c = new AdaptiveCurriculum(100, { numGenerations: 4, seed: 1 });
 * const picked = c.next(8, 0);
 * for (const i of picked) c.observe(i, [1, 0, 0, 1], 0);
 * console.assert(c.estimate(picked[0], 1).inBand);
 * ```
 */
export class AdaptiveCurriculum {
  /** Number of questions. */
  readonly size: number;
  /** Completions per group. */
  readonly numGenerations: number;
  readonly #prior: [number, number];
  readonly #decay: number;
  readonly #floor: number;
  readonly #band: [number, number];
  #rng: number; // Mulberry32 state (lib/model/rng.ts's seededRandom), kept here so that state() can save it
  readonly #succ: Float64Array;
  readonly #fail: Float64Array;
  readonly #last: Float64Array; // step of the last observation (decay reference)
  readonly #visits: Uint32Array;
  #lastDrawInBand = 0;

  /** A curriculum over `size` questions (row indices `0..size-1`). */
  constructor(size: number, options: CurriculumOptions = {}) {
    checkOptionKeys(options, CURRICULUM_DEFAULTS, "curriculum options");
    const o = { ...CURRICULUM_DEFAULTS, ...options };
    if (!Number.isInteger(size) || size < 1) {
      throw new Error(`curriculum: the dataset must have at least one question, got ${size}.`);
    }
    if (!Number.isInteger(o.numGenerations) || o.numGenerations < 2) {
      throw new Error(
        `curriculum: numGenerations must be an integer of at least 2, got ${o.numGenerations}.`,
      );
    }
    if (!(o.prior[0] > 0 && o.prior[1] > 0)) {
      throw new Error(`curriculum: prior must be two positive numbers [a, b], got [${o.prior.join(", ")}].`);
    }
    if (!(o.halfLife > 0)) {
      throw new Error(`curriculum: halfLife must be positive (steps), got ${o.halfLife}.`);
    }
    if (!(o.floor >= 0 && o.floor <= 1)) {
      throw new Error(`curriculum: floor must be in [0, 1], got ${o.floor}.`);
    }
    const band = o.band ?? [1, o.numGenerations - 1];
    if (!(band[0] <= band[1])) {
      throw new Error(`curriculum: band [${band.join(", ")}] must be [low, high] with low <= high.`);
    }
    this.size = size;
    this.numGenerations = o.numGenerations;
    this.#prior = [o.prior[0], o.prior[1]];
    this.#decay = 0.5 ** (1 / o.halfLife);
    this.#floor = o.floor;
    this.#band = [band[0], band[1]];
    this.#rng = (o.seed * 2654435761 + 0x9e3779b9) >>> 0;
    this.#succ = new Float64Array(size);
    this.#fail = new Float64Array(size);
    this.#last = new Float64Array(size);
    this.#visits = new Uint32Array(size);
  }

  #rand(): number {
    this.#rng = (this.#rng + 0x6d2b79f5) >>> 0;
    let t = this.#rng;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  #check(index: number): void {
    if (!Number.isInteger(index) || index < 0 || index >= this.size) {
      throw new Error(`curriculum: question index ${index} is outside 0..${this.size - 1}.`);
    }
  }

  /** The posterior of question `index` as of `step` (its evidence decayed by the steps since it was seen). */
  estimate(index: number, step: number): PassRateEstimate {
    this.#check(index);
    const w = this.#visits[index] ? this.#decay ** Math.max(0, step - this.#last[index]) : 0;
    const a = this.#prior[0] + w * this.#succ[index];
    const b = this.#prior[1] + w * this.#fail[index];
    const mean = a / (a + b);
    const expected = this.numGenerations * mean;
    return {
      a,
      b,
      mean,
      pMixed: mixedProbability(a, b, this.numGenerations),
      inBand: expected >= this.#band[0] && expected <= this.#band[1],
      visits: this.#visits[index],
    };
  }

  /** Sampling weight of question `index` at `step`: the floor plus the rest times P(mixed). */
  weight(index: number, step: number): number {
    return this.#floor + (1 - this.#floor) * this.estimate(index, step).pMixed;
  }

  /** Draw `count` distinct questions (all of them when `count >= size`, in drawn order) for `step`. */
  next(count: number, step: number): number[] {
    if (!Number.isInteger(count) || count < 1) {
      throw new Error(`curriculum: next() needs a positive number of questions, got ${count}.`);
    }
    // Efraimidis-Spirakis: key u^(1/w), keep the largest; compared as log(u) / w.
    const keys: { i: number; key: number }[] = [];
    for (let i = 0; i < this.size; i++) {
      const u = Math.max(this.#rand(), 1e-300);
      keys.push({ i, key: Math.log(u) / this.weight(i, step) });
    }
    keys.sort((x, y) => y.key - x.key || x.i - y.i);
    const picked = keys.slice(0, Math.min(count, this.size)).map((k) => k.i);
    this.#lastDrawInBand = picked.filter((i) => this.estimate(i, step).inBand).length / picked.length;
    return picked;
  }

  /** Feed back one group's rewards for question `index` at `step` (rewards clamped to [0, 1] count as successes). */
  observe(index: number, rewards: number[], step: number): void {
    this.#check(index);
    if (rewards.length === 0) throw new Error(`curriculum: observe() got no rewards for question ${index}.`);
    const w = this.#visits[index] ? this.#decay ** Math.max(0, step - this.#last[index]) : 0;
    const s = rewards.reduce((t, r) => t + Math.min(1, Math.max(0, r)), 0);
    this.#succ[index] = w * this.#succ[index] + s;
    this.#fail[index] = w * this.#fail[index] + (rewards.length - s);
    this.#last[index] = step;
    this.#visits[index]++;
  }

  /** A JSON-safe copy of the estimates and the generator (for checkpoints). */
  state(): Record<string, unknown> {
    return {
      size: this.size,
      rng: this.#rng,
      succ: [...this.#succ],
      fail: [...this.#fail],
      last: [...this.#last],
      visits: [...this.#visits],
    };
  }

  /** Restore what {@linkcode AdaptiveCurriculum.state} returned (a resumed run draws as the uninterrupted one). */
  restore(state: Record<string, unknown>): void {
    const arrays = ["succ", "fail", "last", "visits"].map((k) => state[k]);
    if (
      state.size !== this.size || !Number.isInteger(state.rng) ||
      !arrays.every((a) => Array.isArray(a) && a.length === this.size)
    ) {
      throw new Error(
        `curriculum: the saved state is not one of a curriculum over ${this.size} questions (was the dataset changed?).`,
      );
    }
    this.#rng = state.rng as number;
    this.#succ.set(arrays[0] as number[]);
    this.#fail.set(arrays[1] as number[]);
    this.#last.set(arrays[2] as number[]);
    this.#visits.set(arrays[3] as number[]);
  }

  /** Band occupancy and coverage as of `step`. */
  stats(step: number): CurriculumStats {
    let seen = 0;
    let inBand = 0;
    let pass = 0;
    for (let i = 0; i < this.size; i++) {
      if (!this.#visits[i]) continue;
      const e = this.estimate(i, step);
      seen++;
      if (e.inBand) inBand++;
      pass += e.mean;
    }
    return {
      band_occupancy: seen ? inBand / seen : 0,
      band_occupancy_sampled: this.#lastDrawInBand,
      visited_fraction: seen / this.size,
      mean_pass_rate: seen ? pass / seen : 0,
    };
  }
}

/** The shape of a GRPO prompt sampler (`PromptSampler` of the trainer), over rows of type `R`. */
export interface CurriculumSampler<R> {
  /** The next `count` rows (distinct within a call) for step `step`. */
  next(count: number, step: number): R[];
  /** Every group's row and its completions' rewards, after scoring. */
  observe(groups: { row: R; rewards: number[] }[], step: number): void;
  /** A JSON-safe state for checkpoints. */
  state(): Record<string, unknown>;
  /** Restore a state from `state()`. */
  restore(state: Record<string, unknown>): void;
  /** The curriculum's metrics ({@linkcode CurriculumStats}) as of the last step observed (merged into GRPO's per-step metrics). */
  metrics(): Record<string, number>;
  /** The underlying estimator. */
  curriculum: AdaptiveCurriculum;
}

/**
 * An adaptive curriculum over `rows` as a GRPO prompt sampler: `grpo(model, rows, { sampler:
 * curriculumSampler(rows, { numGenerations: 8, seed }) })`. Rows are the questions; duplicates (same
 * object) are one question.
 *
 * @example
 * ```ts
 * import { curriculumSampler } from "./curriculum.ts";
 * const rows = [{ id: "a" }, { id: "b" }, { id: "c" }];
 * const sampler = curriculumSampler(rows, { numGenerations: 2 });
 * const batch = sampler.next(2, 0);
 * sampler.observe(batch.map((row) => ({ row, rewards: [1, 0] })), 0);
 * console.assert(sampler.metrics().visited_fraction === 2 / 3);
 * ```
 */
export function curriculumSampler<R extends object>(
  rows: R[],
  options: CurriculumOptions = {},
): CurriculumSampler<R> {
  const curriculum = new AdaptiveCurriculum(rows.length, options);
  const index = new Map<R, number>();
  rows.forEach((r, i) => {
    if (!index.has(r)) index.set(r, i);
  });
  let lastStep = 0;
  return {
    curriculum,
    next: (count, step) => curriculum.next(count, step).map((i) => rows[i]),
    observe: (groups, step) => {
      for (const { row, rewards } of groups) {
        const i = index.get(row);
        if (i === undefined) {
          throw new Error("curriculum: observe() got a row that is not one of the curriculum's rows.");
        }
        curriculum.observe(i, rewards, step);
      }
      lastStep = step;
    },
    state: () => ({ ...curriculum.state(), lastStep }),
    restore: (state) => {
      curriculum.restore(state);
      lastStep = Number(state.lastStep ?? 0);
    },
    metrics: () => ({ ...curriculum.stats(lastStep + 1) }),
  };
}
