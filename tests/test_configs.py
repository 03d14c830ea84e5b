"""Every experiment config loads, names a known dataset and parts that its protocol produces."""

import importlib
import runpy
from pathlib import Path

import pytest

import data_pipelines

CONFIGS = sorted(p.stem for p in (Path(__file__).parent.parent / "configs").glob("*.py")
                 if p.stem not in ("__init__", "base"))


def test_every_experiment_of_the_issue_exists():
    assert set(CONFIGS) == {"kadid_fr", "live_fr", "csiq_fr", "tid2013_fr", "kadid_cross", "koniq_nr",
                            "koniq_official_nr", "clive_nr", "spaq_nr", "demo_fr", "demo_nr",
                            "topiq_kadid_fr", "topiq_koniq_nr"}


@pytest.mark.parametrize("name", CONFIGS)
def test_config_is_consistent(name):
    module = importlib.import_module(f"configs.{name}")
    for arg in (None, "tiny"):
        config = module.get_config(arg)
        assert config.data.dataset in data_pipelines.READERS
        assert config.model.full_reference == (config.data.dataset in data_pipelines.FULL_REFERENCE)
        parts = {1: {"all"}, 2: {"train", "test"}, 3: {"train", "val", "test"}}[len(config.data.ratios)]
        if config.data.official_split:
            parts = {"train", "val", "test"}
        if config.data.val_holdout and config.data.select_part == "val":
            parts = parts | {"val"}  # held out of the training part (bpclip_jax.data.hold_out)
        for part in (config.data.train_part, config.data.select_part, *config.data.test_parts):
            assert not part or part in parts, (name, part)
        assert config.data.test_parts or len(config.data.cross) > 0
        assert module.__doc__ and f"configs/{name}.py" in module.__doc__  # the docstring's command
    paper = runpy.run_path(module.__file__).get("PAPER", {})
    assert name.startswith("demo") or paper, "experiment configs state the paper's numbers"
