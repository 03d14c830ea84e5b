"""The protocol launcher: split commands that parse back to the launcher's configs, devices, the
table; then on the tiny KADID fixture, real runs: a killed launcher resumes, --parallel 2 writes
--parallel 1's table, a failing split is retried once, reported, and missing from the table."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from bpclip_jax import lock, protocol, run_config
from bpclip_jax.errors import UserError
from bpclip_jax.preempt import EXIT_PREEMPTED
from configs import base
from tests import data_fixtures

REPO = Path(__file__).resolve().parent.parent


def parse(argv: list[str], define) -> flags.FlagValues:
    flag_values = flags.FlagValues()
    define(flag_values, ["prog", *argv])
    flag_values(["prog", *argv])
    return flag_values


def define_main_flags(flag_values, sys_argv):
    """main.py's --config and --workdir, as a split's process parses them."""
    config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values, lock_config=True,
                                    sys_argv=sys_argv)
    flags.DEFINE_string("workdir", None, "", flag_values=flag_values)


# ------------------------------------------------------------------------------ without training


def test_split_commands_parse_back_to_the_configs_the_launcher_means(tmp_path):
    argv = [f"--config={REPO}/configs/kadid_fr.py:tiny", "--config.optim.lr=3e-5",
            "--config.data.ratios=(8, 2)", "--config.data.root=/data/with space", "--noconfig.data.flips",
            "--config.model.progressive", "--variants=progressive", f"--workdir={tmp_path}"]
    launcher = parse(argv, protocol.define_flags)
    runs = protocol.variants(launcher.config, launcher.variants)
    assert runs == {"base": {"progressive": True}, "progressive_false": {"progressive": False}}
    jobs = protocol.plan(launcher.config, launcher["config"].serialize(), protocol.overrides(launcher),
                         tmp_path, range(2), runs)
    assert [(j.variant, j.seed, j.workdir) for j in jobs] == [
        ("base", 0, tmp_path / "base/split_0"), ("base", 1, tmp_path / "base/split_1"),
        ("progressive_false", 0, tmp_path / "progressive_false/split_0"),
        ("progressive_false", 1, tmp_path / "progressive_false/split_1")]
    for job in jobs:
        child = parse(list(job.args), define_main_flags)
        assert child.workdir == str(job.workdir)
        assert child.config.to_dict() == job.config.to_dict()
        c = child.config
        assert (c.optim.lr, c.data.ratios, c.data.root) == (3e-5, (8, 2), "/data/with space")
        assert c.data.flips is False
        assert (c.data.split_seed, c.model.progressive) == (job.seed, job.variant == "base")
        assert c.data.crop == base.get_config("tiny").data.crop  # the :tiny argument went along


def test_a_split_seed_override_is_refused(tmp_path):
    argv = [f"--config={REPO}/configs/kadid_fr.py", "--config.data.split_seed=3", f"--workdir={tmp_path}"]
    launcher = parse(argv, protocol.define_flags)
    with pytest.raises(UserError, match="split_seed: the protocol sets it"):
        protocol.overrides(launcher)
    with pytest.raises(UserError, match=r"boolean model switch \(progressive, use_text\)"):
        protocol.variants(launcher.config, ["direction"])
    with pytest.raises(UserError, match="name=value for a choice"):
        protocol.variants(launcher.config, ["learn_rate=3"])


def test_a_choice_variant_sets_the_field_by_name():
    runs = protocol.variants(base.get_config("tiny"), ["text_head=softmax", "use_text"])
    assert runs == {"base": {"text_head": "cosine", "use_text": True},
                    "text_head_softmax": {"text_head": "softmax", "use_text": True},
                    "use_text_false": {"text_head": "cosine", "use_text": False}}


def test_gpus_come_from_the_flag_the_environment_or_nvidia_smi(tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 (UUID: GPU-a)'\n"
                    "echo 'GPU 1: NVIDIA H100 (UUID: GPU-b)'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert protocol.visible_gpus(None) == ["0", "1"]
    assert protocol.visible_gpus(["5"]) == ["5"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,6")  # what SLURM gives a job: these, not all
    assert protocol.visible_gpus(None) == ["3", "6"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert protocol.visible_gpus(None) == []
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi: the CPU
    assert protocol.visible_gpus(None) == []


def test_slots_share_the_gpus_equally_or_run_on_the_cpu():
    gpus = [str(i) for i in range(8)]
    env = lambda parallel: [s.env for s in protocol.slots(gpus, parallel, 16)]  # noqa: E731
    assert env(8) == [{"CUDA_VISIBLE_DEVICES": str(i)} for i in range(8)]
    assert env(2) == [{"CUDA_VISIBLE_DEVICES": "0,1,2,3"}, {"CUDA_VISIBLE_DEVICES": "4,5,6,7"}]
    assert env(3) == [{"CUDA_VISIBLE_DEVICES": "0,1"}, {"CUDA_VISIBLE_DEVICES": "2,3"},
                      {"CUDA_VISIBLE_DEVICES": "4,5"}]
    assert [s.env for s in protocol.slots([], 2, 16)] == [{"JAX_PLATFORMS": "cpu"}] * 2
    with pytest.raises(UserError, match="--parallel 3 needs a GPU per split, 2 are visible"):
        protocol.slots(["0", "1"], 3, 16)
    with pytest.raises(UserError, match="batch_size=16 does not divide over 3 GPUs"):
        protocol.slots([str(i) for i in range(6)], 2, 16)


def write_results(workdir: Path, srcc: float, how: str) -> None:
    workdir.mkdir(parents=True)
    metrics = {"plcc": srcc + 0.01, "srcc": srcc, "plcc_logistic": srcc + 0.02, "krcc": srcc - 0.1,
               "rmse": 1 - srcc, "n": 8}
    (workdir / "results.json").write_text(json.dumps(
        {"selection": {"step": 10, "how": how, "val_srcc": 0.9, "val_plcc": 0.9}, "kadid10k/test": metrics}))


def test_table_gives_means_selection_and_missing_splits_per_variant(tmp_path):
    config = base.get_config("tiny")
    runs = protocol.variants(config, ["progressive"])
    jobs = protocol.plan(config, "--config=configs/kadid_fr.py:tiny", {}, tmp_path, range(3), runs)
    held_out, on_test = "best kadid10k/val SRCC", \
        "best kadid10k/test SRCC: selected on test, optimistic (the pyiqa/TOPIQ practice)"
    base_srcc, flipped_srcc = [0.80, 0.90], [0.70, 0.74, 0.78]
    for job, srcc in zip(jobs[:2], base_srcc):
        write_results(job.workdir, srcc, held_out)
    for job, srcc in zip(jobs[3:], flipped_srcc):
        write_results(job.workdir, srcc, on_test)
    paper = {"kadid10k/test": (.964, .963)}
    table = protocol.summarize(jobs, {jobs[2]: "failed 2 times (exit code 1)"}, paper, runs)
    assert table["base"]["done"] == [0, 1] and table["base"]["missing"] == {2: "failed 2 times (exit code 1)"}
    got = table["progressive_true"]["sets"]["kadid10k/test"]
    assert got["srcc"] == pytest.approx((np.mean(flipped_srcc), np.std(flipped_srcc), 3))
    assert got["plcc"][0] == pytest.approx(np.mean(flipped_srcc) + 0.01)
    assert table["base"]["sets"]["kadid10k/test"]["srcc"] == pytest.approx((0.85, 0.05, 2))
    text = protocol.markdown(table, "kadid_fr:tiny", 3)
    rows = [line for line in text.splitlines() if line.startswith("| kadid10k/test")]
    assert rows[0].startswith("| kadid10k/test | base | 2 of 3 | 0.8600 ± 0.0500 | 0.8500 ± 0.0500 |")
    assert rows[0].endswith("| 0.964 / 0.963 | best kadid10k/val SRCC |")
    assert rows[1].startswith("| kadid10k/test | progressive_true | 3 of 3 |")
    assert rows[1].endswith(f"| **{on_test}** |")  # bold next to the numbers
    assert "**Missing** (base), not in the means: split 2: failed 2 times (exit code 1)" in text
    assert "**Selected on test: optimistic** (progressive_true). The checkpoint" in text
    assert "Selected on test: optimistic** (base)" not in text
    assert "- base: model.progressive=False" in text and "- progressive_true: model.progressive=True" in text


def test_a_split_of_another_config_is_refused(tmp_path):
    config = base.get_config("tiny")
    jobs = protocol.plan(config, "--config=configs/kadid_fr.py:tiny", {}, tmp_path, range(2), {"": {}})
    for job in jobs:
        job.workdir.mkdir()
        run_config.write(job.config, job.workdir)
    config.data.threads = 7  # runtime fields may differ
    protocol.check_configs(protocol.plan(config, "", {}, tmp_path, range(2), {"": {}}))
    config.optim.lr = 3e-5
    with pytest.raises(UserError, match=r"split_0 holds a run of another config \(optim.lr: 0.0001 there, "
                                        r"3e-05 now\)"):
        protocol.check_configs(protocol.plan(config, "", {}, tmp_path, range(2), {"": {}}))


def test_progress_is_read_from_metrics_jsonl_as_it_grows_and_after_a_rewrite(tmp_path):
    config = base.get_config("tiny")  # 2 epochs
    path = tmp_path / "metrics.jsonl"
    tail = protocol.MetricsTail(path)
    tail.update()
    assert tail.describe(config) == "starting"
    path.write_text('{"step": 3, "train/loss": 0.5, "train/epoch": 1.0}\n{"step": 3, "val/srcc": 0.5}\n'
                    '{"step": 4, "train/lo')  # a row cut mid-write: read when it is whole
    tail.update()
    assert tail.describe(config) == "step 3/6 (epoch 1.0 of 2), val SRCC 0.5000 (best 0.5000)"
    with path.open("a") as f:
        f.write('ss": 0.4, "train/epoch": 1.3333}\n{"step": 6, "val/srcc": 0.25}\n')
    tail.update()
    assert tail.describe(config) == "step 6/6 (epoch 2.0 of 2), val SRCC 0.2500 (best 0.5000)"
    path.write_text('{"step": 3, "train/loss": 0.5, "train/epoch": 1.0}\n')  # a resumed run's rewrite
    tail.update()
    assert tail.describe(config) == "step 3/6 (epoch 1.0 of 2)"


# ------------------------------------------------------------------------------ real runs


@pytest.fixture(scope="module")
def launch(tmp_path_factory):
    """launch(workdir, *flags) -> the protocol's process on the tiny config (2 one-step epochs) over
    3 splits of a 10-reference KADID fixture; its children share the session's XLA compilation
    cache (tests/conftest.py)."""
    root = data_fixtures.kadid(tmp_path_factory.mktemp("kadid"), refs=10, per_ref=4)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}

    def launch(workdir: Path, *more: str) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "bpclip_jax.protocol", "--config=configs/kadid_fr.py:tiny",
               f"--workdir={workdir}", "--splits=3", f"--config.data.root={root}", "--config.data.crop=16",
               "--config.train.steps_per_epoch=1", "--config.optim.epochs=2",
               "--config.train.freeze_backbone=True", *more]
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)

    return launch


def finish(process: subprocess.Popen, timeout: float = 900) -> tuple[int, str]:
    out, _ = process.communicate(timeout=timeout)
    return process.returncode, out


def wait_for(condition, timeout: float = 600, what: str = "") -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def sequential(launch, tmp_path_factory):
    """--parallel 1, its launcher killed (SIGKILL) once split 1 has checkpointed its first of two
    epochs, then started again: (workdir, the first launcher's output, the second's)."""
    workdir = tmp_path_factory.mktemp("parallel_1")
    first = launch(workdir, "--parallel=1")
    split_1 = workdir / "split_1"
    wait_for(lambda: (split_1 / "checkpoints" / "latest" / "1").is_dir() or first.poll() is not None,
             what="split 1's first checkpoint")
    assert first.poll() is None, first.communicate()[0]
    first.kill()
    first_out = first.communicate()[0]
    wait_for(lambda: lock.holder(split_1) is None, timeout=30, what="the killed launcher's split to end")
    assert (workdir / "split_0" / "results.json").is_file() and not (split_1 / "results.json").exists()
    code, second_out = finish(launch(workdir, "--parallel=1"))
    assert code == 0, second_out
    return workdir, first_out, second_out


@pytest.mark.slow
def test_a_killed_launcher_leaves_no_split_running_and_resumes(sequential):
    workdir, first_out, second_out = sequential
    assert "split 1: started" in first_out and "split 2" not in first_out
    assert "1 of 3 splits are done already" in second_out
    assert "split 0: started" not in second_out  # done: only read
    log_1 = (workdir / "split_1" / "log.txt").read_text()
    # the killed launcher's SIGTERM reached the split, which saved the step it was in (1 or 2)
    assert log_1.count("=== ") == 2 and re.search(r"resuming from .* at step [12]\b", log_1)
    assert (workdir / "split_0" / "log.txt").read_text().count("=== ") == 1
    table = json.loads((workdir / "table.json").read_text())["runs"][""]
    assert table["done"] == [0, 1, 2] and table["selection"] == ["best kadid10k/val SRCC"]


@pytest.fixture(scope="module")
def parallel_2(launch, tmp_path_factory):
    """--parallel 2, stopped by SLURM's SIGTERM (preemption, time limit) once split 1 has
    checkpointed its first epoch, then the same command again: (workdir, the first launcher's exit
    code, output and seconds from the signal to its exit, the second's exit code and output)."""
    workdir = tmp_path_factory.mktemp("parallel_2")
    first = launch(workdir, "--parallel=2")
    first_epoch = workdir / "split_1" / "checkpoints" / "latest" / "1"
    wait_for(lambda: first_epoch.is_dir() or first.poll() is not None, what="split 1's first checkpoint")
    assert first.poll() is None, first.communicate()[0]
    sent = time.monotonic()
    first.send_signal(signal.SIGTERM)
    code, out = finish(first)
    stopped = time.monotonic() - sent
    return workdir, (code, out, stopped), finish(launch(workdir, "--parallel=2"))


@pytest.mark.slow
def test_sigterm_to_the_launcher_checkpoints_every_running_split_and_exits_75(parallel_2):
    """The launcher passes the signal to the running splits, each saves its step in flight and
    exits 75, the launcher exits 75 within its grace; the same command then ends."""
    workdir, (code, out, stopped), (again, again_out) = parallel_2
    assert code == EXIT_PREEMPTED and stopped < protocol.STOP_GRACE_S + 5, (code, out)
    assert "stopping 2 running split(s)" in out and out.rstrip().splitlines()[-1].startswith("stopped: ")
    for split in ("split_0", "split_1"):
        log = (workdir / split / "log.txt").read_text()
        if log.count("=== ") == 2:  # it was running when the signal came (else it had ended)
            assert re.search(r"stopped: stopped by (a signal after step|SIGTERM)", log), log
        assert lock.holder(workdir / split) is None
    assert again == 0, again_out


@pytest.mark.slow
def test_parallel_2_writes_the_table_of_parallel_1(sequential, parallel_2):
    """Two splits at once, one per slot, and the table of the sequential protocol (both were
    stopped and resumed on the way: their tables are those of uninterrupted protocols, as
    test_sigterm_to_the_launcher... and test_a_killed_launcher... show)."""
    workdir, (_, first_out, _), (code, out) = parallel_2
    assert code == 0, out
    assert "split 0: started on cpu 0" in first_out and "split 1: started on cpu 1" in first_out
    table = (workdir / "table.md").read_text()
    assert "| kadid10k/test | 3 of 3 |" in table and "| best kadid10k/val SRCC |" in table
    assert table == (sequential[0] / "table.md").read_text()  # the resumed split 1 included
    assert table in out  # printed too


@pytest.mark.slow
def test_a_failing_split_is_retried_once_reported_and_missing_from_the_table(sequential, launch,
                                                                              tmp_path_factory):
    workdir = tmp_path_factory.mktemp("failing")
    for seed in (0, 1):  # done: only read
        shutil.copytree(sequential[0] / f"split_{seed}", workdir / f"split_{seed}")
    (workdir / "split_2").mkdir()
    (workdir / "split_2" / "checkpoints").write_text("a file where its checkpoint folder goes")
    code, out = finish(launch(workdir, "--parallel=2"))
    assert code == 1 and out.rstrip().splitlines()[-1].startswith("error: 1 split(s) have no results")
    assert out.count("split 2: FAILED (exit code 1") == 2 and "split 2: retrying" in out
    assert "split 2: left out of the table" in out
    assert "    | " in out  # the end of its log is shown
    assert (workdir / "split_2" / "log.txt").read_text().count("=== ") == 2
    table = (workdir / "table.md").read_text()
    assert "| kadid10k/test | 2 of 3 |" in table
    assert "**Missing**, not in the means: split 2: failed 2 times (exit code 1)" in table
    assert json.loads((workdir / "table.json").read_text())["runs"][""]["done"] == [0, 1]
