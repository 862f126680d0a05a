/**
 * The recipe's difficulty probe and filter: sample n answers per question with the model itself,
 * grade them with the recipe's reward, keep the questions solved 1..7 times out of 16.
 *
 *   deno run -A examples/probe_filter.ts                  # embedded default (lab-value task)
 *   deno run -A examples/probe_filter.ts --quick          # CI-sized (also when CI=true)
 *   deno run -A examples/probe_filter.ts --model path/to/Qwen2.5-VL-3B-Instruct \
 *     --data m23k.parquet --config examples/configs/probe.yaml
 *
 * The default model is `runs/sft_text/model` when `examples/sft_text.ts` has written one (an untrained
 * model never answers in the recipe's format, so every pass count would be 0), else `medthink-tiny`.
 *
 * Writes `runs/probe_filter/` (or `--out`): `probe.jsonl` (`--resume` continues an interrupted run), `pass_counts.svg`,
 * `filtered.jsonl` (the kept questions, in the order asked for) and `filter_report.json`.
 *
 * @module
 */
import {
  aq,
  filterWithReport,
  labTaskSplits,
  loadDataset,
  loadModel,
  loadTokenizer,
  plot,
  probe,
  visionInputBuilder,
} from "../mod.ts";
import type { FilterOptions, ProbeOptions } from "../mod.ts";
import { outDir, parseExampleArgs, readYamlConfig, ROOT, section, since } from "./_common.ts";

const USAGE = `
examples/probe_filter.ts: probe each question's difficulty, then filter to the learnable band.

  --model DIR      checkpoint folder or medthink-tiny (default: runs/sft_text/model if present)
  --data FILE      questions (parquet/JSONL/JSON/CSV, or a folder); default: the built-in lab-value task
  --config FILE    YAML (see examples/configs/probe.yaml): probe: {...} and filter: {...}
  --out DIR        output folder (default runs/probe_filter)
  --backend NAME   auto | tensorflow | wasm | webgpu | cpu
  --resume         continue from the output folder's files instead of starting over
  --quick          CI-sized run (also when CI=true)
`;

const args = parseExampleArgs(USAGE, [], { resume: true });
const config = await readYamlConfig(args.config);
const probeConfig = section(config, "probe", args.config) as Partial<ProbeOptions>;
const filterConfig = section(config, "filter", args.config) as FilterOptions;
const out = await outDir(args, "probe_filter");

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

const sftModel = `${ROOT}/runs/sft_text/model`;
const modelName = args.model ?? (config.model as string | undefined) ??
  ((await exists(`${sftModel}/config.json`)) ? sftModel : "medthink-tiny");
const dataPath = args.data ?? (config.data as string | undefined);

const t0 = performance.now();
const model = await loadModel(modelName, { backend: (args.backend ?? config.backend ?? "auto") as never });
const tokenizer = await loadTokenizer(model.dir);
console.log(`model ${modelName} on ${model.backend} (${since(t0)} s)`);

const questions = dataPath
  ? await loadDataset(dataPath, { format: config.format as never })
  : aq.from(labTaskSplits({ train: args.quick ? 12 : 64, test: 3, seed: 0 }).train);
const limit = args.quick ? 12 : (config.limit as number | undefined);
const table = limit ? questions.slice(0, limit) : questions;

// Short completions on the embedded default (its answers are one line); the recipe's 16 samples of up
// to 4096 tokens are in examples/configs/probe.yaml.
const defaults: Partial<ProbeOptions> = dataPath ? {} : { numGenerations: 8, maxNewTokens: 48, batchSize: 8 };
const quick: Partial<ProbeOptions> = args.quick ? { numGenerations: 4, maxNewTokens: 32 } : {};
const hasImages = table.objects().some((r) => ((r as { images?: unknown[] }).images ?? []).length > 0);
const t1 = performance.now();
const probed = await probe(model, table, {
  tokenizer,
  ...defaults,
  ...probeConfig,
  ...quick,
  ...(hasImages ? { images: visionInputBuilder(model) } : {}),
  out: `${out}/probe.jsonl`,
  overwrite: !args.resume,
  progress: false,
  onProgress: ({ done, total }) => console.log(`probed ${done}/${total}`),
});
const n = Number(probed.get("n", 0));
console.log(`probe: ${probed.numRows()} questions x ${n} samples in ${since(t1)} s`);
await plot.writeSvg(
  `${out}/pass_counts.svg`,
  plot.passCountHistogram(probed, { n, title: `Pass counts of ${modelName}` }),
);

// The recipe's band is 1..7 of 16; for other n the same rates apply (see FilterOptions).
const { table: kept, report } = filterWithReport(probed, { order: "easy-to-hard", ...filterConfig });
const keptRows = kept.select("id", "passCount", "passRate").join(table, "id");
const lines = keptRows.objects().map((r) => JSON.stringify(r)).join("\n");
await Deno.writeTextFile(`${out}/filtered.jsonl`, lines ? lines + "\n" : "");
await Deno.writeTextFile(`${out}/filter_report.json`, JSON.stringify(report, null, 2) + "\n");
console.log(
  `filter: kept ${report.kept} of ${report.total} (too hard ${report.droppedTooHard}, ` +
    `never solved ${report.droppedNeverSolved}, too easy ${report.droppedTooEasy})`,
);
console.log("questions per pass count:", report.histogram);
model.dispose();
console.log(
  `\nwrote ${out}/ (probe.jsonl, pass_counts.svg, filtered.jsonl, filter_report.json) in ${since(t0)} s`,
);
