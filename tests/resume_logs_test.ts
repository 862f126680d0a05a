// Resume leaves what an uninterrupted run leaves (#16 item 4): SFT's step log and GRPO's
// completions.jsonl hold each step once after a resume into the same folder; one writer per output file.
import { deepStrictEqual as assertEquals, ok as assert, rejects as assertRejects } from "node:assert/strict";
import { loadModel } from "../lib/model/load.ts";
import type { Row } from "../lib/data/types.ts";
import { sft } from "../lib/train/sft.ts";
import { grpo } from "../lib/train/grpo.ts";
import { lockOutput, openJsonlStore, truncateJsonlToStep } from "../lib/data/jsonl_store.ts";

const FIXTURE = new URL("./fixtures/qwen2-tiny", import.meta.url).pathname;

function jsonl(path: string): Record<string, unknown>[] {
  return Deno.readTextFileSync(path).trim().split("\n").filter(Boolean).map((l) => JSON.parse(l));
}

Deno.test("truncateJsonlToStep keeps rows of steps <= N, rows without a step, and drops a cut last line", async () => {
  const path = await Deno.makeTempFile({ suffix: ".jsonl" });
  await Deno.writeTextFile(
    path,
    '{"_meta":{"a":1}}\n{"step":1,"x":"a"}\n{"step":2}\n\n{"step":3}\n{"step":2,"again":true}\n{"step":4',
  );
  assertEquals(await truncateJsonlToStep(path, 2), 4);
  assertEquals(
    await Deno.readTextFile(path),
    '{"_meta":{"a":1}}\n{"step":1,"x":"a"}\n{"step":2}\n{"step":2,"again":true}\n',
  );
  assertEquals(await truncateJsonlToStep(path, 0), 1);
  assertEquals(await truncateJsonlToStep(`${path}.missing`, 3), 0);
  await Deno.remove(path);
});

Deno.test("sft resumed into its own folder: metrics.jsonl equals an uninterrupted run's, each step once", async () => {
  const rows = Array.from({ length: 8 }, (_, i) => {
    const inputIds = Array.from({ length: 8 }, (_, t) => 3 + ((i * 37 + t * 11) % 290));
    return { inputIds, labels: inputIds.map((x, t) => (t < 4 ? -100 : x)) };
  });
  const common = {
    batchSize: 4,
    microBatchSize: 4,
    maxSteps: 4,
    learningRate: 1e-2,
    warmupSteps: 0,
    progress: false,
  };
  const a = await Deno.makeTempDir(), b = await Deno.makeTempDir();
  try {
    let model = await loadModel(FIXTURE, { backend: "wasm" });
    await sft(model, rows, { ...common, outputDir: a });
    model.dispose();
    // killed after step 3 with its last checkpoint at step 2: the log already has step 3
    model = await loadModel(FIXTURE, { backend: "wasm" });
    await sft(model, rows, { ...common, outputDir: b, saveSteps: 2, stopAfterSteps: 3 });
    model.dispose();
    assertEquals(jsonl(`${b}/metrics.jsonl`).map((r) => r.step), [1, 2, 3]);
    model = await loadModel(FIXTURE, { backend: "wasm" });
    await sft(model, rows, { ...common, outputDir: b, resumeFrom: `${b}/checkpoint-2` });
    model.dispose();
    const want = jsonl(`${a}/metrics.jsonl`), got = jsonl(`${b}/metrics.jsonl`);
    assertEquals(got.map((r) => r.step), [1, 2, 3, 4]);
    assertEquals(got.map((r) => r.loss), want.map((r) => r.loss));
  } finally {
    await Deno.remove(a, { recursive: true });
    await Deno.remove(b, { recursive: true });
  }
});

