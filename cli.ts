/**
 * The command line: `deno run -A cli.ts probe|filter|evaluate|serve [--config FILE.yaml] [--flags]`.
 *
 * Every setting is a key of the YAML config (camelCase, snake_case or kebab-case) and a flag
 * (`--max-new-tokens 64`); flags override the config. `cli.ts <command> --help` lists them.
 * (`@std/cli` lives on JSR, unreachable here: flags are parsed with `node:util` `parseArgs`, YAML
 * with the `yaml` package.)
 *
 * @module
 */
import { parseArgs } from "node:util";
import { arquero as aq, YAML } from "./lib/util/deps.ts";
import { loadModel } from "./lib/model/load.ts";
import { loadTokenizer } from "./lib/data/tokenizer.ts";
import { loadDataset } from "./lib/data/dataset.ts";
import type { Row } from "./lib/data/types.ts";
import { probe } from "./lib/eval/probe.ts";
import { attachProbe, filterWithReport, findOverlap, formatFilterReport } from "./lib/eval/filter.ts";
import {
  type BenchmarkSpec,
  evaluate,
  formatReport,
  PUBLISHED_ACCURACY,
  resolveBenchmarks,
} from "./lib/eval/evaluate.ts";
import { readJsonl } from "./lib/data/jsonl_store.ts";
import { passCountHistogram, writeSvg } from "./lib/eval/plot.ts";
import { openRemoteEngine, REMOTE_SETTINGS, runServe, SERVE_SETTINGS } from "./lib/serve/command.ts";

/** The type of a setting: how its flag and config value are read. */
type Kind = "string" | "number" | "boolean" | "list";

interface Setting {
  kind: Kind;
  help: string;
  default?: unknown;
}

interface Command {
  summary: string;
  settings: Record<string, Setting>;
  run(config: Record<string, unknown>): Promise<void>;
}

const MODEL_SETTINGS: Record<string, Setting> = {
  model: {
    kind: "string",
    help: "checkpoint folder (Hub layout) or medthink-tiny",
    default: "medthink-tiny",
  },
  backend: { kind: "string", help: "tfjs backend: auto, tensorflow, wasm, webgpu, cpu", default: "auto" },
};

const SAMPLING_SETTINGS: Record<string, Setting> = {
  topP: { kind: "number", help: "nucleus sampling mass", default: 1 },
  topK: { kind: "number", help: "top-k sampling (0 = off)", default: 0 },
  maxNewTokens: { kind: "number", help: "new tokens per completion", default: 4096 },
  seed: { kind: "number", help: "base seed; sample j of question q uses a hash of (seed, q, j)", default: 0 },
  template: {
    kind: "string",
    help: "prompt template with {instruction} {question} {options} (default: the recipe's)",
  },
  overwrite: { kind: "boolean", help: "start over instead of resuming from the output file", default: false },
};

