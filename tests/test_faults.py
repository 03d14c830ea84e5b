"""Fault injection: kills at every phase, damaged checkpoints, non-finite state, two runs on one
workdir, resumed logs. Whatever happens, a rerun of the same command ends with the results of an
unstopped run, or stops with an error naming the files; never a wrong number that looks right."""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bpclip_jax import checkpoint, lock, train
from bpclip_jax.errors import WorkdirError
from tests.runs import assert_ends_as, flip_bytes, largest_data_file, own_copy, same_results, tiny_config

REPO = Path(__file__).parent.parent


def _drive(workdir: Path, root: Path, point: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tests.fault_driver", str(workdir), str(root), point],
                          cwd=REPO, capture_output=True, text=True, timeout=600)


# ------------------------------------------------------------------------------ kills


@pytest.mark.slow
def test_killed_in_every_phase_and_rerun_ends_as_an_unstopped_run(trained, kadid_root, tmp_path):
    """One workdir, killed with SIGKILL mid-step, mid-checkpoint, mid-validation (the epoch's
    latest checkpoint not yet written), in the last checkpoint and mid-test, rerun after each:
    the same selection, the same results.json and one log row per step as the unstopped run."""
    reference, results = trained
    for point in ("step:2", "save:latest:3", "validate", "save:latest:6", "test"):
        out = _drive(tmp_path, kadid_root, point)
        assert out.returncode == -signal.SIGKILL, (point, out.returncode, out.stderr[-2000:])
        assert not (tmp_path / "results.json").exists(), point
    out = _drive(tmp_path, kadid_root, "none")
    assert out.returncode == 0, out.stderr[-3000:]
    assert same_results(json.loads((tmp_path / "results.json").read_text()), results)
    assert_ends_as(tmp_path, reference)
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints/latest").iterdir())
    assert steps == [3, 6]  # the interrupted writes left no temporary folder behind
    assert not (tmp_path / "checkpoints/corrupt").exists()


# ------------------------------------------------------------------------------ damaged checkpoints


def _tree(value: float) -> dict:
    return {"step": jnp.int32(int(value)), "params": {"w": jnp.arange(1000.0) * value, "b": jnp.ones(3)}}


def _forge_checksums(step_dir: Path) -> None:
    """The arrays read back, but not as saved: what a silent bit flip the decoder cannot see does."""
    meta = step_dir / "meta" / "metadata"
    saved = json.loads(meta.read_text())
    saved["checksums"] = {k: (v + 1) % 2**32 for k, v in saved["checksums"].items()}
    meta.write_text(json.dumps(saved))


