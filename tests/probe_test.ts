import { deepStrictEqual as assertEquals, ok as assert, rejects } from "node:assert/strict";
import { arquero as aq } from "../lib/util/deps.ts";
import { probe } from "../lib/eval/probe.ts";
import { sampleSeed } from "../lib/engine/generate_batch.ts";
import { readJsonl } from "../lib/data/jsonl_store.ts";
import { filterWithReport } from "../lib/eval/filter.ts";
import { passCountHistogram } from "../lib/eval/plot.ts";
import { loadDataset } from "../lib/data/dataset.ts";
import { loadModel } from "../lib/model/load.ts";
import { loadTokenizer } from "../lib/data/tokenizer.ts";
import { charTokenizer, defaultWriter, fakeModel, fakeRows } from "./_eval_fakes.ts";

const DATA = new URL("../data/", import.meta.url).pathname;

function expectedPassCount(seed: number, id: string, label: string, n: number): number {
  let c = 0;
  for (let j = 0; j < n; j++) {
    const s = sampleSeed(seed, id, j);
    // the recipe's strict reward: tags required, so only the tagged answers (seed % 3 != 0) count
    if (s % 3 !== 0 && "ABCD"[s % 4] === label) c++;
  }
  return c;
}

async function tmp(): Promise<string> {
  return await Deno.makeTempDir({ prefix: "probe_test_" });
}

Deno.test("sampleSeed is stable, and differs by base seed, id and sample index", () => {
  const s = sampleSeed(0, "q1", 0);
  assertEquals(sampleSeed(0, "q1", 0), s);
  assert(sampleSeed(1, "q1", 0) !== s);
  assert(sampleSeed(0, "q2", 0) !== s);
  assert(sampleSeed(0, "q1", 1) !== s);
  // ids as numbers and strings name the same question
  assertEquals(sampleSeed(3, 7, 2), sampleSeed(3, "7", 2));
  assert(Number.isInteger(s) && s >= 0 && s < 2 ** 32);
});

Deno.test("probe: pass counts are the strict reward over n seeded samples; one seed per output row", async () => {
  const rows = fakeRows(10);
  const model = fakeModel();
  const result = await probe(model, aq.from(rows), { tokenizer: charTokenizer, n: 8, seed: 5, batchSize: 3 });
  assertEquals(result.columnNames(), ["id", "passCount", "n", "passRate", "meanResponseLength"]);
  const objects = result.objects() as Record<string, number | string>[];
  for (const [i, r] of rows.entries()) {
    const want = expectedPassCount(5, r.id, r.answerLabel, 8);
    assertEquals(objects[i].passCount, want, `pass count of ${r.id}`);
    assertEquals(objects[i].passRate, want / 8);
    assertEquals(objects[i].n, 8);
  }
  assert(
    rows.some((r) => expectedPassCount(5, r.id, r.answerLabel, 8) > 0),
    "the fixture must have some passes",
  );
  // the recipe's sampling defaults and the prompt reached the model
  assertEquals(model.calls.length, 4);
  assertEquals(model.calls[0].temperature, 1);
  assertEquals(model.calls[0].seeds.length, 3 * 8);
  assertEquals(model.calls[0].seeds[9], sampleSeed(5, "q1", 1));
  assert(model.calls[0].prompts[0].includes("Question: Question number 0?\n\nOptions:\n\nA. alpha"));
  // response length counts the generated tokens including the stop token
  const lengths = rows.map((r) => {
    let t = 0;
    for (let j = 0; j < 8; j++) t += [...defaultWriter(sampleSeed(5, r.id, j), "")].length + 1;
    return t / 8;
  });
  assertEquals(objects.map((o) => o.meanResponseLength), lengths);
});

Deno.test("probe: the table does not depend on batch size", async () => {
  const rows = aq.from(fakeRows(9));
  const a = await probe(fakeModel(), rows, { tokenizer: charTokenizer, n: 4, batchSize: 1 });
  const b = await probe(fakeModel(), rows, { tokenizer: charTokenizer, n: 4, batchSize: 7 });
  assertEquals(a.objects(), b.objects());
});

