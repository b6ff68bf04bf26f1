#!/usr/bin/env bash
# Installs what acem needs to build and test, from Debian 12 packages (arguments name extra
# packages: fuzz/run.sh's clang), and where it can, llama.cpp from npm for one optional test.
set -euo pipefail
packages=(build-essential cmake pkg-config libopenblas-dev liblapacke-dev libcjson-dev
          libyaml-dev libcmocka-dev zlib1g-dev python3 python3-numpy python3-sklearn python3-jinja2
          python3-torch libpcre2-dev python3-regex valgrind
          # tokenizer.model (SentencePiece): acem's reader and the test's trainer/oracle
          libprotobuf-c-dev protobuf-c-compiler python3-sentencepiece
          # acem lab --suite text: its tasks' sources (docs/lab.md, "The text suite")
          fortunes wordnet-base wamerican wngerman wfrench wspanish witalian manpages
          manpages-dev libc6-dev libpython3.11-stdlib perl-modules-5.36 cmake-data "$@")
# llama.cpp for tests/test_llamacpp.py: the CPU build inside the npm package node-llama-cpp
# (its prebuilt binary only: nothing is compiled or downloaded when it installs), about 85 MB
# and 20 to 45 s, under .deps/. Optional: without node >= 20 or the npm registry the test skips.
node_llama_cpp() {
  local dir version=3.22.1
  dir="$(cd "$(dirname "$0")/.." && pwd)/.deps/node-llama-cpp"
  [ -f "$dir/node_modules/node-llama-cpp/package.json" ] && return 0
  node -e 'process.exit(+(process.versions.node.split(".")[0] < 20))' && command -v npm &&
    mkdir -p "$dir" && { [ -f "$dir/package.json" ] || echo '{"private": true}' > "$dir/package.json"; } &&
    NODE_LLAMA_CPP_SKIP_DOWNLOAD=true npm install --prefix "$dir" --omit=optional --no-audit \
      --no-fund --fetch-timeout=60000 --fetch-retries=1 --loglevel=error \
      "node-llama-cpp@$version" "@node-llama-cpp/linux-x64@$version"
}
if [ "$(uname -sm)" = "Linux x86_64" ]; then
  node_llama_cpp >/dev/null 2>&1 || echo "deps: no node-llama-cpp (needs node >= 20, npm and the" \
    "registry): tests/test_llamacpp.py will skip"
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
