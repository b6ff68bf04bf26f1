#!/usr/bin/env bash
# Builds the libFuzzer harnesses (clang, ASan + UBSan) in build-fuzz and runs each one for
# SECONDS, niced, on one core. Seeds and the valid models the harnesses need are written
# by fuzz/make_seeds.py; the growing corpora stay in build-fuzz/corpus between runs.
#
# usage: bash fuzz/run.sh SECONDS [safetensors|index|config|merge|pickle|tokenizer|dataset ...]
#        (default: all)
# A crash stops that harness; its input is kept as build-fuzz/crashes/<harness>-crash-*.
# Exit status 1 when any harness crashed.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:?usage: fuzz/run.sh SECONDS [HARNESS...]}
shift
harnesses=("$@")
[ ${#harnesses[@]} -gt 0 ] || harnesses=(safetensors index config merge pickle tokenizer dataset)

bash scripts/deps.sh clang-14 libclang-rt-14-dev
b=build-fuzz
CC=clang-14 cmake -S . -B $b -DCMAKE_BUILD_TYPE=RelWithDebInfo -DACEM_SANITIZE=ON \
  -DACEM_FUZZ=ON >/dev/null
cmake --build $b -j 2 --target "${harnesses[@]/#/fuzz_}" >/dev/null
/usr/bin/python3 fuzz/make_seeds.py $b
mkdir -p $b/crashes $b/logs

# Inputs are files on a tmpfs: the merge harness writes and fsyncs outputs on every run.
work=$(mktemp -d "${ACEM_FUZZ_TMP:-/dev/shm}/acem-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
export TMPDIR=$work ACEM_FUZZ_MODELS=$PWD/$b/models OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1
status=0
for h in "${harnesses[@]}"; do
  mkdir -p $b/corpus/$h
  log=$b/logs/$h.log
  max_len=4096
  [ "$h" = merge ] && max_len=2048 # the covariance methods are cubic in a tensor's width
  if nice -n 19 $b/fuzz/fuzz_$h -max_total_time="$seconds" -max_len=$max_len -timeout=20 \
      -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix=$b/crashes/$h- \
      $b/corpus/$h $b/seeds/$h >"$log" 2>&1; then
    result="no crash"
  else
    result="CRASH (see $log)"
    status=1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
  echo "fuzz_$h: ${runs:-?} executions in ${secs:-?} s, corpus $(ls $b/corpus/$h | wc -l) inputs: $result"
done
exit $status
