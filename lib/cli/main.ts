/**
 * The command table of `cli.ts` and its entry point: `medthink <command> [--config FILE.yaml] [flags]`.
 * One file per command (`probe.ts`, `filter.ts`, `evaluate.ts`, `sft.ts`, `grpo.ts`, `distill.ts`,
 * `serve.ts`); the settings machinery is `settings.ts`.
 *
 * @module
 */
import { type Command, commandHelp, parseSettings, type Resolved, type SettingsSpec } from "./settings.ts";
import { PROBE_COMMAND } from "./probe.ts";
import { FILTER_COMMAND } from "./filter.ts";
import { EVALUATE_COMMAND } from "./evaluate.ts";
import { SFT_COMMAND } from "./sft.ts";
import { GRPO_COMMAND } from "./grpo.ts";
import { DISTILL_COMMAND } from "./distill.ts";
import { SERVE_COMMAND } from "./serve.ts";
import { VERSION } from "./common.ts";

/** Every command, in the order of the recipe. */
export const COMMANDS: Readonly<Record<string, Command<SettingsSpec>>> = {
  probe: PROBE_COMMAND,
  filter: FILTER_COMMAND,
  sft: SFT_COMMAND,
  grpo: GRPO_COMMAND,
  distill: DISTILL_COMMAND,
  evaluate: EVALUATE_COMMAND,
  serve: SERVE_COMMAND,
} as unknown as Record<string, Command<SettingsSpec>>;

const BIN = "deno run -A cli.ts";

function command(name: string): Command<SettingsSpec> {
  const cmd = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (!cmd) throw new Error(`Unknown command '${name}'; use one of ${Object.keys(COMMANDS).join(", ")}.`);
  return cmd;
}

/** Usage text of one command. */
export function helpText(name: string): string {
  return commandHelp(name, command(name), BIN);
}

/** The top-level usage: every command with its summary. */
export function mainHelp(): string {
  return [
    `medthink ${VERSION}: the MedVLThinker recipe (probe, filter, SFT / GRPO, distill, evaluate, serve).`,
    "",
    `Usage: ${BIN} <command> [--config FILE.yaml] [options]`,
    "   or: medthink <command> ...   (installed: deno install -g -A -n medthink --config deno.json cli.ts)",
    "",
    "Commands:",
    ...Object.entries(COMMANDS).map(([n, c]) => `  ${n.padEnd(10)}${c.summary}`),
    "",
    "Recipes (the paper's runs, and tiny versions that run in minutes): recipes/*.yaml, recipes/tiny/*.yaml.",
    `Run \`${BIN} <command> --help\` for a command's options.`,
  ].join("\n");
}

/**
 * Parse a command's flags and config file into one settings object (defaults < config < flags).
 * Returns null when `--help` was asked for.
 */
export async function parseCommand(
  name: string,
  args: string[],
): Promise<Resolved<SettingsSpec> | null> {
  return await parseSettings(name, command(name), args, COMMANDS);
}

/** Run the CLI with `args`; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const [name, ...rest] = args;
  if (!name || name === "--help" || name === "-h" || name === "help") {
    console.log(mainHelp());
    return name ? 0 : 2;
  }
  if (name === "--version") {
    console.log(`medthink ${VERSION}`);
    return 0;
  }
  try {
    const config = await parseCommand(name, rest);
    if (config === null) {
      console.log(helpText(name));
      return 0;
    }
    await command(name).run(config, args);
    return 0;
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    return 1;
  }
}
