"""ResNet50 in torchvision's v1.5 layout, NHWC, returning the five feature levels BPCLIP uses.

BatchNorm is always in inference mode and frozen: its scale, bias and running statistics are
`FrozenStat` variables, not `nnx.Param`, so they never enter the optimizer, and gradients are
stopped at them. Each frozen BatchNorm is folded into the convolution before it (`conv_bn`).
Padding is explicit (torch semantics), so every level has torch's exact shape for any input size,
not only multiples of 32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

LEVEL_CHANNELS = (64, 256, 512, 1024, 2048)
_STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # (width, blocks, stride)
_EXPANSION = 4
BN_EPS = 1e-5


class FrozenStat(nnx.Variable):
    """A pretrained constant that is not trained: BatchNorm affine and statistics."""


def _conv_out(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


def level_shapes(height: int, width: int) -> list[tuple[int, int]]:
    """Spatial sizes [(H_i, W_i)] of the five levels for an input of height x width (torch's)."""
    h, w = _conv_out(height, 7, 2, 3), _conv_out(width, 7, 2, 3)
    shapes = [(h, w)]
    h, w = _conv_out(h, 3, 2, 1), _conv_out(w, 3, 2, 1)  # max-pool
    for _, _, stride in _STAGES:
        h, w = _conv_out(h, 3, stride, 1), _conv_out(w, 3, stride, 1)
        shapes.append((h, w))
    return shapes


class FrozenBatchNorm(nnx.Module):
    """Inference-mode BatchNorm: y = (x - mean) / sqrt(var + eps) * scale + bias."""

    def __init__(self, features: int):
        self.calibrating = False
        self.scale = FrozenStat(jnp.ones((features,), jnp.float32))
        self.bias = FrozenStat(jnp.zeros((features,), jnp.float32))
        self.mean = FrozenStat(jnp.zeros((features,), jnp.float32))
        self.var = FrozenStat(jnp.ones((features,), jnp.float32))

    def affine(self) -> tuple[jax.Array, jax.Array]:
        """(mul, shift), float32 [C]: the layer is y = x * mul + shift; no gradient flows to them."""
        scale, bias, mean, var = (
            jax.lax.stop_gradient(v[...]) for v in (self.scale, self.bias, self.mean, self.var)
        )
        mul = scale * jax.lax.rsqrt(var + BN_EPS)
        return mul, bias - mean * mul

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.calibrating:
            x32 = x.astype(jnp.float32)
            self.mean[...] = x32.mean(axis=(0, 1, 2))
            self.var[...] = x32.var(axis=(0, 1, 2))
        mul, shift = self.affine()
        return x * mul.astype(x.dtype) + shift.astype(x.dtype)


def conv_bn(conv: nnx.Conv, bn: FrozenBatchNorm, x: jax.Array) -> jax.Array:
    """bn(conv(x)) with the frozen BatchNorm folded into the convolution: conv(x, W * mul) + shift.

    The same function (up to rounding), one pass over the output instead of two: on a GPU, XLA
    can then fuse the bias, residual and ReLU into the cuDNN convolution. While BatchNorm
    statistics are being calibrated, the layers run unfolded (the statistics are of conv(x)).
    """
    if bn.calibrating:
        return bn(conv(x))
    mul, shift = bn.affine()
    dtype = conv.dtype or x.dtype
    kernel = (conv.kernel[...] * mul).astype(dtype)
    strides = (conv.strides,) * 2 if isinstance(conv.strides, int) else tuple(conv.strides)
    y = jax.lax.conv_general_dilated(x.astype(dtype), kernel, strides, conv.padding,
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     precision=conv.precision)
    return y + shift.astype(dtype)


def calibrate_batchnorm(backbone: nnx.Module, images: jax.Array) -> None:
    """Sets every BatchNorm's running statistics to those of `images` ([B,H,W,3], normalized), in
    network order, so each layer sees normalized inputs from the calibrated layers before it.

    For randomly initialized backbones only (offline runs): torchvision's init with identity
    statistics lets activations grow with depth. Pretrained backbones keep their ImageNet statistics.
    Runs eagerly, once.
    """
    norms = [m for _, m in backbone.iter_modules() if isinstance(m, FrozenBatchNorm)]
    for bn in norms:
        bn.calibrating = True
    try:
        backbone(images)
    finally:
        for bn in norms:
            bn.calibrating = False


def _conv(cin, cout, kernel, stride, pad, *, dtype, rngs):
    return nnx.Conv(
        cin, cout, (kernel, kernel), strides=stride, padding=((pad, pad), (pad, pad)),
        use_bias=False, dtype=dtype, rngs=rngs,
        kernel_init=nnx.initializers.variance_scaling(2.0, "fan_out", "normal"),
    )


def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    """torch MaxPool2d(3, stride=2, padding=1): padding with -inf, never a real value."""
    pad = ((0, 0), (1, 1), (1, 1), (0, 0))
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), pad)


class Bottleneck(nnx.Module):
    """torchvision Bottleneck (v1.5: the stride sits on the 3x3 conv)."""

    def __init__(self, cin: int, width: int, stride: int, *, dtype, rngs: nnx.Rngs):
        cout = width * _EXPANSION
        self.conv1 = _conv(cin, width, 1, 1, 0, dtype=dtype, rngs=rngs)
        self.bn1 = FrozenBatchNorm(width)
        self.conv2 = _conv(width, width, 3, stride, 1, dtype=dtype, rngs=rngs)
        self.bn2 = FrozenBatchNorm(width)
        self.conv3 = _conv(width, cout, 1, 1, 0, dtype=dtype, rngs=rngs)
        self.bn3 = FrozenBatchNorm(cout)
        if stride != 1 or cin != cout:
            self.downsample = nnx.List([
                _conv(cin, cout, 1, stride, 0, dtype=dtype, rngs=rngs), FrozenBatchNorm(cout)])
        else:
            self.downsample = None

    def __call__(self, x: jax.Array) -> jax.Array:
        y = jax.nn.relu(conv_bn(self.conv1, self.bn1, x))
        y = jax.nn.relu(conv_bn(self.conv2, self.bn2, y))
        y = conv_bn(self.conv3, self.bn3, y)
        shortcut = x if self.downsample is None else conv_bn(*self.downsample, x)
        return jax.nn.relu(y + shortcut)


class ResNet50(nnx.Module):
    """ResNet50 feature extractor.

    `__call__(x)`: x `[B,H,W,3]` ImageNet-normalized -> five levels, NHWC:
    act1 `[B,H/2,W/2,64]` (before the max-pool), layer1 `[.,H/4,.,256]`, layer2 `[.,H/8,.,512]`,
    layer3 `[.,H/16,.,1024]`, layer4 `[.,H/32,.,2048]` (sizes rounded as torch rounds them).
    """

    def __init__(self, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.conv1 = _conv(3, 64, 7, 2, 3, dtype=dtype, rngs=rngs)
        self.bn1 = FrozenBatchNorm(64)
        cin = 64
        for index, (width, blocks, stride) in enumerate(_STAGES, start=1):
            layer = []
            for b in range(blocks):
                layer.append(Bottleneck(cin, width, stride if b == 0 else 1, dtype=dtype, rngs=rngs))
                cin = width * _EXPANSION
            setattr(self, f"layer{index}", nnx.List(layer))

    def __call__(self, x: jax.Array) -> list[jax.Array]:
        x = jax.nn.relu(conv_bn(self.conv1, self.bn1, x))
        levels = [x]
        x = max_pool_3x3_s2(x)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in layer:
                x = block(x)
            levels.append(x)
        return levels
