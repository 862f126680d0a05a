// The architecture's one rule, read from the source: lib/'s folders form layers that only point down
// (util <- hub <- model <- data <- engine <- reward <- eval / train <- serve <- cli), siblings never import
// each other, no two files import each other in a cycle, and no model file imports the loader.
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";

const LIB = new URL("../lib/", import.meta.url).pathname;

/** Rank of each folder of lib/: a file may import only from its own folder or a lower rank. */
export const LAYERS: Record<string, number> = {
  util: 0,
  hub: 1,
  model: 2,
  data: 3,
  engine: 4,
  reward: 5,
  eval: 6,
  train: 6,
  serve: 7,
  cli: 8,
};

function walk(dir: string): string[] {
  const out: string[] = [];
  for (const e of Deno.readDirSync(dir)) {
    const p = `${dir}/${e.name}`.replace(/\/+/g, "/");
    if (e.isDirectory) out.push(...walk(p));
    else if (e.name.endsWith(".ts")) out.push(p);
  }
  return out;
}

/** Relative specifiers of static imports, re-exports and dynamic imports of string literals. */
export function importsOf(source: string): string[] {
  const code = source.replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
  const specs = new Set<string>();
  const re =
    /(?:^|[;\s])(?:import|export)\s[^"'`;]*?from\s*["']([^"']+)["']|(?:^|[;\s])import\s*["']([^"']+)["']|import\(\s*["']([^"']+)["']\s*\)/gm;
  for (const m of code.matchAll(re)) {
    const s = m[1] ?? m[2] ?? m[3];
    if (s.startsWith(".")) specs.add(s);
  }
  return [...specs];
}

function resolve(from: string, spec: string): string {
  return new URL(spec, `file://${from}`).pathname;
}

function folderOf(file: string): string {
  const rel = file.slice(LIB.length);
  return rel.includes("/") ? rel.split("/")[0] : "(lib root)";
}

const FILES = walk(LIB.replace(/\/$/, ""));
const GRAPH = new Map<string, string[]>();
for (const f of FILES) {
  GRAPH.set(
    f,
    importsOf(Deno.readTextFileSync(f)).map((s) => resolve(f, s)).filter((t) => t.startsWith(LIB)),
  );
}

Deno.test("layers: every file of lib/ lives in a known layer folder", () => {
  const unknown = FILES.filter((f) => LAYERS[folderOf(f)] === undefined).map((f) => f.slice(LIB.length));
  assertEquals(unknown, [], `files outside the layer folders ${Object.keys(LAYERS).join(", ")}`);
});

Deno.test("layers: no import points up or sideways", () => {
  const bad: string[] = [];
  for (const [from, targets] of GRAPH) {
    const a = folderOf(from);
    for (const to of targets) {
      const b = folderOf(to);
      if (a === b) continue;
      if (!(LAYERS[b] < LAYERS[a])) {
        bad.push(`lib/${from.slice(LIB.length)} (${a}) imports lib/${to.slice(LIB.length)} (${b})`);
      }
    }
  }
  assertEquals(bad, [], "imports that do not point down:\n" + bad.join("\n"));
});

Deno.test("layers: no cycle between files of lib/", () => {
  const state = new Map<string, 1 | 2>();
  const stack: string[] = [];
  const cycles: string[] = [];
  const visit = (f: string) => {
    state.set(f, 1);
    stack.push(f);
    for (const t of GRAPH.get(f) ?? []) {
      if (state.get(t) === 1) {
        cycles.push(stack.slice(stack.indexOf(t)).concat(t).map((x) => x.slice(LIB.length)).join(" -> "));
      } else if (!state.has(t)) visit(t);
    }
    stack.pop();
    state.set(f, 2);
  };
  for (const f of FILES) if (!state.has(f)) visit(f);
  assertEquals(cycles, [], "import cycles:\n" + cycles.join("\n"));
});

Deno.test("layers: no model file imports the loader (architectures register themselves)", () => {
  const loader = `${LIB}model/load.ts`;
  const importers = [...GRAPH].filter(([f, ts]) => folderOf(f) === "model" && ts.includes(loader))
    .map(([f]) => f.slice(LIB.length));
  assertEquals(importers, []);
});

Deno.test("layers: the checker sees what it must (an upward import is caught)", () => {
  const src =
    `import { a } from "../train/x.ts";\nexport * from "./y.ts";\nawait import("../z.ts");\nimport "./side.ts";`;
  assertEquals(importsOf(src).sort(), ["../train/x.ts", "../z.ts", "./side.ts", "./y.ts"]);
  assert(!(LAYERS["train"] < LAYERS["data"]), "train is above data");
});
