/**
 * Evaluation reports: the per-benchmark summary of graded predictions (accuracy with bootstrap
 * intervals, strict and lenient graders, format and truncation rates), the paired comparison of two
 * evaluations, and the report as Markdown.
 *
 * @module
 */
import type { GraderName, ResolvedBenchmark } from "./benchmarks.ts";
import { bootstrapMeanCI, bootstrapMeanOfMeansCI, type Interval, mean, pairedBootstrapCI } from "./stats.ts";

/** One graded completion, as written to `predictions.jsonl`. */
export interface Prediction {
  /** Benchmark name. */
  benchmark: string;
  /** Question id. */
  id: string;
  /** Run index (0-based). */
  run: number;
  /** The completion, decoded without special tokens. */
  completion: string;
  /** Generated tokens (stop token included). */
  length: number;
  /** `stop` (an end token) or `length` (hit `maxNewTokens`). */
  finishReason: "stop" | "length";
  /** The correct option's letter. */
  answerLabel: string;
  /** Lenient grader: the extracted answer. */
  extracted: string;
  /** Lenient grader: the option the extracted answer names, or null. */
  predictedLabel: string | null;
  /** 1 when the lenient grader says correct. */
  lenient: number;
  /** The recipe's reward, `medvlthinkerReward` (format and answer). */
  strict: number;
  /** The strict format check alone. */
  format: number;
}

/** Per-benchmark results. */
export interface BenchmarkResult {
  /** Benchmark name. */
  name: string;
  /** Questions evaluated. */
  n: number;
  /** Headline accuracy (grader below), mean over questions of the mean over runs. */
  accuracy: number;
  /** Bootstrap interval of `accuracy` (questions resampled). */
  ci: Interval;
  /** Which grader gives the headline accuracy. */
  grader: GraderName;
  /** Accuracy under the lenient grader (the recipe's evaluation). */
  lenientAccuracy: number;
  /** Accuracy under the recipe's reward, `medvlthinkerReward` (format and answer). */
  strictAccuracy: number;
  /** Bootstrap interval of `strictAccuracy`. */
  strictCi: Interval;
  /** Share of completions passing the strict format check. */
  formatRate: number;
  /** Share of completions that hit `maxNewTokens`. */
  truncationRate: number;
  /** Mean generated tokens per completion. */
  meanResponseLength: number;
  /** Accuracy of each run separately. */
  accuracyByRun: number[];
}

/** A paired comparison of two evaluations on their shared questions. */
export interface Comparison {
  /** The other evaluation's model name. */
  other: string;
  /** Per shared benchmark: shared questions, both accuracies, and the paired difference (this minus other). */
  benchmarks: { name: string; n: number; accuracy: number; otherAccuracy: number; diff: Interval }[];
  /** Difference of the means over the compared benchmarks. */
  mean: Interval | null;
}

/** What {@linkcode evaluate} returns (and writes as report.json). */
export interface EvalReport {
  /** The model's name. */
  model: string;
  /** Decoding settings (temperature, topP, topK, maxNewTokens, seed, template, runs). */
  settings: Record<string, unknown>;
  /** One entry per benchmark, in the order given. */
  benchmarks: BenchmarkResult[];
  /** Plain mean over benchmarks, with a bootstrap interval (each benchmark resampled). */
  mean: { accuracy: number; ci: Interval; strictAccuracy: number } | null;
  /** False when the run was stopped before every question was answered. */
  complete: boolean;
  /** Per benchmark, question id -> headline score (mean over runs): what paired comparisons use. */
  scores: Record<string, Record<string, number>>;
  /** The paired comparison asked for with `compareWith`. */
  comparison?: Comparison;
  /** Files written (when `outDir` was given). */
  files?: { predictions: string; json: string; markdown: string; svg: string; comparisonSvg?: string };
}

/**
 * Summarize graded predictions (keyed `benchmark NUL id NUL run`) into a report: a question counts once
 * all its `runs` are graded, so a stopped run reports the questions it finished.
 */
