"""Training: the state, one pure jitted train step, and train_and_evaluate (DESIGN.md section 4).

The step is data parallel over every device (mesh axis 'data'): the global batch is sharded, the
state replicated, the state buffers donated. Only nnx.Param enters the optimizer; BatchNorm
statistics and the text features (`frozen`) ride along unchanged. The host syncs with the device
only at logging steps and epoch ends.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from bpclip_jax import checkpoint, evaluate
from bpclip_jax.models.bpclip import BPCLIP
from bpclip_jax.models.build import create_model
from bpclip_jax.models.resnet import calibrate_batchnorm
from bpclip_jax.writer import MetricWriter
from data_pipelines import pipeline

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the first such step."""


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: nnx.State       # nnx.Param: the trained parameters
    frozen: nnx.State       # BatchNorm statistics, text features: never updated
    opt_state: optax.OptState


# ------------------------------------------------------------------------------ schedule, optimizer


def epoch_lr(optim: ml_collections.ConfigDict, epoch):
    """torch's CosineAnnealingLR at `epoch` (stepped per epoch): periodic, lr is eta_min at
    epochs T_max, 3 T_max, ... and back to lr at 2 T_max, ... (its closed form)."""
    cos = jnp.cos(jnp.pi * epoch / optim.t_max)
    return optim.eta_min + (optim.lr - optim.eta_min) * (1 + cos) / 2


def make_optimizer(optim: ml_collections.ConfigDict, steps_per_epoch: int):
    """AdamW (torch's: decoupled decay lr * wd * param) with the per-epoch cosine schedule."""
    schedule = lambda step: epoch_lr(optim, step // steps_per_epoch)  # noqa: E731
    tx = optax.adamw(schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps,
                     weight_decay=optim.weight_decay)
    return tx, schedule


# ------------------------------------------------------------------------------ state and step


def trainable(freeze_backbone: bool = False):
    """The filter of what the optimizer trains: every nnx.Param, or all but the backbone's."""
    if freeze_backbone:
        return nnx.All(nnx.Param, nnx.Not(nnx.PathContains("backbone")))
    return nnx.Param


def create_train_state(model: BPCLIP, tx: optax.GradientTransformation, freeze_backbone: bool = False):
    """(graphdef, TrainState) of a model: its trainable Params under the optimizer, the rest frozen."""
    graphdef, params, frozen = nnx.split(model, trainable(freeze_backbone), ...)
    return graphdef, TrainState(step=jnp.zeros((), jnp.int32), params=params, frozen=frozen,
                                opt_state=tx.init(params))


def images(batch: dict, key: str) -> jax.Array | None:
    """uint8 [B,H,W,3] from the pipeline -> float32 in [0,1] (on the device)."""
    return None if key not in batch else batch[key].astype(jnp.float32) / 255.0


def make_train_step(graphdef, tx: optax.GradientTransformation, schedule: Callable, seed: int):
    """The pure step: (state, batch) -> (state, metrics). MSE on the normalized scores."""
    base_key = jax.random.key(seed)

    def train_step(state: TrainState, batch: dict):
        key = jax.random.fold_in(base_key, state.step)  # resumable: depends on the step only

        def loss_fn(params):
            model = nnx.merge(graphdef, params, state.frozen)
            score, _ = model(images(batch, "dist"), images(batch, "ref"), train=True,
                             rngs=nnx.Rngs(dropout=key))
            return jnp.mean(jnp.square(score - batch["score"]))

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "lr": schedule(state.step), "grad_norm": optax.global_norm(grads)}
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return train_step


def make_mesh(devices=None) -> jax.sharding.Mesh:
    devices = jax.devices() if devices is None else devices
    return jax.sharding.Mesh(np.asarray(devices), ("data",))


def compile_step(train_step, mesh: jax.sharding.Mesh):
    """jit with the state replicated and donated, the batch sharded over 'data'."""
    replicated = NamedSharding(mesh, P())
    return jax.jit(train_step, in_shardings=(replicated, NamedSharding(mesh, P("data"))),
                   out_shardings=(replicated, replicated), donate_argnums=(0,))


def to_global(batch: dict, mesh: jax.sharding.Mesh) -> dict:
    """Host batch (this process's share) -> global arrays sharded over 'data'."""
    sharding = NamedSharding(mesh, P("data"))
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


# ------------------------------------------------------------------------------ the run


