"""The record every reader returns, and the checks every reader shares.

Readers trust nothing they read: every row of a score file is checked (a finite score in the set's
range, the columns it needs, no image listed twice, a content id for every FR row) and the bad rows
of a file are gathered, not stopped at, so that one DataError names them all (its first line says
what and where) and `python -m data_pipelines.check` can list every one.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
import os
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path


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


class DataError(ValueError):
    """A dataset file that cannot be trusted. The first line of the message names the file, where in
    it (line, row or entry) and what is wrong, so a command line can print that line alone."""


class MissingFileError(DataError, FileNotFoundError):
    """A score file, split file or listed image that is not where the set's layout puts it."""


# Each set's published label scale: (low, high, higher_is_better).
SCALES: dict[str, tuple[float, float, bool]] = {
    "kadid10k": (1.0, 5.0, True),     # DMOS 1..5, but higher is better in KADID
    "tid2013": (0.0, 9.0, True),
    "live": (0.0, 100.0, False),      # DMOS
    "csiq": (0.0, 1.0, False),        # DMOS
    "koniq10k": (1.0, 5.0, True),
    "clive": (0.0, 100.0, True),
    "spaq": (0.0, 100.0, True),
    "pyiqa": (0.0, 1.0, True),        # not a set: pyiqa's own score (~0..1) of a converted metric
}
TITLES = {"kadid10k": "KADID-10k", "tid2013": "TID2013", "live": "LIVE", "csiq": "CSIQ",
          "koniq10k": "KonIQ-10k", "clive": "CLIVE", "spaq": "SPAQ"}

# How far a label may lie outside its nominal range (in the set's own units) before its row is
# rejected. The published files stay inside their ranges (KADID 1.00..4.93, TID2013 0.24..7.21,
# CSIQ 0..1, KonIQ 1.10..4.31, CLIVE 3.42..92.43, SPAQ 2..96; LIVE's dmos.mat 17.9..84.5 for the
# 779 distorted images) except LIVE's realigned DMOS (dmos_realigned.mat), which runs from -2.64 to
# 111.77: a margin of 12 accepts it and still rejects a label on another scale.
MARGINS: dict[str, float] = {"live": 12.0}


def accepted_range(dataset: str) -> tuple[float, float]:
    """(low, high) a label of `dataset` must lie in: its nominal range widened by MARGINS."""
    lo, hi, _ = SCALES[dataset]
    margin = MARGINS.get(dataset, 0.0) + 1e-9 * (hi - lo)  # printed decimals may round past a bound
    return lo - margin, hi + margin


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


PLURALS = {"row": "rows", "entry": "entries"}


class BadRow(Exception):
    """Raised inside a reader's row loop; the loop records it (Table.bad) and goes on."""


class Problems:
    """Everything wrong with one set's files, gathered while it is read.

    Readers add bad rows and missing images and go on; `error()` turns them into one DataError (the
    first line names the file, the first few rows and the check command), `lines()` lists them all.
    """

    def __init__(self, dataset: str, root: str | Path):
        self.dataset, self.root = dataset, Path(root)
        self.rows: list[tuple[str, str, str]] = []              # (file, where, what)
        self.units: dict[str, str] = {}                         # file -> 'row' or 'entry'
        self.missing: list[tuple[str, list[str], int]] = []     # (listed in, missing paths, listed)

    def row(self, file: str | Path, where: str, what: str, unit: str = "row") -> None:
        self.rows.append((str(file), where, what))
        self.units[str(file)] = unit

    def require_images(self, paths: Iterable[str | None], listed_in: str | Path) -> None:
        """Records the listed files that do not exist."""
        paths = list(dict.fromkeys(p for p in paths if p is not None))
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            self.missing.append((str(listed_in), missing, len(paths)))

    def lines(self) -> list[str]:
        """Every problem, one line each."""
        out = [f"{file} {where}: {what}" for file, where, what in self.rows]
        for listed_in, missing, _ in self.missing:
            out += [f"missing image {p} (listed in {listed_in})" for p in missing]
        return out

    def check_command(self) -> str:
        return f"python -m data_pipelines.check --dataset {self.dataset} --root {self.root}"

    def error(self, shown: int = 3) -> DataError | None:
        """One DataError for everything gathered (None if nothing is wrong)."""
        if self.rows:
            return DataError(self._rows_message(shown))
        if self.missing:
            listed_in, missing, total = self.missing[0]
            more = f" and {len(missing) - shown} more" if len(missing) > shown else ""
            return MissingFileError(
                f"{len(missing)} of the {total} images listed in {listed_in} are missing under "
                f"{self.root}: {', '.join(missing[:shown])}{more}; run `{self.check_command()}` "
                "to list them all")
        return None

    def _rows_message(self, shown: int) -> str:
        by_file: dict[str, list[tuple[str, str]]] = {}
        for file, where, what in self.rows:
            by_file.setdefault(file, []).append((where, what))
        parts = []
        for file, rows in by_file.items():
            bad = len({where for where, _ in rows})
            unit = self.units[file] if bad == 1 else PLURALS[self.units[file]]
            listed = "; ".join(f"{where}: {what}" for where, what in rows[:shown])
            more = f"; and {len(rows) - shown} more" if len(rows) > shown else ""
            parts.append(f"{file}: {bad} bad {unit}; {listed}{more}")
        missing = sum(len(m) for _, m, _ in self.missing)
        also = f"; also {missing} missing images" if missing else ""
        return f"{'; '.join(parts)}{also}; run `{self.check_command()}` to list them all"


