/**
 * LoRA with PEFT's semantics and file layout.
 *
 * A target linear `y = W x + b` becomes `y = W x + b + (alpha / r) * B (A x)`, with `A` `[r, in]` initialised
 * kaiming-uniform (a = sqrt(5), i.e. U(-1/sqrt(in), 1/sqrt(in))) and `B` `[out, r]` zeros, so training starts
 * from the base model. The model's linears read `model.lora` (keyed by module name) while `model.loraEnabled`.
 * Saved as PEFT saves: `adapter_model.safetensors` with keys `base_model.model.<module>.lora_A.weight` /
 * `lora_B.weight`, and `adapter_config.json`.
 *
 * @module
 */
import { tf } from "../util/deps.ts";
import type { CausalLM, LoraAdapter } from "./types.ts";
import { Rng } from "./rng.ts";
import { readSafetensors, writeSafetensors } from "./safetensors.ts";
import { recoverInterrupted, replaceDirAtomic } from "../util/atomic.ts";

/** Options of {@linkcode addLora}. */
export interface LoraOptions {
  /** Rank. Default 8 (PEFT). */
  r?: number;
  /** Scaling numerator: the update is scaled by alpha / r. Default 8 (PEFT). */
  alpha?: number;
  /**
   * Modules to adapt: a list of names, each matching a module whose name equals it or ends with `.<name>`
   * (PEFT), or one string used as a regular expression over the whole module name. Default `["q_proj", "v_proj"]`.
   */
  targetModules?: string[] | string;
  /** Initial weights by PEFT name (`base_model.model.<module>.lora_A.weight`); the rest are initialised. */
  weights?: Record<string, number[][] | tf.Tensor>;
  /** Seed of the A initialisation. Default 0. */
  seed?: number;
  /** Mark the base weights not trainable (`trainable = false`). Default true. */
  freezeBase?: boolean;
}

/** PEFT's `adapter_config.json`, the fields this toolkit reads and writes. */
export interface LoraConfig {
  /** Rank (`r`). */
  r: number;
  /** Scaling numerator (`lora_alpha`): updates are scaled by loraAlpha / r. */
  loraAlpha: number;
  /** `target_modules`: module-name suffixes, or one regular expression. */
  targetModules: string[] | string;
  /** `base_model_name_or_path`. */
  baseModelNameOrPath?: string | null;
}

const PREFIX = "base_model.model.";

/** The PEFT tensor name of a module's A or B matrix. */
export function loraTensorName(module: string, which: "A" | "B"): string {
  return `${PREFIX}${module}.lora_${which}.weight`;
}

function matches(module: string, targets: string[] | string): boolean {
  if (typeof targets === "string") return new RegExp(`^(?:${targets})$`).test(module);
  return targets.some((t) => module === t || module.endsWith(`.${t}`));
}

/**
 * Names of the linear modules (2-D `.weight` params) a LoRA config would adapt: those of the language
 * model only. A Qwen2.5-VL vision tower (`visual.*`) is never adapted, since its forward pass does not
 * read adapters (freeze it or train it whole).
 */
export function loraTargets(model: CausalLM, targetModules: string[] | string): string[] {
  const out: string[] = [];
  const shapes: [string, number[]][] = [
    ...Object.entries(model.params).map(([n, p]): [string, number[]] => [n, p.shape]),
    ...Object.entries(model.half ?? {}).map(([n, h]): [string, number[]] => [n, h.shape]),
  ];
  for (const [name, shape] of shapes) {
    if (!name.endsWith(".weight") || shape.length !== 2 || name.startsWith("visual.")) continue;
    const module = name.slice(0, -".weight".length);
    if (matches(module, targetModules)) out.push(module);
  }
  return out;
}

function kaimingUniform(rows: number, cols: number, rng: Rng): tf.Tensor2D {
  const bound = 1 / Math.sqrt(cols);
  const data = new Float32Array(rows * cols);
  for (let i = 0; i < data.length; i++) data[i] = (2 * rng.next() - 1) * bound;
  return tf.tensor2d(data, [rows, cols]);
}

