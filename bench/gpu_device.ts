/**
 * medthink's side of the GPU benchmark (bench/gpu_device.sh runs it on a machine with a GPU, which has no
 * Deno and no registry: bench/gpu_build.sh packs Deno, this file's npm dependencies and an import map that
 * leaves out packages this code path never calls). It writes the benchmark checkpoint and runs each
 * workload exactly as bench/medthink_bench.ts does on the CPU.
 *
 *   gpu_device.ts checkpoint DIR [--smoke]  # bench/random_checkpoint.ts: Qwen2.5-0.5B shapes, random weights
 *   gpu_device.ts run --model DIR --workload decode --batch 8 --backend webgpu
 *   gpu_device.ts adapter                   # what Deno's WebGPU sees (name, limits), as JSON
 *
 * @module
 */
import { ensureBenchModel, SMOKE_CONFIG_OVERRIDES } from "./random_checkpoint.ts";
import { main as runWorkload } from "./medthink_bench.ts";
import { tf } from "../lib/util/deps.ts";
import { backendAvailable } from "../lib/model/backend.ts";

async function describeAdapter(): Promise<Record<string, unknown>> {
  // deno-lint-ignore no-explicit-any
  const gpu = (globalThis as any).navigator?.gpu;
  const adapter = gpu ? await gpu.requestAdapter({ powerPreference: "high-performance" }) : null;
  if (!adapter) return { adapter: null };
  const info = adapter.info ?? {};
  const limits: Record<string, number> = {};
  for (const k of ["maxBufferSize", "maxStorageBufferBindingSize", "maxComputeWorkgroupStorageSize"]) {
    limits[k] = adapter.limits[k];
  }
  return {
    vendor: info.vendor,
    architecture: info.architecture,
    device: info.device,
    description: info.description,
    features: [...adapter.features].sort(),
    limits,
  };
}

// TFJS_FLAGS='{"WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE": 64}': tfjs flags to try without rebuilding anything.
const flags = Deno.env.get("TFJS_FLAGS");
if (flags) {
  await backendAvailable("webgpu"); // registers the WEBGPU_* flags (setting an unregistered one throws)
  for (const [k, v] of Object.entries(JSON.parse(flags))) tf.env().set(k, v as number | boolean);
}

const [command, ...rest] = Deno.args;
switch (command) {
  case "checkpoint": {
    const t0 = performance.now();
    const dir = await ensureBenchModel(rest[0], rest.includes("--smoke") ? SMOKE_CONFIG_OVERRIDES : {});
    console.log(`${dir} (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
    break;
  }
  case "run":
    await runWorkload(rest);
    break;
  case "adapter":
    console.log("ADAPTER " + JSON.stringify(await describeAdapter()));
    break;
  default:
    console.error("usage: gpu_device.ts checkpoint DIR | run <bench/medthink_bench.ts flags> | adapter");
    Deno.exit(2);
}
