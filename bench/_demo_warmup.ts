/**
 * The demo's format-only SFT warm-up for the bench scripts that start from it (demo_grpo_sweep.ts,
 * demo_update_direction.ts): trained once per setting and cached under /tmp, so that settings of what
 * follows are compared from the same start, and both scripts find each other's cache.
 *
 * @module
 */
import {
  type CausalLM,
  readSafetensors,
  type Row,
  sft,
  tf,
  type Tokenizer,
  writeSafetensors,
} from "../mod.ts";
import { labDemoTarget } from "../examples/_lab_demo.ts";

/** One warm-up setting. */
export interface DemoWarmup {
  seed: number;
  steps: number;
  batchSize: number;
  learningRate: number;
  /** `all`: each question once with each letter (the demo's); `random`: seeded random letters. */
  letters: "all" | "random";
  /** The think block's template (the demo's `compare` leaves the cache name unchanged). */
  think: string;
  /** The demo's own think block, for the cache name. */
  defaultThink: string;
}

/** Weights by name, as cached. */
export type Weights = Record<string, { data: Float32Array; shape: number[] }>;

/**
 * The warm-up's weights, from the cache or trained now on `examples` (the prompt, then
 * `labDemoTarget(think(row), letter)` with the loss on the target) and cached. The model holds them after.
 */
export async function demoWarmup(
  model: CausalLM,
  tok: Tokenizer,
  w: DemoWarmup,
  examples: { row: Row; letter: string }[],
  prompt: (row: Row) => string,
  think: (row: Row) => string,
): Promise<{ weights: Weights; cache: string; cached: boolean }> {
  const thinkTag = w.think === w.defaultThink ? "" : `_${w.think.replace(/[^\w]+/g, "-")}`;
  const cache =
    `/tmp/demo_warm_s${w.seed}_${w.steps}_${w.learningRate}_${model.backend}${thinkTag}_${w.letters}${w.batchSize}.safetensors`;
  try {
    const weights = await readSafetensors(cache) as unknown as Weights;
    restoreWeights(model, weights);
    return { weights, cache, cached: true };
  } catch {
    await sft(
      model,
      examples.map(({ row, letter }) => {
        const p = tok.encode(prompt(row));
        const c = tok.encode(labDemoTarget(think(row), letter));
        return { inputIds: [...p, ...c], labels: [...p.map(() => -100), ...c] };
      }),
      {
        maxSteps: w.steps,
        batchSize: w.batchSize,
        microBatchSize: w.batchSize,
        learningRate: w.learningRate,
        lrSchedulerType: "constant",
        warmupRatio: 0,
        weightDecay: 0,
        shuffle: false,
        seed: w.seed,
        padTokenId: tok.padTokenId,
        progress: false,
      },
    );
    const weights: Weights = Object.fromEntries(
      Object.entries(model.params).map((
        [k, v],
      ) => [k, { shape: v.shape, data: v.dataSync() as Float32Array }]),
    );
    await writeSafetensors(cache, weights);
    return { weights, cache, cached: false };
  }
}

/** Put cached weights back into the model. */
export function restoreWeights(model: CausalLM, weights: Weights): void {
  for (const [k, v] of Object.entries(model.params)) v.assign(tf.tensor(weights[k].data, v.shape));
}
