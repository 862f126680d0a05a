/**
 * YAML for configuration files (the examples' and recipes' configs), through the `yaml` package that the
 * toolkit pins; `@std/yaml` lives on JSR, which this project cannot reach.
 *
 * @module
 */
import { YAML } from "./deps.ts";

/**
 * Parse YAML text into plain data; a syntax error becomes one sentence naming `where` (a file name).
 *
 * @example
 * ```ts
 * import { parseYaml } from "./yaml.ts";
 * const config = parseYaml("probe:\n  numGenerations: 4\n") as { probe: { numGenerations: number } };
 * console.assert(config.probe.numGenerations === 4);
 * ```
 */
export function parseYaml(text: string, where = "the YAML text"): unknown {
  try {
    return YAML.parse(text);
  } catch (e) {
    throw new Error(`${where} is not valid YAML: ${(e as Error).message.split("\n")[0]}`);
  }
}
