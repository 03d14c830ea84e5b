"""Scoring images from a notebook: load a trained or exported model, score, explain.

    from bpclip_jax.api import Scorer
    scorer = Scorer.from_workdir("runs/kadid")          # or Scorer.from_pretrained("models/kadid")
    scorer("dist.png", ref="ref.png")                   # in the training set's MOS scale
    scorer.explain("dist.png", ref="ref.png")           # adjectives per dimension, token maps
    scorer.save_explanation("why.png", "dist.png", ref="ref.png")

Images: a path, a PIL image, a numpy array (uint8 HWC, or float HWC in [0,1]; grayscale and RGBA
are converted) or a list of these. Sizes: very large images are first resized so that the shorter
side is 448 (SPAQ's protocol); then each side is resized to the nearest multiple of `size_step`
(64 by default), so a folder of many sizes compiles a bounded number of shapes. size_step=0 scores
every image at its own size (the benchmark protocol: one compile per new shape).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from PIL import Image

from bpclip_jax import run_config
from bpclip_jax.errors import UserError
from bpclip_jax.models.bpclip import feature_grid
from bpclip_jax.text import DIMENSIONS, PROMPTS, dimension_indices
from data_pipelines.images import read_rgb, to_rgb8
from data_pipelines.records import SCALES, to_mos

EXPORT_FORMAT = 1
LARGE_SHORT_SIDE = 512   # images whose shorter side exceeds this ...
SPAQ_SHORT_SIDE = 448    # ... are resized so that it is 448, as the SPAQ protocol does


class InputError(UserError, ValueError):
    """An input that cannot be scored; the message names it."""


def to_image(x, name: str = "image") -> np.ndarray:
    """Any supported input -> [H,W,3] float32 in [0,1]."""
    if isinstance(x, str | Path):
        try:
            return read_rgb(str(x)).astype(np.float32) / 255.0
        except FileNotFoundError as err:
            raise InputError(f"{x}: no such file") from err
        except ValueError as err:
            raise InputError(str(err)) from err
    if isinstance(x, Image.Image):
        return to_rgb8(x).astype(np.float32) / 255.0
    if isinstance(x, np.ndarray | jax.Array):
        a = np.asarray(x)
        if a.ndim == 2:
            a = a[..., None]
        if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
            raise InputError(f"{name}: expected an HxW, HxWx1, HxWx3 or HxWx4 array, got {a.shape}")
        a = np.repeat(a, 3, -1) if a.shape[-1] == 1 else a[..., :3]
        if a.dtype == np.uint8:
            return a.astype(np.float32) / 255.0
        if a.dtype == np.uint16:
            return a.astype(np.float32) / 65535.0
        if np.issubdtype(a.dtype, np.floating):
            if a.size and (a.min() < 0 or a.max() > 1):
                raise InputError(f"{name}: float images must be in [0, 1], got [{a.min()}, {a.max()}]")
            return a.astype(np.float32)
        raise InputError(f"{name}: unsupported dtype {a.dtype}")
    raise InputError(f"{name}: unsupported input type {type(x).__name__}")


def target_size(height: int, width: int, size_step: int) -> tuple[int, int]:
    """The (height, width) an image is scored at (see the module docstring)."""
    if min(height, width) > LARGE_SHORT_SIDE:
        scale = SPAQ_SHORT_SIDE / min(height, width)
        height, width = round(height * scale), round(width * scale)
    if size_step:
        height = max(size_step, int(round(height / size_step)) * size_step)
        width = max(size_step, int(round(width / size_step)) * size_step)
    return height, width


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bicubic (antialiased) resize of [H,W,3] float32; the identity when the size is unchanged."""
    if image.shape[:2] == (height, width):
        return image
    channels = [np.asarray(Image.fromarray(image[..., c], mode="F").resize((width, height), Image.BICUBIC))
                for c in range(3)]
    return np.clip(np.stack(channels, -1), 0.0, 1.0)


