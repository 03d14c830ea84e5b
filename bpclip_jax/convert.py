"""pyiqa's released TOPIQ checkpoints -> export folders that `Scorer.from_pretrained(OUT_DIR)` and
`python main.py --mode predict --workdir OUT_DIR` load like any exported model.

    python -m bpclip_jax.convert pyiqa CHECKPOINT.pth OUT_DIR --metric topiq_fr

The metrics are pyiqa 0.1.16's ResNet50 TOPIQ models (`METRICS`: topiq_fr, topiq_fr-pipal,
topiq_nr, topiq_nr-flive, topiq_nr-spaq, topiq_nr-face, topiq_nr-face-v1); their checkpoints are
downloaded by the user (README: where they are). The conversion is strict, as every weight port here
(bpclip_jax.weights): every tensor of the checkpoint fills exactly one variable of
`models.cfanet.CFANet` or is one of the documented ignored keys, every variable is filled, every
shape is checked, and a checkpoint of another metric's architecture (FR for NR, a Swin backbone,
the aesthetics model) is named as such. The `.pth` file is read with `torch.load(weights_only=True)`,
which builds tensors and plain containers and runs no code from the file; torch is needed for
the conversion only, never to load or run the export.

Key map (pyiqa's state dict -> our variable paths), i = level 0..4 (act1..layer4), j = 0..3:
  semantic_model.*                           backbone.* (torchvision's names: weights.torch_name)
  weight_pool.i.{0,2,4} (FR)                 glp.i.phi.conv{1,2,3}
  weight_pool.i.splitconv, .weight_blk.{0,2,4} (NR)   glp.i.split, glp.i.phi.conv{1,2,3}
  dim_reduce.i.0                             glp.i.reduce
  h_emb [1,D/2,32,1], w_emb [1,D/2,1,32]     position.rows, position.cols ([32,D/2])
  sa_attn_blks.i.layers.0.*                  sa.i.*   (self_attn, norm1 -> norm_query, norm2 -> norm_ffn)
  attn_blks.j.layers.0.*                     cross.j.* (multihead_attn, norm1 -> norm_query,
                                                        norm2 -> norm_memory, norm3 -> norm_ffn)
  attn_pool.*                                pool.*
  *.in_proj_weight / in_proj_bias [3D,...]   attention.{query,key,value}: its thirds, in that order
  *.out_proj, linear1, linear2               attention.out, ffn.linear1, ffn.linear2
  score_linear.{0,1,3,4,6}                   head.{norm1,fc1,norm2,fc2,fc3}
Ignored: `num_batches_tracked`, and `attn_blks.j.layers.0.self_attn.*`: pyiqa's decoder layer
builds a self-attention that its forward never calls, so those tensors never touch a score.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from absl import app, flags
from flax import nnx

from bpclip_jax import weights
from bpclip_jax.errors import UserError
from bpclip_jax.models.cfanet import CFANet

PYIQA_VERSION = "0.1.16"
WEIGHTS_REPO = "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main/{file}"
WEIGHTS_RELEASE = "https://github.com/chaofengc/IQA-PyTorch/releases/download/v0.1-weights/{file}"
SCALE = "pyiqa"  # data_pipelines.records.SCALES: pyiqa's own score, ~0..1, higher is better


class ConvertError(UserError):
    """A checkpoint that cannot be converted as asked; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class Metric:
    """One of pyiqa's released ResNet50 TOPIQ models (pyiqa/default_model_configs.py)."""

    name: str               # pyiqa's metric name
    release: str            # pyiqa's model_name: the released file's stem
    file: str               # the released file
    full_reference: bool
    trained_on: str
    test_size: int = 0      # pyiqa's test_img_size: the shorter side is resized to it at test time
    face: bool = False      # pyiqa detects, aligns and crops the face first (facexlib)

    @property
    def urls(self) -> tuple[str, str]:
        return WEIGHTS_REPO.format(file=self.file), WEIGHTS_RELEASE.format(file=self.file)


