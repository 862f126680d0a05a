/**
 * The real-size rows of `deno task bench --rows real` (never part of a default run, nor of CI): Qwen2.5-VL-3B
 * and -7B checkpoints (bench/real_checkpoint.ts) loaded, generating with an image and taking one LoRA GRPO
 * step, by medthink (bench/real_bench.ts, frozen weights at 2 bytes) and by PyTorch + transformers + PEFT
 * (bench/real_torch.py), one process at a time. Each workload starts only when the machine has the memory
 * it needs available (MemAvailable: its expected peak plus a margin; the largest take 20 GiB).
 *
 * The table goes to the `real` section of bench/RESULTS.md (bench/sections.ts).
 *
 * @module
 */
import { writeSection } from "./sections.ts";
import { ensureRealCheckpoint } from "./real_checkpoint.ts";

const BENCH = new URL(".", import.meta.url).pathname.replace(/\/$/, "");
const ROOT = BENCH.replace(/\/bench$/, "");

/** One real-size row: a workload on one checkpoint size, with both sides' arguments. */
interface RealRow {
  label: string;
  size: "3b" | "7b";
  args: string[];
  /** Extra arguments of the PyTorch side. */
  peerArgs?: string[];
  /** Memory available (GiB) each side needs before it starts: its expected peak plus a margin. */
  needGiB: { medthink: number; pytorch: number };
  timeoutMin: number;
}

/** The rows, in the order they run (the 7B last: it needs the most memory and disk). */
export const REAL_ROWS: readonly RealRow[] = [
  {
    label: "real 3b load",
    size: "3b",
    args: ["--workload", "load"],
    needGiB: { medthink: 10, pytorch: 17 },
    timeoutMin: 15,
  },
  {
    label: "real 3b generate",
    size: "3b",
    args: ["--workload", "generate", "--pixels", String(448 * 448), "--new-tokens", "32"],
    needGiB: { medthink: 12, pytorch: 19 },
    timeoutMin: 30,
  },
  {
    label: "real 3b generate (default max_pixels)",
    size: "3b",
    args: ["--workload", "generate", "--pixels", "default", "--new-tokens", "32"],
    needGiB: { medthink: 14, pytorch: 20 },
    timeoutMin: 30,
  },
  {
    label: "real 3b lora grpo step",
    size: "3b",
    args: ["--workload", "grpo", "--prompts", "2", "--generations", "4", "--max-new", "64", "--lora-r", "16"],
    needGiB: { medthink: 14, pytorch: 21 },
    timeoutMin: 60,
  },
  {
    label: "real 7b generate",
    size: "7b",
    args: ["--workload", "generate", "--pixels", String(448 * 448), "--new-tokens", "16"],
    // PyTorch in bfloat16: the 7B's float32 weights alone would take 33 GB.
    peerArgs: ["--dtype", "bfloat16"],
    needGiB: { medthink: 21, pytorch: 19 },
    timeoutMin: 40,
  },
];

/** Options of {@linkcode runRealRows}. */
export interface RealRowsOptions {
  /** Python of bench/.venv, or null to skip the PyTorch side (with the reason in `skipPeer`). */
  python: string | null;
  /** Why the PyTorch side is skipped. */
  skipPeer?: string | null;
  /** medthink's backend. */
  backend: string;
  /** Report file (its `real` section is written). */
  out: string;
  /** Checkpoint size override for every row (`smoke`: the code path in seconds). */
  size?: string;
  /** Labels to run (default all). */
  only?: string[];
  /** Start a workload only with this much memory available (GiB; default: the row's own need). */
  minFreeGiB?: number;
  /** Which sides to run (default both): the others keep their earlier results. */
  sides?: ("medthink" | "pytorch")[];
}

// deno-lint-ignore no-explicit-any
type Result = Record<string, any>;

function availableGiB(): number {
  try {
    const kb = Number(Deno.readTextFileSync("/proc/meminfo").match(/MemAvailable:\s+(\d+)/)?.[1]);
    return kb / 1024 ** 2;
  } catch {
    return NaN;
  }
}

