/**
 * A built-in, procedurally generated medical task with a verifiable answer, small enough for a tiny
 * model to learn on two CPU cores: is a lab value low, normal or high for its analyte's adult reference
 * range? Each question is 3-option multiple choice (`A. low`, `B. normal`, `C. high`) in the recipe's
 * row shape, so the recipe's reward grades it unchanged.
 *
 * Values are drawn away from the range limits (a clinician would not call 3.49 mmol/L of potassium
 * "low" with confidence either), so every label is unambiguous. The held-out split shares no question
 * with the training split: a model must learn the ranges, not memorise questions.
 *
 * @module
 */

import { seededRandom } from "../model/rng.ts"; // Mulberry32: the same sequence on every machine

/** The three classes, in option order. */
export type LabClass = "low" | "normal" | "high";

/** One analyte: its adult reference range and where questions draw values from for each class. */
export interface LabAnalyte {
  /** Name as written in questions (`Potassium`). */
  name: string;
  /** Unit as written in questions (`mmol/L`). */
  unit: string;
  /** Lower and upper limit of the reference range. */
  range: [number, number];
  /** Decimals the value is written with. */
  decimals: number;
  /** Inclusive intervals values are drawn from, per class (below, inside, above the range). */
  draw: Record<LabClass, [number, number]>;
}

/** The analytes of the built-in task (common adult reference ranges). */
export const LAB_ANALYTES: LabAnalyte[] = [
  {
    name: "Potassium",
    unit: "mmol/L",
    range: [3.5, 5.0],
    decimals: 1,
    draw: { low: [1.5, 2.9], normal: [3.7, 4.8], high: [5.5, 6.9] },
  },
  {
    name: "Sodium",
    unit: "mmol/L",
    range: [135, 145],
    decimals: 0,
    draw: { low: [100, 129], normal: [136, 144], high: [150, 169] },
  },
  {
    name: "Glucose",
    unit: "mg/dL",
    range: [70, 99],
    decimals: 0,
    draw: { low: [20, 64], normal: [72, 97], high: [130, 399] },
  },
  {
    name: "Hemoglobin",
    unit: "g/dL",
    range: [12, 16],
    decimals: 1,
    draw: { low: [4.0, 10.9], normal: [12.2, 15.8], high: [17.0, 19.9] },
  },
  {
    name: "Calcium",
    unit: "mg/dL",
    range: [8.5, 10.5],
    decimals: 1,
    draw: { low: [4.0, 7.9], normal: [8.6, 10.4], high: [11.0, 13.9] },
  },
  {
    name: "Platelets",
    unit: "x10^9/L",
    range: [150, 400],
    decimals: 0,
    draw: { low: [5, 130], normal: [160, 390], high: [450, 999] },
  },
  {
    name: "Creatinine",
    unit: "mg/dL",
    range: [0.6, 1.2],
    decimals: 1,
    draw: { low: [0.1, 0.5], normal: [0.7, 1.1], high: [1.5, 6.9] },
  },
  {
    name: "WBC",
    unit: "x10^9/L",
    range: [4.0, 11.0],
    decimals: 1,
    draw: { low: [0.2, 3.4], normal: [4.5, 10.5], high: [12.0, 29.9] },
  },
  {
    name: "Vitamin B12",
    unit: "pg/mL",
    range: [200, 900],
    decimals: 0,
    draw: { low: [50, 180], normal: [250, 850], high: [950, 1999] },
  },
];

/**
 * The demo's analytes: three chemistry values reported in mmol/L to two decimals, so every question has
 * the same shape and the leading digit, read against the analyte, decides the class (a rule a tiny
 * model can discover by trial and error in minutes). Each analyte maps the same digit differently
 * (3.xx is low glucose but normal potassium and urea), so the analyte must be read too.
 */