function givenWeight(
  weights: Record<string, number[][] | tf.Tensor> | undefined,
  module: string,
  which: "A" | "B",
  shape: [number, number],
): tf.Tensor2D | undefined {
  const name = loraTensorName(module, which);
  const w = weights?.[name] ?? weights?.[`${PREFIX}${module}.lora_${which}.default.weight`];
  if (w === undefined) return undefined;
  const t = (w instanceof tf.Tensor ? w.clone() : tf.tensor2d(w)) as tf.Tensor2D;
  if (t.shape.join(",") !== shape.join(",")) {
    t.dispose();
    throw new Error(`LoRA weight ${name} has shape [${t.shape}], expected [${shape}].`);
  }
  return t.toFloat();
}

/**
 * Add LoRA adapters to the model's target modules (fills `model.lora`, enables it, freezes the base).
 * Returns the trainable adapter variables by PEFT name.
 *
 * @example
 * ```ts ignore
 * const trainable = addLora(model, { r: 16, alpha: 32, targetModules: ["q_proj", "k_proj", "v_proj", "o_proj"] });
 * ```
 */
export function addLora(model: CausalLM, options: LoraOptions = {}): Record<string, tf.Variable> {
  const r = options.r ?? 8;
  const alpha = options.alpha ?? 8;
  const targets = options.targetModules ?? ["q_proj", "v_proj"];
  if (!Number.isInteger(r) || r < 1) throw new Error(`LoRA rank r must be a positive integer, got ${r}.`);
  const modules = loraTargets(model, targets);
  if (modules.length === 0) {
    throw new Error(`LoRA targetModules ${JSON.stringify(targets)} match no linear module of the model.`);
  }
  if (options.weights) {
    const known = new Set(modules.flatMap((m) => [loraTensorName(m, "A"), loraTensorName(m, "B")]));
    for (const k of Object.keys(options.weights)) {
      if (!known.has(k.replace(".default.weight", ".weight"))) {
        throw new Error(
          `LoRA weight ${k} belongs to no targeted module (targets ${JSON.stringify(targets)}).`,
        );
      }
    }
  }
  const rng = new Rng(options.seed ?? 0);
  for (const module of modules) {
    const [out, inp] =
      (model.params[`${module}.weight`]?.shape ?? model.half?.[`${module}.weight`]?.shape) as [
        number,
        number,
      ];
    const old = model.lora[module];
    if (old) tf.dispose([old.A, old.B]);
    const a = givenWeight(options.weights, module, "A", [r, inp]) ?? kaimingUniform(r, inp, rng);
    const b = givenWeight(options.weights, module, "B", [out, r]) ?? tf.zeros([out, r]) as tf.Tensor2D;
    model.lora[module] = { A: tf.variable(a, true), B: tf.variable(b, true), scale: alpha / r };
    tf.dispose([a, b]);
  }
  model.loraEnabled = true;
  if (options.freezeBase ?? true) { for (const p of Object.values(model.params)) p.trainable = false; }
  return loraParams(model);
}

/** The adapter variables of `model.lora` by PEFT name (A and B of each module). */
export function loraParams(model: CausalLM): Record<string, tf.Variable> {
  const out: Record<string, tf.Variable> = {};
  for (const [module, ad] of Object.entries(model.lora)) {
    out[loraTensorName(module, "A")] = ad.A;
    out[loraTensorName(module, "B")] = ad.B;
  }
  return out;
}

/** r, alpha and target module suffixes as the adapters on the model say (for `adapter_config.json`). */
export function loraConfigOf(model: CausalLM): LoraConfig {
  const entries = Object.entries(model.lora);
  if (entries.length === 0) throw new Error("The model has no LoRA adapters (call addLora first).");
  const r = entries[0][1].A.shape[0];
  const loraAlpha = entries[0][1].scale * r;
  const targetModules = [...new Set(entries.map(([m]) => m.split(".").at(-1)!))].sort();
  return { r, loraAlpha, targetModules };
}

/**
 * Write the adapters as PEFT does: `<dir>/adapter_model.safetensors` + `<dir>/adapter_config.json`,
 * crash-safely ({@linkcode replaceDirAtomic}: after a kill at any point `dir` holds the complete old or
 * new adapter). Other files (not folders) already in `dir` are carried over.
 *
 * @example
 * ```ts ignore
 * await saveLora(model, "out/adapter", { baseModelNameOrPath: "Qwen/Qwen2.5-VL-3B-Instruct" });
 * ```
 */
