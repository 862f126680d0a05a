#!/usr/bin/env bash
# Runs every example with no arguments (CI-sized: CI=true) and executes every notebook headless on the
# Deno kernel (`jupyter nbconvert --to notebook --execute`); a cell error or a non-zero exit fails.
# Called by .ci/run after the tests; runs on its own too: `bash .ci/notebooks.sh`.
#
# Env: DENO (the deno binary; default: `npx -y deno@2.9.6`), CI_LOG_DIR (logs, executed notebooks and
# their HTML renderings), NOTEBOOK_TIMEOUT (seconds per cell, default 600).
# Writes "<passed> <failed>" to $CI_LOG_DIR/notebooks.counts and exits non-zero when anything failed.
set -uo pipefail

cd "$(dirname "$0")/.."
export CI="${CI:-true}"
export NO_COLOR=1
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
LOG_DIR="${CI_LOG_DIR:-$(mktemp -d /tmp/medthink-notebooks.XXXXXX)}"
mkdir -p "$LOG_DIR/notebooks"
CELL_TIMEOUT="${NOTEBOOK_TIMEOUT:-600}"
if [ -n "${DENO:-}" ] && [ -x "$DENO" ]; then
  DENO_CMD=("$DENO")
else
  DENO_CMD=(npx -y deno@2.9.6)
fi

PASSED=0
FAILED=0
FAILURES=()
T0=$SECONDS

run_item() { # run_item NAME LOGFILE CMD...: run, time and count one item
  local name="$1" log="$2"
  shift 2
  local t=$SECONDS
  if "$@" >"$log" 2>&1; then
    PASSED=$((PASSED + 1))
    echo "ok     ${name} ($((SECONDS - t)) s)"
  else
    FAILED=$((FAILED + 1))
    FAILURES+=("$name")
    echo "FAILED ${name} ($((SECONDS - t)) s); last lines of ${log}:"
    tail -25 "$log" | sed 's/^/    /'
  fi
}

# --- examples, with no arguments ------------------------------------------------------------------
# sft_text first: probe_filter picks up the model it exports (runs/sft_text/model).
for ex in sft_text probe_filter evaluate grpo_image grpo_text; do
  [ -f "examples/${ex}.ts" ] || { echo "skip   examples/${ex}.ts (not in this checkout)"; continue; }
  run_item "examples/${ex}.ts" "$LOG_DIR/example_${ex}.log" \
    timeout 900 "${DENO_CMD[@]}" run -A "examples/${ex}.ts"
done

# --- notebooks, headless on the Deno kernel --------------------------------------------------------------
if ! command -v jupyter >/dev/null || ! jupyter nbconvert --version >/dev/null 2>&1; then
  echo "FAILED notebooks: jupyter nbconvert is not installed (apt-get install jupyter-nbconvert python3-nbclient jupyter-client python3-ipykernel)"
  FAILED=$((FAILED + 1))
  FAILURES+=("notebooks (no nbconvert)")
else
  # (Not piped into `grep -q`: under pipefail its early exit makes the pipeline fail.)
  KERNELS="$(jupyter kernelspec list 2>/dev/null)"
  if ! grep -qE '^\s*deno\s' <<<"$KERNELS"; then
    echo "registering the Deno kernel (deno jupyter --install)"
    "${DENO_CMD[@]}" jupyter --install --force >"$LOG_DIR/jupyter_install.log" 2>&1 ||
      "${DENO_CMD[@]}" jupyter --install >>"$LOG_DIR/jupyter_install.log" 2>&1 || tail -3 "$LOG_DIR/jupyter_install.log"
  fi
  # In order: 03 and 04 use the model notebook 02 fine-tunes.
  for nb in notebooks/[0-9][0-9]_*.ipynb; do
    name="$(basename "$nb" .ipynb)"
    # The committed notebook is never modified: the executed copy goes to the log folder.
    run_item "$nb" "$LOG_DIR/notebook_${name}.log" \
      jupyter nbconvert --to notebook --execute "$nb" \
      --ExecutePreprocessor.kernel_name=deno --ExecutePreprocessor.timeout="$CELL_TIMEOUT" \
      --output-dir "$LOG_DIR/notebooks" --output "${name}.ipynb"
    if [ -f "$LOG_DIR/notebooks/${name}.ipynb" ]; then
      jupyter nbconvert --to html "$LOG_DIR/notebooks/${name}.ipynb" --output-dir "$LOG_DIR/notebooks" \
        >/dev/null 2>&1 || true
    fi
  done
fi

# --- committed notebooks carry no outputs --------------------------------------------------------------
if python3 - notebooks/*.ipynb >"$LOG_DIR/notebook_outputs.log" 2>&1 <<'EOF'; then
import json, sys
bad = [p for p in sys.argv[1:] for c in json.load(open(p))["cells"]
       if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count") is not None)]
if bad:
    print("notebooks with committed outputs:", ", ".join(sorted(set(bad))))
    sys.exit(1)
EOF
  PASSED=$((PASSED + 1))
  echo "ok     notebooks are committed without outputs"
else
  FAILED=$((FAILED + 1))
  FAILURES+=("committed notebook outputs")
  echo "FAILED $(cat "$LOG_DIR/notebook_outputs.log")"
fi

echo "$PASSED $FAILED" >"$LOG_DIR/notebooks.counts"
echo "notebooks and examples: ${PASSED} ok, ${FAILED} failed in $((SECONDS - T0)) s (logs and executed notebooks in ${LOG_DIR})"
if [ "$FAILED" != 0 ]; then
  echo "failed: ${FAILURES[*]}"
  exit 1
fi
exit 0
