"""A full disk: every write that fails for lack of space (a checkpoint, results.json and the test's
files, predict's CSV, an export) ends in one line naming the path, the bytes needed and free;
nothing saved before is lost or left half-written; once space is freed the same command finishes
as an unstopped run. On a real small filesystem (a tmpfs mounted for the test, filled with a
ballast file at the moment chosen), and by injecting ENOSPC where no mount is allowed."""

import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bpclip_jax import api, files, predict
from bpclip_jax.api import Scorer
from bpclip_jax.files import DiskFullError
from tests.fault_driver import fill_disk
from tests.runs import assert_ends_as, same_results

REPO = Path(__file__).parent.parent
ONE_LINE = re.compile(r"^error: (\S+): no space left on the device \(([0-9.]+ [kMGT]?B) needed, "
                      r"([0-9.]+ [kMGT]?B) free there\); nothing saved before was lost")


@pytest.fixture
def small_fs(tmp_path):
    """A tmpfs of its own (mounted as root), so that filling it fills nothing else."""
    mount = tmp_path / "fs"
    mount.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3g", "tmpfs", str(mount)],
                         capture_output=True, text=True)
    if out.returncode:
        pytest.skip(f"mounting a tmpfs is not allowed here ({out.stderr.strip()}); the ENOSPC "
                    f"injection tests below cover the writers")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def _drive(workdir: Path, root: Path, point: str, ballast: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tests.fault_driver", str(workdir), str(root), point],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "BPCLIP_BALLAST": str(ballast)})


def _one_line(stderr: str) -> re.Match:
    assert "Traceback" not in stderr, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    match = ONE_LINE.match(last)
    assert match, last
    return match


@pytest.mark.slow
def test_a_full_disk_in_training_is_one_line_and_the_rerun_ends_as_an_unstopped_run(
        trained, kadid_root, small_fs):
    """The disk fills before the last epoch's step 6 (its log rows, validation or checkpoint find it
    full), while the last checkpoint is being written, and before the final test writes its files:
    each time one line naming the path, the bytes needed and the (no) bytes free; the earlier
    checkpoints verify and no half-written file or step is left. Space freed, the same command
    ends with the unstopped run's results.json and log rows."""
    reference, results = trained
    workdir, ballast = small_fs / "run", small_fs / "ballast"
    for point in ("fill@step:6", "fill@save:latest:6", "fill@test"):
        out = _drive(workdir, kadid_root, point, ballast)
        assert out.returncode == 1, (point, out.returncode, out.stderr[-3000:])
        path, needed, free = _one_line(out.stderr).groups()
        assert path.startswith(str(workdir)) and free.split()[0] in ("0", "0.0"), out.stderr[-500:]
        if point == "fill@test":
            assert path == str(workdir / "predictions_kadid10k_test.csv")
        if "checkpoints/latest/" in path:
            assert float(needed.split()[0]) > 100 and needed.endswith("MB")  # params + Adam's moments
        assert not list(workdir.rglob("*tmp*")), point
        assert not (workdir / "results.json").exists()
        ballast.unlink()  # space freed
        print(point, "->", out.stderr.strip().splitlines()[-1])
    assert sorted(int(p.name) for p in (workdir / "checkpoints/latest").iterdir()) == [3, 6]
    out = _drive(workdir, kadid_root, "none", ballast)
    assert out.returncode == 0, out.stderr[-3000:]
    assert same_results(json.loads((workdir / "results.json").read_text()), results)
    assert_ends_as(workdir, reference)


def _csv_rows(path: Path) -> list[dict]:
    import csv

    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _predict_cfg(root: Path, output: Path, **kw):
    """predict's config for every image of a KADID-format set, paired by its dmos.csv."""
    from configs import base

    cfg = base.get_config().predict
    cfg.update(inputs=str(root / "images"), refs=str(root / "dmos.csv"), output=str(output), **kw)
    return cfg


@pytest.mark.slow
def test_a_full_disk_while_predict_writes_keeps_every_row_and_resume_finishes(trained, small_fs,
                                                                            tmp_path, monkeypatch):
    """The disk fills after predict's first rows (40 images: the rows outgrow the CSV's last
    page, so a later append finds no space): one line naming the CSV; the rows written stay;
    a resume first needs space for its copy (one line again, the CSV as it was); space freed,
    the resume scores what is missing and every score equals a run that had space."""
    from tests import data_fixtures

    reference, _ = trained
    kadid_root = data_fixtures.kadid(tmp_path / "set", refs=10, per_ref=4)
    api.predict_command(_predict_cfg(kadid_root, small_fs / "all.csv"), reference)  # with space
    expected = {r["file"]: r["score"] for r in _csv_rows(small_fs / "all.csv")}

    output = small_fs / "predictions.csv"
    real_write, calls = predict.PredictionsFile.write, []

    def write_then_fill(self, rows):
        calls.append(1)
        if len(calls) == 2:  # the disk fills after the first batch's rows
            fill_disk(str(small_fs / "ballast"))
        return real_write(self, rows)

    monkeypatch.setattr(predict.PredictionsFile, "write", write_then_fill)
    cfg = _predict_cfg(kadid_root, output, batch_size=4)
    with pytest.raises(DiskFullError) as err:
        api.predict_command(cfg, reference)
    assert ONE_LINE.match(f"error: {err.value}") and str(err.value).startswith(f"{output}: ")
    kept = _csv_rows(output)
    assert kept and all(expected[r["file"]] == r["score"] for r in kept if r["score"])
    monkeypatch.setattr(predict.PredictionsFile, "write", real_write)

    cfg.resume = True  # a resume needs space for its copy of the kept rows: one line again
    with pytest.raises(DiskFullError, match=re.escape(str(output))):
        api.predict_command(cfg, reference)
    assert _csv_rows(output) == kept  # the CSV as it was
    (small_fs / "ballast").unlink()
    api.predict_command(cfg, reference)
    rows = _csv_rows(output)
    assert {r["file"]: r["score"] for r in rows} == expected


@pytest.mark.slow  # needs the trained run
def test_a_full_disk_in_an_export_names_the_file_and_leaves_no_part(trained, small_fs):
    reference, _ = trained
    scorer = Scorer.from_workdir(reference)
    target = small_fs / "model"
    scorer.export(target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    fill_disk(str(small_fs / "ballast"))
    with pytest.raises(DiskFullError) as err:
        scorer.export(target)
    path, needed, _ = ONE_LINE.match(f"error: {err.value}").groups()
    assert path == str(target / "model.safetensors") and needed.endswith("MB")
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before  # the old export, whole


# ------------------------------------------------------------------------------ injected ENOSPC


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_an_injected_enospc_in_an_atomic_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    target.write_text("old")
    real_write = Path.write_bytes

    def half_then_full(self, data):
        real_write(self, data[:3])
        _enospc()

    monkeypatch.setattr(Path, "write_bytes", half_then_full)
    with pytest.raises(DiskFullError, match=r"results.json: no space left on the device \(5 B needed, "):
        files.atomic_write(target, "fresh")
    monkeypatch.undo()
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_orbax_reports_a_full_disk_as_a_value_error_that_is_recognized():
    orbax_says = ValueError('RESOURCE_EXHAUSTED: Error writing "a/0.0" in OCDBT database: Failed to write '
                           '1290240 bytes to file 14: No space left on device [os_error_code=\'28\']')
    assert files.is_disk_full(orbax_says) and files.is_disk_full(OSError(errno.EDQUOT, "quota"))
    assert not files.is_disk_full(ValueError("shape mismatch"))
    try:
        try:
            raise OSError(errno.ENOSPC, "full")
        except OSError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert files.is_disk_full(outer)


def test_an_injected_enospc_in_a_checkpoint_write_removes_the_partial_step(tmp_path, monkeypatch):
    import jax.numpy as jnp
    import orbax.checkpoint as ocp

    from bpclip_jax import checkpoint

    ckpt = checkpoint.Checkpoints(tmp_path)
    try:
        ckpt.save_latest(1, {"w": jnp.arange(1000.0)}, {"history": [], "best": None})
        real_save = ocp.CheckpointManager.save

        def save_half(self, step, *args, **kwargs):
            (Path(self.directory) / f"{step}.orbax-checkpoint-tmp-9").mkdir()
            raise ValueError("RESOURCE_EXHAUSTED: ... No space left on device [os_error_code='28']")

        monkeypatch.setattr(ocp.CheckpointManager, "save", save_half)
        with pytest.raises(DiskFullError, match=r"latest/2: no space left on the device \(4.0 kB needed"):
            ckpt.save_latest(2, {"w": jnp.arange(1000.0)}, {"history": [], "best": None})
        monkeypatch.setattr(ocp.CheckpointManager, "save", real_save)
        assert sorted(p.name for p in (tmp_path / "checkpoints/latest").iterdir()) == ["1"]
        assert ckpt.restore_latest({"w": jnp.zeros(1000)})[0] == 1
    finally:
        ckpt.close()


def test_writer_threads_are_quiet_after_a_full_disk_and_heard_otherwise(capfd):
    """What threads print to stderr while a checkpoint is written: passed on when the write
    succeeds; dropped, once they have gone quiet, when it failed for lack of space (orbax's
    concurrent writers each print a traceback after the first one fails)."""
    import threading
    import time

    def late_writer(text):
        time.sleep(0.3)  # after the block has failed
        os.write(2, text)

    with files.quiet_writer_threads(settle_s=0.5):
        os.write(2, b"a library's warning\n")
    assert capfd.readouterr().err == "a library's warning\n"
    with pytest.raises(OSError), files.quiet_writer_threads(settle_s=0.5):
        threading.Thread(target=late_writer, args=(b"Traceback: Event loop is closed\n",)).start()
        raise OSError(errno.ENOSPC, "No space left on device")
    assert capfd.readouterr().err == ""
    with pytest.raises(ValueError), files.quiet_writer_threads(settle_s=0.5):
        os.write(2, b"an unrelated failure's output\n")
        raise ValueError("not a full disk")
    assert capfd.readouterr().err == "an unrelated failure's output\n"
