/**
 * `deno task setup:tensorflow`: build the `@tensorflow/tfjs-node@4.22.0` native binding from source
 * against the TensorFlow C library shipped in a `tensorflow-cpu` wheel.
 *
 * The package's own install script downloads a prebuilt binary from a host many machines cannot reach;
 * the wheel (from pip's store, or a file the user gives) carries the same C API, so we compile the
 * binding against it instead:
 *
 * 1. wheel: `--wheel PATH`, else `MEDTHINK_TF_WHEEL`, else `pip download --no-deps tensorflow-cpu==2.21.0`
 *    into the medthink cache;
 * 2. extract `libtensorflow_cc.so.2`, `libtensorflow_framework.so.2` and `include/` once into the cache;
 * 3. in every copy of the package Deno may load (the project's `node_modules/`, which `deno run` uses when
 *    it exists, and Deno's global npm cache, used by scripts outside the project): `deps/include` and
 *    `deps/lib` point at the extracted files, `node-gyp rebuild` compiles `lib/napi-v8/tfjs_binding.node`
 *    (once; the other copies get the same file, its rpath is relative: `$ORIGIN/../../deps/lib`);
 * 4. check that Deno loads it and multiplies two matrices on the `tensorflow` backend.
 *
 * Idempotent: a copy already built against the same wheel is left alone (`--force` rebuilds).
 * With access to storage.googleapis.com the package's own install script works too
 * (`deno install --allow-scripts=npm:@tensorflow/tfjs-node@4.22.0`, or `npm install` under Node).
 *
 * Usage: `deno task setup:tensorflow [--wheel PATH] [--force] [--no-check] [--or-wasm]`
 * (`--or-wasm`: if the binding cannot be built, warn and exit 0, so that a following command runs on wasm.)
 *
 * @module
 */
import { parseArgs } from "node:util";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { cacheRoot } from "../lib/util/cache.ts";
import { exists, isFile } from "../lib/util/fs.ts";
import { buildNativeGemv } from "../lib/model/native_gemv.ts";

const PKG = "@tensorflow/tfjs-node";
const VERSION = "4.22.0";
const TF_REQUIREMENT = "tensorflow-cpu==2.21.0";
const NODE_GYP = "node-gyp@11.4.2";
const MARKER = ".medthink-binding"; // in the package folder: which wheel the binding was built against

const HOW_TO_GET_A_WHEEL = "Get one with `pip download --no-deps -d DIR tensorflow-cpu==2.21.0` " +
  "(on any machine with pip and access to PyPI or a wheel store; " +
  "the Linux x86_64 wheel for any Python version will do) and pass it with `deno task setup:tensorflow --wheel DIR/tensorflow_cpu-*.whl`; " +
  "or, with access to storage.googleapis.com, let the package's normal install fetch its binary " +
  "(`deno install --allow-scripts=npm:@tensorflow/tfjs-node@4.22.0` in a project with a node_modules " +
  "folder, or `npm install @tensorflow/tfjs-node@4.22.0`). Without it, choose `--backend wasm`.";

/** The result of running a command. */
interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function log(msg: string): void {
  console.log(`[setup:tensorflow] ${msg}`);
}

// `--or-wasm` (used by `deno task demo`): a binding that cannot be built is a warning, not an error, and
// the caller goes on with the wasm backend (slower, but it runs everywhere).
let orWasm = false;

function fail(msg: string): never {
  if (orWasm) {
    console.error(`[setup:tensorflow] WARNING: ${msg} Going on with the wasm backend (slower).`);
    Deno.exit(0);
  }
  console.error(`[setup:tensorflow] ERROR: ${msg}`);
  Deno.exit(1);
}

async function run(
  cmd: string,
  args: string[],
  opts: { cwd?: string; inherit?: boolean } = {},
): Promise<Run> {
  try {
    const out = await new Deno.Command(cmd, {
      args,
      cwd: opts.cwd,
      stdout: opts.inherit ? "inherit" : "piped",
      stderr: opts.inherit ? "inherit" : "piped",
    }).output();
    const dec = new TextDecoder();
    return {
      code: out.code,
      stdout: opts.inherit ? "" : dec.decode(out.stdout),
      stderr: opts.inherit ? "" : dec.decode(out.stderr),
    };
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return { code: 127, stdout: "", stderr: `${cmd}: not found` };
    throw e;
  }
}

