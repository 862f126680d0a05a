#!/usr/bin/env bash
# The GPU benchmark, run ON the machine with the GPU (the `device` tool's `run`, from the repository root,
# after bench/gpu_build.sh packed .gpu/, .gl/ and .whl/ here, and the committed tree into .gpu/src):
#
#   bash .gpu/src/bench/gpu_device.sh [SECONDS]   # stop starting new work after SECONDS (default 480)
#
# The code that runs is the tree this script sits in (.gpu/src: HEAD when gpu_build.sh ran, so that
# uncommitted edits in the checkout do not change what is measured); .gpu, .gl and .whl are read from
# the current directory.
# Writes $OUT/results.txt: one line per measurement, `<side> <dtype> {json}` (side: medthink | pytorch |
# trl), plus the adapter, the card and the logs. `deno run -A bench/gpu_report.ts DIR` turns them into the
# GPU section of bench/RESULTS.md. Same workloads and shapes as `deno task bench` (bench/run.ts).
# medthink runs on Deno's WebGPU (fp32; TensorFlow.js has no bf16); PyTorch on CUDA in fp32 and bf16;
# TRL's GRPOTrainer on CUDA.
# SMOKE=1 (this script's own check on a machine without a GPU): a small model, PyTorch on the CPU.
set -u
BUDGET="${1:-480}"
SMOKE="${SMOKE:-0}"
PYTHON="${PYTHON:-python3}"
DEV=cuda
[ "$SMOKE" = 1 ] && DEV=cpu
T0=$SECONDS
OUT="${OUT:-/tmp/gpu-bench-out}"
mkdir -p "$OUT"
CARRY="$PWD"
cd "$(dirname "$0")/.."
RES="$OUT/results.txt"
LOG="$OUT/log.txt"
: >"$RES"
: >"$LOG"
left() { echo $((BUDGET - (SECONDS - T0))); }
say() { echo "[$((SECONDS - T0)) s] $*" | tee -a "$LOG"; }

