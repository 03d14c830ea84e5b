"""BPCLIP's building blocks: gated local pooling (GLP), the positional map, TOPIQ's attention layers
and the MLP heads. Shapes are NHWC for maps and [B,L,D] for tokens; L = H5*W5 (level 5's grid).

These layers compute what TOPIQ's (Chen et al., TIP 2024; pyiqa's `CFANet` and its transformer
layers) compute, and start from the values TOPIQ's PyTorch code draws. In TOPIQ, torch's default
init applies except where `CFANet._init_linear` replaces it, and that function re-initializes only
the `nn.Linear` modules of the attention blocks (`sa_attn_blks`, `attn_blks`, `attn_pool`; its call
on `dim_reduce` finds only convolutions and changes nothing). Hence, per layer here:

  layer                        torch init reproduced                          why
  GLP convs (phi_i, the NR     Conv2d default: kernel kaiming-uniform a=sqrt(5) TOPIQ's weight_pool,
    split, the reduction)        (U(+-1/sqrt(fan_in))), bias U(+-1/sqrt(fan_in)) GatedConv, dim_reduce
  Attention query/key/value    xavier-uniform over the packed [3D, D] matrix   nn.MultiheadAttention's
                                 (U(+-sqrt(6/(D+3D))), std ~0.044 at D=256),    in_proj_weight: not an
                                 zero bias                                       nn.Linear, kept as is
  Attention out                kaiming-normal (fan-in, std sqrt(2/D)), zero    out_proj is an nn.Linear
                                 bias                                            subclass: re-initialized
  FeedForward linear1/linear2  kaiming-normal (fan-in), zero bias              nn.Linear: re-initialized
  LayerNorm                    scale 1, bias 0                                 torch's default
  PositionalMap                trunc_normal_(std=0.02) cut at +-2 ABSOLUTE     TOPIQ's h_emb/w_emb
                                 (= +-100 std: a plain normal, std 0.02)
  MLP heads (MLP_f, MLP_w,     Linear default: kernel kaiming-uniform a=sqrt(5), see below
    MLP_x, MLP_reg)              bias U(+-1/sqrt(fan_in))

The MLP heads are BPCLIP's own (Eq. 6, 7, 9). They replace TOPIQ's head, `score_linear` (LN, Linear,
GELU, ..., Linear), which TOPIQ leaves at torch's default init; `_init_linear` reaches only layers
inside the attention blocks, and the heads are no part of a transformer layer. So the heads take the
init of the TOPIQ layer they stand in for: torch's default Linear.

One deliberate difference: TOPIQ builds its per-level attention layers as deep copies of one layer,
so before training all levels share the same q/k/v values (the copied in_proj_weight; only the
re-initialized Linears differ). That is an artefact of copying, not an init rule; here every layer
draws its own values from the same distributions.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

LN_EPS = 1e-5  # torch's default; Flax's is 1e-6
GATE_WIDTH = 64
BICUBIC_A = -0.75  # torch's cubic convolution coefficient

# torch's default Conv2d/Linear kernel init: kaiming-uniform with a=sqrt(5), i.e. U(+-1/sqrt(fan_in)).
torch_default_kernel = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
# torch's kaiming_normal_ (fan-in, gain sqrt(2)), TOPIQ's `_init_linear`; an untruncated normal.
kaiming_normal = nnx.initializers.variance_scaling(2.0, "fan_in", "normal")


def torch_default_bias(fan_in: int):
    """torch's default Conv2d/Linear bias init: U(+-1/sqrt(fan_in)), fan_in = in_channels * kh * kw."""
    bound = 1.0 / math.sqrt(fan_in)
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def packed_qkv_xavier_uniform(key, shape, dtype=jnp.float32):
    """One [D_in, D] kernel of q, k or v with the values torch's `nn.MultiheadAttention` draws for
    its packed in_proj_weight [3D, D_in]: xavier-uniform with fan_in D_in and fan_out 3D."""
    bound = math.sqrt(6.0 / (shape[0] + 3 * shape[1]))
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def torch_trunc_normal(std: float, low: float = -2.0, high: float = 2.0):
    """torch's `trunc_normal_(std=std)`: a normal cut at the ABSOLUTE values [low, high]."""
    return lambda key, shape, dtype=jnp.float32: std * jax.random.truncated_normal(
        key, low / std, high / std, shape, dtype)


def torch_linear(cin: int, cout: int, *, dtype, rngs: nnx.Rngs) -> nnx.Linear:
    """nn.Linear with torch's default init."""
    return nnx.Linear(cin, cout, kernel_init=torch_default_kernel, bias_init=torch_default_bias(cin),
                      dtype=dtype, rngs=rngs)


