"""The parts a config trains, selects and tests on, from `config.data`."""

from __future__ import annotations

import logging

import ml_collections

import data_pipelines
from bpclip_jax.errors import UserError
from data_pipelines import download, pyiqa_layout, synthetic

log = logging.getLogger(__name__)


def ensure_synthetic(data: ml_collections.ConfigDict) -> None:
    """Builds the embedded synthetic set into data.root when the config asks and it is absent."""
    if not data.synthetic:
        return
    if not synthetic.is_current(data.root):  # absent, or built with another label definition
        log.info("building the synthetic %s set in %s (synthetic labels, not human opinion)",
                 data.synthetic.upper(), data.root)
        synthetic.build(data.root, data.synthetic, seed=0, size=tuple(data.synthetic_size))


def _once(fn, *args) -> None:
    """fn(*args) in process 0 only (it writes files every process then reads), the others wait."""
    import jax

    if jax.process_index() == 0:
        fn(*args)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("data files ready")


def load_parts(data: ml_collections.ConfigDict) -> dict[str, list[data_pipelines.Record]]:
    """{part: records} of the main set (split by data.ratios and data.split_seed, by a pyiqa split
    file, or KonIQ's official split), a 'val' part held out of the training part when the split has
    none and data.val_holdout asks, plus every whole cross set as part '<name>/all'."""
    _once(ensure_synthetic, data)
    if data.download:
        _once(lambda: [download.ensure(name, root)
                       for name, root in ((data.dataset, data.root), *data.cross.items())])
    if data.split_file:
        parts = pyiqa_layout.split_parts(data.dataset, data.root, data.split_file, data.split_index)
    elif data.official_split:
        if data.dataset != "koniq10k":
            raise UserError("data.official_split exists for koniq10k only")
        parts = data_pipelines.official_split(data.root)
    else:
        records = data_pipelines.load(data.dataset, data.root)
        parts = data_pipelines.split(records, tuple(data.ratios), data.split_seed,
                                     by_content=data.by_content)
    if data.val_holdout and data.select_part == "val" and "val" not in parts:
        parts[data.train_part], parts["val"] = hold_out(parts[data.train_part], data)
    for name, root in data.cross.items():
        parts[f"{name}/all"] = data_pipelines.load(name, root)
    for needed in (data.train_part, data.select_part, *data.test_parts):
        if needed and needed not in parts:
            raise UserError(f"the config names part {needed!r} (data.train_part, select_part or "
                            f"test_parts), the data has {sorted(parts)}")
    return parts


HOLDOUT_SEED = 1_000_003  # the held-out draw's seed is this plus the split's: its own stream


def hold_out(records: list, data: ml_collections.ConfigDict) -> tuple[list, list]:
    """(the rest, the validation part): a data.val_holdout share of a training part, by content
    where the set has contents (data.by_content), seeded with the split (data.split_seed). The test
    part is untouched, so a run selecting on this part and one selecting on test (the pyiqa/TOPIQ
    practice) report on the same images."""
    if not 0 < data.val_holdout < 1:
        raise UserError(f"data.val_holdout must be in (0, 1), got {data.val_holdout}")
    parts = data_pipelines.split(records, (1 - data.val_holdout, data.val_holdout),
                                 HOLDOUT_SEED + data.split_seed, by_content=data.by_content)
    if not parts["test"]:
        raise UserError(f"data.val_holdout={data.val_holdout} of {len(records)} training records "
                        f"holds out nothing to validate on")
    return parts["train"], parts["test"]


def part_label(data: ml_collections.ConfigDict, part: str) -> str:
    """'<dataset>/<part>' as results.json names it ('live/all' for a cross set)."""
    return part if "/" in part else f"{data.dataset}/{part}"
