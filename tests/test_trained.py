"""The readers' loader (bpclip_jax.trained): a run's selected checkpoint restored into the model
alone, with no optimizer state read; and imports that point down (the Scorer facade above
everything it uses, the loader below both the trainer and the scorer)."""

import ast
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from bpclip_jax import checkpoint, trained
from bpclip_jax.build import create_model
from tests.run_fixtures import untrained_workdir

PACKAGE = Path(__file__).parent.parent / "bpclip_jax"


def _modules() -> dict[str, set[str]]:
    """{module: the bpclip_jax modules it imports anywhere in its file, TYPE_CHECKING blocks and
    imports inside functions included}, modules named as 'api', 'models.bpclip'."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "bpclip_jax":
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bpclip_jax."):
                imported.add(node.module.removeprefix("bpclip_jax."))
            elif isinstance(node, ast.Import):
                imported |= {a.name.removeprefix("bpclip_jax.") for a in node.names
                             if a.name.startswith("bpclip_jax.")}
        graph[name] = imported
    return graph


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for module in graph.get(todo.pop(), ()):
            if module not in seen:
                seen.add(module)
                todo.append(module)
    return seen


def test_imports_point_down():
    graph = _modules()
    assert {"api", "hub", "predict", "loss", "trained", "train"} <= graph.keys()
    assert [m for m, imported in graph.items() if "api" in imported] == []  # only main.py, notebooks
    for module in ("hub", "predict", "loss", "trained", "train"):
        assert module not in _reachable(graph, module), f"{module} imports itself through others"
    assert not {"api", "train"} & _reachable(graph, "trained")  # below both the scorer and the trainer
    assert "trained" in graph["train"] and "trained" in graph["api"]


@pytest.mark.slow
def test_a_reader_restores_the_parameters_alone_and_reads_no_optimizer_state(tmp_path, monkeypatch):
    """The workdir's only checkpoint is a latest step (parameters, Adam's moments, the step): the
    reader reads its parameters and the frozen parts, nothing of the optimizer."""
    config = untrained_workdir(tmp_path, full_reference=False, dataset="koniq10k")
    read = []
    real_restore = checkpoint.Checkpoints._restore

    def spy(self, manager, step, abstract, **kwargs):
        leaves = jax.tree_util.tree_flatten_with_path(abstract)[0]
        read.extend(jax.tree_util.keystr(path) for path, _ in leaves)
        return real_restore(self, manager, step, abstract, **kwargs)

    monkeypatch.setattr(checkpoint.Checkpoints, "_restore", spy)
    loaded = trained.load(tmp_path)
    assert (loaded.step, loaded.best, loaded.config.data.dataset) == (0, None, "koniq10k")
    assert any(key.startswith("['params']") for key in read)
    assert not [key for key in read if "opt_state" in key or key == "['step']"]
    saved = dict(nnx.to_flat_state(nnx.state(create_model(config.model, seed=1))))  # what was written
    got = dict(nnx.to_flat_state(nnx.state(loaded.model)))
    assert got.keys() == saved.keys()
    for key, variable in saved.items():
        np.testing.assert_array_equal(np.asarray(got[key].get_value()), np.asarray(variable.get_value()),
                                      err_msg=str(key))
