"""The parts a config trains, selects and tests on, from `config.data`."""

from __future__ import annotations

import logging
from pathlib import Path

import ml_collections

import data_pipelines
from data_pipelines import download, nr_sets, pyiqa_layout, synthetic

log = logging.getLogger(__name__)


def ensure_synthetic(data: ml_collections.ConfigDict) -> None:
    """Builds the embedded synthetic set into data.root when the config asks and it is absent."""
    if not data.synthetic:
        return
    marker = "dmos.csv" if data.synthetic == "fr" else nr_sets.KONIQ_SCORES
    if not (Path(data.root) / marker).is_file():
        log.info("building the synthetic %s set in %s (synthetic labels, not human opinion)",
                 data.synthetic.upper(), data.root)
        synthetic.build(data.root, data.synthetic, seed=0, size=tuple(data.synthetic_size))


def load_parts(data: ml_collections.ConfigDict) -> dict[str, list[data_pipelines.Record]]:
    """{part: records} of the main set (split by data.ratios and data.split_seed, by a pyiqa split
    file, or KonIQ's official split), plus every whole cross set as part '<name>/all'."""
    ensure_synthetic(data)
    if data.download:
        for name, root in ((data.dataset, data.root), *data.cross.items()):
            download.ensure(name, root)
    if data.split_file:
        parts = pyiqa_layout.split_parts(data.dataset, data.root, data.split_file, data.split_index)
    elif data.official_split:
        if data.dataset != "koniq10k":
            raise ValueError("data.official_split exists for koniq10k only")
        parts = data_pipelines.official_split(data.root)
    else:
        records = data_pipelines.load(data.dataset, data.root)
        parts = data_pipelines.split(records, tuple(data.ratios), data.split_seed,
                                     by_content=data.by_content)
    for name, root in data.cross.items():
        parts[f"{name}/all"] = data_pipelines.load(name, root)
    for needed in (data.train_part, data.select_part, *data.test_parts):
        if needed and needed not in parts:
            raise ValueError(f"config names part {needed!r}, the data has {sorted(parts)}")
    return parts


def part_label(data: ml_collections.ConfigDict, part: str) -> str:
    """'<dataset>/<part>' as results.json names it ('live/all' for a cross set)."""
    return part if "/" in part else f"{data.dataset}/{part}"
