"""Why an image scored as it did: the prompt probabilities in words, the weight branch's maps, and
the figure that shows both (the paper's Fig. 4, with the score on its scale)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from bpclip_jax.text import PROMPTS, dimension_indices
from data_pipelines.records import SCALES

DATASET_NAMES = {"kadid10k": "KADID-10k", "tid2013": "TID2013", "live": "LIVE", "csiq": "CSIQ",
                 "koniq10k": "KonIQ-10k", "clive": "CLIVE", "spaq": "SPAQ",
                 "pyiqa": "pyiqa"}


def scale_phrase(dataset: str) -> str:
    """'KADID-10k's 1-5 scale, higher is better': what a score in a set's MOS scale means."""
    lo, hi, higher_better = SCALES[dataset]
    kind = "" if higher_better else " DMOS"
    return (f"{DATASET_NAMES.get(dataset, dataset)}'s {lo:g}-{hi:g}{kind} scale, "
            f"{'higher' if higher_better else 'lower'} is better")


@dataclasses.dataclass
class Explanation:
    """Why an image scored as it did.

    score: in the MOS scale of the training set (`dataset`); score_normalized: [0,1], higher better.
    probs: [4,40] prompt probabilities per level, PROMPTS' order: the model's
      `prompt_probabilities`, softmax(tau s) of the cosines s (`probability_note` says which tau
      and whether the score reads them).
    dimensions: {dimension: [(adjective, probability averaged over the levels), ...] ranked}.
    weight_maps: [4,H5,W5] the weight branch's token weights w_i in (0,1) (the paper's Fig. 4),
      H5 x W5 = the token grid (about H/32 x W/32).
    image, ref: [H,W,3] float32 in [0,1], as scored (ref None for a no-reference model).
    """

    score: float
    score_normalized: float
    dataset: str
    probs: np.ndarray
    dimensions: dict[str, list[tuple[str, float]]]
    weight_maps: np.ndarray
    image: np.ndarray
    ref: np.ndarray | None = None
    text_head: str = "softmax"
    tau: float = 100.0
    stand_in: bool = False      # text features without language (an offline model): words mean nothing

    def top(self) -> dict[str, str]:
        """The most probable adjective of each dimension."""
        return {d: ranked[0][0] for d, ranked in self.dimensions.items()}

    def headline(self) -> str:
        """'3.42 on KADID-10k's 1-5 scale, higher is better'."""
        return f"{self.score:.3g} on {scale_phrase(self.dataset)}"

    def probability_note(self) -> str:
        """What the probabilities are (probability_note())."""
        return probability_note(self.text_head, self.tau, self.stand_in)


STAND_IN_NOTE = ("STAND-IN text features (no CLIP weights): these adjectives carry no language "
                 "and explain nothing")


def probability_note(text_head: str, tau: float, stand_in: bool = False) -> str:
    """One line on what an explanation's prompt probabilities are under a text head."""
    if text_head == "cosine":
        note = (f"softmax of the image-to-prompt cosines at CLIP's logit scale {tau:g}, for display; "
                f"the score regresses on the cosines (Eq. 9)")
    else:
        note = f"the model's prompt softmax at tau {tau:.3g}, which the score regresses on"
    return f"{note}. {STAND_IN_NOTE}" if stand_in else note


def rank_dimensions(probs: np.ndarray) -> dict[str, list[tuple[str, float]]]:
    """[4,40] (or [40]) probabilities -> {dimension: [(adjective, mean probability), ...] ranked}."""
    mean = probs.mean(axis=0) if probs.ndim == 2 else probs
    return {dim: sorted(((PROMPTS[i].adjective, float(mean[i])) for i in idx), key=lambda t: -t[1])
            for dim, idx in dimension_indices().items()}


def top_adjectives(probs: np.ndarray) -> dict[str, str]:
    """[4,40] probabilities -> the most probable adjective of each dimension."""
    return {dim: ranked[0][0] for dim, ranked in rank_dimensions(probs).items()}


