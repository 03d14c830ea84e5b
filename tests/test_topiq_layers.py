"""TOPIQ's layers: ours against a PyTorch reference with the same values (tests/topiq_reference.py),
and their initial values against the torch inits TOPIQ's code draws (layers.py's docstring)."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from bpclip_jax.models import layers
from tests import topiq_reference as ref

DIM, HEADS, FFN = 256, 4, 1024  # BPCLIP's (and TOPIQ's) sizes
TOL = 1e-5  # max |ours - torch| / max |torch|


def _normal(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _seq_first(x):
    return torch.from_numpy(np.asarray(x)).permute(1, 0, 2)  # [B,L,D] -> [L,B,D]


def _nchw(x):
    return torch.from_numpy(np.asarray(x)).permute(0, 3, 1, 2)


@pytest.mark.parametrize("cross", [False, True], ids=["encoder_self", "decoder_cross"])
def test_transformer_layer_matches_topiq(cross):
    layer = layers.TransformerLayer(DIM, HEADS, FFN, 0.1, cross=cross, dtype=jnp.float32,
                                    rngs=nnx.Rngs(0))
    ref.perturb(layer, seed=1)
    torch_layer = ref.layer_pair(layer, DIM, HEADS, FFN, cross=cross)
    # A small query scale (variance 2.5e-3) makes LayerNorm's eps (1e-5, Flax's default 1e-6) show.
    query = 0.05 * _normal((2, 12, DIM), 2)
    memory = _normal((2, 12, DIM), 3) * 2 + 0.5 if cross else None  # a scale LN_m must undo
    out, weights = layer(jnp.asarray(query), None if memory is None else jnp.asarray(memory))
    with torch.no_grad():
        args = (_seq_first(query),) + (() if memory is None else (_seq_first(memory),))
        expected, expected_weights = torch_layer(*args)
    assert ref.relative_error(out, expected.permute(1, 0, 2)) < TOL
    assert ref.relative_error(weights, expected_weights) < TOL


@pytest.mark.parametrize("full_reference", [True, False], ids=["FR", "NR"])
@pytest.mark.parametrize("size,out_hw", [((8, 12), (2, 3)), ((9, 11), (4, 3))], ids=["exact", "overlap"])
def test_gated_local_pooling_matches_topiq(full_reference, size, out_hw):
    channels, dim = 16, 32
    glp = layers.GLP(channels, dim, full_reference=full_reference, dtype=jnp.float32, rngs=nnx.Rngs(0))
    ref.perturb(glp, seed=1)
    torch_glp = ref.GatedPooling(channels, dim, full_reference)
    ref.load_glp(torch_glp, glp)
    dist = _normal((2, *size, channels), 2)
    # The reference differs from the distorted map by a little, as a mild distortion does.
    other = dist + 0.1 * _normal(dist.shape, 3) if full_reference else None
    tokens, gate = glp(jnp.asarray(dist), None if other is None else jnp.asarray(other), out_hw)
    with torch.no_grad():
        expected, expected_gate = torch_glp(_nchw(dist), None if other is None else _nchw(other), out_hw)
    assert ref.relative_error(tokens, expected.permute(1, 0, 2)) < TOL
    assert ref.relative_error(gate, expected_gate) < TOL


@pytest.mark.parametrize("hw", [(12, 12), (12, 16), (1, 1), (7, 45)])
def test_positional_map_matches_topiq_bicubic(hw):
    position = layers.PositionalMap(DIM, 32, rngs=nnx.Rngs(0))
    got = position(*hw)
    expected = ref.positional_map(position.rows[...], position.cols[...], *hw)[:, 0]
    assert got.shape == (hw[0] * hw[1], DIM)
    assert ref.relative_error(got, expected) < TOL


@pytest.mark.parametrize("n_in,n_out", [(32, 12), (32, 1), (32, 45), (5, 5), (7, 3)])
def test_bicubic_matrix_matches_torch_interpolate(n_in, n_out):
    x = _normal((3, n_in), 0)
    expected = torch.nn.functional.interpolate(torch.from_numpy(x)[None, :, :, None], size=(n_out, 1),
                                               mode="bicubic", align_corners=False)[0, :, :, 0]
    got = x @ layers.bicubic_resize_matrix(n_in, n_out).T
    assert ref.relative_error(got, expected) < TOL


# Initial values. Each kernel holds thousands of draws: the sampling error of a std is ~1/sqrt(2N),
# under 1% here, so 4% separates the intended init from any other one named in the table.

def _values(x):
    return np.asarray(x[...], np.float64).ravel()


def _assert_uniform(x, bound, name):
    """Draws of U(-bound, bound): inside the bound, reaching near it, std bound/sqrt(3)."""
    v = _values(x)
    assert np.abs(v).max() <= bound * (1 + 1e-6), f"{name} leaves +-{bound:.4g}"
    assert np.abs(v).max() > 0.9 * bound, f"{name} does not fill +-{bound:.4g}"
    expected = bound / math.sqrt(3)
    assert abs(v.std() / expected - 1) < 0.04 + 2 / math.sqrt(v.size), f"{name}: std {v.std():.4g}"


def _assert_normal(x, std, name):
    """Draws of N(0, std): std within sampling error, tails beyond a uniform's (max > 3.5 std)."""
    v = _values(x)
    assert abs(v.std() / std - 1) < 0.04, f"{name}: std {v.std():.4g}, expected {std:.4g}"
    assert np.abs(v).max() > 3.5 * std, f"{name} has no normal tails"


