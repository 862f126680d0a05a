/**
 * Resumable training checkpoints, written atomically (a temporary folder renamed into place, so a crash
 * never leaves a half-written `checkpoint-N`).
 *
 * A checkpoint folder holds, as the Hugging Face Trainer's do:
 * - the weights: Hub layout (`config.json` + `model.safetensors`, float32, loadable by `loadModel`) for
 *   full training, or PEFT adapters (`adapter_model.safetensors` + `adapter_config.json`) for LoRA;
 * - `optimizer.safetensors`: AdamW's moments (`exp_avg.<name>`, `exp_avg_sq.<name>`);
 * - `trainer_state.json`: the update count, data position (epoch, batch), RNG state, the losses so far and
 *   any extra fields the trainer stores.
 *
 * @module
 */
import { tf } from "../util/deps.ts";
import { exists } from "../util/fs.ts";
import type { CausalLM } from "../model/types.ts";
import { saveModel } from "../model/load.ts";
import { readSafetensors, writeSafetensors } from "../model/safetensors.ts";
import type { AdamW } from "./optimizer.ts";
import { loraParams, saveLora } from "../model/lora.ts";
import { recoverInterrupted, replaceDirAtomic } from "../util/atomic.ts";

/** Where a run stands, stored in `trainer_state.json`. */
export interface TrainerState {
  /** Optimizer updates done. */
  step: number;
  /** Updates in the whole run. */
  totalSteps: number;
  /** Position of the next batch: epoch (0-based) and batch index within it. */
  dataPosition: { epoch: number; batch: number };
  /** The RNG state that orders the data (seed, and the epoch whose permutation is in use). */
  rng: { seed: number; epoch: number };
  /** Loss of every update so far. */
  losses: number[];
  /** Anything else the trainer wants back (learning rates, grad norms, options). */
  [key: string]: unknown;
}

/** Options of {@linkcode saveCheckpoint}. */
export interface SaveCheckpointOptions {
  /** The model whose weights (or adapters) are saved. */
  model: CausalLM;
  /** Its optimizer, whose moments are saved for an exact resume. */
  optimizer?: AdamW;
  /** Where the run stands. */
  state: TrainerState;
  /** Save only the LoRA adapters (default: when the model has adapters). */
  adaptersOnly?: boolean;
}

/**
 * Write a checkpoint to `dir` atomically (replacing an older one of the same name). Returns `dir`.
 *
 * @example
 * ```ts ignore
 * await saveCheckpoint("runs/sft/checkpoint-100", { model, optimizer, state });
 * ```
 */
export async function saveCheckpoint(dir: string, options: SaveCheckpointOptions): Promise<string> {
  const { model, optimizer, state } = options;
  const clean = dir.replace(/\/+$/, "");
  const adaptersOnly = options.adaptersOnly ?? Object.keys(model.lora).length > 0;
  // one crash-safe folder swap for weights, optimizer and state together (lib/util/atomic.ts)
  await replaceDirAtomic(clean, async (tmp) => {
    if (adaptersOnly) await saveLora(model, tmp);
    else await saveModel(model, tmp, { dtype: "float32" });
    if (optimizer) {
      const st = optimizer.state();
      const tensors: Record<string, { shape: number[]; data: Float32Array }> = {};
      for (const [name, t] of Object.entries(st.expAvg)) {
        tensors[`exp_avg.${name}`] = { shape: t.shape, data: (await t.data()) as Float32Array };
      }
      for (const [name, t] of Object.entries(st.expAvgSq)) {
        tensors[`exp_avg_sq.${name}`] = { shape: t.shape, data: (await t.data()) as Float32Array };
      }
      await writeSafetensors(`${tmp}/optimizer.safetensors`, tensors, {
        metadata: { step: String(st.step) },
      });
    }
    const full = { ...state, optimizerStep: optimizer?.stepCount ?? null, adaptersOnly };
    await Deno.writeTextFile(`${tmp}/trainer_state.json`, JSON.stringify(full, null, 2) + "\n");
  });
  return clean;
}

/** Options of {@linkcode loadCheckpoint}. */
export interface LoadCheckpointOptions {
  /** The model to restore the weights (or adapters) into; its adapters must already exist for LoRA. */
  model: CausalLM;
  /** The optimizer to restore (created over the same parameters). */
  optimizer?: AdamW;
}