const COMMANDS: Record<string, Command> = {
  probe: {
    summary:
      "sample n answers per question, grade them with the recipe's reward, record pass counts (resumable)",
    settings: {
      ...MODEL_SETTINGS,
      ...(REMOTE_SETTINGS as unknown as Record<string, Setting>),
      data: { kind: "list", help: "dataset file(s) or folder (parquet, JSONL, JSON, CSV)" },
      format: {
        kind: "string",
        help: "dataset layout (medvlthinker, medagents, pubmedqa, closed_vqa); default: recognised",
      },
      limit: { kind: "number", help: "probe only the first N questions" },
      n: { kind: "number", help: "samples per question", default: 16 },
      temperature: { kind: "number", help: "sampling temperature", default: 1 },
      ...SAMPLING_SETTINGS,
      batchSize: { kind: "number", help: "questions per generate call", default: 4 },
      out: {
        kind: "string",
        help: "JSONL file of per-question results (resumed when it exists)",
        default: "runs/probe/probe.jsonl",
      },
      keepCompletions: {
        kind: "boolean",
        help: "also write every completion to the JSONL file",
        default: false,
      },
      histogram: { kind: "string", help: "SVG file for the pass-count histogram (default: beside out)" },
    },
    run: runProbe,
  },
  filter: {
    summary:
      "keep questions whose pass rate lies in a band (default the recipe's 1/16..7/16); check benchmark overlap",
    settings: {
      probe: {
        kind: "string",
        help: "probe results: the JSONL written by `probe`, or a CSV/JSON table with id, passCount, n",
      },
      data: { kind: "list", help: "the probed dataset: when given, the kept dataset rows are written" },
      format: { kind: "string", help: "dataset layout (default: recognised)" },
      minPass: { kind: "number", help: "lowest pass count kept (overrides min-rate)" },
      maxPass: { kind: "number", help: "highest pass count kept (overrides max-rate)" },
      minRate: { kind: "number", help: "lowest pass rate kept", default: 1 / 16 },
      maxRate: { kind: "number", help: "highest pass rate kept", default: 7 / 16 },
      order: {
        kind: "string",
        help: "original, easy-to-hard (curriculum) or hard-to-easy",
        default: "original",
      },
      benchmarks: {
        kind: "list",
        help: "benchmarks (registry names, files, or name=file) to check for overlap with the kept rows",
      },
      dataDir: { kind: "string", help: "folder that benchmark names and relative paths are read from" },
      removeOverlap: { kind: "boolean", help: "drop kept rows that appear in a benchmark", default: false },
      out: {
        kind: "string",
        help: "JSONL file of the kept rows (MedVLThinker columns, plus pass_count and n)",
        default: "runs/filter/filtered.jsonl",
      },
    },
    run: runFilter,
  },
  evaluate: {
    summary:
      "accuracy per benchmark (strict and lenient grading, bootstrap 95% CI), mean, report (resumable)",
    settings: {
      ...MODEL_SETTINGS,
      ...(REMOTE_SETTINGS as unknown as Record<string, Setting>),
      benchmarks: {
        kind: "list",
        help: "registry names (medqa, pubmedqa, vqa_rad_closed, medvlthinker_eval), data files, or name=file",
        default: ["medqa"],
      },
      dataDir: { kind: "string", help: "folder that benchmark names and relative paths are read from" },
      limit: { kind: "number", help: "at most N questions per benchmark" },
      temperature: { kind: "number", help: "0 = greedy (the recipe)", default: 0 },
      ...SAMPLING_SETTINGS,
      runs: { kind: "number", help: "runs per question (accuracy is their mean)", default: 1 },
      batchSize: { kind: "number", help: "questions per generate call", default: 8 },
      out: {
        kind: "string",
        help: "folder for predictions.jsonl, report.md, report.json, accuracy.svg",
        default: "runs/eval",
      },
      compare: {
        kind: "string",
        help: "report.json of another evaluation to compare with, question by question",
      },
      reference: {
        kind: "string",
        help: `published results drawn on the chart: ${Object.keys(PUBLISHED_ACCURACY).join(", ")}`,
      },
      modelName: { kind: "string", help: "name of the model in the report (default: its folder)" },
      bootstrapSamples: { kind: "number", help: "bootstrap resamples for the intervals", default: 2000 },
      level: { kind: "number", help: "interval coverage", default: 0.95 },
      onBadRow: {
        kind: "string",
        help: "a bad dataset row: error or skip (skipped rows are counted)",
        default: "error",
      },
    },
    run: runEvaluate,
  },
  serve: {
    summary: "serve a checkpoint over an OpenAI-compatible HTTP API (vLLM's routes and shapes)",
    settings: SERVE_SETTINGS as unknown as Record<string, Setting>,
    run: runServe,
  },
};

