"""Training: the state, one pure jitted train step, and train_and_evaluate (the paper's Sec. III-A
protocol on TOPIQ's recipe; docs/design.md).

The step is data parallel over every device of every process (mesh axis 'data'): the global batch
is sharded, the state replicated, the state buffers donated. Only nnx.Param enters the optimizer;
BatchNorm statistics and the text features (`frozen`) ride along unchanged. The host syncs with the
device only at logging steps and epoch ends.

A run's outputs never depend on where it was interrupted: the data stream is a function of the
step (data_pipelines.pipeline.train_dataset), an epoch ends with validate -> save best -> save
latest (with the run's record), and a rerun of the same command resumes from the newest checkpoint
that verifies (bpclip_jax.checkpoint).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import threading
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

from bpclip_jax import checkpoint, evaluate, lock, preempt, progress, run_config, trained
from bpclip_jax.build import create_model
from bpclip_jax.errors import WorkdirError
from bpclip_jax.models.bpclip import BPCLIP
from bpclip_jax.models.resnet import calibrate_batchnorm
from bpclip_jax.trained import trainable
from bpclip_jax.writer import MetricWriter
from data_pipelines import pipeline

log = logging.getLogger(__name__)


class NonFiniteError(FloatingPointError):
    """The loss or the trained state became NaN or infinite; the message names the first such step."""


NonFiniteLossError = NonFiniteError  # the name of earlier releases


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: nnx.State       # nnx.Param: the trained parameters
    frozen: nnx.State       # BatchNorm statistics, text features: never updated
    opt_state: optax.OptState

    def resumable(self) -> dict:
        """What a `latest` checkpoint holds: everything but `frozen` (saved once per run)."""
        return {"step": self.step, "params": self.params, "opt_state": self.opt_state}


# ------------------------------------------------------------------------------ schedule, optimizer


@flax.struct.dataclass
class Hyper:
    """The numbers of a run's optimization: the compiled train step reads them as arguments, not
    as constants baked into the program, so runs that differ only in them (a sweep over the
    learning rate, weight decay, Adam's betas or eps, the epochs of the cosine, the steps per
    epoch, the seed) compile the same program, which JAX's persistent compilation cache, when it
    is on (JAX_COMPILATION_CACHE_DIR), serves to every later run. `Hyper.of` gives them as
    float32/int32 scalars."""

    lr: float
    eta_min: float
    t_max: float
    b1: float
    b2: float
    eps: float
    weight_decay: float
    steps_per_epoch: int
    seed: int

    @classmethod
    def of(cls, optim: ml_collections.ConfigDict, steps_per_epoch: int, seed: int = 0) -> Hyper:
        """A config's `optim` numbers (and the run's seed) as scalars to pass to the compiled
        step."""
        f32 = np.float32
        return cls(lr=f32(optim.lr), eta_min=f32(optim.eta_min), t_max=f32(optim.t_max),
                   b1=f32(optim.b1), b2=f32(optim.b2), eps=f32(optim.eps),
                   weight_decay=f32(optim.weight_decay), steps_per_epoch=np.int32(steps_per_epoch),
                   seed=np.int32(seed))


def epoch_lr(optim, epoch):
    """torch's CosineAnnealingLR at `epoch` (stepped per epoch): periodic, lr is eta_min at
    epochs T_max, 3 T_max, ... and back to lr at 2 T_max, ... (its closed form). optim: a config's
    `optim` or a Hyper."""
    cos = jnp.cos(jnp.pi * epoch / optim.t_max)
    return optim.eta_min + (optim.lr - optim.eta_min) * (1 + cos) / 2


def adamw(hyper: Hyper):
    """(tx, schedule): AdamW (torch's: decoupled decay lr * wd * param) with the per-epoch cosine
    schedule, of `hyper`'s numbers (traced values inside the train step)."""
    schedule = lambda step: epoch_lr(hyper, step // hyper.steps_per_epoch)  # noqa: E731
    tx = optax.adamw(schedule, b1=hyper.b1, b2=hyper.b2, eps=hyper.eps,
                     weight_decay=hyper.weight_decay)
    return tx, schedule


def make_optimizer(optim: ml_collections.ConfigDict, steps_per_epoch: int):
    """(tx, schedule) of a config's `optim` (adamw): what initializes the optimizer state, whose
    structure does not depend on the numbers."""
    return adamw(Hyper.of(optim, steps_per_epoch))


# ------------------------------------------------------------------------------ state and step


def create_train_state(model: BPCLIP, tx: optax.GradientTransformation, freeze_backbone: bool = False):
    """(graphdef, TrainState) of a model: its trainable Params under the optimizer, the rest frozen."""
    graphdef, params, frozen = nnx.split(model, trainable(freeze_backbone), ...)
    return graphdef, TrainState(step=jnp.zeros((), jnp.int32), params=params, frozen=frozen,
                                opt_state=tx.init(params))


def images(batch: dict, key: str) -> jax.Array | None:
    """uint8 [B,H,W,3] from the pipeline -> float32 in [0,1] (on the device)."""
    return None if key not in batch else batch[key].astype(jnp.float32) / 255.0


def _finite(tree) -> jax.Array:
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def norm_in_norm(pred: jax.Array, target: jax.Array) -> jax.Array:
    """The Norm-in-Norm loss (Li et al., ACM MM 2020; p=1, q=2), as pyiqa's NiNLoss that TOPIQ's
    recipe adds to MSE: the L1 distance of the centred, L2-normalized predictions and labels over
    the batch, divided by 2 sqrt(B). A batch of one: the L1 loss. pred, target: [B]."""
    if pred.shape[0] == 1:
        return jnp.mean(jnp.abs(pred - target))
    unit = lambda v: (v - v.mean()) / jnp.maximum(jnp.linalg.norm(v - v.mean()), 1e-12)  # noqa: E731
    return jnp.sum(jnp.abs(unit(pred) - unit(target))) / (2.0 * jnp.sqrt(pred.shape[0]))


def make_train_step(graphdef, optimizer: Callable = adamw, nin_weight: float = 0.0):
    """The pure step: (state, batch, hyper) -> (state, metrics). `optimizer(hyper)` gives the
    (tx, schedule) the step applies (default: adamw; `hyper` a Hyper, or whatever that optimizer
    reads, with a `seed` for dropout). The loss: MSE on the normalized scores, plus `nin_weight` x
    the Norm-in-Norm loss (TOPIQ's recipe; 0 for BPCLIP, whose loss is Eq. 10). The metrics
    include `finite`: whether the updated parameters and optimizer state are all finite (one
    reduction on the device, read at the next log step)."""

    def train_step(state: TrainState, batch: dict, hyper):
        tx, schedule = optimizer(hyper)
        key = jax.random.fold_in(jax.random.key(hyper.seed), state.step)  # resumable: the step's

        def loss_fn(params):
            model = nnx.merge(graphdef, params, state.frozen)
            score, _ = model(images(batch, "dist"), images(batch, "ref"), train=True,
                             rngs=nnx.Rngs(dropout=key))
            loss = jnp.mean(jnp.square(score - batch["score"]))
            return loss + nin_weight * norm_in_norm(score, batch["score"]) if nin_weight else loss

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "lr": schedule(state.step), "grad_norm": optax.global_norm(grads),
                   "finite": _finite((params, opt_state))}
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return train_step


def make_mesh(devices=None) -> jax.sharding.Mesh:
    devices = jax.devices() if devices is None else devices
    return jax.sharding.Mesh(np.asarray(devices), ("data",))


def compile_step(train_step, mesh: jax.sharding.Mesh):
    """jit with the state replicated and donated, the batch sharded over 'data', the hyper
    replicated."""
    replicated = NamedSharding(mesh, P())
    return jax.jit(train_step, in_shardings=(replicated, NamedSharding(mesh, P("data")), replicated),
                   out_shardings=(replicated, replicated), donate_argnums=(0,))


def to_global(batch: dict, mesh: jax.sharding.Mesh) -> dict:
    """Host batch (this process's rows of the global batch) -> global arrays sharded over 'data'."""
    sharding = NamedSharding(mesh, P("data"))
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


# ------------------------------------------------------------------------------ the run


@dataclasses.dataclass
class Run:
    """What train_and_evaluate sets up once: data parts, model graph, step, checkpoints, record.

    record: {'history': [{'step', 'srcc', 'plcc'}, ...], 'best': {'step', 'srcc', 'plcc', 'part'}
    or None}: every validation so far and the selected step, saved with every latest checkpoint.
    """

    config: ml_collections.ConfigDict
    workdir: Path
    parts: dict
    graphdef: object
    state: TrainState
    steps_per_epoch: int
    hyper: Hyper
    iterator: Iterator
    step_fn: Callable
    mesh: jax.sharding.Mesh
    ckpt: checkpoint.Checkpoints
    writer: MetricWriter
    record: dict


def _steps_per_epoch(config, n_train: int) -> int:
    spe = config.train.steps_per_epoch or n_train // config.data.batch_size
    if spe < 1:
        raise WorkdirError(f"{n_train} training records cannot fill one batch of "
                           f"data.batch_size={config.data.batch_size}")
    return spe


def _initial_model(config, train_records) -> BPCLIP:
    """The model a new run starts from (pretrained, or random with calibrated BatchNorm)."""
    model = create_model(config.model, dtype=config.dtype, seed=config.seed)
    if not config.model.pretrained and config.train.calibrate_bn:
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


def data_seed(config) -> int:
    """The seed of the training stream (shuffle, crops, flips): the split's and the run's."""
    return config.data.split_seed * 1000 + config.seed


def train_stream(config, train_records, process: tuple[int, int], start_step: int = 0):
    """The training batches that process (index, count) reads from `start_step` on: its rows of
    every global batch (data_pipelines.pipeline.train_dataset)."""
    return pipeline.train_dataset(train_records, batch_size=config.data.batch_size,
                                  crop=config.data.crop, seed=data_seed(config),
                                  flips=config.data.flips, process=process, start_step=start_step,
                                  vertical_flips=config.data.vertical_flips)


def _check_batch(config) -> None:
    if config.data.batch_size % jax.device_count():
        raise WorkdirError(f"data.batch_size={config.data.batch_size} must divide over the "
                           f"{jax.device_count()} devices")


def setup(config: ml_collections.ConfigDict, workdir: str | Path) -> Run:
    """Everything a training run needs, resumed from the workdir's newest good checkpoint when it
    has one (refusing a config that differs from the run's own), else from `init_from`, else new."""

    workdir = Path(workdir)
    _check_batch(config)
    ckpt = checkpoint.Checkpoints(workdir, config.train.max_to_keep)
    try:
        return _setup(config, workdir, ckpt)
    except BaseException:
        ckpt.close()  # joins orbax's threads: an early error exits with its one line, nothing else
        raise


def _setup(config: ml_collections.ConfigDict, workdir: Path, ckpt: checkpoint.Checkpoints) -> Run:
    from bpclip_jax import data

    resuming = bool(ckpt.latest.all_steps())
    if resuming:
        run_config.check_resume(run_config.read(workdir), config, workdir)
    parts = data.load_parts(config.data)  # every row validated before the first step
    train_records = parts[config.data.train_part]
    spe = _steps_per_epoch(config, len(train_records))
    hyper = Hyper.of(config.optim, spe, config.seed)  # what the optimizer state and the step read
    tx, _ = adamw(hyper)
    mesh = make_mesh()
    record = {"history": [], "best": None}
    if resuming:
        graphdef, state = _abstract_train_state(config, tx, NamedSharding(mesh, P()))
        state, record = _resume(ckpt, state)
    else:
        model = _initial_model(config, train_records)
        graphdef, state = create_train_state(model, tx, config.train.freeze_backbone)
        state = jax.device_put(state, NamedSharding(mesh, P()))
        ckpt.discard_unrecorded()
        if config.init_from:
            state = _init_from(config.init_from, state)
        ckpt.save_frozen(state.frozen)
    start = int(state.step)
    writer = MetricWriter(workdir, resume_step=start)  # rows of attempts past `start` are dropped
    run_config.write(config, workdir) if jax.process_index() == 0 else None
    state = jax.device_put(state, NamedSharding(mesh, P()))
    dataset = train_stream(config, train_records, (jax.process_index(), jax.process_count()), start)
    iterator = pipeline.loader(dataset, threads=config.data.threads, workers=config.data.workers,
                               prefetch=config.data.prefetch)
    step_fn = compile_step(make_train_step(graphdef, adamw, config.train.nin_weight), mesh)
    hyper = jax.device_put(hyper, NamedSharding(mesh, P()))
    return Run(config, workdir, parts, graphdef, state, spe, hyper, iterator, step_fn, mesh, ckpt,
               writer, record)


def _abstract_train_state(config, tx: optax.GradientTransformation,
                          sharding: NamedSharding) -> tuple[nnx.GraphDef, TrainState]:
    """(graphdef, TrainState of ShapeDtypeStructs placed with `sharding`): what a resumed run
    restores into. Its values all come from the checkpoint, so nothing is initialized: building the
    model eagerly cost a resumed run about 2 s and the memory of a model it then dropped."""
    graphdef, params, frozen = trained.abstract_parts(config)
    state = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=params, frozen=frozen,
                       opt_state=jax.eval_shape(tx.init, params))
    return graphdef, trained.placed(state, sharding)