def _assert_zero(x, name):
    assert not np.any(_values(x)), f"{name} must start at 0"


def test_attention_layer_init_is_topiq():
    layer = layers.TransformerLayer(DIM, HEADS, FFN, 0.1, cross=True, dtype=jnp.float32,
                                    rngs=nnx.Rngs(0))
    attention = layer.attention
    # nn.MultiheadAttention: xavier-uniform over in_proj_weight [3D, D], std sqrt(2/(D+3D)) ~0.044.
    for name in ("query", "key", "value"):
        _assert_uniform(getattr(attention, name).kernel, math.sqrt(6 / (DIM + 3 * DIM)), name)
        _assert_zero(getattr(attention, name).bias, f"{name} bias")
    # CFANet._init_linear: kaiming-normal (fan-in), zero bias, on out_proj and the FFN.
    for name, linear, fan_in in (("out", attention.out, DIM), ("linear1", layer.ffn.linear1, DIM),
                                 ("linear2", layer.ffn.linear2, FFN)):
        _assert_normal(linear.kernel, math.sqrt(2 / fan_in), name)
        _assert_zero(linear.bias, f"{name} bias")
    for norm in (layer.norm_query, layer.norm_memory, layer.norm_ffn):
        np.testing.assert_array_equal(norm.scale[...], 1.0)
        _assert_zero(norm.bias, "LayerNorm bias")


@pytest.mark.parametrize("full_reference", [True, False], ids=["FR", "NR"])
def test_glp_init_is_torch_default(full_reference):
    channels = 256
    glp = layers.GLP(channels, DIM, full_reference=full_reference, dtype=jnp.float32, rngs=nnx.Rngs(0))
    convs = {"phi.conv1": glp.phi.conv1, "phi.conv2": glp.phi.conv2, "phi.conv3": glp.phi.conv3,
             "reduce": glp.reduce}
    if not full_reference:
        convs["split"] = glp.split
    biases = []
    for name, conv in convs.items():
        bound = 1 / math.sqrt(np.prod(conv.kernel.shape[:-1]))  # 1/sqrt(fan_in), fan_in = kh*kw*cin
        _assert_uniform(conv.kernel, bound, f"{name} kernel")
        biases.append(_values(conv.bias) / bound)
    # Biases are U(+-1/sqrt(fan_in)): pooled on the unit scale, they are U(-1, 1).
    _assert_uniform(jnp.asarray(np.concatenate(biases)), 1.0, "GLP conv biases / bound")


def test_positional_map_init_is_torch_trunc_normal():
    position = layers.PositionalMap(DIM, 32, rngs=nnx.Rngs(0))
    values = np.concatenate([_values(position.rows), _values(position.cols)])
    # torch's trunc_normal_(std=0.02) cuts at +-2 absolute: a plain N(0, 0.02); Flax's
    # truncated_normal(0.02) cuts at 2 std and has std ~0.0176.
    _assert_normal(jnp.asarray(values), 0.02, "positional map")


@pytest.mark.parametrize("norm", [True, False])
def test_mlp_head_init_is_torch_default_linear(norm):
    head = layers.MLP(DIM, 512, 512, norm=norm, dtype=jnp.float32, rngs=nnx.Rngs(0))
    for name, linear in (("fc1", head.fc1), ("fc2", head.fc2)):
        bound = 1 / math.sqrt(linear.kernel.shape[0])
        _assert_uniform(linear.kernel, bound, f"{name} kernel")
        _assert_uniform(linear.bias, bound, f"{name} bias")
