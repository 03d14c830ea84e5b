"""BPCLIP's building blocks: gated local pooling (GLP), the positional map, TOPIQ's attention layers
and the MLP heads. Shapes are NHWC for maps and [B,L,D] for tokens; L = H5*W5 (level 5's grid).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

LN_EPS = 1e-5  # torch's default; Flax's is 1e-6
GATE_WIDTH = 64

# torch's default Conv2d/Linear init (kaiming_uniform with a=sqrt(5)), as TOPIQ's GLP convs use.
torch_default_init = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
# TOPIQ re-initializes the Linear layers of its attention blocks with kaiming-normal (fan-in).
kaiming_normal = nnx.initializers.variance_scaling(2.0, "fan_in", "normal")


def gelu(x: jax.Array) -> jax.Array:
    """Exact (erf) GELU, torch's nn.GELU(); jax.nn.gelu defaults to the tanh approximation."""
    return jax.nn.gelu(x, approximate=False)


def _pool_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] averaging weights of torch's adaptive_avg_pool along one axis."""
    m = np.zeros((n_out, n_in), np.float32)
    for i in range(n_out):
        start, end = (i * n_in) // n_out, -(-((i + 1) * n_in) // n_out)
        m[i, start:end] = 1.0 / (end - start)
    return m


def adaptive_avg_pool(x: jax.Array, out_hw: tuple[int, int]) -> jax.Array:
    """torch.nn.functional.adaptive_avg_pool2d for NHWC: window i spans [floor(i*n/o), ceil((i+1)*n/o)).

    Exact windows (a reshape and a mean) when sizes divide; otherwise the windows overlap and the
    pool is two small separable averaging matmuls, still exact.
    """
    b, h, w, c = x.shape
    oh, ow = out_hw
    if h % oh == 0 and w % ow == 0:
        return x.reshape(b, oh, h // oh, ow, w // ow, c).mean(axis=(2, 4))
    ph, pw = (jnp.asarray(_pool_matrix(n, o), x.dtype) for n, o in ((h, oh), (w, ow)))
    return jnp.einsum("oh,bhwc,pw->bopc", ph, x, pw)


def _linear_resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] weights of torch's 1-D linear interpolation (align_corners=False, no antialias)."""
    m = np.zeros((n_out, n_in), np.float32)
    scale = n_in / n_out
    for i in range(n_out):
        src = max((i + 0.5) * scale - 0.5, 0.0)
        lo = min(int(math.floor(src)), n_in - 1)
        hi = min(lo + 1, n_in - 1)
        frac = src - lo
        m[i, lo] += 1.0 - frac
        m[i, hi] += frac
    return m


