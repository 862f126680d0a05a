// Checkpoint loading and saving: bad inputs (one clear sentence naming file and tensor), the
// transformers-5 config layout, tied heads, save -> load, and the text part of a Qwen2.5-VL checkpoint.
import { tf } from "../lib/util/deps.ts";
import { useBackend } from "../lib/model/backend.ts";
import { parseConfig, readConfig } from "../lib/model/config.ts";
import { loadModel, loadQwen2, saveModel } from "../lib/model/load.ts";
import { readSafetensorsHeader } from "../lib/model/safetensors.ts";
import type { CausalLM } from "../lib/model/types.ts";
import {
  check,
  checkEqual,
  checkRejects,
  copyFixture,
  loadGolden,
  maxAbsDiff,
  QWEN25VL_TINY,
  QWEN2_TINY,
  take,
} from "./_model_fixtures.ts";
import { GOLDEN as VL_GOLDEN } from "./_vl_fixture.ts";

const SHARD1 = "model-00001-of-00002.safetensors";
const SHARD2 = "model-00002-of-00002.safetensors";

await useBackend("cpu");

async function logitsOf(model: CausalLM): Promise<number[][][]> {
  return await take(model.logits(loadGolden().input_ids));
}

/** Rewrite a safetensors file's header with `edit` (data bytes unchanged). */
async function editHeader(file: string, edit: (h: Record<string, any>) => void): Promise<void> {
  const bytes = await Deno.readFile(file);
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  edit(header);
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + bytes.length - 8 - n);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(bytes.subarray(8 + n), 8 + json.length);
  await Deno.writeFile(file, out);
}

async function editConfig(dir: string, edit: (c: Record<string, any>) => void): Promise<void> {
  const c = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
  edit(c);
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(c, null, 2));
}

