import { deepStrictEqual as assertEquals, ok as assert, rejects } from "node:assert/strict";
import { arquero as aq } from "../lib/util/deps.ts";
import {
  compareReports,
  evaluate,
  formatReport,
  PUBLISHED_ACCURACY,
  resolveBenchmarks,
} from "../lib/eval/evaluate.ts";
import { sampleSeed } from "../lib/engine/generate_batch.ts";
import { readJsonl } from "../lib/data/jsonl_store.ts";
import { loadModel } from "../lib/model/load.ts";
import { loadTokenizer } from "../lib/data/tokenizer.ts";
import { charTokenizer, fakeModel, fakeRows } from "./_eval_fakes.ts";

const DATA = new URL("../data/", import.meta.url).pathname;

function expected(rows: { id: string; answerLabel: string }[], seed = 0, run = 0) {
  let lenient = 0, strict = 0;
  for (const r of rows) {
    const s = sampleSeed(seed, r.id, run);
    const right = "ABCD"[s % 4] === r.answerLabel;
    if (right) lenient++;
    if (right && s % 3 !== 0) strict++;
  }
  return { lenient: lenient / rows.length, strict: strict / rows.length };
}

const benches = () => [
  { name: "alpha", table: aq.from(fakeRows(40, "a")) },
  { name: "beta", table: aq.from(fakeRows(30, "b")) },
];

