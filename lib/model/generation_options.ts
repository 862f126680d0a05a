/**
 * The one check of generation options (temperature, top-p, top-k, new-token count, sample count,
 * seeds), shared by `model.generate`, the engines and so the CLI, the API and the server: an
 * out-of-range value is an error naming the option (and its CLI flag), never a silent fallback
 * (a negative temperature is not greedy decoding, a negative token count is not "none").
 *
 * @module
 */
import { checkOptionKeys } from "../util/options.ts";

/** The generation options {@linkcode checkGenerationOptions} looks at (each optional). */
export interface GenerationOptionValues {
  /** Sampling temperature: a finite number >= 0 (0 = greedy). */
  temperature?: number;
  /** Nucleus mass in (0, 1]. */
  topP?: number;
  /** Top-k: an integer >= 0 (0 = off). */
  topK?: number;
  /** New tokens per sample: a positive integer. */
  maxNewTokens?: number;
  /** Samples per prompt: a positive integer. */
  numSamples?: number;
  /** Base seed: a finite integer. */
  seed?: number;
}

function flag(key: string): string {
  return "--" + key.replace(/[A-Z]/g, (c) => "-" + c.toLowerCase());
}

/**
 * Throw when a generation option is out of range: one sentence naming the option, its CLI flag, where it
 * was given and the allowed range. Absent (`undefined`) options are not checked (their defaults hold).
 *
 * @example
 * ```ts
 * import { checkGenerationOptions } from "./generation_options.ts";
 * checkGenerationOptions({ temperature: 0.7, topP: 0.9, maxNewTokens: 64 }, "probe options"); // fine
 * let message = "";
 * try {
 *   checkGenerationOptions({ temperature: -1 }, "probe options");
 * } catch (e) {
 *   message = (e as Error).message;
 * }
 * console.assert(message.includes("temperature (--temperature)"));
 * ```
 */
export function checkGenerationOptions(options: GenerationOptionValues, where: string): void {
  const rules: [keyof GenerationOptionValues, (v: number) => boolean, string][] = [
    ["temperature", (v) => Number.isFinite(v) && v >= 0, "a finite number >= 0 (0 = greedy)"],
    ["topP", (v) => Number.isFinite(v) && v > 0 && v <= 1, "a number in (0, 1]"],
    ["topK", (v) => Number.isInteger(v) && v >= 0, "an integer >= 0 (0 = off)"],
    ["maxNewTokens", (v) => Number.isSafeInteger(v) && v >= 1, "a positive integer"],
    ["numSamples", (v) => Number.isSafeInteger(v) && v >= 1, "a positive integer"],
    ["seed", (v) => Number.isSafeInteger(v), "an integer"],
  ];
  for (const [key, ok, what] of rules) {
    const v = options[key];
    if (v === undefined) continue;
    if (typeof v !== "number" || !ok(v)) {
      throw new Error(
        `${where}: ${key} (${flag(key)}) must be ${what}, got ${JSON.stringify(v) ?? String(v)}.`,
      );
    }
  }
}

/** Every key `model.generate` takes (`GenerateOptions` with its `ForwardOptions`). */
export const GENERATE_OPTION_KEYS: readonly string[] = [
  "attentionMask",
  "positionIds",
  "pixelValues",
  "imageGridThw",
  "maxNewTokens",
  "temperature",
  "topP",
  "topK",
  "numSamples",
  "eosTokenIds",
  "seed",
  "seeds",
  "padTokenId",
];

/**
 * The check `model.generate` runs on its options: no unknown key (a misspelt `temprature` is an error
 * naming the closest known key, not a silent default) and every value in range
 * ({@linkcode checkGenerationOptions}).
 *
 * @example
 * ```ts
 * import { checkGenerateOptions } from "./generation_options.ts";
 * let message = "";
 * try {
 *   checkGenerateOptions({ temprature: 0 } as never);
 * } catch (e) {
 *   message = (e as Error).message;
 * }
 * console.assert(message.includes("temperature"));
 * ```
 */
export function checkGenerateOptions(options: GenerationOptionValues & Record<string, unknown>): void {
  checkOptionKeys(options, GENERATE_OPTION_KEYS, "generate options");
  checkGenerationOptions(options, "generate options");
}
