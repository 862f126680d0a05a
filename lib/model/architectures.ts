/**
 * The built-in architectures: importing a model file adds its loader to the registry. A new
 * architecture is a new model file that calls `registerArchitecture` and one line here.
 *
 * @module
 */
import "./qwen2.ts";
import "./qwen25vl.ts";
