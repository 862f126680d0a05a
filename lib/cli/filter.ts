/**
 * `cli.ts filter`: keep the questions whose probe pass rate lies in a band (the recipe's 1..7 of 16),
 * optionally order them easy-to-hard and check / remove overlap with benchmarks; writes the kept
 * dataset rows (MedVLThinker columns) as JSONL.
 *
 * @module
 */
import { arquero as aq } from "../util/deps.ts";
import { loadDataset } from "../data/dataset.ts";
import type { Row } from "../data/types.ts";
import { readJsonl } from "../data/jsonl_store.ts";
import { attachProbe, filterWithReport, findOverlap, formatFilterReport } from "../eval/filter.ts";
import { resolveBenchmarks } from "../eval/evaluate.ts";
import { dirOf, writeRunRecord } from "./common.ts";
import { benchmarkSpec } from "./evaluate.ts";
import { defineCommand, need } from "./settings.ts";

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

/**
 * A dataset row as a MedVLThinker JSONL record (images as paths relative to `outDir`, options as a
 * JSON string, plus pass_count and n when present).
 */
export function toMedvlthinkerRecord(
  row: Row & Record<string, unknown>,
  outDir: string,
): Record<string, unknown> {
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

/** The `filter` command. */
export const FILTER_COMMAND = defineCommand({
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
  async run(config, argv) {
    const probed = await readProbeTable(need(config.probe, "probe", "filter"));
    const data = config.data;
    let table = probed;
    if (data?.length) {
      const dataset = await loadDataset(data.length === 1 ? data[0] : data, {
        format: config.format as never,
      });
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
      minPass: config.minPass,
      maxPass: config.maxPass,
      minRate: config.minRate,
      maxRate: config.maxRate,
      order: config.order as never,
    });
    console.log(formatFilterReport(report));
    let final = kept;
    const benchmarks = config.benchmarks;
    if (benchmarks?.length) {
      if (!data?.length) {
        throw new Error("filter: the overlap check needs the dataset's questions: pass --data too.");
      }
      const specs = benchmarks.map(benchmarkSpec);
      const resolved = await resolveBenchmarks(specs, { dataDir: config.dataDir });
      const named = Object.fromEntries(resolved.map((b) => [b.name, aq.from(b.rows)]));
      const overlap = findOverlap(kept, named, { remove: config.removeOverlap });
      console.log(
        `Overlap with ${
          resolved.map((b) => b.name).join(", ")
        }: ${overlap.trainIds.length} kept question(s)` +
          (overlap.trainIds.length > 0
            ? (config.removeOverlap ? ", removed." : " (pass --remove-overlap to drop them).")
            : "."),
      );
      for (const m of overlap.matches.slice(0, 20)) {
        console.log(`  ${m.trainId} = ${m.benchmark}:${m.benchmarkId} (${m.by})`);
      }
      final = overlap.table;
    }
    const out = config.out;
    await writeRunRecord(dirOf(out), "filter", config, argv);
    const outDir = await Deno.realPath(dirOf(out));
    const rows = final.objects() as (Row & Record<string, unknown>)[];
    const lines = data?.length
      ? rows.map((r) => JSON.stringify(toMedvlthinkerRecord(r, outDir)))
      : rows.map((r) => JSON.stringify(r));
    await Deno.writeTextFile(out, lines.join("\n") + (lines.length ? "\n" : ""));
    console.log(`kept rows: ${out} (${rows.length})`);
  },
});
