"""Pretrained weights: hub or local files -> Flax NNX modules, by explicit name maps.

Every loader is strict: each target variable must find its source key with the right shape, and
each source key must be used (or be one of the documented ignored keys); otherwise one
`WeightLoadError` lists everything missing, unexpected and mismatched. All layout transposes
(torch OIHW -> HWIO convolutions, [out,in] -> [in,out] linears) live in `torch_layout`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from bpclip_jax.models.clip_text import CLIPTextConfig, CLIPTextModel
from bpclip_jax.models.resnet import ResNet50

log = logging.getLogger(__name__)

RESNET50_DEFAULT = "timm/resnet50.a1_in1k"
CLIP_DEFAULT = "openai/clip-vit-base-patch32"
HUB_URL = "https://huggingface.co/{repo}/resolve/main/{file}"


class WeightLoadError(ValueError):
    """A weight file does not fit the model: the message lists every problem found."""


VarPath = tuple  # a variable's path in an nnx state, e.g. ('layer1', 0, 'conv1', 'kernel')


# Our variables' leaf names -> torch's (the others, e.g. 'bias', are the same).
TORCH_LEAF = {"kernel": "weight", "scale": "weight", "embedding": "weight",
              "mean": "running_mean", "var": "running_var"}


def torch_name(path: VarPath) -> str:
    """Our variable path -> the torch state-dict key: the same dotted path, torch's leaf names."""
    return ".".join(str(p) for p in path[:-1]) + "." + TORCH_LEAF.get(path[-1], path[-1])


def torch_layout(path: VarPath, value: np.ndarray) -> np.ndarray:
    """A torch tensor in our layout: conv OIHW -> HWIO, linear [out,in] -> [in,out]."""
    if path[-1] == "kernel" and value.ndim == 4:
        return value.transpose(2, 3, 1, 0)
    if path[-1] == "kernel" and value.ndim == 2:
        return value.T
    return value


def assign_strict(
    module: nnx.Module,
    source: Mapping[str, np.ndarray],
    *,
    key_of: Callable[[VarPath], str],
    convert: Callable[[VarPath, np.ndarray], np.ndarray] = lambda path, value: value,
    ignore: Callable[[str], bool] = lambda key: False,
    what: str = "weights",
) -> nnx.Module:
    """Sets every variable of `module` from `source[key_of(path)]`, or raises listing all problems."""
    missing, mismatched, updates, used = [], [], [], set()
    for path, variable in nnx.to_flat_state(nnx.state(module)):
        key = key_of(path)
        if key not in source:
            missing.append(key)
            continue
        used.add(key)
        value = convert(path, np.asarray(source[key]))
        if value.shape != tuple(variable.shape):
            mismatched.append(f"{key}: file {value.shape}, model {tuple(variable.shape)}")
            continue
        updates.append((variable, value))
    unexpected = sorted(k for k in source if k not in used and not ignore(k))
    if missing or unexpected or mismatched:
        lines = [f"{what} do not fit the model:"]
        for name, items in (("missing", missing), ("unexpected", unexpected),
                            ("shape mismatch", mismatched)):
            if items:
                lines.append(f"  {name} ({len(items)}): " + ", ".join(items))
        raise WeightLoadError("\n".join(lines))
    for variable, value in updates:
        variable.set_value(jnp.asarray(value, dtype=variable.get_value().dtype))
    return module