@dataclasses.dataclass
class Run:
    """What train_and_evaluate sets up once: data parts, model graph, step, checkpoints."""

    config: ml_collections.ConfigDict
    workdir: Path
    parts: dict
    graphdef: object
    state: TrainState
    steps_per_epoch: int
    iterator: Iterator
    step_fn: Callable
    mesh: jax.sharding.Mesh
    ckpt: checkpoint.Checkpoints
    writer: MetricWriter


def _steps_per_epoch(config, n_train: int) -> int:
    spe = config.train.steps_per_epoch or n_train // config.data.batch_size
    if spe < 1:
        raise ValueError(f"{n_train} training records cannot fill one batch of {config.data.batch_size}")
    return spe


def _initial_model(config, train_records, restoring: bool = False) -> BPCLIP:
    model = create_model(config.model, dtype=config.dtype, seed=config.seed, restoring=restoring)
    if not config.model.pretrained and config.train.calibrate_bn and not restoring:
        # A random backbone with identity BatchNorm statistics lets activations grow with depth.
        # Every process calibrates on the same (unsharded) first batch, so the replicas agree.
        first = pipeline.train_dataset(train_records, batch_size=config.data.batch_size,
                                       crop=config.data.crop, seed=config.seed, flips=False)[0]
        x = jnp.asarray(first["dist"], jnp.float32) / 255.0
        if "ref" in first:
            x = jnp.concatenate([x, jnp.asarray(first["ref"], jnp.float32) / 255.0])
        calibrate_batchnorm(model.backbone, model.normalize(x))
        log.info("calibrated the random backbone's BatchNorm statistics on the first batch")
    return model


def setup(config: ml_collections.ConfigDict, workdir: str | Path, restoring: bool = False) -> Run:
    from bpclip_jax import data

    workdir = Path(workdir)
    parts = data.load_parts(config.data)
    train_records = parts[config.data.train_part]
    n_proc = jax.process_count()
    if config.data.batch_size % jax.device_count():
        raise ValueError(f"batch_size {config.data.batch_size} must divide over "
                         f"{jax.device_count()} devices")
    spe = _steps_per_epoch(config, len(train_records))
    dataset = pipeline.train_dataset(
        train_records, batch_size=config.data.batch_size // n_proc, crop=config.data.crop,
        seed=config.data.split_seed * 1000 + config.seed, flips=config.data.flips,
        shard=(jax.process_index(), n_proc))
    iterator = pipeline.loader(dataset, threads=config.data.threads, workers=config.data.workers,
                               prefetch=config.data.prefetch)
    tx, schedule = make_optimizer(config.optim, spe)
    model = _initial_model(config, train_records, restoring)
    graphdef, state = create_train_state(model, tx, config.train.freeze_backbone)
    mesh = make_mesh()
    ckpt = checkpoint.Checkpoints(workdir, config.train.max_to_keep)
    if not restoring:  # evaluation restores the best checkpoint itself (final_evaluation)
        state = _resume(config, ckpt, state, iterator)
    state = jax.device_put(state, NamedSharding(mesh, P()))
    step_fn = compile_step(make_train_step(graphdef, tx, schedule, config.seed), mesh)
    return Run(config, workdir, parts, graphdef, state, spe, iterator, step_fn, mesh, ckpt,
               MetricWriter(workdir))


def _resume(config, ckpt: checkpoint.Checkpoints, state: TrainState, iterator) -> TrainState:
    abstract = jax.tree.map(ocp_abstract, state)
    restored = ckpt.restore_latest(abstract, iterator)
    if restored is not None:
        log.info("resuming from %s at step %d", ckpt.latest.directory, int(restored.step))
        return restored
    if config.init_from:
        other = checkpoint.Checkpoints(config.init_from)
        loaded = other.restore_best(abstract)
        other.close()
        if loaded is None:
            raise FileNotFoundError(f"init_from={config.init_from} holds no checkpoint")
        log.info("initialized from %s", config.init_from)
        return state.replace(params=loaded.params, frozen=loaded.frozen)
    return state


def ocp_abstract(x):
    return jax.ShapeDtypeStruct(x.shape, x.dtype) if hasattr(x, "shape") else x


