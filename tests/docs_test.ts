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

async function libFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(`${ROOT}${dir}`)) {
    if (e.isDirectory) out.push(...await libFiles(`${dir}/${e.name}`));
    else if (e.name.endsWith(".ts")) out.push(`${dir}/${e.name}`);
  }
  return out.sort();
}

Deno.test("the JSDoc examples of mod.ts and lib/ type-check (deno check --doc)", async () => {
  const files = await libFiles("lib");
  assert(files.length > 10, `only ${files.length} files under lib/`);
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["check", "--doc", "mod.ts", ...files],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  const errors = text.split("\n").filter((l) => /^(TS\d+|error)/.test(l));
  assert(out.success, `deno check --doc failed:\n${errors.join("\n")}\n\n${text.slice(-4000)}`);
});