DAMAGE = {
    "bytes flipped": lambda d: flip_bytes(largest_data_file(d)),
    "file truncated": lambda d: largest_data_file(d).write_bytes(largest_data_file(d).read_bytes()[:10]),
    "data file deleted": lambda d: largest_data_file(d).unlink(),
    "_METADATA deleted": lambda d: (d / "state" / "_METADATA").unlink(),
    "meta item deleted": lambda d: shutil.rmtree(d / "meta"),
    "half-written step": lambda d: shutil.rmtree(d / "state"),
    "silent corruption": _forge_checksums,
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_a_damaged_latest_step_is_named_moved_aside_and_the_previous_one_restored(tmp_path, damage, caplog):
    ckpt = checkpoint.Checkpoints(tmp_path)
    for step in (1, 2, 3):
        ckpt.save_latest(step, _tree(step), {"history": [], "best": None})
    DAMAGE[damage](tmp_path / "checkpoints/latest/3")
    with caplog.at_level(logging.WARNING):
        step, tree, _ = ckpt.restore_latest(_tree(0))
    assert step == 2
    np.testing.assert_array_equal(tree["params"]["w"], _tree(2)["params"]["w"])
    assert "checkpoints/latest/3 is unusable" in caplog.text
    assert [p.name.split("-")[:2] for p in (tmp_path / "checkpoints/corrupt").iterdir()] == [["latest", "3"]]
    assert ckpt.latest.all_steps() == [2]
    ckpt.save_latest(3, _tree(3), {"history": [], "best": None})  # the step can be written again
    ckpt.close()


def test_arrays_are_saved_uncompressed_and_compressed_steps_still_restore(tmp_path):
    """zstd costs a save 2.5 times its CPU time for 7.5% of a model's bytes (checkpoint.py): arrays
    are written raw (4 MB of zeros take 4 MB, where zstd makes them a few kB), and a step written
    compressed, as releases before did, restores and verifies as before."""
    import orbax.checkpoint as ocp

    zeros = {"step": jnp.int32(1), "params": {"w": jnp.zeros(1_000_000)}}
    ckpt = checkpoint.Checkpoints(tmp_path / "new")
    ckpt.save_latest(1, zeros, {"history": [], "best": None})
    ckpt.close()
    stored = sum(p.stat().st_size for p in (tmp_path / "new/checkpoints/latest/1/state").rglob("*")
                 if p.is_file())
    assert stored >= 4_000_000, stored
    old = ocp.CheckpointManager(tmp_path / "old/checkpoints/latest",
                                item_handlers={"state": ocp.StandardCheckpointHandler(),
                                               "meta": ocp.JsonCheckpointHandler()})
    meta = {"record": {"history": [], "best": None}, "step": 1, "checksums": checkpoint.checksums(zeros)}
    old.save(1, args=ocp.args.Composite(state=ocp.args.StandardSave(zeros), meta=ocp.args.JsonSave(meta)))
    old.wait_until_finished()
    old.close()
    stored = sum(p.stat().st_size for p in (tmp_path / "old/checkpoints/latest/1/state").rglob("*")
                 if p.is_file())
    assert stored < 1_000_000, stored  # compressed
    ckpt = checkpoint.Checkpoints(tmp_path / "old")
    step, tree, _ = ckpt.restore_latest(jax.tree.map(jnp.ones_like, zeros))
    assert step == 1
    np.testing.assert_array_equal(tree["params"]["w"], zeros["params"]["w"])
    ckpt.close()


def test_non_finite_checkpoints_are_never_restored(tmp_path):
    ckpt = checkpoint.Checkpoints(tmp_path)
    ckpt.save_latest(1, _tree(1), {"history": [], "best": None})
    bad = _tree(2)
    bad["params"]["w"] = bad["params"]["w"].at[5].set(jnp.nan)
    ckpt.save_latest(2, bad, {"history": [], "best": None})  # as an older release could have
    step, _, _ = ckpt.restore_latest(_tree(0))
    assert step == 1
    ckpt.close()


def test_when_no_step_is_left_the_error_names_every_folder(tmp_path):
    ckpt = checkpoint.Checkpoints(tmp_path)
    for step in (1, 2):
        ckpt.save_latest(step, _tree(step), {"history": [], "best": None})
        flip_bytes(largest_data_file(tmp_path / f"checkpoints/latest/{step}"))
    with pytest.raises(checkpoint.CheckpointError, match=r"latest/2 \(.*latest/1 \("):
        ckpt.restore_latest(_tree(0))
    ckpt.close()


def test_the_selected_step_is_read_from_latest_when_best_is_damaged_else_refused(tmp_path):
    ckpt = checkpoint.Checkpoints(tmp_path)
    best = {"step": 2, "srcc": 0.5, "plcc": 0.5}
    for step in (1, 2):
        if step == 2:
            ckpt.save_best(2, {"params": _tree(2)["params"]}, best)
        ckpt.save_latest(step, _tree(step), {"history": [], "best": best if step == 2 else None})
    flip_bytes(largest_data_file(tmp_path / "checkpoints/best/2"))
    step, params, how = ckpt.restore_selected({"params": _tree(0)["params"]})
    assert (step, how) == (2, "best")
    np.testing.assert_array_equal(params["w"], _tree(2)["params"]["w"])
    ckpt.save_latest(3, _tree(3), {"history": [], "best": best})
    ckpt.save_latest(4, _tree(4), {"history": [], "best": best})  # latest/2 is gone now
    with pytest.raises(checkpoint.CheckpointError, match="selected checkpoint .*best/2 is unusable"):
        ckpt.restore_selected({"params": _tree(0)["params"]})
    ckpt.close()


def test_readers_move_nothing_and_pick_no_other_step(tmp_path):
    """Evaluation, export and predict (create=False) report a damaged step and change nothing: moving
    it aside and falling back is the training run's decision."""
    writer = checkpoint.Checkpoints(tmp_path)
    for step in (1, 2):
        writer.save_latest(step, _tree(step), {"history": [], "best": None})
    writer.close()
    flip_bytes(largest_data_file(tmp_path / "checkpoints/latest/2"))
    reader = checkpoint.Checkpoints(tmp_path, create=False)
    with pytest.raises(checkpoint.CheckpointError, match=r"latest/2 is unusable .*nothing was changed"):
        reader.restore_latest(_tree(0))
    reader.close()
    assert sorted(p.name for p in (tmp_path / "checkpoints/latest").iterdir()) == ["1", "2"]
    assert not (tmp_path / "checkpoints/corrupt").exists()


def test_another_models_checkpoint_is_refused_as_a_mismatch_not_moved_as_damage(tmp_path):
    """A config that builds another parameter tree (e.g. another train.freeze_backbone) is the
    user's mismatch: named, and the run's checkpoints stay where they are, for readers and writers."""
    ckpt = checkpoint.Checkpoints(tmp_path)
    ckpt.save_latest(1, _tree(1), {"history": [], "best": None})
    other = _tree(0)
    other["params"]["extra"] = jnp.zeros(2)
    for create in (False, True):
        ckpt = checkpoint.Checkpoints(tmp_path, create=create)
        with pytest.raises(checkpoint.ModelMismatchError, match=r"latest/1 holds another model's arrays"):
            ckpt.restore_latest(other)
        ckpt.close()
    assert [p.name for p in (tmp_path / "checkpoints/latest").iterdir()] == ["1"]
    assert not (tmp_path / "checkpoints/corrupt").exists()


def test_a_run_whose_every_step_was_moved_aside_does_not_restart_from_scratch(tmp_path):
    ckpt = checkpoint.Checkpoints(tmp_path)
    best = {"step": 1, "srcc": 0.5, "plcc": 0.5}
    ckpt.save_best(1, {"params": _tree(1)["params"]}, best)
    ckpt.save_latest(1, _tree(1), {"history": [], "best": best})
    flip_bytes(largest_data_file(tmp_path / "checkpoints/latest/1"))
    with pytest.raises(checkpoint.CheckpointError, match="no usable checkpoint left"):
        ckpt.restore_latest(_tree(0))
    ckpt.close()
    again = checkpoint.Checkpoints(tmp_path)  # the rerun finds latest/ empty
    assert again.latest.all_steps() == []
    with pytest.raises(checkpoint.CheckpointError, match=r"moved to .*corrupt .*latest-1-"):
        again.discard_unrecorded()
    assert again.best.all_steps() == [1]  # the run's selected model is kept
    again.close()


def test_a_nan_validation_never_stays_the_best():
    assert train._rank(float("nan")) < train._rank(-1.0) < train._rank(0.2)
    assert train._rank(0.3) == 0.3


def test_a_best_step_saved_without_its_record_is_not_selected(tmp_path):
    """Killed after saving a new best but before the latest checkpoint that records it: the
    record still names the previous best, and that is what is restored."""
    ckpt = checkpoint.Checkpoints(tmp_path)
    first = {"step": 1, "srcc": 0.3, "plcc": 0.3}
    ckpt.save_best(1, {"params": _tree(1)["params"]}, first)
    ckpt.save_latest(1, _tree(1), {"history": [], "best": first})
    ckpt.save_best(2, {"params": _tree(2)["params"]}, {"step": 2, "srcc": 0.9, "plcc": 0.9})
    step, params, _ = ckpt.restore_selected({"params": _tree(0)["params"]})
    assert step == 1
    np.testing.assert_array_equal(params["w"], _tree(1)["params"]["w"])
    ckpt.close()


# A training run falling back past a damaged step and rebuilding best.json: on the stopped and
# resumed run of tests/test_train.py (test_stopped_resumed_and_damaged_runs_end_where_...).


# ------------------------------------------------------------------------------ non-finite state


@pytest.mark.slow
def test_non_finite_parameters_are_never_saved_and_the_error_names_the_step(kadid_root, tmp_path):
    config = tiny_config(kadid_root, steps_per_epoch=1)
    config.optim.lr = 1e39  # inf in float32: the first update makes the parameters non-finite
    config.data.select_part = ""
    with pytest.raises(train.NonFiniteError, match="^step 1: the parameters or optimizer state"):
        train.train_and_evaluate(config, tmp_path)
    assert not list((tmp_path / "checkpoints/latest").iterdir())


# ------------------------------------------------------------------------------ one run per workdir


def test_a_second_run_on_a_workdir_in_use_is_refused_at_once(kadid_root, tmp_path):
    with lock.exclusive(tmp_path):
        start = time.monotonic()
        out = subprocess.run([sys.executable, "main.py", "--config", "configs/base.py:tiny",
                              "--workdir", str(tmp_path), f"--config.data.root={kadid_root}"],
                             cwd=REPO, capture_output=True, text=True, timeout=300)
        elapsed = time.monotonic() - start
    assert out.returncode == 1 and elapsed < 60, (out.returncode, elapsed, out.stderr[-2000:])
    assert out.stderr.count("\n") == 1 and f"is in use by another run (pid {os.getpid()}" in out.stderr
    assert not (tmp_path / "metrics.jsonl").exists() and not (tmp_path / "checkpoints").exists()


def test_a_killed_run_leaves_no_stale_lock(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from absl import flags; flags.FLAGS.mark_as_parsed()\n"
        "from bpclip_jax import lock\n"
        f"with lock.exclusive({str(tmp_path)!r}):\n    print('held', flush=True); time.sleep(600)")],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(WorkdirError, match=f"pid {holder.pid} on "), lock.exclusive(tmp_path):
        pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with lock.exclusive(tmp_path):
        assert lock.holder(tmp_path) is not None  # ours
    assert lock.holder(tmp_path) is None


