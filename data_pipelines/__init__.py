"""Datasets read from their official files, splits, grain pipelines and the synthetic sets.

    records = data_pipelines.load("kadid10k", "/data/kadid10k")
    parts = data_pipelines.split(records, (6, 2, 2), seed=0)   # train / val / test by reference
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from data_pipelines import fr_sets, nr_sets
from data_pipelines.records import Record
from data_pipelines.splits import split

READERS: dict[str, Callable[[str | Path], list[Record]]] = {
    "kadid10k": fr_sets.load_kadid10k,
    "tid2013": fr_sets.load_tid2013,
    "live": fr_sets.load_live,
    "csiq": fr_sets.load_csiq,
    "koniq10k": nr_sets.load_koniq10k,
    "clive": nr_sets.load_clive,
    "spaq": nr_sets.load_spaq,
}
FULL_REFERENCE = ("kadid10k", "tid2013", "live", "csiq")


def load(name: str, root: str | Path) -> list[Record]:
    """All records of dataset `name` (one of READERS) from its official files under `root`."""
    if name not in READERS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(READERS)}")
    return READERS[name](root)


__all__ = ["FULL_REFERENCE", "READERS", "Record", "load", "split"]
