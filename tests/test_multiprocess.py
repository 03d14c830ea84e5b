"""Multi-process data parallel, checked against one process: 2 processes x 2 CPU devices (real
cross-process collectives over gloo) train the tiny config as 1 process x 4 devices does, read
disjoint shards, survive the death of a process, and their checkpoints restore either way.

Every process is started the way a cluster launcher starts it: the standard JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES and JAX_PROCESS_ID variables (scripts/launch_local.sh, or by hand here)."""

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bpclip_jax import train
from tests.runs import tiny_config

REPO = Path(__file__).parent.parent
HEARTBEAT_S = 10
# Adam's first updates are about lr * sign(g): a gradient entry that is float noise (summed in
# another order by another all-reduce) moves its parameter by +-lr either way, and a tiny random
# model amplifies that into 1% losses within 5 steps. eps = 1e-3 damps updates of gradients below
# it (as the 8-device check uses SGD), so the comparison sees the sharded program, not that chaos.
# The cosine text head (the default) reads cosines of a freshly initialized image-to-text mapping,
# whose predictions on this tiny model differ by about 1e-3 between images: at the base lr of 1e-4
# the noise of a 4- against a 2-device reduction grew to 5e-4 in the test predictions by step 6
# (17% of their spread; validation SRCC 0.8 against 1.0), at lr 1e-5 to 2e-6 (0.15%).
DAMPED = ("optim.eps=1e-3", "optim.lr=1e-5")
MAIN_ARGS = ["--config", "configs/base.py:tiny", "--config.data.crop=16",
             *(f"--config.{d}" for d in DAMPED)]  # = the driver's


def _env(devices: int) -> dict:
    return {**os.environ, "JAX_PLATFORMS": "cpu", "BPCLIP_HEARTBEAT_TIMEOUT_S": str(HEARTBEAT_S),
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _processes(count: int, devices: int, command: list[str]) -> list[subprocess.Popen]:
    port, procs = _port(), []
    for i in range(count):
        env = _env(devices)
        if count > 1:
            env.update(JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES=str(count),
                       JAX_PROCESS_ID=str(i))
        procs.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    return procs


def _launch_local(count: int, devices: int, *args) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "scripts/launch_local.sh", str(count), *args], cwd=REPO,
                          env=_env(devices), capture_output=True, text=True, timeout=900)


def _results(workdir: Path) -> dict:
    return json.loads((workdir / "results.json").read_text())


def _losses(workdir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    losses = [(r["step"], r["train/loss"]) for r in rows if "train/loss" in r]
    assert len({s for s, _ in losses}) == len(losses), "a step logged twice"
    return dict(losses)


def _assert_same_results(a: dict, b: dict) -> None:
    assert a["selection"]["step"] == b["selection"]["step"]
    assert a.keys() == b.keys()
    for name in a:
        for key, value in a[name].items():
            if isinstance(value, float):
                assert b[name][key] == pytest.approx(value, rel=1e-3, abs=1e-4, nan_ok=True), (name, key)


@pytest.fixture(scope="module")
def one_process(kadid_root, tmp_path_factory):
    """The reference: 1 process x 4 devices."""
    workdir = tmp_path_factory.mktemp("one_process")
    (proc,) = _processes(1, 4, [sys.executable, "-m", "tests.fault_driver", str(workdir),
                                str(kadid_root), "none", *DAMPED])
    out = proc.communicate(timeout=900)[0]
    assert proc.returncode == 0, out[-3000:]
    return workdir


@pytest.mark.slow
def test_two_processes_train_as_one_survive_a_death_and_resume_exactly(one_process, kadid_root, tmp_path):
    # Process 1 dies before step 4: process 0 must stop within the heartbeat timeout, naming it.
    p0, p1 = _processes(2, 2, [sys.executable, "-m", "tests.fault_driver", str(tmp_path), str(kadid_root),
                               "step:4:1", *DAMPED])
    out1 = p1.communicate(timeout=900)[0]
    died = time.monotonic()
    out0 = p0.communicate(timeout=HEARTBEAT_S + 120)[0]
    assert p1.returncode == -9, out1[-2000:]
    assert p0.returncode != 0 and time.monotonic() - died < HEARTBEAT_S + 60, out0[-3000:]
    assert re.search(r"Task 1 heartbeat timeout|stopped sending heartbeats\):\s*1\b", out0), out0[-3000:]
    # The same command, all processes again: resumes from step 3 and ends as one process does.
    out = _launch_local(2, 2, *MAIN_ARGS, f"--workdir={tmp_path}", f"--config.data.root={kadid_root}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "[0] step 6 (epoch 2): val SRCC" in out.stdout and "[1] step 6" not in out.stdout
    _assert_same_results(_results(one_process), _results(tmp_path))
    reference, losses = _losses(one_process), _losses(tmp_path)
    assert losses.keys() == reference.keys() == set(range(1, 7))
    for step, loss in reference.items():
        assert losses[step] == pytest.approx(loss, rel=1e-4), step
    # Written once: one latest step per checkpoint, one frozen part, one best.
    ckpts = tmp_path / "checkpoints"
    assert sorted(p.name for p in (ckpts / "latest").iterdir()) == ["3", "6"]
    assert [p.name for p in (ckpts / "frozen").iterdir()] == ["0"]
    # ... and they restore in one process (the model from the run's own config.json).
    evaluated = subprocess.run([sys.executable, "main.py", "--mode", "eval", "--workdir", str(tmp_path)],
                               cwd=REPO, env=_env(1), capture_output=True, text=True, timeout=600)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    _assert_same_results(_results(one_process), _results(tmp_path))


@pytest.mark.slow
def test_one_process_checkpoints_restore_in_two_processes(one_process):
    before = _results(one_process)
    out = _launch_local(2, 2, "--mode=eval", f"--workdir={one_process}")
    assert out.returncode == 0, out.stderr[-3000:]
    _assert_same_results(before, _results(one_process))


def test_processes_read_disjoint_shards_that_together_are_every_record(kadid_root):
    import data_pipelines

    config = tiny_config(kadid_root)
    records = data_pipelines.split(data_pipelines.load("kadid10k", kadid_root), (6, 2, 2), 0)["train"]
    whole = iter(train.train_stream(config, records, (0, 1)))
    shards = [iter(train.train_stream(config, records, (i, 2))) for i in range(2)]
    steps_per_epoch = len(records) // config.data.batch_size
    for _epoch in range(2):
        seen = [[], []]
        for _ in range(steps_per_epoch):
            parts = [next(s) for s in shards]
            batch = next(whole)
            for key in batch:  # the global batch: the same records, crops and flips
                np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), batch[key])
            for i, part in enumerate(parts):
                seen[i] += [bytes(x) for x in part["dist"]]
        assert len(seen[0]) == len(seen[1]) == len(records) // 2
        assert not set(seen[0]) & set(seen[1])  # no crop of process 0 is one of process 1's