export async function saveLora(
  model: CausalLM,
  dir: string,
  options: { baseModelNameOrPath?: string } = {},
): Promise<void> {
  const cfg = loraConfigOf(model);
  const tensors: Record<string, { shape: number[]; data: Float32Array }> = {};
  for (const [name, v] of Object.entries(loraParams(model))) {
    tensors[name] = { shape: v.shape, data: (await v.data()) as Float32Array };
  }
  const config = {
    alpha_pattern: {},
    auto_mapping: null,
    base_model_name_or_path: options.baseModelNameOrPath ?? model.dir ?? null,
    bias: "none",
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    layers_pattern: null,
    layers_to_transform: null,
    lora_alpha: cfg.loraAlpha,
    lora_dropout: 0.0,
    modules_to_save: null,
    peft_type: "LORA",
    r: cfg.r,
    rank_pattern: {},
    revision: null,
    target_modules: cfg.targetModules,
    task_type: "CAUSAL_LM",
    use_dora: false,
    use_rslora: false,
  };
  // the adapter weights and their config are replaced together: a kill mid-save leaves the old pair or the new
  await replaceDirAtomic(dir, async (tmp) => {
    await writeSafetensors(`${tmp}/adapter_model.safetensors`, tensors);
    await Deno.writeTextFile(`${tmp}/adapter_config.json`, JSON.stringify(config, null, 2) + "\n");
    await carryOver(dir, tmp, ["adapter_model.safetensors", "adapter_config.json"]);
  });
}

/** Copy the files of `from` (if it exists) that `to` lacks and are not in `skip`: a save keeps what it does not replace. */
async function carryOver(from: string, to: string, skip: string[]): Promise<void> {
  try {
    for await (const e of Deno.readDir(from)) {
      if (!e.isFile || skip.includes(e.name)) continue;
      try {
        await Deno.lstat(`${to}/${e.name}`);
      } catch {
        await Deno.copyFile(`${from}/${e.name}`, `${to}/${e.name}`);
      }
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
}

/**
 * Load PEFT adapters (`adapter_config.json` + `adapter_model.safetensors`) onto the model.
 * Returns the adapter variables by PEFT name.
 */
export async function loadLora(
  model: CausalLM,
  dir: string,
  options: { freezeBase?: boolean } = {},
): Promise<Record<string, tf.Variable>> {
  await recoverInterrupted(dir);
  let cfg: Record<string, unknown>;
  try {
    cfg = JSON.parse(await Deno.readTextFile(`${dir}/adapter_config.json`));
  } catch (e) {
    throw new Error(`Cannot read ${dir}/adapter_config.json (${(e as Error).message}).`);
  }
  if (cfg.peft_type !== undefined && cfg.peft_type !== "LORA") {
    throw new Error(`${dir}/adapter_config.json has peft_type '${cfg.peft_type}'; only LORA is supported.`);
  }
  if (cfg.use_dora || cfg.use_rslora) {
    throw new Error(`${dir}/adapter_config.json asks for DoRA or rsLoRA, which are not supported.`);
  }
  const loaded = await readSafetensors(`${dir}/adapter_model.safetensors`);
  const weights: Record<string, tf.Tensor> = {};
  for (const [name, t] of Object.entries(loaded)) weights[name] = tf.tensor(t.data, t.shape, "float32");
  try {
    return addLora(model, {
      r: Number(cfg.r),
      alpha: Number(cfg.lora_alpha),
      targetModules: cfg.target_modules as string[] | string,
      weights,
      freezeBase: options.freezeBase,
    });
  } finally {
    tf.dispose(Object.values(weights));
  }
}

/**
 * Fold the adapters into the base weights (`W += (alpha / r) * B A`), remove them and unfreeze the base:
 * the model then computes the same function without LoRA, ready for a Hub-layout export.
 */
export function mergeLora(model: CausalLM): void {
  for (const [module, ad] of Object.entries(model.lora) as [string, LoraAdapter][]) {
    const w = model.params[`${module}.weight`];
    if (!w) {
      throw new Error(
        `mergeLora: ${module}.weight is kept at 2 bytes (weightsDtype); load the model with weightsDtype float32 to merge.`,
      );
    }
    tf.tidy(() => w.assign(w.add(tf.matMul(ad.B, ad.A).mul(ad.scale))));
    tf.dispose([ad.A, ad.B]);
  }
  model.lora = {};
  for (const p of Object.values(model.params)) p.trainable = true;
}

/** Remove the adapters without merging (and unfreeze the base). */
export function removeLora(model: CausalLM): void {
  for (const ad of Object.values(model.lora)) tf.dispose([ad.A, ad.B]);
  model.lora = {};
  for (const p of Object.values(model.params)) p.trainable = true;
}
