"""Preemption (SIGTERM, what SLURM and Colab send) and failed starts: a run stopped by a signal
writes a checkpoint of the step in flight and exits with code 75 within seconds; the same command
resumes and ends as an unstopped run, logs included. A run that fails before its first step leaves
the workdir as it found it."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bpclip_jax import lock, train
from bpclip_jax.preempt import EXIT_PREEMPTED
from data_pipelines.records import DataError
from tests.runs import assert_ends_as, own_copy, tiny_config

REPO = Path(__file__).parent.parent
LOG_EVERY = ("train.log_every=2",)  # steps 1, 5 end between log rows: their metrics travel in the checkpoint
STOP_WITHIN_S = 30  # SLURM's default grace between SIGTERM and SIGKILL


def _drive(workdir: Path, root: Path, point: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tests.fault_driver", str(workdir), str(root), point,
                           *LOG_EVERY], cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def unstopped(kadid_root, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("unstopped")
    out = _drive(workdir, kadid_root, "none")
    assert out.returncode == 0, out.stderr[-3000:]
    return workdir


def _latest_steps(workdir: Path) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints/latest").iterdir() if p.name.isdigit())


def _rerun_ends_as_unstopped(workdir: Path, root: Path, unstopped: Path) -> None:
    """The same command, unstopped now, ends with the unstopped run's results.json, selection and
    train/val/test log rows, and no temporary checkpoint left."""
    out = _drive(workdir, root, "none")
    assert out.returncode == 0, out.stderr[-3000:]
    assert_ends_as(workdir, unstopped)
    assert not list((workdir / "checkpoints/latest").glob("*tmp*"))


@pytest.mark.slow
def test_sigterm_in_a_step_in_validation_and_in_a_checkpoint_write_loses_no_step(unstopped, kadid_root,
                                                                                tmp_path):
    """SIGTERM while step 1 runs (between log rows), in the validation after step 3, and while the
    last epoch's checkpoint is written: each time the run saves the step it was in (none lost)
    and exits 75 within seconds; the reruns end with the unstopped run's results.json,
    selection and log rows."""
    stops = {"term@step:1": 1, "term@validate": 3, "term@save:latest:6": 6}
    for point, step in stops.items():
        out = _drive(tmp_path, kadid_root, point)
        ended = time.time()
        assert out.returncode == EXIT_PREEMPTED, (point, out.returncode, out.stderr[-3000:])
        sent = float(re.search(r"SIGTERM at ([0-9.]+)", out.stderr).group(1))
        assert ended - sent < STOP_WITHIN_S, (point, ended - sent)
        last = out.stderr.strip().splitlines()[-1]
        assert last.startswith("stopped: stopped by ") and f"latest/{step} holds" in last, last
        assert _latest_steps(tmp_path)[-1] == step, point  # the step in flight was saved
        assert not (tmp_path / "results.json").exists()
    _rerun_ends_as_unstopped(tmp_path, kadid_root, unstopped)


@pytest.mark.slow
def test_sigterm_in_the_last_step_and_in_the_test_loses_nothing(unstopped, kadid_root, tmp_path):
    """SIGTERM during the run's last step (an epoch end, before its validation), then during the
    final test: the first rerun has no step left to train but must still validate step 6 before
    selecting, the second redoes the test; the rerun ends as the unstopped run, log rows included."""
    out = _drive(tmp_path, kadid_root, "term@step:6")
    assert out.returncode == EXIT_PREEMPTED, out.stderr[-3000:]
    assert "latest/6 holds" in out.stderr.strip().splitlines()[-1], out.stderr[-2000:]
    out = _drive(tmp_path, kadid_root, "term@test")
    assert out.returncode == EXIT_PREEMPTED, out.stderr[-3000:]
    assert "step 6 (epoch 2): val SRCC" in out.stdout + out.stderr  # the validation it had missed
    assert not (tmp_path / "results.json").exists()
    _rerun_ends_as_unstopped(tmp_path, kadid_root, unstopped)


def test_a_second_signal_stops_at_once():
    from bpclip_jax.preempt import Preempted, Signals

    with Signals() as signals:
        os.kill(os.getpid(), signal.SIGTERM)  # the first is recorded, for the end of the step
        assert signals.received == signal.SIGTERM and signals.stop_requested(sync_point=False)
        with pytest.raises(Preempted) as stopped:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert stopped.value.exit_code == 130
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored


@pytest.mark.parametrize("before", ["absent", "empty", "with_a_file"])
def test_a_failed_start_leaves_the_workdir_as_it_found_it(kadid_root, tmp_path, before):
    """A bad data root stops the run before its first step: no lock file, no checkpoints/, no
    config.json, no folder that was not there."""
    workdir = tmp_path / "run"
    if before != "absent":
        workdir.mkdir()
    if before == "with_a_file":
        (workdir / "notes.txt").write_text("mine")
    listing = sorted(os.listdir(workdir)) if workdir.exists() else None
    config = tiny_config(tmp_path / "no_such_set")
    with pytest.raises(DataError):
        train.train_and_evaluate(config, workdir)
    assert (sorted(os.listdir(workdir)) if workdir.exists() else None) == listing
    if before == "with_a_file":
        assert (workdir / "notes.txt").read_text() == "mine"


@pytest.mark.slow  # it needs the session's trained run
def test_a_failed_start_on_a_resumable_run_keeps_everything(trained, kadid_root, tmp_path):
    """A run with checkpoints that fails at its restart (here: another config) changes nothing."""
    reference, _ = trained
    workdir = own_copy(reference, tmp_path / "run")
    listing = sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*"))
    changed = tiny_config(kadid_root)
    changed.optim.lr = 1.0
    with pytest.raises(Exception, match="refusing to resume"):
        train.train_and_evaluate(changed, workdir)
    assert sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*")) == listing


def test_a_lock_file_removed_by_its_holder_is_not_shared(tmp_path, monkeypatch):
    """A process that opened the lock file before its holder removed it (a failed start) and locks
    it after the holder let go holds a lock on a file no longer there: it must lock the file that
    is there now, or two runs could hold 'the' lock at once."""
    with lock.exclusive(tmp_path) as held:
        stale = (tmp_path / lock.LOCK_FILE).open("a+")  # opened by a second process, not yet locked
        held.remove = True
    assert not (tmp_path / lock.LOCK_FILE).exists()
    real_open, opened = Path.open, []

    def open_stale_first(self, *args, **kwargs):
        if self.name == lock.LOCK_FILE and not opened:
            opened.append(self)
            return stale
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_stale_first)
    with lock.exclusive(tmp_path):
        monkeypatch.setattr(Path, "open", real_open)
        assert opened and stale.closed  # it let go of the removed file
        assert (tmp_path / lock.LOCK_FILE).exists() and lock.holder(tmp_path) is not None
        with pytest.raises(Exception, match="in use by another run"), lock.exclusive(tmp_path):
            pass
