/**
 * `deno task bench`: medthink against PyTorch eager (CPU, float32) and TRL's GRPOTrainer on the
 * Qwen2.5-0.5B shapes, in one command; writes `bench/RESULTS.md` (and the raw numbers to
 * `bench/results.json`).
 *
 *   deno task bench                      # every row, medians of several runs (< 30 min on 2 cores)
 *   deno task bench --quick              # smoke test: prefill, decode b1/b8, load; one run each
 *   deno task bench --rows sft,grpo      # chosen rows (prefill, decode-b1, decode-b8, decode-b32, decode-b1-bf16, sft, grpo, load)
 *   deno task bench --runs 5 --backend wasm --no-pytorch --out /tmp/R.md
 *   deno task bench --rows real          # Qwen2.5-VL-3B/7B real sizes (bench/real_rows.ts; never in CI):
 *                                        # up to 21 GiB free and 25 GB of disk; --real-size smoke checks the
 *                                        # code path, --real-only "real 3b load,..." picks rows, --real-sides pytorch one side
 *
 * Each workload runs in its own process (bench/medthink_bench.ts, bench/pytorch_bench.py,
 * bench/trl_grpo_bench.py), one after the other, so that its peak RSS is its own and the two sides
 * never compete for the cores. The model is a random checkpoint with Qwen2.5-0.5B's config written once
 * in Hub layout to the cache (bench/random_checkpoint.ts): both sides load that same folder through
 * their real loaders. The PyTorch side runs from bench/.venv, created offline from the local wheel store
 * by bench/setup.sh; where that is impossible the PyTorch column says so and stays empty.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { ensureBenchModel } from "./random_checkpoint.ts";
import { keptSections } from "./sections.ts";
import { runRealRows } from "./real_rows.ts";

const BENCH = new URL(".", import.meta.url).pathname.replace(/\/$/, "");
const ROOT = BENCH.replace(/\/bench$/, "");
const PY = `${BENCH}/.venv/bin/python`;
const LOGS = `${ROOT}/out/bench`;

type Kind = "tok_s" | "sft" | "grpo" | "load";

interface RowSpec {
  key: string;
  label: string;
  kind: Kind;
  /** Runs in a full run (medians); `--quick` and `--runs` override. */
  runs: number;
  ours: string[];
  /** Script and arguments of the peer (`--runs` appended unless it is TRL's single step). */
  peer: { script: string; args: string[]; single?: boolean };
  timeoutMin: number;
}

/** 8 prompts x 8 completions of up to 128 new tokens; both sides get the same flags. */
const GRPO_SHAPE = ["--prompts", "8", "--generations", "8", "--prompt-len", "32", "--max-new", "128"];

const ROWS: RowSpec[] = [
  {
    key: "prefill",
    label: "prefill 512",
    kind: "tok_s",
    runs: 3,
    ours: ["--workload", "prefill", "--tokens", "512"],
    peer: { script: "pytorch_bench.py", args: ["--workload", "prefill", "--tokens", "512"] },
    timeoutMin: 10,
  },
  ...[1, 8, 32].map((b): RowSpec => ({
    key: `decode-b${b}`,
    label: `decode b${b}`,
    kind: "tok_s",
    runs: b === 32 ? 2 : 3,
    ours: ["--workload", "decode", "--batch", String(b), "--prompt", "64", "--new-tokens", "64"],
    peer: {
      script: "pytorch_bench.py",
      args: ["--workload", "decode", "--batch", String(b), "--prompt", "64", "--new-tokens", "64"],
    },
    timeoutMin: 15,
  })),
  {
    // Batch-1 decoding with the decoder's matrices at 2 bytes on both sides: medthink's `weightsDtype:
    // "bfloat16"` (bf16 storage, float32 arithmetic; the tied head stays float32) vs PyTorch's bf16 model.
    key: "decode-b1-bf16",
    label: "decode b1, bf16 weights (both sides)",
    kind: "tok_s",
    runs: 3,
    ours: [
      ...["--workload", "decode", "--batch", "1", "--prompt", "64", "--new-tokens", "64"],
      ...["--weights-dtype", "bfloat16"],
    ],
    peer: {
      script: "pytorch_bench.py",
      args: [
        "--workload",
        "decode",
        "--batch",
        "1",
        "--prompt",
        "64",
        "--new-tokens",
        "64",
        "--dtype",
        "bfloat16",
      ],
    },
    timeoutMin: 15,
  },
  {
    key: "sft",
    label: "sft step 4x256",
    kind: "sft",
    // 3, not 2: a median of two is their mean, and the first step (which faults in 6 GB of new optimizer
    // state on our side, its state on PyTorch's) is not what a training run's thousand steps cost.
    runs: 3,
    ours: ["--workload", "sft", "--batch", "4", "--tokens", "256"],
    peer: { script: "pytorch_bench.py", args: ["--workload", "sft", "--batch", "4", "--tokens", "256"] },
    timeoutMin: 20,
  },
  {
    key: "grpo",
    label: "grpo step",
    kind: "grpo",
    runs: 1,
    ours: ["--workload", "grpo", ...GRPO_SHAPE],
    peer: {
      script: "trl_grpo_bench.py",
      args: [...GRPO_SHAPE],
      single: true,
    },
    timeoutMin: 30,
  },
  {
    key: "load",
    label: "load",
    kind: "load",
    runs: 3,
    ours: ["--workload", "load"],
    peer: { script: "pytorch_bench.py", args: ["--workload", "load"] },
    timeoutMin: 5,
  },
];

