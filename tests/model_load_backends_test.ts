// loadModel on every backend: the parameters equal, bit for bit, the stored values decoded by the
// JavaScript reader, for F32, BF16 and F16 checkpoints (the `tensorflow` backend widens 16-bit
// floats natively at load; the others decode in JavaScript, BF16 in place).
import { tf } from "../lib/util/deps.ts";
import { loadModel, loadTensors, saveModel } from "../lib/model/load.ts";
import { readSafetensors, writeSafetensors } from "../lib/model/safetensors.ts";
import { allBackendsTest } from "./_backends.ts";
import { check, QWEN2_TINY } from "./_model_fixtures.ts";

/** A copy of qwen2-tiny with weights that are not bf16-exact, saved once per storage dtype. */
let saved: Promise<string> | null = null;
function savedCheckpoints(): Promise<string> {
  return saved ??= (async () => {
    const root = await Deno.makeTempDir({ prefix: "medthink-load-backends-" });
    const model = await loadModel(QWEN2_TINY, { backend: "cpu" });
    // Perturb every weight so that F32 -> BF16/F16 rounding happens, with values of both signs, a
    // few F16 subnormals and exact zeros.
    for (const [name, v] of Object.entries(model.params)) {
      const data = (await v.data()) as Float32Array;
      const next = new Float32Array(data.length);
      for (let i = 0; i < data.length; i++) {
        next[i] = i % 97 === 0 ? 0 : i % 89 === 0 ? 3e-6 * (i % 2 ? 1 : -1) : data[i] * (1 + 1e-3 * (i % 7));
      }
      const t = tf.tensor(next, v.shape);
      v.assign(t);
      t.dispose();
      check(name.length > 0, "named");
    }
    for (const dtype of ["float32", "bfloat16", "float16"]) {
      await saveModel(model, `${root}/${dtype}`, { dtype, copyAuxFiles: false });
    }
    model.dispose();
    return root;
  })();
}

allBackendsTest(
  "loadModel: parameters bit-identical to the decoded F32 / BF16 / F16 checkpoint",
  async (backend) => {
    const root = await savedCheckpoints();
    for (const dtype of ["float32", "bfloat16", "float16"]) {
      const stored = await readSafetensors(`${root}/${dtype}/model.safetensors`);
      const model = await loadModel(`${root}/${dtype}`, { backend });
      check(tf.getBackend() === backend, `backend ${backend} active`);
      for (const [name, t] of Object.entries(stored)) {
        const got = new Uint32Array(((await model.params[name].data()) as Float32Array).slice().buffer);
        const want = new Uint32Array((t.data as Float32Array).slice().buffer);
        check(got.length === want.length, `${dtype} ${name}: ${got.length} values, expected ${want.length}`);
        for (let i = 0; i < want.length; i++) {
          if (got[i] !== want[i]) {
            throw new Error(`${dtype} ${name}[${i}] on ${backend}: bits ${got[i]} !== ${want[i]}`);
          }
        }
      }
      model.dispose();
    }
  },
);

allBackendsTest("loadTensors: odd-sized, scalar and empty 16-bit tensors load exactly", async (backend) => {
  // The native path widens 16-bit values two per 32-bit word; odd counts take the JavaScript path.
  const dir = await Deno.makeTempDir({ prefix: "medthink-load-odd-" });
  const values = {
    odd: { shape: [3], data: new Float32Array([1.5, -2, 0.25]) },
    scalar: { shape: [], data: new Float32Array([-0.75]) },
    empty: { shape: [0, 4], data: new Float32Array(0) },
    even: { shape: [2, 3], data: new Float32Array([1, 2, 3, -4, 5e-3, 6]) },
  };
  const shapes = Object.fromEntries(Object.entries(values).map(([k, v]) => [k, v.shape]));
  for (const dtype of ["BF16", "F16", "F32"] as const) {
    await writeSafetensors(`${dir}/model.safetensors`, values, { dtype });
    const want = await readSafetensors(`${dir}/model.safetensors`);
    const got = await loadTensors(dir, shapes);
    for (const [name, t] of Object.entries(want)) {
      const g = (await got[name].data()) as Float32Array;
      check(
        JSON.stringify(got[name].shape) === JSON.stringify(t.shape) && g.length === t.data.length &&
          g.every((x, i) => x === t.data[i]),
        `${dtype} ${name} on ${backend}: [${Array.from(g)}] !== [${Array.from(t.data)}]`,
      );
    }
    tf.dispose(Object.values(got));
  }
  await Deno.remove(dir, { recursive: true });
});
