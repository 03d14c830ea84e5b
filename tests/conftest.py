"""Shared test set-up: CPU, absl flags parsed (grain reads them), offline hub."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
from absl import flags  # noqa: E402

flags.FLAGS.mark_as_parsed()


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Each test gets its own feature cache and hub cache: nothing leaks between tests."""
    monkeypatch.setenv("BPCLIP_CACHE", str(tmp_path / "bpclip_cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))


@pytest.fixture
def tiny_clip_dir(tmp_path):
    """A random 2-layer CLIPModel saved with save_pretrained, plus a tiny byte-level tokenizer."""
    from tests.clip_fixtures import save_tiny_clip

    directory = tmp_path / "tiny_clip"
    directory.mkdir()
    save_tiny_clip(directory, eos_token_id=2)
    return directory
