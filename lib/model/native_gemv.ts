/**
 * Single-row products in C for batch-1 decoding on the `tensorflow` backend (issue #20 item 4).
 *
 * Decoding one sequence reads every weight matrix once per token: memory-bound. TensorFlow's `MatMul`
 * reads float32 weights at ~15 GB/s on the 2-core test machine; the loop in `native/gemv.c` reads them at
 * ~19 GB/s and, for weights kept at 2 bytes (`weightsDtype: "bfloat16" | "float16"`), reads half the bytes
 * and widens them in registers, where TensorFlow would first write a float32 copy of each matrix.
 *
 * The loop needs the weights' memory. TensorFlow adopts a 64-byte-aligned JavaScript buffer without a copy
 * (tfjs-node's `createTensor` hands it to `TF_NewTensor`, which keeps aligned memory), so on the
 * `tensorflow` backend, when the library is built, the loader creates each weight from such a buffer
 * ({@linkcode hostFloatTensor}, {@linkcode hostHalfWords}) and this module remembers the buffer under the
 * tensor's `dataId`: no second copy of the weights exists. A view is only ever used for the `dataId` it was
 * made for: `Variable.assign` (optimizer updates, LoRA merges) gives the variable a new `dataId`, which has
 * no view, so products of an assigned weight go back to TensorFlow (never a stale host copy).
 *
 * Built by `deno task setup:tensorflow` ({@linkcode buildNativeGemv}: `cc -O3 -march=native` into
 * medthink's cache, keyed by the source and the processor), opened with `Deno.dlopen` when present. Off
 * (the TensorFlow path runs unchanged) when not built, on other backends, under a gradient tape, without
 * `--allow-ffi`, or with `MEDTHINK_NATIVE_GEMV=0`.
 *
 * @module
 */
import { tf } from "../util/deps.ts";
import { cacheRoot } from "../util/cache.ts";
import { env } from "../util/env.ts";
import { nativeBuildPath, permissionGranted } from "../util/native_build.ts";
import type { HalfWeight } from "./types.ts";

const SOURCE_URL = new URL("./native/gemv.c", import.meta.url);

/** `-z nodelete`: closing Deno's handle never unmaps code the pool's sleeping threads run. */
const FLAGS = ["-O3", "-march=native", "-shared", "-fPIC", "-pthread", "-Wl,-z,nodelete"];
const LIBS = ["-lm"];

const SYMBOLS = {
  medthink_gemv_threads: { parameters: [], result: "i32" },
  medthink_gemv_f32: { parameters: ["buffer", "buffer", "buffer", "i64", "i64"], result: "void" },
  medthink_gemv_half: { parameters: ["buffer", "buffer", "buffer", "i64", "i64", "i32"], result: "void" },
  medthink_widen: { parameters: ["buffer", "buffer", "i64", "i32"], result: "void" },
  medthink_gemv_add: {
    parameters: ["buffer", "buffer", "i32", "buffer", "buffer", "i64", "i64"],
    result: "void",
  },
  medthink_gemv3: {
    parameters: [
      ...["buffer", "i64"],
      ...["buffer", "i32", "buffer", "buffer", "i64"],
      ...["buffer", "i32", "buffer", "buffer", "i64"],
      ...["buffer", "i32", "buffer", "buffer", "i64"],
    ],
    result: "void",
  },
  medthink_glu: {
    parameters: ["buffer", "i64", "buffer", "i32", "buffer", "i32", "buffer", "i64"],
    result: "void",
  },
  medthink_rmsnorm: { parameters: ["buffer", "buffer", "f32", "buffer", "i64"], result: "void" },
} as const;

type Lib = Deno.DynamicLibrary<typeof SYMBOLS>;

/** The weight memory a tensor was made from: float32 values, or 2-byte codes (0 bfloat16, 1 float16). */
interface HostView {
  data: Float32Array | Uint16Array;
  kind: -1 | 0 | 1;
}