METRICS = {m.name: m for m in (
    Metric("topiq_fr", "cfanet_fr_kadid_res50", "cfanet_fr_kadid_res50-2c4cc61d.pth", True, "KADID-10k"),
    Metric("topiq_fr-pipal", "cfanet_fr_pipal_res50", "cfanet_fr_pipal_res50-69bbe5ba.pth", True, "PIPAL"),
    Metric("topiq_nr", "cfanet_nr_koniq_res50", "cfanet_nr_koniq_res50-9a73138b.pth", False, "KonIQ-10k"),
    Metric("topiq_nr-flive", "cfanet_nr_flive_res50", "cfanet_nr_flive_res50-ded1c74e.pth", False,
           "FLIVE (PaQ-2-PiQ)", test_size=384),
    Metric("topiq_nr-spaq", "cfanet_nr_spaq_res50", "cfanet_nr_spaq_res50-a7f799ac.pth", False, "SPAQ"),
    Metric("topiq_nr-face", "topiq_nr_cgfiqa_res50", "topiq_nr_cgfiqa_res50-0a8b8e4f.pth", False,
           "CGFIQA-40k", test_size=512, face=True),
    Metric("topiq_nr-face-v1", "topiq_nr_gfiqa_res50", "topiq_nr_gfiqa_res50-d76bf1ae.pth", False,
           "GFIQA-20k", test_size=512, face=True),
)}


# ------------------------------------------------------------------------------ reading


def read_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """The state dict of a pyiqa `.pth` (top level or under 'params', as pyiqa saves it; a
    'module.' prefix of parallel training removed, as pyiqa removes it) as float32 numpy arrays.
    Read with weights_only=True: no code in the file runs. An unreadable file is a ConvertError."""
    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"{path}: no such file")
    try:
        import torch
    except ImportError as err:
        raise ConvertError("the conversion reads PyTorch files and needs torch: pip install torch "
                           "(the converted model runs without it)") from err
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  truncated, not a torch file, or objects beyond tensors
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConvertError(f"{path} is not a readable PyTorch checkpoint ({first[:200]}); a truncated "
                           f"or interrupted download? Download it again") from None
    if isinstance(obj, Mapping) and isinstance(obj.get("params"), Mapping):
        obj = obj["params"]
    if not isinstance(obj, Mapping):
        raise ConvertError(f"{path} holds a {type(obj).__name__}, not a state dict of tensors")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ConvertError(f"{path} holds no state dict of tensors (its keys: "
                           f"{', '.join(map(str, list(obj)[:8]))})")
    return {k.removeprefix("module."): v.detach().float().cpu().numpy() for k, v in tensors.items()}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------------------ checking


def check_variant(state: Mapping[str, np.ndarray], metric: Metric, source: str) -> None:
    """Refuses, with one named reason, a checkpoint that is not `metric`'s architecture or that
    pyiqa released for another metric."""
    others = ", ".join(METRICS)
    if "dim_reduce.0.0.weight" not in state:
        raise ConvertError(f"{source} is not a checkpoint of pyiqa's CFANet (TOPIQ): it has no "
                           f"dim_reduce.0.0.weight (its first keys: {', '.join(list(state)[:5])})")
    if "semantic_model.conv1.weight" not in state:
        swin = any(k.startswith("semantic_model.patch_embed") for k in state)
        kind = "a Swin Transformer backbone (pyiqa's topiq_iaa or topiq_nr_swin-face)" if swin else \
            "another backbone than ResNet50"
        raise ConvertError(f"{source} is a CFANet with {kind}: only the ResNet50 metrics convert ({others})")
    dim = state["dim_reduce.0.0.weight"].shape[0]
    outputs = state["score_linear.6.weight"].shape[0] if "score_linear.6.weight" in state else 1
    if dim != 256 or outputs != 1:
        raise ConvertError(f"{source} is a CFANet of width {dim} with {outputs} outputs (pyiqa's "
                           f"topiq_iaa_res50, an aesthetics model); the TOPIQ quality metrics ({others}) "
                           f"have width 256 and one output")
    no_reference = "weight_pool.0.splitconv.weight" in state
    if no_reference == metric.full_reference:
        kind = "no-reference" if no_reference else "full-reference"
        fitting = ", ".join(m.name for m in METRICS.values() if m.full_reference != no_reference)
        raise ConvertError(f"{source} is a {kind} CFANet, but --metric {metric.name} is "
                           f"{'full' if metric.full_reference else 'no'}-reference: pass one of {fitting}")
    stem = Path(source).name.split("-")[0].split(".")[0]
    released = next((m for m in METRICS.values() if m.release == stem), None)
    if released is not None and released is not metric:
        raise ConvertError(f"{source} is pyiqa's release of {released.name} ({released.release}), not of "
                           f"{metric.name} ({metric.release}): pass --metric {released.name}")


