/** Progress bar text, ETA and the JSON Lines log; checkpoint atomicity and discovery. */
import { deepStrictEqual as assertEquals, ok as assert, rejects as assertRejects } from "node:assert/strict";
import { createProgress, formatDuration, progressLine } from "../lib/util/progress.ts";
import { latestCheckpoint, loadCheckpoint, saveCheckpoint } from "../lib/train/checkpoint.ts";
import { loadModel } from "../lib/model/load.ts";
import { adamw } from "../lib/train/optimizer.ts";
import { tf } from "../lib/util/deps.ts";

Deno.test("progress: duration format, bar with ETA, one JSON line per step", async () => {
  assertEquals([formatDuration(65), formatDuration(3725), formatDuration(NaN)], ["1:05", "1:02:05", "?"]);
  const line = progressLine("sft", 5, 20, 10, 0, { loss: 1.23456, lr: 1e-5, other: 3 }, ["loss", "lr"]);
  assertEquals(line, "sft [######..................] 5/20 loss 1.235 lr 1.00e-5 0:10<0:30");
  // a resumed run: the rate counts only the steps of this session
  assert(progressLine("sft", 15, 20, 10, 10, {}, []).endsWith("0:10<0:10"));
  const dir = await Deno.makeTempDir({ prefix: "medthink_progress_" });
  try {
    const p = createProgress({ total: 2, bar: false, logFile: `${dir}/log.jsonl` });
    p.update(1, { loss: 2, lr: 0.1 });
    p.update(2, { loss: 1, lr: 0.05 });
    p.close();
    const lines = (await Deno.readTextFile(`${dir}/log.jsonl`)).trim().split("\n").map((l) => JSON.parse(l));
    assertEquals(lines.map((l) => [l.step, l.loss, l.lr]), [[1, 2, 0.1], [2, 1, 0.05]]);
    assert(lines.every((l) => typeof l.elapsed === "number"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("checkpoint: atomic replace, latest complete one found, weights and moments restored", async () => {
  const dir = await Deno.makeTempDir({ prefix: "medthink_ckpt_" });
  try {
    const model = await loadModel(new URL("./fixtures/qwen2-tiny", import.meta.url).pathname, {
      backend: "wasm",
    });
    const opt = adamw({ params: model.params, lr: 0.1 });
    const grads: Record<string, tf.Tensor> = {};
    for (const [n, p] of Object.entries(model.params)) grads[n] = tf.onesLike(p);
    opt.step(grads);
    const state = {
      step: 1,
      totalSteps: 4,
      dataPosition: { epoch: 0, batch: 1 },
      rng: { seed: 1, epoch: 0 },
      losses: [3.5],
    };
    await saveCheckpoint(`${dir}/checkpoint-1`, { model, optimizer: opt, state });
    await saveCheckpoint(`${dir}/checkpoint-1`, { model, optimizer: opt, state }); // replaces
    await Deno.mkdir(`${dir}/checkpoint-9.tmp-abcd`); // a crashed write is never picked
    await Deno.mkdir(`${dir}/checkpoint-7`); // incomplete (no trainer_state.json)
    assertEquals(await latestCheckpoint(dir), `${dir}/checkpoint-1`);
    assertEquals(await latestCheckpoint(`${dir}/missing`), null);
    const want = await model.params["lm_head.weight"].data();
    const wantM = await opt.state().expAvg["lm_head.weight"].data();

    const fresh = await loadModel(new URL("./fixtures/qwen2-tiny", import.meta.url).pathname, {
      backend: "wasm",
    });
    const opt2 = adamw({ params: fresh.params, lr: 0.1 });
    const got = await loadCheckpoint(`${dir}/checkpoint-1`, { model: fresh, optimizer: opt2 });
    assertEquals([got.step, got.losses, got.dataPosition], [1, [3.5], { epoch: 0, batch: 1 }]);
    assertEquals(opt2.stepCount, 1);
    assertEquals(await fresh.params["lm_head.weight"].data(), want);
    assertEquals(await opt2.state().expAvg["lm_head.weight"].data(), wantM);
    await assertRejects(
      () => loadCheckpoint(`${dir}/checkpoint-7`, { model: fresh }),
      /no readable trainer_state/,
    );
    tf.dispose(Object.values(grads));
    opt.dispose();
    opt2.dispose();
    model.dispose();
    fresh.dispose();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