// Keyed by the tensor's dataId: a tensor that gets new data (Variable.assign) has no view any more.
const views = new WeakMap<object, HostView>();

let forced: boolean | null = null;
let located: { lib: string; reason: string } | undefined;
let open: Lib | null = null;

/**
 * Turn the native products on or off for this process (null: back to `MEDTHINK_NATIVE_GEMV`); the tests
 * and benchmarks compare both ways. Weights already loaded keep their host memory either way.
 *
 * @example
 * ```ts
 * import { setNativeGemv } from "./native_gemv.ts";
 * setNativeGemv(false);
 * setNativeGemv(null);
 * ```
 */
export function setNativeGemv(on: boolean | null): void {
  forced = on;
}

/** Where this source's build for this processor lives (whether or not it is built), or why nowhere. */
function libPath(): { lib: string; source: string; reason: string } {
  const none = (reason: string) => ({ lib: "", source: "", reason });
  if (Deno.build.os === "windows") return none("not built on Windows");
  if (SOURCE_URL.protocol !== "file:") return none(`the C source is not a local file (${SOURCE_URL.href})`);
  let dir: string, source: string;
  try {
    dir = `${cacheRoot()}/native`;
    source = Deno.readTextFileSync(SOURCE_URL);
  } catch (e) {
    return none((e as Error).message);
  }
  return { lib: nativeBuildPath(dir, "gemv", source, FLAGS), source, reason: "" };
}

/**
 * Compile `native/gemv.c` for this processor into medthink's cache (nothing to do when that build is
 * there). Returns the library's path, or why it could not be built (`lib` empty). Called by
 * `deno task setup:tensorflow`; the library itself never compiles at run time.
 *
 * @example
 * ```ts ignore
 * import { buildNativeGemv } from "./native_gemv.ts";
 * const { lib, reason } = buildNativeGemv();
 * console.log(lib || reason);
 * ```
 */
export function buildNativeGemv(): { lib: string; reason: string } {
  const p = libPath();
  if (!p.lib) return { lib: "", reason: p.reason };
  try {
    Deno.statSync(p.lib);
    return { lib: p.lib, reason: "" };
  } catch { /* not built yet */ }
  const cc = env("CC") ?? "cc";
  const dir = p.lib.slice(0, p.lib.lastIndexOf("/"));
  try {
    Deno.mkdirSync(dir, { recursive: true });
    // A name of its own per process: concurrent builds (parallel test files) each write, one renames last.
    const tmp = `${p.lib}.${Deno.pid}.${Date.now()}`;
    Deno.writeTextFileSync(`${tmp}.c`, p.source);
    const out = new Deno.Command(cc, {
      args: [...FLAGS, `${tmp}.c`, "-o", tmp, ...LIBS],
      stdout: "piped",
      stderr: "piped",
    })
      .outputSync();
    Deno.removeSync(`${tmp}.c`);
    if (!out.success) {
      const err = new TextDecoder().decode(out.stderr).trim().split("\n").slice(0, 3).join(" ");
      return { lib: "", reason: `${cc} failed: ${err}` };
    }
    Deno.renameSync(tmp, p.lib);
    located = undefined; // the next lookup finds it
    return { lib: p.lib, reason: "" };
  } catch (e) {
    return { lib: "", reason: `cannot build ${p.lib} with ${cc}: ${(e as Error).message}` };
  }
}

/** The built library's path, or why it is not used (looked up once per process). */
function locate(): { lib: string; reason: string } {
  if (located) return located;
  if (!permissionGranted({ name: "ffi" })) return located = { lib: "", reason: "no --allow-ffi" };
  const p = libPath();
  if (!p.lib) return located = { lib: "", reason: p.reason };
  try {
    Deno.statSync(p.lib);
  } catch {
    return located = { lib: "", reason: `not built (run \`deno task setup:tensorflow\`): ${p.lib}` };
  }
  return located = { lib: p.lib, reason: "" };
}

