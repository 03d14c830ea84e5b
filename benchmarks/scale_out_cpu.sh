#!/usr/bin/env bash
# The scale-out figures on a CPU (correctness of the machinery, not GPU speed):
#   1. the tiny protocol over 3 splits with --parallel 1 and --parallel 2 (wall seconds);
#   2. training steps of one process x 4 devices vs 2 processes x 2 devices (JAX's multi-process
#      runtime, gloo collectives), pairs/s after the first logged step.
#   bash benchmarks/scale_out_cpu.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp/scale_out_cpu}
rm -rf "$out" && mkdir -p "$out"
python3 -c "from pathlib import Path; from tests import data_fixtures; data_fixtures.kadid(Path('$out/kadid'), refs=10, per_ref=4)"
export JAX_PLATFORMS=cpu
for p in 1 2; do
  start=$(date +%s.%N)
  python3 -m bpclip_jax.protocol --config=configs/kadid_fr.py:tiny --workdir="$out/protocol_p$p" --splits=3 \
    --parallel=$p --config.data.root="$out/kadid" --config.data.crop=16 > "$out/protocol_p$p.log" 2>&1
  echo "protocol, 3 tiny splits, --parallel $p: $(python3 -c "print(f'{$(date +%s.%N) - $start:.0f}')") s wall"
done
common=(--config configs/base.py:tiny --config.data.root="$out/kadid" --config.data.crop=64
        --config.data.batch_size=8 --config.optim.epochs=6 --config.train.log_every=2)
XLA_FLAGS=--xla_force_host_platform_device_count=4 python3 main.py "${common[@]}" --workdir "$out/one" \
  > "$out/one.log" 2>&1
XLA_FLAGS=--xla_force_host_platform_device_count=2 scripts/launch_local.sh 2 "${common[@]}" \
  --workdir "$out/two" > "$out/two.log" 2>&1
for run in one two; do
  python3 - "$out/$run/metrics.jsonl" "$run" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
rates = [r["train/pairs_per_s"] for r in rows if "train/pairs_per_s" in r][1:]
label = {"one": "1 process x 4 devices", "two": "2 processes x 2 devices"}[sys.argv[2]]
print(f"{label}: {sum(rates) / len(rates):.2f} pairs/s (mean of {len(rates)} logged intervals after the first)")
PY
done
