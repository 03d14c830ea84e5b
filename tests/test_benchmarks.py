"""Smoke test: the throughput benchmark runs two steps on a tiny input and reports sane figures."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))

import throughput  # noqa: E402


def test_throughput_benchmark_runs_two_steps():
    result = throughput.bench_jax("nr", batch=2, crop=32, dtype="float32", steps=2, warmup=1)
    assert result["train_pairs_per_s"] > 0 and result["infer_images_per_s"] > 0
    assert result["compile_s"] > 0
    # ResNet50 forward alone is ~0.09 GFLOPs per 32x32 image; a train step is several times that.
    assert result["flops_per_step"] > 2 * 0.09e9
    assert result["achieved_tflops"] > 0
    assert result["device"].startswith("cpu")
