#!/usr/bin/env bash
# Installs what acem needs to build and test, from Debian 12 packages only; arguments
# name extra packages (fuzz/run.sh: clang).
set -euo pipefail
packages=(build-essential cmake pkg-config libopenblas-dev liblapacke-dev libcjson-dev
          libyaml-dev libcmocka-dev zlib1g-dev python3 python3-numpy python3-sklearn
          python3-torch valgrind "$@")
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
