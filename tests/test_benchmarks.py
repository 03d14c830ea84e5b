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


def test_profile_summary_reports_time_per_step():
    import jax
    import jax.numpy as jnp

    f = jax.jit(lambda x: jnp.tanh(x @ x).sum())
    x = jnp.ones((256, 256))
    text = throughput.profile_jax(lambda: f(x), steps=3)
    header = text.splitlines()[0]
    assert "busy" in header and "over 3 steps" in header, text
    # Rows carry a per-step time and an op name; the busy time is positive.
    assert float(header.split("busy ")[1].split(" ms")[0]) > 0
    assert any("ms/step" in row and row.split()[-1] for row in text.splitlines()[1:])
