"""The tiny training config the run tests share (tests/conftest.py trains it once per session)."""

import json

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
