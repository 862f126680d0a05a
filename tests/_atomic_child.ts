/**
 * Test helper run as a child process by tests/atomic_test.ts: one save of version V to DEST, which the
 * `MEDTHINK_FAULT_AT` hook may stop at a named step (as a kill would).
 *
 * Usage: `deno run -A tests/_atomic_child.ts KIND DEST V` with KIND one of `checkpoint` (writeCheckpoint
 * of two small tensors), `model` (saveModel of medthink-tiny with every weight offset by V), `lora`
 * (saveLora) or `trainer` (saveCheckpoint with LoRA adapters and an optimizer).
 *
 * @module
 */
import { writeCheckpoint } from "../lib/model/safetensors.ts";

const [kind, dest, v] = Deno.args;
const version = Number(v);

if (kind === "checkpoint") {
  await writeCheckpoint(dest, { version }, [
    { name: "a", shape: [3], data: () => new Float32Array([version, version, version]) },
    { name: "b", shape: [2], data: () => new Float32Array([version, -version]) },
  ], { maxShardBytes: 12 }); // two shards plus an index: more files, more points to stop at
} else {
  const { tf } = await import("../lib/util/deps.ts");
  const { loadModel, saveModel } = await import("../lib/model/load.ts");
  const { addLora, loraParams, saveLora } = await import("../lib/model/lora.ts");
  const { saveCheckpoint } = await import("../lib/train/checkpoint.ts");
  const { adamw } = await import("../lib/train/optimizer.ts");
  const model = await loadModel("medthink-tiny", { backend: "cpu" });
  const norm = model.params["model.norm.weight"];
  norm.assign(tf.fill(norm.shape, version));
  if (kind === "model") await saveModel(model, dest);
  else {
    addLora(model, { r: 2, targetModules: ["q_proj"], seed: version });
    for (const ad of Object.values(model.lora)) ad.B.assign(tf.fill(ad.B.shape, version));
    if (kind === "lora") await saveLora(model, dest);
    else {
      const optimizer = adamw({ params: loraParams(model) });
      await saveCheckpoint(dest, {
        model,
        optimizer,
        state: {
          step: version,
          totalSteps: 9,
          dataPosition: { epoch: 0, batch: 0 },
          rng: { seed: 0, epoch: 0 },
          losses: [],
        },
      });
    }
  }
}