/** The user's cache folder (`$XDG_CACHE_HOME`, else `~/.cache`): where Deno keeps its own cache by default. */
function homeCache(): string {
  const xdg = Deno.env.get("XDG_CACHE_HOME");
  const home = Deno.env.get("HOME") ?? Deno.env.get("USERPROFILE") ?? ".";
  return xdg || path.join(home, ".cache");
}

/** The medthink cache folder: the library's one rule (`lib/util/cache.ts`), so both find the binding. */
function medthinkCache(): string {
  return cacheRoot();
}

/** The project root: the folder above this script holding `deno.json`. */
function projectRoot(): string {
  return path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
}

/** Deno's npm cache folder, as `deno info` reports it. */
async function denoNpmCache(): Promise<string> {
  const r = await run(Deno.execPath(), ["info", "--json"]);
  if (r.code === 0) {
    try {
      const info = JSON.parse(r.stdout);
      if (info.npmCache) return info.npmCache;
    } catch { /* fall through */ }
  }
  return path.join(Deno.env.get("DENO_DIR") || path.join(homeCache(), "deno"), "npm");
}

// ---------------------------------------------------------------------------------------------------
// 1. the wheel

async function findWheel(explicit: string | undefined): Promise<string> {
  const given = explicit ?? (Deno.env.get("MEDTHINK_TF_WHEEL") || undefined);
  if (given) {
    if (!(await isFile(given))) fail(`The wheel '${given}' does not exist. ${HOW_TO_GET_A_WHEEL}`);
    return path.resolve(given);
  }
  const dir = path.join(medthinkCache(), "wheels");
  const cached = await wheelIn(dir);
  if (cached) {
    log(`wheel: ${cached} (cached)`);
    return cached;
  }
  await Deno.mkdir(dir, { recursive: true });
  log(`downloading ${TF_REQUIREMENT} with pip into ${dir} ...`);
  const base = ["download", "--no-deps", "--only-binary=:all:", "-d", dir, TF_REQUIREMENT];
  // The store may only hold the CPython 3.11 build; the C library inside does not care which Python
  // runs here, so fall back to asking for that build explicitly.
  const compat = ["--python-version", "3.11", "--platform", "manylinux_2_27_x86_64"];
  const tried: string[] = [];
  for (const [cmd, pre] of [["pip", []], ["pip3", []], ["python3", ["-m", "pip"]]] as const) {
    for (const extra of [[], compat]) {
      const r = await run(cmd, [...pre, ...base, ...extra]);
      const found = await wheelIn(dir);
      if (r.code === 0 && found) return found;
      tried.push(
        `${[cmd, ...pre].join(" ")} ${extra.length ? "(3.11 build) " : ""}-> ${
          (r.stderr.trim().split("\n").at(-1) || `exit ${r.code}`).slice(0, 200)
        }`,
      );
      if (r.code === 127) break; // no such command: no point in the second form
    }
  }
  fail(
    `No TensorFlow wheel: pip could not download ${TF_REQUIREMENT} (${
      tried.join("; ")
    }). ${HOW_TO_GET_A_WHEEL}`,
  );
}

async function wheelIn(dir: string): Promise<string | null> {
  try {
    for await (const e of Deno.readDir(dir)) {
      if (e.isFile && /^tensorflow(_cpu)?-.*\.whl$/.test(e.name)) return path.join(dir, e.name);
    }
  } catch { /* no folder yet */ }
  return null;
}

// ---------------------------------------------------------------------------------------------------
// 2. the C library and headers, extracted once per wheel