export function summarize(
  modelName: string,
  settings: Record<string, unknown>,
  resolved: ResolvedBenchmark[],
  preds: Map<string, Prediction>,
  runs: number,
  boot: { samples: number; level: number; seed: number },
): EvalReport {
  const results: BenchmarkResult[] = [];
  const scores: Record<string, Record<string, number>> = {};
  const headlineGroups: number[][] = [];
  for (const b of resolved) {
    const headline: number[] = [], lenient: number[] = [], strict: number[] = [];
    const byRun: number[][] = Array.from({ length: runs }, () => []);
    let format = 0, truncated = 0, length = 0, count = 0;
    const perQuestion: Record<string, number> = {};
    for (const row of b.rows) {
      const ps: Prediction[] = [];
      for (let r = 0; r < runs; r++) {
        const p = preds.get(`${b.name}\u0000${row.id}\u0000${r}`);
        if (p) ps.push(p);
      }
      if (ps.length < runs) continue; // not answered yet (a stopped run)
      const l = mean(ps.map((p) => p.lenient));
      const s = mean(ps.map((p) => p.strict));
      lenient.push(l);
      strict.push(s);
      const h = b.grader === "lenient" ? l : s;
      headline.push(h);
      perQuestion[String(row.id)] = h;
      ps.forEach((p, r) => byRun[r].push(b.grader === "lenient" ? p.lenient : p.strict));
      for (const p of ps) {
        format += p.format;
        truncated += p.finishReason === "length" ? 1 : 0;
        length += p.length;
        count++;
      }
    }
    if (headline.length === 0) continue;
    scores[b.name] = perQuestion;
    headlineGroups.push(headline);
    results.push({
      name: b.name,
      n: headline.length,
      accuracy: mean(headline),
      ci: bootstrapMeanCI(headline, boot),
      grader: b.grader,
      lenientAccuracy: mean(lenient),
      strictAccuracy: mean(strict),
      strictCi: bootstrapMeanCI(strict, boot),
      formatRate: format / count,
      truncationRate: truncated / count,
      meanResponseLength: length / count,
      accuracyByRun: byRun.map((x) => mean(x)),
    });
  }
  const meanResult = results.length > 0
    ? {
      accuracy: mean(results.map((r) => r.accuracy)),
      ci: bootstrapMeanOfMeansCI(headlineGroups, boot),
      strictAccuracy: mean(results.map((r) => r.strictAccuracy)),
    }
    : null;
  return {
    model: modelName,
    settings: { ...settings },
    benchmarks: results,
    mean: meanResult,
    complete: true,
    scores,
  };
}

/** Options of {@linkcode compareReports}. */
export interface CompareOptions {
  /** Bootstrap resamples. Default 2000. */
  samples?: number;
  /** Interval coverage. Default 0.95. */
  level?: number;
  /** Bootstrap seed. Default 0. */
  seed?: number;
}

/**
 * Paired comparison of two evaluations (`a` minus `b`) on the questions both answered, per benchmark
 * they share, with paired bootstrap intervals; and of the mean over those benchmarks.
 *
 * @example
 * ```ts
 * import { compareReports, type EvalReport } from "./evaluate.ts";
 * const base = { model: "base", scores: { medqa: { q1: 0, q2: 1, q3: 0 } } } as unknown as EvalReport;
 * const tuned = { model: "tuned", scores: { medqa: { q1: 1, q2: 1, q3: 1 } } } as unknown as EvalReport;
 * const c = compareReports(tuned, base);
 * console.assert(Math.abs(c.benchmarks[0].diff.estimate - 2 / 3) < 1e-12);
 * ```
 */
