/**
 * The command line: `deno run -A cli.ts <command> [--config FILE.yaml] [--flags]`, or installed as one
 * command (`deno install -g -A -n medthink --config deno.json cli.ts`, then `medthink grpo --config X.yaml`).
 *
 * Commands: probe, filter, sft, grpo, distill, evaluate, serve (one file each under `lib/cli/`). Every
 * setting is a key of the YAML config (camelCase, snake_case or kebab-case) and a flag
 * (`--max-new-tokens 64`); flags override the config; unknown keys and flags are errors.
 * `cli.ts --help` lists the commands, `cli.ts <command> --help` their settings.
 *
 * @module
 */
import { main } from "./lib/cli/main.ts";

export { helpText, main, mainHelp, parseCommand } from "./lib/cli/main.ts";
export { benchmarkSpec } from "./lib/cli/evaluate.ts";

if (import.meta.main) Deno.exit(await main(Deno.args));
