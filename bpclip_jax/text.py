"""The 40 quality prompts and their CLIP text features (a constant of the model).

The paper does not list its adjectives; docs/design.md fixes them (a [choice]): six dimensions, the
template "a {adjective} photo." ("an" before a vowel), fixed order, index = column of T.
Features are computed once per source by the frozen text tower and cached on disk.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bpclip_jax.files import atomic_write
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
# The adjectives that name a defect; the others name a quality (a photo's "good" side). Text
# encoders place antonyms on a shared good/bad axis (CLIP-IQA's "good photo"/"bad photo"), which
# the CLIP-like stand-ins (`clip_like_features`) reproduce.
NEGATIVE = frozenset({
    "blurry", "fuzzy", "out-of-focus", "motion-blurred", "noisy", "grainy", "speckled", "dull",
    "faded", "washed-out", "oversaturated", "discolored", "dark", "dim", "underexposed",
    "overexposed", "low-contrast", "flat", "hazy", "murky", "pixelated", "blocky", "compressed",
    "jagged", "distorted"})
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json",
                   "tokenizer.json")


@dataclasses.dataclass(frozen=True)
class Prompt:
    adjective: str
    dimension: str

    @property
    def positive(self) -> bool:
        """Whether the adjective names a quality rather than a defect."""
        return self.adjective not in NEGATIVE

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
    data = io.BytesIO()
    np.save(data, features)
    atomic_write(path, data.getvalue())
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


# The squared weights of the CLIP-like stand-ins' components (they sum to 1 before the jitter of
# each prompt's own share): the shared template, the prompt's dimension, the good/bad axis shared
# by all dimensions, the dimension's own good/bad axis. Pairwise cosines: about 0.70 between
# antonyms of different dimensions, 0.78 between same-sign adjectives of different dimensions,
# 0.80 between antonyms of one dimension, 0.93 between synonyms (before the jitter).
CLIP_LIKE_SHARES = {"template": 0.74, "dimension": 0.125, "polarity": 0.04, "dimension_polarity": 0.025}
CLIP_LIKE_OWN = (0.03, 0.12)  # each prompt's own direction: a squared share drawn in this range


def clip_like_features(prompts: Sequence[Prompt] = PROMPTS, dim: int = 512, seed: int = 0) -> np.ndarray:
    """`[len(prompts), dim]` float32 unit vectors: stand-ins for CLIP's text features with CLIP's
    geometry, for offline runs. Each prompt is a sum of orthonormal random directions: one shared
    by all (the template "a ... photo.", which dominates CLIP's embeddings of prompts that share
    it), one per quality dimension (prompts cluster by meaning: six clusters), a good/bad axis on
    which each adjective sits by its sign (`Prompt.positive`; CLIP places antonyms on such an
    axis, what CLIP-IQA's "good photo"/"bad photo" prompts measure), one such axis per dimension,
    and a direction of its own whose share is drawn per prompt (CLIP_LIKE_OWN), which spreads
    the cosines. Their pairwise cosines span about 0.67-0.96 (`tests/test_text.py` checks it):
    the range reported for CLIP's quality prompts of one template (about 0.7-0.95; not measured
    here, where no CLIP weights can be had), while uniform stand-ins put every pair at one cosine.
    Random given `seed`; they carry no language."""
    dims = list(dict.fromkeys(p.dimension for p in prompts))
    n_axes = 1 + 2 * len(dims) + 1
    if n_axes + len(prompts) > dim:
        raise ValueError(f"clip_like_features needs dim >= {n_axes + len(prompts)}, got {dim}")
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((dim, n_axes + len(prompts))))
    basis = basis.T
    template, polarity = basis[0], basis[1]
    cluster = {d: basis[2 + i] for i, d in enumerate(dims)}
    own_polarity = {d: basis[2 + len(dims) + i] for i, d in enumerate(dims)}
    own = basis[n_axes:]
    share = CLIP_LIKE_SHARES
    own_share = rng.uniform(*CLIP_LIKE_OWN, size=len(prompts))
    rows = []
    for k, p in enumerate(prompts):
        sign = 1.0 if p.positive else -1.0
        v = (np.sqrt(share["template"]) * template + np.sqrt(share["dimension"]) * cluster[p.dimension]
             + sign * np.sqrt(share["polarity"]) * polarity
             + sign * np.sqrt(share["dimension_polarity"]) * own_polarity[p.dimension]
             + np.sqrt(own_share[k]) * own[k])
        rows.append(v / np.linalg.norm(v))
    return np.stack(rows).astype(np.float32)


STAND_INS = "'clip_like' or 'uniform:C' (every pairwise cosine C, 0 <= C < 1)"


def stand_in_features(kind: str, num: int = len(PROMPTS), dim: int = 512, seed: int = 0) -> np.ndarray:
    """Stand-in text features for runs without CLIP's weights (`model.stand_in_text`):
    'clip_like' (clip_like_features: CLIP's geometry) or 'uniform:C' (random_features at
    pairwise cosine C). `[num, dim]` float32 unit vectors; they carry no language."""
    if kind == "clip_like":
        if num != len(PROMPTS):
            raise ValueError(f"clip_like stand-ins are built for the {len(PROMPTS)} prompts, got {num}")
        return clip_like_features(PROMPTS, dim, seed)
    name, _, value = kind.partition(":")
    try:
        cosine = float(value)
    except ValueError:
        cosine = None
    if name != "uniform" or cosine is None or not 0 <= cosine < 1:
        raise ValueError(f"model.stand_in_text={kind!r}: expected {STAND_INS}")
    return random_features(num, dim, seed, cosine)
