"""End to end on a tiny config: train, select, test, results; resume; NaN; 8 devices = 1."""

import csv
import json
import logging
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
import pytest

from bpclip_jax import metrics, train
from data_pipelines.records import to_mos
from tests.runs import assert_ends_as, flip_bytes, largest_data_file, own_copy, same_results, tiny_config

tiny = tiny_config


def _params(workdir: Path, step: int):
    restored = ocp.StandardCheckpointer().restore(
        (workdir / "checkpoints" / "latest" / str(step) / "state").absolute())
    return restored["params"]


@pytest.mark.slow
def test_tiny_run_writes_everything(trained):
    workdir, results = trained
    assert set(results) == {"selection", "kadid10k/test"} and results["kadid10k/test"]["n"] == 4
    best = json.loads((workdir / "checkpoints/best.json").read_text())
    assert results["selection"]["step"] == best["step"] and results["selection"]["val_srcc"] == best["srcc"]
    assert same_results(json.loads((workdir / "results.json").read_text()), results)
    for name in ("config.json", "metrics.jsonl", "predictions_kadid10k_test.csv",
                 "scatter_kadid10k_test.png", "checkpoints/best.json"):
        assert (workdir / name).is_file(), name
    assert any(p.name.startswith("events.out.tfevents") for p in workdir.iterdir())
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train/loss" in r] == [1, 2, 3, 4, 5, 6]  # 12 records, batch 4
    assert all(np.isfinite(r["train/loss"]) for r in rows if "train/loss" in r)
    assert sum("val/srcc" in r for r in rows) == 2
    latest = workdir / "checkpoints/latest"
    assert sorted(int(p.name) for p in latest.iterdir() if p.name.isdigit()) == [3, 6]


@pytest.mark.slow
def test_results_equal_the_metrics_of_the_saved_predictions(trained):
    workdir, results = trained
    with (workdir / "predictions_kadid10k_test.csv").open() as f:
        rows = list(csv.DictReader(f))
    mos = np.asarray([float(r["mos"]) for r in rows])
    pred = np.asarray([float(r["prediction"]) for r in rows])
    np.testing.assert_allclose(pred, to_mos(np.asarray([float(r["predicted_score"]) for r in rows]),
                                            "kadid10k"), rtol=1e-5)
    # the health (evaluate.health): the spread ratio is scale-free, so the MOS scale gives it too;
    # the cosines' spread is not in the CSV: present, finite and positive (the text branch is on)
    expected = {**metrics.all_metrics(pred, mos), "pred_std_ratio": np.std(pred) / np.std(mos)}
    got = dict(results["kadid10k/test"])
    cos_spread = got.pop("cos_spread")
    assert np.isfinite(cos_spread) and cos_spread > 0
    assert got.keys() == expected.keys()
    for key, value in got.items():
        assert value == pytest.approx(expected[key], rel=1e-4, abs=1e-6), key


@pytest.mark.slow
def test_stopped_resumed_and_damaged_runs_end_where_an_unstopped_one_does(trained, kadid_root, tmp_path,
                                                                          caplog):
    """Stopped after step 4 (a row of a step 5 that never finished left in metrics.jsonl); the
    same command, stopped after step 5 (it resumes mid-epoch, and the stale row is gone); then the
    newest checkpoint damaged and best.json truncated, and the same command again: it falls back
    past the damaged step (naming it), rebuilds best.json and ends with the parameters and results
    of the unstopped run. Each TensorBoard writer told TensorBoard to drop the events of earlier
    attempts past its first step."""
    workdir, _ = trained
    assert train.train_and_evaluate(tiny(kadid_root, stop_at_step=4), tmp_path) == {}
    assert not (tmp_path / "results.json").exists()
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"step": 5, "train/loss": 9.0}) + "\n")
    assert train.train_and_evaluate(tiny(kadid_root, stop_at_step=5), tmp_path) == {}
    losses = [r["train/loss"] for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
              if r["step"] == 5 and "train/loss" in r]
    assert len(losses) == 1 and losses[0] != 9.0  # the stale row is gone
    flip_bytes(largest_data_file(tmp_path / "checkpoints/latest/5"))
    best_file = tmp_path / "checkpoints/best.json"
    best_file.write_text(best_file.read_text()[:7])  # truncated
    with caplog.at_level(logging.WARNING):
        resumed = train.train_and_evaluate(tiny(kadid_root), tmp_path)  # the same command again
    assert "checkpoints/latest/5 is unusable" in caplog.text and "best.json" in caplog.text
    assert json.loads(best_file.read_text()) == json.loads((workdir / "checkpoints/best.json").read_text())
    for a, b in zip(_leaves(_params(workdir, 6)), _leaves(_params(tmp_path, 6)), strict=True):
        np.testing.assert_array_equal(a, b)
    assert same_results(resumed, json.loads((workdir / "results.json").read_text()))
    assert_ends_as(tmp_path, workdir)
    purges = [_purge_steps(p) for p in sorted(tmp_path.glob("events.out.tfevents.*"))]
    assert purges == [[1], [5], [5]]


