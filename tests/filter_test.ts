import { deepStrictEqual as assertEquals, ok as assert, throws } from "node:assert/strict";
import { arquero as aq } from "../lib/util/deps.ts";
import {
  attachProbe,
  filter,
  filterWithReport,
  findOverlap,
  formatFilterReport,
  normalizeQuestion,
} from "../lib/eval/filter.ts";
import { loadDataset } from "../lib/data/dataset.ts";

const DATA = new URL("../data/", import.meta.url).pathname;

function probed(counts: number[], n: number) {
  return aq.table({ id: counts.map((_, i) => `q${i}`), passCount: counts, n: counts.map(() => n) });
}

Deno.test("filter: the recipe's band keeps 1..7 of 16", () => {
  const counts = Array.from({ length: 17 }, (_, k) => k); // one question per pass count 0..16
  const { table, report } = filterWithReport(probed(counts, 16));
  assertEquals(Array.from(table.array("passCount") as number[]), [1, 2, 3, 4, 5, 6, 7]);
  assertEquals(report.total, 17);
  assertEquals(report.kept, 7);
  assertEquals(report.droppedTooHard, 1);
  assertEquals(report.droppedNeverSolved, 1);
  assertEquals(report.droppedTooEasy, 9);
  assertEquals(report.histogram["0/16"], 1);
  assertEquals(report.histogram["16/16"], 1);
});

Deno.test("filter: for n = 4 the same band keeps exactly 1 correct", () => {
  const kept = filter(probed([0, 1, 2, 3, 4, 1], 4));
  assertEquals(Array.from(kept.array("id") as string[]), ["q1", "q5"]);
});

Deno.test("filter: explicit pass-count and rate bands", () => {
  const t = probed([0, 1, 2, 3, 4], 4);
  assertEquals(Array.from(filter(t, { minPass: 1, maxPass: 3 }).array("id") as string[]), ["q1", "q2", "q3"]);
  assertEquals(Array.from(filter(t, { minRate: 0.5, maxRate: 1 }).array("id") as string[]), [
    "q2",
    "q3",
    "q4",
  ]);
  // counts win over rates when both are given
  assertEquals(filter(t, { minPass: 4, minRate: 0, maxRate: 1 }).numRows(), 1);
});

Deno.test("filter: easy-to-hard orders by pass rate (curriculum), ties stable; other columns follow", () => {
  const t = aq.table({
    id: ["a", "b", "c", "d", "e"],
    passCount: [1, 7, 3, 7, 2],
    n: [16, 16, 16, 16, 16],
    question: ["qa", "qb", "qc", "qd", "qe"],
  });
  const easy = filter(t, { order: "easy-to-hard" });
  assertEquals(Array.from(easy.array("id") as string[]), ["b", "d", "c", "e", "a"]);
  assertEquals(Array.from(easy.array("question") as string[]), ["qb", "qd", "qc", "qe", "qa"]);
  const hard = filter(t, { order: "hard-to-easy" });
  assertEquals(Array.from(hard.array("id") as string[]), ["a", "e", "c", "b", "d"]);
  throws(() => filter(t, { order: "random" as never }), /order must be/);
});

Deno.test("filter: needs probe columns and valid counts", () => {
  throws(() => filter(aq.table({ id: ["a"] })), /no 'passCount' column/);
  throws(() => filter(probed([5], 4)), /Row 0 .*passCount 5 out of n 4/);
});

Deno.test("filter report reads as Markdown", () => {
  const { report } = filterWithReport(probed([0, 0, 1, 3, 4], 4));
  const text = formatFilterReport(report);
  assert(text.includes("kept 1 of 5"));
  assert(text.includes("too hard: 2 (never solved: 2)"));
  assert(text.includes("too easy: 2"));
  assert(text.includes("0/4: 2, 1/4: 1, 3/4: 1, 4/4: 1"));
});

Deno.test("attachProbe joins pass counts onto dataset rows by id", () => {
  const data = aq.table({ id: ["x", "y"], question: ["Q1", "Q2"] });
  const pr = aq.table({ id: ["y", "x"], passCount: [1, 0], n: [4, 4], passRate: [0.25, 0] });
  const joined = attachProbe(data, pr);
  assertEquals(joined.objects(), [
    { id: "x", question: "Q1", passCount: 0, n: 4, passRate: 0 },
    { id: "y", question: "Q2", passCount: 1, n: 4, passRate: 0.25 },
  ]);
  assertEquals(Array.from(filter(joined).array("question") as string[]), ["Q2"]);
  throws(() => attachProbe(aq.table({ id: ["z"] }), pr), /row 0 \(id z\) has no probe result/);
  assertEquals(attachProbe(aq.table({ id: ["z", "x"] }), pr, { missing: "drop" }).numRows(), 1);
});

Deno.test("findOverlap: same normalised question or same hash; optional removal", () => {
  assertEquals(normalizeQuestion("  What's the  DIAGNOSIS?\n"), "what s the diagnosis");
  const train = aq.table({
    id: ["t1", "t2", "t3", "t4"],
    question: ["What is the diagnosis?", "Unrelated question", "Another one", "Fourth"],
    hash: ["h1", "h2", "hX", null],
  });
  const medqa = aq.table({ id: ["m1"], question: ["what is the DIAGNOSIS"], hash: ["zz"] });
  const other = aq.table({ id: ["o1", "o2"], question: ["Totally different", "Fourth"], hash: ["hX", null] });
  const res = findOverlap(train, { medqa, other });
  assertEquals(res.matches, [
    { trainId: "t1", benchmark: "medqa", benchmarkId: "m1", by: "question" },
    { trainId: "t3", benchmark: "other", benchmarkId: "o1", by: "hash" },
    { trainId: "t4", benchmark: "other", benchmarkId: "o2", by: "question" },
  ]);
  assertEquals(res.trainIds, ["t1", "t3", "t4"]);
  assertEquals(res.table.numRows(), 4); // not removed unless asked
  const removed = findOverlap(train, [medqa, other], { remove: true });
  assertEquals(Array.from(removed.table.array("id") as string[]), ["t2"]);
});

Deno.test("findOverlap on real data: MedQA against a slice of its own rows", async () => {
  const medqa = await loadDataset(`${DATA}medqa_4opt/test.jsonl`, { limit: 200 });
  const bench = medqa.slice(150, 160);
  const res = findOverlap(medqa, { medqa: bench }, { remove: true });
  assertEquals(res.trainIds.length >= 10, true);
  assertEquals(res.table.numRows(), 200 - res.trainIds.length);
  const ids = Array.from(bench.array("id") as string[]);
  for (const id of ids) assert(res.trainIds.includes(id));
});

Deno.test("filter, attachProbe, findOverlap: unknown option keys are errors naming the key", () => {
  const probed = aq.table({ id: ["a"], passCount: [1], n: [4] });
  // deno-lint-ignore no-explicit-any
  const loose = (o: Record<string, unknown>) => o as any;
  throws(
    () => filter(probed, loose({ min_rate: 0.1 })),
    /Unknown key 'min_rate' in filter options: did you mean 'minRate'\?/,
  );
  throws(
    () => attachProbe(probed, probed, loose({ missin: "drop" })),
    /Unknown key 'missin' in attachProbe options/,
  );
  throws(
    () => findOverlap(probed, [probed], loose({ removed: true })),
    /Unknown key 'removed' in findOverlap options/,
  );
});