/**
 * Why the native products are off (empty when they are on): another backend, `MEDTHINK_NATIVE_GEMV=0`,
 * {@linkcode setNativeGemv}, or a library that is not built or cannot be loaded.
 *
 * @example
 * ```ts
 * import { nativeGemvReason } from "./native_gemv.ts";
 * console.log(nativeGemvReason() || "on");
 * ```
 */
export function nativeGemvReason(): string {
  if (tf.getBackend() !== "tensorflow") return `backend ${tf.getBackend()} (only tensorflow)`;
  if (forced === false) return "switched off (setNativeGemv)";
  if (forced === null && env("MEDTHINK_NATIVE_GEMV") === "0") return "MEDTHINK_NATIVE_GEMV=0";
  const be = tf.backend() as unknown as Partial<TfNode>;
  if (typeof be.binding?.createTensor !== "function" || typeof be.createOutputTensor !== "function") {
    return "the tensorflow backend is not tfjs-node's binding";
  }
  return locate().reason;
}

/**
 * The library, open until the current synchronous run of JavaScript ends: `Deno.test`'s resource
 * sanitizer counts a library left open as a leak of whichever test opened it, so it is closed from a
 * microtask (one open per decoding step: a lookup of the already loaded library, which `-z nodelete`
 * keeps mapped).
 */
function lib(): Lib | null {
  if (open) return open;
  const { lib: path } = locate();
  if (!path) return null;
  try {
    open = Deno.dlopen(path, SYMBOLS);
  } catch (e) {
    located = { lib: "", reason: `cannot load ${path}: ${(e as Error).message}` };
    return null;
  }
  const handle = open;
  queueMicrotask(() => {
    handle.close();
    if (open === handle) open = null;
  });
  return open;
}

/** The parts of tfjs-node's backend used here. */
interface TfNode {
  binding: {
    TF_FLOAT: number;
    TF_INT32: number;
    createTensor(shape: number[], dtype: number, values: Float32Array | Int32Array): number;
  };
  createOutputTensor(meta: { id: number; shape: number[]; dtype: number }): tf.Tensor;
  tensorMap: { has(dataId: object): boolean };
}

function on(): TfNode | null {
  return nativeGemvReason() === "" ? tf.backend() as unknown as TfNode : null;
}

/** `n` float32 values (or `n` 16-bit codes with `bytesPer` 2) in a buffer whose start is 64-byte aligned,
 * the alignment at which TensorFlow adopts memory instead of copying it. */
function alignedBuffer(bytes: number): { buffer: ArrayBuffer; offset: number } {
  const buffer = new ArrayBuffer(bytes + 64);
  const addr = Number(Deno.UnsafePointer.value(Deno.UnsafePointer.of(new Uint8Array(buffer))));
  return { buffer, offset: (64 - (addr % 64)) % 64 };
}

/**
 * A float32 tensor `shape` made from host memory that the native products can read, filled from
 * `source`: float32 values, or 2-byte codes (`Uint16Array`, `kind` bfloat16 / float16) widened in C. null
 * where the native products are off (the caller makes its tensor as before).
 *
 * @example
 * ```ts ignore
 * const w = hostFloatTensor(new Float32Array(8), [2, 4]);
 * ```
 */
export function hostFloatTensor(
  source: Float32Array | Uint16Array,
  shape: number[],
  kind: "bfloat16" | "float16" = "bfloat16",
): tf.Tensor | null {
  const be = on();
  if (!be) return null;
  const n = shape.reduce((a, d) => a * d, 1);
  if (source.length !== n || n === 0) return null;
  const { buffer, offset } = alignedBuffer(n * 4);
  const data = new Float32Array(buffer, offset, n);
  if (source instanceof Float32Array) data.set(source);
  else {
    const l = lib();
    if (!l) return null;
    l.symbols.medthink_widen(source, data, BigInt(n), kind === "float16" ? 1 : 0);
  }
  const b = be.binding;
  const t = be.createOutputTensor({ id: b.createTensor(shape, b.TF_FLOAT, data), shape, dtype: b.TF_FLOAT });
  views.set(t.dataId, { data, kind: -1 });
  return t;
}

