"""What the run tests share: the tiny training config (tests/conftest.py trains it once per
session), copies of a run, the comparison of a rerun with an unstopped run, and checkpoint damage."""

import json
import os
import shutil
from pathlib import Path

import pytest

from configs import base


def tiny_config(root, **train_overrides):
    """configs/base.py:tiny on a data root, crop 16: 12 training records, batch 4, 2 epochs."""
    config = base.get_config("tiny")
    config.data.root = str(root)
    config.data.crop = 16
    for key, value in train_overrides.items():
        config.train[key] = value
    return config


def same_results(a: dict, b: dict) -> bool:
    """Equal results.json contents, NaN equal to NaN (a tiny test part's logistic fit is NaN, and
    NaN != NaN would make two identical runs differ)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def own_copy(workdir: Path, target: Path) -> Path:
    """A copy of a shared run (the session's `trained`) that a test may write to or lock: its
    checkpoints hard-linked (nothing writes into a saved step; a reader changes nothing), every
    other file copied."""
    def copy(src, dst):
        if "checkpoints" in Path(src).relative_to(workdir).parts:
            os.link(src, dst)
        else:
            shutil.copy2(src, dst)

    shutil.copytree(workdir, target, copy_function=copy)
    return target


def _rows(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _series(workdir: Path, prefix: str) -> dict[tuple[int, str], float]:
    """{(step, key): value} of metrics.jsonl, asserting that no (step, key) appears twice."""
    out = {}
    for row in _rows(workdir):
        for key, value in row.items():
            if key.startswith(prefix) and key != "train/pairs_per_s":
                assert (row["step"], key) not in out, f"step {row['step']} {key} logged twice"
                out[(row["step"], key)] = value
    return out


def assert_ends_as(workdir: Path, reference: Path) -> None:
    """`workdir` ended as the unstopped run in `reference`: its results.json, its selection and its
    train/val/test log rows (one per step and key)."""
    assert same_results(json.loads((workdir / "results.json").read_text()),
                        json.loads((reference / "results.json").read_text()))
    assert json.loads((workdir / "checkpoints/best.json").read_text()) == \
        json.loads((reference / "checkpoints/best.json").read_text())
    for prefix in ("train/", "val/", "test/"):
        resumed, unstopped = _series(workdir, prefix), _series(reference, prefix)
        assert resumed.keys() == unstopped.keys(), prefix
        for key, value in unstopped.items():
            assert resumed[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


def largest_data_file(step_dir: Path) -> Path:
    """The largest array file of a saved checkpoint step: what a damage test spoils."""
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    return max(files, key=lambda p: p.stat().st_size)


def flip_bytes(path: Path) -> None:
    """Flips 8 bytes a third of the way into a file (a bit flip on disk)."""
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 8):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