def _check_finite(losses: np.ndarray, first_step: int) -> None:
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
        raise NonFiniteLossError(
            f"the loss is {losses[bad[0]]} at step {first_step + int(bad[0]) + 1}; training stopped, "
            f"the last good checkpoint is kept")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
    """Trains as the config says, selects the best checkpoint on the validation part, evaluates it
    on the test parts and writes WORKDIR/results.json (+ predictions CSV and scatter plots)."""
    run = setup(config, workdir)
    run.writer.write_config(config)
    total = config.optim.epochs * run.steps_per_epoch
    stop = min(total, config.train.stop_at_step or total)
    step = int(run.state.step)
    if step < stop:
        _train_loop(run, step, stop)
    if stop < total:
        log.info("stopped at step %d of %d as train.stop_at_step asks", stop, total)
        run.ckpt.close()
        return {}
    return final_evaluation(run)


def _train_loop(run: Run, start: int, stop: int) -> None:
    from tqdm import tqdm

    config, spe = run.config, run.steps_per_epoch
    best = (run.ckpt.best_metrics() or {}).get("srcc", -math.inf)
    pending, first, t0 = [], start, time.perf_counter()
    bar = tqdm(total=stop, initial=start, desc="train", unit="step", disable=jax.process_index() != 0,
               dynamic_ncols=True, mininterval=2)
    for step in range(start, stop):
        run.state, metrics = run.step_fn(run.state, to_global(next(run.iterator), run.mesh))
        pending.append(metrics)
        done = step + 1
        epoch_end = done % spe == 0
        if done % config.train.log_every == 0 or epoch_end or done == stop:
            fetched = jax.device_get(pending)  # the one host sync since the last log step
            losses = np.asarray([m["loss"] for m in fetched])
            _check_finite(losses, first)
            rate = len(pending) * config.data.batch_size / (time.perf_counter() - t0)
            loss = float(losses.mean())
            run.writer.write(done, {"train/loss": loss, "train/lr": float(fetched[-1]["lr"]),
                                    "train/grad_norm": float(fetched[-1]["grad_norm"]),
                                    "train/pairs_per_s": rate, "train/epoch": done / spe})
            bar.set_postfix(epoch=f"{done / spe:.1f}", loss=f"{loss:.4f}", pairs_s=f"{rate:.1f}")
            bar.update(len(pending))
            pending, first, t0 = [], done, time.perf_counter()
        if epoch_end and (done // spe) % config.train.eval_every == 0:
            best = _end_of_epoch(run, done, best)
        elif done == stop:  # a stop between validations: checkpoint only, select as usual later
            run.ckpt.save_latest(done, run.state, run.iterator)
    bar.close()


def _end_of_epoch(run: Run, step: int, best: float) -> float:
    config = run.config
    run.ckpt.save_latest(step, run.state, run.iterator)
    if not config.data.select_part:
        return best
    records = run.parts[config.data.select_part]
    pred = evaluate.predict(run.graphdef, run.state.params, run.state.frozen, records,
                            config.data.eval_batch_size, desc=f"validate ({config.data.select_part})",
                            mesh=run.mesh)
    metrics = evaluate.metrics_on(records, pred)
    run.writer.write(step, {f"val/{k}": v for k, v in metrics.items()})
    if metrics["srcc"] > best:
        run.ckpt.save_best(step, run.state, {k: metrics[k] for k in ("srcc", "plcc")})
        log.info("step %d: validation SRCC %.4f, the best so far", step, metrics["srcc"])
        return metrics["srcc"]
    return best


def final_evaluation(run: Run) -> dict:
    """The best checkpoint (or the last without validation) on every test set of the config."""
    state = run.ckpt.restore_best(jax.tree.map(ocp_abstract, run.state)) or run.state
    results = evaluate.evaluate_sets(run.config, run.parts, run.graphdef, state.params, state.frozen,
                                     run.workdir, mesh=run.mesh)
    run.writer.write(int(state.step), {f"test/{name}/{k}": v for name, m in results.items()
                                       for k, v in m.items()})
    run.ckpt.close()
    return results


def maybe_initialize_distributed() -> None:
    """Multi-host: jax.distributed.initialize() when the environment names a coordinator."""
    if os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("SLURM_NTASKS", "1") != "1":
        jax.distributed.initialize()


def evaluate_workdir(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
    """Evaluates the workdir's best checkpoint (else its latest) on every test set of the config.

    The model's frozen parts (text features, BatchNorm statistics) come from the checkpoint, so
    nothing pretrained is downloaded.
    """
    run = setup(config, workdir, restoring=True)
    if run.ckpt.best.latest_step() is None and run.ckpt.latest.latest_step() is None:
        raise FileNotFoundError(f"{workdir} holds no checkpoint to evaluate; train first")
    return final_evaluation(run)
