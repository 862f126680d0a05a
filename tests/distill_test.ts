// distill(): first correct trace of up to n teacher samples, rounds, resume, sft-ready rows, remote teacher.
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { arquero as aq } from "../lib/util/deps.ts";
import { distill, extractReasoning } from "../lib/train/distill.ts";
import { sampleSeed } from "../lib/engine/generate_batch.ts";
import { sftTarget } from "../lib/data/prompt.ts";
import type { CompletionEngine, CompletionRequest } from "../lib/engine/types.ts";
import type { Row } from "../lib/data/types.ts";
import { loadModel } from "../lib/model/load.ts";
import { loadTokenizer } from "../lib/data/tokenizer.ts";
import { serveModel } from "../lib/serve/server.ts";
import { openaiEngine } from "../lib/engine/openai.ts";
import { fakeRows } from "./_eval_fakes.ts";

/** A teacher whose sample is correct when its seed is divisible by 3; it counts the samples it drew. */
function fakeTeacher() {
  const calls: number[] = [];
  const engine: CompletionEngine & { calls: number[] } = {
    name: "fake-teacher",
    calls,
    complete(requests: CompletionRequest[], sampling) {
      assertEquals(sampling.temperature, 1);
      calls.push(requests.reduce((s, r) => s + r.seeds!.length, 0));
      return Promise.resolve(requests.map((r) => {
        const text = JSON.stringify(r.messages);
        const i = Number(/Question number (\d+)\?/.exec(text)![1]);
        return r.seeds!.map((seed) => {
          const label = seed % 3 === 0 ? "ABCD"[i % 4] : "ABCD"[(i + 1) % 4];
          return {
            text: `<think> reasoning with seed ${seed} </think>\n<answer> ${label} </answer>`,
            tokenIds: [1, 2, 3],
            logprobs: [-1, -1, -1],
            finishReason: "stop" as const,
          };
        });
      }));
    },
  };
  return engine;
}

function firstCorrect(id: string, n: number): number | null {
  for (let j = 0; j < n; j++) if (sampleSeed(0, id, j) % 3 === 0) return j;
  return null;
}

Deno.test("extractReasoning: the think block, else the text before the answer", () => {
  assertEquals(extractReasoning("<think>\n x \n</think><answer>A</answer>"), "x");
  assertEquals(extractReasoning("plain words <answer> B </answer>"), "plain words");
});

Deno.test("distill: keeps the first correct of up to n samples, asks only for unsolved questions, reports the rest", async () => {
  const rows = fakeRows(24);
  const teacher = fakeTeacher();
  const result = await distill(teacher, aq.from(rows), { n: 3, batchSize: 10, progress: false });
  let drawn = 0;
  const wantIds: string[] = [];
  const missing: string[] = [];
  for (const r of rows) {
    const j = firstCorrect(r.id, 3);
    drawn += j === null ? 3 : j + 1;
    if (j === null) missing.push(r.id);
    else wantIds.push(r.id);
  }
  assert(missing.length > 0 && wantIds.length > 0, "the fixture needs both outcomes");
  assertEquals(result.samplesDrawn, drawn);
  assertEquals(teacher.calls.reduce((a, b) => a + b, 0), drawn);
  assertEquals(result.withoutTrace, missing.length);
  assertEquals(result.missingIds, missing);
  assertEquals(result.questions, 24);
  const kept = result.table.objects() as Row[];
  assertEquals(kept.map((r) => r.id), wantIds);
  for (const r of kept) {
    const j = firstCorrect(r.id, 3)!;
    assertEquals(r.reasoning, `reasoning with seed ${sampleSeed(0, r.id, j)}`);
    // ready for sft(): the recipe's target builds from the row
    assertEquals(sftTarget(r), `<think> ${r.reasoning} </think>\n<answer> ${r.answerLabel} </answer>`);
  }
});

Deno.test("distill: an interrupted run resumes from its JSONL file and gives the uninterrupted result", async () => {
  const dir = await Deno.makeTempDir({ prefix: "distill_test_" });
  try {
    const rows = fakeRows(12);
    const full = await distill(fakeTeacher(), rows, { n: 3, batchSize: 4, progress: false });
    const stop = new AbortController();
    const t1 = fakeTeacher();
    const first = distill(t1, rows, {
      n: 3,
      batchSize: 4,
      out: `${dir}/t.jsonl`,
      signal: stop.signal,
      progress: false,
    });
    stop.abort(); // checked before each batch: nothing is drawn
    assertEquals((await first).questions, 0);
    const t2 = fakeTeacher();
    const partial = await distill(t2, rows.slice(0, 4), {
      n: 3,
      batchSize: 4,
      out: `${dir}/t.jsonl`,
      progress: false,
    });
    const t3 = fakeTeacher();
    const resumed = await distill(t3, rows, { n: 3, batchSize: 4, out: `${dir}/t.jsonl`, progress: false });
    assertEquals(resumed.table.objects(), full.table.objects());
    assertEquals(resumed.withoutTrace, full.withoutTrace);
    assertEquals(partial.samplesDrawn + resumed.samplesDrawn, full.samplesDrawn);
    const t4 = fakeTeacher();
    await distill(t4, rows, { n: 3, batchSize: 4, out: `${dir}/t.jsonl`, progress: false });
    assertEquals(t4.calls.length, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "distill: a remote teacher (medthink serve) gives the records of the same local teacher",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const model = await loadModel("medthink-tiny");
    const tokenizer = await loadTokenizer(model.dir);
    const server = serveModel(model, { tokenizer, port: 0, modelName: "teacher" });
    try {
      const rows = fakeRows(3);
      // the tiny random model never answers in format: accept any response to compare the traces
      const opts = { n: 2, maxNewTokens: 6, progress: false, reward: () => 1 };
      const local = await distill(model, rows, opts);
      const remote = await distill(openaiEngine({ baseUrls: [server.url], model: "teacher" }), rows, opts);
      assertEquals(remote.table.objects(), local.table.objects());
      assertEquals(remote.samplesDrawn, 3);
    } finally {
      await server.shutdown();
      model.dispose();
    }
  },
});
