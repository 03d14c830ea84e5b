"""The tiny training config the run tests share (tests/conftest.py trains it once per session)."""

from configs import base


def tiny_config(root, **train_overrides):
    """configs/base.py:tiny on a data root, crop 16: 12 training records, batch 4, 2 epochs."""
    config = base.get_config("tiny")
    config.data.root = str(root)
    config.data.crop = 16
    for key, value in train_overrides.items():
        config.train[key] = value
    return config