def _is_counter(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def resnet50_from_state_dict(state: Mapping[str, np.ndarray], *, dtype=None) -> ResNet50:
    """ResNet50 from a torchvision/timm state dict (numpy arrays or torch tensors).

    `fc.*` (the classifier) and `num_batches_tracked` are ignored; any other unused key, a missing
    key or a shape mismatch raises one `WeightLoadError` listing them all.
    """
    state = {k: np.asarray(v) for k, v in state.items()}
    model = ResNet50(rngs=nnx.Rngs(0), **({"dtype": dtype} if dtype is not None else {}))
    return assign_strict(
        model, state, key_of=torch_name, convert=torch_layout,
        ignore=lambda k: k.startswith("fc.") or _is_counter(k), what="ResNet50 weights")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def fetch(source: str, filename: str) -> Path:
    """A local path for `filename` of `source`: a file, a directory holding it, or a hub repo id.

    Hub files are downloaded once and cached by huggingface_hub; offline with nothing cached the
    error says which file to download and where to put it.
    """
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        if (path / filename).is_file():
            return path / filename
        raise FileNotFoundError(f"{path} has no {filename}")
    if source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise FileNotFoundError(f"{source} is neither a local file or directory nor a hub repo id")
    import huggingface_hub

    try:
        return Path(huggingface_hub.hf_hub_download(source, filename, local_files_only=_offline()))
    except Exception as err:  # offline, no network, no such repo: one actionable message
        raise FileNotFoundError(
            f"could not get {filename} of {source} ({type(err).__name__}: {err}).\n"
            f"Download {HUB_URL.format(repo=source, file=filename)} on a machine with network "
            f"access and pass its path (or the directory holding it) as the source instead of "
            f"{source!r}.") from err


def load_resnet50(source: str = RESNET50_DEFAULT, *, dtype=None) -> ResNet50:
    """ImageNet ResNet50 from a hub repo id, a local directory or a local `.safetensors` file."""
    from safetensors.numpy import load_file

    path = fetch(source, "model.safetensors")
    log.info("loading ResNet50 weights from %s", path)
    return resnet50_from_state_dict(load_file(path), dtype=dtype)


def _clip_ignored(key: str) -> bool:
    return key.startswith(("vision_model.", "visual_projection.", "logit_scale")) or key.endswith(
        "position_ids")


def clip_text_from_state_dict(state: Mapping[str, np.ndarray], cfg: CLIPTextConfig) -> CLIPTextModel:
    """Text tower from a PyTorch CLIPModel state dict (`text_model.*`, `text_projection.weight`)."""
    state = {k: np.asarray(v) for k, v in state.items()}
    return assign_strict(CLIPTextModel(cfg, rngs=nnx.Rngs(0)), state, key_of=torch_name,
                         convert=torch_layout, ignore=_clip_ignored, what="CLIP text weights")


def clip_text_from_flax(params: Mapping, cfg: CLIPTextConfig) -> CLIPTextModel:
    """Text tower from FlaxCLIPModel parameters (the tree of its `flax_model.msgpack`)."""
    params = params.get("params", params)
    flat = {}

    def walk(node, prefix):
        for k, v in node.items():
            if isinstance(v, Mapping):
                walk(v, prefix + (str(k),))
            else:
                flat["/".join(prefix + (str(k),))] = np.asarray(v)

    walk(params, ())
    return assign_strict(
        CLIPTextModel(cfg, rngs=nnx.Rngs(0)), flat,
        key_of=lambda path: "/".join(str(p) for p in path),
        ignore=lambda k: k.startswith(("vision_model/", "visual_projection/", "logit_scale")),
        what="CLIP text weights (msgpack)")


def load_clip_text(directory: Path) -> CLIPTextModel:
    """Text tower from a directory in the hub layout: config.json and model.safetensors or
    flax_model.msgpack."""
    cfg = CLIPTextConfig.from_json(directory / "config.json")
    if (directory / "model.safetensors").is_file():
        from safetensors.numpy import load_file

        return clip_text_from_state_dict(load_file(directory / "model.safetensors"), cfg)
    if (directory / "flax_model.msgpack").is_file():
        from flax import serialization

        params = serialization.msgpack_restore((directory / "flax_model.msgpack").read_bytes())
        return clip_text_from_flax(params, cfg)
    raise FileNotFoundError(f"{directory} has neither model.safetensors nor flax_model.msgpack")
