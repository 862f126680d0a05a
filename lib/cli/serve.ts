/**
 * `cli.ts serve`: serve a checkpoint over an OpenAI-compatible HTTP API (lib/serve/command.ts).
 *
 * @module
 */
import { runServe, SERVE_SETTINGS } from "../serve/command.ts";
import { defineCommand } from "./settings.ts";

/** The `serve` command. */
export const SERVE_COMMAND = defineCommand({
  summary: "serve a checkpoint over an OpenAI-compatible HTTP API (vLLM's routes and shapes)",
  settings: SERVE_SETTINGS,
  run: (config) => runServe(config),
});
