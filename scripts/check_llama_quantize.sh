#!/usr/bin/env bash
# Builds llama-quantize from the llama.cpp source node-llama-cpp bundles (offline: the git
# bundle under .deps/, scripts/deps.sh) and checks acem's --dtype mixes byte for byte against
# it (tests/test_llama_quantize.py). About 10 to 30 minutes on 2 cores the first time.
# usage: scripts/check_llama_quantize.sh PATH_TO_acem [TABLE.md]
#   LLAMA_CPP_DIR: where the source is cloned and built ($TMPDIR/acem-llama-cpp)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
acem="$(realpath "${1:?usage: $0 PATH_TO_acem [TABLE.md]}")"
bundle="$root/.deps/node-llama-cpp/node_modules/node-llama-cpp/llama/gitRelease.bundle"
src="${LLAMA_CPP_DIR:-${TMPDIR:-/tmp}/acem-llama-cpp}"
if [ ! -x "$src/build/bin/llama-quantize" ]; then
  [ -f "$bundle" ] || { echo "check_llama_quantize: no $bundle (scripts/deps.sh installs node-llama-cpp)" >&2; exit 1; }
  [ -d "$src/.git" ] || git clone -q "$bundle" "$src"
  cmake -S "$src" -B "$src/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DGGML_OPENMP=OFF >/dev/null
  nice cmake --build "$src/build" --target llama-quantize -j"$(nproc)" >/dev/null
fi
ACEM_LLAMA_QUANTIZE="$src/build/bin/llama-quantize" ACEM_LLAMA_QUANTIZE_TABLE="${2:-}" \
  /usr/bin/python3 "$root/tests/test_llama_quantize.py" "$acem"