def _purge_steps(path: Path) -> list[int]:
    """Steps of the SessionLog START events in a TensorBoard events file (TFRecord framing)."""
    from tensorboardX.proto import event_pb2

    data, steps, offset = path.read_bytes(), [], 0
    while offset < len(data):
        (length,) = struct.unpack("<Q", data[offset:offset + 8])
        event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
        offset += 12 + length + 4
        if event.HasField("session_log") and event.session_log.status == event.session_log.START:
            steps.append(event.step)
    return steps


def test_metric_rows_are_written_without_importing_torch(tmp_path):
    """tensorboardX imports torch when it is installed (as here and on Colab): 1.2 s and some 300 MB
    at a run's first log row, for nothing a scalar needs. The writer keeps it out, the events file
    is written and torch stays importable."""
    code = ("import sys\nfrom absl import flags\nflags.FLAGS.mark_as_parsed()\n"
            "from bpclip_jax.writer import MetricWriter\n"
            "MetricWriter(sys.argv[1], resume_step=0).write(1, {'train/loss': 0.5})\n"
            "print('torch' in sys.modules)\nimport torch\nprint(torch.zeros(1).shape)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                         cwd=Path(__file__).parent.parent, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[:2] == ["False", "torch.Size([1])"]
    (events,) = tmp_path.glob("events.out.tfevents.*")
    assert _purge_steps(events) == [1]
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"step": 1, "train/loss": 0.5}


def _leaves(tree):
    import jax

    return jax.tree.leaves(tree)


@pytest.mark.slow
def test_eval_mode_reevaluates_the_best_checkpoint(trained, kadid_root, tmp_path):
    workdir, results = trained
    workdir = own_copy(workdir, tmp_path / "run")  # evaluation writes results.json and test rows
    again = train.evaluate_workdir(tiny(kadid_root), workdir)
    assert again["kadid10k/test"] == pytest.approx(results["kadid10k/test"], rel=1e-5)


@pytest.mark.slow
def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(kadid_root, tmp_path):
    config = tiny(kadid_root, steps_per_epoch=1)
    config.optim.lr = 1e30  # the first update sends the parameters to infinity
    config.data.select_part = ""
    with pytest.raises(train.NonFiniteError, match="^step 2: the loss is"):
        train.train_and_evaluate(config, tmp_path)
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints/latest").iterdir() if p.name.isdigit())
    assert steps == [1]
    assert all(np.all(np.isfinite(x)) for x in _leaves(_params(tmp_path, 1)))


