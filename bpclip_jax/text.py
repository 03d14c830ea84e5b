"""The 40 quality prompts and their CLIP text features (a constant of the model).

The paper does not list its adjectives; docs/design.md fixes them (a [choice]): six dimensions, the
template "a {adjective} photo." ("an" before a vowel), fixed order, index = column of T.
Features are computed once per source by the frozen text tower and cached on disk.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bpclip_jax.weights import CLIP_DEFAULT, fetch, load_clip_text

log = logging.getLogger(__name__)

DIMENSIONS: dict[str, tuple[str, ...]] = {
    "sharpness": ("sharp", "crisp", "clear", "detailed", "blurry", "fuzzy", "out-of-focus",
                  "motion-blurred"),
    "noise": ("clean", "noise-free", "smooth", "noisy", "grainy", "speckled"),
    "color": ("colorful", "vivid", "vibrant", "dull", "faded", "washed-out", "oversaturated",
              "discolored"),
    "exposure": ("bright", "well-exposed", "well-lit", "dark", "dim", "underexposed", "overexposed"),
    "contrast": ("high-contrast", "low-contrast", "flat", "hazy", "murky"),
    "artifacts": ("pristine", "pixelated", "blocky", "compressed", "jagged", "distorted"),
}
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json",
                   "tokenizer.json")


@dataclasses.dataclass(frozen=True)
class Prompt:
    adjective: str
    dimension: str

    @property
    def text(self) -> str:
        article = "an" if self.adjective[0] in "aeiou" else "a"
        return f"{article} {self.adjective} photo."


PROMPTS: tuple[Prompt, ...] = tuple(
    Prompt(adjective, dimension) for dimension, adjectives in DIMENSIONS.items()
    for adjective in adjectives)


def dimension_indices() -> dict[str, list[int]]:
    """Dimension -> the indices of its prompts in PROMPTS (columns of the probabilities)."""
    return {d: [i for i, p in enumerate(PROMPTS) if p.dimension == d] for d in DIMENSIONS}


def _source_dir(source: str) -> Path:
    """A local directory in the hub's layout for `source` (fetching what a hub repo needs)."""
    if Path(source).expanduser().is_dir():
        return Path(source).expanduser()
    config = fetch(source, "config.json")
    for name in ("vocab.json", "merges.txt"):
        fetch(source, name)
    fetch(source, "model.safetensors")
    return config.parent


def encode_text(prompts: Sequence[str | Prompt], source: str = CLIP_DEFAULT) -> np.ndarray:
    """`[N, E]` float32 L2-normalized projected CLIP text features of `prompts`.

    source: a hub repo id or a local directory with config.json, the tokenizer files (vocab.json,
    merges.txt) and model.safetensors or flax_model.msgpack.
    """
    import jax.numpy as jnp
    from transformers import CLIPTokenizer

    directory = _source_dir(source)
    texts = [p.text if isinstance(p, Prompt) else p for p in prompts]
    model = load_clip_text(directory)
    tokenizer = CLIPTokenizer.from_pretrained(str(directory))
    length = model.text_model.embeddings.position_embedding.embedding.shape[0]
    ids = tokenizer(texts, padding="max_length", max_length=length, truncation=True,
                    return_tensors="np")["input_ids"]
    features = np.asarray(model(jnp.asarray(ids, jnp.int32)), np.float32)
    return features / np.linalg.norm(features, axis=-1, keepdims=True)


def cache_dir() -> Path:
    root = os.environ.get("BPCLIP_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "bpclip_jax"
    return Path(root).expanduser()


def _cache_key(source: str, prompts: Sequence[Prompt]) -> str:
    parts = [source] + [p.text for p in prompts]
    local = Path(source).expanduser()
    if local.is_dir():  # a local directory can change: key on its weight files too
        parts.append(str(local.resolve()))
        parts += [f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}"
                  for f in sorted(local.iterdir()) if f.suffix in (".safetensors", ".msgpack")]
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()[:16]


def prompt_features(source: str = CLIP_DEFAULT, prompts: Sequence[Prompt] = PROMPTS) -> np.ndarray:
    """Features of `prompts` ([40, E] for PROMPTS), computed once per source and cached on disk."""
    path = cache_dir() / "text_features" / f"{_cache_key(source, prompts)}.npy"
    if path.is_file():
        return np.load(path)
    log.info("encoding %d prompts with the CLIP text tower of %s", len(prompts), source)
    features = encode_text(prompts, source)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, features)
    tmp.replace(path)
    return features


def random_features(num: int = len(PROMPTS), dim: int = 512, seed: int = 0,
                    cosine: float = 0.995) -> np.ndarray:
    """`[num, dim]` float32 unit vectors: stand-in text features for offline runs without CLIP
    weights, with every pairwise cosine similarity equal to `cosine` (a shared component plus one
    orthogonal component per prompt); random given `seed`.

    What the prompt softmax sees is tau * (cosine of an image feature x to each prompt), and the
    gap tau opens between prompts k and j is at most tau * |t_k - t_j| = tau * sqrt(2 (1 - cosine))
    for any unit x. The default makes that 10 logits at tau = 100, the spread that CLIP's
    prompts show for an image (their cosines to it differ by up to about 0.1), so the softmax stays
    graded. Stand-ins of CLIP's own pairwise cosines (~0.85) allow gaps of 55 logits, one-hot
    probabilities, and an offline demo run collapsed onto them.

    They carry no language: prompt probabilities of a model built on them explain nothing.
    """
    if not 0 <= cosine < 1 or num >= dim:
        raise ValueError(f"random_features needs 0 <= cosine < 1 and num < dim, got {cosine}, {num}, {dim}")
    # num + 1 orthonormal directions: one shared, one of its own per prompt, so every pairwise
    # cosine is exactly `cosine`
    basis, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, num + 1)))
    features = np.sqrt(cosine) * basis[:, 0] + np.sqrt(1 - cosine) * basis[:, 1:].T
    return features.astype(np.float32)
