"""Datasets read from their official files (or pyiqa's layout), splits, grain pipelines, synthetic sets.

    records = data_pipelines.load("kadid10k", "/data/kadid10k")
    parts = data_pipelines.split(records, (6, 2, 2), seed=0)   # train / val / test by reference

A file that cannot be trusted (a score that is not a finite number in the set's range, a missing
column, an image listed twice, a missing image) raises DataError, whose first line names the file,
where in it, and what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from data_pipelines import fr_sets, nr_sets, pyiqa_layout
from data_pipelines.records import TITLES, DataError, MissingFileError, Problems, Record
from data_pipelines.splits import split

READERS: dict[str, Callable[..., list[Record]]] = {
    "kadid10k": fr_sets.load_kadid10k,
    "tid2013": fr_sets.load_tid2013,
    "live": fr_sets.load_live,
    "csiq": fr_sets.load_csiq,
    "koniq10k": nr_sets.load_koniq10k,
    "clive": nr_sets.load_clive,
    "spaq": nr_sets.load_spaq,
}
FULL_REFERENCE = ("kadid10k", "tid2013", "live", "csiq")
SCORE_FILES = {**fr_sets.SCORE_FILES, **nr_sets.SCORE_FILES}


def layout(name: str, root: str | Path) -> str:
    """'official' when the set's own score file is under root, else 'pyiqa' when pyiqa's meta-info
    file is found (pyiqa_layout.meta_info_file), else '' (the set is not there)."""
    if name not in READERS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(READERS)}")
    root = Path(root).expanduser()
    if (root / SCORE_FILES[name]).is_file():
        return "official"
    return "pyiqa" if pyiqa_layout.meta_info_file(name, root) is not None else ""


def read(name: str, root: str | Path, problems: Problems | None = None) -> list[Record]:
    """load(), or with `problems` given: the records of the good rows, every problem gathered there."""
    found = layout(name, root)
    root = Path(root).expanduser()
    if found == "pyiqa":
        return pyiqa_layout.load(name, root, problems)
    if not found:
        raise MissingFileError(
            f"{TITLES[name]} score file not found: expected {root / SCORE_FILES[name]}, or pyiqa's "
            f"{pyiqa_layout.META_INFO[name]} in {root / 'meta_info'} or {root.parent / 'meta_info'}; "
            f"`python -m data_pipelines.download {name} --root {root}` fetches the set")
    return READERS[name](root, problems)


def load(name: str, root: str | Path) -> list[Record]:
    """All records of dataset `name` (one of READERS) under `root`: from the set's official files,
    or, where they are absent, from pyiqa's layout (pyiqa_layout). Raises DataError (a subclass of
    ValueError) naming every bad row, MissingFileError (also a FileNotFoundError) for missing files.
    """
    return read(name, root)


def official_split(root: str | Path) -> dict[str, list[Record]]:
    """KonIQ-10k's official train/val/test parts, from koniq10k_distributions_sets.csv or pyiqa's
    meta-info file."""
    root = Path(root).expanduser()
    if layout("koniq10k", root) == "pyiqa" and not (root / nr_sets.KONIQ_SETS).is_file():
        return pyiqa_layout.koniq_official_split(root)
    return nr_sets.official_split(root)


__all__ = ["FULL_REFERENCE", "READERS", "DataError", "MissingFileError", "Record", "layout", "load",
           "official_split", "read", "split"]