/**
 * The packed int32 words of a 2-byte weight (two 16-bit codes per word, as `HalfWeight.packed`) as a
 * tensor made from host memory the native products can read, copied from `words` (which may be a reused
 * read buffer). null where the native products are off.
 *
 * @example
 * ```ts ignore
 * const packed = hostHalfWords(new Int32Array(4), "bfloat16");
 * ```
 */
export function hostHalfWords(words: Int32Array, dtype: "bfloat16" | "float16"): tf.Tensor1D | null {
  const be = on();
  if (!be || words.length === 0) return null;
  const { buffer, offset } = alignedBuffer(words.length * 4);
  const data = new Int32Array(buffer, offset, words.length);
  data.set(words);
  const b = be.binding;
  const shape = [words.length];
  const t = be.createOutputTensor({ id: b.createTensor(shape, b.TF_INT32, data), shape, dtype: b.TF_INT32 });
  views.set(t.dataId, {
    data: new Uint16Array(buffer, offset, words.length * 2),
    kind: dtype === "float16" ? 1 : 0,
  });
  return t as tf.Tensor1D;
}

/** The host view of `t`'s current data when a product of one row by it can run natively now. */
function viewFor(x: tf.Tensor, t: tf.Tensor, be: TfNode): HostView | undefined {
  if (x.rank !== 2 || x.shape[0] !== 1 || x.dtype !== "float32") return undefined;
  // deno-lint-ignore no-explicit-any
  if ((tf.engine() as any).isTapeOn()) return undefined; // the caller's tf op records the gradient
  const v = views.get(t.dataId);
  return v && be.tensorMap.has(t.dataId) ? v : undefined;
}

let calls = 0;

/**
 * Products the native loop has computed in this process (the tests check that it ran).
 *
 * @example
 * ```ts
 * import { nativeGemvCalls } from "./native_gemv.ts";
 * console.log(nativeGemvCalls());
 * ```
 */
export function nativeGemvCalls(): number {
  return calls;
}

function rowProduct(be: TfNode, x: tf.Tensor, v: HostView, N: number, K: number): tf.Tensor2D | null {
  const l = lib();
  if (!l) return null;
  calls++;
  const xs = x.dataSync() as Float32Array; // K floats copied out of TensorFlow
  const { buffer, offset } = alignedBuffer(N * 4);
  const y = new Float32Array(buffer, offset, N);
  if (v.kind < 0) l.symbols.medthink_gemv_f32(xs, v.data, y, BigInt(N), BigInt(K));
  else l.symbols.medthink_gemv_half(xs, v.data, y, BigInt(N), BigInt(K), v.kind);
  const b = be.binding;
  return be.createOutputTensor({
    id: b.createTensor([1, N], b.TF_FLOAT, y),
    shape: [1, N],
    dtype: b.TF_FLOAT,
  }) as tf.Tensor2D;
}

/**
 * `x Wᵀ` for one row `x` `[1, K]` and a float32 `W` `[N, K]` made by {@linkcode hostFloatTensor}, in C;
 * null where that does not apply (the native products off, more rows, a gradient tape recording, a weight
 * without host memory, e.g. one assigned since loading): the caller's TensorFlow path runs.
 *
 * @example
 * ```ts
 * import { tf } from "../util/deps.ts";
 * import { nativeRowMatMulBT } from "./native_gemv.ts";
 * console.log(nativeRowMatMulBT(tf.ones([1, 4]) as tf.Tensor2D, tf.ones([2, 4]) as tf.Tensor2D)); // null
 * ```
 */
export function nativeRowMatMulBT(x: tf.Tensor2D, w: tf.Tensor2D): tf.Tensor2D | null {
  const be = on();
  if (!be || w.rank !== 2 || w.dtype !== "float32" || x.shape[1] !== w.shape[1]) return null;
  const v = viewFor(x, w, be);
  if (!v || v.kind !== -1 || v.data.length !== w.size) return null;
  return rowProduct(be, x, v, w.shape[0], w.shape[1]);
}

