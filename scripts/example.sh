#!/usr/bin/env bash
# Installs dependencies, builds acem, and runs the built-in example: a tiny base model and
# three experts are written to ./acem-example, merged, and the summary is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" >/dev/null
./build/acem example acem-example
./build/acem inspect acem-example/merged