export const LAB_DEMO_ANALYTES: LabAnalyte[] = [
  {
    name: "Potassium",
    unit: "mmol/L",
    range: [3.5, 5.0],
    decimals: 2,
    draw: { low: [1.5, 2.99], normal: [3.6, 4.89], high: [5.3, 6.99] },
  },
  {
    name: "Glucose",
    unit: "mmol/L",
    range: [3.9, 5.5],
    decimals: 2,
    draw: { low: [2.0, 3.49], normal: [4.0, 5.39], high: [6.2, 9.99] },
  },
  {
    name: "Urea",
    unit: "mmol/L",
    range: [2.5, 7.8],
    decimals: 2,
    draw: { low: [0.5, 1.99], normal: [3.0, 6.99], high: [8.5, 9.99] },
  },
];

const LETTERS: Record<LabClass, string> = { low: "A", normal: "B", high: "C" };
const CLASSES: LabClass[] = ["low", "normal", "high"];

/** One question of the task, in the canonical row shape plus the lab fields it was made from. */
export interface LabRow {
  /** Unique id (`lab-<analyte>-<value>`). */
  id: string;
  /** The question text. */
  question: string;
  /** Always `{ A: "low", B: "normal", C: "high" }`. */
  options: Record<string, string>;
  /** The correct option's letter. */
  answerLabel: string;
  /** The correct option's text. */
  answer: string;
  /** A one-sentence explanation (range and comparison), for SFT targets. */
  reasoning: string;
  /** Always `lab_task`. */
  datasetName: string;
  /** The analyte asked about. */
  analyte: string;
  /** The value asked about. */
  value: number;
  /** Its unit. */
  unit: string;
  /** The value as written in the question. */
  valueText: string;
  /** Lower limit of the analyte's reference range. */
  refLow: number;
  /** Upper limit of the analyte's reference range. */
  refHigh: number;
}

/** Options of {@linkcode labTaskSplits}. */
export interface LabTaskOptions {
  /** Training rows (drawn with replacement from the training pool, classes balanced). Default 2000. */
  train?: number;
  /** Held-out rows (distinct questions, none in the training pool, a third per class). Default 600. */
  test?: number;
  /** Fraction of each (analyte, class) cell's distinct values reserved for the held-out pool. Default 0.5. */
  testFraction?: number;
  /** Seed of the split and the draws. Default 0. */
  seed?: number;
  /** Analytes to use. Default {@linkcode LAB_ANALYTES}. */
  analytes?: LabAnalyte[];
}

/** Both splits of the task. */
export interface LabSplits {
  /** Training questions. */
  train: LabRow[];
  /** Held-out questions (no question in common with `train`). */
  test: LabRow[];
}

function shuffle<T>(xs: T[], rand: () => number): T[] {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [xs[i], xs[j]] = [xs[j], xs[i]];
  }
  return xs;
}

/** The class of `value` for `analyte`'s reference range (limits count as normal). */
export function classifyLabValue(analyte: LabAnalyte, value: number): LabClass {
  return value < analyte.range[0] ? "low" : value > analyte.range[1] ? "high" : "normal";
}

/** Build the row for one analyte and value. */
export function labRow(analyte: LabAnalyte, value: number): LabRow {
  const cls = classifyLabValue(analyte, value);
  const valueText = value.toFixed(analyte.decimals);
  const [lo, hi] = analyte.range;
  const where = cls === "low" ? "below" : cls === "high" ? "above" : "within";
  return {
    id: `lab-${analyte.name.toLowerCase()}-${valueText}`,
    question: `${analyte.name} ${valueText} ${analyte.unit}: is it low, normal or high?`,
    options: { A: "low", B: "normal", C: "high" },
    answerLabel: LETTERS[cls],
    answer: cls,
    reasoning: `${analyte.name} reference range is ${lo}-${hi} ${analyte.unit}; ${valueText} is ${where} it.`,
    datasetName: "lab_task",
    analyte: analyte.name,
    value,
    unit: analyte.unit,
    valueText,
    refLow: lo,
    refHigh: hi,
  };
}

