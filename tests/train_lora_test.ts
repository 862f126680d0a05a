/** LoRA: PEFT initialisation and names, target matching, save/load files, merge. */
import { deepStrictEqual as assertEquals, ok as assert, throws as assertThrows } from "node:assert/strict";
import { tf } from "../lib/util/deps.ts";
import { loadModel } from "../lib/model/load.ts";
import { readSafetensors } from "../lib/model/safetensors.ts";
import {
  addLora,
  loadLora,
  loraParams,
  loraTargets,
  mergeLora,
  removeLora,
  saveLora,
} from "../lib/model/lora.ts";

const FIXTURE = new URL("./fixtures/qwen2-tiny", import.meta.url).pathname;
const IDS = [[5, 17, 42, 99, 3, 250, 7]];

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let md = 0;
  for (let i = 0; i < a.length; i++) md = Math.max(md, Math.abs(a[i] - b[i]));
  return md;
}

Deno.test("addLora: PEFT init (A kaiming-uniform, B zero), names, frozen base, unchanged function", async () => {
  const model = await loadModel(FIXTURE, { backend: "wasm" });
  const base = await model.logits(IDS).data();
  const params = addLora(model, { r: 4, alpha: 16, targetModules: ["q_proj", "v_proj"] });
  assertEquals(Object.keys(model.lora).length, 6); // 3 layers x 2 modules
  assertEquals(Object.keys(params).length, 12);
  const a = params["base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight"];
  const b = params["base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"];
  assertEquals([a.shape, b.shape], [[4, 64], [32, 4]]);
  const av = await a.data();
  const bound = 1 / Math.sqrt(64);
  assert(
    av.every((x) => Math.abs(x) <= bound) && av.some((x) => Math.abs(x) > bound / 2),
    "A ~ U(-1/sqrt(in), 1/sqrt(in))",
  );
  assert((await b.data()).every((x) => x === 0), "B starts at zero");
  assertEquals(model.lora["model.layers.1.self_attn.v_proj"].scale, 4);
  assert(Object.values(model.params).every((p) => !p.trainable));
  assert(maxDiff(await model.logits(IDS).data(), base) === 0, "zero B: the base function");
  removeLora(model);
  assert(Object.values(model.params).every((p) => p.trainable));
  model.dispose();
});

Deno.test("loraTargets: PEFT matching (suffix list or a full-match regex); errors name the problem", async () => {
  const model = await loadModel(FIXTURE, { backend: "wasm" });
  assertEquals(loraTargets(model, ["o_proj"]).length, 3);
  assertEquals(loraTargets(model, "model\\.layers\\.0\\.self_attn\\.(q|v)_proj").sort(), [
    "model.layers.0.self_attn.q_proj",
    "model.layers.0.self_attn.v_proj",
  ]);
  assertEquals(loraTargets(model, ["q_proj"]).length, 3);
  assertThrows(() => addLora(model, { targetModules: ["nope"] }), /match no linear module/);
  assertThrows(
    () =>
      addLora(model, {
        r: 2,
        targetModules: ["q_proj"],
        weights: { "base_model.model.x.lora_A.weight": [[1]] },
      }),
    /belongs to no targeted module/,
  );
  assertThrows(
    () =>
      addLora(model, {
        r: 2,
        targetModules: ["q_proj"],
        weights: { "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": [[1, 2]] },
      }),
    /has shape \[1,2\], expected \[2,64\]/,
  );
  model.dispose();
});

Deno.test("saveLora / loadLora: PEFT files round trip; mergeLora folds B A into W", async () => {
  const dir = await Deno.makeTempDir({ prefix: "medthink_lora_" });
  try {
    const model = await loadModel(FIXTURE, { backend: "wasm" });
    addLora(model, { r: 2, alpha: 4, targetModules: ["k_proj", "down_proj"], seed: 3 });
    // give B nonzero values so the adapters change the function
    for (const ad of Object.values(model.lora)) {
      ad.B.assign(tf.randomNormal(ad.B.shape, 0, 0.1, "float32", 5));
    }
    const want = await model.logits(IDS).data();
    await saveLora(model, dir);
    const cfg = JSON.parse(await Deno.readTextFile(`${dir}/adapter_config.json`));
    assertEquals(
      [cfg.peft_type, cfg.task_type, cfg.r, cfg.lora_alpha, cfg.target_modules, cfg.bias],
      ["LORA", "CAUSAL_LM", 2, 4, ["down_proj", "k_proj"], "none"],
    );
    const file = await readSafetensors(`${dir}/adapter_model.safetensors`);
    assertEquals(Object.keys(file).sort(), Object.keys(loraParams(model)).sort());
    assert(
      Object.keys(file).every((k) =>
        /^base_model\.model\.model\.layers\.\d\.(self_attn|mlp)\.\w+\.lora_[AB]\.weight$/.test(k)
      ),
    );

    const other = await loadModel(FIXTURE, { backend: "wasm" });
    await loadLora(other, dir);
    assert(maxDiff(await other.logits(IDS).data(), want) < 1e-6, "loaded adapters give the same logits");
    mergeLora(other);
    assertEquals(other.lora, {});
    assert(maxDiff(await other.logits(IDS).data(), want) < 1e-4, "merged weights give the same logits");
    other.dispose();
    model.dispose();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
