#!/usr/bin/env bash
# One call on a lent GPU host (no network): install the carried wheels beside the image's packages,
# run the JAX benchmark with the PyTorch peer for FR and NR (with a per-kernel profile), and the
# input pipeline, writing everything under $OUT.
#   Prepare here:  bash benchmarks/gpu_run.sh --prepare   (downloads wheels into benchmarks/wheels/)
#   Run there:     the device tool, carry ["benchmarks/wheels"], command "bash benchmarks/gpu_run.sh"
#   Rehearse here: PY=/path/to/python3.12 BATCH=2 CROP=64 STEPS=2 bash benchmarks/gpu_run.sh
# The image has jax 0.11 (CUDA), torch, timm, OpenCV, scipy, scikit-learn, transformers; it lacks
# grain, ml_collections, tensorboardX, openpyxl and pyiqa. The wheels pin the rest of our
# requirements too, so the run uses the versions the project is tested with on Python 3.12 (flax
# 0.12.12: flax 0.12.8, Python 3.11's pin, does not import under jax 0.11).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-python3}"
if [[ "${1:-}" == "--prepare" ]]; then
  rm -rf benchmarks/wheels
  "$PY" -m pip download -q --no-deps -d benchmarks/wheels --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 \
    --platform any \
    flax==0.12.12 optax==0.2.8 ml_collections==1.1.0 grain==0.2.18 orbax-checkpoint==0.12.8 \
    treescope==0.1.10 absl-py==2.5.1 tensorstore==0.1.86 etils==1.15.0 simplejson==4.3.0 \
    humanize==4.17.0 msgpack==1.2.4 array-record==0.8.6 tqdm==4.70.1 tensorboardX==2.6.5 \
    openpyxl==3.1.5 et_xmlfile cloudpickle portpicker aiofiles importlib_resources \
    pyiqa==0.1.16 timm==1.0.31 facexlib==0.3.0
  du -sh benchmarks/wheels
  exit 0
fi
OUT="${OUT:-/tmp/bpclip_out}"
BATCH="${BATCH:-16}" CROP="${CROP:-384}" STEPS="${STEPS:-20}"
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1  # the whole output comes back too (at most 8 files in all)
export PYTHONUNBUFFERED=1
# --target keeps the image's site-packages intact; PYTHONPATH puts our pins first.
rm -rf /tmp/bpclip_site
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/bpclip_site \
  benchmarks/wheels/*.whl
export PYTHONPATH="/tmp/bpclip_site:$PWD"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "no nvidia-smi"
  "$PY" -c "import jax, flax, torch; print('jax', jax.__version__, jax.devices()); print('flax', flax.__version__, 'torch', torch.__version__)"
} 2>&1  # in log.txt: at most 8 files come back from a lent GPU
# Each run may fail alone (the peer is required: --peer yes); the others still run. In order of
# importance: FR against the peer, the input pipeline, NR against the peer, our CFANet against the
# peer (like for like), then an A/B of the BatchNorm folding (JAX only).
set +e
bench() {  # mode, output stem, extra flags...
  local mode="$1" stem="$2"; shift 2
  "$PY" -m benchmarks.throughput --mode "$mode" --batch "$BATCH" --crop "$CROP" --dtype bfloat16 \
    --steps "$STEPS" --out "$OUT/$stem.json" "$@" || echo "FAILED: throughput $stem"
}
bench fr throughput_fr_bf16 --peer yes --profile "$OUT/profile_fr_bf16.txt"
echo "elapsed ${SECONDS} s"
"$PY" -m benchmarks.input_pipeline --threads 4 --workers 0 --workers 4 --workers 8 --batches 30 \
  --batch "$BATCH" --crop "$CROP" 2>&1 | tee "$OUT/input_pipeline.txt"
bench nr throughput_nr_bf16 --peer yes --profile "$OUT/profile_nr_bf16.txt"
echo "elapsed ${SECONDS} s"
# Like for like: our TOPIQ (CFANet) against pyiqa's, the same architecture in both frameworks.
bench fr throughput_fr_bf16_cfanet --peer yes --model cfanet
echo "elapsed ${SECONDS} s"
# The A/B only if the call has time left for it (BUDGET_S: seconds this script may take in all).
if (( SECONDS < ${BUDGET_S:-540} - 150 )); then
  bench fr throughput_fr_bf16_nofold --peer no --nofold_bn
else
  echo "skipped the --nofold_bn A/B: ${SECONDS} s elapsed"  # in log.txt (8 files come back at most)
fi
echo "elapsed ${SECONDS} s"