/** Extract what the binding needs from `wheel`; returns the folder holding `include/` and `lib/`. */
async function extractLibtensorflow(wheel: string): Promise<string> {
  const stem = path.basename(wheel).replace(/\.whl$/, "");
  const dest = path.join(medthinkCache(), "libtensorflow", stem);
  if (await isFile(path.join(dest, "lib", "libtensorflow.so.2"))) {
    log(`TensorFlow C library: ${dest} (already extracted)`);
    return dest;
  }
  log(`extracting the TensorFlow C library and headers from ${path.basename(wheel)} ...`);
  await Deno.mkdir(path.dirname(dest), { recursive: true });
  const tmp = await Deno.makeTempDir({ dir: path.dirname(dest), prefix: ".extract-" });
  try {
    await Deno.chmod(tmp, 0o755); // temp folders are private; the library should be readable by all
    const members = [
      "tensorflow/libtensorflow_cc.so.2",
      "tensorflow/libtensorflow_framework.so.2",
      "tensorflow/include/*",
    ];
    let r = await run("unzip", ["-q", "-o", wheel, ...members, "-d", tmp]);
    if (r.code !== 0) {
      // No unzip here: Python's zipfile does the same.
      const py = `import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
for n in z.namelist():
    if n in ("tensorflow/libtensorflow_cc.so.2", "tensorflow/libtensorflow_framework.so.2") or n.startswith("tensorflow/include/"):
        z.extract(n, sys.argv[2])`;
      const r2 = await run("python3", ["-c", py, wheel, tmp]);
      if (r2.code !== 0) {
        fail(
          `Could not extract ${wheel}: unzip said '${r.stderr.trim().slice(0, 200)}', python3 said '${
            r2.stderr.trim().slice(0, 200)
          }'. Install unzip (\`apt-get install unzip\`).`,
        );
      }
      r = r2;
    }
    const tfDir = path.join(tmp, "tensorflow");
    for (
      const f of ["libtensorflow_cc.so.2", "libtensorflow_framework.so.2", "include/tensorflow/c/c_api.h"]
    ) {
      if (!(await exists(path.join(tfDir, f)))) {
        fail(
          `The wheel ${wheel} has no tensorflow/${f}: it is not a TensorFlow 2.x Linux wheel. ${HOW_TO_GET_A_WHEEL}`,
        );
      }
    }
    const lib = path.join(tmp, "lib");
    await Deno.mkdir(lib);
    await Deno.rename(path.join(tfDir, "libtensorflow_cc.so.2"), path.join(lib, "libtensorflow_cc.so.2"));
    await Deno.rename(
      path.join(tfDir, "libtensorflow_framework.so.2"),
      path.join(lib, "libtensorflow_framework.so.2"),
    );
    // The binding links -ltensorflow; the C API (TF_*, TFE_*) is exported by libtensorflow_cc.so.2.
    await Deno.symlink("libtensorflow_cc.so.2", path.join(lib, "libtensorflow.so"));
    await Deno.symlink("libtensorflow_cc.so.2", path.join(lib, "libtensorflow.so.2"));
    await Deno.symlink("libtensorflow_framework.so.2", path.join(lib, "libtensorflow_framework.so"));
    await Deno.rename(path.join(tfDir, "include"), path.join(tmp, "include"));
    await Deno.remove(tfDir, { recursive: true });
    await Deno.remove(dest, { recursive: true }).catch(() => {});
    await Deno.rename(tmp, dest); // atomic: a half-extracted folder is never mistaken for a good one
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw e;
  }
  log(`TensorFlow C library: ${dest}`);
  return dest;
}

// ---------------------------------------------------------------------------------------------------
// 3. the package folders and the build