# ------------------------------------------------------------------------------ the key map


_HEAD = {"norm1": "0", "fc1": "1", "norm2": "3", "fc2": "4", "fc3": "6"}
_PHI = {"conv1": "0", "conv2": "2", "conv3": "4"}


def _leaf(name: str) -> str:
    return weights.TORCH_LEAF.get(name, name)


def _layer_key(sub: tuple, cross: bool) -> str:
    """A TransformerLayer variable (path below the layer) -> pyiqa's key below `layers.0.`."""
    leaf = _leaf(sub[-1])
    norms = {"norm_query": "norm1", "norm_memory": "norm2", "norm_ffn": "norm3" if cross else "norm2"}
    if sub[0] in norms:
        return f"{norms[sub[0]]}.{leaf}"
    if sub[0] == "ffn":
        return f"{sub[1]}.{leaf}"
    attention = "multihead_attn" if cross else "self_attn"
    if sub[1] == "out":
        return f"{attention}.out_proj.{leaf}"
    return f"{attention}.in_proj_{leaf}:{sub[1]}"  # a third of the packed projection (_unpack_qkv)


def pyiqa_key(path: tuple, full_reference: bool) -> str:
    """Our CFANet variable path -> the key of pyiqa's state dict that holds its value."""
    top, rest = path[0], path[1:]
    if top == "backbone":
        return "semantic_model." + weights.torch_name(rest)
    if top == "glp":
        level, part = rest[0], rest[1]
        if part == "phi":
            inner = "" if full_reference else "weight_blk."
            return f"weight_pool.{level}.{inner}{_PHI[rest[2]]}.{_leaf(rest[-1])}"
        base = {"split": f"weight_pool.{level}.splitconv", "reduce": f"dim_reduce.{level}.0"}[part]
        return f"{base}.{_leaf(rest[-1])}"
    if top == "position":
        return {"rows": "h_emb", "cols": "w_emb"}[rest[0]]
    if top == "sa":
        return f"sa_attn_blks.{rest[0]}.layers.0." + _layer_key(rest[1:], cross=False)
    if top == "cross":
        return f"attn_blks.{rest[0]}.layers.0." + _layer_key(rest[1:], cross=True)
    if top == "pool":
        return "attn_pool." + _layer_key(rest, cross=False)
    if top == "head":
        return f"score_linear.{_HEAD[rest[0]]}.{_leaf(rest[-1])}"
    return "<no pyiqa key for " + "/".join(map(str, path)) + ">"


