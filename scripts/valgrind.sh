#!/usr/bin/env bash
# Runs the unit tests and representative command lines under valgrind memcheck: every
# error, and every leak (definite or possible) not in scripts/valgrind.supp, fails.
#
# usage: bash scripts/valgrind.sh [BUILD_DIR]   (default build: the release build of
#        scripts/test.sh; a sanitizer build cannot run under valgrind)
# The command lines are those of tests/test_cli.py (help, example, inspect, stats, YAML,
# usage errors, reports) and one hostile input per rejection family of
# tests/test_hostile_inputs.py, with acem run through valgrind.
set -euo pipefail
cd "$(dirname "$0")/.."
b=${1:-build}
start=$SECONDS
vg="valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,possible
    --suppressions=$PWD/scripts/valgrind.supp"
# a policy set here keeps acem from executing itself again (cli/main.c), out of valgrind
export OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 OMP_WAIT_POLICY=passive
for t in "$b"/tests/test_*; do
  echo "== valgrind $(basename "$t")"
  $vg "$t" >/dev/null
done
wrapper=$(mktemp /tmp/acem-valgrind.XXXXXX)
trap 'rm -f "$wrapper"' EXIT
printf '#!/bin/sh\nexec %s "%s" "$@"\n' "$(echo $vg)" "$PWD/$b/acem" >"$wrapper"
chmod +x "$wrapper"
echo "== valgrind acem: tests/test_cli.py"
/usr/bin/python3 tests/test_cli.py "$wrapper" | grep -v '^PASS '
echo "== valgrind acem: one hostile input per family (tests/test_hostile_inputs.py)"
families=(control- header-len-2^63 utf8-invalid json-truncated json-deep-objects
          duplicate-tensor-name duplicate-key shape-overflow-numel offsets-begin-gt-end
          entry-extra-key metadata-non-string layout-gap layout-truncated nan-in-f32
          shape-mismatch tensor-missing input-fifo hf-traversal hf-index-invalid-json
          hf-shard-missing hf-swapped-shards hf-weight-map-dup-key output-is-base
          output-exists output-parent-is-file config-repeated fuzz-)
only=()
for f in "${families[@]}"; do only+=(--only "$f"); done
/usr/bin/python3 tests/test_hostile_inputs.py "$wrapper" "${only[@]}" | grep -v '^PASS '
echo "valgrind: clean in $((SECONDS - start)) s"