const QUICK_ROWS = ["prefill", "decode-b1", "decode-b8", "load"];

// deno-lint-ignore no-explicit-any
type Result = Record<string, any>;

interface Outcome {
  result?: Result;
  error?: string;
  wall: number;
  /** The machine's 1-minute load average when the workload ended (other jobs make timings noisy). */
  load?: number;
}

function loadAverage(): number {
  try {
    return Number(Deno.readTextFileSync("/proc/loadavg").split(" ")[0]);
  } catch {
    return NaN;
  }
}

async function runProcess(name: string, cmd: string, args: string[], timeoutMin: number): Promise<Outcome> {
  const t0 = performance.now();
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), timeoutMin * 60_000);
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(cmd, {
      args,
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
      signal: ac.signal,
      env: { TOKENIZERS_PARALLELISM: "false", HF_HUB_OFFLINE: "1", TRANSFORMERS_OFFLINE: "1" },
    }).output();
  } catch (e) {
    clearTimeout(timer);
    return { error: `could not start (${(e as Error).message})`, wall: (performance.now() - t0) / 1000 };
  }
  clearTimeout(timer);
  const wall = (performance.now() - t0) / 1000;
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  await Deno.mkdir(LOGS, { recursive: true });
  await Deno.writeTextFile(
    `${LOGS}/${name}.log`,
    `$ ${cmd} ${args.join(" ")}\n${stdout}\n--- stderr ---\n${stderr}`,
  );
  const line = stdout.split("\n").reverse().find((l) => l.startsWith("RESULT "));
  if (line) return { result: JSON.parse(line.slice(7)), wall, load: loadAverage() };
  if (ac.signal.aborted) return { error: `timed out after ${timeoutMin} min`, wall };
  // Progress a workload printed before it died (e.g. GRPO's phases).
  const phases = stderr.split("\n").filter((l) => l.startsWith("[phase] ")).map((l) => l.slice(8)).join("; ");
  if (out.code === 143 || out.signal === "SIGTERM") {
    return { error: `stopped (SIGTERM) after ${wall.toFixed(0)} s${phases ? ` (${phases})` : ""}`, wall };
  }
  if (out.signal === "SIGKILL") {
    return {
      error: `killed (SIGKILL: out of memory?) after ${wall.toFixed(0)} s${phases ? ` (${phases})` : ""}`,
      wall,
    };
  }
  const last =
    (stderr.trim().split("\n").filter((l) => /error/i.test(l)).at(-1) ?? stderr.trim().split("\n").at(-1) ??
      "").slice(0, 200);
  return { error: `exit ${out.code}: ${last}`, wall };
}