Deno.test("evaluate: greedy by default; lenient headline and strict accuracy; CI; mean over benchmarks; files", async () => {
  const dir = await Deno.makeTempDir({ prefix: "eval_test_" });
  try {
    const model = fakeModel();
    const report = await evaluate(model, benches(), {
      tokenizer: charTokenizer,
      outputDir: dir,
      batchSize: 16,
    });
    assertEquals(model.calls[0].temperature, 0);
    assertEquals(report.benchmarks.map((b) => [b.name, b.n]), [["alpha", 40], ["beta", 30]]);
    for (const [i, b] of report.benchmarks.entries()) {
      const want = expected(fakeRows(i === 0 ? 40 : 30, i === 0 ? "a" : "b"));
      assertEquals(b.accuracy, want.lenient);
      assertEquals(b.lenientAccuracy, want.lenient);
      assertEquals(b.strictAccuracy, want.strict);
      assert(
        b.ci.low <= b.accuracy && b.accuracy <= b.ci.high && b.ci.high - b.ci.low > 0.05,
        "a real interval",
      );
      assertEquals(b.ci.level, 0.95);
    }
    assert(
      report.benchmarks.some((b) => b.lenientAccuracy > b.strictAccuracy),
      "lenient grading finds untagged answers",
    );
    assertEquals(report.mean!.accuracy, (report.benchmarks[0].accuracy + report.benchmarks[1].accuracy) / 2);
    assert(report.mean!.ci.low <= report.mean!.accuracy && report.mean!.accuracy <= report.mean!.ci.high);
    assertEquals(report.complete, true);
    // every prediction written, graded
    const preds = await readJsonl<Record<string, unknown>>(`${dir}/predictions.jsonl`);
    assertEquals(preds.length, 70);
    assertEquals(Object.keys(preds[0]).sort(), [
      "answerLabel",
      "benchmark",
      "completion",
      "extracted",
      "finishReason",
      "format",
      "id",
      "length",
      "lenient",
      "predictedLabel",
      "run",
      "strict",
    ]);
    const md = await Deno.readTextFile(`${dir}/report.md`);
    assert(md.includes("| alpha | 40 | lenient |") && md.includes("| beta | 30 | lenient |"));
    assert(md.includes("**mean of 2**"));
    assert(md.includes("greedy"));
    assertEquals(JSON.parse(await Deno.readTextFile(`${dir}/report.json`)).benchmarks.length, 2);
    assert((await Deno.readTextFile(`${dir}/accuracy.svg`)).includes(">alpha<"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("evaluate: resumes from predictions.jsonl without asking the model twice", async () => {
  const dir = await Deno.makeTempDir({ prefix: "eval_test_" });
  try {
    const full = await evaluate(fakeModel(), benches(), { tokenizer: charTokenizer, batchSize: 8 });
    const crashing = fakeModel();
    crashing.failOnCall = 4;
    await rejects(
      evaluate(crashing, benches(), { tokenizer: charTokenizer, outputDir: dir, batchSize: 8 }),
      /simulated crash/,
    );
    assertEquals((await readJsonl(`${dir}/predictions.jsonl`)).length, 24);
    const again = fakeModel();
    const resumed = await evaluate(again, benches(), {
      tokenizer: charTokenizer,
      outputDir: dir,
      batchSize: 8,
    });
    assertEquals(again.calls.reduce((s, c) => s + c.prompts.length, 0), 70 - 24);
    assertEquals(resumed.benchmarks, full.benchmarks);
    assertEquals((await readJsonl(`${dir}/predictions.jsonl`)).length, 70);
    await rejects(
      evaluate(fakeModel(), benches(), { tokenizer: charTokenizer, outputDir: dir, maxNewTokens: 5 }),
      /predictions\.jsonl was written with different settings/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("evaluate: sampled runs draw seed (seed, id, run); accuracy is the mean over runs", async () => {
  const model = fakeModel();
  const rows = fakeRows(24, "a");
  const report = await evaluate(model, [{ name: "alpha", table: aq.from(rows) }], {
    tokenizer: charTokenizer,
    runs: 3,
    temperature: 0.7,
    seed: 9,
  });
  assertEquals(model.calls[0].temperature, 0.7);
  const byRun = [0, 1, 2].map((r) => expected(rows, 9, r).lenient);
  const b = report.benchmarks[0];
  assertEquals(b.accuracyByRun, byRun);
  assert(Math.abs(b.accuracy - (byRun[0] + byRun[1] + byRun[2]) / 3) < 1e-12);
  assert(formatReport(report).includes("temperature 0.7"));
  // numGenerations is the same setting under the toolkit's one name for the sample count
  const same = await evaluate(fakeModel(), [{ name: "alpha", table: aq.from(rows) }], {
    tokenizer: charTokenizer,
    numGenerations: 3,
    temperature: 0.7,
    seed: 9,
  });
  assertEquals(same.benchmarks, report.benchmarks);
});

Deno.test("evaluate: stopped by a signal, the report covers what was answered and says so", async () => {
  const controller = new AbortController();
  const report = await evaluate(fakeModel(), benches(), {
    tokenizer: charTokenizer,
    batchSize: 10,
    signal: controller.signal,
    onProgress: ({ done }) => done >= 20 && controller.abort(),
  });
  assertEquals(report.complete, false);
  assertEquals(report.benchmarks.map((b) => [b.name, b.n]), [["alpha", 20]]);
  assert(formatReport(report).includes("**Incomplete"));
});

Deno.test("evaluate: truncated completions are counted and graded as written", async () => {
  const report = await evaluate(fakeModel(), [{ name: "alpha", table: aq.from(fakeRows(8, "a")) }], {
    tokenizer: charTokenizer,
    maxNewTokens: 4,
  });
  assertEquals(report.benchmarks[0].truncationRate, 1);
  assertEquals(report.benchmarks[0].strictAccuracy, 0);
});

Deno.test("compareReports: paired difference per benchmark and of the mean, with intervals", async () => {
  const base = await evaluate(fakeModel(), benches(), { tokenizer: charTokenizer, modelName: "base" });
  // an oracle that always answers right, in the recipe's format
  const oracle = fakeModel((_seed, prompt) => {
    const n = Number(/Question number (\d+)\?/.exec(prompt)![1]);
    return `<think>easy</think><answer>${"ABCD"[n % 4]}</answer>`;
  });
  const dir = await Deno.makeTempDir({ prefix: "eval_test_" });
  const tuned = await evaluate(oracle, benches(), {
    tokenizer: charTokenizer,
    modelName: "tuned",
    compareWith: base,
    outDir: dir,
  });
  const chart = await Deno.readTextFile(tuned.files!.comparisonSvg!);
  assert(chart.includes("accuracy difference vs base (points)") && chart.includes(">mean<"));
  await Deno.remove(dir, { recursive: true });
  const c = tuned.comparison!;
  assertEquals(c.other, "base");
  for (const [i, b] of c.benchmarks.entries()) {
    assertEquals(b.accuracy, 1);
    assertEquals(b.otherAccuracy, base.benchmarks[i].accuracy);
    assert(
      Math.abs(b.diff.estimate - (1 - base.benchmarks[i].accuracy)) < 1e-12,
      `${b.name}: paired difference ${b.diff.estimate} over ${b.n} shared questions, but 1 - base accuracy is ${
        1 - base.benchmarks[i].accuracy
      } (base n ${base.benchmarks[i].n})`,
    );
    assert(b.diff.low > 0, "an oracle is significantly better");
  }
  assert(Math.abs(c.mean!.estimate - (1 - base.mean!.accuracy)) < 1e-12);
  const md = formatReport(tuned);
  assert(md.includes("## Paired comparison: tuned minus base"));
  // comparing on the shared questions only
  const half = await evaluate(fakeModel(), [{ name: "alpha", table: aq.from(fakeRows(20, "a")) }], {
    tokenizer: charTokenizer,
  });
  const c2 = compareReports(tuned, half);
  assertEquals(c2.benchmarks.map((b) => [b.name, b.n]), [["alpha", 20]]);
});

Deno.test("resolveBenchmarks: registry names with a data folder, limits, and one file split by dataset name", async () => {
  const res = await resolveBenchmarks(["medqa", "pubmedqa"], { dataDir: DATA, limit: 5 });
  assertEquals(res.map((b) => [b.name, b.rows.length, b.grader]), [["medqa", 5, "lenient"], [
    "pubmedqa",
    5,
    "lenient",
  ]]);
  assertEquals(Object.values(res[1].rows[0].options), ["Yes", "No", "Maybe"]);
  // a Hugging Face dataset folder, one split (the parquet shard: 60 rows)
  const folder = await resolveBenchmarks([{ name: "rad", path: "vqa_rad_closed", split: "test" }], {
    dataDir: DATA,
  });
  assertEquals(folder[0].rows.length, 60);
  const mixed = aq.from([...fakeRows(3, "pmc_vqa"), ...fakeRows(2, "slake")]);
  const split = await resolveBenchmarks([{
    name: "eval",
    table: mixed,
    splitByDatasetName: true,
    grader: "strict",
  }]);
  assertEquals(split.map((b) => [b.name, b.rows.length, b.grader]), [["pmc_vqa", 3, "strict"], [
    "slake",
    2,
    "strict",
  ]]);
  await rejects(resolveBenchmarks(["nope"]), /Unknown benchmark 'nope'; known: medqa/);
  await rejects(
    resolveBenchmarks([{ name: "x", table: aq.from(fakeRows(1)) }, {
      name: "x",
      table: aq.from(fakeRows(1)),
    }]),
    /Two benchmarks are named 'x'/,
  );
  assertEquals(PUBLISHED_ACCURACY["Qwen2.5-VL-3B"]["VQA-RAD"], 62.01);
});

Deno.test("evaluate: an image benchmark with a text-only model is a clear error, before any generation", async () => {
  const model = fakeModel(undefined, { modelType: "qwen2" });
  await rejects(
    evaluate(model, ["medqa", "vqa_rad_closed"], { tokenizer: charTokenizer, dataDir: DATA, limit: 3 }),
    /Benchmark 'vqa_rad_closed' has 3 question\(s\) with images, but the model fake-model \(qwen2\) is text-only/,
  );
  assertEquals(model.calls.length, 0);
});

Deno.test({
  name: "evaluate: medthink-tiny on MedQA and PubMedQA subsets; the report lists both",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "eval_test_" });
    try {
      const model = await loadModel("medthink-tiny");
      // no tokenizer given: evaluate loads the model folder's (here the embedded default)
      const report = await evaluate(model, ["medqa", "pubmedqa"], {
        dataDir: DATA,
        limit: 6,
        maxNewTokens: 3,
        batchSize: 6,
        outDir: dir,
        modelName: "medthink-tiny",
      });
      assertEquals(report.benchmarks.map((b) => [b.name, b.n]), [["medqa", 6], ["pubmedqa", 6]]);
      for (const b of report.benchmarks) {
        assert(b.accuracy >= 0 && b.accuracy <= 1);
        assertEquals(b.truncationRate > 0, true);
      }
      const md = await Deno.readTextFile(`${dir}/report.md`);
      assert(md.startsWith("# Evaluation: medthink-tiny"));
      assert(md.includes("| medqa | 6 |") && md.includes("| pubmedqa | 6 |"));
      assertEquals((await readJsonl(`${dir}/predictions.jsonl`)).length, 12);
      model.dispose();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("stats: normal quantile, Wilson and normal intervals, seeded bootstrap", async () => {
  const {
    normalQuantile,
    wilsonInterval,
    normalInterval,
    bootstrapMeanCI,
    pairedBootstrapCI,
    bootstrapMeanOfMeansCI,
  } = await import("../lib/eval/stats.ts");
  // scipy.stats.norm.ppf
  assert(Math.abs(normalQuantile(0.975) - 1.959963984540054) < 1e-8);
  assert(Math.abs(normalQuantile(0.005) - -2.5758293035489) < 1e-8);
  assert(Math.abs(normalQuantile(0.5)) < 1e-12);
  assert(Math.abs(normalQuantile(0.025) + normalQuantile(0.975)) < 1e-12);
  // statsmodels proportion_confint(8, 10, method="wilson") = (0.4901625, 0.9433178)
  const w = wilsonInterval(8, 10);
  assert(Math.abs(w.low - 0.4901625) < 1e-6 && Math.abs(w.high - 0.9433178) < 1e-6);
  // method="normal" = (0.5520819, 1.0) after clipping
  const n = normalInterval(8, 10);
  assert(Math.abs(n.low - 0.5520819) < 1e-6 && n.high === 1);
  const values = Array.from({ length: 200 }, (_, i) => (i % 5 < 2 ? 1 : 0)); // p = 0.4
  const a = bootstrapMeanCI(values, { seed: 1 });
  assertEquals(a, bootstrapMeanCI(values, { seed: 1 }));
  assert(Math.abs(a.estimate - 0.4) < 1e-12);
  // the bootstrap interval agrees with Wilson's to within a couple of points at n = 200
  const wil = wilsonInterval(80, 200);
  assert(Math.abs(a.low - wil.low) < 0.02 && Math.abs(a.high - wil.high) < 0.02, JSON.stringify([a, wil]));
  const same = pairedBootstrapCI(values, values);
  assertEquals([same.estimate, same.low, same.high], [0, 0, 0]);
  const m = bootstrapMeanOfMeansCI([values, values.map((v) => 1 - v)]);
  assert(Math.abs(m.estimate - 0.5) < 1e-12 && m.low < 0.5 && m.high > 0.5);
});

Deno.test({
  name:
    "evaluate and probe: medthink-tiny-vl on VQA-RAD images; parquet and JSONL + JPEG give identical predictions",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const { probe } = await import("../lib/eval/probe.ts");
    const { loadDataset } = await import("../lib/data/dataset.ts");
    const model = await loadModel("medthink-tiny-vl");
    try {
      const tokenizer = await loadTokenizer(model.dir);
      const opts = { tokenizer, dataDir: DATA, limit: 4, maxNewTokens: 3, batchSize: 4 };
      const fromParquet = await evaluate(model, [{
        name: "vqa",
        path: "vqa_rad_closed/test-00000-of-00001.parquet",
      }], opts);
      const fromJsonl = await evaluate(model, [{ name: "vqa", path: "vqa_rad_closed/test.jsonl" }], opts);
      assertEquals(fromParquet.benchmarks[0].n, 4);
      assertEquals(fromParquet.scores, fromJsonl.scores);
      assertEquals(fromParquet.benchmarks, fromJsonl.benchmarks);
      // a batch mixing image rows and text-only rows
      const vqa = await loadDataset(`${DATA}vqa_rad_closed/test.jsonl`, { limit: 2 });
      const medqa = await loadDataset(`${DATA}medqa_4opt/test.jsonl`, { limit: 2 });
      const mixed = vqa.concat(medqa);
      const result = await probe(model, mixed, {
        tokenizer,
        n: 2,
        maxNewTokens: 2,
        batchSize: 4,
        template: "{question}\n{options}",
      });
      assertEquals(result.numRows(), 4);
      assertEquals(Array.from(result.array("n") as number[]), [2, 2, 2, 2]);
    } finally {
      model.dispose();
    }
  },
});

Deno.test("evaluate: a table or an array of rows is one benchmark, equal to the same rows given as a spec", async () => {
  const rows = fakeRows(24, "a");
  const spec = await evaluate(fakeModel(), [{ name: "held_out", table: aq.from(rows) }], {
    tokenizer: charTokenizer,
  });
  const table = await evaluate(fakeModel(), aq.from(rows), {
    tokenizer: charTokenizer,
    benchmarkName: "held_out",
  });
  const array = await evaluate(fakeModel(), rows, { tokenizer: charTokenizer, benchmarkName: "held_out" });
  assertEquals(table.benchmarks, spec.benchmarks);
  assertEquals(array.scores, spec.scores);
  assertEquals(Object.keys(array.scores.held_out).length, 24);
  assertEquals((await evaluate(fakeModel(), rows, { tokenizer: charTokenizer })).benchmarks[0].name, "eval");
  assertEquals(
    (await evaluate(fakeModel(), rows, { tokenizer: charTokenizer, grader: "strict" })).benchmarks[0]
      .accuracy,
    expected(rows).strict,
  );
});

Deno.test("evaluate: unknown option keys and a doubled output folder are errors naming the key", async () => {
  await rejects(
    // deno-lint-ignore no-explicit-any
    evaluate(fakeModel(), benches(), { tokenizer: charTokenizer, maxNewToken: 4 } as any),
    /Unknown key 'maxNewToken' in evaluate options: did you mean 'maxNewTokens'\?/,
  );
  await rejects(
    evaluate(fakeModel(), benches(), { tokenizer: charTokenizer, outputDir: "a", outDir: "b" }),
    /both outputDir and its alias outDir/,
  );
  await rejects(
    evaluate(fakeModel(), benches(), { tokenizer: charTokenizer, numGenerations: 2, runs: 2 }),
    /both numGenerations and its alias runs/,
  );
});
