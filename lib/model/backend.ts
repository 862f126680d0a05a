/**
 * Choosing and initialising the TensorFlow.js backend.
 *
 * - `tensorflow`: the TensorFlow C binding: `@tensorflow/tfjs-node-gpu` where its binding is installed
 *   (or `MEDTHINK_TFJS_GPU=1`), else `@tensorflow/tfjs-node`. Its normal install downloads a binary
 *   from a host many machines cannot reach; `deno task setup:tensorflow` builds it from a TensorFlow
 *   wheel instead.
 * - `wasm`: XNNPACK in WebAssembly, works anywhere with nothing to build.
 * - `webgpu`: Deno's WebGPU (Mesa's software Vulkan, llvmpipe, on machines without a GPU). Under Deno,
 *   synchronous reads (`dataSync`, `arraySync`) fail on this backend: read with `await t.data()`.
 * - `cpu`: plain JavaScript; the correctness reference.
 * - `auto`: `tensorflow` when its binding loads, else `wasm`.
 *
 * The choice comes from the argument, else `MEDTHINK_BACKEND`, else `auto`.
 *
 * @module
 */
import { tf } from "../util/deps.ts";
import { env } from "../util/env.ts";
import { isFileSync as fileExists } from "../util/fs.ts";
import type { BackendName } from "./types.ts";
import { installSmallMatMul } from "./webgpu_matmul.ts";

export type { BackendName };

/** Options of {@linkcode useBackend}. */
export interface UseBackendOptions {
  /**
   * Threads for TensorFlow's intra-op pool on the `tensorflow` backend (default: `MEDTHINK_THREADS`,
   * else TensorFlow's own choice, one per core). Read once, when the binding loads; an explicit
   * `TF_NUM_INTRAOP_THREADS` in the environment wins.
   */
  threads?: number;
}

/** The concrete backends, in the order they are listed to users. */
export const BACKEND_NAMES = ["tensorflow", "wasm", "webgpu", "cpu"] as const;

const loaded = new Map<string, string | null>(); // backend -> null (ok) or the reason it failed
const TFJS_VERSION = "4.22.0";

function setEnvDefault(name: string, value: string): void {
  try {
    if (!Deno.env.get(name)) Deno.env.set(name, value);
  } catch { /* no --allow-env: TensorFlow keeps its defaults */ }
}

/** Deno's npm cache folder, without spawning `deno info` (same rules as Deno: DENO_DIR, else per OS). */
function denoNpmCache(): string | undefined {
  const dir = env("DENO_DIR");
  if (dir) return `${dir}/npm`;
  const home = env("HOME");
  switch (Deno.build.os) {
    case "darwin":
      return home && `${home}/Library/Caches/deno/npm`;
    case "windows": {
      const local = env("LOCALAPPDATA");
      return local && `${local}\\deno\\npm`;
    }
    default: {
      const xdg = env("XDG_CACHE_HOME") ?? (home && `${home}/.cache`);
      return xdg && `${xdg}/deno/npm`;
    }
  }
}

/**
 * Whether to try `@tensorflow/tfjs-node-gpu` first: `MEDTHINK_TFJS_GPU=1`/`0` decides; otherwise only when
 * its native binding exists in the project's `node_modules/` or Deno's npm cache. (Importing the package
 * without its binding registers all its kernels and then fails: that costs a download and hundreds of
 * duplicate-kernel warnings for nothing.)
 */
function wantTfjsNodeGpu(): boolean {
  const forced = env("MEDTHINK_TFJS_GPU");
  if (forced !== undefined) return forced === "1" || forced.toLowerCase() === "true";
  const rel = "lib/napi-v8/tfjs_binding.node";
  const places = [`${Deno.cwd()}/node_modules/@tensorflow/tfjs-node-gpu/${rel}`];
  const cache = denoNpmCache();
  if (cache) places.push(`${cache}/registry.npmjs.org/@tensorflow/tfjs-node-gpu/${TFJS_VERSION}/${rel}`);
  try {
    return places.some(fileExists);
  } catch {
    return false; // Deno.cwd() needs --allow-read
  }
}

/** Undo the kernel registrations a failed tfjs-node(-gpu) import left behind, so a retry is clean. */
function unregisterTensorflowKernels(): void {
  if (tf.findBackend("tensorflow")) return;
  for (const k of tf.getKernelsForBackend("tensorflow")) tf.unregisterKernel(k.kernelName, "tensorflow");
}

