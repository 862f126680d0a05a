/**
 * The toolkit's charts as SVG strings, drawn with Observable Plot on a server-side DOM (linkedom):
 * the probe's pass-count histogram, training curves (loss; reward, KL, length, clip fraction) and
 * per-benchmark accuracy bars with confidence intervals and published reference marks.
 *
 * Every function returns a standalone SVG document string: write it with {@linkcode writeSvg}, or
 * show it in a Jupyter notebook (Deno kernel) with {@linkcode display}.
 *
 * @module
 */
import { parseHTML, Plot } from "../util/deps.ts";
import { tableRows } from "../util/table.ts";

/** Size and title of a chart. */
export interface ChartOptions {
  /** Drawn above the plot. */
  title?: string;
  /** Pixels. Default 640. */
  width?: number;
  /** Pixels. Default 320 (per panel for multi-panel charts). */
  height?: number;
}

/** Something with rows: an arquero table (`objects()`) or a plain array of records. */
export type Rows = Record<string, unknown>[] | { objects(): unknown[] };

const SVG_NS = "http://www.w3.org/2000/svg";

function toRows(data: Rows): Record<string, unknown>[] {
  return tableRows(data, "A chart's data");
}

// Deno's default type libraries have no DOM: the document is only handed to Plot.
function newDocument(): unknown {
  return (parseHTML("<!DOCTYPE html><html><head></head><body></body></html>") as unknown as {
    document: unknown;
  })
    .document;
}