Deno.test("grpo resumed into its own folder: completions.jsonl and metrics.jsonl hold each step once", async () => {
  const tokenizer = {
    padTokenId: 0,
    encode: (text: string) => text.split(" ").map(Number),
    decode: (ids: number[]) => ids.join(" "),
  };
  const rows: Row[] = Array.from({ length: 16 }, (_, i) => ({
    id: `p${i}`,
    question: [5 + i, 40 + 2 * i, 77, 9 + i].join(" "),
    options: {},
    answerLabel: "",
    answer: "",
    images: [],
  }));
  const opts = {
    tokenizer,
    promptText: (r: Row) => r.question,
    rewards: [["long", (c: string) => c.length % 2, 1]] as [string, (c: string) => number, number][],
    maxSteps: 4,
    numGenerations: 2,
    promptsPerStep: 2,
    maxNewTokens: 1,
    learningRate: 1e-2,
    beta: 0,
    seed: 5,
    progress: false,
  };
  const dir = await Deno.makeTempDir();
  try {
    const a = await loadModel(FIXTURE, { backend: "wasm" });
    await grpo(a, rows, { ...opts, outputDir: dir, saveSteps: 2 });
    a.dispose();
    const before = jsonl(`${dir}/completions.jsonl`);
    assertEquals([...new Set(before.map((r) => r.step))], [1, 2, 3, 4]);
    // the run died after step 4 but before any newer checkpoint than 2 was kept: resume from it in place
    const b = await loadModel(FIXTURE, { backend: "wasm" });
    await grpo(b, rows, { ...opts, outputDir: dir, saveSteps: 2, resumeFrom: `${dir}/checkpoint-2` });
    b.dispose();
    const after = jsonl(`${dir}/completions.jsonl`);
    assertEquals(
      after.map((r) => [r.step, r.id, r.completion]),
      before.map((r) => [r.step, r.id, r.completion]),
    );
    assertEquals(jsonl(`${dir}/metrics.jsonl`).map((r) => r.step), [1, 2, 3, 4]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("one writer per output file: a second process is refused; a dead writer's lock is taken over", async () => {
  const dir = await Deno.makeTempDir();
  const out = `${dir}/probe.jsonl`;
  const holder = `
    import { openJsonlStore } from "${new URL("../lib/data/jsonl_store.ts", import.meta.url).href}";
    const s = await openJsonlStore(${JSON.stringify(out)}, { meta: { n: 1 } });
    await s.append([{ id: "q1" }]);
    console.log("locked");
    await new Promise(() => setTimeout(() => {}, 60_000));
  `;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", holder],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  try {
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let seen = "";
    while (!seen.includes("locked")) {
      const { value, done } = await reader.read();
      if (done) throw new Error("the child exited before locking");
      seen += value;
    }
    let message = "";
    try {
      await openJsonlStore(out, { meta: { n: 1 } });
    } catch (e) {
      message = (e as Error).message;
    }
    assert(
      message.includes(out) && message.includes(`pid ${child.pid}`) && message.includes(".lock"),
      message,
    );
    child.kill("SIGKILL");
    await child.status;
    reader.releaseLock();
    await child.stdout.cancel().catch(() => {});
    // the killed writer left its lock behind: it is stale and taken over, and the records resume
    const lockBody = JSON.parse(await Deno.readTextFile(`${out}.lock`));
    assertEquals(lockBody.pid, child.pid);
    const store = await openJsonlStore<{ id: string }>(out, { meta: { n: 1 } });
    assertEquals(store.records, [{ id: "q1" }]);
    assertEquals(JSON.parse(await Deno.readTextFile(`${out}.lock`)).pid, Deno.pid);
    // this process may open it again (a resumed call in the same program); closing releases the lock
    const again = await openJsonlStore<{ id: string }>(out, { meta: { n: 1 } });
    await again.close();
    await store.close();
    await assertRejects(Deno.stat(`${out}.lock`));
    const lock = await lockOutput(out);
    await lock.release();
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await Deno.remove(dir, { recursive: true });
  }
});
