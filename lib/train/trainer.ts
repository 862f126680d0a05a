/**
 * What `sft` and `grpo` share, so that a reader who learned one already knows the other: the result
 * shape, the step-logger hook, the `config.json` written next to a run's outputs, the check of option
 * values, and where a resumed run finds its checkpoint.
 *
 * @module
 */
import { checkOptionKeys } from "../util/options.ts";
import { latestCheckpoint } from "./checkpoint.ts";

/**
 * One step's metrics under TRL's snake_case names (`loss`, `grad_norm`, `learning_rate`, `epoch`, `step`,
 * and each trainer's own: `reward`, `kl`, `entropy`...). One JSON line of `metrics.jsonl`.
 */
export interface StepMetrics {
  /** Step index (1-based): an optimizer update for `sft`, a generation batch for `grpo`. */
  step: number;
  /** Epochs of the data consumed, as a fraction (TRL's `epoch`). */
  epoch: number;
  /** The training loss of the step. */
  loss: number;
  /** Learning rate of the step's (last) update. */
  learning_rate: number;
  /** Global gradient norm before clipping. */
  grad_norm: number;
  /** Any further metric of the trainer. */
  [key: string]: number;
}

/**
 * Receives every step's metrics (TensorBoard writers, evaluation hooks, a curriculum that watches the
 * reward): `sft` and `grpo` call `logStep` after each step, in order, and `close` once at the end.
 */
export interface StepLogger {
  /** Called after every step with its metrics (also the line written to `metrics.jsonl`). */
  logStep(metrics: StepMetrics): void | Promise<void>;
  /** Called once when the run ends (normally or not). */
  close?(): void | Promise<void>;
}

/** What `sft` and `grpo` return: the same shape, plain data. */
export interface TrainResult<M extends StepMetrics = StepMetrics> {
  /** Steps done so far (including those before a resume). */
  steps: number;
  /** Steps the full run has. */
  totalSteps: number;
  /** The metrics of every step (including those before a resume). */
  history: M[];
  /** Wall-clock seconds of this call. */
  seconds: number;
  /** Rows the run trains on (`sft`: examples left after tokenizing; `grpo`: dataset rows). */
  numExamples: number;
  /** Files written under `outputDir`: `config` (config.json), `metrics` (metrics.jsonl), and the trainer's own. */
  files: Record<string, string>;
  /** The last checkpoint written (or resumed from), if any. */
  checkpointDir: string | null;
  /** The Hub-layout export (`sft` with `exportDir`), if any. */
  exportDir: string | null;
}

/**
 * A JSON-safe description of a resolved configuration: numbers, strings, booleans, arrays and plain
 * objects as they are; functions as `"[function name]"`, class instances (tokenizers, models, engines)
 * as `"[ClassName]"`, models as `"[model qwen2 <dir>]"`, tensors as `"[Tensor float32 2x3]"`, non-finite
 * numbers as strings. Nothing is dropped.
 *
 * @example
 * ```ts
 * import { describeConfig } from "./trainer.ts";
 * const d = describeConfig({ learningRate: 1e-5, onStep: function log() {} }) as Record<string, unknown>;
 * console.assert(d.onStep === "[function log]");
 * ```
 */
export function describeConfig(value: unknown, depth = 0): unknown {
  if (value === undefined) return null;
  if (value === null || typeof value === "string" || typeof value === "boolean") return value;
  if (typeof value === "number") return Number.isFinite(value) ? value : String(value);
  if (typeof value === "bigint") return String(value);
  if (typeof value === "function") return `[function ${value.name || "anonymous"}]`;
  if (typeof value !== "object") return `[${typeof value}]`;
  if (depth > 6) return "[nested too deep]";
  if (Array.isArray(value)) return value.map((v) => describeConfig(v, depth + 1));
  const v = value as Record<string, unknown>;
  if (typeof v.dtype === "string" && Array.isArray(v.shape) && typeof v.dispose === "function") {
    return `[Tensor ${v.dtype} ${(v.shape as number[]).join("x")}]`;
  }
  // A model (a reference model in grpo's options): named by its architecture, never its weights.
  if (typeof v.generate === "function" && v.params && typeof v.config === "object") {
    const config = v.config as { modelType?: string };
    return `[model ${config.modelType ?? "unknown"}${typeof v.dir === "string" ? ` ${v.dir}` : ""}]`;
  }
  const proto = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) {
    return `[${proto?.constructor?.name ?? "object"}]`;
  }
  // Plain objects (settings, or an interface implemented by an object literal) are described member by member.
  return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, describeConfig(x, depth + 1)]));
}

/**
 * Write `<outputDir>/config.json`: the run's resolved configuration (`describeConfig`), so the outputs
 * say which settings made them. Returns the file's path.
 */
export async function writeRunConfig(
  outputDir: string,
  trainer: string,
  config: Record<string, unknown>,
): Promise<string> {
  const path = `${outputDir}/config.json`;
  const body = { trainer, ...(describeConfig(config) as Record<string, unknown>) };
  await Deno.writeTextFile(path, JSON.stringify(body, null, 2) + "\n");
  return path;
}

/**
 * The checkpoint folder a run resumes from: `resumeFrom` itself, or with `true` the latest
 * `checkpoint-N` under `outputDir` (null when there is none: the run starts fresh).
 */
export async function resumeDir(
  resumeFrom: string | boolean | undefined,
  outputDir: string | undefined,
  where: string,
): Promise<string | null> {
  if (!resumeFrom) return null;
  if (resumeFrom !== true) return resumeFrom;
  if (!outputDir) throw new Error(`${where}: resumeFrom true needs an outputDir to look for checkpoints in.`);
  return await latestCheckpoint(outputDir);
}

/** Range checks of numeric options: each throws naming the key, its value and what it must be. */
export const check = {
  /** An integer >= `min`. */
  int(where: string, key: string, value: number, min: number): void {
    if (!(Number.isInteger(value) && value >= min)) {
      throw new Error(`${where}: ${key} must be an integer >= ${min}, got ${value}.`);
    }
  },
  /** A number within [lo, hi]. */
  range(where: string, key: string, value: number, lo: number, hi = Infinity): void {
    if (!(typeof value === "number" && value >= lo && value <= hi)) {
      const span = hi === Infinity ? `>= ${lo}` : `within [${lo}, ${hi}]`;
      throw new Error(`${where}: ${key} must be a number ${span}, got ${value}.`);
    }
  },
  /** One of the listed values. */
  oneOf(where: string, key: string, value: unknown, allowed: readonly unknown[]): void {
    if (!allowed.includes(value)) {
      throw new Error(`${where}: ${key} must be one of ${allowed.join(", ")}, got ${value}.`);
    }
  },
};

/** Fill `undefined` keys of `options` from `defaults` (an explicit `undefined` means "the default"). */
export function withDefaults<T extends object>(defaults: T, options: Partial<T>): T {
  const out = { ...defaults } as Record<string, unknown>;
  for (const [k, v] of Object.entries(options)) if (v !== undefined) out[k] = v;
  return out as T;
}

/**
 * `checkOptionKeys` for a trainer's options, with the keys renamed when `sft` and `grpo` took one
 * vocabulary named explicitly: an old key is an error that names its new name.
 */
export function checkTrainerKeys(
  options: object,
  defaults: Record<string, unknown>,
  renamed: Record<string, string>,
  where: string,
): void {
  for (const key of Object.keys(options)) {
    if (key in defaults || !(key in renamed)) continue;
    throw new Error(`Unknown key '${key}' in ${where}: did you mean '${renamed[key]}'? (renamed)`);
  }
  checkOptionKeys(options, defaults, where);
}
