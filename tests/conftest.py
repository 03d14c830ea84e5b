"""Shared test set-up: CPU, absl flags parsed (grain reads them), offline hub, one XLA compilation
cache for the session (subprocesses included), compiled programs dropped after each module, and the
tiny training run several modules compare against."""

import os
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
from absl import flags  # noqa: E402

flags.FLAGS.mark_as_parsed()
pytest.register_assert_rewrite("tests.runs")  # its shared asserts explain themselves too


def pytest_configure(config):
    """One persistent XLA compilation cache for the session, shared with every subprocess (they
    inherit the environment): the multi-process, fault, protocol, CLI and notebook tests start
    training processes that compile the same programs, and on a CPU compiling is most of their
    time. Every program is kept, however quick its compile (min compile time 0): a process that
    builds a model eagerly compiles hundreds of small kernels, one per operation, which together
    cost a fresh process about as much as its train step (a warm fault_driver run: 40 s with the
    1 s threshold, 25 s without it)."""
    import tempfile

    import jax

    # pytest-xdist's workers inherit the controller's environment: one cache for all of them.
    cache = os.environ.get("BPCLIP_TEST_XLA_CACHE") or tempfile.mkdtemp(prefix="bpclip_xla_cache_")
    os.environ["BPCLIP_TEST_XLA_CACHE"] = os.environ["JAX_COMPILATION_CACHE_DIR"] = cache
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


# The longest files, longest first: pytest-xdist, which the README's test command runs with 2
# workers taking whole files (pyproject.toml: --dist loadfile --no-loadscope-reorder), hands files
# out in collection order, so the long ones start first and the short ones fill the end instead of
# one long file running alone (the order: each file's time in a whole run on 2 cores).
LONGEST_FIRST = ("test_multiprocess", "test_faults", "test_protocol", "test_train", "test_preempt",
                 "test_bpclip", "test_disk_full", "test_notebook", "test_loss", "test_benchmarks",
                 "test_run_config", "test_predict", "test_cfanet")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: files stay whole


@pytest.fixture(autouse=True, scope="module")
def _drop_compiled_programs():
    """At the end of each module, the programs it compiled and the arrays they hold are dropped, and
    the freed memory is returned to the system: kept for the whole session they grew the pytest
    process to 8 GB by 40% of the suite (the kernel killed it on a shared 24 GB machine); dropped,
    the peak is one module's (5.5 GB: test_bpclip's full-size models). Whatever another module
    compiles again comes from the persistent compilation cache."""
    yield
    import ctypes
    import gc

    import jax

    jax.clear_caches()
    gc.collect()
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc keeps freed memory otherwise
    if trim is not None:
        trim(0)


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


def _once(tmp_path_factory, name: str, make) -> Path:
    """A folder of the session made once, by the first pytest-xdist worker that asks for it; the
    others wait on a file lock and share it. `make(folder)` fills the empty folder. A worker's own
    temporary folder is per worker, so the folder lives in the session's, one above."""
    import fcntl
    import shutil

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    folder, done = base / name, base / f"{name}.done"
    with open(base / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # a worker that failed making it
            folder.mkdir()
            make(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def kadid_root(tmp_path_factory):
    """The tiny KADID fixture: 5 references x 4 distortions (train 3 refs, val 1, test 1)."""
    from tests import data_fixtures

    return _once(tmp_path_factory, "kadid", lambda root: data_fixtures.kadid(root, refs=5, per_ref=4))


@pytest.fixture(scope="session")
def trained(kadid_root, tmp_path_factory):
    """(workdir, results) of the tiny config trained without interruption: 2 epochs of 3 steps,
    validated at steps 3 and 6. Trained once for the session and read by every worker: a test
    that writes to a run (an evaluation, a lock) works on its own copy (`own_copy`)."""
    import json

    from bpclip_jax import train
    from tests.runs import tiny_config

    workdir = _once(tmp_path_factory, "trained_run",
                    lambda folder: train.train_and_evaluate(tiny_config(kadid_root), folder))
    return workdir, json.loads((workdir / "results.json").read_text())
