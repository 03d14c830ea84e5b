"""The Colab notebook (notebooks/colab_quickstart.ipynb), executed cell by cell in a Jupyter kernel
as a user runs it, on its QUICK variant: any cell's error fails the test, and what the cells
computed is then checked. The notebook is stored without outputs, and the README links to it."""

import json
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest

from bpclip_jax.text import DIMENSIONS, PROMPTS
from tests.runs import same_results

REPO = Path(__file__).parent.parent
NOTEBOOK = REPO / "notebooks" / "colab_quickstart.ipynb"
# Run after the notebook's own cells, in its kernel: what they computed, as one JSON line.
REPORT = """
import json
print("REPORT " + json.dumps({
    "backend": jax.default_backend(), "results": results, "clean": float(scorer(photo, ref=photo)),
    "scores": {name: [float(s) for s in values] for name, values in scores.items()},
    "top": explanation.top(), "figure": str(figure), "losses": losses, "final": final}))
"""


COLAB_LINK = re.compile(r"\(https://colab\.research\.google\.com/github/([^/]+/[^/]+)/blob/main/([^)]+)\)")


def _cells() -> list:
    return nbformat.read(NOTEBOOK, as_version=4).cells


@pytest.mark.slow
def test_every_cell_runs_and_computes_what_it_says(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    (parameters,) = [i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", [])]
    work = tmp_path / "work"
    notebook.cells.insert(parameters + 1, nbformat.v4.new_code_cell(f"WORK = {str(work)!r}\nQUICK = True"))
    notebook.cells.append(nbformat.v4.new_code_cell(REPORT))
    # The kernel imports this checkout, as after `pip install -e .` from it (the environment's
    # install may be another clone's); the cells themselves import the package plainly.
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    NotebookClient(notebook, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()

    printed = "".join(o.get("text", "") for o in notebook.cells[-1].outputs if o.output_type == "stream")
    report = json.loads(printed.split("REPORT ", 1)[1])
    assert report["backend"] == "cpu"
    results = report["results"]
    assert same_results(results, json.loads((work / "demo" / "results.json").read_text()))
    assert results["selection"]["step"] in (10, 20) and results["kadid10k/test"]["n"] == 160
    assert (work / "demo" / "scatter_kadid10k_test.png").is_file()
    assert np.isfinite(report["clean"])
    assert [len(values) for values in report["scores"].values()] == [3, 3, 3]
    assert np.all(np.isfinite(list(report["scores"].values())))
    adjectives = {p.adjective for p in PROMPTS}
    assert list(report["top"]) == list(DIMENSIONS) and set(report["top"].values()) <= adjectives
    assert Path(report["figure"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(report["losses"]) == 3 and report["final"] < report["losses"][0]  # the steps lower it


def test_the_notebook_is_stored_without_outputs():
    code = [c for c in _cells() if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)


def test_the_readme_opens_the_notebook_in_colab_from_the_repository_it_installs():
    readme = (REPO / "README.md").read_text()
    owner_repo, path = COLAB_LINK.search(readme).groups()
    assert REPO / path == NOTEBOOK
    assert COLAB_LINK.search(_cells()[0].source).groups() == (owner_repo, path)  # the notebook's badge
    assert f'REPOSITORY = "https://github.com/{owner_repo}"' in _cells()[1].source  # what it installs
