/**
 * lib/util/tensorboard.ts: the CRC and record framing against known values, and both writers' files
 * (built-in and TensorFlow's, when its binding runs) read back by TensorBoard's own EventAccumulator.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { crc32c, maskedCrc32c, TensorBoardWriter, tfRecord } from "../lib/util/tensorboard.ts";
import { backendAvailable, useBackend } from "../lib/model/backend.ts";
import { readerUnavailable, readTensorBoard } from "./_tensorboard_reader.ts";

Deno.test("tensorboard: CRC32C, its TFRecord mask, and the record frame", () => {
  const enc = new TextEncoder();
  // the standard check value of CRC-32C (Castagnoli)
  assertEquals(crc32c(enc.encode("123456789")), 0xe3069283);
  assertEquals(crc32c(new Uint8Array(32)), 0x8a9136aa); // RFC 3720 B.4: 32 zero bytes
  const c = crc32c(enc.encode("abc"));
  assertEquals(maskedCrc32c(enc.encode("abc")), ((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0);
  const rec = tfRecord(enc.encode("hello"));
  const view = new DataView(rec.buffer);
  assertEquals([rec.length, Number(view.getBigUint64(0, true))], [12 + 5 + 4, 5]);
  assertEquals(view.getUint32(8, true), maskedCrc32c(rec.subarray(0, 8)));
  assertEquals(new TextDecoder().decode(rec.subarray(12, 17)), "hello");
  assertEquals(view.getUint32(17, true), maskedCrc32c(enc.encode("hello")));
});

const why = readerUnavailable ? ` (ignored: ${readerUnavailable})` : "";

async function roundTrip(scalars: "builtin" | "tensorflow"): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "medthink_tb_" });
  try {
    const tb = await TensorBoardWriter.open(dir, { scalars });
    assertEquals(tb.scalarWriter, scalars);
    for (let step = 1; step <= 5; step++) {
      tb.scalars(
        { loss: 1 / step, "reward/medvlthinker/mean": step / 10, skipped: NaN, name: "x" },
        step,
        "train/",
      );
    }
    tb.scalar("eval/eval_accuracy", 0.25, 5);
    tb.text("samples/completion_0", "<think> a </think>\n<answer> B </answer>", 3);
    tb.text("samples/completion_0", "second", 4);
    await tb.close();
    const got = await readTensorBoard(dir);
    assertEquals(Object.keys(got.scalars).sort(), [
      "eval/eval_accuracy",
      "train/loss",
      "train/reward/medvlthinker/mean",
    ]);
    assertEquals(got.scalars["train/loss"].map(([s]) => s), [1, 2, 3, 4, 5]);
    got.scalars["train/loss"].forEach(([s, v]) => assert(Math.abs(v - 1 / s) < 1e-7, `${s}: ${v}`));
    assertEquals(got.scalars["eval/eval_accuracy"], [[5, 0.25]]);
    const text = await readTensorBoard(`${dir}/text`);
    assertEquals(text.texts["samples/completion_0"], [[3, "<think> a </think>\n<answer> B </answer>"], [
      4,
      "second",
    ]]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test({
  name: `tensorboard: the built-in writer's scalars and texts, read by TensorBoard's EventAccumulator${why}`,
  ignore: readerUnavailable !== null,
  fn: () => roundTrip("builtin"),
});

const tfReady = await backendAvailable("tensorflow");
Deno.test({
  name: `tensorboard: scalars through TensorFlow's writer on the binding, read back${why}${
    tfReady ? "" : " (ignored: the tensorflow backend is not built here: deno task setup:tensorflow)"
  }`,
  ignore: readerUnavailable !== null || !tfReady,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    await useBackend("tensorflow");
    await roundTrip("tensorflow");
    // auto picks the binding's writer when the tensorflow backend is active
    const dir = await Deno.makeTempDir();
    const tb = await TensorBoardWriter.open(dir);
    assertEquals(tb.scalarWriter, "tensorflow");
    await tb.close();
    await Deno.remove(dir, { recursive: true });
  },
});
