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

/** Every name mod.ts exports (values, types, namespaces), read from its export statements. */
function modExports(source: string): string[] {
  const names = new Set<string>();
  const code = source.replace(/\/\*[\s\S]*?\*\//g, "").replace(/\/\/.*$/gm, "");
  for (const m of code.matchAll(/export\s+(?:type\s+)?\{([^}]*)\}\s*from/g)) {
    for (const part of m[1].split(",")) {
      const item = part.trim().replace(/^type\s+/, "");
      if (!item) continue;
      const as = /\bas\s+(\w+)$/.exec(item);
      names.add(as ? as[1] : item);
    }
  }
  for (const m of code.matchAll(/export\s+\*\s+as\s+(\w+)\s+from/g)) names.add(m[1]);
  for (const m of code.matchAll(/export\s+(?:async\s+)?(?:function|const|class|interface|type)\s+(\w+)/g)) {
    names.add(m[1]);
  }
  return [...names].sort();
}

Deno.test("docs/api.md names every export of mod.ts", async () => {
  const names = modExports(await Deno.readTextFile(`${ROOT}mod.ts`));
  assert(names.length > 100, `only ${names.length} exports read from mod.ts: the parser is broken`);
  assert(names.includes("aq") && names.includes("CompletionSamplingOptions") && names.includes("probe"));
  const api = await Deno.readTextFile(`${ROOT}docs/api.md`);
  // a name counts as documented inside code: a fenced block, or a span (`probe(model, table)`, `EvalReport`)
  const fences = [...api.matchAll(/^```[^\n]*\n([\s\S]*?)^```/gm)].map((m) => m[1]);
  const prose = api.replace(/^```[^\n]*\n[\s\S]*?^```/gm, "");
  const spans = [...fences, ...[...prose.matchAll(/`([^`\n]+)`/g)].map((m) => m[1])].join("\n");
  const missing = names.filter((n) =>
    !new RegExp(`(^|[^\\w$])${n.replace("$", "\\$")}([^\\w$]|$)`, "m").test(spans)
  );
  assert(missing.length === 0, `docs/api.md does not mention these mod.ts exports: ${missing.join(", ")}`);
});
