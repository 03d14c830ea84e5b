"""TOPIQ's CFANet with a ResNet50 backbone (Chen et al., TIP 2024), FR and NR: the architecture of
pyiqa 0.1.16's `CFANet` (`pyiqa/archs/topiq_arch.py`), so that pyiqa's released checkpoints convert
to it (bpclip_jax.convert) and score as pyiqa scores them, and so that it trains through this
project's protocol as BPCLIP's baseline (Table II's TOPIQ row; configs/topiq_*.py).

It shares BPCLIP's backbone and layers (models/resnet.py, models/layers.py); what differs is the
top-down order and the head:

  levels    the five ResNet50 levels F_1..F_5 (act1, layer1..layer4), ImageNet-normalized input
  GLP_i     gated local pooling of each level (FR: dist, ref, |dist - ref|; NR: the split gate),
            average-pooled to level 5's grid, 1x1 conv -> D, GELU; + the positional map
  SA_i      one self-attention layer per level                                    [B,L_i,D]
  top-down  Q = SA_5; Q = Cross_j(Q, SA_{4-j}) for j = 0..3 (query carried from the coarsest
            level down to the finest, key/value the next finer level)             [B,L_5,D]
  pool      one more self-attention layer on Q, then the mean over tokens           [B,D]
  head      LN, Linear D, GELU, LN, Linear D, GELU, Linear 1 (softplus if out_act)  [B]

Two of pyiqa's details are kept because the released checkpoints were trained with them:
  - a level is average-pooled only when it is larger than level 5 along both sides; otherwise its
    tokens stay at its own size (possible only for inputs with a side of 16 pixels or less) and
    the positional map is resized to that size;
  - `test_size`: at evaluation (train=False) the distorted image is first resized so that its
    shorter side is `test_size` (bilinear, antialiased, torchvision's `resize` on a tensor), as
    pyiqa does for the variants that set `test_img_size` (topiq_nr-flive 384, the face variants 512).

`__call__(dist, ref=None, *, train=False, rngs=None)`: dist, ref `[B,H,W,3]` float in [0,1].
Returns `(score [B] float32, aux)`: 'gates' (five `[B,H_i,W_i]` GLP gate maps), 'attention' (the
four cross-attention maps `[B,L_5,L_k]`, head mean, coarse to fine) and 'feature' (`[B,D]`, the
pooled tokens the head reads).

Precision: `dtype` is the compute dtype of the backbone, GLP and attention layers; the token mean
and the head are float32 (as BPCLIP's heads after pooling: a bfloat16 score ties images).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bpclip_jax.models.bpclip import IMAGENET_MEAN, IMAGENET_STD
from bpclip_jax.models.layers import GLP, LN_EPS, PositionalMap, TransformerLayer, gelu, torch_linear
from bpclip_jax.models.resnet import LEVEL_CHANNELS, ResNet50

# ------------------------------------------------------------------------------ test-time resize


def shorter_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(h, w) of torchvision's `resize(img, size)` with an int size: the shorter side becomes
    `size`, the longer one int(size * long / short) (truncated)."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    return (new_long, new_short) if width <= height else (new_short, new_long)


def bilinear_aa_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] weights of torch's 1-D antialiased bilinear interpolation
    (`F.interpolate(mode='bilinear', align_corners=False, antialias=True)`): a triangle filter
    widened by the scale when downsampling, taps clipped to the image, weights normalized. Computed
    in float32 with torch's casts (its CPU kernel's arithmetic for float images): the float32 centre
    of output pixel 400 is off by up to 3e-5, which moves its weights by as much."""
    f32, f64 = np.float32, np.float64
    scale = f32(n_in) / f32(n_out)
    support = scale if scale >= 1.0 else f32(1.0)
    inv = f32(1.0 / f64(scale)) if scale >= 1.0 else f32(1.0)
    m = np.zeros((n_out, n_in), np.float32)
    for i in range(n_out):
        center = f32(f64(scale) * (i + 0.5))
        lo = max(int(f64(center - support) + 0.5), 0)
        hi = min(int(f64(center + support) + 0.5), n_in)
        # tap j: (j - center) in float32, then + 0.5 and * inv in double, the triangle in float32
        x = np.asarray([(f64(f32(j) - center) + 0.5) * f64(inv) for j in range(lo, hi)], np.float32)
        w = np.where(np.abs(x) < 1, f32(1.0) - np.abs(x), f32(0.0)).astype(np.float32)
        total = np.cumsum(w, dtype=np.float32)[-1] if w.size else f32(0.0)  # summed in order
        if total != 0:
            m[i, lo:hi] = w / total
    return m


def resize_shorter_side(images: jax.Array, size: int) -> jax.Array:
    """[B,H,W,C] -> [B,h,w,C] with the shorter side `size` (torchvision's tensor `resize`, bilinear,
    antialias=True); unchanged when the size already fits. Sizes are static: one compile per shape."""
    h, w = images.shape[1:3]
    nh, nw = shorter_side_size(h, w, size)
    if (nh, nw) == (h, w):
        return images
    rows = jnp.asarray(bilinear_aa_matrix(h, nh))
    cols = jnp.asarray(bilinear_aa_matrix(w, nw))
    out = jnp.einsum("oh,bhwc,pw->bopc", rows, images.astype(jnp.float32), cols,
                     precision=jax.lax.Precision.HIGHEST)
    return out.astype(images.dtype)


