#!/usr/bin/env bash
# Peak resident memory of a streaming merge: base + 3 experts of 512 MiB float32 each
# (16 tensors of 8M elements, as a ~130M-parameter model stores them), merged with
# task_arithmetic, with ties, and with a mergekit config's weighted dare_ties. Prints peak
# RSS (/usr/bin/time -v) against the inputs and the benchmark's bound.
# usage: bench/memory.sh [ACEM_BINARY] [WORKDIR]
set -euo pipefail
acem=${1:-build/acem}
work=${2:-$(mktemp -d /tmp/acem-mem-XXXXXX)}
mkdir -p "$work"
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (apt-get install time)"; exit 1; }
/usr/bin/python3 - "$work" <<'PY'
import json, struct, sys, numpy as np
work = sys.argv[1]
n_tensors, numel = 16, 8 << 20
for name, seed in (("base", 0), ("e1", 1), ("e2", 2), ("e3", 3)):
    rng = np.random.default_rng(seed)
    hdr, off = {}, 0
    for i in range(n_tensors):
        hdr[f"layers.{i}.weight"] = {"dtype": "F32", "shape": [2048, 4096], "data_offsets": [off, off + 4 * numel]}
        off += 4 * numel
    hb = json.dumps(hdr).encode(); hb += b" " * (-(8 + len(hb)) % 8)
    with open(f"{work}/{name}.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(hb))); f.write(hb)
        for i in range(n_tensors):
            f.write(rng.standard_normal(numel, dtype=np.float32).tobytes())
# a PEFT LoRA adapter (r = 16) on every tensor, for a LoRA expert's row
import os
os.makedirs(f"{work}/lora", exist_ok=True)
rng, hdr, blobs, off = np.random.default_rng(4), {}, [], 0
for i in range(n_tensors):
    for part, shape in (("lora_A", (16, 4096)), ("lora_B", (2048, 16))):
        a = (0.01 * rng.standard_normal(shape)).astype(np.float32)
        hdr[f"base_model.model.layers.{i}.{part}.weight"] = {"dtype": "F32", "shape": list(shape), "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes; blobs.append(a.tobytes())
hb = json.dumps(hdr).encode(); hb += b" " * (-(8 + len(hb)) % 8)
with open(f"{work}/lora/adapter_model.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(hb))); f.write(hb); f.write(b"".join(blobs))
json.dump({"peft_type": "LORA", "r": 16, "lora_alpha": 32, "target_modules": "layers\\.[0-9]+"},
          open(f"{work}/lora/adapter_config.json", "w"))
PY
# The bound the performance benchmark holds every merge to (README, Performance): the T + 2
# compute buffers of the largest tensor, plus 64 MiB.
bound_mib=$(( (3 + 2) * 32 + 64 ))
measure() { # label, then acem's arguments
  local label=$1
  shift
  rm -f "$work/out.safetensors"
  /usr/bin/time -v "$acem" merge -q "$@" -o "$work/out.safetensors" 2> "$work/time.txt"
  rss_kb=$(awk -F: '/Maximum resident set size/ {gsub(/ /,"",$2); print $2}' "$work/time.txt")
  wall=$(awk '/Elapsed \(wall clock\)/ {print $NF}' "$work/time.txt")
  printf "%-26s inputs 4 x 512 MiB   largest tensor 32 MiB   peak RSS %6.1f MiB (bound %d MiB)   wall %s\n" \
      "$label" "$(awk "BEGIN {print $rss_kb / 1024}")" "$bound_mib" "$wall"
}
for method in task_arithmetic ties; do
  measure "$method" -b "$work/base.safetensors" -m "$work/e1.safetensors" \
      -m "$work/e2.safetensors" -m "$work/e3.safetensors" -M "$method"
done
# mergekit's form of a merge: dare_ties with a weight and a density per model
cat > "$work/dare_ties.yaml" <<'YAML'
merge_method: dare_ties
base_model: base.safetensors
models:
  - model: e1.safetensors
    parameters: {weight: 0.5, density: 0.5}
  - model: e2.safetensors
    parameters: {weight: 0.3, density: 0.7}
  - model: e3.safetensors
    parameters: {weight: 0.4, density: 0.3}
YAML
measure "dare_ties (mergekit yaml)" "$work/dare_ties.yaml"
# the same with e3 a LoRA expert (base+adapter), its tensors computed as they are read
sed 's|model: e3.safetensors|model: base.safetensors+lora|' "$work/dare_ties.yaml" > "$work/lora.yaml"
measure "dare_ties, a LoRA expert" "$work/lora.yaml"
rm -rf "$work"