@pytest.mark.slow
def test_evaluation_of_a_workdir_in_use_is_refused_at_once(trained, tmp_path):
    """Evaluation writes results.json and metrics.jsonl, which the training run on the workdir
    writes too: it waits for no one and overwrites nothing."""
    workdir = own_copy(trained[0], tmp_path / "run")  # the session's run stays unlocked for others
    before = (workdir / "results.json").read_text()
    with lock.exclusive(workdir), pytest.raises(WorkdirError, match="is in use by another run"):
        train.evaluate_workdir(None, workdir)
    assert (workdir / "results.json").read_text() == before


def test_init_from_reads_the_other_runs_best_step_even_when_latest_no_longer_keeps_it(tmp_path):
    """`init_from` takes the selected (best) parameters of another run, read-only: here its best
    step 1 is long gone from latest/ (which keeps 2 and 3)."""
    def state(value: float) -> train.TrainState:
        return train.TrainState(step=jnp.int32(int(value)), params=_tree(value)["params"],
                                frozen={"f": jnp.full(2, value)}, opt_state={"mu": jnp.full(3, value)})

    source = checkpoint.Checkpoints(tmp_path / "source")
    source.save_frozen(state(7).frozen)
    best = {"step": 1, "srcc": 0.9, "plcc": 0.9}
    source.save_best(1, {"params": state(1).params}, best)
    for step in (1, 2, 3):
        source.save_latest(step, state(step).resumable(), {"history": [], "best": best})
    source.close()
    assert sorted(p.name for p in (tmp_path / "source/checkpoints/latest").iterdir()) == ["2", "3"]
    started = train._init_from(str(tmp_path / "source"), state(0))
    np.testing.assert_array_equal(started.params["w"], state(1).params["w"])
    np.testing.assert_array_equal(started.frozen["f"], state(7).frozen["f"])
    assert int(started.step) == 0 and not (tmp_path / "source/checkpoints/corrupt").exists()