/**
 * Wait (up to `MEDTHINK_REAL_WAIT_MIN` minutes, default 30) until `need` GiB are available: on a shared
 * machine another job's memory comes and goes, and starting a 20 GiB workload beside it would bring the
 * kernel's out-of-memory killer. Returns the memory available when it stopped waiting.
 */
async function waitForMemory(need: number, what: string): Promise<number> {
  const waitMin = Number(Deno.env.get("MEDTHINK_REAL_WAIT_MIN") ?? 30);
  const until = performance.now() + waitMin * 60_000;
  let free = availableGiB();
  let said = false;
  while (!(free >= need) && performance.now() < until) {
    if (!said) console.log(`[bench] ${what}: waiting for ${need} GiB (${free.toFixed(1)} GiB available)`);
    said = true;
    await new Promise((r) => setTimeout(r, 10_000));
    free = availableGiB();
  }
  return free;
}

async function runOne(cmd: string, args: string[], timeoutMin: number, log: string): Promise<Result> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), timeoutMin * 60_000);
  const t0 = performance.now();
  try {
    const out = await new Deno.Command(cmd, {
      args,
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
      signal: ac.signal,
      env: { TOKENIZERS_PARALLELISM: "false", HF_HUB_OFFLINE: "1", TRANSFORMERS_OFFLINE: "1" },
    }).output();
    const stdout = new TextDecoder().decode(out.stdout), stderr = new TextDecoder().decode(out.stderr);
    await Deno.mkdir(`${ROOT}/out/bench`, { recursive: true });
    await Deno.writeTextFile(log, `$ ${cmd} ${args.join(" ")}\n${stdout}\n--- stderr ---\n${stderr}`);
    const line = stdout.split("\n").reverse().find((l) => l.startsWith("RESULT "));
    if (line) return JSON.parse(line.slice(7));
    const wall = ((performance.now() - t0) / 1000).toFixed(0);
    if (out.signal === "SIGKILL") return { error: `killed (SIGKILL: out of memory?) after ${wall} s` };
    const last = stderr.trim().split("\n").filter((l) => /error/i.test(l)).at(-1) ??
      stderr.trim().split("\n").at(-1);
    return { error: `exit ${out.code} after ${wall} s: ${(last ?? "").slice(0, 200)}` };
  } catch (e) {
    return { error: ac.signal.aborted ? `timed out after ${timeoutMin} min` : (e as Error).message };
  } finally {
    clearTimeout(timer);
  }
}

function gib(mb?: number): string {
  return mb && Number.isFinite(mb) ? `${(mb / 1024).toFixed(2)} GiB` : "n/a";
}

function cell(r?: Result): string {
  if (!r) return "not run";
  if (r.error) return `error: ${r.error}`;
  const parts = [`${r.seconds.toFixed(1)} s`];
  if (r.tok_s) parts.push(`${r.tok_s.toFixed(2)} tok/s`);
  if (r.image_grid_thw) parts.push(`grid ${JSON.stringify(r.image_grid_thw[0])}`);
  parts.push(`peak ${gib(r.peak_rss_mb)}`);
  if (r.at) parts.push(`${r.at.slice(5, 16).replace("T", " ")}`);
  return parts.join(", ");
}

