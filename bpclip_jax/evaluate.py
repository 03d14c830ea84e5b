"""Predictions over a split (whole images, grouped by shape), metrics, results tables and plots."""

from __future__ import annotations

import csv
import functools
import json
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from bpclip_jax import metrics
from data_pipelines import pipeline
from data_pipelines.records import SCALES, Record, to_mos


@functools.lru_cache(maxsize=8)
def forward_fn(graphdef, out_sharding: NamedSharding | None = None):
    """A jitted (params, frozen, dist, ref) -> scores [B] for one model graph: one compile per
    input shape, cached across calls. With `out_sharding` (replicated over a mesh) the scores of a
    batch sharded over that mesh come back whole to every process."""

    def forward(params, frozen, dist, ref):
        model = nnx.merge(graphdef, params, frozen)
        to_float = lambda x: None if x is None else x.astype(jnp.float32) / 255.0  # noqa: E731
        return model(to_float(dist), to_float(ref))[0]

    return jax.jit(forward, out_shardings=out_sharding)


_COMPILED: dict = {}


def compiled_everywhere(fn, *args):
    """`fn` (a jitted function) compiled for the shapes of `args`, every process of a multi-process
    run waiting until all have compiled it. Without the wait, a process still compiling makes the
    others' first collective time out (CPU collectives give up after 30 s). One process: `fn`."""
    if jax.process_count() == 1:
        return fn
    key = (fn, str(jax.tree.map(lambda x: (x.shape, x.dtype, getattr(x, "sharding", None)), args)))
    if key not in _COMPILED:
        import orbax.checkpoint as ocp

        _COMPILED[key] = fn.lower(*args).compile()
        ocp.multihost.sync_global_processes(f"compiled {getattr(fn, '__name__', 'fn')} {len(_COMPILED)}")
    return _COMPILED[key]


def shard_batch(x: np.ndarray, mesh: jax.sharding.Mesh) -> jax.Array:
    """A host batch that every process holds whole -> one array split over the mesh's 'data' axis."""
    sharding = NamedSharding(mesh, P("data"))
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def predict(graphdef, params, frozen, records: Sequence[Record], batch_size: int = 1, *,
            threads: int = 2, desc: str = "evaluate", mesh: jax.sharding.Mesh | None = None
            ) -> np.ndarray:
    """Predicted scores ([0,1] scale, higher = better) of `records`, in their order.

    The images of each batch are split over the devices of `mesh` (default: this process's first
    device); the batch is rounded up to a multiple of the mesh size, padding masked, so evaluation
    scales with the devices as training does. Every process reads every record and gets every score.
    """
    from bpclip_jax import progress

    if mesh is None:
        mesh = jax.sharding.Mesh(np.asarray(jax.local_devices()[:1]), ("data",))
    batch_size = -(-batch_size // mesh.size) * mesh.size
    replicated = NamedSharding(mesh, P())
    params, frozen = jax.device_put((params, frozen), replicated)
    forward = forward_fn(graphdef, replicated)
    out = np.full(len(records), np.nan, np.float32)
    iterator = pipeline.loader(pipeline.eval_dataset(records, batch_size), threads=threads)
    with progress.bar(len(records), desc, "img", leave=False) as bar:
        for batch in iterator:
            ref = None if "ref" not in batch else shard_batch(batch["ref"], mesh)
            dist = shard_batch(batch["dist"], mesh)
            run = compiled_everywhere(forward, params, frozen, dist, ref)
            scores = np.asarray(run(params, frozen, dist, ref))
            mask = batch["mask"]
            out[batch["index"][mask]] = scores[mask]
            bar.update(int(mask.sum()))
    return out


def metrics_on(records: Sequence[Record], pred: np.ndarray) -> dict[str, float]:
    """Metrics of predictions against the records' labels, in the set's own MOS scale."""
    mos = np.asarray([r.mos for r in records])
    return metrics.all_metrics(to_mos(pred, records[0].dataset), mos)


def write_predictions(path: Path, records: Sequence[Record], pred: np.ndarray) -> None:
    mapped = to_mos(pred, records[0].dataset)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "ref", "mos", "prediction", "score", "predicted_score"])
        for r, p, s in zip(records, mapped, pred):
            writer.writerow([r.dist, r.ref or "", f"{r.mos:.9g}", f"{p:.9g}", f"{r.score:.9g}",
                             f"{s:.9g}"])


def _scale_name(dataset: str) -> str:
    """'kadid10k scale 1-5, higher = better': how a set's labels read (records.SCALES)."""
    lo, hi, higher_better = SCALES[dataset]
    return f"{dataset} scale {lo:g}-{hi:g}, {'higher' if higher_better else 'lower'} = better"