def save_figure(e: Explanation, path: str | Path, top_k: int = 4) -> Path:
    """A PNG: the image (and its reference), the four weight maps over the image on one colour
    scale with its bar, the score on its scale, and per dimension the `top_k` adjectives with
    their probabilities."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import colors

    levels = len(e.weight_maps)
    fig = plt.figure(figsize=(3.0 * levels + 0.6, 10.0), dpi=110)
    grid = fig.add_gridspec(3, levels + 1, width_ratios=[1] * levels + [0.06],
                            height_ratios=[1.0, 1.0, 1.25], hspace=0.3, wspace=0.12)
    shown = [("distorted image" if e.ref is not None else "image", e.image)]
    if e.ref is not None:
        shown.append(("reference", e.ref))
    for k, (title, picture) in enumerate(shown):
        ax = fig.add_subplot(grid[0, k])
        ax.imshow(picture)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    _headline_panel(fig.add_subplot(grid[0, len(shown):levels]), e)

    norm = colors.Normalize(vmin=float(e.weight_maps.min()), vmax=float(e.weight_maps.max()))
    height, width = e.image.shape[:2]
    for level, weights in enumerate(e.weight_maps, start=1):
        ax = fig.add_subplot(grid[1, level - 1])
        ax.imshow(e.image.mean(axis=-1), cmap="gray", vmin=0, vmax=1)
        mapped = ax.imshow(weights, cmap="magma", norm=norm, alpha=0.5, interpolation="nearest",
                           extent=(0, width, height, 0))
        ax.set_title(f"level {level}: token weights", fontsize=10)
        ax.axis("off")
    bar = fig.colorbar(mapped, cax=fig.add_subplot(grid[1, levels]))
    bar.set_label("weight w_i (one scale for all levels)", fontsize=8)

    _adjective_panels(fig, grid[2, :levels], e, top_k)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def _headline_panel(ax, e: Explanation) -> None:
    ax.axis("off")
    ax.text(0.02, 0.78, f"{e.score:.3g}", fontsize=30, weight="bold", transform=ax.transAxes)
    ax.text(0.02, 0.58, f"on {scale_phrase(e.dataset)}", fontsize=11, transform=ax.transAxes)
    ax.text(0.02, 0.44, f"normalized score {e.score_normalized:.3f} (0-1, higher is better)",
            fontsize=9, color="0.35", transform=ax.transAxes)
    if e.stand_in:
        ax.text(0.02, 0.36, "stand-in text features: the adjectives carry no language", fontsize=9,
                color="tab:red", weight="bold", transform=ax.transAxes)
    words = ", ".join(f"{a} ({p:.1%})" for a, p in (r[0] for r in e.dimensions.values()))
    ax.text(0.02, 0.06, "most probable per dimension:\n" + _wrap(words, 60), fontsize=9,
            transform=ax.transAxes, va="bottom")


def _adjective_panels(fig, cell, e: Explanation, top_k: int) -> None:
    inner = cell.subgridspec(2, 3, wspace=0.75, hspace=0.55)
    high = max(p for ranked in e.dimensions.values() for _, p in ranked)
    for k, (dim, ranked) in enumerate(e.dimensions.items()):
        ax = fig.add_subplot(inner[k // 3, k % 3])
        names, probs = zip(*ranked[:top_k])
        rows = range(len(names))[::-1]
        ax.barh(rows, probs, color="tab:blue")
        ax.set_yticks(rows, names, fontsize=8)
        ax.set_xlim(0, high * 1.4)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_title(dim, fontsize=9)
        for y, p in zip(rows, probs):
            ax.text(p, y, f" {p:.1%}", va="center", fontsize=7)
    fig.text(0.5, 0.06, "probability among the 40 prompts \"a ... photo.\" (mean of the 4 levels):\n"
             + _wrap(e.probability_note(), 110), ha="center", va="top", fontsize=9,
             color="tab:red" if e.stand_in else "black")


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))