@contextlib.contextmanager
def gathering(problems: Problems | None, dataset: str, root: str | Path) -> Iterator[Problems]:
    """The reader's Problems: the caller's (it lists them, e.g. check.py), or a fresh one raised as
    one DataError when the reader is done."""
    own = problems is None
    problems = Problems(dataset, root) if own else problems
    yield problems
    if own and (error := problems.error()) is not None:
        raise error


class Table:
    """One score file being read: checks its values and records its bad rows in `problems`.

    Each check raises BadRow with the words for the user; the reader's loop passes it to `bad`.
    """

    def __init__(self, path: Path, dataset: str, problems: Problems, unit: str = "row"):
        self.path, self.dataset, self.problems, self.unit = path, dataset, problems, unit
        self._first_seen: dict[object, str] = {}

    def bad(self, where: str, what: BadRow | str) -> None:
        self.problems.row(self.path, where, str(what), self.unit)

    def score(self, value: object) -> float:
        """The label in `value` (text or number): a finite number in the set's accepted range."""
        if value is None or (isinstance(value, str) and not value.strip()):
            raise BadRow("no score")
        try:
            number = float(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            raise BadRow(f"score {value!r} is not a number") from None
        shown = repr(value.strip()) if isinstance(value, str) else f"{number:g}"
        if not math.isfinite(number):
            raise BadRow(f"score {shown} is not finite")
        lo, hi = accepted_range(self.dataset)
        if not lo <= number <= hi:
            nominal_lo, nominal_hi, _ = SCALES[self.dataset]
            margin = MARGINS.get(self.dataset)
            extra = f" with a margin of {margin:g}" if margin else ""
            raise BadRow(f"score {shown} is outside {nominal_lo:g}..{nominal_hi:g}{extra}, "
                         f"the range of {TITLES[self.dataset]}'s labels")
        return number

    def records(self, rows: Iterable[tuple[str, object]], make) -> list:
        """make(where, row) for each row: its Record (or what the reader collects), None for a row
        that gives none; rows that make rejects (BadRow) are recorded as bad and skipped."""
        out = []
        for where, row in rows:
            try:
                item = make(where, row)
            except BadRow as bad:
                self.bad(where, bad)
                continue
            if item is not None:
                out.append(item)
        return out

    @staticmethod
    def text(value: object, what: str) -> str:
        """A non-empty name from a cell (numbers, as spreadsheets store some names, become text)."""
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        text = "" if value is None else str(value).strip()
        if not text:
            raise BadRow(f"no {what}")
        return text

    def once(self, key: str, where: str) -> None:
        """Rejects a second row for the same image (or pair); names are compared ignoring case, as
        the readers find files regardless of case."""
        folded = key.lower()
        if folded in self._first_seen:
            raise BadRow(f"{key!r} again (first on {self._first_seen[folded]})")
        self._first_seen[folded] = where

    def csv_rows(self, required: Sequence[str | int]) -> Iterator[tuple[str, dict[str | int, str]]]:
        """('line N', {column: text}) for each non-empty row after the header, N the file's line.

        required: column names (matched ignoring case) or positions (0 = first column, as pyiqa
        reads its meta-info files). A header without a required column is a DataError; a row whose
        number of fields differs from the header's is recorded as bad and skipped.
        """
        decoding = _unreadable(self.path, "CSV text", (UnicodeDecodeError, csv.Error))
        with self.path.open(newline="", encoding="utf-8-sig") as f, decoding:
            reader = csv.reader(f)
            header = next((row for row in reader if any(c.strip() for c in row)), None)
            if header is None:
                raise DataError(f"{self.path}: the file is empty; expected a header and one row per image")
            names = [c.strip() for c in header]
            index = {n.lower(): i for i, n in enumerate(names)}
            columns = {c: c if isinstance(c, int) else index.get(c.lower(), len(names)) for c in required}
            absent = [c for c, i in columns.items() if i >= len(names)]
            if absent:
                wanted = ", ".join(f"#{c + 1}" if isinstance(c, int) else repr(c) for c in absent)
                raise DataError(f"{self.path}: the header ({','.join(names)}) has no column {wanted}")
            for row in reader:
                if not any(c.strip() for c in row):
                    continue
                where = f"line {reader.line_num}"
                if len(row) != len(names):
                    self.bad(where, f"{len(row)} fields, the header has {len(names)}")
                    continue
                yield where, {c: row[i].strip() for c, i in columns.items()}


def xlsx_rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[str, dict[str, object]]]:
    """('row N', {column: value}) of the first sheet holding a header row with all `required`
    columns (case-insensitive), N the sheet's own row number; empty rows are skipped."""
    import openpyxl

    with _unreadable(path, "an .xlsx workbook", (zipfile.BadZipFile, LookupError, ValueError, OSError)):
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    for sheet in book.worksheets:
        rows = enumerate(sheet.iter_rows(min_row=1, values_only=True), start=1)
        for _, row in rows:
            header = [str(c).strip().lower() if c is not None else "" for c in row]
            if all(col in header for col in required):
                for number, values in rows:
                    if values is None or all(v is None for v in values):
                        continue
                    yield f"row {number}", dict(zip(header, values))
                return
    raise DataError(f"{path}: no sheet has a header row with the columns {list(required)}")


