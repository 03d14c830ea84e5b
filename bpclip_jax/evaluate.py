"""Predictions over a split (whole images, grouped by shape), metrics, results tables and plots."""

from __future__ import annotations

import csv
import functools
import io
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
from bpclip_jax.files import atomic_write
from data_pipelines import pipeline
from data_pipelines.records import SCALES, Record, to_mos


@functools.lru_cache(maxsize=8)
def forward_fn(graphdef, out_sharding: NamedSharding | None = None):
    """A jitted (params, frozen, dist, ref) -> (scores [B], cosine similarities [B,4,P] or None
    without the text branch) for one model graph: one compile per input shape, cached across
    calls. With `out_sharding` (replicated over a mesh) the outputs of a batch sharded over that
    mesh come back whole to every process."""

    def forward(params, frozen, dist, ref):
        model = nnx.merge(graphdef, params, frozen)
        to_float = lambda x: None if x is None else x.astype(jnp.float32) / 255.0  # noqa: E731
        score, aux = model(to_float(dist), to_float(ref))
        return score, aux.get("similarity")

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
            threads: int = 2, desc: str = "evaluate", mesh: jax.sharding.Mesh | None = None,
            similarity: bool = False):
    """Predicted scores ([0,1] scale, higher = better) of `records`, in their order; with
    `similarity`, (scores, the image-to-prompt cosines [N,4,P] or None without the text branch).

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
    cosines = None
    iterator = pipeline.loader(pipeline.eval_dataset(records, batch_size), threads=threads)
    with progress.bar(len(records), desc, "img", leave=False) as bar:
        for batch in iterator:
            ref = None if "ref" not in batch else shard_batch(batch["ref"], mesh)
            dist = shard_batch(batch["dist"], mesh)
            run = compiled_everywhere(forward, params, frozen, dist, ref)
            scores, sims = run(params, frozen, dist, ref)
            mask, index = batch["mask"], batch["index"][batch["mask"]]
            out[index] = np.asarray(scores)[mask]
            if similarity and sims is not None:
                if cosines is None:
                    cosines = np.full((len(records), *sims.shape[1:]), np.nan, np.float32)
                cosines[index] = np.asarray(sims)[mask]
            bar.update(int(mask.sum()))
    return (out, cosines) if similarity else out


# A run has collapsed when its predictions spread less than this share of its labels' spread:
# the model gives (nearly) every image one score, whatever its ranking metrics say.
COLLAPSE_RATIO = 0.2


def health(records: Sequence[Record], pred: np.ndarray, cosines: np.ndarray | None) -> dict[str, float]:
    """How alive a model's outputs are over a split, in two numbers:
    'pred_std_ratio', the standard deviation of the predictions over that of the labels (both on
    the [0,1] scale; near 0 when every image gets one score), and, with the text branch,
    'cos_spread', the standard deviation across images of each image-to-prompt cosine (Eq. 8),
    averaged over the levels and prompts (near 0 when every image maps to one direction of the
    text space)."""
    labels = np.asarray([r.score for r in records], np.float64)
    out = {"pred_std_ratio": float(np.std(pred) / max(np.std(labels), 1e-12))}
    if cosines is not None:
        out["cos_spread"] = float(np.std(cosines, axis=0).mean())
    return out


def collapsed(h: dict[str, float]) -> bool:
    """Whether the predictions spread less than COLLAPSE_RATIO of the labels' (or are NaN)."""
    return not h["pred_std_ratio"] >= COLLAPSE_RATIO


def collapse_warning(h: dict[str, float], model_cfg, part: str) -> str | None:
    """One line naming the likely cause and the flag to try when `h` (health()) says collapsed;
    None otherwise."""
    if not collapsed(h):
        return None
    spread = f"predictions on {part} spread {h['pred_std_ratio']:.2f} of the labels'"
    if "cos_spread" in h:
        spread += f", image-to-prompt cosines {h['cos_spread']:.1e} across images"
    from bpclip_jax.build import uses_text

    if uses_text(model_cfg) and model_cfg.text_head != "cosine":
        cause = (f"the prompt softmax (model.text_head={model_cfg.text_head}) saturates: every image "
                 f"reads the same prompt. Try --config.model.text_head=cosine (Eq. 9 as printed)")
    elif uses_text(model_cfg):
        cause = ("the image features map to one direction of the text space. Try a lower "
                 "--config.optim.lr, or --config.model.use_text=False to check the rest of the model")
    else:
        cause = "the regression gives every image one score. Try a lower --config.optim.lr"
    return f"warning: collapse: {spread}; likely cause: {cause}"


def metrics_on(records: Sequence[Record], pred: np.ndarray) -> dict[str, float]:
    """Metrics of predictions against the records' labels, in the set's own MOS scale."""
    mos = np.asarray([r.mos for r in records])
    return metrics.all_metrics(to_mos(pred, records[0].dataset), mos)


def write_predictions(path: Path, records: Sequence[Record], pred: np.ndarray) -> Path:
    """predictions_<set>_<part>.csv: per record its files, label and prediction (each in the set's
    scale and on [0,1]); written whole or not at all."""
    mapped = to_mos(pred, records[0].dataset)
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["path", "ref", "mos", "prediction", "score", "predicted_score"])
    for r, p, s in zip(records, mapped, pred):
        writer.writerow([r.dist, r.ref or "", f"{r.mos:.9g}", f"{p:.9g}", f"{r.score:.9g}", f"{s:.9g}"])
    return atomic_write(path, text.getvalue())


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
                 step: int | None = None) -> Path:
    """Writes scatter_figure(records, pred, title, step) to `path` (PNG), whole or not at all."""
    png = io.BytesIO()
    scatter_figure(records, pred, title, step).savefig(png, format="png")
    return atomic_write(path, png.getvalue())


def _shown(key: str, value) -> str:
    if key == "n":
        return f"n {value}"
    return f"{key} {value:.2e}" if key == "cos_spread" else f"{key} {value:.4f}"


def evaluate_sets(config, parts: dict, graphdef, params, frozen, workdir: str | Path,
                  mesh: jax.sharding.Mesh | None = None, selection: dict | None = None
                  ) -> tuple[dict, list[Path]]:
    """Evaluates every test part of the config (and every cross set): its metrics and its
    health (pred_std_ratio, cos_spread; a collapse is warned of), writes results.json,
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
        pred, cosines = predict(graphdef, params, frozen, records, config.data.eval_batch_size,
                                threads=config.data.threads, desc=f"test {label}", mesh=mesh,
                                similarity=True)
        h = health(records, pred, cosines)
        results[label] = {**metrics_on(records, pred), **h}
        warning = collapse_warning(h, config.model, label)
        if jax.process_index() == 0:
            stem = label.replace("/", "_")
            written.append(write_predictions(workdir / f"predictions_{stem}.csv", records, pred))
            step = None if selection is None else selection["step"]
            written.append(scatter_plot(workdir / f"scatter_{stem}.png", records, pred, label, step))
        if jax.process_index() == 0:
            print(f"{label}: " + ", ".join(_shown(k, v) for k, v in results[label].items()), flush=True)
            if warning:
                print(warning, flush=True)
    if selection is not None:
        results = {"selection": selection, **results}
    if jax.process_index() == 0:
        written.insert(0, atomic_write(workdir / "results.json", json.dumps(results, indent=1) + "\n"))
    return results, written
