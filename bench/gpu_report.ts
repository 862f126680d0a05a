/**
 * The GPU section of `bench/RESULTS.md`, from the raw `results.txt` files that bench/gpu_device.sh wrote on
 * the GPU machine (kept under bench/gpu/<card>-<date>/). Later files win where two measured the same thing.
 *
 *   deno run -A bench/gpu_report.ts [DIR]      # default: the newest bench/gpu/*-* folder
 *
 * medthink's rows come from the bench's own RESULT lines where a row finished, else from the step-by-step
 * lines of bench/gpu_probe.ts (single runs: said so in the table).
 *
 * @module
 */
import { writeSection } from "./sections.ts";

const BENCH = new URL(".", import.meta.url).pathname.replace(/\/$/, "");

interface Cell {
  value: number; // throughput: tokens/s, or 1/seconds for step-like rows
  text: string;
  note?: string;
}

type Json = Record<string, unknown>;

const ROWS = ["prefill", "decode-b1", "decode-b8", "decode-b32", "sft", "grpo", "load"] as const;
const LABELS: Record<string, string> = {
  prefill: "prefill 512",
  "decode-b1": "decode b1",
  "decode-b8": "decode b8",
  "decode-b32": "decode b32",
  sft: "sft step 4x256",
  grpo: "grpo step",
  load: "load",
};

function tokS(v: number, note?: string): Cell {
  return { value: v, text: `${v >= 100 ? v.toFixed(0) : v.toFixed(1)} tok/s`, note };
}

function seconds(s: number, note?: string): Cell {
  return { value: 1 / s, text: `${s >= 10 ? s.toFixed(1) : s.toFixed(2)} s`, note };
}

/** PyTorch / medthink bench RESULT json -> the cell of its row. */
function cellOf(row: string, r: Json): Cell {
  if (row === "load") return seconds(r.seconds as number);
  if (row === "sft") {
    return {
      ...tokS(r.tok_s as number),
      text: `${(r.tok_s as number).toFixed(0)} tok/s (${(r.seconds as number).toFixed(3)} s)`,
    };
  }
  if (row === "grpo") return seconds(r.seconds as number);
  return tokS(r.tok_s as number);
}

/** A GRPO step's phases, ` (gen G, log-prob L, update U)`, in seconds with `digits` decimals. */
function grpoSplit(r: Json, digits: number): string {
  const f = (k: string) => (r[k] as number).toFixed(digits);
  return ` (gen ${f("generation_s")}, log-prob ${f("logprob_s")}, update ${f("update_s")})`;
}

function rowOf(r: Json): string | undefined {
  if (typeof r.row === "string") return r.row;
  const w = r.workload;
  if (w === "decode") return `decode-b${r.batch}`;
  return typeof w === "string" ? w : undefined;
}

function ratio(a?: Cell, b?: Cell): string {
  return a && b ? `${(a.value / b.value).toFixed(a.value / b.value < 0.1 ? 3 : 2)}x` : "";
}

