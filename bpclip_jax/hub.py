"""Exported models, shared as hub models are: a folder that can be uploaded as it is, loaded back
from that folder or from a hub repo id.

An export directory holds
  config.json        the run's config (model switches, training set, split)
  meta.json          format, dataset, MOS range and direction, FR/NR, prompts, provenance
  model.safetensors  every variable: weights, BatchNorm statistics and the 40 text features
  README.md          the model card: training set, split, test metrics and how the checkpoint was
                     selected (from the run's results.json), the config, the licences it inherits
Loading verifies every tensor by name and shape. `resolve` turns "user/repo" into a local copy with
huggingface_hub (cached; `revision` pins a branch, tag or commit); HF_ENDPOINT points it at another
hub, HF_HUB_OFFLINE=1 uses the cache only.
"""

from __future__ import annotations

import json
from pathlib import Path

import ml_collections
import numpy as np
from flax import nnx

from bpclip_jax import run_config
from bpclip_jax.errors import UserError
from bpclip_jax.explain import DATASET_NAMES, scale_phrase
from bpclip_jax.files import atomic_write
from bpclip_jax.text import PROMPTS
from data_pipelines.records import SCALES

EXPORT_FORMAT = 1
FILES = ("config.json", "meta.json", "model.safetensors")
CARD = "README.md"
# What the pretrained parts are released under, as their own model cards and repositories state.
LICENCES = {
    "timm/resnet50.a1_in1k": "Apache-2.0 (timm's model card); trained on ImageNet-1k, whose terms of "
                             "access restrict use to non-commercial research",
    "timm/resnet50.tv_in1k": "BSD-3-Clause (torchvision); trained on ImageNet-1k, whose terms of access "
                             "restrict use to non-commercial research",
    "openai/clip-vit-base-patch32": "MIT (OpenAI's CLIP repository); OpenAI's model card scopes CLIP to "
                                    "research use and calls deployed and commercial uses out of scope",
}


class ExportError(UserError):
    """A directory or hub repo that does not hold an exported BPCLIP model; the message says why."""


# ---------------------------------------------------------------------- writing


def export(path: str | Path, state: nnx.State, config: ml_collections.ConfigDict, *, dataset: str,
           provenance: dict) -> Path:
    """Writes a model to `path` (created; each file written whole, then renamed): `state` all its
    variables (nnx.state(model)), `config` its run's config, `dataset` the set whose scale it
    scores on, `provenance` where it comes from ({'workdir', 'step', 'best'} of a run, or what an
    imported model carried)."""
    from safetensors.numpy import save

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    flat = {"/".join(str(k) for k in p): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(state)}
    atomic_write(path / "model.safetensors", save(flat))
    lo, hi, higher_better = SCALES[dataset]
    meta = {"format": EXPORT_FORMAT, "dataset": dataset, "mos_range": [lo, hi],
            "higher_is_better": higher_better, "full_reference": bool(config.model.full_reference),
            "prompts": [p.text for p in PROMPTS], "provenance": _provenance(provenance)}
    atomic_write(path / "config.json", config.to_json_best_effort(indent=1) + "\n")
    atomic_write(path / "meta.json", json.dumps(meta, indent=1) + "\n")
    atomic_write(path / CARD, model_card(config, meta))
    return path


def _provenance(given: dict) -> dict:
    """Where the model comes from, as the export records it: a run's step and checkpoint selection
    and its test results (results.json), when it was built from a workdir (whose path is not
    kept); what an imported model carried."""
    provenance = {k: v for k, v in given.items() if k != "workdir"}
    workdir = given.get("workdir")
    if workdir:
        results = Path(workdir) / "results.json"
        if results.is_file():
            provenance["results"] = json.loads(results.read_text())
    return provenance


def model_card(config, meta: dict) -> str:
    """README.md of an export: hub metadata, then what a user must know to use and cite it."""
    data, model = config.data, config.model
    name = DATASET_NAMES.get(meta["dataset"], meta["dataset"])
    kind = "full-reference (FR)" if meta["full_reference"] else "no-reference (NR)"
    arch = "TOPIQ" if model.arch == "cfanet" else "BPCLIP"
    described = (f"TOPIQ's CFANet (ResNet50), Norm-in-Norm weight {config.train.nin_weight:g}"
                 if model.arch == "cfanet" else
                 f"branches `{model.branches}`, direction `{model.direction}`, {_text_branch(model)}")
    lines = ["---", "library_name: bpclip_jax", "license: other",
             "tags:", "- image-quality-assessment", "- jax", "- flax", "---", "",
             f"# {arch}-{'FR' if meta['full_reference'] else 'NR'} trained on {name}", "",
             f"A {kind} image quality model ({arch}, JAX/Flax). Its score is on "
             f"{scale_phrase(meta['dataset'])}.",
             "", "```python", "from bpclip_jax.api import Scorer", "",
             "scorer = Scorer.from_pretrained(\"<this repo id or folder>\")",
             "scorer(\"dist.png\", ref=\"ref.png\")" if meta["full_reference"] else "scorer(\"photo.jpg\")",
             "```", "", "## Training", "",
             f"- Training set: {name} (`{data.dataset}`), split {_split(data)}.",
             f"- Model: {described}, compute dtype `{config.dtype}`; the full config is `config.json`.",
             f"- Optimizer: AdamW lr {config.optim.lr:g}, weight decay {config.optim.weight_decay:g}, "
             f"{config.optim.epochs} epochs, crop {data.crop}, batch {data.batch_size}.", ""]
    lines += _results_section(meta.get("provenance", {}))
    lines += ["## Licences", ""] + _licence_lines(model) + [
        f"- The training images and labels ({name}) are under their own terms; see the dataset's page.",
        "- Choose the licence of these weights (`license:` above) within all of these terms.", ""]
    return "\n".join(lines)


