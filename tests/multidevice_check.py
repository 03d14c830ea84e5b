"""Run in a subprocess with 8 fake CPU devices: two train steps on 1 device and on 8 must agree,
and so must evaluation's predictions (images split over the 8 devices, the last batch padded).

The optimizer is SGD, whose update is linear in the gradient, so the updated parameters can be
compared: AdamW's first update is about -lr * sign(g), and a parameter whose gradient is float noise
may move either way on either mesh. The sharded step (the gradient all-reduce) is the same code
for every optimizer. Prints a JSON line; the test asserts on it.
"""

import json
import os
import tempfile
from pathlib import Path

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from bpclip_jax import evaluate, train  # noqa: E402
from bpclip_jax.build import create_model  # noqa: E402
from configs import base  # noqa: E402
from data_pipelines import load  # noqa: E402
from tests import data_fixtures  # noqa: E402


def evaluation(config) -> dict:
    """Predictions of 10 records (3 padded batches of 8 on 8 devices) on 1 device and on 8."""
    with tempfile.TemporaryDirectory() as tmp:
        records = load("kadid10k", data_fixtures.kadid(Path(tmp), refs=5, per_ref=2))
        graphdef, params, frozen = nnx.split(create_model(config.model, seed=0), nnx.Param, ...)
        single = evaluate.predict(graphdef, params, frozen, records, 4)
        mesh = train.make_mesh()
        sharded = evaluate.predict(graphdef, params, frozen, records, 4, mesh=mesh)
    placed = evaluate.shard_batch(np.zeros((8, 4, 4, 3), np.uint8), mesh)
    return {"eval_devices": len(placed.sharding.device_set),
            "eval_finite": bool(np.isfinite(sharded).all()),
            "eval_spread": float(single.max() - single.min()),
            "eval_max_abs": float(np.max(np.abs(single - sharded)))}


def main():
    assert jax.device_count() == 8, jax.devices()
    config = base.get_config("tiny")
    rng = np.random.default_rng(0)
    batches = [{"dist": rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8),
                "ref": rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8),
                "score": rng.uniform(0, 1, 8).astype(np.float32)} for _ in range(2)]
    tx, schedule = optax.sgd(1e-2), lambda step: 1e-2
    # its seed (dropout); the SGD below reads nothing else
    hyper = train.Hyper.of(config.optim, 1, config.seed)
    outputs = {}
    for n in (1, 8):
        devices = jax.devices()[:n]
        model = create_model(config.model, seed=0)
        graphdef, state = train.create_train_state(model, tx)
        initial = jax.tree.leaves(jax.device_get(state.params))
        mesh = train.make_mesh(devices)
        state = jax.device_put(state, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
        step = train.compile_step(train.make_train_step(graphdef, lambda _: (tx, schedule)), mesh)
        losses = []
        for batch in batches:
            state, metrics = step(state, train.to_global(batch, mesh), hyper)
            losses.append(float(metrics["loss"]))
        sharding = state.params["mlp_reg"]["fc1"]["kernel"][...].sharding
        final = jax.tree.leaves(jax.device_get(state.params))
        moved = max(float(np.max(np.abs(a - b))) for a, b in zip(final, initial))
        outputs[n] = (losses, final, len(sharding.device_set), moved)
    (l1, p1, d1, moved), (l8, p8, d8, _) = outputs[1], outputs[8]
    print(json.dumps({
        "devices": [d1, d8],
        "loss_1": l1, "loss_8": l8,
        "max_loss_rel": max(abs(a - b) / abs(a) for a, b in zip(l1, l8)),
        "max_param_abs": max(float(np.max(np.abs(a - b))) for a, b in zip(p1, p8)),
        "max_update": moved,
        **evaluation(config),
    }))


if __name__ == "__main__":
    main()
