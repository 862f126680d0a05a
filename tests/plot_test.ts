import {
  deepStrictEqual as assertEquals,
  match as assertMatch,
  ok as assert,
  throws,
} from "node:assert/strict";
import {
  accuracyBars,
  comparisonChart,
  display,
  grpoCurves,
  lossCurve,
  metricCurves,
  passCountHistogram,
  writeSvg,
} from "../lib/eval/plot.ts";
import { arquero as aq } from "../lib/util/deps.ts";

function texts(svg: string): string[] {
  return [...svg.matchAll(/<text[^>]*>([^<]*)<\/text>|<tspan[^>]*>([^<]*)<\/tspan>/g)].map((m) =>
    (m[1] ?? m[2]).trim()
  );
}

Deno.test("passCountHistogram: one bar per pass count 0..n, labelled with its question count", () => {
  const probed = aq.table({ id: ["a", "b", "c", "d", "e"], passCount: [0, 0, 1, 3, 0], n: [4, 4, 4, 4, 4] });
  const svg = passCountHistogram(probed, { title: "Probe" });
  assertMatch(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  // 5 bins (0..4), including the empty ones
  const bars = svg.match(/<rect /g) ?? [];
  assertEquals(bars.length, 5);
  const t = texts(svg);
  assert(t.includes("pass count (correct of 4)"), "x label");
  assert(t.some((s) => s.includes("questions")), "y label");
  assert(t.includes("Probe"), "title");
  // the bar labels are the counts 3,1,0,1,0
  for (const c of ["3", "1", "0"]) assert(t.includes(c));
});

Deno.test("passCountHistogram: a pass count above n is an error", () => {
  throws(() => passCountHistogram([{ passCount: 5 }], { n: 4 }), /exceeds n = 4/);
});

Deno.test("lossCurve and metricCurves draw one path per metric with axis labels", () => {
  const log = Array.from(
    { length: 10 },
    (_, i) => ({ step: i + 1, loss: 2 / (i + 1), reward: i / 10, kl: i * 1e-3 }),
  );
  const loss = lossCurve(log);
  assert((loss.match(/<path /g) ?? []).length >= 1);
  assert(texts(loss).some((s) => s.includes("loss")));
  assert(texts(loss).some((s) => s.includes("step")));
  const multi = metricCurves(log, { metrics: ["reward", "kl"], title: "run" });
  assertEquals((multi.match(/<svg /g) ?? []).length, 3); // outer + 2 panels
  assert(multi.includes(">reward<") && multi.includes(">kl<"));
  throws(() => lossCurve([{ step: 1, reward: 1 }]), /'loss'/);
});

Deno.test("grpoCurves picks reward, KL, length and clip columns in that order", () => {
  const log = [
    { step: 1, lr: 1e-6, clipFractionLow: 0, completionLengthMean: 10, kl: 0, rewardMean: 0.1 },
    { step: 2, lr: 1e-6, clipFractionLow: 0.1, completionLengthMean: 12, kl: 0.01, rewardMean: 0.2 },
  ];
  const svg = grpoCurves(log);
  const order = ["rewardMean", "kl", "completionLengthMean", "clipFractionLow"].map((m) =>
    svg.indexOf(`>${m}<`)
  );
  assert(order.every((i) => i > 0), "every metric drawn");
  assertEquals([...order].sort((a, b) => a - b), order);
  assert(!svg.includes(">lr<"), "learning rate is not a GRPO curve");
});

Deno.test("accuracyBars: bars in percent, whiskers, and published marks labelled as such", () => {
  const report = {
    benchmarks: [
      { name: "MedQA", accuracy: 0.3, ci: { low: 0.25, high: 0.35 } },
      { name: "VQA-RAD", accuracy: 0.6, ci: { low: 0.55, high: 0.66 } },
    ],
    mean: { accuracy: 0.45, ci: { low: 0.41, high: 0.49 } },
  };
  const svg = accuracyBars(report, { reference: { "VQA-RAD": 62.01, "PMC-VQA": 0.4477 } });
  const t = texts(svg);
  for (const s of ["30.0", "60.0", "45.0", "MedQA", "VQA-RAD", "mean", "PMC-VQA"]) assert(t.includes(s), s);
  assertEquals(t.filter((s) => s === "published").length, 2);
  assert(t.some((s) => s.includes("accuracy (%)")));
  // the mean bar comes last on the x axis
  assert(svg.lastIndexOf(">mean<") > svg.lastIndexOf(">PMC-VQA<"));
  const plain = accuracyBars([{ name: "A", accuracy: 0.5 }]);
  assert(!plain.includes("published"));
});

Deno.test("display wraps an SVG for Jupyter; writeSvg writes a standalone file", async () => {
  const svg = lossCurve([{ step: 1, loss: 1 }, { step: 2, loss: 0.5 }]);
  const shown = display(svg);
  assertEquals(shown[Symbol.for("Jupyter.display")](), { "image/svg+xml": svg });
  const dir = await Deno.makeTempDir();
  try {
    await writeSvg(`${dir}/sub/loss.svg`, svg);
    const text = await Deno.readTextFile(`${dir}/sub/loss.svg`);
    assertMatch(text, /^<\?xml version="1.0" encoding="UTF-8"\?>\n<svg xmlns=/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("comparisonChart: one dot and interval per benchmark plus the mean, signed labels, zero line", () => {
  const svg = comparisonChart({
    other: "base",
    benchmarks: [
      { name: "MedQA", diff: { estimate: 0.05, low: 0.01, high: 0.09 } },
      { name: "PubMedQA", diff: { estimate: -0.02, low: -0.06, high: 0.03 } },
    ],
    mean: { estimate: 0.015, low: -0.01, high: 0.04 },
  });
  const t = texts(svg);
  for (const s of ["MedQA", "PubMedQA", "mean", "+5.0", "-2.0", "+1.5"]) assert(t.includes(s), s);
  assert(t.some((s) => s.includes("accuracy difference vs base (points)")));
  assertEquals((svg.match(/<circle /g) ?? []).length, 3);
  throws(() => comparisonChart([]), /no benchmarks/);
});