/** Every folder holding the package that Deno may load: the project's node_modules, the global cache. */
async function packageFolders(root: string): Promise<string[]> {
  const deno = Deno.execPath();
  // node_modules/ (nodeModulesDir "auto"): `deno run`/`deno test` in the project load from here.
  log("deno install (populates node_modules/) ...");
  const inst = await run(deno, ["install"], { cwd: root });
  if (inst.code !== 0) log(`warning: deno install failed: ${inst.stderr.trim().split("\n").at(-1)}`);
  // The global cache: scripts outside the project (no deno.json) load from here.
  const tmp = await Deno.makeTempDir({ prefix: "medthink-setup-" });
  try {
    await Deno.writeTextFile(path.join(tmp, "x.ts"), `import "npm:${PKG}@${VERSION}";\n`);
    const c = await run(deno, ["cache", "--node-modules-dir=none", "x.ts"], { cwd: tmp });
    if (c.code !== 0) log(`warning: could not cache ${PKG} globally: ${c.stderr.trim().split("\n").at(-1)}`);
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
  const candidates = [
    path.join(root, "node_modules", ...PKG.split("/")),
    path.join(await denoNpmCache(), "registry.npmjs.org", ...PKG.split("/"), VERSION),
  ];
  const out: string[] = [];
  for (const c of candidates) {
    if (!(await isFile(path.join(c, "binding.gyp")))) continue;
    const real = await Deno.realPath(c);
    if (!out.includes(real)) out.push(real);
  }
  if (out.length === 0) {
    fail(
      `Deno did not fetch npm:${PKG}@${VERSION} (looked in ${
        candidates.join(", ")
      }): check npm registry access.`,
    );
  }
  return out;
}

function bindingPath(pkg: string): string {
  return path.join(pkg, "lib", "napi-v8", "tfjs_binding.node");
}

async function alreadyBuilt(pkg: string, libtf: string): Promise<boolean> {
  if (!(await isFile(bindingPath(pkg)))) return false;
  try {
    return (await Deno.readTextFile(path.join(pkg, MARKER))).trim() === libtf &&
      await isFile(path.join(pkg, "deps", "lib", "libtensorflow.so.2"));
  } catch {
    return false;
  }
}

/** `deps/include` and `deps/lib` in the package folder -> the extracted wheel. */
async function linkDeps(pkg: string, libtf: string): Promise<void> {
  const deps = path.join(pkg, "deps");
  await Deno.remove(deps, { recursive: true }).catch(() => {});
  await Deno.mkdir(deps);
  await Deno.symlink(path.join(libtf, "include"), path.join(deps, "include"));
  await Deno.symlink(path.join(libtf, "lib"), path.join(deps, "lib"));
}

/**
 * Copy `src` to `dest` as a new file. Deno fills `node_modules/` with hard links into its global cache
 * (extra files we added there included), so `dest` may be the very same file as `src`, or a link that
 * must not be written through: unlink it first.
 */
async function replaceFile(src: string, dest: string): Promise<void> {
  const [a, b] = await Promise.all([Deno.stat(src), Deno.stat(dest).catch(() => null)]);
  if (b && a.dev === b.dev && a.ino === b.ino) return;
  await Deno.mkdir(path.dirname(dest), { recursive: true });
  await Deno.remove(dest).catch(() => {});
  await Deno.copyFile(src, dest);
}

async function nodedir(): Promise<string | undefined> {
  const fromEnv = Deno.env.get("npm_config_nodedir");
  if (fromEnv) return fromEnv;
  const r = await run("npm", ["config", "get", "nodedir"]);
  const d = r.stdout.trim();
  return r.code === 0 && d && d !== "undefined" && d !== "null" ? d : undefined;
}

async function build(pkg: string): Promise<void> {
  for (const tool of ["make", "g++", "python3"]) {
    if ((await run("sh", ["-c", `command -v ${tool}`])).code !== 0) {
      fail(
        `Building the binding needs ${tool}, which is not installed (\`apt-get install build-essential python3\`).`,
      );
    }
  }
  const dir = await nodedir();
  const args = [
    "rebuild",
    "--module_name=tfjs_binding",
    "--module_path=lib/napi-v8",
    "--napi_build_version=8",
    `--jobs=${navigator.hardwareConcurrency || 2}`,
  ];
  // node-gyp must not download Node's headers (often unreachable): use the machine's own.
  if (dir) args.push(`--nodedir=${dir}`);
  else log("warning: `npm config get nodedir` is unset; node-gyp may try to download Node's headers");
  log(`node-gyp ${args.join(" ")} (in ${pkg}; about a minute) ...`);
  const t0 = performance.now();
  let r = await run("npx", ["-y", NODE_GYP, ...args], { cwd: pkg, inherit: true });
  if (r.code === 127) {
    // No Node/npx on this machine: node-gyp runs under Deno too.
    r = await run(Deno.execPath(), ["run", "-A", `npm:${NODE_GYP}`, ...args], { cwd: pkg, inherit: true });
  }
  if (r.code !== 0) fail(`node-gyp failed (exit ${r.code}) in ${pkg}; see its output above.`);
  const built = path.join(pkg, "build", "Release", "tfjs_binding.node");
  if (!(await isFile(built))) fail(`node-gyp finished but ${built} does not exist.`);
  await replaceFile(built, bindingPath(pkg));
  log(`built ${bindingPath(pkg)} in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
}

// ---------------------------------------------------------------------------------------------------
// 4. check

async function check(root: string): Promise<void> {
  const code = `
import * as util from "node:util";
const u = (util as any).default ?? util;
if (!u.isNullOrUndefined) u.isNullOrUndefined = (x: unknown) => x === null || x === undefined;
const tf = await import("npm:${PKG}@${VERSION}");
await tf.setBackend("tensorflow");
const a = tf.tensor2d([[1, 2], [3, 4]]);
const v = await tf.matMul(a, a).data();
if (tf.getBackend() !== "tensorflow" || v.join(",") !== "7,10,15,22") throw new Error("wrong: " + v.join(","));
console.log("ok " + tf.version_core);
`;
  const file = path.join(root, `.setup_tensorflow_check_${Deno.pid}.ts`);
  await Deno.writeTextFile(file, code);
  try {
    const r = await run(Deno.execPath(), ["run", "-A", "--no-check", file], { cwd: root });
    if (r.code !== 0 || !r.stdout.includes("ok ")) {
      fail(
        `The binding was built but Deno cannot use it: ${r.stderr.trim().split("\n").slice(-3).join(" ")}`,
      );
    }
  } finally {
    await Deno.remove(file).catch(() => {});
  }
  log("check: Deno loads the binding and multiplies on the 'tensorflow' backend");
}

// ---------------------------------------------------------------------------------------------------

/**
 * Compiles the C loop of the batch-1 decoding products (lib/model/native/gemv.c) for this processor. A
 * machine without a C compiler only loses that speed-up (the TensorFlow path runs), so this warns.
 */
function buildNative(): void {
  const { lib, reason } = buildNativeGemv();
  if (lib) log(`native single-row products: ${lib}`);
  else log(`warning: native single-row products not built (${reason}); decoding uses TensorFlow's MatMul`);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      wheel: { type: "string" },
      force: { type: "boolean", default: false },
      "no-check": { type: "boolean", default: false },
      "or-wasm": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(
      "deno task setup:tensorflow [--wheel PATH] [--force] [--no-check] [--or-wasm]\n\n" +
        "Builds the @tensorflow/tfjs-node binding from a tensorflow-cpu wheel (pip download, or --wheel).",
    );
    return;
  }
  orWasm = values["or-wasm"]!;
  if (Deno.build.os !== "linux") {
    fail(
      `Building from a wheel is set up for Linux only (this is ${Deno.build.os}); ` +
        "`npm install @tensorflow/tfjs-node@4.22.0` fetches a prebuilt binary where the network allows.",
    );
  }
  const root = projectRoot();
  const pkgs = await packageFolders(root);
  // Idempotent and cheap when done: nothing to fetch or extract if every copy is built against a
  // library that is still there.
  // (An explicit --wheel goes on: the binding may have been built against another one.)
  if (!values.force && !values.wheel) {
    const done: boolean[] = [];
    for (const p of pkgs) {
      let marker = "";
      try {
        marker = (await Deno.readTextFile(path.join(p, MARKER))).trim();
      } catch { /* not built */ }
      done.push(marker !== "" && await alreadyBuilt(p, marker));
    }
    if (done.every(Boolean)) {
      log(`already built in ${pkgs.join(", ")} (--force rebuilds)`);
      buildNative();
      if (!values["no-check"]) await check(root);
      return;
    }
  }
  const wheel = await findWheel(values.wheel);
  const libtf = await extractLibtensorflow(wheel);
  let source: string | null = null; // a folder whose binding is built against libtf
  for (const p of pkgs) if (!values.force && await alreadyBuilt(p, libtf)) source = source ?? p;
  for (const p of pkgs) {
    if (!values.force && await alreadyBuilt(p, libtf)) {
      log(`already built: ${p}`);
      continue;
    }
    await linkDeps(p, libtf);
    if (source) {
      // Same sources, same headers, relative rpath: the compiled file is valid here too.
      await replaceFile(bindingPath(source), bindingPath(p));
      log(`copied the binding into ${p}`);
    } else {
      await build(p);
      source = p;
    }
    await Deno.remove(path.join(p, MARKER)).catch(() => {}); // may be a hard link into the other copy
    await Deno.writeTextFile(path.join(p, MARKER), libtf + "\n");
  }
  buildNative();
  if (!values["no-check"]) await check(root);
}

if (import.meta.main) {
  try {
    await main();
  } catch (e) {
    fail(`the binding could not be built: ${e instanceof Error ? e.message : e}.`);
  }
}