/**
 * `x widen(W)ᵀ` for one row `x` `[1, K]` and a 2-byte weight `W` `[N, K]` whose words were made by
 * {@linkcode hostHalfWords}: the codes are read as stored and widened in registers (no float32 copy of
 * `W`); null where that does not apply (see {@linkcode nativeRowMatMulBT}).
 *
 * @example
 * ```ts
 * import { tf } from "../util/deps.ts";
 * import { nativeHalfRowMatMulBT } from "./native_gemv.ts";
 * const w = { packed: tf.zeros([4], "int32") as tf.Tensor1D, shape: [2, 4], dtype: "bfloat16" as const };
 * console.log(nativeHalfRowMatMulBT(tf.ones([1, 4]) as tf.Tensor2D, w)); // null
 * ```
 */
export function nativeHalfRowMatMulBT(x: tf.Tensor2D, w: HalfWeight): tf.Tensor2D | null {
  const be = on();
  if (!be || w.shape.length !== 2 || x.shape[1] !== w.shape[1]) return null;
  const v = viewFor(x, w.packed, be);
  const want = w.dtype === "float16" ? 1 : 0;
  if (!v || v.kind !== want || v.data.length !== w.shape[0] * w.shape[1]) return null;
  return rowProduct(be, x, v, w.shape[0], w.shape[1]);
}

// ---------------------------------------------------------------------------------------------
// A whole decoder layer's products for one decoding row

/** A decoder layer's tensors, as the model holds them (a matrix: a float32 tensor or a 2-byte weight). */
export interface NativeLayerTensors {
  inputNorm: tf.Tensor;
  postNorm: tf.Tensor;
  q: tf.Tensor | HalfWeight;
  k: tf.Tensor | HalfWeight;
  v: tf.Tensor | HalfWeight;
  o: tf.Tensor | HalfWeight;
  gate: tf.Tensor | HalfWeight;
  up: tf.Tensor | HalfWeight;
  down: tf.Tensor | HalfWeight;
  qBias?: tf.Tensor;
  kBias?: tf.Tensor;
  vBias?: tf.Tensor;
}

interface Matrix {
  view: HostView;
  N: number;
  K: number;
}

/** A layer whose matrices all have host memory now (see {@linkcode nativeLayer}). */
export interface NativeLayer {
  readonly tensors: NativeLayerTensors;
  readonly m: Record<"q" | "k" | "v" | "o" | "gate" | "up" | "down", Matrix>;
}

function matrixOf(t: tf.Tensor | HalfWeight, be: TfNode): Matrix | null {
  if (t instanceof tf.Tensor) {
    const v = views.get(t.dataId);
    if (!v || v.kind !== -1 || t.rank !== 2 || v.data.length !== t.size || !be.tensorMap.has(t.dataId)) {
      return null;
    }
    return { view: v, N: t.shape[0], K: t.shape[1] as number };
  }
  const v = views.get(t.packed.dataId);
  const kind = t.dtype === "float16" ? 1 : 0;
  if (!v || v.kind !== kind || t.shape.length !== 2 || !be.tensorMap.has(t.packed.dataId)) return null;
  if (v.data.length !== t.shape[0] * t.shape[1]) return null;
  return { view: v, N: t.shape[0], K: t.shape[1] };
}

/**
 * The native plan of one decoder layer for a decoding step of one row, or null where it does not apply
 * (the native products off, a gradient tape recording, a matrix without host memory, e.g. one assigned
 * since loading, or shapes that do not chain): then the caller runs the layer's tf ops. Looked up per step,
 * so an assignment between steps is seen at the next one.
 *
 * @example
 * ```ts ignore
 * const plan = nativeLayer({ inputNorm, postNorm, q, k, v, o, gate, up, down, qBias, kBias, vBias });
 * ```
 */
