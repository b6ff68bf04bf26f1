#!/usr/bin/env bash
# The performance benchmark: installs what it needs (Debian packages), builds acem in
# release mode, and prints acem against references measured in the same run
# (bench/perf.py). usage: bench/run.sh [perf.py options, e.g. --quick --runs 3]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
for p in python3-torch time; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$p" >/dev/null
done
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" >/dev/null
exec /usr/bin/python3 bench/perf.py build/acem "$@"