async function pythonReady(): Promise<string | null> {
  const check = async () => {
    try {
      const o = await new Deno.Command(PY, {
        args: ["-c", "import torch, transformers, trl, safetensors, peft, PIL"],
        stdout: "null",
        stderr: "null",
      }).output();
      return o.success;
    } catch {
      return false;
    }
  };
  if (await check()) return null;
  console.log("[bench] creating bench/.venv offline from the local wheel store (bench/setup.sh) ...");
  try {
    const o = await new Deno.Command("sh", {
      args: [`${BENCH}/setup.sh`],
      stdout: "inherit",
      stderr: "inherit",
    })
      .output();
    if (o.success && await check()) return null;
  } catch { /* no sh or no python3 */ }
  return "PyTorch baseline skipped: torch, transformers and trl could not be installed into bench/.venv " +
    "from a local wheel store (this machine has none configured for pip); see bench/setup.sh.";
}

function sig(x: number): string {
  if (!Number.isFinite(x)) return "n/a";
  if (x >= 100) return x.toFixed(0);
  if (x >= 10) return x.toFixed(1);
  return x.toFixed(2);
}

function cell(kind: Kind, o?: Outcome): string {
  if (!o) return "n/a";
  if (!o.result) {
    // Older results files kept the raw exit status of a stopped process.
    const e = /^exit 143\b/.test(o.error ?? "") ? "stopped (SIGTERM)" : o.error;
    return `error: ${e}${/ after \d/.test(e ?? "") ? "" : ` after ${o.wall.toFixed(0)} s`}`;
  }
  const r = o.result;
  switch (kind) {
    case "tok_s":
      return `${sig(r.tok_s)} tok/s`;
    case "sft":
      return `${sig(r.tok_s)} tok/s (${sig(r.seconds)} s/step)`;
    case "grpo":
      return `${sig(r.seconds)} s/step`;
    case "load":
      return `${sig(r.seconds)} s`;
  }
}

/** medthink throughput / PyTorch throughput. */
function ratio(kind: Kind, ours?: Outcome, peer?: Outcome): number {
  const a = ours?.result, b = peer?.result;
  if (!a || !b) return NaN;
  if (kind === "tok_s" || kind === "sft") return a.tok_s / b.tok_s;
  return b.seconds / a.seconds; // time per step / per load: the faster side has the larger throughput
}

function gib(mb?: number): string {
  return mb && Number.isFinite(mb) ? `${(mb / 1024).toFixed(2)} GiB` : "n/a";
}

