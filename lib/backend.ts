/**
 * Choosing and initialising the TensorFlow.js backend.
 *
 * - `tensorflow`: the TensorFlow C binding (`@tensorflow/tfjs-node-gpu` where installed, else
 *   `@tensorflow/tfjs-node`). Its normal install downloads a binary from a host these machines cannot
 *   reach; `deno task setup:tensorflow` builds it from a TensorFlow wheel instead.
 * - `wasm`: XNNPACK in WebAssembly, works anywhere with nothing to build.
 * - `webgpu`: Deno's WebGPU (Mesa's software Vulkan on machines without a GPU).
 * - `cpu`: plain JavaScript; the correctness reference.
 * - `auto`: `tensorflow` when its binding loads, else `wasm`.
 *
 * @module
 */
import { tf } from "./deps.ts";
import type { BackendName } from "./model/types.ts";

export type { BackendName };

const loaded = new Map<string, string | null>(); // backend -> null (ok) or the reason it failed

function envBackend(): string | undefined {
  try {
    return Deno.env.get("MEDTHINK_BACKEND") || undefined;
  } catch {
    return undefined; // no --allow-env
  }
}

async function loadTensorflow(): Promise<void> {
  // tfjs-node calls util.isNullOrUndefined, which Deno's node:util lacks.
  const util = await import("node:util");
  // deno-lint-ignore no-explicit-any
  const u = (util as any).default ?? util;
  if (!u.isNullOrUndefined) u.isNullOrUndefined = (x: unknown) => x === null || x === undefined;
  // deno-lint-ignore no-explicit-any
  const errors: any[] = [];
  for (const spec of ["npm:@tensorflow/tfjs-node-gpu@4.22.0", "npm:@tensorflow/tfjs-node@4.22.0"]) {
    try {
      await import(spec);
      if (tf.findBackend("tensorflow")) return;
    } catch (e) {
      errors.push(e);
    }
  }
  throw new Error(
    `The 'tensorflow' backend is not available (${
      String(errors.at(-1)?.message ?? errors.at(-1)).split("\n")[0]
    }). Build its binding with \`deno task setup:tensorflow\` (from a TensorFlow wheel), ` +
      `or install @tensorflow/tfjs-node with network access, or choose --backend wasm.`,
  );
}

async function loadBackend(name: Exclude<BackendName, "auto">): Promise<void> {
  if (tf.findBackend(name) || tf.engine().registryFactory[name]) return;
  switch (name) {
    case "cpu":
      return; // bundled with @tensorflow/tfjs
    case "wasm":
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
      await import("npm:@tensorflow/tfjs-backend-webgpu@4.22.0");
      return;
    }
    case "tensorflow":
      return await loadTensorflow();
    default:
      throw new Error(`Unknown backend '${name}': choose one of auto, tensorflow, wasm, webgpu, cpu.`);
  }
}

/** Whether a backend can be initialised here (loads it on the way). */
export async function backendAvailable(name: Exclude<BackendName, "auto">): Promise<boolean> {
  return (await backendUnavailableReason(name)) === null;
}

/** null when the backend loads here, else one sentence saying why not and how to get it. */
export async function backendUnavailableReason(name: Exclude<BackendName, "auto">): Promise<string | null> {
  if (!loaded.has(name)) {
    try {
      await loadBackend(name);
      loaded.set(name, null);
    } catch (e) {
      loaded.set(name, (e as Error).message);
    }
  }
  return loaded.get(name)!;
}

/**
 * Make `name` the active tfjs backend (default: `MEDTHINK_BACKEND`, else `auto`) and return its name.
 *
 * @example
 * ```ts
 * import { useBackend } from "./backend.ts";
 * const name = await useBackend("cpu");
 * ```
 */
export async function useBackend(name?: BackendName | string): Promise<string> {
  const wanted = (name ?? envBackend() ?? "auto") as BackendName;
  let chosen: Exclude<BackendName, "auto">;
  if (wanted === "auto") {
    chosen = (await backendAvailable("tensorflow")) ? "tensorflow" : "wasm";
  } else {
    if (!["tensorflow", "wasm", "webgpu", "cpu"].includes(wanted)) {
      throw new Error(`Unknown backend '${wanted}': choose one of auto, tensorflow, wasm, webgpu, cpu.`);
    }
    chosen = wanted;
  }
  const reason = await backendUnavailableReason(chosen);
  if (reason) throw new Error(reason);
  if (tf.getBackend() !== chosen) {
    const ok = await tf.setBackend(chosen);
    if (!ok) throw new Error(`The '${chosen}' backend failed to initialise.`);
  }
  await tf.ready();
  return chosen;
}
