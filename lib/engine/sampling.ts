/**
 * The sampling settings every function that generates takes (`grpo`, and `probe` / `evaluate` as they
 * align to it): one name per idea, TRL's (`num_generations` -> `numGenerations` for the sample count).
 *
 * @module
 */

/** How completions are sampled; each function documents its own defaults (e.g. `GRPO_DEFAULTS`). */
export interface SamplingOptions {
  /** Completions sampled per prompt (GRPO's group size, the probe's n). */
  numGenerations?: number;
  /** Sampling temperature (0 = greedy where a function allows it; GRPO needs > 0). */
  temperature?: number;
  /** Nucleus mass (1 = off). */
  topP?: number;
  /** Top-k (0 = off). */
  topK?: number;
  /** Maximum completion length in tokens. */
  maxNewTokens?: number;
}