function machine(): { cpu: string; cores: number; memGiB: number; os: string } {
  let cpu = "unknown", memGiB = NaN;
  try {
    const info = Deno.readTextFileSync("/proc/cpuinfo");
    cpu = info.match(/model name\s*:\s*(.*)/)?.[1].trim() ?? cpu;
    const fam = info.match(/cpu family\s*:\s*(\d+)/)?.[1], mod = info.match(/model\s*:\s*(\d+)/)?.[1];
    const flags = info.match(/flags\s*:\s*(.*)/)?.[1].split(" ") ?? [];
    const simd = ["avx512f", "avx512_bf16", "avx2"].filter((f) => flags.includes(f));
    cpu += ` (family ${fam} model ${mod}${simd.length ? ", " + simd.join(" ") : ""})`;
    const kb = Number(Deno.readTextFileSync("/proc/meminfo").match(/MemTotal:\s+(\d+)/)?.[1]);
    memGiB = kb / 1024 ** 2;
  } catch { /* not Linux */ }
  return { cpu, cores: navigator.hardwareConcurrency, memGiB, os: `${Deno.build.os} ${Deno.build.arch}` };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      quick: { type: "boolean", default: false },
      rows: { type: "string" },
      runs: { type: "string" },
      backend: { type: "string", default: Deno.env.get("MEDTHINK_BACKEND") ?? "auto" },
      "no-pytorch": { type: "boolean", default: false },
      merge: { type: "boolean", default: false },
      render: { type: "boolean", default: false },
      "grpo-micro": { type: "string", default: "4" },
      model: { type: "string" },
      "real-size": { type: "string" },
      "real-only": { type: "string" },
      "real-min-free": { type: "string" },
      "real-sides": { type: "string" },
      out: { type: "string", default: `${BENCH}/RESULTS.md` },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    console.log(
      "deno task bench [--quick] [--rows prefill,decode-b1,decode-b8,decode-b32,decode-b1-bf16,sft,grpo,load | real] [--runs N] " +
        "[--backend auto|tensorflow|wasm|webgpu|cpu] [--no-pytorch] [--model DIR] [--out FILE]",
    );
    return;
  }
  /** `--real-sides medthink,pytorch`: which sides of the real rows run (default both). */
  function realSides(v: string | undefined): ("medthink" | "pytorch")[] | undefined {
    if (v === undefined) return undefined;
    const sides = v.split(",").map((s) => s.trim());
    for (const s of sides) {
      if (s !== "medthink" && s !== "pytorch") {
        throw new Error(`--real-sides: '${s}' is not a side; use medthink, pytorch or both comma-separated.`);
      }
    }
    return sides as ("medthink" | "pytorch")[];
  }
  if (values.rows?.split(",").map((s) => s.trim()).includes("real")) {
    // The real-size rows (Qwen2.5-VL-3B/7B): their own checkpoints, processes and report section.
    const skip = values["no-pytorch"] ? "PyTorch baseline skipped (--no-pytorch)" : await pythonReady();
    await runRealRows({
      python: skip ? null : PY,
      skipPeer: skip,
      backend: values.backend!,
      out: values.out!,
      size: values["real-size"],
      only: values["real-only"]?.split(",").map((s) => s.trim()),
      minFreeGiB: values["real-min-free"] ? Number(values["real-min-free"]) : undefined,
      sides: realSides(values["real-sides"]),
    });
    return;
  }
  const keys = values.rows
    ? values.rows.split(",").map((s) => s.trim()).filter(Boolean)
    : values.quick
    ? QUICK_ROWS
    : ROWS.map((r) => r.key);
  for (const k of keys) {
    if (!ROWS.some((r) => r.key === k)) {
      throw new Error(
        `--rows names '${k}', which is not a row: choose from ${ROWS.map((r) => r.key).join(", ")}.`,
      );
    }
  }
  // --render: run nothing, rewrite the report from the results file (as --merge with no rows).
  const rows = values.render ? [] : ROWS.filter((r) => keys.includes(r.key));
  if (values.render) values.merge = true;
  const runsFor = (r: RowSpec) => values.runs ? Number(values.runs) : values.quick ? 1 : r.runs;
  const started = new Date();
  const m = machine();
  console.log(`[bench] ${m.cpu}, ${m.cores} cores, ${m.memGiB.toFixed(0)} GiB; backend ${values.backend}`);

  const model = values.model ?? (values.render ? "" : await ensureBenchModel());
  const skipPeer = values["no-pytorch"] || values.render
    ? (values.render ? null : "PyTorch baseline skipped (--no-pytorch).")
    : await pythonReady();
  if (skipPeer) console.log(`[bench] ${skipPeer}`);

  const ours: Record<string, Outcome> = {};
  const peer: Record<string, Outcome> = {};
  const extra: Record<string, Outcome> = {};
  const deno = Deno.execPath();
  const base = ["run", "-A", `${BENCH}/medthink_bench.ts`, "--model", model, "--backend", values.backend!];
  for (const r of rows) {
    const runs = String(runsFor(r));
    const micro = r.key === "grpo" ? ["--micro", values["grpo-micro"]!] : [];
    console.log(`[bench] ${r.label}: medthink (${runs} run${runs === "1" ? "" : "s"}) ...`);
    ours[r.key] = await runProcess(
      `${r.key}-medthink`,
      deno,
      [...base, ...r.ours, ...micro, "--runs", runs],
      r.timeoutMin,
    );
    console.log(`[bench]   medthink ${cell(r.kind, ours[r.key])} (${ours[r.key].wall.toFixed(0)} s wall)`);
    if (r.key === "sft") {
      // The same step with the whole [B*T, V] logits at once: the memory that chunking saves.
      console.log(`[bench] ${r.label}: medthink without chunked logits (1 run) ...`);
      extra.sftNoChunk = await runProcess("sft-nochunk-medthink", deno, [
        ...base,
        ...r.ours,
        "--runs",
        "1",
        "--no-chunk",
      ], r.timeoutMin);
      console.log(`[bench]   medthink (no chunking) ${cell(r.kind, extra.sftNoChunk)}`);
    }
    if (!skipPeer) {
      const who = r.peer.single ? "TRL GRPOTrainer" : "pytorch";
      console.log(`[bench] ${r.label}: ${who} ...`);
      const args = [
        `${BENCH}/${r.peer.script}`,
        "--model",
        model,
        ...r.peer.args,
        ...micro,
        ...(r.peer.single ? [] : ["--runs", runs]),
      ];
      peer[r.key] = await runProcess(`${r.key}-pytorch`, PY, args, r.timeoutMin);
      console.log(`[bench]   ${who} ${cell(r.kind, peer[r.key])} (${peer[r.key].wall.toFixed(0)} s wall)`);
    }
  }

  // --merge: rows not run now keep their numbers from the previous results file (and say so).
  const jsonFile = values.out!.replace(/\.md$/, "") + ".json";
  const earlier: Record<string, string> = {};
  let reportRows = rows;
  if (values.merge) {
    try {
      const old = JSON.parse(await Deno.readTextFile(jsonFile));
      for (const r of ROWS) {
        if (rows.includes(r) || !(old.ours?.[r.key] || old.peer?.[r.key])) continue;
        ours[r.key] = old.ours[r.key];
        if (old.peer?.[r.key]) peer[r.key] = old.peer[r.key];
        if (r.key === "sft" && old.extra?.sftNoChunk) extra.sftNoChunk = old.extra.sftNoChunk;
        earlier[r.key] = old.rowStarted?.[r.key] ?? old.started;
      }
      reportRows = ROWS.filter((r) => rows.includes(r) || earlier[r.key]);
    } catch { /* nothing to merge */ }
  }
  const rowStarted: Record<string, string> = {};
  for (const r of reportRows) rowStarted[r.key] = earlier[r.key] ?? started.toISOString();
  const md = report({
    rows: reportRows,
    runsFor,
    ours,
    peer,
    extra,
    skipPeer,
    m,
    started,
    model,
    quick: values.quick!,
    earlier,
  });
  // Sections other benchmarks wrote into the report (bench/vision.ts) are carried over.
  const kept = await keptSections(values.out!);
  await Deno.writeTextFile(values.out!, kept ? `${md.replace(/\n*$/, "")}\n\n${kept}` : md);
  const json = { started: started.toISOString(), rowStarted, machine: m, model, ours, peer, extra, skipPeer };
  await Deno.writeTextFile(jsonFile, JSON.stringify(json, null, 2) + "\n");
  console.log("\n" + md);
  console.log(`[bench] wrote ${values.out} (${((Date.now() - started.getTime()) / 60000).toFixed(1)} min)`);
}

