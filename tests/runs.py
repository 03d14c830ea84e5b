"""The tiny training config the run tests share (tests/conftest.py trains it once per session)."""

import json
import os
import shutil
from pathlib import Path

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