@contextlib.contextmanager
def _unreadable(path: Path, what: str, errors: tuple[type[Exception], ...]) -> Iterator[None]:
    """Turns a decoder's `errors` on a damaged or mislabelled file into a DataError naming it."""
    try:
        yield
    except FileNotFoundError:
        raise
    except errors as err:
        raise DataError(f"{path}: not readable as {what} ({type(err).__name__}: {err})") from None


def read_text(path: Path) -> str:
    with _unreadable(path, "UTF-8 text", (UnicodeDecodeError,)):
        return path.read_text(encoding="utf-8-sig")


def read_mat(path: Path, *names: str) -> list:
    """The named variables of a MATLAB file, a DataError naming the file if one is absent."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    with _unreadable(path, "a MATLAB .mat file", (MatReadError, ValueError, LookupError, OSError)):
        mat = loadmat(path)
    absent = [n for n in names if n not in mat]
    if absent:
        held = sorted(k for k in mat if not k.startswith("__"))
        raise DataError(f"{path}: no variable {', '.join(absent)} (it holds {', '.join(held) or 'none'})")
    return [mat[n] for n in names]


def mat_strings(cell) -> list[str]:
    """The strings of a MATLAB cell array read by scipy.io.loadmat ('' for an empty entry)."""
    out = []
    for item in cell.ravel():
        if hasattr(item, "ravel"):
            item = item.ravel()
            item = item[0] if item.size else ""
        out.append(str(item).strip())
    return out


def record_paths(records: Iterable[Record]) -> list[str | None]:
    """Every image path the records name (dist, then ref), for Problems.require_images."""
    return [p for r in records for p in (r.dist, r.ref)]


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise MissingFileError(f"{what} not found: expected {path}")
    return path


def case_insensitive_index(directory: Path, recursive: bool = False) -> dict[str, Path]:
    """Lower-cased file name -> path, for releases whose file-name case varies (TID2013, CSIQ)."""
    if not directory.is_dir():
        raise MissingFileError(f"directory not found: {directory}")
    files = directory.rglob("*") if recursive else directory.iterdir()
    return {p.name.lower(): p for p in files if p.is_file()}


def find(index: dict[str, Path], name: str, directory: Path) -> str:
    """The path of `name` in a case-insensitive index; a non-existent path under directory if absent
    (Problems.require_images then reports it with the others)."""
    hit = index.get(name.lower())
    return str(hit) if hit is not None else str(directory / name)


def records_summary(records: Sequence[Record]) -> str:
    contents = len({r.content for r in records})
    return f"{len(records)} records, {contents} contents"