@dataclasses.dataclass
class Explanation:
    """Why an image scored as it did.

    score: in the MOS scale of the training set. probs: [4,40] prompt probabilities per level.
    dimensions: {dimension: [(adjective, probability averaged over levels), ...] ranked}.
    weight_maps: [4,H5,W5] weight-branch token weights per level (the paper's Fig. 4).
    """

    score: float
    probs: np.ndarray
    dimensions: dict[str, list[tuple[str, float]]]
    weight_maps: np.ndarray
    image: np.ndarray

    def top(self) -> dict[str, str]:
        """The most probable adjective of each dimension."""
        return {d: ranked[0][0] for d, ranked in self.dimensions.items()}


class Scorer:
    """A trained BPCLIP ready to score images. Build it with from_workdir or from_pretrained."""

    def __init__(self, model, config: ml_collections.ConfigDict, *, dataset: str, size_step: int = 64):
        self.graphdef, self.state = nnx.split(model)
        self.full_reference = bool(config.model.full_reference)
        self.config = config
        self.dataset = dataset
        self.size_step = size_step
        graphdef = self.graphdef

        @jax.jit
        def forward(state, dist, ref):
            score, aux = nnx.merge(graphdef, state)(dist, ref)
            return score, aux.get("probs"), aux["token_weights"]

        self._forward = forward

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_workdir(cls, workdir: str | Path, **kwargs) -> Scorer:
        """The selected checkpoint of a training run (its best by validation, else its last), the
        model built from the run's own config.json; nothing is downloaded."""
        from bpclip_jax import train

        graphdef, params, frozen, _, _, config = train.load_trained(workdir)
        return cls(nnx.merge(graphdef, params, frozen), config, dataset=config.data.dataset, **kwargs)

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs) -> Scorer:
        """An exported model directory (see `export`), verified: every problem is named."""
        from safetensors.numpy import load_file

        from bpclip_jax.build import create_model
        from bpclip_jax.weights import assign_strict

        path = Path(path)
        for name in ("config.json", "meta.json", "model.safetensors"):
            if not (path / name).is_file():
                raise FileNotFoundError(f"{path} is not an exported BPCLIP model: {name} is missing")
        meta = json.loads((path / "meta.json").read_text())
        if meta.get("format") != EXPORT_FORMAT:
            raise ValueError(f"{path}/meta.json: format {meta.get('format')}, expected {EXPORT_FORMAT}")
        config = run_config.read(path / "config.json")
        model = create_model(config.model, dtype=config.dtype, seed=config.seed, restoring=True)
        assign_strict(model, load_file(path / "model.safetensors"),
                      key_of=lambda p: "/".join(str(k) for k in p), what=f"{path}/model.safetensors")
        return cls(model, config, dataset=meta["dataset"], **kwargs)

    def export(self, path: str | Path) -> Path:
        """A self-contained model directory: config.json, meta.json (dataset, MOS range),
        model.safetensors (every variable, the 40 text features and BatchNorm statistics included)."""
        from safetensors.numpy import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        flat = {"/".join(str(k) for k in p): np.asarray(v.get_value())
                for p, v in nnx.to_flat_state(self.state)}
        save_file(flat, str(path / "model.safetensors"))
        (path / "config.json").write_text(self.config.to_json_best_effort(indent=1))
        lo, hi, higher_better = SCALES[self.dataset]
        (path / "meta.json").write_text(json.dumps({
            "format": EXPORT_FORMAT, "dataset": self.dataset, "mos_range": [lo, hi],
            "higher_is_better": higher_better, "full_reference": self.full_reference,
            "prompts": [p.text for p in PROMPTS]}, indent=1))
        return path

    # ------------------------------------------------------------------ scoring

    def _prepare(self, dist, ref, name: str):
        d = to_image(dist, name)
        if self.full_reference and ref is None:
            raise InputError(f"{name}: this is a full-reference model; give its reference image (ref=...)")
        if not self.full_reference and ref is not None:
            raise InputError(f"{name}: this is a no-reference model; it takes no reference image")
        r = None if ref is None else to_image(ref, f"reference of {name}")
        if r is not None and r.shape != d.shape:
            raise InputError(f"{name} is {d.shape[1]}x{d.shape[0]} but its reference is "
                             f"{r.shape[1]}x{r.shape[0]}")
        h, w = target_size(*d.shape[:2], self.size_step)
        return resize(d, h, w), None if r is None else resize(r, h, w)

    def _run(self, pairs):
        dist = jnp.asarray(np.stack([d for d, _ in pairs]))
        ref = None if pairs[0][1] is None else jnp.asarray(np.stack([r for _, r in pairs]))
        return [np.asarray(x) if x is not None else None for x in self._forward(self.state, dist, ref)]

    def score_many(self, dists: Sequence, refs: Sequence | None = None, *, normalized: bool = False,
                   batch_size: int = 8) -> np.ndarray:
        """Scores of a list of images (same-size images share batches)."""
        refs = [None] * len(dists) if refs is None else list(refs)
        if len(refs) != len(dists):
            raise InputError(f"{len(dists)} images but {len(refs)} references")
        pairs = {i: self._prepare(d, r, _name(d, i)) for i, (d, r) in enumerate(zip(dists, refs))}
        out = np.empty(len(pairs), np.float32)
        for chunk, (scores, _, _) in self._batches(pairs, batch_size):
            out[chunk] = scores
        return out if normalized else to_mos(out, self.dataset)

    def _batches(self, pairs: dict[int, tuple], batch_size: int):
        """Yields (indices, (scores, probs, token_weights)) over batches of at most batch_size
        prepared pairs of one size: each size compiles once, whatever the order of the inputs."""
        groups: dict[tuple, list[int]] = {}
        for i, (d, _) in pairs.items():
            groups.setdefault(d.shape, []).append(i)
        for idx in groups.values():
            for start in range(0, len(idx), batch_size):
                chunk = idx[start:start + batch_size]
                yield chunk, self._run([pairs[i] for i in chunk])

    def __call__(self, dist, ref=None, *, normalized: bool = False):
        """The score of one image (a float) or of a list (an array), in the training set's MOS
        scale, or in [0,1] higher-better with normalized=True."""
        if isinstance(dist, list | tuple):
            return self.score_many(dist, ref, normalized=normalized)
        return float(self.score_many([dist], None if ref is None else [ref], normalized=normalized)[0])

    def compiled_shapes(self) -> int:
        """How many input shapes the forward has compiled so far."""
        return self._forward._cache_size()

    def explain(self, dist, ref=None) -> Explanation:
        """Per quality dimension, the adjectives ranked by probability (averaged over the four
        levels), and the weight branch's token maps."""
        if not self.config.model.use_text:
            raise ValueError("this model was trained with use_text=False: it has no prompt probabilities")
        d, r = self._prepare(dist, ref, _name(dist, 0))
        score, probs, weights = self._run([(d, r)])
        probs = probs[0]
        mean = probs.mean(axis=0)
        dims = {dim: sorted(((PROMPTS[i].adjective, float(mean[i])) for i in idx), key=lambda t: -t[1])
                for dim, idx in dimension_indices().items()}
        grid = feature_grid(*d.shape[:2])
        return Explanation(score=float(to_mos(score[0], self.dataset)), probs=probs, dimensions=dims,
                           weight_maps=weights[0].reshape(len(weights[0]), *grid), image=d)

    def save_explanation(self, path: str | Path, dist, ref=None) -> Path:
        """A PNG of the image, its per-level weight maps (Fig. 4) and the top adjectives."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        e = self.explain(dist, ref)
        fig, axes = plt.subplots(1, 1 + len(e.weight_maps), figsize=(3.2 * (1 + len(e.weight_maps)), 3.4))
        axes[0].imshow(e.image)
        axes[0].set_title(f"score {e.score:.3f}")
        for level, (ax, m) in enumerate(zip(axes[1:], e.weight_maps), start=1):
            ax.imshow(e.image)
            ax.imshow(m, cmap="jet", alpha=0.5, extent=(0, e.image.shape[1], e.image.shape[0], 0))
            ax.set_title(f"level {level} weights")
        for ax in axes:
            ax.axis("off")
        fig.suptitle(", ".join(f"{d}: {a}" for d, a in e.top().items()), fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return Path(path)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def list_images(spec: str) -> list[Path]:
    """A directory (its image files), a glob or one file -> sorted paths; an error if none."""
    import glob

    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    elif path.is_file():
        files = [path]
    else:
        files = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file())
    if not files:
        raise InputError(f"{spec}: no image files found (looked for {', '.join(IMAGE_SUFFIXES)})")
    return files


def pair_references(dists: list[Path], spec: str) -> list[Path | None]:
    """The reference of each image: one file for all, a directory holding files of the same names,
    or a CSV with columns dist,ref (paths or names). A missing reference becomes None (its row
    then fails with a message)."""
    import csv

    path = Path(spec).expanduser()
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as f:
            table = {Path(r["dist"]).name: Path(r["ref"]) for r in csv.DictReader(f)}
        return [table.get(d.name) for d in dists]
    if path.is_dir():
        return [path / d.name if (path / d.name).is_file() else None for d in dists]
    if path.is_file():
        return [path] * len(dists)
    raise InputError(f"{spec}: not a reference file, directory or CSV")


def predict_files(scorer: Scorer, dists: list[Path], refs: list[Path | None] | None = None,
                  batch_size: int = 8) -> list[dict]:
    """One row per image: file, ref, score (MOS scale), normalized score, the top adjective of each
    dimension, error. A bad image fails its own row and the others are still scored."""
    from tqdm import tqdm

    refs = [None] * len(dists) if refs is None else refs
    rows = [{"file": str(d), "ref": "" if r is None else str(r), "score": None, "error": ""}
            for d, r in zip(dists, refs)]
    ready: dict[int, tuple] = {}
    for i, (d, r) in enumerate(zip(dists, refs)):
        try:
            if scorer.full_reference and r is None:
                raise InputError(f"{d}: no reference found for this full-reference model")
            ready[i] = scorer._prepare(d, r, str(d))
        except (InputError, ValueError, OSError) as err:
            rows[i]["error"] = str(err)
    index = dimension_indices()
    with tqdm(total=len(ready), desc="predict", unit="img") as bar:
        for chunk, (scores, probs, _) in scorer._batches(ready, batch_size):
            for k, i in enumerate(chunk):
                rows[i]["score_normalized"] = float(scores[k])
                rows[i]["score"] = float(to_mos(scores[k], scorer.dataset))
                if probs is not None:
                    mean = probs[k].mean(axis=0)
                    for dim, idx in index.items():
                        rows[i][dim] = PROMPTS[max(idx, key=lambda j: mean[j])].adjective
            bar.update(len(chunk))
    return rows


def write_rows(path: Path, rows: list[dict]) -> None:
    import csv

    columns = ["file", "ref", "score", "score_normalized", *DIMENSIONS, "error"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k, "")) for k in columns})


def format_table(rows: list[dict], limit: int = 50) -> str:
    lines = [f"{'file':40s} {'score':>8s}  top adjectives"]
    for row in rows[:limit]:
        name = Path(row["file"]).name[-40:]
        if row["error"]:
            lines.append(f"{name:40s} {'FAILED':>8s}  {row['error']}")
        else:
            adjectives = ", ".join(row[d] for d in DIMENSIONS if d in row)
            lines.append(f"{name:40s} {row['score']:8.4f}  {adjectives}")
    if len(rows) > limit:
        lines.append(f"... {len(rows) - limit} more rows in the CSV")
    return "\n".join(lines)


def predict_command(cfg, workdir) -> None:
    """`main.py --mode predict`: scores cfg.inputs with the workdir's model, writes the CSV."""
    if not cfg.inputs:
        raise UserError("--mode predict needs --config.predict.inputs=DIR_OR_GLOB")
    dists = list_images(cfg.inputs)
    refs = pair_references(dists, cfg.refs) if cfg.refs else None
    scorer = Scorer.from_workdir(workdir, size_step=cfg.size_step)
    rows = predict_files(scorer, dists, refs, cfg.batch_size)
    output = Path(cfg.output or Path(workdir) / "predictions.csv")
    write_rows(output, rows)
    print(format_table(rows))
    failed = sum(bool(r["error"]) for r in rows)
    print(f"{len(rows) - failed} scored, {failed} failed; {scorer.compiled_shapes()} input shapes "
          f"compiled; wrote {output}")


def export_command(cfg, workdir) -> None:
    """`main.py --mode export`: writes the workdir's model to cfg.path."""
    if not cfg.path:
        raise UserError("--mode export needs --config.export.path=DIR")
    print(f"exported to {Scorer.from_workdir(workdir).export(cfg.path)}")


def _name(x, index: int) -> str:
    return str(x) if isinstance(x, str | Path) else f"image {index}"


__all__ = ["DIMENSIONS", "Explanation", "InputError", "Scorer"]
