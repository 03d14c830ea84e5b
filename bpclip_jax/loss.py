"""BPCLIP as a differentiable quality loss for training other models (restoration, compression,
enhancement): `loss_fn = Scorer.from_pretrained(...).as_loss()`.

    loss = loss_fn(images, refs)      # images, refs: [B,H,W,3] float in [0,1]; refs None for NR

The loss is 1 - the model's normalized score (the training set's MOS range mapped to [0,1], higher
= better quality), averaged over the batch: lower is better, 0 is the best quality of the training
set's scale and 1 the worst (nominally: the regressor is not bounded, so a loss slightly outside
[0,1] is possible). The model is frozen: its variables are constants of the loss (stop_gradient),
dropout is off, and only the images (and refs) receive gradients.

A QualityLoss is a pytree whose leaves are the model's variables: pass it as an argument of your
jitted train step (`train_step(params, batch, loss_fn)`) so that its 35-45 M weights are arguments of
the compiled program. Closing over it works too, but then jax embeds every weight as a constant in
the program (a slower compile and a second copy in memory). It is pure, so jax.vmap, jax.grad and
sharded inputs (a batch split over a mesh's 'data' axis) work as for any jax function.
`remat=True` wraps each ResNet50 bottleneck and each GLP in jax.checkpoint: the backward pass
recomputes a block's activations instead of keeping those of every block, for less memory at about
one more forward of compute. On the CPU backend XLA merges the recomputation back into the
forward (the compiled program keeps every activation: no saving there); the option is meant for
accelerators, where activation memory is what limits the batch.
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx, struct

from bpclip_jax.inputs import InputError
from data_pipelines.records import SCALES

REDUCTIONS = ("mean", "sum", "none")


@struct.dataclass
class QualityLoss:
    """(images [B,H,W,3] float in [0,1], refs [B,H,W,3] or None) -> loss (a scalar, or [B] with
    reduction='none'); see the module docstring.

    lower_better: True (it is a loss). score_range: the loss's nominal range (0.0, 1.0).
    mos_range, mos_higher_better: the training set's scale, which `scores` returns.
    """

    state: nnx.State
    graphdef: Any = struct.field(pytree_node=False)
    full_reference: bool = struct.field(pytree_node=False)
    dataset: str = struct.field(pytree_node=False)
    remat: bool = struct.field(pytree_node=False, default=False)
    reduction: str = struct.field(pytree_node=False, default="mean")

    lower_better: ClassVar[bool] = True
    score_range: ClassVar[tuple[float, float]] = (0.0, 1.0)

    @classmethod
    def from_scorer(cls, scorer, *, remat: bool = False, reduction: str = "mean") -> QualityLoss:
        if reduction not in REDUCTIONS:
            raise InputError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
        return cls(state=scorer.state, graphdef=scorer.graphdef, full_reference=scorer.full_reference,
                   dataset=scorer.dataset, remat=remat, reduction=reduction)

    @property
    def mos_range(self) -> tuple[float, float]:
        return SCALES[self.dataset][:2]

    @property
    def mos_higher_better(self) -> bool:
        return SCALES[self.dataset][2]

    def normalized_scores(self, images: jax.Array, refs: jax.Array | None = None) -> jax.Array:
        """[B] scores in [0,1], higher = better, differentiable with respect to images and refs."""
        self._check(images, refs)
        state = jax.tree.map(jax.lax.stop_gradient, self.state)

        def forward(dist, ref):
            model = nnx.merge(self.graphdef, state)
            if self.remat:
                rematerialize(model)
            return model(dist, ref)[0]

        as_float = lambda x: None if x is None else jnp.asarray(x, jnp.float32)  # noqa: E731
        return forward(as_float(images), as_float(refs))

    def scores(self, images: jax.Array, refs: jax.Array | None = None) -> jax.Array:
        """[B] scores in the training set's MOS scale (mos_range; mos_higher_better says which way)."""
        s = self.normalized_scores(images, refs)
        lo, hi = self.mos_range
        return lo + (s if self.mos_higher_better else 1.0 - s) * (hi - lo)

    def __call__(self, images: jax.Array, refs: jax.Array | None = None) -> jax.Array:
        loss = 1.0 - self.normalized_scores(images, refs)
        if self.reduction == "mean":
            return loss.mean()
        return loss.sum() if self.reduction == "sum" else loss

    def _check(self, images, refs) -> None:
        if images.ndim != 4 or images.shape[-1] != 3:
            raise InputError(f"images must be [B,H,W,3] float in [0,1], got shape {images.shape}")
        if self.full_reference and refs is None:
            raise InputError("this is a full-reference model: give refs [B,H,W,3] (the clean images)")
        if not self.full_reference and refs is not None:
            raise InputError("this is a no-reference model: call it without refs")
        if refs is not None and refs.shape != images.shape:
            raise InputError(f"refs {refs.shape} and images {images.shape} differ in shape")


class _Rematerialized:
    """A module whose activations the backward pass recomputes (jax.checkpoint) instead of keeping:
    only its inputs are saved. Arguments that are not arrays (sizes) are passed through as they are."""

    def __init__(self, module: nnx.Module):
        self.graphdef, self.state = nnx.split(module)

    def __call__(self, *args):
        arrays = [i for i, a in enumerate(args) if isinstance(a, jax.Array)]

        def call(state, *values):
            full = list(args)
            for i, v in zip(arrays, values):
                full[i] = v
            return nnx.merge(self.graphdef, state)(*full)

        return jax.checkpoint(call)(self.state, *(args[i] for i in arrays))


def rematerialize(model: nnx.Module) -> None:
    """Wraps each ResNet50 bottleneck and each GLP of a merged BPCLIP (inside a traced function, on
    a model that is called, never split again) so that the backward pass keeps one block's
    activations at a time instead of all of them."""
    backbone = model.backbone
    for layer in (backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4):
        for i in range(len(layer)):
            layer[i] = _Rematerialized(layer[i])
    for i in range(len(model.glp)):
        model.glp[i] = _Rematerialized(model.glp[i])