def _resume(ckpt: checkpoint.Checkpoints, state: TrainState) -> tuple[TrainState, dict]:
    frozen = ckpt.restore_frozen(state.frozen)
    found = ckpt.restore_latest(state.resumable())
    step, saved, record = found
    ckpt.check_best_file(record)
    log.info("resuming from %s at step %d", Path(ckpt.latest.directory) / str(step), step)
    kept = {"history": record.get("history", []), "best": record.get("best")}
    if record.get("pending"):  # preempted between log steps: those steps' metrics, not yet logged
        kept["pending"] = record["pending"]
    return state.replace(step=saved["step"], params=saved["params"], opt_state=saved["opt_state"],
                         frozen=frozen), kept


def _init_from(source: str, state: TrainState) -> TrainState:
    """Parameters and frozen parts of another run's selected checkpoint (optimizer state fresh)."""
    if not Path(source, "checkpoints").is_dir():
        raise WorkdirError(f"init_from={source} holds no checkpoints/ folder")
    other = checkpoint.Checkpoints(source, create=False)  # a reader: nothing of the other run is moved
    try:
        frozen = other.restore_frozen(state.frozen)
        step, params, _ = other.restore_selected({"params": state.params})
    finally:
        other.close()
    log.info("initialized from %s (step %d)", source, step)
    return state.replace(params=params, frozen=frozen)


