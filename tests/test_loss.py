"""BPCLIP as a loss: sign and scale, gradients against finite differences, the weights as jit
arguments (not constants), vmap, rematerialization, a 4-device sharded batch."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bpclip_jax.api import Scorer
from bpclip_jax.build import create_model
from bpclip_jax.inputs import InputError
from configs import base

# Central differences in float32 need a smooth function: a random ReLU network is rough at every
# step a float32 difference resolves (its ReLUs and max-pools switch, and with calibrated BatchNorm
# it even jumps), so the finite-difference test puts the backbone's ReLUs in their linear part
# (every BatchNorm shift +3). Directions: the gradient's own and two halfway between it and a
# random direction (a random direction alone sees a derivative too small for float32). The step is
# large because the derivative is small (4e-5 per unit of image norm at the loss's 0.94): at a step
# of 0.01 the two losses differ by 15 float32 ulps, and rounding alone is a 7-10% error. Measured
# relative errors of the three directions: steps 0.05-0.2, 0.2% to 1.2%; 0.01, up to 10%; 0.3, 2.2%.
FD_EPS = 0.1
FD_TOLERANCE = 0.03


def _scorer(full_reference: bool = False) -> Scorer:
    config = base.get_config("tiny")
    config.model.full_reference = full_reference
    return Scorer(create_model(config.model, seed=1), config,
                  dataset="kadid10k" if full_reference else "koniq10k")


@pytest.fixture(scope="module")
def nr():
    return _scorer()


@pytest.fixture(scope="module")
def images():
    return jnp.asarray(np.random.default_rng(0).uniform(0.1, 0.9, (2, 32, 32, 3)).astype(np.float32))


@pytest.fixture(scope="module")
def value_and_grad():
    return jax.jit(jax.value_and_grad(lambda loss, x: loss(x), argnums=1))


@pytest.mark.slow
def test_loss_is_one_minus_the_normalized_score_and_says_so(nr, images, value_and_grad):
    loss_fn = nr.as_loss()
    value, _ = value_and_grad(loss_fn, images)
    expected = 1 - nr(np.asarray(images), normalized=True).mean()
    assert float(value) == pytest.approx(float(expected), abs=1e-6)
    assert loss_fn.lower_better and loss_fn.score_range == (0.0, 1.0)
    assert loss_fn.mos_range == (1.0, 5.0) and loss_fn.mos_higher_better


def smooth_scorer() -> Scorer:
    from flax import nnx

    from bpclip_jax.models.resnet import FrozenBatchNorm

    scorer = _scorer()
    model = nnx.merge(scorer.graphdef, scorer.state)
    for _, module in nnx.iter_modules(model.backbone):
        if isinstance(module, FrozenBatchNorm):
            module.bias[...] = jnp.full(module.bias.shape, 3.0)
    return Scorer(model, scorer.config, dataset=scorer.dataset)


@pytest.mark.slow
def test_gradient_matches_finite_differences(images, value_and_grad):
    loss_fn = smooth_scorer().as_loss()
    _, grad = value_and_grad(loss_fn, images)
    loss = jax.jit(lambda lf, x: lf(x))
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
    g, rng = unit(np.asarray(grad)), np.random.default_rng(1)
    directions = [g] + [unit(g + unit(rng.normal(size=g.shape).astype(np.float32))) for _ in range(2)]
    errors = []
    for d in directions:
        up, down = float(loss(loss_fn, images + FD_EPS * d)), float(loss(loss_fn, images - FD_EPS * d))
        numeric = (up - down) / (2 * FD_EPS)
        analytic = float(jnp.vdot(grad, d))
        errors.append(abs(numeric - analytic) / abs(analytic))
    print("relative errors of the directional derivatives:", errors)
    assert max(errors) < FD_TOLERANCE


@pytest.mark.slow
def test_weights_are_arguments_of_the_compiled_program_not_constants(nr, images):
    """Passed as an argument, the loss's 45 M weights (NR) are parameters of the program; closed over,
    jax would embed them as constants (a program text of hundreds of MB)."""
    lowered = jax.jit(jax.grad(lambda loss, x: loss(x), argnums=1)).lower(nr.as_loss(), images)
    assert len(lowered.as_text()) < 5_000_000
    leaves = jax.tree.leaves(nr.as_loss())
    assert sum(x.size for x in leaves) > 30_000_000


@pytest.mark.slow
def test_vmap_over_a_leading_axis(nr, images):
    per_item = nr.as_loss(reduction="none")
    stacked = images[:, None]  # [2, 1, 32, 32, 3]: two batches of one image
    vmapped = jax.jit(lambda lf, x: jax.vmap(lf)(x))(nr.as_loss(), stacked)
    direct = jax.jit(lambda lf, x: lf(x))(per_item, images)
    assert vmapped.shape == (2,) and direct.shape == (2,)
    np.testing.assert_allclose(vmapped, direct, atol=1e-6)


@pytest.mark.slow
def test_remat_recomputes_blocks_and_gives_the_same_gradient(nr, images, value_and_grad):
    plain, remat = nr.as_loss(), nr.as_loss(remat=True)
    step = jax.jit(jax.grad(lambda loss, x: loss(x), argnums=1))
    convs = [step.lower(loss, images).as_text().count("stablehlo.convolution") for loss in (plain, remat)]
    assert convs[1] > convs[0]  # the backward pass recomputes the blocks' forward convolutions
    np.testing.assert_allclose(step(remat, images), value_and_grad(plain, images)[1], rtol=1e-4, atol=1e-9)


@pytest.mark.slow
def test_bad_calls_are_named():
    fr = _scorer(full_reference=True)
    x = jnp.zeros((1, 32, 32, 3))
    with pytest.raises(InputError, match="full-reference model: give refs"):
        fr.as_loss()(x)
    with pytest.raises(InputError, match=r"images must be \[B,H,W,3\]"):
        fr.as_loss()(x[0], x[0])
    with pytest.raises(InputError, match="differ in shape"):
        fr.as_loss()(x, jnp.zeros((1, 32, 64, 3)))
    with pytest.raises(InputError, match="reduction must be one of"):
        fr.as_loss(reduction="max")


@pytest.mark.slow
def test_four_fake_devices_match_one():
    out = subprocess.run([sys.executable, "-m", "tests.loss_sharding_check"], capture_output=True, text=True,
                         cwd=Path(__file__).parent.parent, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(result)
    assert result["input_devices"] == 4 and result["grad_split_over"] == "data"
    assert result["loss_4"] == pytest.approx(result["loss_1"], abs=1e-6)
    assert result["grad_max_abs_diff"] < 1e-4 * result["grad_max"]
