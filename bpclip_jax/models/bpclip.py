"""BPCLIP: bottom-up multiscale cross attention over ResNet50 levels, mapped into CLIP's text space.

The equations are the paper's (Eq. 1-9); the layers are TOPIQ's (models/layers.py). Choices that are
ours, each a constructor switch:
  - `progressive`: MSCA pairs levels literally as Eq. 4 (query = G_i) by default; True carries the
    query (Q_1 = G_1, Q_{i+1} = G'_i).
  - `branches`: 'info+weight' (the paper) or 'info' (Table VI: uniform token weights).
  - `direction`: 'bottom_up' (query level i, key/value level i+1) or 'top_down' (query level i+1,
    key/value level i, residual to level i+1). The weight branch attends over the query's level.
  - `use_text`: False regresses from concat(g_i) instead of the 4 x 40 prompt similarities.
  - `text_head`: what the regression MLP of Eq. 9 reads (TEXT_HEADS). 'cosine' (the default) is
    Eq. 9 as printed: MLP(s_1 ⊕ ... ⊕ s_4) on the cosine similarities of Eq. 8. 'softmax' is Fig.
    1's caption: MLP on softmax(tau s_i) at CLIP's logit scale tau = 100, which can saturate to
    one-hot over the prompts (docs/design.md: the study of the three heads). 'softmax_learned'
    learns tau as CLIP learns its logit scale: log tau starts at ln(1/0.07) (tau 14.3) and is
    clipped at ln 100.
  - the token weight is one scalar per token, and the weighted pooling precedes the CLIP mapping.

Precision: `dtype` (bfloat16 for GPU runs; parameters stay float32) is the compute dtype of the
backbone, GLP, the attention layers and the per-token heads MLP_f, MLP_w. Attention and prompt
softmaxes, LayerNorm statistics, the token pooling, the cosine similarity and the heads after the
pooling (MLP_x, MLP_reg) are float32 whatever `dtype` says: those heads see B*4 vectors, so float32
costs nothing there, while a bfloat16 score is rounded to steps of 2^-8 (0.004 on [0.5, 1)), which
ties images and costs SRCC.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bpclip_jax.models.layers import GLP, MLP, PositionalMap, TransformerLayer
from bpclip_jax.models.resnet import LEVEL_CHANNELS, ResNet50, level_shapes

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_LOGIT_SCALE = 100.0        # CLIP's trained logit scale (its clip): Fig. 1's softmax temperature
CLIP_INITIAL_SCALE = 1 / 0.07   # CLIP's logit scale at the start of its training
TEXT_HEADS = ("cosine", "softmax", "softmax_learned")
NUM_PAIRS = len(LEVEL_CHANNELS) - 1  # i = 1..4


class TextFeatures(nnx.Variable):
    """The normalized CLIP text features of the prompts: a constant, never trained."""


class BPCLIP(nnx.Module):
    """BPCLIP for full-reference (`full_reference=True`) or no-reference IQA.

    `__call__(dist, ref=None, *, train=False, rngs=None)`:
      dist, ref: `[B,H,W,3]` float in [0,1] (normalized with ImageNet statistics inside).
      train: enables dropout, which then draws from `rngs` (an `nnx.Rngs` with a 'dropout' stream).
    Returns `(score [B] float32, aux)`, aux holding
      'similarity' `[B,4,P]` cosine similarities of Eq. 8 (only with use_text),
      'probs' `[B,4,P]` prompt probabilities per level (only with use_text): softmax(tau s_i), what
        the softmax heads regress on; under the cosine head the same softmax at CLIP's logit
        scale, shown by explanations only (`prompt_probabilities`),
      'token_weights' `[B,4,L]` weight-branch outputs w_i (ones for branches='info'),
      'gates' list of five `[B,H_i,W_i]` GLP gate maps.
    Token t of the L = H5*W5 tokens sits at row t // W5, column t % W5 of `feature_grid(H, W)`.
    """

    def __init__(
        self,
        text_features: np.ndarray | jax.Array,
        *,
        full_reference: bool = True,
        dim: int = 256,
        heads: int = 4,
        ffn_dim: int = 1024,
        dropout: float = 0.1,
        pos_grid: int = 32,
        branches: str = "info+weight",
        direction: str = "bottom_up",
        progressive: bool = False,
        use_text: bool = True,
        text_head: str = "cosine",
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if branches not in ("info", "info+weight"):
            raise ValueError(f"branches must be 'info' or 'info+weight', got {branches!r}")
        if direction not in ("bottom_up", "top_down"):
            raise ValueError(f"direction must be 'bottom_up' or 'top_down', got {direction!r}")
        if text_head not in TEXT_HEADS:
            raise ValueError(f"text_head must be one of {', '.join(TEXT_HEADS)}, got {text_head!r}")
        text_features = jnp.asarray(text_features, jnp.float32)
        if text_features.ndim != 2:
            raise ValueError(f"text_features must be [P, E], got shape {text_features.shape}")
        num_prompts, clip_dim = text_features.shape
        self.full_reference = full_reference
        self.branches, self.direction = branches, direction
        self.progressive, self.use_text, self.text_head = progressive, use_text, text_head
        self.dtype = dtype

        self.backbone = ResNet50(dtype=dtype, rngs=rngs)
        self.glp = nnx.List([GLP(c, dim, full_reference=full_reference, dtype=dtype, rngs=rngs)
                             for c in LEVEL_CHANNELS])
        self.position = PositionalMap(dim, pos_grid, rngs=rngs)
        layer = dict(dim=dim, heads=heads, ffn=ffn_dim, dropout=dropout, dtype=dtype, rngs=rngs)
        self.msca = nnx.List([TransformerLayer(cross=True, **layer) for _ in range(NUM_PAIRS)])
        self.sa = (nnx.List([TransformerLayer(cross=False, **layer) for _ in range(NUM_PAIRS)])
                   if branches == "info+weight" else None)
        head = dict(norm=True, dtype=dtype, rngs=rngs)
        self.mlp_f = MLP(dim, dim, dim, **head)
        self.mlp_w = MLP(dim, dim, 1, **head) if branches == "info+weight" else None
        if use_text:
            self.text_features = TextFeatures(text_features)
            self.mlp_x = MLP(dim, clip_dim, clip_dim, norm=True, dtype=jnp.float32, rngs=rngs)
            reg_in = NUM_PAIRS * num_prompts
        else:
            self.text_features = None
            self.mlp_x = None
            reg_in = NUM_PAIRS * dim
        learned = use_text and text_head == "softmax_learned"
        self.log_tau = nnx.Param(jnp.asarray(math.log(CLIP_INITIAL_SCALE))) if learned else None
        self.mlp_reg = MLP(reg_in, dim, 1, norm=False, dtype=jnp.float32, rngs=rngs)

    def normalize(self, images: jax.Array) -> jax.Array:
        """[B,H,W,3] in [0,1] -> ImageNet-normalized, in the compute dtype."""
        mean, std = jnp.asarray(IMAGENET_MEAN), jnp.asarray(IMAGENET_STD)
        return ((images - mean) / std).astype(self.dtype)

    def tau(self) -> jax.Array:
        """The prompt softmax's temperature: learned (clipped at CLIP's 100) or CLIP's 100."""
        if self.log_tau is None:
            return jnp.asarray(CLIP_LOGIT_SCALE)
        return jnp.exp(jnp.minimum(self.log_tau[...], math.log(CLIP_LOGIT_SCALE)))

    def prompt_probabilities(self, similarity: jax.Array) -> jax.Array:
        """softmax(tau s) over the prompts `[..., P]`: what the softmax heads regress on, and the
        one definition of the probabilities that explanations show (under the cosine head, at
        CLIP's logit scale, as CLIP's zero-shot classifier reads its cosines)."""
        return jax.nn.softmax(self.tau() * similarity, axis=-1)

    def _tokens(self, dist, ref):
        """Backbone + GLP + positional map -> five token sets G_i `[B,L,D]` and the gate maps."""
        normalize = self.normalize
        if self.full_reference:
            # One backbone pass over [dist; ref]: the same weights, twice the batch.
            both = self.backbone(normalize(jnp.concatenate([dist, ref], axis=0)))
            dists, refs = zip(*(jnp.split(f, 2, axis=0) for f in both))
        else:
            dists, refs = self.backbone(normalize(dist)), (None,) * len(LEVEL_CHANNELS)
        grid = dists[-1].shape[1:3]
        position = self.position(*grid).astype(self.dtype)
        tokens, gates = [], []
        for glp, d, r in zip(self.glp, dists, refs):
            t, g = glp(d, r, grid)
            tokens.append(t + position)
            gates.append(g)
        return tokens, gates

    def _branches(self, tokens, *, train, rngs):
        """MSCA (Eq. 4) and SA (Eq. 5) -> info `[B,4,L,D]`, weight-branch tokens or None."""
        pairs = [(i, i + 1) for i in range(NUM_PAIRS)]
        if self.direction == "top_down":
            pairs = [(k, q) for q, k in reversed(pairs)]
        info, weight, carried = [], [], None
        for layer, (q, kv) in zip(self.msca, pairs):
            query = carried if (self.progressive and carried is not None) else tokens[q]
            out, _ = layer(query, tokens[kv], train=train, rngs=rngs)
            info.append(out)
            carried = out
        if self.sa is not None:
            for layer, (q, _) in zip(self.sa, pairs):
                weight.append(layer(tokens[q], train=train, rngs=rngs)[0])
        if self.direction == "top_down":  # report levels in order 1..4 of their key level
            info, weight = info[::-1], weight[::-1]
        return jnp.stack(info, axis=1), (jnp.stack(weight, axis=1) if weight else None)

    def __call__(self, dist: jax.Array, ref: jax.Array | None = None, *, train: bool = False,
                 rngs: nnx.Rngs | None = None):
        if self.full_reference and ref is None:
            raise ValueError("a full-reference BPCLIP needs a reference image")
        if not self.full_reference and ref is not None:
            raise ValueError("a no-reference BPCLIP takes no reference image")
        tokens, gates = self._tokens(dist, ref)
        info, weight = self._branches(tokens, train=train, rngs=rngs)
        f = self.mlp_f(info).astype(jnp.float32)                              # [B,4,L,D]
        if weight is None:
            w = jnp.ones(f.shape[:-1] + (1,), jnp.float32)
        else:
            w = jax.nn.sigmoid(self.mlp_w(weight).astype(jnp.float32))         # [B,4,L,1]
        g = (f * w).sum(axis=2) / (w.sum(axis=2) + 1e-8)                     # [B,4,D] (Eq. 6)
        b = g.shape[0]
        if self.use_text:
            x = self.mlp_x(g)                                                # [B,4,E] (Eq. 7)
            x = x / jnp.linalg.norm(x, axis=-1, keepdims=True).clip(1e-12)
            text = jax.lax.stop_gradient(self.text_features[...])
            similarity = x @ text.T                                          # [B,4,P] (Eq. 8)
            probs = self.prompt_probabilities(similarity)
            features = (similarity if self.text_head == "cosine" else probs).reshape(b, -1)
        else:
            similarity = probs = None
            features = g.reshape(b, -1)
        score = self.mlp_reg(features)[:, 0]                                 # [B] (Eq. 9)
        aux = {"token_weights": w[..., 0], "gates": gates}
        if self.use_text:
            aux.update(probs=probs, similarity=similarity)
        return score, aux


def feature_grid(height: int, width: int) -> tuple[int, int]:
    """(H5, W5): the token grid of an input of height x width (level 5's size, torch rounding)."""
    return level_shapes(height, width)[-1]


def count_params(module: nnx.Module) -> int:
    """Number of trainable parameters (nnx.Param) in `module`."""
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(module, nnx.Param)))
