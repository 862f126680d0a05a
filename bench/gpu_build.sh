#!/usr/bin/env bash
# Packs what the GPU benchmark (bench/gpu_device.sh) needs on a machine that has a GPU but no Deno and no
# registry, into folders that git ignores and the `device` tool carries (64 MiB in all):
#   .gpu/deno.xz          this Deno binary (deno 2.9.6), xz-compressed (~31 MB)
#   .gpu/denodir.tar.xz   a DENO_DIR holding only the npm packages bench/gpu_device.ts imports (~10 MB):
#                         bench/gpu/import_map.json stands in for those its code path never calls
#                         (transformers.js and its onnxruntime, openai, the tokenizer, the tfjs-node binding)
#   .gl/*.deb             the Vulkan loader and GL vendor libraries (Debian), for Deno's WebGPU on NVIDIA
#   .whl/*.whl            TRL and its dependencies missing from that machine's image
#   .gpu/src/             the committed tree (HEAD), which is what runs there
# Then:  device run --carry .gpu .gl .whl  "bash .gpu/src/bench/gpu_device.sh 480"
set -euo pipefail
cd "$(dirname "$0")/.."
for d in .gpu .gl .whl; do grep -qx "/$d/" .git/info/exclude 2>/dev/null || echo "/$d/" >>.git/info/exclude; done
mkdir -p .gpu .gl .whl

DENO_BIN="$(deno eval --quiet 'console.log(Deno.execPath())')"
if [ ! -s .gpu/deno.xz ]; then xz -T2 -6 -c "$DENO_BIN" >.gpu/deno.xz; fi

rm -rf .gpu/denodir
DENO_DIR="$PWD/.gpu/denodir" deno cache --quiet --import-map bench/gpu/import_map.json --node-modules-dir=none \
  --no-lock bench/gpu_device.ts bench/profile.ts bench/gpu_probe.ts
# Source maps and type declarations: not read at run time with --no-check.
find .gpu/denodir \( -name '*.map' -o -name '*.d.ts' -o -name '*.d.mts' \) -delete
tar -C .gpu -cf - denodir | xz -T2 -6 >.gpu/denodir.tar.xz
rm -rf .gpu/denodir

rm -rf .gpu/src && mkdir -p .gpu/src && git archive HEAD | tar -x -C .gpu/src
echo "source: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- bench lib mod.ts || echo ' (the checkout has uncommitted changes; they stay behind)')"

if ! ls .gl/libvulkan1_*.deb >/dev/null 2>&1; then
  o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
  mkdir -p /tmp/amd64/partial
  apt-get $o update -qq
  (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
fi
if ! ls .whl/trl-*.whl >/dev/null 2>&1; then
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl trl datasets dill multiprocess
fi
du -ch .gpu/* .gl .whl | tail -1
