// Crafted safetensors headers and index files are refused with a message naming the file and the
// tensor (as strictly as the reference library validates them); the fixtures still load.
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import {
  checkpointFiles,
  MAX_HEADER_BYTES,
  readSafetensors,
  readSafetensorsHeader,
  writeSafetensors,
} from "../lib/model/safetensors.ts";

const FIXTURE = new URL("./fixtures/qwen2-tiny", import.meta.url).pathname;

/** A safetensors file made of `header` (serialised as given) and `dataBytes` zero bytes. */
async function craft(dir: string, header: unknown, dataBytes: number, rawJson?: string): Promise<string> {
  const json = new TextEncoder().encode(rawJson ?? JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + dataBytes);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  const file = `${dir}/crafted-${crypto.randomUUID().slice(0, 6)}.safetensors`;
  await Deno.writeFile(file, out);
  return file;
}

async function rejects(file: string, words: string[]): Promise<void> {
  let message = "";
  try {
    await readSafetensorsHeader(file);
  } catch (e) {
    message = (e as Error).message;
  }
  assert(message !== "", `${file} was accepted`);
  for (const w of [file, ...words]) assert(message.includes(w), `"${message}" does not mention "${w}"`);
}

Deno.test("safetensors: crafted bad headers are refused, each naming the file and tensor", async () => {
  const dir = await Deno.makeTempDir({ prefix: "st_bad_" });
  try {
    const ok = {
      a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
      b: { dtype: "F32", shape: [1], data_offsets: [8, 12] },
    };
    // the well-formed one is accepted: the cases below differ from it in one place
    assertEquals(Object.keys((await readSafetensorsHeader(await craft(dir, ok, 12))).tensors).sort(), [
      "a",
      "b",
    ]);
    const cases: [string, unknown, number, string[]][] = [
      ["negative offset", { ...ok, b: { dtype: "F32", shape: [1], data_offsets: [-4, 0] } }, 12, [
        "b",
        "non-negative",
      ]],
      ["fractional offset", { ...ok, b: { dtype: "F32", shape: [1], data_offsets: [8.5, 12.5] } }, 12, [
        "b",
        "integers",
      ]],
      ["string offset", { ...ok, b: { dtype: "F32", shape: [1], data_offsets: ["8", "12"] } }, 12, [
        "b",
        "data_offsets",
      ]],
      ["three offsets", { ...ok, b: { dtype: "F32", shape: [1], data_offsets: [8, 12, 16] } }, 12, [
        "b",
        "data_offsets",
      ]],
      ["begin after end", { ...ok, b: { dtype: "F32", shape: [0], data_offsets: [12, 8] } }, 12, [
        "b",
        "begin after end",
      ]],
      ["overlap", { ...ok, b: { dtype: "F32", shape: [1], data_offsets: [4, 8] } }, 12, ["overlaps"]],
      ["gap", { ...ok, b: { dtype: "F32", shape: [1], data_offsets: [12, 16] } }, 16, [
        "b",
        "belong to no tensor",
      ]],
      ["trailing bytes", ok, 20, ["trailing"]],
      ["out of bounds", { ...ok, b: { dtype: "F32", shape: [1], data_offsets: [8, 12] } }, 10, [
        "b",
        "ends at data byte 12",
      ]],
      ["wrong byte length", { ...ok, b: { dtype: "F32", shape: [2], data_offsets: [8, 12] } }, 12, [
        "b",
        "needs 8",
      ]],
      ["negative dimension", { ...ok, b: { dtype: "F32", shape: [-1], data_offsets: [8, 12] } }, 12, [
        "b",
        "shape",
      ]],
      ["fractional dimension", { ...ok, b: { dtype: "F32", shape: [0.5, 2], data_offsets: [8, 12] } }, 12, [
        "b",
        "shape",
      ]],
      ["unknown dtype", { ...ok, b: { dtype: "Q4", shape: [1], data_offsets: [8, 12] } }, 12, ["b", "Q4"]],
      ["entry not an object", { ...ok, b: 7 }, 12, ["b", "not an object"]],
      ["metadata not strings", { ...ok, __metadata__: { step: 3 } }, 12, ["__metadata__"]],
      ["header an array", [1, 2], 0, ["not a JSON object"]],
    ];
    for (const [what, header, bytes, words] of cases) {
      await rejects(await craft(dir, header, bytes), words).catch((e) => {
        throw new Error(`${what}: ${e.message}`);
      });
    }
    await rejects(await craft(dir, null, 4, "{not json"), ["not valid"]);
    // a header length over the reference limit is refused before anything is read or allocated
    const huge = `${dir}/huge.safetensors`;
    const b = new Uint8Array(16);
    new DataView(b.buffer).setBigUint64(0, BigInt(MAX_HEADER_BYTES + 1), true);
    await Deno.writeFile(huge, b);
    await rejects(huge, ["exceeds"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("safetensors: index shard names must stay inside the folder; symlinked shards still load", async () => {
  const dir = await Deno.makeTempDir({ prefix: "st_index_" });
  try {
    const outside = await Deno.makeTempDir({ prefix: "st_outside_" });
    await writeSafetensors(`${outside}/x.safetensors`, { w: { shape: [1], data: new Float32Array([1]) } });
    const ckpt = `${dir}/ckpt`;
    await Deno.mkdir(ckpt);
    for (const shard of ["../x.safetensors", `${outside}/x.safetensors`, "sub/../../x.safetensors", ""]) {
      await Deno.writeTextFile(
        `${ckpt}/model.safetensors.index.json`,
        JSON.stringify({ weight_map: { w: shard } }),
      );
      let message = "";
      try {
        await checkpointFiles(ckpt);
      } catch (e) {
        message = (e as Error).message;
      }
      assert(message.includes(`${ckpt}/model.safetensors.index.json`) && message.includes("w"), message);
      assert(/outside the checkpoint folder|not a file name/.test(message), message);
    }
    // a symlink inside the folder to a blob elsewhere (the Hub cache's layout) is fine
    await Deno.symlink(`${outside}/x.safetensors`, `${ckpt}/model-00001-of-00001.safetensors`);
    await Deno.writeTextFile(
      `${ckpt}/model.safetensors.index.json`,
      JSON.stringify({ weight_map: { w: "model-00001-of-00001.safetensors" } }),
    );
    const files = await checkpointFiles(ckpt);
    assertEquals(files.files, [`${ckpt}/model-00001-of-00001.safetensors`]);
    assertEquals(Array.from((await readSafetensors(files.files[0])).w.data), [1]);
    await Deno.remove(outside, { recursive: true });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("safetensors: every fixture file passes the strict validation", async () => {
  let checked = 0;
  async function walk(d: string): Promise<void> {
    for await (const e of Deno.readDir(d)) {
      if (e.isDirectory) await walk(`${d}/${e.name}`);
      else if (e.name.endsWith(".safetensors")) (await readSafetensorsHeader(`${d}/${e.name}`), checked++);
    }
  }
  await walk(new URL("./fixtures", import.meta.url).pathname);
  assert(checked >= 2, `only ${checked} fixture files found`);
  assert((await checkpointFiles(FIXTURE)).files.length >= 1);
});