export function compareReports(a: EvalReport, b: EvalReport, options: CompareOptions = {}): Comparison {
  const { samples = 2000, level = 0.95, seed = 0 } = options;
  if (!a.scores || !b.scores) {
    throw new Error("compareReports needs reports with per-question scores (from evaluate).");
  }
  const out: Comparison["benchmarks"] = [];
  const diffs: number[][] = [];
  for (const [name, sa] of Object.entries(a.scores)) {
    const sb = b.scores[name];
    if (!sb) continue;
    const ids = Object.keys(sa).filter((id) => id in sb);
    if (ids.length === 0) continue;
    const xa = ids.map((id) => sa[id]);
    const xb = ids.map((id) => sb[id]);
    out.push({
      name,
      n: ids.length,
      accuracy: mean(xa),
      otherAccuracy: mean(xb),
      diff: pairedBootstrapCI(xa, xb, { samples, level, seed }),
    });
    diffs.push(ids.map((_, i) => xa[i] - xb[i]));
  }
  if (out.length === 0) {
    throw new Error(`Reports of ${a.model} and ${b.model} share no benchmark questions to compare.`);
  }
  return {
    other: b.model,
    benchmarks: out,
    mean: diffs.length > 0 ? bootstrapMeanOfMeansCI(diffs, { samples, level, seed }) : null,
  };
}

function pct(x: number): string {
  return Number.isFinite(x) ? (100 * x).toFixed(1) : "n/a";
}

function pctCi(i: Interval): string {
  return `${pct(i.estimate)} (${pct(i.low)}–${pct(i.high)})`;
}

function signedPct(i: Interval): string {
  const s = (x: number) => (x >= 0 ? "+" : "") + pct(x);
  return `${s(i.estimate)} (${s(i.low)} to ${s(i.high)})`;
}

/** The report as Markdown: settings, one table row per benchmark, the mean, and any comparison. */
export function formatReport(report: EvalReport): string {
  const s = report.settings;
  const level = report.benchmarks[0]?.ci.level ?? 0.95;
  const L = Math.round(level * 100);
  const lines = [
    `# Evaluation: ${report.model}`,
    "",
    `Decoding: ${
      Number(s.temperature) === 0 ? "greedy" : `temperature ${s.temperature}, top-p ${s.topP}`
    }, ` +
    `up to ${s.maxNewTokens} new tokens, ${s.runs ?? 1} run(s), seed ${s.seed}.` +
    (report.complete
      ? ""
      : " **Incomplete: the run was stopped; the numbers cover the questions answered.**"),
    "",
    `Accuracy in percent with ${L}% bootstrap intervals. Headline grader per benchmark as listed; ` +
    `strict = the recipe's reward (format and answer).`,
    "",
    `| benchmark | questions | grader | accuracy (${L}% CI) | lenient | strict (${L}% CI) | format ok | truncated | mean length |`,
    "| --- | ---: | --- | --- | ---: | --- | ---: | ---: | ---: |",
  ];
  for (const b of report.benchmarks) {
    lines.push(
      `| ${b.name} | ${b.n} | ${b.grader} | ${pctCi(b.ci)} | ${pct(b.lenientAccuracy)} | ${
        pctCi(b.strictCi)
      } | ` +
        `${pct(b.formatRate)} | ${pct(b.truncationRate)} | ${b.meanResponseLength.toFixed(1)} |`,
    );
  }
  if (report.mean) {
    lines.push(
      `| **mean of ${report.benchmarks.length}** | ${report.benchmarks.reduce((t, b) => t + b.n, 0)} | | ` +
        `${pctCi(report.mean.ci)} | | ${pct(report.mean.strictAccuracy)} | | | |`,
    );
  }
  if (report.comparison) {
    const c = report.comparison;
    lines.push(
      "",
      `## Paired comparison: ${report.model} minus ${c.other}`,
      "",
      `Same questions in both runs; difference in percentage points with a paired ${L}% bootstrap interval.`,
      "",
      `| benchmark | shared questions | this | other | difference (${L}% CI) |`,
      "| --- | ---: | ---: | ---: | --- |",
    );
    for (const b of c.benchmarks) {
      lines.push(
        `| ${b.name} | ${b.n} | ${pct(b.accuracy)} | ${pct(b.otherAccuracy)} | ${signedPct(b.diff)} |`,
      );
    }
    if (c.mean) lines.push(`| **mean** | | | | ${signedPct(c.mean)} |`);
  }
  return lines.join("\n") + "\n";
}