# Vulkan loader and GL vendor libraries (the image has the NVIDIA driver, not the loader).
for f in "$CARRY"/.gl/*.deb; do dpkg -x "$f" /; done
ldconfig
if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
fi
export XDG_RUNTIME_DIR=/tmp/xdg && mkdir -p /tmp/xdg && chmod 700 /tmp/xdg
command -v nvidia-smi >/dev/null && echo "gpu $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader)" >>"$RES"
echo "cpu $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) x $(nproc)" >>"$RES"

# Deno and the npm packages this code path imports (no registry here).
W=/tmp/medthink-gpu
mkdir -p $W
xz -dc "$CARRY/.gpu/deno.xz" >$W/deno && chmod +x $W/deno
tar -xJf "$CARRY/.gpu/denodir.tar.xz" -C $W
export DENO_DIR=$W/denodir
RUN=($W/deno run -A --cached-only --no-check --no-lock --import-map bench/gpu/import_map.json --node-modules-dir=none)
"${RUN[@]}" bench/gpu_device.ts adapter 2>>"$LOG" | sed -n 's/^ADAPTER /adapter /p' >>"$RES"
say "adapter: $(tail -1 "$RES" | cut -c1-200)"
MODEL=/tmp/bench-model
[ "$SMOKE" = 1 ] && MODEL=/tmp/bench-model-smoke
"${RUN[@]}" bench/gpu_device.ts checkpoint $MODEL $([ "$SMOKE" = 1 ] && echo --smoke) >>"$LOG" 2>&1
say "checkpoint written"

# TRL and its few missing dependencies travel as wheels.
if [ "$SMOKE" != 1 ] && ls "$CARRY"/.whl/*.whl >/dev/null 2>&1; then
  $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$CARRY"/.whl/*.whl \
    >>"$LOG" 2>&1 && export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

# measure SIDE DTYPE TIMEOUT CMD...: keeps the RESULT (and PROBE) lines, tagged; skipped once the budget
# is spent, or when ONLY (a space-separated list of "SIDE:DTYPE") does not name it.
ONLY="${ONLY:-}"
measure() {
  local side=$1 dtype=$2 limit=$3
  shift 3
  if [ -n "$ONLY" ] && [[ " $ONLY " != *" $side:$dtype "* ]]; then return; fi
  if [ "$(left)" -le 15 ]; then
    say "skipped (budget spent): $side $dtype $*"
    return
  fi
  [ "$limit" -gt "$(left)" ] && limit=$(left)
  local t=$SECONDS
  timeout "$limit" "$@" >"$OUT/last.out" 2>>"$LOG"
  local rc=$?
  sed -n -e "s/^RESULT /$side $dtype /p" -e "s/^PROBE /probe /p" "$OUT/last.out" >>"$RES"
  say "$side $dtype rc=$rc in $((SECONDS - t)) s: ${*: -6}"
}

PY=($PYTHON bench/pytorch_bench.py --model $MODEL --device $DEV --runs 5)
MT=("${RUN[@]}" bench/gpu_device.ts run --model $MODEL --backend webgpu --runs 3)
GRPO=(--prompts 8 --generations 8 --prompt-len 32 --max-new 128)
# Most wanted first: the budget may end the list early.
# Issue #22: dispatches per decoder layer and wall time, tfjs / before (small-M only) / after (tiled and
# fused programs), then many-row products tfjs against tiled (bench/gpu_dispatches.ts).
measure probe float32 150 "${RUN[@]}" bench/gpu_probe.ts --model $MODEL --mode dispatches
# The model's workloads with the programs of issue #22 off (the "before" of the medthink rows below).
BEFORE=(env MEDTHINK_WEBGPU_FUSED=0 MEDTHINK_WEBGPU_MATMUL=small)
measure medthink-before float32 90 "${BEFORE[@]}" "${MT[@]}" --workload prefill --tokens 512
measure medthink-before float32 90 "${BEFORE[@]}" "${MT[@]}" --workload decode --batch 1 --prompt 64 --new-tokens 64
measure medthink-before float32 120 "${BEFORE[@]}" "${MT[@]}" --workload sft --batch 4 --tokens 256 --runs 2
# Raw WebGPU and tfjs costs on this card, then the model step by step (bench/gpu_probe.ts).
measure probe float32 "${PROBE_LIMIT:-150}" "${RUN[@]}" bench/gpu_probe.ts --model $MODEL --seconds "$(( ${PROBE_LIMIT:-150} - 15 ))"
measure pytorch float32 120 "${PY[@]}" --dtype float32 --rows load,prefill,decode-b1,decode-b8,decode-b32,sft
measure medthink float32 60 "${MT[@]}" --workload load
measure medthink float32 90 "${MT[@]}" --workload prefill --tokens 512
measure medthink float32 90 "${MT[@]}" --workload decode --batch 1 --prompt 64 --new-tokens 64
measure medthink float32 90 "${MT[@]}" --workload decode --batch 8 --prompt 64 --new-tokens 64
measure medthink float32 120 "${MT[@]}" --workload sft --batch 4 --tokens 256 --runs 2
measure trl float32 150 $PYTHON bench/trl_grpo_bench.py --model $MODEL --device $DEV "${GRPO[@]}"
measure medthink float32 150 "${MT[@]}" --workload grpo "${GRPO[@]}"
measure pytorch bfloat16 120 "${PY[@]}" --dtype bfloat16 --rows prefill,decode-b1,decode-b8,decode-b32,sft
measure medthink float32 120 "${MT[@]}" --workload decode --batch 32 --prompt 64 --new-tokens 64 --runs 2
# One knob of tfjs-webgpu: how many dispatches it records before submitting them (default 15).
measure medthink-submit128 float32 90 env TFJS_FLAGS='{"WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE": 128}' "${MT[@]}" \
  --workload decode --batch 1 --prompt 64 --new-tokens 64
# Where a decode step's time goes (tfjs kernel times; wall time against the sum of kernel times).
measure profile float32 90 "${RUN[@]}" bench/profile.ts --backend webgpu --model $MODEL --parts decode --batch 1
cp "$OUT/last.out" "$OUT/profile.txt" 2>/dev/null
measure trl bfloat16 150 $PYTHON bench/trl_grpo_bench.py --model $MODEL --device $DEV --dtype bfloat16 "${GRPO[@]}"
say "done"