Deno.test("probe: a crash midway resumes from the JSONL file and gives the uninterrupted table", async () => {
  const dir = await tmp();
  try {
    const rows = aq.from(fakeRows(11));
    const full = await probe(fakeModel(), rows, {
      tokenizer: charTokenizer,
      n: 4,
      batchSize: 2,
      out: `${dir}/full.jsonl`,
    });
    const crashing = fakeModel();
    crashing.failOnCall = 3; // batches 1 and 2 written, then the crash
    await rejects(
      probe(crashing, rows, { tokenizer: charTokenizer, n: 4, batchSize: 2, out: `${dir}/part.jsonl` }),
      /simulated crash/,
    );
    assertEquals((await readJsonl(`${dir}/part.jsonl`)).length, 4);
    // a crash in the middle of a write leaves a partial last line: it must be dropped, not fail
    await Deno.writeTextFile(`${dir}/part.jsonl`, '{"id":"q4","passC', { append: true });
    const resumedModel = fakeModel();
    const resumed = await probe(resumedModel, rows, {
      tokenizer: charTokenizer,
      n: 4,
      batchSize: 3,
      out: `${dir}/part.jsonl`,
    });
    assertEquals(resumed.objects(), full.objects());
    // only the 7 questions not done were generated again
    assertEquals(resumedModel.calls.reduce((s, c) => s + c.prompts.length, 0), 7);
    assertEquals((await readJsonl(`${dir}/part.jsonl`)).length, 11);
    // resuming with other settings is refused, naming the file
    await rejects(
      probe(fakeModel(), rows, { tokenizer: charTokenizer, n: 8, out: `${dir}/part.jsonl` }),
      /part\.jsonl was written with different settings/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("probe: bad input is refused with one clear sentence", async () => {
  await rejects(
    probe(fakeModel(), aq.from(fakeRows(2)), { tokenizer: charTokenizer, n: 0 }),
    /numGenerations must be a positive integer/,
  );
  await rejects(
    probe(fakeModel(), aq.from(fakeRows(2)), { tokenizer: charTokenizer, n: 2, numGenerations: 2 }),
    /both numGenerations and its alias n/,
  );
  await rejects(
    // deno-lint-ignore no-explicit-any
    probe(fakeModel(), aq.from(fakeRows(2)), { tokenizer: charTokenizer, numGeneration: 2 } as any),
    /Unknown key 'numGeneration' in probe options: did you mean 'numGenerations'\?/,
  );
  const dup = [...fakeRows(2), ...fakeRows(1)];
  await rejects(
    probe(fakeModel(), aq.from(dup), { tokenizer: charTokenizer, n: 2 }),
    /Row 2 .* repeats id q0/,
  );
});

Deno.test({
  name:
    "probe: 50 MedQA questions, n = 4, on medthink-tiny: stopped midway and resumed = uninterrupted; filter; histogram",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const dir = await tmp();
    try {
      const table = await loadDataset(`${DATA}medqa_4opt/test.jsonl`, { limit: 50 });
      assertEquals(table.numRows(), 50);
      const model = await loadModel("medthink-tiny");
      const tokenizer = await loadTokenizer();
      // A short template keeps prefill small on 2 cores; generation is 2 tokens.
      const opts = {
        tokenizer,
        n: 4,
        maxNewTokens: 2,
        batchSize: 10,
        seed: 11,
        template: "Question: {question}\n\n{options}",
      };
      const t0 = performance.now();
      const full = await probe(model, table, { ...opts, out: `${dir}/full.jsonl` });
      const fullMs = performance.now() - t0;
      const controller = new AbortController();
      const partial = await probe(model, table, {
        ...opts,
        out: `${dir}/resumed.jsonl`,
        signal: controller.signal,
        onProgress: ({ done }) => done >= 20 && controller.abort(),
      });
      assertEquals(partial.numRows(), 20);
      const resumed = await probe(model, table, { ...opts, out: `${dir}/resumed.jsonl` });
      assertEquals(resumed.objects(), full.objects());
      assertEquals(full.numRows(), 50);
      assertEquals(Array.from(full.array("n") as number[]).every((x) => x === 4), true);
      const { table: kept, report } = filterWithReport(full);
      assertEquals(report.total, 50);
      assertEquals(
        report.kept,
        Array.from(full.array("passCount") as number[]).filter((p) => p === 1).length,
      );
      assertEquals(kept.numRows(), report.kept);
      const svg = passCountHistogram(full);
      assert(svg.includes("pass count (correct of 4)"));
      console.log(`medthink-tiny probe of 50 x 4 on ${model.backend}: ${(fullMs / 1000).toFixed(1)} s`);
      model.dispose();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
