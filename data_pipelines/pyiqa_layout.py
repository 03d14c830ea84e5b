"""The layout of IQA-PyTorch (pyiqa): its image folders, its meta-info CSV files and its split files.

pyiqa keeps every set under one `datasets/` folder:

    datasets/meta_info/meta_info_KADID10kDataset.csv   one row per image (FR: per pair), in a fixed order
    datasets/meta_info/kadid10k_seed123.pkl            splits: {k: {'train': [rows], 'val': [...], ...}}
    datasets/kadid10k/images/...                        the images

so `--config.data.root=~/pyiqa/datasets/kadid10k` names a set's folder and the meta info lies beside
it. The meta-info file is looked for in ROOT/meta_info/, ROOT/../meta_info/ and ROOT/. The records
are those the official files give (same labels, scores, content ids and distortion types; the same
paths where the image folders agree), in the meta-info file's row order, which the split files'
indices refer to. Columns are read by position, as pyiqa reads them: FR ref, dist, label; NR image,
label. Two sets need more than that:
  KonIQ-10k: pyiqa's `mos` is the authors' z-score MOS (1..100), another label than the MOS 1..5 of
    their score file; the MOS is the mean rating, recomputed from the rating distribution c1..c5.
  CLIVE: the first 7 rows (the training examples) are dropped before the split indices apply, as
    pyiqa's LIVEChallengeDataset does.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable
from pathlib import Path

from data_pipelines import fr_sets, nr_sets
from data_pipelines.records import (
    BadRow,
    DataError,
    MissingFileError,
    Problems,
    Record,
    Table,
    gathering,
    record_paths,
)

META_INFO = {
    "kadid10k": "meta_info_KADID10kDataset.csv",
    "tid2013": "meta_info_TID2013Dataset.csv",
    "live": "meta_info_LIVEIQADataset.csv",
    "csiq": "meta_info_CSIQDataset.csv",
    "koniq10k": "meta_info_KonIQ10kDataset.csv",
    "clive": "meta_info_LIVEChallengeDataset.csv",
    "spaq": "meta_info_SPAQDataset.csv",
}
SPLIT_PARTS = ("train", "val", "test")


def meta_info_file(name: str, root: str | Path) -> Path | None:
    """Where pyiqa's meta-info file of set `name` is for a set folder `root`, None if nowhere."""
    root = Path(root).expanduser()
    for folder in (root / "meta_info", root.parent / "meta_info", root):
        if (folder / META_INFO[name]).is_file():
            return folder / META_INFO[name]
    return None


def _fr_rows(table: Table):
    return table.csv_rows((0, 1, 2))  # ref, dist, label


def _kadid10k(root: Path, table: Table) -> Callable:
    def make(where, row):
        ref, dist = table.text(row[0], "reference image (the content id)"), table.text(row[1], "image")
        table.once(dist, where)
        return fr_sets.kadid_record(root, dist, ref, table.score(row[2]))
    return make


def _tid2013(root: Path, table: Table) -> Callable:
    files = fr_sets.TidFiles(root)

    def make(where, row):
        dist = table.text(row[1], "image")
        table.once(dist, where)
        return files.record(dist, table.score(row[2]))
    return make


def _live(root: Path, table: Table) -> Callable:
    def make(where, row):
        ref, dist = table.text(row[0], "reference image (the content id)"), table.text(row[1], "image")
        table.once(dist, where)
        return fr_sets.live_record(root, dist, ref, table.score(row[2]))
    return make


def _csiq(root: Path, table: Table) -> Callable:
    files = fr_sets.CsiqFiles(root)

    def make(where, row):
        dist = table.text(row[1], "image")
        table.once(dist, where)
        parts = dist.rsplit(".", 3)
        if len(parts) != 4:
            raise BadRow(f"image name {dist!r} is not <image>.<TYPE>.<level>.png")
        kind, _, name = files.name(parts[0], parts[1], parts[2])
        return files.record(parts[0], kind, name, table.score(row[2]))
    return make


