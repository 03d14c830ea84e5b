"""Run in a subprocess with 4 fake CPU devices: the quality loss and its gradient with respect to a
batch split over a 4-device mesh ('data' axis) must equal those of the same batch on one device.
The loss is passed as an argument of the jitted function (a pytree of the frozen weights, which
are replicated). Prints a JSON line; tests/test_loss.py asserts on it.
"""

import json
import os

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from bpclip_jax.api import Scorer  # noqa: E402
from bpclip_jax.build import create_model  # noqa: E402
from configs import base  # noqa: E402


def main():
    assert jax.device_count() == 4, jax.devices()
    config = base.get_config("tiny")
    config.model.full_reference = False
    loss_fn = Scorer(create_model(config.model, seed=1), config, dataset="koniq10k").as_loss()
    images = np.random.default_rng(0).uniform(0.1, 0.9, (4, 32, 32, 3)).astype(np.float32)
    step = jax.jit(jax.value_and_grad(lambda loss, x: loss(x), argnums=1))

    value_1, grad_1 = step(loss_fn, images)
    mesh = jax.make_mesh((4,), ("data",))
    sharded = jax.device_put(images, NamedSharding(mesh, P("data")))
    loss_fn = jax.device_put(loss_fn, NamedSharding(mesh, P()))
    value_4, grad_4 = step(loss_fn, sharded)
    print(json.dumps({
        "input_devices": len(sharded.sharding.device_set),
        "grad_split_over": grad_4.sharding.spec[0],  # the batch axis of the gradient
        "loss_1": float(value_1), "loss_4": float(value_4),
        "grad_max": float(np.abs(grad_1).max()),
        "grad_max_abs_diff": float(np.abs(np.asarray(grad_4) - np.asarray(grad_1)).max()),
    }))


if __name__ == "__main__":
    main()