Deno.test("bad checkpoint: truncated shard names the file and tensor", async () => {
  const dir = await copyFixture(QWEN2_TINY);
  const file = `${dir}/${SHARD2}`;
  const h = await readSafetensorsHeader(file);
  const last = Object.entries(h.tensors).sort((a, b) => b[1].dataOffsets[1] - a[1].dataOffsets[1])[0][0];
  await Deno.truncate(file, h.fileSize - 10);
  await checkRejects(() => loadModel(dir), [file, last, "truncated"]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("bad checkpoint: header length past the end of the file", async () => {
  const dir = await copyFixture(QWEN2_TINY);
  const file = `${dir}/${SHARD1}`;
  const bytes = await Deno.readFile(file);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(bytes.length * 4), true);
  await Deno.writeFile(file, bytes);
  await checkRejects(() => loadModel(dir), [file, "header length", "past the end"]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("bad checkpoint: unknown dtype names the file and tensor", async () => {
  const dir = await copyFixture(QWEN2_TINY);
  const file = `${dir}/${SHARD1}`;
  await editHeader(file, (h) => (h["model.layers.0.self_attn.q_proj.weight"].dtype = "F8_E9M9"));
  await checkRejects(() => loadModel(dir), [file, "model.layers.0.self_attn.q_proj.weight", "F8_E9M9"]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("bad checkpoint: missing tensor names the tensor and where it was looked for", async () => {
  const dir = await copyFixture(QWEN2_TINY);
  const index = JSON.parse(await Deno.readTextFile(`${dir}/model.safetensors.index.json`));
  const name = "model.layers.1.mlp.up_proj.weight";
  const file = `${dir}/${index.weight_map[name]}`;
  // renamed rather than deleted: a deleted entry would leave its bytes in no tensor, which the header
  // validation refuses before any tensor is looked up
  await editHeader(file, (h) => {
    h["unused.extra"] = h[name];
    delete h[name];
  });
  await checkRejects(() => loadModel(dir), [name, file, "missing"]);
  // Gone from the index as well: the index file is named.
  delete index.weight_map[name];
  await Deno.writeTextFile(`${dir}/model.safetensors.index.json`, JSON.stringify(index));
  await checkRejects(() => loadModel(dir), [name, `${dir}/model.safetensors.index.json`, "missing"]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("bad checkpoint: shape disagreeing with config.json names the tensor and both files", async () => {
  const dir = await copyFixture(QWEN2_TINY);
  await editConfig(dir, (c) => (c.intermediate_size = 128));
  const msg = await checkRejects(() => loadModel(dir), [
    "mlp.",
    "[160,64]",
    "[128,64]",
    `${dir}/config.json`,
  ]);
  check(msg.includes(`${dir}/model-0000`), msg);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("bad config: a missing required field names the key and the file", async () => {
  const dir = await copyFixture(QWEN2_TINY);
  await editConfig(dir, (c) => delete c.hidden_size);
  await checkRejects(() => loadModel(dir), ["hidden_size", `${dir}/config.json`]);
  await checkRejects(() => loadModel(`${dir}/nope`), [`${dir}/nope/config.json`]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("config: transformers-5 layout (rope_parameters, dtype) loads identically", async () => {
  const dir = await copyFixture(QWEN2_TINY);
  await editConfig(dir, (c) => {
    c.rope_parameters = { rope_theta: c.rope_theta, rope_type: "default" };
    c.dtype = c.torch_dtype;
    delete c.rope_theta;
    delete c.torch_dtype;
    c.transformers_version = "5.17.0";
  });
  const a = await loadModel(QWEN2_TINY), b = await loadModel(dir);
  check(b.config.ropeTheta === 1e6 && b.config.dtype === "bfloat16", "theta and dtype from the tf5 keys");
  checkEqual(await logitsOf(b), await logitsOf(a), "tf5-layout logits");
  a.dispose();
  b.dispose();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("config: eos may be an int or a list; Qwen2.5-VL in both layouts gives the same config", async () => {
  const base = {
    model_type: "qwen2",
    vocab_size: 10,
    hidden_size: 8,
    intermediate_size: 16,
    num_hidden_layers: 1,
    num_attention_heads: 2,
  };
  checkEqual(parseConfig({ ...base, eos_token_id: 2 }).eosTokenIds, [2]);
  checkEqual(parseConfig({ ...base, eos_token_id: [151645, 151643] }).eosTokenIds, [151645, 151643]);
  check(parseConfig(base).numKeyValueHeads === 2, "kv heads default to attention heads");
  const v4 = await readConfig(QWEN25VL_TINY);
  const raw = structuredClone(v4.raw) as Record<string, any>;
  const textKeys = [
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "rms_norm_eps",
    "max_position_embeddings",
    "vocab_size",
    "hidden_act",
    "bos_token_id",
    "eos_token_id",
    "sliding_window",
    "use_sliding_window",
    "max_window_layers",
    "attention_dropout",
  ];
  const text: Record<string, unknown> = { model_type: "qwen2_5_vl_text" };
  for (const k of textKeys) {
    text[k] = raw[k];
    delete raw[k];
  }
  text.rope_parameters = {
    rope_type: "mrope",
    rope_theta: raw.rope_theta,
    mrope_section: raw.rope_scaling.mrope_section,
  };
  delete raw.rope_theta;
  delete raw.rope_scaling;
  raw.text_config = text;
  raw.dtype = raw.torch_dtype;
  delete raw.torch_dtype;
  delete raw.vision_config.in_chans;
  const v5 = parseConfig(raw, "v5.json");
  const strip = (c: any) => ({ ...c, raw: undefined });
  checkEqual(strip(v5), strip(v4), "tf4 vs tf5 Qwen2.5-VL config");
  checkEqual(v4.mropeSection, [2, 3, 3]);
  check(v4.vision?.depth === 4 && v4.vision.inChannels === 3 && v4.imageTokenId === 303, "vision fields");
  const broken = structuredClone(raw);
  delete broken.text_config.num_hidden_layers;
  await checkRejects(() => Promise.resolve().then(() => parseConfig(broken, "v5.json")), [
    "num_hidden_layers",
    "v5.json",
  ]);
});

Deno.test("config: generation_config.json adds its eos ids (as HF generate uses them)", async () => {
  const dir = await copyFixture(QWEN2_TINY);
  await Deno.writeTextFile(
    `${dir}/generation_config.json`,
    JSON.stringify({ eos_token_id: [7, 2], pad_token_id: 0 }),
  );
  const cfg = await readConfig(dir);
  checkEqual(cfg.eosTokenIds, [2, 7]);
  checkEqual(cfg.padTokenId, 0);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("tied output head: no lm_head needed, logits use the embedding matrix", async () => {
  const dir = await copyFixture(QWEN2_TINY);
  await editConfig(dir, (c) => (c.tie_word_embeddings = true));
  const tied = await loadModel(dir);
  check(!("lm_head.weight" in tied.params), "a tied model has no lm_head parameter");
  const h = tied.hidden(loadGolden().input_ids);
  const want = await take(tf.einsum("bth,vh->btv", h, tied.params["model.embed_tokens.weight"]));
  h.dispose();
  check(maxAbsDiff(await logitsOf(tied), want) < 1e-4, "tied logits");
  // Saved without lm_head, and loads back the same.
  const out = `${dir}-saved`;
  await saveModel(tied, out);
  check(
    !("lm_head.weight" in (await readSafetensorsHeader(`${out}/model.safetensors`)).tensors),
    "no lm_head saved",
  );
  const back = await loadModel(out);
  checkEqual(await logitsOf(back), await logitsOf(tied), "tied save -> load");
  tied.dispose();
  back.dispose();
  await Deno.remove(dir, { recursive: true });
  await Deno.remove(out, { recursive: true });
});

Deno.test("save -> load gives identical logits (float32, sharded, bfloat16), atomically", async () => {
  const model = await loadModel(QWEN2_TINY);
  const want = await logitsOf(model);
  const root = await Deno.makeTempDir({ prefix: "medthink-save-" });
  // float32, one file
  await saveModel(model, `${root}/f32`);
  const a = await loadModel(`${root}/f32`);
  checkEqual(await logitsOf(a), want, "float32 save -> load");
  a.dispose();
  // sharded with an index
  await Deno.writeTextFile(`${root}/sharded_tokenizer.json`, "{}");
  await Deno.mkdir(`${root}/sharded`);
  await Deno.writeTextFile(`${root}/sharded/tokenizer.json`, '{"keep": true}');
  await Deno.writeTextFile(`${root}/sharded/model.safetensors`, "stale");
  await saveModel(model, `${root}/sharded`, { maxShardBytes: 100_000 });
  const index = JSON.parse(await Deno.readTextFile(`${root}/sharded/model.safetensors.index.json`));
  const shards = new Set(Object.values(index.weight_map));
  check(shards.size >= 3, `expected several shards, got ${shards.size}`);
  check(await Deno.readTextFile(`${root}/sharded/tokenizer.json`) === '{"keep": true}', "other files kept");
  const b = await loadModel(`${root}/sharded`);
  checkEqual(await logitsOf(b), want, "sharded save -> load");
  b.dispose();
  // bfloat16: these weights are bf16 values, so the round trip is exact too; config says so.
  await saveModel(model, `${root}/bf16`, { dtype: "bfloat16" });
  check((await readConfig(`${root}/bf16`)).dtype === "bfloat16", "config dtype");
  check(
    Object.values((await readSafetensorsHeader(`${root}/bf16/model.safetensors`)).tensors).every((t) =>
      t.dtype === "BF16"
    ),
    "BF16",
  );
  const c = await loadModel(`${root}/bf16`);
  checkEqual(await logitsOf(c), want, "bf16 save -> load");
  c.dispose();
  // float16: close, not exact.
  await saveModel(model, `${root}/f16`, { dtype: "float16" });
  const d = await loadModel(`${root}/f16`);
  check(maxAbsDiff(await logitsOf(d), want) < 1e-2, "f16 save -> load close");
  d.dispose();
  const left = [];
  for await (const e of Deno.readDir(root)) {
    if (e.name.includes(".tmp-") || e.name.includes(".old-")) left.push(e.name);
  }
  checkEqual(left, [], "no temporary folders left");
  model.dispose();
  await Deno.remove(root, { recursive: true });
});

Deno.test("Qwen2.5-VL checkpoint: the text part loads (visual.* ignored) and matches the text-only golden", async () => {
  // loadQwen2 is the text-only loader (loadModel dispatches qwen2_5_vl to the VL model when registered).
  const model = await loadQwen2(QWEN25VL_TINY, await readConfig(QWEN25VL_TINY));
  check(model.config.modelType === "qwen2_5_vl", "model type");
  check(
    !Object.keys(model.params).some((n) => n.startsWith("visual.")),
    "no vision params in the text model",
  );
  const g = VL_GOLDEN.text_only;
  const mask = g.attention_mask;
  const got = await take(model.logits(g.input_ids, { attentionMask: mask }));
  check(maxAbsDiff(got, g.expected.logits, mask) < 1e-3, "text-only logits (1-D positions from the mask)");
  // The same through explicit [3, B, T] multimodal positions (mrope cos/sin).
  const pos = tf.tensor3d(g.expected.position_ids, undefined, "int32");
  const got3 = await take(model.logits(g.input_ids, { attentionMask: mask, positionIds: pos }));
  pos.dispose();
  check(maxAbsDiff(got3, g.expected.logits, mask) < 1e-3, "text-only logits (3-D positions)");
  model.dispose();
});
