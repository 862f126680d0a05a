/**
 * What the `cli.ts` commands share: the model and sampling settings, opening a local model or remote
 * servers, stopping cleanly on Ctrl-C, the training data (a dataset file or the built-in lab-value
 * task), and the record every run leaves next to its outputs (`config.yaml`: the resolved settings;
 * `run.json`: the toolkit's version and the command line), so a run can be repeated from its folder
 * alone with `--config <out>/config.yaml`.
 *
 * @module
 */
import { YAML } from "../util/deps.ts";
import { loadModel } from "../model/load.ts";
import type { CausalLM } from "../model/types.ts";
import { loadTokenizer, type Tokenizer } from "../data/tokenizer.ts";
import { loadDataset } from "../data/dataset.ts";
import type { Row } from "../data/types.ts";
import { labTaskSplits } from "../data/lab_task.ts";
import { openRemoteEngine, REMOTE_SETTINGS } from "../serve/command.ts";
import type { OpenAIEngine } from "../engine/openai.ts";
import denoJson from "../../deno.json" with { type: "json" };

/** The toolkit's version (deno.json `version`), written into every run's record. */
export const VERSION: string = denoJson.version;

/** The name a dataset setting takes for the built-in lab-value task (lib/data/lab_task.ts). */
export const LAB_TASK = "lab_task";

/** Model settings of the commands that load one. */
export const MODEL_SETTINGS = {
  model: {
    kind: "string",
    help: "checkpoint folder (Hub layout) or medthink-tiny",
    default: "medthink-tiny",
  },
  backend: { kind: "string", help: "tfjs backend: auto, tensorflow, wasm, webgpu, cpu", default: "auto" },
} as const;

/** Sampling settings of probe / evaluate / distill. */
export const SAMPLING_SETTINGS = {
  topP: { kind: "number", help: "nucleus sampling mass", default: 1 },
  topK: { kind: "number", help: "top-k sampling (0 = off)", default: 0 },
  maxNewTokens: { kind: "number", help: "new tokens per completion", default: 4096 },
  seed: { kind: "number", help: "base seed; sample j of question q uses a hash of (seed, q, j)", default: 0 },
  template: {
    kind: "string",
    help: "prompt template with {instruction} {question} {options} (default: the recipe's)",
  },
  overwrite: { kind: "boolean", help: "start over instead of resuming from the output file", default: false },
} as const;

/** `--quiet` (every long job) and `--tensorboard`. */
export const OUTPUT_SETTINGS = {
  quiet: { kind: "boolean", help: "no progress line on stderr", default: false },
  tensorboard: {
    kind: "boolean",
    help: "write TensorBoard event files under <out>/tensorboard",
    default: true,
  },
} as const;

export { REMOTE_SETTINGS };

/** The parent folder of a file path (`.` for a bare name). */
export function dirOf(path: string): string {
  const i = path.lastIndexOf("/");
  return i > 0 ? path.slice(0, i) : ".";
}

/** A local model and its tokenizer, or the remote engine named by `endpoints` (no tokenizer). */
export async function openModel(config: {
  model: string;
  backend: string;
  endpoints?: string[];
  protocol?: string;
  concurrency?: number;
  apiKeyEnv?: string;
  requestTimeout?: number;
}): Promise<
  { model: CausalLM; tokenizer: Tokenizer } | {
    model: OpenAIEngine & { dispose(): void };
    tokenizer: undefined;
  }
> {
  if (config.endpoints && config.endpoints.length > 0) {
    return { model: openRemoteEngine(config), tokenizer: undefined };
  }
  const model = await loadModel(config.model, { backend: config.backend });
  const tokenizer = await loadTokenizer(model.dir);
  return { model, tokenizer };
}

/** An abort signal raised by the first Ctrl-C (the second one quits at once). */
export function abortOnInterrupt(label: string): { signal: AbortSignal; dispose(): void } {
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

/** Settings that pick the training / evaluation rows. */
export const DATA_SETTINGS = {
  data: {
    kind: "list",
    help:
      `dataset file(s) or folder (parquet, JSONL, JSON, CSV), or ${LAB_TASK} (the built-in lab-value task)`,
    default: [LAB_TASK],
  },
  format: {
    kind: "string",
    help: "dataset layout (medvlthinker, medagents, pubmedqa, closed_vqa); default: recognised",
  },
  limit: { kind: "number", help: "use only the first N rows" },
  labTrain: { kind: "number", help: `training rows of ${LAB_TASK}`, default: 256 },
  labTest: { kind: "number", help: `held-out rows of ${LAB_TASK} (evalData: ${LAB_TASK})`, default: 60 },
} as const;

/**
 * The rows of `paths`: dataset files through `loadDataset`, or `lab_task`'s training split (`split`
 * `train`) or held-out split (`test`), seeded by `seed`.
 */
export async function loadRows(
  paths: string[],
  options: {
    format?: string;
    limit?: number;
    split: "train" | "test";
    labTrain: number;
    labTest: number;
    seed: number;
  },
): Promise<Row[]> {
  let rows: Row[];
  if (paths.length === 1 && paths[0] === LAB_TASK) {
    const splits = labTaskSplits({ train: options.labTrain, test: options.labTest, seed: options.seed });
    rows = (options.split === "train" ? splits.train : splits.test) as unknown as Row[];
  } else {
    const table = await loadDataset(paths.length === 1 ? paths[0] : paths, {
      format: options.format as never,
    });
    rows = table.objects() as Row[];
  }
  return options.limit !== undefined ? rows.slice(0, options.limit) : rows;
}

/**
 * Write the run's record into `dir`: `config.yaml` (every resolved setting; `--config` on it repeats
 * the run) and `run.json` (toolkit version, command, command line, start time).
 */
export async function writeRunRecord(
  dir: string,
  command: string,
  config: object,
  argv: string[],
): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  const settings = Object.fromEntries(Object.entries(config).filter(([, v]) => v !== undefined));
  const header = [
    `# medthink ${VERSION}: the resolved settings of this ${command} run (defaults < --config file < flags).`,
    `# Repeat it with: medthink ${command} --config ${dir}/config.yaml`,
    "",
  ].join("\n");
  await Deno.writeTextFile(`${dir}/config.yaml`, header + YAML.stringify({ [command]: settings }));
  await Deno.writeTextFile(
    `${dir}/run.json`,
    JSON.stringify({ medthink: VERSION, command, argv, started: new Date().toISOString() }, null, 2) + "\n",
  );
}
