#!/usr/bin/env bash
# One call on a lent GPU host (no network): install the carried wheels, run the JAX benchmark with
# the PyTorch peer for FR and NR, and the input pipeline, writing JSON under $OUT.
#   Prepare here:  bash benchmarks/gpu_run.sh --prepare   (downloads wheels into benchmarks/wheels/)
#   Run there:     the device tool, carry ["benchmarks/wheels"], command "bash benchmarks/gpu_run.sh"
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--prepare" ]]; then
  # Pure-python or cp312 wheels for what the GPU image lacks (it has jax, torch, pytest). OpenCV is
  # left out (61 MB, over the carry limit): the pipeline then decodes PNGs with PIL.
  pip download -q --no-deps -d benchmarks/wheels --only-binary=:all: --python-version 3.12 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_28_x86_64 --platform any \
    flax==0.12.8 optax==0.2.8 ml_collections==1.1.0 grain==0.2.18 orbax-checkpoint==0.12.8 \
    treescope==0.1.10 absl-py==2.5.1 tensorstore==0.1.86 etils==1.15.0 simplejson==4.3.0 \
    humanize==4.17.0 msgpack==1.2.4 array-record==0.8.6 tqdm==4.70.1 tensorboardX==2.6.5 \
    cloudpickle portpicker protobuf aiofiles prometheus-client psutil pyyaml uvloop rich \
    markdown-it-py mdurl pygments typing_extensions zipp fsspec importlib_resources \
    pyiqa==0.1.16 timm==1.0.31 facexlib==0.3.0
  du -sh benchmarks/wheels
  exit 0
fi
OUT="${OUT:-/tmp/bpclip_out}"
mkdir -p "$OUT"
pip install -q --no-deps --no-index benchmarks/wheels/*.whl 2>&1 | tail -2 || true
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
git rev-parse HEAD > "$OUT/commit.txt" 2>/dev/null || true
python benchmarks/throughput.py --mode fr --batch 16 --crop 384 --dtype bfloat16 --steps 20 \
  --out "$OUT/throughput_fr_bf16.json"
python benchmarks/throughput.py --mode nr --batch 16 --crop 384 --dtype bfloat16 --steps 20 \
  --out "$OUT/throughput_nr_bf16.json"
python benchmarks/input_pipeline.py --threads 4 --workers 0 --workers 4 --workers 8 --batches 30 \
  | tee "$OUT/input_pipeline.txt"
