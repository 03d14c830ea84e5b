"""Scoring images from a notebook: load a trained or exported model, score, explain, use as a loss.

    from bpclip_jax.api import Scorer
    scorer = Scorer.from_workdir("runs/kadid")        # or .from_pretrained("models/kadid" or "user/repo")
    scorer("dist.png", ref="ref.png")                 # in the training set's MOS scale
    scorer.explain("dist.png", ref="ref.png")         # adjectives per dimension, token maps
    scorer.save_explanation("why.png", "dist.png", ref="ref.png")
    loss_fn = scorer.as_loss()                        # images [B,H,W,3] in [0,1] -> scalar to minimize

Inputs and sizes: bpclip_jax.inputs (by default the protocol's: whole images at their own size;
SPAQ models downscale the shorter side to 448). Explanations: bpclip_jax.explain. The command
line's `--mode predict` and `--mode export` (predict_command, export_command below) are this
facade over bpclip_jax.predict and bpclip_jax.hub. Imports point down: the Scorer builds itself
from what bpclip_jax.trained and bpclip_jax.hub hand back, and passes itself to bpclip_jax.predict
and bpclip_jax.loss; none of them imports this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from bpclip_jax import explain as explaining
from bpclip_jax import hub, predict, run_config, trained
from bpclip_jax.errors import UserError
from bpclip_jax.explain import Explanation
from bpclip_jax.inputs import AUTO, InputError, SizePolicy, load_pixels, resize, to_float
from bpclip_jax.loss import QualityLoss
from bpclip_jax.models.bpclip import feature_grid
from bpclip_jax.predict import list_images, pair_references
from bpclip_jax.text import DIMENSIONS
from data_pipelines.records import to_mos

CHUNK = 64  # images decoded at a time by score_many: memory stays bounded for long lists


def _forward_fn(graphdef):
    """A jitted (state, dist, ref) -> (scores [B] in [0,1], probs [B,4,40] or None, token weights
    [B,4,L] or None: a CFANet has neither) for one model graph; one compile per input shape (each
    scorer has its own)."""

    @jax.jit
    def forward(state, dist, ref):
        score, aux = nnx.merge(graphdef, state)(dist, ref)
        return score, aux.get("probs"), aux.get("token_weights")

    return forward


class Scorer:
    """A trained BPCLIP ready to score images. Build it with from_workdir or from_pretrained.

    size_step, short_side: see bpclip_jax.inputs (defaults: the protocol's sizes).
    provenance: where the model comes from (workdir, step, selection, source), for model cards.
    """

    def __init__(self, model, config: ml_collections.ConfigDict, *, dataset: str, size_step: int = 0,
                 short_side: int | str = AUTO, provenance: dict | None = None):
        self.graphdef, self.state = nnx.split(model)
        self.full_reference = bool(config.model.full_reference)
        self.config = config
        self.dataset = dataset
        self.sizes = SizePolicy.for_dataset(dataset, short_side, size_step)
        self.provenance = dict(provenance or {})
        self._forward = _forward_fn(self.graphdef)

    @property
    def size_step(self) -> int:
        return self.sizes.size_step

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_workdir(cls, workdir: str | Path, **kwargs) -> Scorer:
        """The selected checkpoint of a training run (its best by validation, else its last), the
        model built from the run's own config.json; nothing is downloaded. A workdir without
        config.json or checkpoints raises a WorkdirError that says so."""
        loaded = trained.load(workdir)
        provenance = {"workdir": str(workdir), "step": loaded.step, "best": loaded.best}
        return cls(loaded.model, loaded.config, dataset=loaded.config.data.dataset, provenance=provenance,
                   **kwargs)

    @classmethod
    def from_pretrained(cls, source: str | Path, *, revision: str | None = None, **kwargs) -> Scorer:
        """An exported model: a local directory written by `export`, or a hub repo id ("user/repo")
        downloaded with huggingface_hub and cached (`revision`: a branch, tag or commit to pin).
        Every tensor is verified by name and shape; every problem is named."""
        directory, origin = hub.resolve(source, revision)
        model, config, meta = hub.load_exported(directory)
        provenance = {**meta.get("provenance", {}), "source": origin}
        return cls(model, config, dataset=meta["dataset"], provenance=provenance, **kwargs)

    def export(self, path: str | Path) -> Path:
        """A self-contained model directory, ready to upload to a hub as it is: config.json,
        meta.json, model.safetensors and a model card (README.md). See bpclip_jax.hub."""
        return hub.export(path, self.state, self.config, dataset=self.dataset, provenance=self.provenance)

    # ------------------------------------------------------------------ scoring

    def check_pair(self, has_ref: bool, name: str) -> None:
        """Refuses a reference for a no-reference model, and its absence for a full-reference one."""
        if self.full_reference and not has_ref:
            raise InputError(f"{name}: this is a full-reference model; give its reference image (ref=...)")
        if not self.full_reference and has_ref:
            raise InputError(f"{name}: this is a no-reference model; it takes no reference image")

    def prepare(self, dist, ref=None, name: str = "image") -> tuple[np.ndarray, np.ndarray | None]:
        """Loads and sizes one input pair -> ([h,w,3] float32 in [0,1], same or None)."""
        self.check_pair(ref is not None, name)
        d = load_pixels(dist, name)
        r = None if ref is None else load_pixels(ref, f"reference of {name}")
        if r is not None and r.shape != d.shape:
            raise InputError(f"{name} is {d.shape[1]}x{d.shape[0]} but its reference is "
                             f"{r.shape[1]}x{r.shape[0]}")
        if r is not None and r.dtype != d.dtype:  # one resize path for both, or they would differ
            d, r = to_float(d), to_float(r)
        h, w = self.sizes.target(*d.shape[:2])
        return to_float(resize(d, h, w)), None if r is None else to_float(resize(r, h, w))

    def run(self, pairs: Sequence[tuple[np.ndarray, np.ndarray | None]]):
        """The model on prepared pairs of one size -> (scores [B] in [0,1] higher-better, probs
        [B,4,40] or None, token weights [B,4,L]) as numpy arrays."""
        dist = jnp.asarray(np.stack([d for d, _ in pairs]))
        ref = None if pairs[0][1] is None else jnp.asarray(np.stack([r for _, r in pairs]))
        return tuple(None if x is None else np.asarray(x) for x in self._forward(self.state, dist, ref))

    def score_many(self, dists: Sequence, refs: Sequence | None = None, *, normalized: bool = False,
                   batch_size: int = 8) -> np.ndarray:
        """Scores [N] of a list of images (same-size images share batches; a batch does not change
        a score)."""
        refs = [None] * len(dists) if refs is None else list(refs)
        if len(refs) != len(dists):
            raise InputError(f"{len(dists)} images but {len(refs)} references")
        out = np.empty(len(dists), np.float32)
        for start in range(0, len(dists), CHUNK):
            pairs = {i: self.prepare(dists[i], refs[i], _name(dists[i], i))
                     for i in range(start, min(start + CHUNK, len(dists)))}
            for chunk, (scores, _, _) in self.batches(pairs, batch_size):
                out[chunk] = scores
        return out if normalized else to_mos(out, self.dataset)

    def batches(self, pairs: dict[int, tuple], batch_size: int):
        """Yields (indices, run(...)) over batches of at most batch_size prepared pairs of one size:
        each size compiles once, whatever the order of the inputs."""
        groups: dict[tuple, list[int]] = {}
        for i, (d, _) in pairs.items():
            groups.setdefault(d.shape, []).append(i)
        for idx in groups.values():
            for start in range(0, len(idx), batch_size):
                chunk = idx[start:start + batch_size]
                yield chunk, self.run([pairs[i] for i in chunk])

    def __call__(self, dist, ref=None, *, normalized: bool = False):
        """The score of one image (a float) or of a list or batch (an array), in the training set's MOS
        scale, or in [0,1] higher-better with normalized=True."""
        if isinstance(dist, list | tuple) or getattr(dist, "ndim", 0) == 4:  # a list, or a batch [B,H,W,C]
            return self.score_many(list(dist), None if ref is None else list(ref), normalized=normalized)
        return float(self.score_many([dist], None if ref is None else [ref], normalized=normalized)[0])

    def compiled_shapes(self) -> int:
        """How many input shapes the forward has compiled so far."""
        return self._forward._cache_size()

    # ------------------------------------------------------------------ explanation, loss

    def explain(self, dist, ref=None) -> Explanation:
        """Per quality dimension, the adjectives ranked by probability (averaged over the four
        levels; `Explanation.probability_note()` says what the probabilities are, and whether the
        text features are stand-ins without language), and the weight branch's token maps."""
        if self.config.model.arch != "bpclip":
            raise InputError(f"this is a {self.config.model.arch} model (TOPIQ): it has no prompt "
                             f"probabilities or weight maps to explain a score with")
        if not self.config.model.use_text:
            raise InputError("this model was trained with use_text=False: it has no prompt probabilities")
        d, r = self.prepare(dist, ref, _name(dist, 0))
        score, probs, weights = self.run([(d, r)])
        model = self.config.model
        return Explanation(
            score=float(to_mos(score[0], self.dataset)), score_normalized=float(score[0]),
            dataset=self.dataset, probs=probs[0], dimensions=explaining.rank_dimensions(probs[0]),
            weight_maps=weights[0].reshape(len(weights[0]), *feature_grid(*d.shape[:2])), image=d, ref=r,
            text_head=model.text_head, tau=float(nnx.merge(self.graphdef, self.state).tau()),
            stand_in=not model.pretrained)

    def save_explanation(self, path: str | Path, dist, ref=None) -> Path:
        """A PNG: the image (and reference), the score on its scale, the four weight maps on one
        colour scale, the adjectives with their probabilities (bpclip_jax.explain.save_figure)."""
        return explaining.save_figure(self.explain(dist, ref), path)

    def as_loss(self, *, remat: bool = False, reduction: str = "mean"):
        """BPCLIP as a differentiable loss: a `bpclip_jax.loss.QualityLoss`, a pure function of
        (images [B,H,W,3] float in [0,1], refs or None) -> 1 - normalized score (lower is better)."""
        return QualityLoss.from_scorer(self, remat=remat, reduction=reduction)


def _name(x, index: int) -> str:
    return str(x) if isinstance(x, str | Path) else f"image {index}"


# ---------------------------------------------------------------------- the command line's modes


def predict_command(cfg, workdir) -> None:
    """`main.py --mode predict`: scores cfg.inputs into a CSV (bpclip_jax.predict) with the model
    of `workdir`: a training run (its selected checkpoint) or an exported model's folder (written
    by --mode export or bpclip_jax.convert: config.json, meta.json and model.safetensors, no
    checkpoints). Every mistake is refused before the model loads, and the model loads before the
    CSV is opened: a checkpoint that cannot be read must not cost an existing CSV its rows."""
    request = predict.request(cfg, workdir)
    sizes = dict(size_step=request.sizes.size_step, short_side=request.sizes.short_side)
    folder = Path(workdir)
    # an export folder (model.safetensors, no checkpoints/); from_pretrained names a missing file
    exported = (folder / "model.safetensors").is_file() and not (folder / "checkpoints").exists()
    load = Scorer.from_pretrained if exported else Scorer.from_workdir
    scorer = load(folder, **sizes) if request.needs_model else None
    predict.execute(request, scorer)


def export_command(cfg, workdir) -> None:
    """`main.py --mode export`: writes the workdir's selected model to cfg.path (bpclip_jax.hub)."""
    if not cfg.path:
        raise UserError("--mode export needs --config.export.path=DIR")
    run_config.read(workdir)  # a workdir without config.json: one line, before anything is loaded
    print(f"exported to {Scorer.from_workdir(workdir).export(cfg.path)}")


# main.py and notebooks import these from here.
__all__ = ["DIMENSIONS", "Explanation", "InputError", "Scorer", "export_command", "list_images",
           "pair_references", "predict_command"]