def _fail_non_finite(fetched: list[dict], first_step: int, ckpt: checkpoint.Checkpoints) -> None:
    """Raises NonFiniteError at the first step whose loss or updated state is not finite."""
    for offset, m in enumerate(fetched):
        step = first_step + offset + 1
        problem = (f"the loss is {m['loss']}" if not np.isfinite(m["loss"]) else
                   "the parameters or optimizer state became non-finite (inf/NaN) in its update"
                   if not m["finite"] else None)
        if problem:
            last = ckpt.latest.latest_step()
            kept = (f"the last good checkpoint is {Path(ckpt.latest.directory) / str(last)}"
                    if last is not None else "no checkpoint was saved yet")
            raise NonFiniteError(f"step {step}: {problem}; training stopped and nothing non-finite "
                                 f"was saved ({kept}). Lower optim.lr or check the data")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
    """Trains as the config says, selects the checkpoint on `data.select_part`, evaluates it on
    the test parts and writes WORKDIR/results.json (+ predictions CSV and scatter plots). Running it
    again on the same workdir resumes; a second run on a workdir in use is refused. SIGTERM or
    SIGINT stops it after a checkpoint of the step in flight (bpclip_jax.preempt); a run that fails
    before its first step leaves the workdir as it found it."""
    with _claimed(workdir) as started, preempt.Signals() as signals:
        with signals.interruptible():
            run = setup(config, workdir)
        try:
            total = config.optim.epochs * run.steps_per_epoch
            stop = min(total, config.train.stop_at_step or total)
            start = int(run.state.step)
            if start < stop or _validation_missing(run, start):
                _train_loop(run, start, stop, signals, started)
            started.set()
            if stop < total:
                progress.say(f"stopped at step {stop} of {total} as train.stop_at_step asks; the same "
                             f"command without it resumes")
                return {}
            with signals.interruptible():
                return final_evaluation(run)
        finally:
            run.ckpt.close()