function firstLine(e: unknown): string {
  return String((e as Error)?.message ?? e).split("\n")[0].trim();
}

async function loadTensorflow(threads?: number): Promise<void> {
  // tfjs-node calls util.isNullOrUndefined, which Deno's node:util lacks.
  const util = await import("node:util");
  // deno-lint-ignore no-explicit-any
  const u = (util as any).default ?? util;
  if (!u.isNullOrUndefined) u.isNullOrUndefined = (x: unknown) => x === null || x === undefined;
  // TensorFlow reads these once, when the library loads. Level 1 hides its INFO banner (CPU features,
  // oneDNN) but keeps warnings and errors.
  setEnvDefault("TF_CPP_MIN_LOG_LEVEL", "1");
  const n = threads ?? Number(env("MEDTHINK_THREADS") ?? NaN);
  if (Number.isInteger(n) && n > 0) {
    setEnvDefault("TF_NUM_INTRAOP_THREADS", String(n));
    // Eager ops run one at a time: a second inter-op pool would only compete for the same cores.
    setEnvDefault("TF_NUM_INTEROP_THREADS", "1");
  }
  const reasons: string[] = [];
  if (wantTfjsNodeGpu()) {
    // Built from parts so that Deno does not fetch the GPU package for every project that imports us.
    const gpu = ["npm:@tensorflow", `tfjs-node-gpu@${TFJS_VERSION}`].join("/");
    try {
      await import(gpu);
      if (tf.findBackend("tensorflow")) return;
      reasons.push("@tensorflow/tfjs-node-gpu loaded but registered no 'tensorflow' backend");
    } catch (e) {
      reasons.push(`@tensorflow/tfjs-node-gpu: ${firstLine(e)}`);
    }
    unregisterTensorflowKernels();
  }
  try {
    // deno-lint-ignore no-import-prefix -- full specifier: users import us by URL, without our deno.json
    await import("npm:@tensorflow/tfjs-node@4.22.0");
    if (tf.findBackend("tensorflow")) return;
    reasons.push("@tensorflow/tfjs-node loaded but registered no 'tensorflow' backend");
  } catch (e) {
    reasons.push(`@tensorflow/tfjs-node: ${firstLine(e)}`);
  }
  unregisterTensorflowKernels();
  throw new Error(
    `The 'tensorflow' backend is not available (${reasons.join("; ")}): build its binding with ` +
      "`deno task setup:tensorflow` (from a tensorflow-cpu wheel), or let the package's own install " +
      "script download it (`deno install --allow-scripts=npm:@tensorflow/tfjs-node@4.22.0`, needs access " +
      "to storage.googleapis.com), or choose --backend wasm.",
  );
}

async function loadBackend(name: string, opts: UseBackendOptions): Promise<void> {
  if (tf.findBackend(name) || tf.engine().registryFactory[name]) return;
  switch (name) {
    case "cpu":
      return; // bundled with @tensorflow/tfjs
    case "wasm":
      // deno-lint-ignore no-import-prefix -- full specifier: users import us by URL, without our deno.json
      await import("npm:@tensorflow/tfjs-backend-wasm@4.22.0");
      return;
    case "webgpu": {
      // deno-lint-ignore no-explicit-any
      const gpu = (globalThis as any).navigator?.gpu;
      const adapter = gpu ? await gpu.requestAdapter() : null;
      if (!adapter) {
        throw new Error(
          "The 'webgpu' backend is not available: no WebGPU adapter was found. On a machine without a GPU " +
            "install Mesa's software Vulkan (`apt-get install mesa-vulkan-drivers`), or choose --backend wasm.",
        );
      }
      // deno-lint-ignore no-import-prefix -- full specifier: users import us by URL, without our deno.json
      await import("npm:@tensorflow/tfjs-backend-webgpu@4.22.0");
      installSmallMatMul(); // decode-sized products (lib/model/webgpu_matmul.ts); MEDTHINK_WEBGPU_MATMUL=tfjs: off
      return;
    }
    case "tensorflow":
      return await loadTensorflow(opts.threads);
    default:
      throw new Error(`Unknown backend '${name}': choose one of auto, ${BACKEND_NAMES.join(", ")}.`);
  }
}

