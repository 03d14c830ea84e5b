"""The record every reader returns, and the checks every reader shares."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from pathlib import Path


class DataError(ValueError):
    """A dataset file that cannot be trusted; the message names the file, the line and the problem."""


@dataclasses.dataclass(frozen=True)
class Record:
    """One rated image (NR) or distorted/reference pair (FR).

    dist: path of the (distorted) image; ref: path of the reference, None for NR sets.
    mos: the label as published (MOS or DMOS, the set's own scale and direction).
    score: the label mapped linearly to [0, 1], higher = better (DMOS sets are flipped).
    content: the reference id (FR sets: no content in two split parts) or the image id (NR).
    distortion: the distortion type where the set names one, else None.
    """

    dist: str
    ref: str | None
    mos: float
    score: float
    content: str
    distortion: str | None = None
    dataset: str = ""


# Each set's published label scale: (low, high, higher_is_better).
SCALES: dict[str, tuple[float, float, bool]] = {
    "kadid10k": (1.0, 5.0, True),     # DMOS 1..5, but higher is better in KADID
    "tid2013": (0.0, 9.0, True),
    "live": (0.0, 100.0, False),      # DMOS
    "csiq": (0.0, 1.0, False),        # DMOS
    "koniq10k": (1.0, 5.0, True),
    "clive": (0.0, 100.0, True),
    "spaq": (0.0, 100.0, True),
}


def normalize(mos: float, dataset: str) -> float:
    """Linear map of a label from the set's nominal range (SCALES) to [0, 1], higher = better.

    Values a set publishes outside its nominal range (LIVE's realigned DMOS slightly exceeds 100)
    map slightly outside [0, 1] rather than being clipped, so no two labels are merged.
    """
    lo, hi, higher_better = SCALES[dataset]
    s = (mos - lo) / (hi - lo)
    return s if higher_better else 1.0 - s


def to_mos(score, dataset: str):
    """The inverse of normalize: a [0, 1] higher-better score (or array) in the set's own scale."""
    lo, hi, higher_better = SCALES[dataset]
    return lo + (score if higher_better else 1.0 - score) * (hi - lo)


def require_files(paths: Iterable[str], listed_in: str | Path, root: str | Path) -> None:
    """Raises FileNotFoundError with the count and the first paths when files are missing."""
    paths = list(dict.fromkeys(p for p in paths if p is not None))
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        head = "\n  ".join(missing[:5])
        raise FileNotFoundError(
            f"{len(missing)} of the {len(paths)} images listed in {listed_in} are missing under "
            f"{root}; the first:\n  {head}")


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: expected {path}")
    return path


def case_insensitive_index(directory: Path, recursive: bool = False) -> dict[str, Path]:
    """Lower-cased file name -> path, for releases whose file-name case varies (TID2013, CSIQ)."""
    if not directory.is_dir():
        raise FileNotFoundError(f"directory not found: {directory}")
    files = directory.rglob("*") if recursive else directory.iterdir()
    return {p.name.lower(): p for p in files if p.is_file()}


def find(index: dict[str, Path], name: str, directory: Path) -> str:
    """The path of `name` in a case-insensitive index; a non-existent path under directory if absent
    (require_files then reports it with the others)."""
    hit = index.get(name.lower())
    return str(hit) if hit is not None else str(directory / name)


def records_summary(records: Sequence[Record]) -> str:
    contents = len({r.content for r in records})
    return f"{len(records)} records, {contents} contents"