class PositionalMap(nnx.Module):
    """One learned positional map shared by every level: D/2 row features and D/2 column features
    over a grid x grid lattice (trunc-normal 0.02), bilinearly resized (torch semantics) to H5 x W5.

    `__call__(h, w)` -> `[h*w, D]`; token t = row * w + col.
    """

    def __init__(self, dim: int, grid: int = 32, *, rngs: nnx.Rngs):
        init = nnx.initializers.truncated_normal(0.02)
        self.rows = nnx.Param(init(rngs.params(), (grid, dim // 2)))
        self.cols = nnx.Param(init(rngs.params(), (grid, dim - dim // 2)))

    def __call__(self, h: int, w: int) -> jax.Array:
        # Bilinear resizing of a map that is a row part (+) a column part is separable: resize each.
        rows = jnp.asarray(_linear_resize_matrix(self.rows.shape[0], h)) @ self.rows[...]
        cols = jnp.asarray(_linear_resize_matrix(self.cols.shape[0], w)) @ self.cols[...]
        grid = jnp.concatenate(
            [jnp.broadcast_to(rows[:, None], (h, w, rows.shape[-1])),
             jnp.broadcast_to(cols[None, :], (h, w, cols.shape[-1]))], axis=-1)
        return grid.reshape(h * w, -1)


def _conv(cin, cout, kernel, *, dtype, rngs):
    pad = kernel // 2
    return nnx.Conv(cin, cout, (kernel, kernel), padding=((pad, pad), (pad, pad)),
                    kernel_init=torch_default_init, dtype=dtype, rngs=rngs)


class GatePhi(nnx.Module):
    """phi_i of Eq. 1-2: 1x1 C->64, GELU, 3x3 64->64, GELU, 3x3 64->1. Returns gate logits [B,H,W,1]."""

    def __init__(self, channels: int, *, dtype, rngs: nnx.Rngs):
        self.conv1 = _conv(channels, GATE_WIDTH, 1, dtype=dtype, rngs=rngs)
        self.conv2 = _conv(GATE_WIDTH, GATE_WIDTH, 3, dtype=dtype, rngs=rngs)
        self.conv3 = _conv(GATE_WIDTH, 1, 3, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv3(gelu(self.conv2(gelu(self.conv1(x)))))


class GLP(nnx.Module):
    """Gated local pooling for one backbone level.

    FR (Eq. 1): diff = sqrt((Fd-Fr)^2 + 1e-12); h = concat(Fd, Fr, diff) * sigmoid(phi(diff)).
    NR (Eq. 2): [a|b] = 1x1 conv C->2C; h = GELU(a) * sigmoid(phi(b)).
    Then adaptive average pooling to `out_hw`, 1x1 conv -> D, GELU.

    `__call__(dist [B,H,W,C], ref [B,H,W,C] | None, out_hw)` -> (tokens `[B,h*w,D]`, gate `[B,H,W]`).
    """

    def __init__(self, channels: int, dim: int, *, full_reference: bool, dtype, rngs: nnx.Rngs):
        self.full_reference = full_reference
        self.phi = GatePhi(channels, dtype=dtype, rngs=rngs)
        if full_reference:
            self.split = None
            reduced_in = 3 * channels
        else:
            self.split = _conv(channels, 2 * channels, 1, dtype=dtype, rngs=rngs)
            reduced_in = channels
        self.reduce = _conv(reduced_in, dim, 1, dtype=dtype, rngs=rngs)

    def __call__(self, dist: jax.Array, ref: jax.Array | None, out_hw: tuple[int, int]):
        if self.full_reference:
            diff = jnp.sqrt(jnp.square(dist - ref) + 1e-12)
            gate = jax.nn.sigmoid(self.phi(diff))
            h = jnp.concatenate([dist, ref, diff], axis=-1) * gate
        else:
            a, b = jnp.split(self.split(dist), 2, axis=-1)
            gate = jax.nn.sigmoid(self.phi(b))
            h = gelu(a) * gate
        h = gelu(self.reduce(adaptive_avg_pool(h, out_hw)))
        return h.reshape(h.shape[0], -1, h.shape[-1]), gate[..., 0]


class Attention(nnx.Module):
    """Multi-head scaled dot-product attention (Eq. 3) with dropout on the attention weights.

    `__call__(query [B,Lq,D], memory [B,Lk,D])` -> (out `[B,Lq,D]`, weights `[B,Lq,Lk]` head mean).
    """

    def __init__(self, dim: int, heads: int, dropout: float, *, dtype, rngs: nnx.Rngs):
        self.heads = heads
        dense = dict(kernel_init=kaiming_normal, dtype=dtype, rngs=rngs)
        self.query = nnx.Linear(dim, dim, **dense)
        self.key = nnx.Linear(dim, dim, **dense)
        self.value = nnx.Linear(dim, dim, **dense)
        self.out = nnx.Linear(dim, dim, **dense)
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, query, memory, *, train: bool, rngs: nnx.Rngs | None):
        b, lq, d = query.shape
        split = lambda t: t.reshape(b, t.shape[1], self.heads, d // self.heads)  # noqa: E731
        q, k, v = split(self.query(query)), split(self.key(memory)), split(self.value(memory))
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d // self.heads)
        weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
        dropped = self.dropout(weights, deterministic=not train, rngs=rngs).astype(v.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", dropped, v).reshape(b, lq, d)
        return self.out(out), weights.mean(axis=1)


class FeedForward(nnx.Module):
    """Linear D->F, GELU, dropout, Linear F->D (TOPIQ's transformer FFN)."""

    def __init__(self, dim: int, hidden: int, dropout: float, *, dtype, rngs: nnx.Rngs):
        self.linear1 = nnx.Linear(dim, hidden, kernel_init=kaiming_normal, dtype=dtype, rngs=rngs)
        self.linear2 = nnx.Linear(hidden, dim, kernel_init=kaiming_normal, dtype=dtype, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, x, *, train: bool, rngs: nnx.Rngs | None):
        h = self.dropout(gelu(self.linear1(x)), deterministic=not train, rngs=rngs)
        return self.linear2(h)


class TransformerLayer(nnx.Module):
    """TOPIQ's pre-LN transformer layer, self- (Eq. 5) or cross-attention (Eq. 4).

    Self:  x = x + drop(attn(LN(x), LN(x)));                 x = x + drop(FFN(LN(x)))
    Cross: q = q + drop(attn(LN_q(q), LN_m(memory)));         q = q + drop(FFN(LN(q)))
    `__call__(query [B,L,D], memory [B,L,D] | None)` -> (`[B,L,D]`, attention `[B,L,L]`).
    """

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float, *, cross: bool, dtype,
                 rngs: nnx.Rngs):
        norm = dict(epsilon=LN_EPS, dtype=dtype, rngs=rngs)
        self.norm_query = nnx.LayerNorm(dim, **norm)
        self.norm_memory = nnx.LayerNorm(dim, **norm) if cross else None
        self.attention = Attention(dim, heads, dropout, dtype=dtype, rngs=rngs)
        self.norm_ffn = nnx.LayerNorm(dim, **norm)
        self.ffn = FeedForward(dim, ffn, dropout, dtype=dtype, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, query, memory=None, *, train: bool = False, rngs: nnx.Rngs | None = None):
        q = self.norm_query(query)
        m = q if self.norm_memory is None else self.norm_memory(memory)
        attended, weights = self.attention(q, m, train=train, rngs=rngs)
        x = query + self.dropout(attended, deterministic=not train, rngs=rngs)
        ffn = self.ffn(self.norm_ffn(x), train=train, rngs=rngs)
        return x + self.dropout(ffn, deterministic=not train, rngs=rngs), weights


class MLP(nnx.Module):
    """[LN], Dense in->hidden, GELU, Dense hidden->out. The heads of Eq. 6, 7 and 9."""

    def __init__(self, features: int, hidden: int, out: int, *, norm: bool, dtype,
                 rngs: nnx.Rngs):
        self.norm = nnx.LayerNorm(features, epsilon=LN_EPS, dtype=dtype, rngs=rngs) if norm else None
        self.fc1 = nnx.Linear(features, hidden, kernel_init=kaiming_normal, dtype=dtype, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, out, kernel_init=kaiming_normal, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.norm is not None:
            x = self.norm(x)
        return self.fc2(gelu(self.fc1(x)))