/**
 * Whether a backend can be initialised here (loads it on the way).
 *
 * @example
 * ```ts
 * import { backendAvailable } from "./backend.ts";
 * if (await backendAvailable("webgpu")) console.log("WebGPU works here");
 * ```
 */
export async function backendAvailable(name: Exclude<BackendName, "auto">): Promise<boolean> {
  return (await backendUnavailableReason(name)) === null;
}

/**
 * null when the backend loads here, else one sentence saying why not and how to get it.
 *
 * @example
 * ```ts
 * import { backendUnavailableReason } from "./backend.ts";
 * console.log((await backendUnavailableReason("tensorflow")) ?? "tensorflow works");
 * ```
 */
export async function backendUnavailableReason(
  name: Exclude<BackendName, "auto">,
  opts: UseBackendOptions = {},
): Promise<string | null> {
  if (!loaded.has(name)) {
    try {
      await loadBackend(name, opts);
      loaded.set(name, null);
    } catch (e) {
      loaded.set(name, (e as Error).message);
    }
  }
  return loaded.get(name)!;
}

/**
 * Make `name` the active tfjs backend (default: `MEDTHINK_BACKEND`, else `auto`) and return its name.
 * `auto` is `tensorflow` when its binding loads, else `wasm`. Asking for a backend that cannot load
 * here throws one sentence saying how to get it.
 *
 * @example
 * ```ts
 * import { useBackend } from "./backend.ts";
 * const name = await useBackend("cpu");
 * ```
 */
export async function useBackend(name?: BackendName | string, opts: UseBackendOptions = {}): Promise<string> {
  const wanted = String(name ?? env("MEDTHINK_BACKEND") ?? "auto");
  let chosen: Exclude<BackendName, "auto">;
  if (wanted === "auto") {
    chosen = (await backendUnavailableReason("tensorflow", opts)) === null ? "tensorflow" : "wasm";
  } else if ((BACKEND_NAMES as readonly string[]).includes(wanted)) {
    chosen = wanted as Exclude<BackendName, "auto">;
  } else {
    throw new Error(`Unknown backend '${wanted}': choose one of auto, ${BACKEND_NAMES.join(", ")}.`);
  }
  const reason = await backendUnavailableReason(chosen, opts);
  if (reason) throw new Error(reason);
  if (tf.getBackend() !== chosen) {
    const ok = await tf.setBackend(chosen);
    if (!ok) throw new Error(`The '${chosen}' backend failed to initialise.`);
  }
  await tf.ready();
  return chosen;
}

/**
 * On `webgpu`, move a tensor made from JS values to the GPU now, through `queue.writeBuffer`, instead of
 * at its first use. tfjs-webgpu uploads such a tensor through a buffer mapped at creation: under Deno on
 * an NVIDIA H200 that path moved the 0.5B checkpoint's 2 GB at about 25 MB/s (the first forward pass took
 * 84 s, the second 0.45 s), while `writeBuffer` moved 128 MiB in 68 ms (bench/RESULTS.md, GPU section).
 * Does nothing on other backends and for tensors already on the GPU. Returns `t`.
 *
 * @example
 * ```ts
 * import { tf } from "../util/deps.ts";
 * import { uploadNow } from "./backend.ts";
 * const w = uploadNow(tf.tensor([1, 2, 3, 4], [2, 2]));
 * ```
 */
export function uploadNow<T extends tf.Tensor>(t: T): T {
  if (tf.getBackend() !== "webgpu") return t;
  // deno-lint-ignore no-explicit-any
  const backend = tf.backend() as any;
  const data = backend.tensorMap?.get(t.dataId);
  const values = data?.values;
  if (!data || data.resource != null || !values || !backend.bufferManager || !backend.device) return t;
  if (!(values instanceof Float32Array || values instanceof Int32Array)) return t; // e.g. strings
  if (values.byteLength === 0) return t; // Deno's writeBuffer panics on an empty write; nothing to move
  // The usage tfjs-webgpu gives every tensor buffer, so that the buffer pool can reuse it afterwards.
  // deno-lint-ignore no-explicit-any
  const usage = (globalThis as any).GPUBufferUsage;
  const buffer = backend.bufferManager.acquireBuffer(
    values.byteLength,
    usage.STORAGE | usage.COPY_SRC | usage.COPY_DST,
  );
  backend.device.queue.writeBuffer(buffer, 0, values.buffer, values.byteOffset, values.byteLength);
  data.resource = buffer;
  data.values = null;
  return t;
}