function escapeXml(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

// Plot returns an <svg> element for charts without legends/captions (we never ask for those, so
// the output is always plain SVG); a standalone .svg file needs the namespace declared.
function render(options: Record<string, unknown>): string {
  const el = Plot.plot({ ...options, document: newDocument() } as Plot.PlotOptions) as unknown as {
    outerHTML: string;
  };
  let svg = el.outerHTML;
  if (!svg.startsWith("<svg")) throw new Error("Observable Plot did not return an SVG element.");
  if (!/^<svg[^>]*\sxmlns=/.test(svg)) svg = svg.replace(/^<svg/, `<svg xmlns="${SVG_NS}"`);
  return svg;
}

function titleMark(title: string | undefined): unknown[] {
  return title ? [Plot.text([title], { frameAnchor: "top", dy: -30, fontSize: 13, fontWeight: "bold" })] : [];
}

/**
 * Histogram of pass counts (questions per number of correct samples, 0..n) from a probe table.
 *
 * @example
 * ```ts
 * import { passCountHistogram } from "./plot.ts";
 * const svg = passCountHistogram([{ passCount: 0, n: 4 }, { passCount: 1, n: 4 }, { passCount: 1, n: 4 }]);
 * console.assert(svg.startsWith("<svg"));
 * ```
 */
export function passCountHistogram(
  probed: Rows | number[],
  options: ChartOptions & { n?: number } = {},
): string {
  const rows: Record<string, unknown>[] = Array.isArray(probed) && typeof probed[0] === "number"
    ? (probed as number[]).map((p) => ({ passCount: p }))
    : toRows(probed as Rows);
  const counts = rows.map((r, i) => {
    const p = Number(r.passCount);
    if (!Number.isInteger(p) || p < 0) throw new Error(`Row ${i} has passCount ${r.passCount}, not a count.`);
    return p;
  });
  const n = options.n ?? Math.max(0, ...counts, ...rows.map((r) => Number(r.n ?? 0)));
  const bins = Array.from({ length: n + 1 }, (_, k) => ({ passCount: k, questions: 0 }));
  for (const p of counts) {
    if (p > n) throw new Error(`A pass count of ${p} exceeds n = ${n}.`);
    bins[p].questions++;
  }
  return render({
    width: options.width ?? 640,
    height: options.height ?? 320,
    marginTop: options.title ? 44 : 24,
    x: { label: `pass count (correct of ${n})`, type: "band", domain: bins.map((b) => b.passCount) },
    // Whole questions only: as many ticks as there are integers, at most 10.
    y: {
      label: "questions",
      grid: true,
      ticks: Math.max(1, Math.min(10, Math.max(...bins.map((b) => b.questions)))),
      tickFormat: "d",
    },
    marks: [
      Plot.barY(bins, { x: "passCount", y: "questions", fill: "steelblue" }),
      Plot.text(bins, {
        x: "passCount",
        y: "questions",
        text: (d: { questions: number }) => String(d.questions),
        dy: -6,
      }),
      Plot.ruleY([0]),
      ...titleMark(options.title),
    ],
  });
}

/** Options of {@linkcode lineChart}. */
export interface LineChartOptions extends ChartOptions {
  /** Column on the x axis. Default `step`. */
  x?: string;
  /** Column on the y axis. */
  y: string;
  /** Axis labels (default: the column names). */
  xLabel?: string;
  /** Label of the y axis (default: the column name). */
  yLabel?: string;
  /** Draw a dot per point as well. Default: when there are at most 50 points. */
  dots?: boolean;
}

/**
 * A line chart of one metric over steps, from a table of logged metrics (one row per step).
 * Rows where the metric is missing or not a number are skipped.
 */
export function lineChart(data: Rows, options: LineChartOptions): string {
  const x = options.x ?? "step";
  const y = options.y;
  const all = toRows(data);
  if (all.length > 0 && !all.some((r) => y in r)) {
    throw new Error(`No row of the metric table has a '${y}' column.`);
  }
  const rows = all
    .map((r, i) => ({ x: r[x] === undefined ? i : Number(r[x]), y: Number(r[y]) }))
    .filter((r) => r.y !== null && Number.isFinite(r.y) && Number.isFinite(r.x));
  const dots = options.dots ?? rows.length <= 50;
  return render({
    width: options.width ?? 640,
    height: options.height ?? 260,
    marginTop: options.title ? 44 : 24,
    marginLeft: 56,
    x: { label: options.xLabel ?? x },
    y: { label: options.yLabel ?? y, grid: true },
    marks: [
      Plot.lineY(rows, { x: "x", y: "y", stroke: "steelblue" }),
      ...(dots ? [Plot.dot(rows, { x: "x", y: "y", fill: "steelblue", r: 2 })] : []),
      ...titleMark(options.title),
    ],
  });
}

/**
 * The loss curve of a training run (default columns `step` and `loss`).
 *
 * @example
 * ```ts
 * import { lossCurve } from "./plot.ts";
 * const svg = lossCurve([{ step: 1, loss: 2.3 }, { step: 2, loss: 1.9 }, { step: 3, loss: 1.6 }]);
 * console.assert(svg.includes("loss"));
 * ```
 */
export function lossCurve(data: Rows, options: ChartOptions & { x?: string; y?: string } = {}): string {
  return lineChart(data, { title: "Training loss", ...options, y: options.y ?? "loss" });
}

/** Options of {@linkcode metricCurves}. */
export interface MetricCurvesOptions extends ChartOptions {
  /** Column on the x axis. Default `step`. */
  x?: string;
  /** Metrics to draw, one panel each. Default: every numeric column except `x`. */
  metrics?: string[];
}

/**
 * Several metrics of a run as stacked line charts, one panel per metric with its own y scale,
 * combined into one SVG.
 *
 * @example
 * ```ts
 * import { metricCurves } from "./plot.ts";
 * const log = [{ step: 1, reward: 0.1, kl: 0 }, { step: 2, reward: 0.3, kl: 0.01 }];
 * const svg = metricCurves(log, { metrics: ["reward", "kl"] });
 * console.assert(svg.includes("reward") && svg.includes("kl"));
 * ```
 */
export function metricCurves(data: Rows, options: MetricCurvesOptions = {}): string {
  const x = options.x ?? "step";
  const rows = toRows(data);
  const metrics = options.metrics ??
    [...new Set(rows.flatMap((r) => Object.keys(r)))].filter((k) =>
      k !== x && rows.some((r) => typeof r[k] === "number" && Number.isFinite(r[k] as number))
    );
  if (metrics.length === 0) throw new Error("metricCurves found no numeric metric column to draw.");
  const width = options.width ?? 640;
  const panelHeight = options.height ?? 200;
  const top = options.title ? 28 : 0;
  const panels = metrics.map((m) => lineChart(rows, { x, y: m, width, height: panelHeight, title: m }));
  const total = top + panels.length * panelHeight;
  const parts = panels.map((svg, i) => svg.replace(/^<svg/, `<svg x="0" y="${top + i * panelHeight}"`));
  const title = options.title
    ? `<text x="8" y="20" font-family="system-ui, sans-serif" font-size="14" font-weight="bold">${
      escapeXml(options.title)
    }</text>`
    : "";
  return `<svg xmlns="${SVG_NS}" width="${width}" height="${total}" viewBox="0 0 ${width} ${total}">` +
    `<rect width="100%" height="100%" fill="white"/>${title}${parts.join("")}</svg>`;
}

/** The GRPO metrics a researcher watches, in the order drawn by {@linkcode grpoCurves}. */
export const GRPO_CURVE_PATTERNS: RegExp[] = [/reward/i, /^kl|kl$/i, /length/i, /clip/i];

/**
 * Reward, KL, completion length and clip-fraction curves of a GRPO log: draws every column whose
 * name matches one of {@linkcode GRPO_CURVE_PATTERNS} (e.g. `rewardMean`, `kl`, `completionLengthMean`,
 * `clipFractionLow`), in that order.
 */
export function grpoCurves(data: Rows, options: Omit<MetricCurvesOptions, "metrics"> = {}): string {
  const rows = toRows(data);
  const names = [...new Set(rows.flatMap((r) => Object.keys(r)))].filter((k) =>
    rows.some((r) => typeof r[k] === "number")
  );
  const metrics: string[] = [];
  for (const re of GRPO_CURVE_PATTERNS) {
    for (const k of names) if (re.test(k) && !metrics.includes(k)) metrics.push(k);
  }
  if (metrics.length === 0) {
    throw new Error(`The GRPO log has no reward, KL, length or clip column (columns: ${names.join(", ")}).`);
  }
  return metricCurves(rows, { title: "GRPO", ...options, metrics });
}

/** One bar of {@linkcode accuracyBars}: accuracy (0..1) with an optional interval. */
export interface AccuracyBar {
  /** Benchmark name (x axis). */
  name: string;
  /** Accuracy, 0..1. */
  accuracy: number;
  /** Lower interval bound, 0..1. */
  low?: number;
  /** Upper interval bound, 0..1. */
  high?: number;
}

/** Options of {@linkcode accuracyBars}. */
export interface AccuracyBarsOptions extends ChartOptions {
  /**
   * Published reference accuracies per benchmark name, drawn as marks labelled "published"
   * (values above 1 are read as percentages, as papers print them).
   */
  reference?: Record<string, number>;
  /** Label of the reference marks. Default `published`. */
  referenceLabel?: string;
}

function barsFrom(input: AccuracyBar[] | { benchmarks: unknown[]; mean?: unknown }): AccuracyBar[] {
  if (Array.isArray(input)) return input;
  // An evaluate() report: its benchmarks, then the mean over them.
  // deno-lint-ignore no-explicit-any
  const bars: AccuracyBar[] = (input.benchmarks as any[]).map((b) => ({
    name: b.name,
    accuracy: b.accuracy,
    low: b.ci?.low,
    high: b.ci?.high,
  }));
  // deno-lint-ignore no-explicit-any
  const m = input.mean as any;
  if (m && typeof m.accuracy === "number" && bars.length > 1) {
    bars.push({ name: "mean", accuracy: m.accuracy, low: m.ci?.low, high: m.ci?.high });
  }
  return bars;
}

/**
 * Per-benchmark accuracy bars (percent) with 95% interval whiskers, and optional published
 * reference marks labelled as such. Takes bars or an `evaluate()` report.
 *
 * @example
 * ```ts
 * import { accuracyBars } from "./plot.ts";
 * const svg = accuracyBars([{ name: "VQA-RAD", accuracy: 0.62, low: 0.56, high: 0.68 }], {
 *   reference: { "VQA-RAD": 62.01 },
 * });
 * console.assert(svg.includes("published"));
 * ```
 */
export function accuracyBars(
  input: AccuracyBar[] | { benchmarks: unknown[]; mean?: unknown },
  options: AccuracyBarsOptions = {},
): string {
  const bars = barsFrom(input).map((b) => ({
    name: b.name,
    accuracy: 100 * b.accuracy,
    low: b.low === undefined ? undefined : 100 * b.low,
    high: b.high === undefined ? undefined : 100 * b.high,
  }));
  const label = options.referenceLabel ?? "published";
  const refs = Object.entries(options.reference ?? {}).map(([name, v]) => ({
    name,
    value: v > 1 ? v : 100 * v,
    label,
  }));
  const names = bars.map((b) => b.name).filter((n) => n !== "mean");
  const domain = [...names, ...refs.map((r) => r.name).filter((n) => !names.includes(n) && n !== "mean")];
  if (bars.some((b) => b.name === "mean") || refs.some((r) => r.name === "mean")) domain.push("mean");
  const whiskers = bars.filter((b) => b.low !== undefined && b.high !== undefined);
  return render({
    width: options.width ?? 640,
    height: options.height ?? 340,
    marginTop: options.title ? 44 : 24,
    marginBottom: 40,
    x: { label: "benchmark", domain, padding: 0.25 },
    y: { label: "accuracy (%)", domain: [0, 100], grid: true },
    marks: [
      Plot.barY(bars, { x: "name", y: "accuracy", fill: "steelblue" }),
      Plot.ruleX(whiskers, { x: "name", y1: "low", y2: "high", stroke: "black", strokeWidth: 1.5 }),
      Plot.tickY(whiskers, { x: "name", y: "low", stroke: "black", inset: 14 }),
      Plot.tickY(whiskers, { x: "name", y: "high", stroke: "black", inset: 14 }),
      Plot.text(bars, {
        x: "name",
        y: 0,
        text: (d: { accuracy: number }) => d.accuracy.toFixed(1),
        dy: -10,
        fill: "white",
        fontWeight: "bold",
      }),
      ...(refs.length > 0
        ? [
          Plot.tickY(refs, {
            x: "name",
            y: "value",
            stroke: "#d62728",
            strokeWidth: 3,
            strokeDasharray: "4,2",
          }),
          Plot.text(refs, { x: "name", y: "value", text: "label", dy: -7, fill: "#d62728", fontSize: 10 }),
        ]
        : []),
      Plot.ruleY([0]),
      ...titleMark(options.title),
    ],
  });
}

/** One row of {@linkcode comparisonChart}: a paired difference (0..1 scale) with its interval. */
export interface DifferenceRow {
  /** Benchmark name. */
  name: string;
  /** The difference and its interval, e.g. `evaluate()`'s `comparison.benchmarks[i].diff`. */
  diff: { estimate: number; low: number; high: number };
}

/**
 * A paired comparison of two models as a dot-and-whisker chart: per benchmark (and the mean), the
 * accuracy difference in percentage points with its interval, and a zero line. Takes
 * `report.comparison` from `evaluate(..., { compareWith })` or rows.
 *
 * @example
 * ```ts
 * import { comparisonChart } from "./plot.ts";
 * const svg = comparisonChart({
 *   other: "base",
 *   benchmarks: [{ name: "MedQA", diff: { estimate: 0.05, low: 0.01, high: 0.09 } }],
 *   mean: { estimate: 0.05, low: 0.01, high: 0.09 },
 * });
 * console.assert(svg.includes("MedQA"));
 * ```
 */
export function comparisonChart(
  input: DifferenceRow[] | {
    other?: string;
    benchmarks: DifferenceRow[];
    mean?: DifferenceRow["diff"] | null;
  },
  options: ChartOptions = {},
): string {
  const rows = Array.isArray(input) ? [...input] : [...input.benchmarks];
  if (!Array.isArray(input) && input.mean) rows.push({ name: "mean", diff: input.mean });
  if (rows.length === 0) throw new Error("comparisonChart was given no benchmarks.");
  const data = rows.map((r) => ({
    name: r.name,
    estimate: 100 * r.diff.estimate,
    low: 100 * r.diff.low,
    high: 100 * r.diff.high,
  }));
  const label = !Array.isArray(input) && input.other
    ? `accuracy difference vs ${input.other} (points)`
    : "accuracy difference (points)";
  return render({
    width: options.width ?? 640,
    height: options.height ?? Math.max(160, 50 + 36 * data.length),
    marginTop: options.title ? 44 : 24,
    marginLeft: 120,
    x: { label, grid: true },
    y: { label: null, domain: data.map((d) => d.name) },
    marks: [
      Plot.ruleX([0], { stroke: "#888" }),
      Plot.ruleY(data, { y: "name", x1: "low", x2: "high", stroke: "black", strokeWidth: 1.5 }),
      Plot.dot(data, {
        y: "name",
        x: "estimate",
        fill: (d: { low: number; high: number }) =>
          d.low > 0 ? "#2ca02c" : d.high < 0 ? "#d62728" : "steelblue",
        r: 5,
      }),
      Plot.text(data, {
        y: "name",
        x: "estimate",
        text: (d: { estimate: number }) => `${d.estimate >= 0 ? "+" : ""}${d.estimate.toFixed(1)}`,
        dy: -12,
      }),
      ...titleMark(options.title),
    ],
  });
}

/** An object the Deno Jupyter kernel renders as an image. */
export interface JupyterDisplayable {
  /** The SVG document. */
  svg: string;
  /** `Symbol.for("Jupyter.display")`: the MIME bundle the kernel shows. */
  [key: symbol]: () => Record<string, string>;
}

/**
 * Wrap an SVG string so that a Jupyter notebook cell (Deno kernel) shows it inline.
 *
 * @example
 * ```ts
 * import { display, lossCurve } from "./plot.ts";
 * const shown = display(lossCurve([{ step: 1, loss: 1 }, { step: 2, loss: 0.5 }]));
 * console.assert(shown[Symbol.for("Jupyter.display")]()["image/svg+xml"].startsWith("<svg"));
 * ```
 */
export function display(svg: string): JupyterDisplayable {
  return {
    svg,
    [Symbol.for("Jupyter.display")]() {
      return { "image/svg+xml": svg };
    },
  };
}

/**
 * Like {@linkcode display}, and also offers the SVG as inline HTML. Exports that sanitise SVG outputs
 * (nbconvert 6's HTML export passes `image/svg+xml` through lxml's `clean_html`, which strips the SVG
 * attributes and leaves an empty box) then show the HTML copy; Jupyter itself draws either.
 *
 * @example
 * ```ts
 * import { displayInline, lossCurve } from "./plot.ts";
 * const bundle = displayInline(lossCurve([{ step: 1, loss: 1 }, { step: 2, loss: 0.5 }]))[Symbol.for("Jupyter.display")]();
 * console.assert(bundle["text/html"] === bundle["image/svg+xml"]);
 * ```
 */
export function displayInline(svg: string): JupyterDisplayable {
  return {
    svg,
    [Symbol.for("Jupyter.display")]() {
      return { "image/svg+xml": svg, "text/html": svg };
    },
  };
}

/** Write an SVG string to `path` (parent folders created). */
export async function writeSvg(path: string, svg: string): Promise<void> {
  const dir = path.replace(/[\\/][^\\/]*$/, "");
  if (dir && dir !== path) await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(
    path,
    svg.startsWith("<?xml") ? svg : `<?xml version="1.0" encoding="UTF-8"?>\n${svg}`,
  );
}