def _unpack_qkv(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Splits each packed `in_proj_weight`/`in_proj_bias` [3D,...] into its query, key and value
    thirds (keys `...:query`, `:key`, `:value`), so that each third is one variable's value and the
    strict check counts the packed tensor as used once all three are. A first axis that does not
    split in three stays as it is (and is reported)."""
    out = {}
    for key, value in state.items():
        if key.rsplit(".", 1)[-1] in ("in_proj_weight", "in_proj_bias") and value.shape[0] % 3 == 0:
            for name, third in zip(("query", "key", "value"), np.split(value, 3, axis=0)):
                out[f"{key}:{name}"] = third
        else:
            out[key] = value
    return out


def _to_ours(path: tuple, value: np.ndarray) -> np.ndarray:
    """A pyiqa tensor in our layout: the positional embeddings [1,D/2,32,1] / [1,D/2,1,32] ->
    [32,D/2]; convolutions and linears as every torch port (weights.torch_layout)."""
    if path[0] == "position" and value.ndim == 4:
        return value[0, :, :, 0].T if path[1] == "rows" else value[0, :, 0, :].T
    return weights.torch_layout(path, value)


def _ignored(key: str) -> bool:
    parts = key.split(".")
    return key.endswith("num_batches_tracked") or (parts[0] == "attn_blks" and parts[4:5] == ["self_attn"])


def cfanet_from_pyiqa(state: Mapping[str, np.ndarray], metric: Metric, source: str = "checkpoint") -> CFANet:
    """Our CFANet holding the values of pyiqa's state dict `state` for `metric`: the variant
    checked first (check_variant), then every key mapped strictly (weights.assign_strict)."""
    check_variant(state, metric, source)
    # Shapes only: every variable is then set from the checkpoint (a random init would be discarded).
    model = nnx.eval_shape(lambda: CFANet(full_reference=metric.full_reference, test_size=metric.test_size,
                                          rngs=nnx.Rngs(0)))
    try:
        weights.assign_strict(model, _unpack_qkv(state),
                              key_of=lambda p: pyiqa_key(p, metric.full_reference),
                              convert=_to_ours, ignore=_ignored, what=f"{source} ({metric.name})")
    except weights.WeightLoadError as err:
        raise ConvertError(" ".join(str(err).split())) from None
    return model


# ------------------------------------------------------------------------------ writing


def model_config(metric: Metric):
    """The export's config.json: CFANet's switches for `metric`; scores in pyiqa's own scale."""
    from configs import base

    config = base.get_config()
    config.model.arch = "cfanet"
    config.model.full_reference = metric.full_reference
    config.model.test_size = metric.test_size
    config.model.pretrained = False  # every value comes from the checkpoint: nothing to download
    config.data.dataset = SCALE
    config.data.root = ""
    return config


def model_card(metric: Metric, provenance: dict) -> str:
    """README.md of a converted model: source, licence terms, scale and direction, preprocessing."""
    kind = "full-reference (FR)" if metric.full_reference else "no-reference (NR)"
    call = 'scorer("dist.png", ref="ref.png")' if metric.full_reference else 'scorer("photo.jpg")'
    refs = " --config.predict.refs=REFS" if metric.full_reference else ""
    lines = ["---", "library_name: bpclip_jax", "license: other", "tags:", "- image-quality-assessment",
             "- jax", "- flax", "- topiq", "---", "",
             f"# TOPIQ `{metric.name}` (CFANet, ResNet50), converted from pyiqa", "",
             f"A {kind} image quality model: pyiqa's `{metric.name}` (checkpoint `{metric.release}`), "
             f"trained by pyiqa's authors on {metric.trained_on}, in JAX/Flax.", "",
             "```python", "from bpclip_jax.api import Scorer", "",
             'scorer = Scorer.from_pretrained("<this folder>")', call, "```", "",
             f"or `python main.py --mode predict --workdir <this folder> --config.predict.inputs=DIR{refs}`.",
             "", "## Score", "",
             "pyiqa's own score for this metric, unchanged: about 0 to 1 (not clipped), **higher is "
             "better**. The `score` and `score_normalized` columns of `--mode predict` both hold it.", "",
             "## Preprocessing", ""]
    lines.append(f"- The distorted image's shorter side is resized to {metric.test_size} pixels "
                 "(bilinear, antialiased) inside the model, as pyiqa does at test time."
                 if metric.test_size else "- None: the whole image at its own size, as pyiqa scores it.")
    if metric.face:
        lines.append("- pyiqa first detects, aligns and crops the face with facexlib (RetinaFace) to "
                     "512x512; **this model does not**: give it aligned face crops (e.g. from "
                     "facexlib's FaceRestoreHelper), and its scores are pyiqa's on those crops.")
    lines += ["", "## Source", "",
              f"- pyiqa {PYIQA_VERSION} (IQA-PyTorch, Chaofeng Chen et al.), `pyiqa/archs/topiq_arch.py`, "
              f"class `CFANet`; TOPIQ: Chen et al., *TOPIQ: A Top-down Approach from Semantics to "
              f"Distortions for Image Quality Assessment*, IEEE TIP 2024.",
              f"- Released checkpoint: `{metric.file}`, from {metric.urls[0]} (also {metric.urls[1]}).",
              f"- Converted from `{provenance['checkpoint']}` (sha256 `{provenance['sha256']}`) with "
              f"`python -m bpclip_jax.convert pyiqa {provenance['checkpoint']} OUT_DIR --metric "
              f"{metric.name}`: every tensor mapped by name and shape (bpclip_jax/convert.py); the "
              "project's parity test scores pyiqa's CFANet and this port alike to 1e-5 relative.", "",
              "## Licences", "",
              "- These weights are pyiqa's. pyiqa is released under the PolyForm Noncommercial License "
              "1.0.0, and the NTU S-Lab License 1.0 for applicable components (non-commercial use); "
              "pyiqa's README says that its datasets are collected for academic, research and "
              "educational purposes only. Use them within those terms.",
              f"- They were trained on {metric.trained_on}, under its authors' own terms, from an "
              "ImageNet-1k ResNet50 (timm), whose data is licensed for non-commercial research.",
              "- The JAX code that runs them is this project's.", ""]
    return "\n".join(lines)


def write_export(model: CFANet, metric: Metric, checkpoint: Path, out_dir: str | Path) -> Path:
    """Writes config.json, meta.json, model.safetensors and README.md into `out_dir`, which must
    not exist or be empty; the folder appears whole or not at all (written beside it, then renamed)."""
    from safetensors.numpy import save_file

    from bpclip_jax.hub import EXPORT_FORMAT

    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ConvertError(f"{out_dir} already exists and is not an empty folder: remove it or "
                           f"choose another OUT_DIR")
    provenance = {"converted_from": f"pyiqa {PYIQA_VERSION}", "metric": metric.name,
                  "release": metric.release, "checkpoint": checkpoint.name,
                  "sha256": _sha256(checkpoint), "url": metric.urls[0]}
    meta = {"format": EXPORT_FORMAT, "dataset": SCALE, "mos_range": [0.0, 1.0], "higher_is_better": True,
            "full_reference": metric.full_reference, "arch": "cfanet", "provenance": provenance}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        flat = {"/".join(str(k) for k in p): np.asarray(v.get_value())
                for p, v in nnx.to_flat_state(nnx.state(model))}
        save_file(flat, str(tmp / "model.safetensors"))
        (tmp / "config.json").write_text(model_config(metric).to_json_best_effort(indent=1) + "\n")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
        (tmp / "README.md").write_text(model_card(metric, provenance))
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def convert(checkpoint: str | Path, out_dir: str | Path, metric: str) -> Path:
    """pyiqa `.pth` -> export folder (see the module docstring)."""
    if metric not in METRICS:
        raise ConvertError(f"--metric {metric}: not one of {', '.join(METRICS)}")
    checkpoint = Path(checkpoint)
    state = read_checkpoint(checkpoint)
    model = cfanet_from_pyiqa(state, METRICS[metric], str(checkpoint))
    return write_export(model, METRICS[metric], checkpoint, out_dir)


# ------------------------------------------------------------------------------ the command

USAGE = "python -m bpclip_jax.convert pyiqa CHECKPOINT.pth OUT_DIR --metric NAME"


def define_flags() -> None:
    flags.DEFINE_enum("metric", None, list(METRICS), "pyiqa's metric the checkpoint was released for")


def main(argv):
    if len(argv) != 4 or argv[1] != "pyiqa":
        raise app.UsageError(f"usage: {USAGE} (the source must be 'pyiqa'; NAME: {', '.join(METRICS)})")
    if flags.FLAGS.metric is None:
        raise app.UsageError(f"--metric is required: one of {', '.join(METRICS)}")
    out = convert(argv[2], argv[3], flags.FLAGS.metric)
    print(f"converted {argv[2]} ({flags.FLAGS.metric}) to {out}; load it with "
          f"Scorer.from_pretrained({str(out)!r})")


if __name__ == "__main__":
    from bpclip_jax import cli

    define_flags()
    cli.run(main)