# ------------------------------------------------------------------------------ the model


class ScoreHead(nnx.Module):
    """TOPIQ's `score_linear`: LN, Linear D->D, GELU, LN, Linear D->D, GELU, Linear D->1
    (torch's default Linear init, which TOPIQ leaves these layers at). [B,D] -> [B,1]."""

    def __init__(self, dim: int, *, rngs: nnx.Rngs):
        f32 = dict(dtype=jnp.float32, rngs=rngs)
        self.norm1 = nnx.LayerNorm(dim, epsilon=LN_EPS, **f32)
        self.fc1 = torch_linear(dim, dim, **f32)
        self.norm2 = nnx.LayerNorm(dim, epsilon=LN_EPS, **f32)
        self.fc2 = torch_linear(dim, dim, **f32)
        self.fc3 = torch_linear(dim, 1, **f32)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = gelu(self.fc1(self.norm1(x)))
        x = gelu(self.fc2(self.norm2(x)))
        return self.fc3(x)


class CFANet(nnx.Module):
    """TOPIQ (CFANet, ResNet50) for full-reference (`full_reference=True`) or no-reference IQA;
    see the module docstring for the computation, the inputs and aux."""

    def __init__(
        self,
        *,
        full_reference: bool = True,
        dim: int = 256,
        heads: int = 4,
        ffn_dim: int = 1024,
        dropout: float = 0.1,
        pos_grid: int = 32,
        out_act: bool = False,
        test_size: int = 0,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if full_reference and test_size:
            raise ValueError("test_size resizes the distorted image alone, as pyiqa does: it is for "
                             "no-reference models only")
        self.full_reference, self.out_act, self.test_size = full_reference, out_act, int(test_size)
        self.dtype = dtype
        levels = len(LEVEL_CHANNELS)
        self.backbone = ResNet50(dtype=dtype, rngs=rngs)
        self.glp = nnx.List([GLP(c, dim, full_reference=full_reference, dtype=dtype, rngs=rngs)
                             for c in LEVEL_CHANNELS])
        self.position = PositionalMap(dim, pos_grid, rngs=rngs)
        layer = dict(dim=dim, heads=heads, ffn=ffn_dim, dropout=dropout, dtype=dtype, rngs=rngs)
        self.sa = nnx.List([TransformerLayer(cross=False, **layer) for _ in range(levels)])
        self.cross = nnx.List([TransformerLayer(cross=True, **layer) for _ in range(levels - 1)])
        self.pool = TransformerLayer(cross=False, **layer)
        self.head = ScoreHead(dim, rngs=rngs)

    def normalize(self, images: jax.Array) -> jax.Array:
        """[B,H,W,3] in [0,1] -> ImageNet-normalized, in the compute dtype."""
        mean, std = jnp.asarray(IMAGENET_MEAN), jnp.asarray(IMAGENET_STD)
        return ((images - mean) / std).astype(self.dtype)

    def _levels(self, dist, ref):
        if self.full_reference:
            # One backbone pass over [dist; ref]: the same weights, twice the batch.
            both = self.backbone(self.normalize(jnp.concatenate([dist, ref], axis=0)))
            return zip(*(jnp.split(f, 2, axis=0) for f in both))
        return self.backbone(self.normalize(dist)), (None,) * len(LEVEL_CHANNELS)

    def __call__(self, dist: jax.Array, ref: jax.Array | None = None, *, train: bool = False,
                 rngs: nnx.Rngs | None = None):
        if self.full_reference and ref is None:
            raise ValueError("a full-reference CFANet needs a reference image")
        if not self.full_reference and ref is not None:
            raise ValueError("a no-reference CFANet takes no reference image")
        if self.test_size and not train:
            dist = resize_shorter_side(dist, self.test_size)
        dists, refs = self._levels(dist, ref)
        grid = dists[-1].shape[1:3]
        tokens, gates = [], []
        for glp, sa, d, r in zip(self.glp, self.sa, dists, refs):
            h, w = d.shape[1:3]
            out_hw = grid if (h > grid[0] and w > grid[1]) else (h, w)
            t, g = glp(d, r, out_hw)
            t = t + self.position(*out_hw).astype(t.dtype)
            tokens.append(sa(t, train=train, rngs=rngs)[0])
            gates.append(g)
        query, attention = tokens[-1], []
        for layer, memory in zip(self.cross, tokens[-2::-1]):  # coarse to fine
            query, weights = layer(query, memory, train=train, rngs=rngs)
            attention.append(weights)
        pooled, _ = self.pool(query, train=train, rngs=rngs)
        feature = pooled.astype(jnp.float32).mean(axis=1)                      # [B,D]
        score = self.head(feature)[:, 0]
        if self.out_act:
            score = jax.nn.softplus(score)
        return score, {"gates": gates, "attention": attention, "feature": feature}

