/**
 * What the examples share: flags (`--model`, `--data`, `--config`, `--out`, `--backend`, `--quick`),
 * the YAML config, the quick CI setting and where the bundled data lives. Image inputs for Qwen2.5-VL
 * come from the library (`visionInputBuilder`, the default of `probe` and `evaluate`).
 *
 * Flags are parsed with `node:util` `parseArgs` and configs with the `yaml` package: `@std/cli` and
 * `@std/yaml` live on JSR, which this project cannot reach.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { parseYaml } from "../mod.ts";

/** Parsed command line of an example. */
export interface ExampleArgs {
  /** Checkpoint folder or an embedded model name (`--model`). */
  model?: string;
  /** Dataset file(s) or folder (`--data`). */
  data?: string;
  /** YAML config (`--config`). */
  config?: string;
  /** Output folder (`--out`). Default `runs/<example>`. */
  out?: string;
  /** tfjs backend (`--backend`). */
  backend?: string;
  /** Short CI-sized run (`--quick`, or the `CI` environment variable set to a true value). */
  quick: boolean;
  /** Continue an interrupted run from the files in the output folder (`--resume`) instead of starting over. */
  resume: boolean;
  /** Other flags, as strings. */
  extra: Record<string, string | boolean | undefined>;
}

/** The repository root (examples/..). */
export const ROOT: string = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

/**
 * Parse the example's flags; `--help` prints `usage` and exits. `extra` names further string flags.
 * `--resume` is accepted only by examples that implement it (`options.resume`): elsewhere it is an unknown
 * flag, not one silently ignored.
 */
export function parseExampleArgs(
  usage: string,
  extra: string[] = [],
  options: { resume?: boolean } = {},
): ExampleArgs {
  const flags: Record<string, { type: "string" | "boolean" }> = {
    model: { type: "string" },
    data: { type: "string" },
    config: { type: "string" },
    out: { type: "string" },
    backend: { type: "string" },
    quick: { type: "boolean" },
    help: { type: "boolean" },
  };
  if (options.resume) flags.resume = { type: "boolean" };
  for (const name of extra) flags[name] = { type: "string" };
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({ args: Deno.args, options: flags, allowPositionals: false }).values;
  } catch (e) {
    // an unknown or malformed flag is one line naming it, not a stack trace
    console.error(`error: ${(e as Error).message} (see --help).`);
    Deno.exit(2);
  }
  if (values.help) {
    console.log(usage.trim());
    Deno.exit(0);
  }
  const ci = (Deno.env.get("CI") ?? "").toLowerCase();
  const quick = Boolean(values.quick) || (ci !== "" && ci !== "false" && ci !== "0");
  const rest: Record<string, string | boolean | undefined> = {};
  for (const name of extra) rest[name] = values[name] as string | undefined;
  return {
    model: values.model as string | undefined,
    data: values.data as string | undefined,
    config: values.config as string | undefined,
    out: values.out as string | undefined,
    backend: values.backend as string | undefined,
    quick,
    resume: Boolean(values.resume),
    extra: rest,
  };
}

/** Read a YAML config into a plain object (an absent path gives `{}`). */
export async function readYamlConfig(path: string | undefined): Promise<Record<string, unknown>> {
  if (!path) return {};
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new Error(`Config file ${path} could not be read: ${(e as Error).message}`);
  }
  const parsed = parseYaml(text, `Config file ${path}`);
  if (parsed === null || parsed === undefined) return {};
  if (typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new Error(`Config file ${path} does not hold a YAML mapping of settings.`);
  }
  return parsed as Record<string, unknown>;
}

/** A section of a config (e.g. `sft:`), checked to be a mapping. */
export function section(
  config: Record<string, unknown>,
  key: string,
  file = "the config",
): Record<string, unknown> {
  const value = config[key];
  if (value === undefined || value === null) return {};
  if (typeof value !== "object" || Array.isArray(value)) {
    throw new Error(`Key '${key}' of ${file} must be a mapping of settings.`);
  }
  return value as Record<string, unknown>;
}

/**
 * The folder of the bundled public data (MedQA, PubMedQA, VQA-RAD closed): `$MEDTHINK_DATA`, else
 * else `data/` inside the repository; null when none exists.
 */
export function findDataDir(): string | null {
  const candidates = [Deno.env.get("MEDTHINK_DATA"), `${ROOT}/data`];
  for (const dir of candidates) {
    if (!dir) continue;
    try {
      if (Deno.statSync(dir).isDirectory) return dir;
    } catch { /* not there */ }
  }
  return null;
}

/** Create the output folder and return it. */
export async function outDir(args: ExampleArgs, name: string): Promise<string> {
  const dir = args.out ?? `${ROOT}/runs/${name}`;
  await Deno.mkdir(dir, { recursive: true });
  return dir;
}

/** Seconds since `t0` (performance.now()), one decimal. */
export function since(t0: number): string {
  return ((performance.now() - t0) / 1000).toFixed(1);
}
