/**
 * The table of architectures `loadModel` reads: each model file adds its own loader for its
 * `model_type` (as transformers.js's registry does), so the loader special-cases none of them and no
 * model file imports the loader.
 *
 * @module
 */
import type { CausalLM, ModelConfig } from "./types.ts";

/** Options of {@linkcode loadModel}. */
export interface LoadModelOptions {
  /** tfjs backend (`auto`, `tensorflow`, `wasm`, `webgpu`, `cpu`); default `MEDTHINK_BACKEND`, else `auto`. */
  backend?: string;
  /**
   * How to keep the weights that are not trained: `float32` (default), or `bfloat16` / `float16` at 2
   * bytes each, widened to float32 per layer as it runs (every linear weight of the decoder layers and
   * of the vision tower; embeddings, head, norms and biases stay float32). Such weights cannot be
   * trained: use LoRA (or inference) with them.
   */
  weightsDtype?: "float32" | "bfloat16" | "float16";
}

/** Builds a model of one `model_type` from a checkpoint folder and its parsed config (backend already selected). */
export type ArchitectureLoader = (
  dir: string,
  config: ModelConfig,
  options: LoadModelOptions,
) => Promise<CausalLM>;

const ARCHITECTURES = new Map<string, ArchitectureLoader>();

/**
 * Register (or replace) the loader for a `model_type`, e.g. the Qwen2.5-VL model:
 * `registerArchitecture("qwen2_5_vl", loadQwen25VL)`.
 */
export function registerArchitecture(modelType: string, loader: ArchitectureLoader): void {
  ARCHITECTURES.set(modelType, loader);
}

/** The loader registered for a `model_type`, or undefined. */
export function architectureFor(modelType: string): ArchitectureLoader | undefined {
  return ARCHITECTURES.get(modelType);
}

/** Every registered `model_type`, for error messages. */
export function registeredArchitectures(): string[] {
  return [...ARCHITECTURES.keys()].sort();
}
