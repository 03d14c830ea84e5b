"""Smoke test: the throughput benchmark runs two steps on a tiny input and reports sane figures."""

import pytest

from benchmarks import throughput


@pytest.mark.slow
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


@pytest.mark.slow
def test_bf16_drift_scores_a_run_in_both_dtypes_and_writes_nothing(trained, capsys):
    from benchmarks import bf16_drift

    workdir, results = trained
    before = sorted(p.relative_to(workdir) for p in workdir.rglob("*"))
    scored = {dtype: bf16_drift.score(str(workdir), dtype) for dtype in ("float32", "bfloat16")}
    f32, bf16 = scored["float32"]["kadid10k/test"], scored["bfloat16"]["kadid10k/test"]
    assert f32.metrics["srcc"] == results["kadid10k/test"]["srcc"]  # float32 is the run's own score
    assert f32.pred.shape == bf16.pred.shape == (4,)
    assert 0 < abs(f32.pred - bf16.pred).max() < 0.05  # bf16 differs, slightly
    assert sorted(p.relative_to(workdir) for p in workdir.rglob("*")) == before


@pytest.mark.slow
def test_like_for_like_row_times_our_cfanet_and_pyiqas():
    """--model cfanet: our TOPIQ against pyiqa's CFANet, one step each on a tiny input."""
    ours = throughput.bench_jax("fr", batch=2, crop=32, dtype="float32", steps=1, warmup=0, arch="cfanet")
    peer = throughput.bench_peer("fr", batch=2, crop=32, dtype="float32", steps=1, warmup=0)
    assert ours["train_pairs_per_s"] > 0 and peer["train_pairs_per_s"] > 0
    assert ours["infer_images_per_s"] > 0 and peer["infer_images_per_s"] > 0


def test_checkpoint_save_benchmark_measures_both_writers():
    from benchmarks import checkpoint_save

    rows = checkpoint_save.measure(megabytes=4, repeats=1)
    ours, zstd = rows["ours (raw)"], rows["orbax standard (zstd)"]
    assert ours["stored_mb"] >= 4 > zstd["stored_mb"]  # raw against compressed noise
    assert all(row["cpu_s"] > 0 and row["wall_s"] > 0 for row in rows.values())