def _koniq10k(root: Path, table: Table) -> Callable:
    def make(where, row):
        name = table.text(row[0], "image")
        table.once(name, where)
        return nr_sets.koniq_record(root, name, table.score(mean_rating(row)))
    return make


def mean_rating(row: dict) -> float:
    """The mean of 1..5 ratings from their distribution c1..c5 (counts or fractions)."""
    counts = []
    for k in range(1, 6):
        try:
            counts.append(float(row[f"c{k}"]))
        except ValueError:
            raise BadRow(f"c{k} {row[f'c{k}']!r} is not a number") from None
        if not counts[-1] >= 0:  # also false for NaN
            raise BadRow(f"c{k} {row[f'c{k}']!r} is not a count or share of ratings")
    total = sum(counts)
    if not 0 < total < float("inf"):
        raise BadRow(f"the rating distribution c1..c5 sums to {total:g}")
    return sum(k * c for k, c in enumerate(counts, start=1)) / total


def _clive(root: Path, table: Table) -> Callable:
    def make(where, row):
        name = table.text(row[0], "image")
        table.once(name, where)
        path = root / name  # pyiqa's LIVEC folder; the release keeps them in Images/
        return nr_sets.clive_record(path if path.is_file() else root / "Images" / name, table.score(row[1]))
    return make


def _spaq(root: Path, table: Table) -> Callable:
    def make(where, row):
        name = table.text(row[0], "image")
        table.once(name, where)
        return nr_sets.spaq_record(root, name, table.score(row[1]))
    return make


READERS = {"kadid10k": _kadid10k, "tid2013": _tid2013, "live": _live, "csiq": _csiq,
           "koniq10k": _koniq10k, "clive": _clive, "spaq": _spaq}
_NR_COLUMNS = {"koniq10k": (0, "c1", "c2", "c3", "c4", "c5"), "clive": (0, 1), "spaq": (0, 1)}


def load(name: str, root: str | Path, problems: Problems | None = None) -> list[Record]:
    """All records of set `name` from pyiqa's meta-info file and image folders, in the file's order.

    Raises MissingFileError when the meta-info file is nowhere (see meta_info_file), DataError
    naming the bad rows as the official readers do (pass `problems` to gather them instead).
    """
    root = Path(root).expanduser()
    meta = meta_info_file(name, root)
    if meta is None:
        raise MissingFileError(f"pyiqa's {META_INFO[name]} not found in {root / 'meta_info'}, "
                               f"{root.parent / 'meta_info'} or {root}")
    with gathering(problems, name, root) as problems:
        table = Table(meta, name, problems)
        rows = table.csv_rows(_NR_COLUMNS[name]) if name in _NR_COLUMNS else _fr_rows(table)
        if name == "clive":
            rows = (row for k, row in enumerate(rows) if k >= nr_sets.CLIVE_TRAINING_IMAGES)
        records = table.records(rows, READERS[name](root, table))
        problems.require_images(record_paths(records), meta)
    return nr_sets.resized_spaq(root, records) if name == "spaq" else records


def koniq_official_split(root: str | Path) -> dict[str, list[Record]]:
    """KonIQ-10k's official split from pyiqa's meta-info file: its column `official_split` (train,
    val, test) or, in older files, `split` (0 training, 1 validation, 2 test)."""
    records = load("koniq10k", root)  # raises on any bad row, so its rows and records align
    meta = meta_info_file("koniq10k", root)
    table = Table(meta, "koniq10k", Problems("koniq10k", root))
    for column, codes in (("official_split", {p: p for p in SPLIT_PARTS}),
                          ("split", {"0": "train", "1": "val", "2": "test"})):
        try:
            rows = list(table.csv_rows((column,)))
        except DataError:  # the file has no such column
            continue
        parts: dict[str, list[Record]] = {p: [] for p in SPLIT_PARTS}
        for (where, row), record in zip(rows, records, strict=True):
            part = codes.get(row[column].removesuffix(".0"))
            if part is None:
                raise DataError(f"{meta} {where}: {column} {row[column]!r} is not one of {list(codes)}")
            parts[part].append(record)
        return parts
    raise DataError(f"{meta}: no column 'official_split' or 'split'; use pyiqa's split file instead: "
                    f"--config.data.split_file={meta.parent / 'koniq10k_official.pkl'}")


