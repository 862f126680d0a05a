// Shared helpers of the model tests: fixture paths, golden values, closeness checks.
import type { tf } from "../lib/util/deps.ts";

/** Fixture folder of the qwen2-tiny checkpoint. */
export const QWEN2_TINY = new URL("./fixtures/qwen2-tiny", import.meta.url).pathname.replace(
  /\/$/,
  "",
);
/** Fixture folder of the qwen25vl-tiny checkpoint. */
export const QWEN25VL_TINY = new URL("./fixtures/qwen25vl-tiny", import.meta.url).pathname.replace(
  /\/$/,
  "",
);

/** The golden values of qwen2-tiny. */
export interface Golden {
  input_ids: number[][];
  logits: number[][][];
  padded: { input_ids: number[][]; attention_mask: number[][]; logits: number[][][] };
  greedy_new_tokens: number[][];
}

let golden: Golden | null = null;
/** golden.json of qwen2-tiny (read once). */
export function loadGolden(): Golden {
  return golden ??= JSON.parse(Deno.readTextFileSync(`${QWEN2_TINY}/golden.json`));
}

// deno-lint-ignore no-explicit-any
let trainGolden: any = null;
/**
 * train_golden.json of qwen2-tiny (read once): the float64 references of the training tests (keys `sft`,
 * `adamw`, `grpo`, `lora`, `picked_tensors`). Untyped unless the caller names the part it reads.
 */
// deno-lint-ignore no-explicit-any
export function loadTrainGolden<T = any>(): T {
  return trainGolden ??= JSON.parse(Deno.readTextFileSync(`${QWEN2_TINY}/train_golden.json`));
}

/** Largest |a - b| over positions where `mask` (per [b][t]) is 1 (all when absent). */
export function maxAbsDiff(a: number[][][], b: number[][][], mask?: number[][]): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    for (let t = 0; t < a[i].length; t++) {
      if (mask && mask[i][t] !== 1) continue;
      for (let v = 0; v < a[i][t].length; v++) m = Math.max(m, Math.abs(a[i][t][v] - b[i][t][v]));
    }
  }
  return m;
}

/** Throw unless `cond`. */
export function check(cond: unknown, msg: string): asserts cond {
  if (!cond) throw new Error(msg);
}

/** Deep equality via JSON. */
export function checkEqual(a: unknown, b: unknown, msg = "values differ"): void {
  const ja = JSON.stringify(a), jb = JSON.stringify(b);
  if (ja !== jb) throw new Error(`${msg}: ${ja.slice(0, 300)} !== ${jb.slice(0, 300)}`);
}

/** `fn` must reject with an error whose message contains every one of `parts`. */
export async function checkRejects(fn: () => Promise<unknown>, parts: string[]): Promise<string> {
  try {
    await fn();
  } catch (e) {
    const msg = (e as Error).message;
    for (const p of parts) check(msg.includes(p), `error message "${msg}" does not mention "${p}"`);
    return msg;
  }
  throw new Error(`expected an error mentioning ${parts.join(", ")}`);
}

/** Read and dispose a tensor. */
export async function take<T = number[][][]>(t: tf.Tensor): Promise<T> {
  const a = await t.array();
  t.dispose();
  return a as T;
}

/** Copy a fixture folder to a fresh temp dir (writable). */
export async function copyFixture(src: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "medthink-model-" });
  for await (const e of Deno.readDir(src)) {
    if (e.isFile) await Deno.copyFile(`${src}/${e.name}`, `${dir}/${e.name}`);
  }
  return dir;
}