/**
 * Restore weights (or adapters) and optimizer state from a checkpoint folder; returns its trainer state.
 */
export async function loadCheckpoint(dir: string, options: LoadCheckpointOptions): Promise<TrainerState> {
  const { model, optimizer } = options;
  await recoverInterrupted(dir);
  let state: TrainerState & { adaptersOnly?: boolean; optimizerStep?: number | null };
  try {
    state = JSON.parse(await Deno.readTextFile(`${dir}/trainer_state.json`));
  } catch (e) {
    throw new Error(`Checkpoint ${dir} has no readable trainer_state.json (${(e as Error).message}).`);
  }
  if (state.adaptersOnly) {
    const want = loraParams(model);
    if (Object.keys(want).length === 0) {
      throw new Error(
        `Checkpoint ${dir} holds LoRA adapters but the model has none: add them (same r / targets) first.`,
      );
    }
    const got = await readSafetensors(`${dir}/adapter_model.safetensors`);
    assignAll(want, got, `${dir}/adapter_model.safetensors`);
  } else {
    const files = [];
    for await (const e of Deno.readDir(dir)) {
      if (e.name.endsWith(".safetensors") && e.name.startsWith("model")) files.push(`${dir}/${e.name}`);
    }
    if (files.length === 0) throw new Error(`Checkpoint ${dir} has no model*.safetensors.`);
    const got: Record<string, { shape: number[]; data: Float32Array | Int32Array }> = {};
    for (const f of files) Object.assign(got, await readSafetensors(f));
    assignAll(model.params, got, dir);
  }
  if (optimizer) {
    const file = `${dir}/optimizer.safetensors`;
    if (!(await exists(file))) {
      throw new Error(`Checkpoint ${dir} has no optimizer.safetensors to resume from.`);
    }
    const t = await readSafetensors(file);
    const expAvg: Record<string, tf.Tensor> = {};
    const expAvgSq: Record<string, tf.Tensor> = {};
    for (const [k, v] of Object.entries(t)) {
      if (k.startsWith("exp_avg_sq.")) expAvgSq[k.slice(11)] = tf.tensor(v.data, v.shape, "float32");
      else if (k.startsWith("exp_avg.")) expAvg[k.slice(8)] = tf.tensor(v.data, v.shape, "float32");
    }
    try {
      optimizer.loadState({ step: Number(state.optimizerStep ?? state.step), expAvg, expAvgSq });
    } finally {
      tf.dispose([...Object.values(expAvg), ...Object.values(expAvgSq)]);
    }
  }
  return state;
}

function assignAll(
  vars: Record<string, tf.Variable>,
  got: Record<string, { shape: number[]; data: Float32Array | Int32Array }>,
  where: string,
): void {
  for (const [name, v] of Object.entries(vars)) {
    const t = got[name];
    if (!t) throw new Error(`Checkpoint ${where} lacks tensor ${name}.`);
    if (t.shape.join(",") !== v.shape.join(",")) {
      throw new Error(`Checkpoint ${where}: tensor ${name} has shape [${t.shape}], the model [${v.shape}].`);
    }
    tf.tidy(() => v.assign(tf.tensor(t.data, t.shape, "float32")));
  }
}

/** The `checkpoint-N` folder with the largest N under `outputDir` that is complete, or null. */
export async function latestCheckpoint(outputDir: string): Promise<string | null> {
  let best: [number, string] | null = null;
  try {
    // a checkpoint whose re-save was killed between its renames is put back first (lib/util/atomic.ts)
    for await (const e of Deno.readDir(outputDir)) {
      const aside = /^(checkpoint-\d+)\.old-\d+-[0-9a-f]+$/.exec(e.name);
      if (aside) await recoverInterrupted(`${outputDir}/${aside[1]}`);
    }
    for await (const e of Deno.readDir(outputDir)) {
      const m = /^checkpoint-(\d+)$/.exec(e.name);
      if (!e.isDirectory || !m) continue;
      if (!(await exists(`${outputDir}/${e.name}/trainer_state.json`))) continue;
      const n = Number(m[1]);
      if (!best || n > best[0]) best = [n, `${outputDir}/${e.name}`];
    }
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
  return best?.[1] ?? null;
}