def _text_branch(model) -> str:
    if not model.use_text:
        return "text prompts off"
    words = "" if model.pretrained else f", stand-in text features `{model.stand_in_text}` without language"
    return f"text prompts on (`text_head` `{model.text_head}`{words})"


def _split(data) -> str:
    if data.official_split:
        return "the official one"
    ratios = ":".join(str(r) for r in data.ratios)
    grouping = "by reference content" if data.by_content else "by image"
    return f"{ratios} {grouping}, seed {data.split_seed}"


def _results_section(provenance: dict) -> list[str]:
    results = provenance.get("results")
    if not results:
        return ["## Results", "", "No test results were recorded with this export (it was not exported "
                "from a training run's workdir that holds results.json).", ""]
    selection = results.get("selection", {})
    how = selection.get("how", "not recorded")
    lines = ["## Results", "", f"Checkpoint: step {selection.get('step', '?')}, selected by {how}"
             + (f" (validation SRCC {selection['val_srcc']:.4f})" if "val_srcc" in selection else "") + ".",
             "", "| test set | n | SRCC | PLCC | KRCC | RMSE |", "|---|---|---|---|---|---|"]
    for part, m in results.items():
        if part != "selection":
            lines.append(f"| {part} | {m.get('n', '')} | {m['srcc']:.4f} | {m['plcc']:.4f} | "
                         f"{m['krcc']:.4f} | {m['rmse']:.4g} |")
    return lines + [""]


def _licence_lines(model) -> list[str]:
    if not model.pretrained:
        return ["- No third-party weights: the backbone started from random weights and the 40 text "
                "features are random stand-ins for CLIP's (an offline demonstration model)."]
    backbone = [f"- Backbone initialised from `{model.resnet_source}`: "
                f"{LICENCES.get(model.resnet_source, 'see its own licence')}."]
    if model.arch == "cfanet":  # TOPIQ has no text branch
        return backbone
    return backbone + [
            f"- Text features computed by the CLIP text tower of `{model.clip_source}`: "
            f"{LICENCES.get(model.clip_source, 'see its own licence')}."]


# ---------------------------------------------------------------------- reading


def is_repo_id(source: str) -> bool:
    """'user/repo': one slash, not a path that exists or looks local."""
    return (not Path(source).expanduser().exists() and source.count("/") == 1
            and not source.startswith((".", "/", "~")))


def resolve(source: str | Path, revision: str | None = None) -> tuple[Path, str]:
    """(a local export directory, a description of where it came from) for a directory or a hub
    repo id. Hub files are fetched with huggingface_hub and cached; the description names the
    commit they came from ("user/repo@<commit>")."""
    source = str(source)
    if not is_repo_id(source):
        directory = Path(source).expanduser()
        if directory.is_file():
            raise ExportError(f"{source} is a file: give the folder that `export` wrote")
        if not directory.is_dir():
            raise ExportError(f"{source}: no such directory, and not a hub repo id (user/repo)")
        return directory, str(directory)
    import huggingface_hub

    paths = []
    try:
        for name in FILES:
            paths.append(Path(huggingface_hub.hf_hub_download(source, name, revision=revision)))
    except huggingface_hub.errors.RemoteEntryNotFoundError as err:
        raise ExportError(f"{source}{'@' + revision if revision else ''} is not an exported BPCLIP model: "
                          f"it has no {name}") from err
    except Exception as err:  # offline, no network, no such repo or revision: one actionable line
        where = f"{source}{'@' + revision if revision else ''}"
        raise ExportError(f"could not get {name} of {where} from the hub ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''}); download the repo where there "
                          f"is network access and pass its folder instead") from err
    directory = paths[0].parent
    commit = directory.name  # the hub cache keeps each file under snapshots/<commit>/
    return directory, f"{source}@{commit}"


def load_exported(directory: Path):
    """(model, config, meta) of an export directory, every tensor checked by name and shape."""
    from safetensors.numpy import load_file

    from bpclip_jax.build import create_model
    from bpclip_jax.weights import assign_strict

    for name in FILES:
        if not (directory / name).is_file():
            raise ExportError(f"{directory} is not an exported BPCLIP model: {name} is missing")
    try:
        meta = json.loads((directory / "meta.json").read_text())
    except json.JSONDecodeError as err:
        raise ExportError(f"{directory}/meta.json is not valid JSON ({err})") from None
    if meta.get("format") != EXPORT_FORMAT:
        raise ExportError(f"{directory}/meta.json: format {meta.get('format')}, expected {EXPORT_FORMAT}")
    config = run_config.read(directory / "config.json")
    # Shapes only (not a random init of 35-45 M values that would be overwritten): the strict
    # assignment below sets every variable.
    model = nnx.eval_shape(lambda: create_model(config.model, dtype=config.dtype, seed=config.seed,
                                                restoring=True))
    assign_strict(model, load_file(directory / "model.safetensors"),
                  key_of=lambda p: "/".join(str(k) for k in p), what=f"{directory}/model.safetensors")
    return model, config, meta
