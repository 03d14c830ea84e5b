"""Shared test set-up: CPU, absl flags parsed (grain reads them), offline hub."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
from absl import flags  # noqa: E402

flags.FLAGS.mark_as_parsed()


def pytest_configure(config):
    """One persistent XLA compilation cache per test session: the tiny train step is the same
    program in several tests, and compiling it is most of their time on CPU."""
    import tempfile

    import jax

    jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="bpclip_xla_cache_"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


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
