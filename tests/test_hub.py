"""Models shared as hub models: the model card of an export, and `Scorer.from_pretrained("user/repo")`
against the local stand-in for the hub (tests/hub_stand_in.py, reached through HF_ENDPOINT):
revisions pinned, files cached, offline use from the cache, one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import ml_collections
import pytest

from bpclip_jax import api, hub
from bpclip_jax.api import Scorer
from bpclip_jax.build import create_model
from configs import base
from tests.hub_stand_in import StandInHub
from tests.run_fixtures import untrained_workdir

ROOT = Path(__file__).parent.parent


LOAD = """
import json, sys
import numpy as np
from flax import nnx
from safetensors.numpy import load_file
from bpclip_jax.api import Scorer
from bpclip_jax.errors import UserError

out = {}
for label, repo, revision, expected in json.loads(sys.argv[1]):
    try:
        scorer = Scorer.from_pretrained(repo, revision=revision)
    except UserError as err:
        out[label] = "error: " + str(err)
        continue
    want = load_file(expected)
    got = {"/".join(map(str, p)): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(scorer.state)}
    same = got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)
    out[label] = {"source": scorer.provenance["source"], "same_weights": same}
print(json.dumps(out))
"""


def load_in_subprocess(hub_url: str, hf_home: Path, offline: bool, cases: list) -> dict:
    env = {"HF_ENDPOINT": hub_url, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1" if offline else "0",
           "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", LOAD, json.dumps(cases)], capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _nr_scorer(seed: int) -> Scorer:
    config = base.get_config("tiny")
    config.model.full_reference = False
    return Scorer(create_model(config.model, seed=seed), config, dataset="koniq10k")


@pytest.mark.slow
def test_from_pretrained_fetches_a_pinned_revision_and_works_offline_from_the_cache(tmp_path):
    first, second = _nr_scorer(1).export(tmp_path / "v1"), _nr_scorer(2).export(tmp_path / "v2")
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "config.json").write_bytes((first / "config.json").read_bytes())
    with StandInHub() as stand_in:
        pinned = stand_in.push("lab/bpclip-koniq", first)
        latest = stand_in.push("lab/bpclip-koniq", second)
        stand_in.push("lab/not-a-model", tmp_path / "partial")
        online = load_in_subprocess(stand_in.url, tmp_path / "hf", False, [
            ["pinned", "lab/bpclip-koniq", pinned, str(first / "model.safetensors")],
            ["main", "lab/bpclip-koniq", None, str(second / "model.safetensors")],
            ["no such revision", "lab/bpclip-koniq", "v9", ""],
            ["not a model", "lab/not-a-model", None, ""],
        ])
    assert online["pinned"] == {"source": f"lab/bpclip-koniq@{pinned}", "same_weights": True}
    assert online["main"] == {"source": f"lab/bpclip-koniq@{latest}", "same_weights": True}
    assert online["no such revision"].startswith("error: could not get config.json of lab/bpclip-koniq@v9 "
                                                 "from the hub (RevisionNotFoundError")
    assert online["not a model"] == ("error: lab/not-a-model is not an exported BPCLIP model: it has no "
                                     "meta.json")
    assert any(f"/resolve/{pinned}/model.safetensors" in r for r in stand_in.requests)
    # The stand-in is gone: the cache alone serves the pinned revision.
    offline = load_in_subprocess(stand_in.url, tmp_path / "hf", True, [
        ["cached", "lab/bpclip-koniq", pinned, str(first / "model.safetensors")]])
    assert offline["cached"] == {"source": f"lab/bpclip-koniq@{pinned}", "same_weights": True}


@pytest.mark.slow
def test_export_writes_a_model_card_from_the_runs_results(tmp_path):
    workdir = tmp_path / "run"
    untrained_workdir(workdir, full_reference=True)
    results = {"selection": {"step": 0, "how": "best kadid10k/val SRCC", "val_srcc": 0.91, "val_plcc": 0.9},
               "kadid10k/test": {"srcc": 0.8765, "plcc": 0.8812, "plcc_logistic": 0.89, "krcc": 0.7,
                                 "rmse": 0.4321, "n": 4}}
    (workdir / "results.json").write_text(json.dumps(results))
    cfg = ml_collections.ConfigDict({"path": str(tmp_path / "export")})
    api.export_command(cfg, workdir)
    card = (tmp_path / "export" / "README.md").read_text()
    for expected in ("# BPCLIP-FR trained on KADID-10k",
                     "Its score is on KADID-10k's 1-5 scale, higher is better.",
                     "split 6:2:2 by reference content, seed 0",
                     "Checkpoint: step 0, selected by best kadid10k/val SRCC (validation SRCC 0.9100).",
                     "| kadid10k/test | 4 | 0.8765 | 0.8812 | 0.7000 | 0.4321 |",
                     "No third-party weights"):
        assert expected in card, expected
    meta = json.loads((tmp_path / "export" / "meta.json").read_text())
    assert meta["provenance"]["results"] == results and meta["provenance"]["step"] == 0
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == [
        "README.md", "config.json", "meta.json", "model.safetensors"]


def test_model_card_names_the_licences_of_the_pretrained_parts():
    config = base.get_config()
    meta = {"dataset": "koniq10k", "full_reference": False, "provenance": {}}
    card = hub.model_card(config, meta)
    assert "`timm/resnet50.a1_in1k`: Apache-2.0" in card and "`openai/clip-vit-base-patch32`: MIT" in card
    assert "No test results were recorded" in card and "# BPCLIP-NR trained on KonIQ-10k" in card


def test_export_of_a_workdir_without_config_json_is_one_clear_error(tmp_path):
    from bpclip_jax.errors import UserError

    with pytest.raises(UserError, match="holds no config.json"):
        api.export_command(ml_collections.ConfigDict({"path": str(tmp_path / "out")}), tmp_path)