@pytest.mark.slow
def test_eight_fake_devices_match_one_in_training_and_evaluation():
    out = subprocess.run([sys.executable, "-m", "tests.multidevice_check"], capture_output=True,
                         text=True, cwd=Path(__file__).parent.parent, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(result)
    assert result["devices"] == [1, 8]
    assert result["max_loss_rel"] < 1e-5
    assert result["max_update"] > 1e-3  # the SGD steps moved the parameters ...
    # ... alike on 1 and 8 devices, up to the gradient all-reduce's summation order: the largest gap
    # (~8e-7) sits in random-backbone conv kernels whose per-image gradients nearly cancel.
    assert result["max_param_abs"] < 1e-4 * result["max_update"]
    # Evaluation split over 8 devices: every record scored, the same scores as on one device.
    assert result["eval_devices"] == 8 and result["eval_finite"]
    assert result["eval_max_abs"] < 1e-3 * result["eval_spread"]


@pytest.mark.slow
def test_scorer_from_workdir_reproduces_the_test_predictions(trained):
    from bpclip_jax.api import Scorer

    workdir, _ = trained
    with (workdir / "predictions_kadid10k_test.csv").open() as f:
        rows = list(csv.DictReader(f))
    scorer = Scorer.from_workdir(workdir, size_step=0)  # native sizes: the protocol's
    scores = scorer([r["path"] for r in rows], [r["ref"] for r in rows], normalized=True)
    np.testing.assert_allclose(scores, [float(r["predicted_score"]) for r in rows], atol=1e-5)



@pytest.mark.slow
def test_train_loop_does_not_sync_the_host_between_log_steps(kadid_root, tmp_path, monkeypatch):
    """Each step's outputs (state and metrics) are made to wait on a slow device computation
    (~0.3 s); a host sync on them between log steps (float(loss), int(state.step),
    block_until_ready) would hold up the next step's dispatch by at least that much."""
    import time

    import jax
    import jax.numpy as jnp

    @jax.jit
    def slow(x):
        m = jnp.full((768, 768), 1e-3, jnp.float32)
        m = jax.lax.fori_loop(0, 100, lambda i, m: jnp.tanh(m @ m), m)
        return x + (0 * m[0, 0]).astype(x.dtype)

    jax.block_until_ready(slow(jnp.zeros(())))
    start = time.perf_counter()
    jax.block_until_ready(slow(jnp.zeros(())))
    cost = time.perf_counter() - start

    run = train.setup(tiny(kadid_root, steps_per_epoch=8, log_every=5, stop_at_step=5), tmp_path)
    run.iterator = iter([next(run.iterator) for _ in range(5)])  # the loop, not the pipeline's pace
    real_step, dispatched = run.step_fn, []

    def slowed_step(state, batch, hyper):
        state, metrics = real_step(state, batch, hyper)
        state = state.replace(step=slow(state.step))
        dispatched.append(time.perf_counter())
        return state, jax.tree.map(slow, metrics)

    run.step_fn = slowed_step
    monkeypatch.setattr(run.ckpt, "save_latest", lambda *_: None)
    train._train_loop(run, 0, 5)  # logs (and syncs) once, after step 5
    gaps = np.diff(dispatched)[1:]  # steps 3-5: steps 1 and 2 also compile (`slow` for the metrics)
    assert len(gaps) == 3 and gaps.max() < cost / 2, (gaps, cost)
    run.ckpt.close()


@pytest.mark.slow
def test_runs_that_differ_in_optimizer_numbers_or_seed_compile_one_program():
    """A sweep over lr, eta_min, t_max, Adam's betas and eps, weight decay, the steps per epoch or
    the seed lowers to the same program (what the persistent compilation cache keys on); another
    crop does not."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    config = tiny("unused")
    tx, _ = train.make_optimizer(config.optim, 3)
    replicated = NamedSharding(train.make_mesh(), PartitionSpec())
    graphdef, state = train._abstract_train_state(config, tx, replicated)  # what a resume restores into
    step = jax.jit(train.make_train_step(graphdef))

    def program(config, steps_per_epoch, crop=16):
        batch = {k: jax.ShapeDtypeStruct((4, crop, crop, 3), np.uint8) for k in ("dist", "ref")}
        batch["score"] = jax.ShapeDtypeStruct((4,), np.float32)
        hyper = train.Hyper.of(config.optim, steps_per_epoch, config.seed)
        return step.lower(state, batch, hyper).as_text()

    swept = tiny("unused")
    swept.seed = 5
    for name, value in dict(lr=3e-3, eta_min=1e-7, t_max=7, b1=0.8, b2=0.99, eps=1e-3,
                            weight_decay=0.1).items():
        swept.optim[name] = value
    assert program(config, 3) == program(swept, 11)
    assert program(config, 3) != program(config, 3, crop=32)