function camel(key: string): string {
  return key.replace(/[-_]([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

function kebab(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

function coerce(command: string, key: string, kind: Kind, value: unknown, source: string): unknown {
  if (value === undefined || value === null) return undefined;
  switch (kind) {
    case "number": {
      const x = typeof value === "number" ? value : Number(String(value).trim());
      if (String(value).trim() === "" || !Number.isFinite(x)) {
        throw new Error(`${source}: '${key}' of ${command} must be a number, got '${value}'.`);
      }
      return x;
    }
    case "boolean":
      if (typeof value === "boolean") return value;
      if (["true", "1", "yes"].includes(String(value).toLowerCase())) return true;
      if (["false", "0", "no"].includes(String(value).toLowerCase())) return false;
      throw new Error(`${source}: '${key}' of ${command} must be true or false, got '${value}'.`);
    case "list":
      if (Array.isArray(value)) return value;
      return String(value).split(",").map((s) => s.trim()).filter(Boolean);
    default:
      if (typeof value === "object") {
        throw new Error(
          `${source}: '${key}' of ${command} must be a single value, got ${JSON.stringify(value)}.`,
        );
      }
      return String(value);
  }
}

/** Usage text of one command. */
export function helpText(name: string): string {
  const cmd = COMMANDS[name];
  const lines = [
    `Usage: deno run -A cli.ts ${name} [--config FILE.yaml] [options]`,
    "",
    `${cmd.summary}.`,
    "",
    "Options (each is also a key of the YAML config; flags override the config):",
    `  --config FILE.yaml`.padEnd(34) + "settings file",
  ];
  for (const [key, s] of Object.entries(cmd.settings)) {
    const flag = `  --${kebab(key)}${
      s.kind === "boolean" ? "" : ` <${s.kind === "list" ? "a,b,..." : s.kind}>`
    }`;
    const def = s.default !== undefined
      ? ` (default: ${Array.isArray(s.default) ? s.default.join(",") : s.default})`
      : "";
    lines.push(flag.padEnd(34) + s.help + def);
  }
  lines.push(`  --help`.padEnd(34) + "show this help");
  return lines.join("\n");
}

function mainHelp(): string {
  return [
    "medthink: probe, filter and evaluate medical reasoning models (the MedVLThinker recipe).",
    "",
    "Usage: deno run -A cli.ts <command> [--config FILE.yaml] [options]",
    "",
    "Commands:",
    ...Object.entries(COMMANDS).map(([n, c]) => `  ${n.padEnd(10)}${c.summary}`),
    "",
    "Run `deno run -A cli.ts <command> --help` for a command's options.",
  ].join("\n");
}

/**
 * Parse a command's flags and config file into one settings object (defaults < config < flags).
 * Returns null when `--help` was asked for.
 */
export async function parseCommand(name: string, args: string[]): Promise<Record<string, unknown> | null> {
  const cmd = COMMANDS[name];
  if (!cmd) throw new Error(`Unknown command '${name}'; use one of ${Object.keys(COMMANDS).join(", ")}.`);
  const options: Record<string, { type: "string" | "boolean" }> = {
    config: { type: "string" },
    help: { type: "boolean" },
  };
  for (const [key, s] of Object.entries(cmd.settings)) {
    options[kebab(key)] = { type: s.kind === "boolean" ? "boolean" : "string" };
    if (s.kind === "boolean") options[`no-${kebab(key)}`] = { type: "boolean" };
  }
  let parsed;
  try {
    parsed = parseArgs({ args, options, strict: true, allowPositionals: false });
  } catch (e) {
    throw new Error(`${(e as Error).message.replace(/\.$/, "")} (see \`cli.ts ${name} --help\`).`);
  }
  const values = parsed.values as Record<string, unknown>;
  if (values.help) return null;
  const config: Record<string, unknown> = {};
  for (const [key, s] of Object.entries(cmd.settings)) if (s.default !== undefined) config[key] = s.default;
  if (typeof values.config === "string") {
    const file = values.config;
    let doc: unknown;
    try {
      doc = YAML.parse(await Deno.readTextFile(file));
    } catch (e) {
      throw new Error(`Config ${file} cannot be read as YAML: ${(e as Error).message.split("\n")[0]}`);
    }
    if (doc !== null && doc !== undefined) {
      if (typeof doc !== "object" || Array.isArray(doc)) {
        throw new Error(`Config ${file} must be a mapping of settings.`);
      }
      // A config may hold sections for several commands; the command's own section wins.
      const top = doc as Record<string, unknown>;
      const section = top[name] && typeof top[name] === "object" && !Array.isArray(top[name])
        ? top[name] as Record<string, unknown>
        : {};
      const entries = [
        ...Object.entries(top).filter(([k]) => !(k in COMMANDS)),
        ...Object.entries(section),
      ];
      for (const [raw, v] of entries) {
        const key = camel(raw);
        const s = cmd.settings[key];
        if (!s) {
          const other = Object.values(COMMANDS).some((c) => key in c.settings);
          if (other) continue; // a shared config file: settings of another command
          throw new Error(
            `Config ${file}: unknown key '${raw}' for ${name} (see \`cli.ts ${name} --help\`).`,
          );
        }
        config[key] = coerce(name, raw, s.kind, v, `Config ${file}`);
      }
    }
  }
  for (const [key, s] of Object.entries(cmd.settings)) {
    const flag = kebab(key);
    if (s.kind === "boolean" && values[`no-${flag}`]) config[key] = false;
    if (values[flag] !== undefined) config[key] = coerce(name, `--${flag}`, s.kind, values[flag], "Flag");
  }
  return config;
}

function need(config: Record<string, unknown>, key: string, command: string): unknown {
  const v = config[key];
  if (v === undefined || (Array.isArray(v) && v.length === 0)) {
    throw new Error(`${command} needs '${key}' (flag --${kebab(key)} or config key ${key}).`);
  }
  return v;
}

function dirOf(path: string): string {
  const i = path.lastIndexOf("/");
  return i > 0 ? path.slice(0, i) : ".";
}

async function openModel(config: Record<string, unknown>) {
  if (Array.isArray(config.endpoints) && config.endpoints.length > 0) {
    return { model: openRemoteEngine(config), tokenizer: undefined };
  }
  const model = await loadModel(String(config.model), { backend: config.backend as never });
  const tokenizer = await loadTokenizer(model.dir);
  return { model, tokenizer };
}

function abortOnInterrupt(label: string): { signal: AbortSignal; dispose(): void } {
  const controller = new AbortController();
  const handler = () => {
    if (controller.signal.aborted) Deno.exit(130);
    console.error(
      `\n${label}: stopping after the batch in flight (Ctrl-C again to quit now); rerun to resume.`,
    );
    controller.abort();
  };
  try {
    Deno.addSignalListener("SIGINT", handler);
  } catch { /* signals unsupported (Windows without console) */ }
  return {
    signal: controller.signal,
    dispose() {
      try {
        Deno.removeSignalListener("SIGINT", handler);
      } catch { /* never added */ }
    },
  };
}

async function runProbe(config: Record<string, unknown>): Promise<void> {
  const data = need(config, "data", "probe") as string[];
  const table = await loadDataset(data.length === 1 ? data[0] : data, {
    format: config.format as never,
    ...(config.limit !== undefined ? { limit: config.limit as number } : {}),
  });
  const { model, tokenizer } = await openModel(config);
  const out = String(config.out);
  const stop = abortOnInterrupt("probe");
  try {
    const result = await probe(model, table, {
      tokenizer,
      n: config.n as number,
      temperature: config.temperature as number,
      topP: config.topP as number,
      topK: config.topK as number,
      maxNewTokens: config.maxNewTokens as number,
      seed: config.seed as number,
      batchSize: config.batchSize as number,
      template: config.template as string | undefined,
      keepCompletions: config.keepCompletions as boolean,
      overwrite: config.overwrite as boolean,
      out,
      signal: stop.signal,
    });
    const histogram = (config.histogram as string | undefined) ?? `${dirOf(out)}/pass_counts.svg`;
    await writeSvg(
      histogram,
      passCountHistogram(result, { n: config.n as number, title: `Pass counts (n = ${config.n})` }),
    );
    const csv = out.replace(/\.jsonl$/, "") + ".csv";
    await Deno.writeTextFile(csv, result.toCSV());
    const counts = Array.from(result.array("passCount") as number[]);
    const mean = counts.reduce((a, b) => a + b, 0) / Math.max(1, counts.length);
    console.log(
      `probe: ${result.numRows()} of ${table.numRows()} questions done, mean pass count ${
        mean.toFixed(2)
      } of ${config.n}` +
        (result.numRows() < table.numRows() ? " (stopped: rerun the same command to resume)" : ""),
    );
    console.log(`results: ${out}\ntable: ${csv}\nhistogram: ${histogram}`);
  } finally {
    stop.dispose();
    model.dispose();
  }
}

async function readProbeTable(path: string) {
  if (path.endsWith(".jsonl")) {
    const records = await readJsonl<{ id: string; passCount: number; n: number }>(path);
    if (records.length === 0) throw new Error(`${path} holds no probe results.`);
    return aq.from(
      records.map((r) => ({ id: String(r.id), passCount: r.passCount, n: r.n, passRate: r.passCount / r.n })),
    );
  }
  const text = await Deno.readTextFile(path);
  const table = path.endsWith(".json")
    ? aq.from(JSON.parse(text))
    : aq.fromCSV(text, { parse: { id: String } });
  return table;
}

function toMedvlthinkerRecord(row: Row & Record<string, unknown>, outDir: string): Record<string, unknown> {
  const images = (row.images ?? []).map((img, i) => {
    if (!img.path) {
      throw new Error(
        `Row ${row.id} embeds image ${i} as bytes; filter writes JSONL with image paths, so filter that dataset ` +
          `through the API (filter + attachProbe) and save it as parquet.`,
      );
    }
    const abs = img.path;
    const base = outDir.endsWith("/") ? outDir : `${outDir}/`;
    if (!abs.startsWith(base)) {
      throw new Error(
        `Row ${row.id}'s image ${abs} is outside the output folder ${outDir}; write the filtered file next to the ` +
          `images (--out in the dataset's folder) so its relative paths stay valid.`,
      );
    }
    return abs.slice(base.length);
  });
  const rec: Record<string, unknown> = {
    id: row.id,
    images,
    question: row.question,
    options: JSON.stringify(row.options),
    answer_label: row.answerLabel,
    answer: row.answer,
    dataset_name: row.datasetName ?? null,
  };
  if (row.reasoning !== undefined && row.reasoning !== null) rec.reasoning = row.reasoning;
  if (row.hash !== undefined && row.hash !== null) rec.hash = row.hash;
  rec.pass_count = row.passCount;
  rec.n = row.n;
  return rec;
}

async function runFilter(config: Record<string, unknown>): Promise<void> {
  const probed = await readProbeTable(String(need(config, "probe", "filter")));
  const data = config.data as string[] | undefined;
  let table = probed;
  if (data?.length) {
    const dataset = await loadDataset(data.length === 1 ? data[0] : data, { format: config.format as never });
    // A probe run with a limit covers only part of the dataset: filter what was probed.
    table = attachProbe(dataset, probed, { missing: "drop" });
    if (table.numRows() < dataset.numRows()) {
      console.log(
        `${dataset.numRows() - table.numRows()} dataset row(s) have no probe result and are left out.`,
      );
    }
    if (table.numRows() < probed.numRows()) {
      throw new Error(
        `${probed.numRows() - table.numRows()} probe result(s) match no row of ${
          data.join(", ")
        }: wrong dataset?`,
      );
    }
  }
  const { table: kept, report } = filterWithReport(table, {
    minPass: config.minPass as number | undefined,
    maxPass: config.maxPass as number | undefined,
    minRate: config.minRate as number,
    maxRate: config.maxRate as number,
    order: config.order as never,
  });
  console.log(formatFilterReport(report));
  let final = kept;
  const benchmarks = config.benchmarks as string[] | undefined;
  if (benchmarks?.length) {
    if (!data?.length) {
      throw new Error("filter: the overlap check needs the dataset's questions: pass --data too.");
    }
    const specs = benchmarks.map(benchmarkSpec);
    const resolved = await resolveBenchmarks(specs, { dataDir: config.dataDir as string | undefined });
    const named = Object.fromEntries(resolved.map((b) => [b.name, aq.from(b.rows)]));
    const overlap = findOverlap(kept, named, { remove: config.removeOverlap as boolean });
    console.log(
      `Overlap with ${resolved.map((b) => b.name).join(", ")}: ${overlap.trainIds.length} kept question(s)` +
        (overlap.trainIds.length > 0
          ? (config.removeOverlap ? ", removed." : " (pass --remove-overlap to drop them).")
          : "."),
    );
    for (const m of overlap.matches.slice(0, 20)) {
      console.log(`  ${m.trainId} = ${m.benchmark}:${m.benchmarkId} (${m.by})`);
    }
    final = overlap.table;
  }
  const out = String(config.out);
  await Deno.mkdir(dirOf(out), { recursive: true });
  const outDir = await Deno.realPath(dirOf(out));
  const rows = final.objects() as (Row & Record<string, unknown>)[];
  const lines = data?.length
    ? rows.map((r) => JSON.stringify(toMedvlthinkerRecord(r, outDir)))
    : rows.map((r) => JSON.stringify(r));
  await Deno.writeTextFile(out, lines.join("\n") + (lines.length ? "\n" : ""));
  console.log(`kept rows: ${out} (${rows.length})`);
}

const GENERIC_FILE = /^(test|train|validation|val|dev|data)([-_.].*)?$/;

/**
 * A `--benchmarks` entry: `name=path`, a registry name, or a data file (named after its folder when
 * the file name is generic, e.g. `vqa_rad_closed/test.jsonl` -> `vqa_rad_closed`).
 */
export function benchmarkSpec(arg: string): string | BenchmarkSpec {
  const eq = arg.indexOf("=");
  if (eq > 0) return { name: arg.slice(0, eq), path: arg.slice(eq + 1) };
  if (!/[./]/.test(arg)) return arg;
  const parts = arg.replace(/\/+$/, "").split("/");
  const file = parts.at(-1)!.replace(/\.[^.]*$/, "");
  const name = GENERIC_FILE.test(file) && parts.length > 1 ? parts.at(-2)! : file;
  return { name, path: arg };
}

async function runEvaluate(config: Record<string, unknown>): Promise<void> {
  const names = need(config, "benchmarks", "evaluate") as string[];
  const specs: (string | BenchmarkSpec)[] = names.map(benchmarkSpec);
  const refKey = config.reference as string | undefined;
  if (refKey && !PUBLISHED_ACCURACY[refKey]) {
    throw new Error(`--reference '${refKey}' is not one of ${Object.keys(PUBLISHED_ACCURACY).join(", ")}.`);
  }
  const { model, tokenizer } = await openModel(config);
  const stop = abortOnInterrupt("evaluate");
  try {
    const report = await evaluate(model, specs, {
      tokenizer,
      dataDir: config.dataDir as string | undefined,
      limit: config.limit as number | undefined,
      temperature: config.temperature as number,
      topP: config.topP as number,
      topK: config.topK as number,
      maxNewTokens: config.maxNewTokens as number,
      runs: config.runs as number,
      seed: config.seed as number,
      batchSize: config.batchSize as number,
      template: config.template as string | undefined,
      outDir: String(config.out),
      overwrite: config.overwrite as boolean,
      modelName: config.modelName as string | undefined,
      bootstrapSamples: config.bootstrapSamples as number,
      level: config.level as number,
      onBadRow: config.onBadRow as "error" | "skip",
      compareWith: config.compare as string | undefined,
      reference: refKey ? { ...PUBLISHED_ACCURACY[refKey] } : undefined,
      signal: stop.signal,
    });
    console.log(formatReport(report));
    console.log(
      `report: ${report.files!.markdown}, ${report.files!.json}\nchart: ${report.files!.svg}\npredictions: ${
        report.files!.predictions
      }`,
    );
  } finally {
    stop.dispose();
    model.dispose();
  }
}

/** Run the CLI with `args`; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const [name, ...rest] = args;
  if (!name || name === "--help" || name === "-h" || name === "help") {
    console.log(mainHelp());
    return name ? 0 : 2;
  }
  try {
    const config = await parseCommand(name, rest);
    if (config === null) {
      console.log(helpText(name));
      return 0;
    }
    await COMMANDS[name].run(config);
    return 0;
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