def scatter_figure(records: Sequence[Record], pred: np.ndarray, title: str, step: int | None = None):
    """A matplotlib Figure of MOS against prediction, both in the set's own scale, with:
    the 4-parameter logistic fitted from prediction to MOS, drawn over the prediction range; the
    line prediction = MOS; SRCC, PLCC (plain and after the fit) and n in the title, with the
    checkpoint's `step` when given. Axes span the set's scale (and any value outside it).

    records: the rated records (one dataset); pred: `[N]` scores in [0, 1], higher = better.
    """
    from matplotlib.figure import Figure  # not pyplot: no global backend or figure state

    dataset = records[0].dataset
    mos = np.asarray([r.mos for r in records])
    mapped = to_mos(np.asarray(pred, np.float64), dataset)
    m = metrics.all_metrics(mapped, mos)
    xs = np.linspace(mapped.min(), mapped.max(), 300)
    curve = metrics.logistic4(xs, *metrics.fit_logistic(mapped, mos))
    lo, hi, _ = SCALES[dataset]
    values = np.concatenate([mapped, mos, [lo, hi]])
    margin = 0.04 * (values.max() - values.min())
    limits = (values.min() - margin, values.max() + margin)

    fig = Figure(figsize=(5.6, 5.2), dpi=120)
    ax = fig.add_subplot()
    ax.plot(limits, limits, ls="--", lw=0.8, color="0.6", label="prediction = MOS")
    ax.scatter(mapped, mos, s=10, alpha=0.6, color="tab:blue", edgecolors="none", label="images")
    ax.plot(xs, curve, color="tab:red", lw=2, label=f"logistic fit (PLCC {m['plcc_logistic']:.3f})")
    ax.set(xlim=limits, ylim=limits, aspect="equal", xlabel=f"prediction ({_scale_name(dataset)})",
           ylabel=f"MOS ({_scale_name(dataset)})")
    head = title if step is None else f"{title}, checkpoint of step {step}"
    ax.set_title(f"{head}\nSRCC {m['srcc']:.3f}   PLCC {m['plcc']:.3f}   n {m['n']}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def scatter_plot(path: Path, records: Sequence[Record], pred: np.ndarray, title: str,
                 step: int | None = None) -> None:
    """Writes scatter_figure(records, pred, title, step) to `path` (PNG)."""
    scatter_figure(records, pred, title, step).savefig(path)


def _atomic(path: Path, write, *args) -> Path:
    """Calls write(tmp, *args) then renames tmp to path: a kill leaves the old file or the new,
    whole (tmp keeps the suffix: matplotlib picks the format by it)."""
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    write(tmp, *args)
    tmp.replace(path)
    return path


def evaluate_sets(config, parts: dict, graphdef, params, frozen, workdir: str | Path,
                  mesh: jax.sharding.Mesh | None = None, selection: dict | None = None
                  ) -> tuple[dict, list[Path]]:
    """Evaluates every test part of the config (and every cross set), writes results.json,
    predictions_<set>_<part>.csv and scatter_<set>_<part>.png in the workdir (each written whole or
    not at all) and returns (results, the files written). `selection` (which checkpoint, chosen
    how) is stored in results.json under "selection". `mesh`: see predict."""
    from bpclip_jax.data import part_label

    workdir = Path(workdir)
    names = list(config.data.test_parts) + [p for p in parts if p.endswith("/all")]
    results, written = {}, []
    for part in dict.fromkeys(names):
        records = parts[part]
        label = part_label(config.data, part)
        pred = predict(graphdef, params, frozen, records, config.data.eval_batch_size,
                       threads=config.data.threads, desc=f"test {label}", mesh=mesh)
        results[label] = metrics_on(records, pred)
        if jax.process_index() == 0:
            stem = label.replace("/", "_")
            written.append(_atomic(workdir / f"predictions_{stem}.csv", write_predictions, records, pred))
            step = None if selection is None else selection["step"]
            written.append(_atomic(workdir / f"scatter_{stem}.png", scatter_plot, records, pred, label,
                                   step))
        if jax.process_index() == 0:
            print(f"{label}: " + ", ".join(f"{k} {v:.4f}" if k != "n" else f"n {v}"
                                           for k, v in results[label].items()), flush=True)
    if selection is not None:
        results = {"selection": selection, **results}
    if jax.process_index() == 0:
        written.insert(0, _atomic(workdir / "results.json", Path.write_text,
                                  json.dumps(results, indent=1) + "\n"))
    return results, written