async function main(): Promise<void> {
  let dir = Deno.args[0];
  if (!dir) {
    const found = [...Deno.readDirSync(`${BENCH}/gpu`)].filter((e) =>
      e.isDirectory && /-\d{4}-\d\d-\d\d$/.test(e.name)
    ).map((e) => e.name)
      .sort((a, b) => a.slice(-10).localeCompare(b.slice(-10)));
    if (!found.length) throw new Error("bench/gpu has no results folder: give one as the argument.");
    dir = `${BENCH}/gpu/${found[found.length - 1]}`;
  }
  const files = [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => n.endsWith("results.txt")).sort();
  if (!files.length) throw new Error(`${dir} holds no *results.txt.`);
  const pytorch: Record<string, Record<string, Cell>> = { float32: {}, bfloat16: {} };
  const trl: Record<string, Cell> = {};
  const ours: Record<string, Cell> = {};
  const probe: string[] = [];
  let gpu = "unknown GPU";
  let versions = "";
  for (const f of files) {
    for (const line of (await Deno.readTextFile(`${dir}/${f}`)).split("\n")) {
      const m = line.match(/^(\S+) (\S+) (\{.*\})$/);
      if (line.startsWith("gpu ")) gpu = line.slice(4);
      if (m) {
        const [, side, dtype, body] = m;
        const r = JSON.parse(body) as Json;
        const row = rowOf(r);
        if (!row) continue;
        if (side === "pytorch") {
          pytorch[dtype][row] = cellOf(row, r);
          versions = `PyTorch ${r.torch}, transformers ${r.transformers}`;
        } else if (side === "trl") {
          const c = seconds(r.seconds as number);
          c.text += grpoSplit(r, 2);
          trl[dtype] = c;
        } else if ((side === "medthink" || side === "probe") && r.backend === "webgpu") {
          const c = cellOf(row, r);
          if (row === "sft") {
            const times = (r.times as number[]).map((t) => t.toFixed(1)).join(" and ");
            c.note = `median of 2 steps: ${times} s`;
          }
          if (row === "grpo") {
            c.text += grpoSplit(r, 1);
            c.note = "one step";
          }
          ours[row] = c;
        }
      } else if (line.startsWith("probe ")) {
        probe.push(`${f.replace(/_?results\.txt$/, "")}: ${line.slice(6)}`);
        let p = line.match(/second forward of 512 tokens ([\d.]+) ms/);
        if (p) ours.prefill = tokS(512 / (Number(p[1]) / 1000), "single run: gpu_probe.ts, second pass");
        p = line.match(/threshold -1 b(\d+): .* -> decode ([\d.]+) tok\/s/);
        if (p) {
          ours[`decode-b${p[1]}`] = tokS(
            Number(p[2]),
            "single run: gpu_probe.ts, generate(17) - generate(1)",
          );
        }
        p = line.match(/model: load ([\d.]+) ms/);
        if (p) ours.load = seconds(Number(p[1]) / 1000, "single run: gpu_probe.ts, weights on the GPU");
      }
    }
  }
  const lines: string[] = [];
  lines.push(`## GPU: ${gpu.split(",")[0]} (medthink on WebGPU, float32; PyTorch eager on CUDA)`);
  lines.push("");
  lines.push(
    `Produced by \`bash .gpu/src/bench/gpu_device.sh\` on the \`device\` tool's machine (after \`bash bench/gpu_build.sh\`),` +
      ` same workloads and shapes as the CPU table; raw output in \`${
        dir.replace(`${BENCH}/`, "bench/")
      }/\`. ` +
      `${gpu}; ${versions} (as installed there, not 2.13); medthink on Deno's WebGPU through NVIDIA's Vulkan ` +
      "driver (TensorFlow.js has no bf16). Ratio = medthink throughput / PyTorch throughput.",
  );
  lines.push("");
  lines.push("| workload | medthink webgpu fp32 | pytorch cuda fp32 | ratio | pytorch cuda bf16 | ratio |");
  lines.push("| --- | --- | --- | --- | --- | --- |");
  for (const row of ROWS) {
    const o = ours[row];
    if (row === "grpo") {
      // Against TRL's GRPOTrainer (ratio: TRL's time / medthink's time).
      lines.push(
        `| ${LABELS[row]} | ${o ? o.text + (o.note ? ` [${o.note}]` : "") : "not measured"} | TRL ${
          trl.float32?.text ?? "not measured"
        } | ${ratio(o, trl.float32)} | ` +
          `${trl.bfloat16 ? `TRL ${trl.bfloat16.text}` : "not measured"} | ${ratio(o, trl.bfloat16)} |`,
      );
      continue;
    }
    const f = pytorch.float32[row], b = pytorch.bfloat16[row];
    lines.push(
      `| ${LABELS[row]} | ${o ? o.text + (o.note ? ` [${o.note}]` : "") : "not measured"} | ${
        f?.text ?? ""
      } | ` +
        `${ratio(o, f)} | ${b?.text ?? ""} | ${ratio(o, b)} |`,
    );
  }
  lines.push("");
  lines.push("### What the probe found (bench/gpu_probe.ts, in order)");
  lines.push("");
  lines.push("```");
  lines.push(...probe);
  lines.push("```");
  lines.push("");
  lines.push(await Deno.readTextFile(`${BENCH}/gpu/FINDINGS.md`));
  await writeSection(`${BENCH}/RESULTS.md`, "gpu", lines.join("\n"));
  console.log(lines.slice(0, 14).join("\n"));
}

if (import.meta.main) await main();
