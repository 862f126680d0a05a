/**
 * The settings machinery every `cli.ts` command shares: a command declares its settings once (kind,
 * help, default); the same declaration gives the flags (`--max-new-tokens 64`), the YAML keys
 * (camelCase, snake_case or kebab-case), the `--help` text and the TYPE of the resolved settings its
 * `run` receives (no casts in the commands).
 *
 * Precedence: defaults < the YAML file (top-level keys, then the command's own section) < flags.
 * Unknown flags and unknown YAML keys are errors naming the key (with `lib/util/options.ts`'s "did you
 * mean"); a command's own section (`probe:`) may only hold that command's keys, while top-level keys
 * that belong to another command are tolerated (one file for probe and filter, say).
 *
 * (`@std/cli` lives on JSR, unreachable here: flags are parsed with `node:util` `parseArgs`, YAML with
 * the `yaml` package.)
 *
 * @module
 */
import { parseArgs } from "node:util";
import { YAML } from "../util/deps.ts";
import { closestKey } from "../util/options.ts";

/** The type of a setting: how its flag and config value are read. */
export type Kind = "string" | "number" | "boolean" | "list" | "numbers";

/** One setting of a command. */
export interface Setting {
  /** How the flag / YAML value is read. */
  readonly kind: Kind;
  /** One line for `--help`. */
  readonly help: string;
  /** Default value (absent: the setting is undefined unless given). */
  readonly default?: unknown;
}

/** A command's settings by camelCase name. */
export type SettingsSpec = Readonly<Record<string, Setting>>;

/** The value type of a setting kind. */
export type ValueOf<K extends Kind> = K extends "number" ? number
  : K extends "boolean" ? boolean
  : K extends "list" ? string[]
  : K extends "numbers" ? number[]
  : string;

/** The resolved settings of a spec: settings with a default are always present. */
export type Resolved<S extends SettingsSpec> =
  & { -readonly [K in keyof S as S[K] extends { default: unknown } ? K : never]: ValueOf<S[K]["kind"]> }
  & { -readonly [K in keyof S as S[K] extends { default: unknown } ? never : K]?: ValueOf<S[K]["kind"]> };

/** A command of `cli.ts`. */
export interface Command<S extends SettingsSpec = SettingsSpec> {
  /** One line for the command list. */
  summary: string;
  /** Its settings. */
  settings: S;
  /** Run it with the resolved settings; `argv` is the command line it was given (for the run's record). */
  run(config: Resolved<S>, argv: string[]): Promise<void>;
}

/** Declare a command (keeps its settings' literal kinds, so `run` gets typed settings). */
export function defineCommand<const S extends SettingsSpec>(command: Command<S>): Command<S> {
  return command;
}