def topiq_linear(cin: int, cout: int, *, dtype, rngs: nnx.Rngs) -> nnx.Linear:
    """nn.Linear as TOPIQ's `_init_linear` leaves it: kaiming-normal kernel, zero bias."""
    return nnx.Linear(cin, cout, kernel_init=kaiming_normal, dtype=dtype, rngs=rngs)


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


def _cubic_taps(t: float) -> tuple[float, float, float, float]:
    """torch's cubic convolution weights (a = -0.75) of the taps at offsets -1, 0, 1, 2 from floor(src)."""
    a = BICUBIC_A
    near = lambda x: ((a + 2) * x - (a + 3)) * x * x + 1  # noqa: E731  |x| <= 1
    far = lambda x: ((a * x - 5 * a) * x + 8 * a) * x - 4 * a  # noqa: E731  1 < |x| < 2
    return far(t + 1), near(t), near(1 - t), far(2 - t)


def bicubic_resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] weights of torch's 1-D bicubic interpolation (`F.interpolate(mode='bicubic',
    align_corners=False)`, no antialias): source x = (i + 0.5) * n_in / n_out - 0.5, not clamped,
    four taps around floor(x), tap indices clamped to [0, n_in - 1]. Rows sum to 1."""
    m = np.zeros((n_out, n_in), np.float64)
    scale = n_in / n_out
    for i in range(n_out):
        src = (i + 0.5) * scale - 0.5
        lo = math.floor(src)
        for k, w in zip(range(lo - 1, lo + 3), _cubic_taps(src - lo)):
            m[i, min(max(k, 0), n_in - 1)] += w
    return m.astype(np.float32)


class PositionalMap(nnx.Module):
    """One learned positional map shared by every level, TOPIQ's: D/2 row features (`rows`, TOPIQ's
    h_emb) and D/2 column features (`cols`, w_emb) over a grid x grid lattice, resized to H5 x W5
    by torch's bicubic interpolation as TOPIQ's `forward_cross_attention` resizes it.

    `__call__(h, w)` -> `[h*w, D]` float32; token t = row * w + col.
    """

    def __init__(self, dim: int, grid: int = 32, *, rngs: nnx.Rngs):
        init = torch_trunc_normal(0.02)
        self.rows = nnx.Param(init(rngs.params(), (grid, dim // 2)))
        self.cols = nnx.Param(init(rngs.params(), (grid, dim - dim // 2)))

    def __call__(self, h: int, w: int) -> jax.Array:
        # The map is a row part (constant along columns) (+) a column part (constant along rows), and
        # bicubic resizing is separable with rows of weights summing to 1: resizing the whole map
        # equals resizing each part along its own axis.
        rows = jnp.asarray(bicubic_resize_matrix(self.rows.shape[0], h)) @ self.rows[...]
        cols = jnp.asarray(bicubic_resize_matrix(self.cols.shape[0], w)) @ self.cols[...]
        grid = jnp.concatenate(
            [jnp.broadcast_to(rows[:, None], (h, w, rows.shape[-1])),
             jnp.broadcast_to(cols[None, :], (h, w, cols.shape[-1]))], axis=-1)
        return grid.reshape(h * w, -1)


def _conv(cin, cout, kernel, *, dtype, rngs):
    """nn.Conv2d(cin, cout, kernel, padding=kernel // 2) with torch's default init."""
    pad = kernel // 2
    return nnx.Conv(cin, cout, (kernel, kernel), padding=((pad, pad), (pad, pad)),
                    kernel_init=torch_default_kernel, bias_init=torch_default_bias(cin * kernel * kernel),
                    dtype=dtype, rngs=rngs)


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
        qkv = dict(kernel_init=packed_qkv_xavier_uniform, dtype=dtype, rngs=rngs)
        self.query = nnx.Linear(dim, dim, **qkv)
        self.key = nnx.Linear(dim, dim, **qkv)
        self.value = nnx.Linear(dim, dim, **qkv)
        self.out = topiq_linear(dim, dim, dtype=dtype, rngs=rngs)
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
        self.linear1 = topiq_linear(dim, hidden, dtype=dtype, rngs=rngs)
        self.linear2 = topiq_linear(hidden, dim, dtype=dtype, rngs=rngs)
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
    """[LN], Dense in->hidden, GELU, Dense hidden->out. The heads of Eq. 6, 7 and 9 (torch's default
    Linear init, as TOPIQ's head: see the module docstring)."""

    def __init__(self, features: int, hidden: int, out: int, *, norm: bool, dtype,
                 rngs: nnx.Rngs):
        self.norm = nnx.LayerNorm(features, epsilon=LN_EPS, dtype=dtype, rngs=rngs) if norm else None
        self.fc1 = torch_linear(features, hidden, dtype=dtype, rngs=rngs)
        self.fc2 = torch_linear(hidden, out, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.norm is not None:
            x = self.norm(x)
        return self.fc2(gelu(self.fc1(x)))