class _PlainUnpickler(pickle.Unpickler):
    """Builds dicts, lists, tuples, numbers and strings; refuses every class or function, so that a
    pickle can neither run code nor make objects while it loads."""

    def __init__(self, data: bytes, path: Path):
        super().__init__(io.BytesIO(data))
        self.path = path

    def find_class(self, module: str, name: str):
        raise DataError(f"{self.path}: refused to load {module}.{name}; a pyiqa split file holds only "
                        "dicts, lists and numbers (this file may be unsafe: do not open it with pickle)")

    def persistent_load(self, pid):
        raise DataError(f"{self.path}: refused a persistent id; a pyiqa split file holds only dicts, "
                        "lists and numbers")


_PLAIN = (dict, list, tuple, int, float, str, bool, type(None))


def read_split_file(path: str | Path) -> dict:
    """The contents of a pyiqa split file ({k: {'train': [rows], 'val': [...], 'test': [...]}}),
    read without pickle's power to run code: only plain containers, numbers and strings load."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingFileError(f"split file not found: expected {path}")
    try:
        content = _PlainUnpickler(path.read_bytes(), path).load()
    except DataError:
        raise
    except Exception as err:  # a damaged pickle fails in many ways, none of them the user's code
        raise DataError(f"{path}: not a readable pyiqa split file ({type(err).__name__}: {err})") from None
    stack = [content]
    while stack:
        item = stack.pop()
        if not isinstance(item, _PLAIN):
            raise DataError(f"{path}: holds a {type(item).__name__}; a pyiqa split file holds only dicts, "
                            "lists and numbers")
        if isinstance(item, dict):
            stack += list(item.keys()) + list(item.values())
        elif isinstance(item, list | tuple):
            stack += item
    if not isinstance(content, dict):
        raise DataError(f"{path}: holds a {type(content).__name__}, not pyiqa's "
                        "{k: {'train': [...], 'val': [...], 'test': [...]}}")
    return content


def split_parts(name: str, root: str | Path, split_file: str | Path, index: int) -> dict[str, list[Record]]:
    """The parts of split `index` of a pyiqa split file, as pyiqa forms them: each part lists rows of
    the set's meta-info file (CLIVE: after its first 7 are dropped), in the file's order. Empty parts
    are left out (pyiqa's 8:2 files have an empty 'test': test on 'val' as pyiqa does)."""
    split_file = Path(split_file).expanduser()
    splits = read_split_file(split_file)
    records = load(name, root)
    where = f"{split_file}: split {index}"
    if index not in splits:
        raise DataError(f"{split_file}: no split {index}; it holds {sorted(splits, key=str)}")
    split = splits[index]
    if not isinstance(split, dict) or not set(split) <= set(SPLIT_PARTS):
        raise DataError(f"{where} is not a dict with parts {list(SPLIT_PARTS)}")
    parts, first_part = {}, {}
    for part in SPLIT_PARTS:
        rows = split.get(part) or []
        if not isinstance(rows, list | tuple):
            raise DataError(f"{where} part {part!r} is a {type(rows).__name__}, not a list of row indices")
        for i in rows:
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(records):
                raise DataError(f"{where} part {part!r}: {i!r} is not a row of the {len(records)} records "
                                f"of {META_INFO[name]}")
            if i in first_part:
                raise DataError(f"{where}: row {i} is in part {first_part[i]!r} and again in {part!r}")
            first_part[i] = part
        if rows:
            parts[part] = [records[i] for i in rows]
    return parts