@contextlib.contextmanager
def _claimed(workdir: str | Path):
    """The workdir's lock for a training run, and a failed start undone: when the run stops
    before its first step (a bad data root, an error in set-up, a signal), what it created in
    the workdir (the lock file, checkpoints/, config.json, metrics.jsonl, the folder itself) is
    removed, and what was there before is left as it was. Yields an Event to set once a step is
    done."""
    workdir = Path(workdir)
    before = set(os.listdir(workdir)) if workdir.is_dir() else None
    started, undone = threading.Event(), False
    try:
        with lock.exclusive(workdir) as held:
            try:
                yield started
            except BaseException:
                if not started.is_set() and jax.process_index() == 0:
                    for name in set(os.listdir(workdir)) - (before or set()) - {lock.LOCK_FILE}:
                        path = workdir / name
                        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
                    held.remove = before is None or lock.LOCK_FILE not in before
                    undone = True
                raise
    finally:
        if undone and before is None and workdir.is_dir() and not any(workdir.iterdir()):
            workdir.rmdir()


def _train_loop(run: Run, start: int, stop: int, signals: preempt.Signals | None = None,
                started: threading.Event | None = None) -> None:
    """Steps start..stop, logging every train.log_every steps, validating and checkpointing at
    epoch ends. On a signal (`signals`) it stops after the step in flight with a checkpoint of
    it; the steps since the last log row travel in that checkpoint's record ('pending'), so the
    resumed run logs the same rows as an unstopped one."""
    config, spe = run.config, run.steps_per_epoch
    signals = signals or preempt.Signals()
    pending = run.record.pop("pending", [])  # a preempted window's steps, logged with the rest
    first, t0, began = start - len(pending), time.perf_counter(), time.perf_counter()
    bar = progress.bar(stop, "train", "step", initial=start)
    ticker = progress.Ticker()
    step_fn = run.step_fn
    if _validation_missing(run, start):
        _end_of_epoch_or_stop(run, start, signals)  # preempted in its validation: redo it
    for step in range(start, stop):
        batch = to_global(next(run.iterator), run.mesh)
        if step == start and hasattr(step_fn, "lower"):
            step_fn = evaluate.compiled_everywhere(step_fn, run.state, batch, run.hyper)
        run.state, metrics = step_fn(run.state, batch, run.hyper)
        if started is not None:
            started.set()
        pending.append(metrics)
        done = step + 1
        epoch_end = done % spe == 0
        log_step = done % config.train.log_every == 0 or epoch_end or done == stop
        if log_step:
            fetched = jax.device_get(pending)  # the one host sync since the last log step
            _fail_non_finite(fetched, first, run.ckpt)
            fresh = done - max(first, start)
            rate = fresh * config.data.batch_size / (time.perf_counter() - t0)
            loss = float(np.mean([m["loss"] for m in fetched]))
            run.writer.write(done, {"train/loss": loss, "train/lr": float(fetched[-1]["lr"]),
                                    "train/grad_norm": float(fetched[-1]["grad_norm"]),
                                    "train/pairs_per_s": rate, "train/epoch": done / spe})
            bar.set_postfix(epoch=f"{done / spe:.1f}", loss=f"{loss:.4f}", pairs_s=f"{rate:.1f}")
            bar.update(len(pending))
            left = (stop - done) * (time.perf_counter() - began) / max(done - start, 1)
            ticker.tick(f"train: step {done}/{stop} (epoch {done / spe:.1f}), loss {loss:.4f}, "
                        f"{rate:.1f} pairs/s, {progress.duration(left)} left", force=epoch_end)
            pending, first, t0 = [], done, time.perf_counter()
        stopping = signals.stop_requested(sync_point=log_step)
        if epoch_end and (done // spe) % config.train.eval_every == 0 and not stopping:
            _end_of_epoch_or_stop(run, done, signals)
            stopping = signals.stop_requested(sync_point=True)  # a signal in its checkpoint writes
        elif done == stop or stopping:  # a stop between validations: checkpoint only
            _save_with_pending(run, done, pending)
        if stopping:
            bar.close()
            raise signals.preempted(f"stopped by a signal after step {done}: "
                                    f"{Path(run.ckpt.latest.directory) / str(done)} holds it; the same "
                                    f"command resumes from there")
    bar.close()


def _save_with_pending(run: Run, step: int, pending: list) -> None:
    """The latest checkpoint of `step`, its record carrying the metrics of the steps not yet
    logged (a preemption between log steps), as plain numbers."""
    record = run.record
    if pending:
        record = {**record, "pending": [{k: (bool(v) if k == "finite" else float(v)) for k, v in m.items()}
                                        for m in jax.device_get(pending)]}
    run.ckpt.save_latest(step, run.state.resumable(), record)


def _validation_missing(run: Run, step: int) -> bool:
    """Whether `step` ends an epoch that should have validated but its record has no row: the run
    was preempted in that validation, or at that step before it (the run's last step included:
    its rerun has no step left to train, only that validation before the test)."""
    config, spe = run.config, run.steps_per_epoch
    due = (config.data.select_part and step and step % spe == 0
           and (step // spe) % config.train.eval_every == 0)
    return bool(due) and all(h["step"] != step for h in run.record["history"])


def _end_of_epoch_or_stop(run: Run, step: int, signals: preempt.Signals) -> None:
    """_end_of_epoch, its validation stopped at once by a signal: the step's checkpoint is then
    written without it (the resumed run validates that step first) and Preempted raised."""
    try:
        _end_of_epoch(run, step, signals)
    except preempt.Preempted as stopped:
        if step not in run.ckpt.latest.all_steps():
            run.ckpt.save_latest(step, run.state.resumable(), run.record)
        raise signals.preempted(f"stopped by {signal.Signals(stopped.signum).name} in the validation "
                                f"after step {step}: {Path(run.ckpt.latest.directory) / str(step)} holds "
                                f"the step; the same command validates it and goes on") from None


def selection_label(config) -> str:
    """How the reported checkpoint is chosen, as results.json, table.md and the log say it."""
    from bpclip_jax.data import part_label

    part = config.data.select_part
    if not part:
        return "last checkpoint (no validation)"
    label = f"best {part_label(config.data, part)} SRCC"
    if part in config.data.test_parts:
        return f"{label}: selected on test, optimistic (the pyiqa/TOPIQ practice)"
    if config.data.val_holdout and part == "val":
        return f"{label} ({config.data.val_holdout:g} of the training part held out)"
    return label


def _rank(srcc: float) -> float:
    """A validation SRCC for comparisons: NaN (constant predictions) ranks below every number, so
    that a NaN validation never stays the best."""
    return srcc if np.isfinite(srcc) else -np.inf


def _health_text(h: dict) -> str:
    """'spread 0.91 of labels', cosines 1.2e-02': the validation line's health (evaluate.health)."""
    text = f"spread {h['pred_std_ratio']:.2f} of labels'"
    return text + (f", cosines {h['cos_spread']:.1e}" if "cos_spread" in h else "")


def _end_of_epoch(run: Run, step: int, signals: preempt.Signals | None = None) -> None:
    """Validate, save the best (if improved), then the latest with the run's record: a kill at any
    point leaves a record whose best checkpoint exists (bpclip_jax.checkpoint). The validation
    line (and metrics.jsonl) carries the model's health: its predictions' spread against the
    labels' and the cosines' spread across images; a collapse is warned of in one line."""
    config = run.config
    part = config.data.select_part
    if part:
        records = run.parts[part]
        with (signals or preempt.Signals()).interruptible():
            pred, cosines = evaluate.predict(run.graphdef, run.state.params, run.state.frozen, records,
                                             config.data.eval_batch_size, threads=config.data.threads,
                                             desc=f"validate ({part})", mesh=run.mesh, similarity=True)
        m = evaluate.metrics_on(records, pred)
        h = evaluate.health(records, pred, cosines)
        run.writer.write(step, {f"val/{k}": v for k, v in {**m, **h}.items()})
        run.record["history"].append({"step": step, "srcc": m["srcc"], "plcc": m["plcc"]})
        best = run.record["best"]
        improved = best is None or _rank(m["srcc"]) > _rank(best["srcc"])
        if improved:
            run.record["best"] = {"step": step, "srcc": m["srcc"], "plcc": m["plcc"],
                                  "part": part, "selection": selection_label(config)}
            run.ckpt.save_best(step, {"params": run.state.params}, run.record["best"])
        best = run.record["best"]
        progress.say(f"step {step} (epoch {step // run.steps_per_epoch}): {part} SRCC {m['srcc']:.4f}, "
                     f"PLCC {m['plcc']:.4f}; best SRCC {best['srcc']:.4f} at step {best['step']}"
                     + (" (new best)" if improved else "") + f"; {_health_text(h)}")
        warning = evaluate.collapse_warning(h, config.model, part)
        if warning:
            progress.say(warning)
    run.ckpt.save_latest(step, run.state.resumable(), run.record)


def final_evaluation(run: Run) -> dict:
    """The selected checkpoint on every test set of the config; results.json says which it was."""
    abstract = run.state
    step, params, _ = run.ckpt.restore_selected({"params": abstract.params})
    return _test(run.config, run.parts, run.graphdef, params, run.state.frozen, run.workdir,
                 run.mesh, run.writer, step, run.record.get("best"))


def _test(config, parts, graphdef, params, frozen, workdir: Path, mesh, writer, step: int,
          best: dict | None) -> dict:
    selection = {"step": step, "how": selection_label(config)}
    if best:
        selection.update(val_srcc=best["srcc"], val_plcc=best["plcc"])
    results, written = evaluate.evaluate_sets(config, parts, graphdef, params, frozen, workdir,
                                              mesh=mesh, selection=selection)
    writer.replace("test/", step, {f"test/{name}/{k}": v for name, m in results.items()
                                   if name != "selection" for k, v in m.items()})
    progress.say(f"tested step {step} ({selection['how']}); wrote "
                 + ", ".join(str(p) for p in written))
    return results


def maybe_initialize_distributed() -> None:
    """Joins a multi-process run when the environment describes one, before JAX starts a backend.

    - JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES and JAX_PROCESS_ID: the
      standard variables, for a local launch (scripts/launch_local.sh) or any launcher;
    - SLURM (srun, SLURM_NTASKS > 1): JAX reads the job's variables itself.
    On CPU (JAX_PLATFORMS=cpu) the cross-process collectives use gloo. A process that dies stops
    the others within BPCLIP_HEARTBEAT_TIMEOUT_S seconds (default 100): the coordination service
    misses its heartbeats and ends every process with an error naming the task that is gone.
    """
    env = os.environ
    explicit = env.get("JAX_COORDINATOR_ADDRESS")
    if not explicit and env.get("SLURM_NTASKS", "1") == "1":
        return
    if env.get("JAX_PLATFORMS", "").strip() == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    timeout = int(env.get("BPCLIP_HEARTBEAT_TIMEOUT_S", "100"))
    if explicit:
        missing = [k for k in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID") if k not in env]
        if missing:
            raise WorkdirError(f"JAX_COORDINATOR_ADDRESS={explicit} is set but {', '.join(missing)} "
                               f"is not: set all three (scripts/launch_local.sh does)")
        jax.distributed.initialize(explicit, int(env["JAX_NUM_PROCESSES"]), int(env["JAX_PROCESS_ID"]),
                                   heartbeat_timeout_seconds=timeout)
    else:
        jax.distributed.initialize(heartbeat_timeout_seconds=timeout)
    log.info("process %d of %d, %d local devices of %d", jax.process_index(), jax.process_count(),
             jax.local_device_count(), jax.device_count())


def evaluate_workdir(config: ml_collections.ConfigDict | None, workdir: str | Path,
                     overrides: dict | None = None) -> dict:
    """Evaluates a run's selected checkpoint on the test sets, the model and split taken from the
    run's config.json (`config`, if given, may name other test sets and roots; its explicit
    `overrides` must not contradict the run: bpclip_jax.run_config)."""
    from bpclip_jax import data

    workdir = Path(workdir)
    saved = run_config.read(workdir)
    config, taken = run_config.for_evaluation(saved, config, overrides or {}, workdir)
    if taken:
        progress.say(f"model and split from {workdir / run_config.CONFIG_FILE}: "
                     + ", ".join(f"{k}={a!r}" for k, (a, _) in taken.items()))
    # Evaluation writes results.json and the test rows of metrics.jsonl, which a training run on
    # the workdir writes too: it takes the workdir's lock (a run in use is refused at once).
    with lock.exclusive(workdir):
        loaded = trained.load(workdir, config)
        graphdef, params, frozen = nnx.split(loaded.model, nnx.Param, ...)
        parts = data.load_parts(config.data)
        mesh = make_mesh()
        writer = MetricWriter(workdir)
        return _test(config, parts, graphdef, params, frozen, workdir, mesh, writer, loaded.step, loaded.best)