interface ReportInput {
  rows: RowSpec[];
  runsFor: (r: RowSpec) => number;
  ours: Record<string, Outcome>;
  peer: Record<string, Outcome>;
  extra: Record<string, Outcome>;
  skipPeer: string | null;
  m: ReturnType<typeof machine>;
  started: Date;
  model: string;
  quick: boolean;
  /** Rows merged from an earlier invocation, with when it started. */
  earlier: Record<string, string>;
}

function report(x: ReportInput): string {
  const { rows, ours, peer, extra } = x;
  const anyOurs = Object.values(ours).find((o) => o.result)?.result;
  const anyPeer = Object.values(peer).find((o) => o.result?.torch)?.result;
  const trl = peer.grpo?.result;
  const L: string[] = [];
  L.push("# medthink benchmark: Qwen2.5-0.5B shapes, CPU");
  L.push("");
  L.push(
    `Written by \`deno task bench${x.quick ? " --quick" : ""}\` on ${
      x.started.toISOString().slice(0, 16).replace("T", " ")
    } UTC.`,
  );
  L.push("");
  L.push(`- Machine: ${x.m.cpu}, ${x.m.cores} cores, ${x.m.memGiB.toFixed(0)} GiB RAM, ${x.m.os}`);
  L.push(
    `- medthink: backend \`${anyOurs?.backend ?? "?"}\` (tfjs 4.22.0), Deno ${
      anyOurs?.deno ?? Deno.version.deno
    }` +
      (anyOurs?.tf_threads ? `, TF_NUM_INTRAOP_THREADS=${anyOurs.tf_threads}` : ""),
  );
  L.push(
    anyPeer
      ? `- pytorch: torch ${anyPeer.torch} eager, float32 (bfloat16 in the bf16 weights row), ${anyPeer.threads} threads, transformers ${anyPeer.transformers}` +
        (trl?.trl ? `; TRL ${trl.trl} GRPOTrainer for the GRPO step` : "")
      : `- pytorch: ${x.skipPeer ?? "no result"}`,
  );
  L.push(
    "- Model: Qwen2.5-0.5B's config (hidden 896, 24 layers, 14 heads, 2 KV heads, intermediate 4864, vocab 151936, " +
      "tied head), random weights saved once in Hub layout (BF16 shards) and loaded by both sides as float32 " +
      "(the bf16 weights row: see below).",
  );
  L.push("");
  L.push("| workload | medthink | pytorch | ratio |");
  L.push("| --- | --- | --- | --- |");
  for (const r of rows) {
    const q = ratio(r.kind, ours[r.key], peer[r.key]);
    L.push(
      `| ${r.label} | ${cell(r.kind, ours[r.key])} | ${peer[r.key] ? cell(r.kind, peer[r.key]) : "n/a"} | ${
        Number.isFinite(q) ? q.toFixed(2) + "x" : "n/a"
      } |`,
    );
  }
  L.push("");
  L.push(
    "ratio = medthink throughput / PyTorch throughput (for `grpo step` and `load`: PyTorch's time / medthink's time).",
  );
  const runsOf = (r: RowSpec) => ours[r.key]?.result?.times?.length ?? x.runsFor(r);
  L.push(
    `Runs per row (medthink / peer: medians): ${rows.map((r) => `${r.label} ${runsOf(r)}`).join(", ")}.`,
  );
  const merged = Object.entries(x.earlier);
  if (merged.length) {
    L.push(
      `Rows from an earlier invocation (\`--merge\`): ${
        merged.map(([k, t]) =>
          `${ROWS.find((r) => r.key === k)?.label} (${t.slice(0, 16).replace("T", " ")} UTC)`
        ).join(", ")
      }.`,
    );
  }
  L.push("");

  const loads = rows.flatMap((r) => [ours[r.key]?.load, peer[r.key]?.load]).filter((v): v is number =>
    Number.isFinite(v)
  );
  if (loads.length) {
    L.push(
      `1-minute load average at the end of each workload: ${Math.min(...loads).toFixed(1)} to ${
        Math.max(...loads).toFixed(1)
      } ` +
        `on ${x.m.cores} cores${
          Math.max(...loads) > x.m.cores + 0.5 ? " (other jobs were running: timings are noisy)" : ""
        }.`,
    );
    L.push("");
  }
  L.push("## Peak memory (RSS of the process that ran the workload)");
  L.push("");
  L.push("| workload | medthink | pytorch |");
  L.push("| --- | --- | --- |");
  for (const r of rows) {
    L.push(
      `| ${r.label} | ${gib(ours[r.key]?.result?.peak_rss_mb)} | ${gib(peer[r.key]?.result?.peak_rss_mb)} |`,
    );
  }
  if (extra.sftNoChunk) {
    const c = ours.sft?.result, n = extra.sftNoChunk.result;
    L.push("");
    L.push(
      `SFT step 4x256, medthink peak RSS: ${gib(c?.peak_rss_mb)} with chunked logits (chunk ${
        c?.chunk_size ?? "?"
      } rows), ` +
        `${n ? gib(n.peak_rss_mb) : `error: ${extra.sftNoChunk.error}`} without (all ${4 * 256} rows of [${
          4 * 256
        }, 151936] logits at once` +
        `${n ? `; ${sig(n.seconds)} s/step` : ""}).`,
    );
  }
  if (ours.sft?.result?.split) {
    const s = ours.sft.result.split as Record<string, number>[];
    const fb = s.map((v) => v.forward_backward), op = s.map((v) => v.clip_and_adamw);
    L.push("");
    L.push(
      `SFT step split (medthink, per run): forward+backward ${fb.map(sig).join(", ")} s; ` +
        `clip + AdamW ${op.map(sig).join(", ")} s.`,
    );
  }
  if (ours.grpo || peer.grpo) {
    const a = ours.grpo?.result, b = peer.grpo?.result;
    L.push("");
    L.push("## GRPO step split");
    L.push("");
    L.push(
      "8 prompts of 32 tokens x 8 completions of up to 128 new tokens (temperature 1, top-p 1), beta 0.01 (reference " +
        `log-probs), \`dapo\` loss, one AdamW update accumulated over micro-batches of ${
          ours.grpo?.result?.micro ?? peer.grpo?.result?.micro ?? "?"
        } completions, float32, no gradient ` +
        "checkpointing. Old log-probs: none recomputed on either side (one iteration, as TRL does by default).",
    );
    L.push("");
    L.push("| phase | medthink | TRL GRPOTrainer |");
    L.push("| --- | --- | --- |");
    const ph = (r: Result | undefined, k: string) => r ? `${sig(r[k])} s` : "n/a";
    L.push(`| generation | ${ph(a, "generation_s")} | ${ph(b, "generation_s")} |`);
    L.push(`| log-prob (reference) | ${ph(a, "logprob_s")} | ${ph(b, "logprob_s")} |`);
    L.push(`| update (loss forward/backward, AdamW) | ${ph(a, "update_s")} | ${ph(b, "update_s")} |`);
    L.push(`| step | ${ph(a, "seconds")} | ${ph(b, "seconds")} |`);
    L.push(`| generated tokens | ${a?.generated_tokens ?? "n/a"} | ${b?.generated_tokens ?? "n/a"} |`);
  }
  const errors = [
    ...Object.entries(ours).map(([k, o]) => [`${k} (medthink)`, o] as const),
    ...Object.entries(peer).map(([k, o]) => [`${k} (pytorch)`, o] as const),
    ...Object.entries(extra).map(([k, o]) => [`${k} (medthink)`, o] as const),
  ]
    .filter(([, o]) => o.error);
  if (errors.length) {
    L.push("");
    L.push("## Errors");
    L.push("");
    for (const [k, o] of errors) L.push(`- ${k}: ${o.error} (log: out/bench/)`);
  }
  L.push("");
  L.push(
    "Where the time goes, and what to change in `lib/` to close the gaps: [NOTES.md](NOTES.md) (profiles by `bench/profile.ts`).",
  );
  L.push("");
  L.push("## How each row is measured");
  L.push("");
  L.push(
    "- `prefill 512`: one forward pass over 512 tokens to the full `[1, 512, V]` logits (`model.logits` / `model(ids).logits`).",
  );
  L.push(
    "- `decode bN`: greedy, N prompts of 64 tokens, 64 new tokens/s with the prompt excluded. PyTorch: `model.generate` " +
      "with a streamer that timestamps each token (64 decode steps after the first token). medthink: " +
      "`generate(65 new) - generate(1 new)` (the public API has no per-step clock; the prompt's share cancels).",
  );
  L.push(
    '- `decode b1, bf16 weights`: the same with 2-byte weights: medthink `weightsDtype: "bfloat16"` (the decoder\'s ' +
      "matrices stored as bf16, widened to float32 in registers, float32 arithmetic; the tied head stays float32), " +
      "PyTorch `--dtype bfloat16` (the whole model in bf16).",
  );
  L.push(
    "- `sft step 4x256`: forward, backward, clip to norm 1, AdamW (lr 1e-5, betas 0.9/0.95, wd 1e-4), loss on every token; tokens/s = 1024 / step time.",
  );
  L.push(
    "- `grpo step`: medthink's `grpo()` for one step; TRL's `GRPOTrainer.train()` for one step (`max_steps=1`), timed from its first micro-batch to the end of the optimizer step.",
  );
  L.push(
    "- `load`: `loadModel(dir)` vs `AutoModelForCausalLM.from_pretrained(dir, dtype=float32)` of the same BF16 checkpoint (file cache warm).",
  );
  L.push(
    "- Each workload runs in its own process; peak memory is that process's VmHWM / ru_maxrss. Logs: `out/bench/`.",
  );
  L.push("");
  return L.join("\n");
}

if (import.meta.main) await main();
