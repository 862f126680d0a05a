// The public API's documentation is complete: `deno doc --lint mod.ts` (every exported symbol has
// JSDoc, every type in a public signature is itself exported) exits 0.
import { ok as assert } from "node:assert/strict";

const ROOT = new URL("..", import.meta.url).pathname;

Deno.test("deno doc --lint mod.ts is clean", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["doc", "--lint", "mod.ts"],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  // Only the lint's own diagnostics: type-resolution warnings from third-party .d.ts files are noise here.
  const errors = text.split("\n").filter((l) => /^error/.test(l));
  assert(out.success, `deno doc --lint mod.ts failed:\n${errors.join("\n")}\n\n${text.slice(-4000)}`);
  assert(errors.length === 0, errors.join("\n"));
});