/** Run the real-size rows one process at a time and write the `real` section of the report. */
export async function runRealRows(o: RealRowsOptions): Promise<void> {
  const rows = REAL_ROWS.filter((r) => !o.only || o.only.includes(r.label));
  // Rows not run now keep their earlier results (so the rows can be run one at a time, `--real-only`).
  const jsonFile = o.out.replace(/\.md$/, "") + "_real.json";
  let earlier: { ours: Record<string, Result>; peer: Record<string, Result> } = { ours: {}, peer: {} };
  try {
    earlier = JSON.parse(await Deno.readTextFile(jsonFile));
  } catch { /* first run */ }
  const ours: Record<string, Result> = { ...earlier.ours },
    peer: Record<string, Result> = { ...earlier.peer };
  for (const r of rows) {
    const size = o.size ?? r.size;
    const dir = await ensureRealCheckpoint(size);
    const sides: [string, string, string[], Record<string, Result>][] = [
      ["medthink", Deno.execPath(), [
        "run",
        "-A",
        `${BENCH}/real_bench.ts`,
        "--model",
        dir,
        "--backend",
        o.backend,
        ...r.args,
      ], ours],
    ];
    if (o.python) {
      sides.push(["pytorch", o.python, [
        `${BENCH}/real_torch.py`,
        "--model",
        dir,
        ...r.args,
        ...(r.peerArgs ?? []),
      ], peer]);
    }
    for (const [who, cmd, args, into] of sides) {
      if (o.sides && !o.sides.includes(who as "medthink" | "pytorch")) continue;
      const need = o.minFreeGiB ?? r.needGiB[who as "medthink" | "pytorch"];
      const free = size === "smoke" ? Infinity : await waitForMemory(need, `${r.label} (${who})`);
      if (!(free >= need)) {
        into[r.label] = { error: `not run: ${free.toFixed(1)} GiB available, ${need} GiB needed` };
        console.log(`[bench] ${r.label} (${who}): skipped, ${free.toFixed(1)} GiB available`);
        continue;
      }
      console.log(`[bench] ${r.label} (${who}, ${size}) ...`);
      const log = `${ROOT}/out/bench/${r.label.replace(/[^\w]+/g, "-")}-${who}.log`;
      into[r.label] = { ...await runOne(cmd, args, r.timeoutMin, log), size, at: new Date().toISOString() };
      console.log(`[bench]   ${cell(into[r.label])}`);
      await Deno.writeTextFile(jsonFile, JSON.stringify({ ours, peer }, null, 2) + "\n");
      await writeSection(o.out, "real", report(REAL_ROWS, ours, peer, o));
    }
  }
  const md = report(REAL_ROWS, ours, peer, o);
  await writeSection(o.out, "real", md);
  console.log(md);
}

function report(
  rows: readonly RealRow[],
  ours: Record<string, Result>,
  peer: Record<string, Result>,
  o: RealRowsOptions,
): string {
  const anyPeer = Object.values(peer).find((r) => r.torch);
  const L = [
    "## Real sizes: Qwen2.5-VL-3B / 7B (`deno task bench --rows real`)",
    "",
    `Each cell: time, throughput, image grid, peak RSS, and when it ran${
      o.size ? ` (checkpoint \`${o.size}\`)` : ""
    }; ` +
    "random BF16 weights with the published configs (bench/real_checkpoint.ts), one workload per process, one at a time.",
    "medthink: backend `" + (Object.values(ours).find((r) => r.backend)?.backend ?? o.backend) +
    '`, frozen weights at 2 bytes (`weightsDtype: "bfloat16"`, computing in float32), LoRA\'s adapters and AdamW state float32. ' +
    (anyPeer
      ? `PyTorch: torch ${anyPeer.torch}, transformers ${anyPeer.transformers}, PEFT, float32 (the 7B: bfloat16 weights and compute), ${anyPeer.threads} threads.`
      : `PyTorch: ${o.skipPeer ?? "not run"}.`),
    "",
    "| workload | medthink | pytorch |",
    "| --- | --- | --- |",
    ...rows.map((r) => `| ${r.label} | ${cell(ours[r.label])} | ${cell(peer[r.label])} |`),
    "",
    '- `load`: `loadModel(dir, { weightsDtype: "bfloat16" })` / `from_pretrained(dir, dtype=float32)`, file cache as left by the writer.',
    "- `generate`: greedy, after a chat prompt with the first VQA-RAD image resized to 448 x 448 px worth of patches " +
    "(`min_pixels = max_pixels = 200704`; the grid keeps the image's aspect) or at the processor's defaults; time from the " +
    "call to the last token (image encoding and prefill included), tok/s = new tokens / that time.",
    "- `lora grpo step`: 2 prompts (one image each, 448 x 448 px worth) x 4 completions x up to 64 new tokens, LoRA r = 16 on " +
    "every linear layer of the language model, the vision tower frozen, activation checkpointing on, beta 0.04, one AdamW step.",
    "- peak: the process's peak RSS (VmHWM / ru_maxrss). Logs: `out/bench/real-*.log`.",
  ];
  return L.join("\n");
}
