"""A training run's selected model, for the readers: `Scorer.from_workdir`, `--mode eval`, `predict`
and `export`.

    model = trained.load("runs/kadid").model      # BPCLIP, the run's selected checkpoint in it

The checkpoint's parameters and frozen parts are restored into the model alone: no optimizer and
no train state are built, and no optimizer state is read. The model is created abstract (shapes
only, `nnx.eval_shape`), so loading holds the model's variables once, as restored. The model comes
from the run's own config.json; nothing pretrained is downloaded (the frozen parts, text features
included, come from the checkpoint).

The trainer (bpclip_jax.train) and the readers share the checkpoint layout through `trainable`:
a checkpoint's `params` are the variables it selects, `frozen` the rest (bpclip_jax.checkpoint).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from bpclip_jax import checkpoint, run_config
from bpclip_jax.build import create_model
from bpclip_jax.errors import WorkdirError
from bpclip_jax.models.bpclip import BPCLIP


def trainable(freeze_backbone: bool = False):
    """The filter of what the optimizer trains and a checkpoint's `params` hold: every nnx.Param,
    or all but the backbone's."""
    if freeze_backbone:
        return nnx.All(nnx.Param, nnx.Not(nnx.PathContains("backbone")))
    return nnx.Param


@dataclasses.dataclass
class Trained:
    """model: the selected checkpoint's BPCLIP (replicated over every device); config: the run's;
    step: the checkpoint's; best: the run's selection record ({'step', 'srcc', 'plcc', 'part',
    'selection'}), or None for a run that never validated (its last step is the one loaded)."""

    model: BPCLIP
    config: ml_collections.ConfigDict
    step: int
    best: dict | None


def abstract_parts(config: ml_collections.ConfigDict):
    """(graphdef, params, frozen) of the config's model as shapes only (`nnx.eval_shape`: nothing
    is initialized or allocated), split as checkpoints are: what a restore fills in."""
    abstract = nnx.eval_shape(lambda: create_model(config.model, dtype=config.dtype, seed=config.seed,
                                                   restoring=True))
    return nnx.split(abstract, trainable(config.train.freeze_backbone), ...)


def placed(tree, sharding: NamedSharding):
    """ShapeDtypeStructs of an abstract tree's arrays, to be restored with `sharding`."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def load(workdir: str | Path, config: ml_collections.ConfigDict | None = None) -> Trained:
    """The run's selected checkpoint (its best by validation, else its last), in the model of the
    run's config.json (or `config`, already reconciled with it: bpclip_jax.run_config). A workdir
    without config.json or checkpoints raises a WorkdirError that says so."""
    workdir = Path(workdir)
    config = run_config.read(workdir) if config is None else config
    folders = [workdir / "checkpoints" / name for name in ("latest", "best")]
    if not any(folder.is_dir() for folder in folders):
        raise WorkdirError(f"{workdir} holds no checkpoint to evaluate; train first "
                           f"(`python main.py --config ... --workdir {workdir}`)")
    graphdef, params, frozen = abstract_parts(config)
    replicated = NamedSharding(jax.sharding.Mesh(np.asarray(jax.devices()), ("data",)), P())
    ckpt = checkpoint.Checkpoints(workdir, create=False)
    try:
        frozen = ckpt.restore_frozen(placed(frozen, replicated))
        step, params, _ = ckpt.restore_selected({"params": placed(params, replicated)})
        record = ckpt.record() or {}
    finally:
        ckpt.close()
    return Trained(nnx.merge(graphdef, params, frozen), config, int(step), record.get("best"))