/** Every distinct value of a draw interval at the analyte's precision. */
function valuesOf(analyte: LabAnalyte, cls: LabClass): number[] {
  const step = 10 ** -analyte.decimals;
  const [a, b] = analyte.draw[cls];
  const out: number[] = [];
  for (let k = Math.round(a / step); k <= Math.round(b / step) + 1e-9; k++) {
    const v = Number((k * step).toFixed(analyte.decimals));
    if (classifyLabValue(analyte, v) !== cls) {
      throw new Error(
        `lab_task: analyte ${analyte.name}'s ${cls} draw interval [${a}, ${b}] holds ${v}, which is not ${cls}.`,
      );
    }
    out.push(v);
  }
  return out;
}

/**
 * The task's training and held-out splits. Each (analyte, class) cell's distinct values are shuffled
 * and a fraction goes to the held-out pool; held-out rows are distinct questions, a third per class,
 * taken round-robin over analytes; training rows are drawn from the rest with classes and analytes balanced.
 *
 * @example
 * ```ts
 * import { labTaskSplits } from "./lab_task.ts";
 * const { train, test } = labTaskSplits({ train: 100, test: 50, seed: 1 });
 * console.log(test[0].question, test[0].answerLabel);
 * ```
 */
export function labTaskSplits(options: LabTaskOptions = {}): LabSplits {
  const { train = 2000, test = 600, testFraction = 0.5, seed = 0, analytes = LAB_ANALYTES } = options;
  const rand = seededRandom(seed * 7919 + 17);
  const trainPool: Record<LabClass, LabRow[][]> = { low: [], normal: [], high: [] };
  const testPool: Record<LabClass, LabRow[][]> = { low: [], normal: [], high: [] };
  for (const cls of CLASSES) {
    for (const a of analytes) {
      const rows = shuffle(valuesOf(a, cls).map((v) => labRow(a, v)), rand);
      const k = Math.max(1, Math.round(rows.length * testFraction));
      if (rows.length - k < 1) {
        throw new Error(
          `lab_task: analyte ${a.name} has too few ${cls} values to split into train and test.`,
        );
      }
      testPool[cls].push(rows.slice(0, k));
      trainPool[cls].push(rows.slice(k));
    }
  }
  // Exactly test / 3 questions per class (a constant answer scores 1/3), round-robin over analytes.
  const testRows: LabRow[] = [];
  for (const [c, cls] of CLASSES.entries()) {
    const want = Math.floor(test / 3) + (c < test % 3 ? 1 : 0);
    const pools = testPool[cls];
    const have = pools.reduce((t, r) => t + r.length, 0);
    if (want > have) {
      throw new Error(
        `lab_task: ${want} held-out '${cls}' questions asked for but only ${have} distinct ones are reserved.`,
      );
    }
    const cursor = pools.map(() => 0);
    for (let turn = 0, got = 0; got < want; turn++) {
      const ai = turn % pools.length;
      if (cursor[ai] < pools[ai].length) {
        testRows.push(pools[ai][cursor[ai]++]);
        got++;
      }
    }
  }
  const trainRows: LabRow[] = [];
  for (let i = 0; i < train; i++) {
    const cls = CLASSES[Math.floor(rand() * 3)];
    const cell = trainPool[cls][Math.floor(rand() * analytes.length)];
    trainRows.push(cell[Math.floor(rand() * cell.length)]);
  }
  return { train: trainRows, test: shuffle(testRows, rand) };
}

/**
 * The demo's compact prompt: one user turn with the value and the options, no system prompt and no
 * instruction (the warm-up teaches the answer format), so that a prompt costs about 30 tokens instead of
 * the recipe's 100+. Rendered as Qwen's chat markup, ending with the assistant header.
 */
export function labCompactPrompt(row: LabRow): string {
  const opts = Object.entries(row.options).map(([k, v]) => `${k}. ${v}`).join("\n");
  return `<|im_start|>user\n${row.analyte} ${row.valueText} ${row.unit}?\n${opts}<|im_end|>\n<|im_start|>assistant\n`;
}
