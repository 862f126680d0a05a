#!/bin/sh
# Creates bench/.venv with the PyTorch baseline (torch, transformers, trl, safetensors) OFFLINE, from the
# machine's local wheel store (pip's configuration points at it).
# Nothing is downloaded: where the store lacks the wheels this fails, and `deno task bench` then says so
# and leaves the PyTorch column empty.
set -eu
cd "$(dirname "$0")"
if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch, transformers, trl, safetensors, peft, PIL" 2>/dev/null; then
  echo "bench/.venv is ready"
  exit 0
fi
python3 -m venv .venv
# --retries 0: the public index is unreachable here; fail over to the local store at once instead of
# backing off for minutes per package.
if ! .venv/bin/pip install --retries 0 --timeout 5 -q torch transformers trl safetensors peft pillow; then
  echo "bench/setup.sh: could not install torch/transformers/trl from the local wheel store" >&2
  exit 1
fi
.venv/bin/python -c "import torch, transformers, trl; print('bench/.venv: torch', torch.__version__, 'transformers', transformers.__version__, 'trl', trl.__version__)"