/** `max-new-tokens` / `max_new_tokens` -> `maxNewTokens`. */
export function camel(key: string): string {
  return key.replace(/[-_]([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

/** `maxNewTokens` -> `max-new-tokens`. */
export function kebab(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

function coerce(command: string, key: string, kind: Kind, value: unknown, source: string): unknown {
  if (value === undefined || value === null) return undefined;
  const number = (v: unknown) => {
    const x = typeof v === "number" ? v : Number(String(v).trim());
    if (String(v).trim() === "" || !Number.isFinite(x)) {
      throw new Error(`${source}: '${key}' of ${command} must be a number, got '${v}'.`);
    }
    return x;
  };
  switch (kind) {
    case "number":
      return number(value);
    case "boolean":
      if (typeof value === "boolean") return value;
      if (["true", "1", "yes"].includes(String(value).toLowerCase())) return true;
      if (["false", "0", "no"].includes(String(value).toLowerCase())) return false;
      throw new Error(`${source}: '${key}' of ${command} must be true or false, got '${value}'.`);
    case "list":
      if (Array.isArray(value)) return value.map(String);
      return String(value).split(",").map((s) => s.trim()).filter(Boolean);
    case "numbers":
      return (Array.isArray(value) ? value : String(value).split(",").map((s) => s.trim()).filter(Boolean))
        .map(number);
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
export function commandHelp(name: string, cmd: Command<SettingsSpec>, bin: string): string {
  const lines = [
    `Usage: ${bin} ${name} [--config FILE.yaml] [options]`,
    "",
    `${cmd.summary}.`,
    "",
    "Options (each is also a key of the YAML config; flags override the config):",
    `  --config FILE.yaml`.padEnd(34) + "settings file (a run's own config.yaml repeats it)",
  ];
  for (const [key, s] of Object.entries(cmd.settings)) {
    const arg = s.kind === "boolean"
      ? ""
      : ` <${s.kind === "list" ? "a,b,..." : s.kind === "numbers" ? "x,y,..." : s.kind}>`;
    const def = s.default !== undefined
      ? ` (default: ${Array.isArray(s.default) ? s.default.join(",") : s.default})`
      : "";
    lines.push(`  --${kebab(key)}${arg}`.padEnd(34) + s.help + def);
  }
  lines.push(`  --help`.padEnd(34) + "show this help");
  return lines.join("\n");
}

/** Read a YAML config file into a mapping (an empty file is an empty mapping). */
export async function readConfigFile(file: string): Promise<Record<string, unknown>> {
  let doc: unknown;
  try {
    doc = YAML.parse(await Deno.readTextFile(file));
  } catch (e) {
    throw new Error(`Config ${file} cannot be read as YAML: ${(e as Error).message.split("\n")[0]}`);
  }
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== "object" || Array.isArray(doc)) {
    throw new Error(`Config ${file} must be a mapping of settings.`);
  }
  return doc as Record<string, unknown>;
}

/**
 * Parse a command's flags and config file into one settings object (defaults < config < flags).
 * Returns null when `--help` was asked for. `commands` are all commands (a top-level key of another
 * command is tolerated in a shared file; a section of another command is skipped).
 */
export async function parseSettings<S extends SettingsSpec>(
  name: string,
  cmd: Command<S>,
  args: string[],
  commands: Readonly<Record<string, Command<SettingsSpec>>>,
): Promise<Resolved<S> | null> {
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
    const flag = /'(-[^']*)'/.exec((e as Error).message)?.[1];
    const near = flag?.startsWith("--")
      ? Object.keys(options).find((o) =>
        o.replace(/-/g, "") === flag.slice(2).replace(/[-_]/g, "").toLowerCase()
      )
      : undefined;
    throw new Error(
      `${(e as Error).message.replace(/\.$/, "")}${near ? ` (did you mean '--${near}'?)` : ""} ` +
        `(see \`cli.ts ${name} --help\`).`,
    );
  }
  const values = parsed.values as Record<string, unknown>;
  if (values.help) return null;
  const config: Record<string, unknown> = {};
  for (const [key, s] of Object.entries(cmd.settings)) if (s.default !== undefined) config[key] = s.default;
  if (typeof values.config === "string") {
    const file = values.config;
    const top = await readConfigFile(file);
    const own = top[name];
    if (own !== undefined && (own === null || typeof own !== "object" || Array.isArray(own))) {
      throw new Error(`Config ${file}: section '${name}' must be a mapping of ${name}'s settings.`);
    }
    const section = (own ?? {}) as Record<string, unknown>;
    const shared = Object.entries(top).filter(([k]) => !(k in commands));
    const foreign = (key: string) => Object.values(commands).some((c) => camel(key) in c.settings);
    // The command's own section holds only its own keys (a misplaced key is an error, not ignored); a
    // top-level key of another command is fine in a shared file; anything else unknown is an error.
    for (
      const [raw, where] of [
        ...Object.keys(section).map((k) => [k, ` (section '${name}:')`]),
        ...shared.filter(([k]) => !foreign(k)).map(([k]) => [k, ""]),
      ]
    ) {
      if (camel(raw) in cmd.settings) continue;
      const near = closestKey(camel(raw), Object.keys(cmd.settings));
      throw new Error(
        `Config ${file}: unknown key '${raw}'${where} for ${name}` +
          (near ? `: did you mean '${near}'?` : "") + ` (see \`cli.ts ${name} --help\`).`,
      );
    }
    for (const [raw, v] of [...shared, ...Object.entries(section)]) {
      const key = camel(raw);
      const s = cmd.settings[key];
      if (s) config[key] = coerce(name, raw, s.kind, v, `Config ${file}`);
    }
  }
  for (const [key, s] of Object.entries(cmd.settings)) {
    const flag = kebab(key);
    if (s.kind === "boolean" && values[`no-${flag}`]) config[key] = false;
    if (values[flag] !== undefined) config[key] = coerce(name, `--${flag}`, s.kind, values[flag], "Flag");
  }
  return config as Resolved<S>;
}

/** The value of a required setting; absent (or an empty list) is an error naming its flag and key. */
export function need<T>(value: T | undefined, key: string, command: string): T {
  if (value === undefined || (Array.isArray(value) && value.length === 0)) {
    throw new Error(`${command} needs '${key}' (flag --${kebab(key)} or config key ${key}).`);
  }
  return value;
}