export function nativeLayer(tensors: NativeLayerTensors): NativeLayer | null {
  const be = on();
  // deno-lint-ignore no-explicit-any
  if (!be || (tf.engine() as any).isTapeOn()) return null;
  const m: Partial<NativeLayer["m"]> = {};
  for (const key of ["q", "k", "v", "o", "gate", "up", "down"] as const) {
    const x = matrixOf(tensors[key], be);
    if (!x) return null;
    m[key] = x;
  }
  const { q, k, v, o, gate, up, down } = m as NativeLayer["m"];
  const H = q.K;
  if (k.K !== H || v.K !== H || o.N !== H || gate.K !== H || up.K !== H || gate.N !== up.N) return null;
  if (down.N !== H || down.K !== gate.N) return null;
  return { tensors, m: m as NativeLayer["m"] };
}

function floats(t: tf.Tensor | undefined): Float32Array | null {
  return t ? t.dataSync() as Float32Array : null; // small (norms, biases), read fresh every step
}

function hostArray(n: number): Float32Array {
  const { buffer, offset } = alignedBuffer(n * 4);
  return new Float32Array(buffer, offset, n);
}

/**
 * RMSNorm of the host row `h` with the layer's input norm, then q, k, v with their biases, in C: the
 * attention's inputs `[Nq]`, `[Nk]`, `[Nv]` as host arrays.
 */
export function nativeAttentionInputs(
  layer: NativeLayer,
  h: Float32Array,
  eps: number,
): { q: Float32Array; k: Float32Array; v: Float32Array } {
  const l = lib()!;
  const { q, k, v } = layer.m;
  const H = q.K;
  const xn = hostArray(H);
  l.symbols.medthink_rmsnorm(h, floats(layer.tensors.inputNorm)!, eps, xn, BigInt(H));
  const out = { q: hostArray(q.N), k: hostArray(k.N), v: hostArray(v.N) };
  const t = layer.tensors;
  l.symbols.medthink_gemv3(
    xn,
    BigInt(H),
    ...[q.view.data, q.view.kind, floats(t.qBias), out.q, BigInt(q.N)] as const,
    ...[k.view.data, k.view.kind, floats(t.kBias), out.k, BigInt(k.N)] as const,
    ...[v.view.data, v.view.kind, floats(t.vBias), out.v, BigInt(v.N)] as const,
  );
  calls += 3;
  return out;
}

/**
 * The rest of the layer after attention, in C: `mid = h + o(attn)`, then
 * `mid + down(silu(gate(n)) * up(n))` with `n` the post-attention RMSNorm of `mid`; a new host row.
 */
export function nativeLayerOutput(
  layer: NativeLayer,
  h: Float32Array,
  attn: Float32Array,
  eps: number,
): Float32Array {
  const l = lib()!;
  const { o, gate, up, down } = layer.m;
  const H = o.N;
  const mid = hostArray(H);
  l.symbols.medthink_gemv_add(attn, o.view.data, o.view.kind, h, mid, BigInt(H), BigInt(o.K));
  const xn = hostArray(H);
  l.symbols.medthink_rmsnorm(mid, floats(layer.tensors.postNorm)!, eps, xn, BigInt(H));
  const act = hostArray(gate.N);
  l.symbols.medthink_glu(
    xn,
    BigInt(H),
    gate.view.data,
    gate.view.kind,
    up.view.data,
    up.view.kind,
    act,
    BigInt(gate.N),
  );
  const out = hostArray(H);
  l.symbols.medthink_gemv_add(act, down.view.data, down.view.kind, mid, out, BigInt(H), BigInt(down.K));
  calls += 4;
  return out;
}

/** A float32 tensor of `shape` that adopts the host array `data` (the native layer's outputs). */
export function hostTensor(data: Float32Array, shape: number[]): tf.Tensor {
  const be = tf.backend() as unknown as TfNode;
  const b = be.binding;
  return be.createOutputTensor({ id: b.createTensor(shape, b.TF_FLOAT, data), shape, dtype: b.TF_FLOAT });
}
