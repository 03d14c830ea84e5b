"""Readers of the four full-reference benchmarks, from the files their authors distribute.

Each returns a list of Record (data_pipelines.records), label as published in `mos` and mapped to
[0, 1], higher = better, in `score`; `content` is the reference id, so splits keep a reference
and all its distortions in one part. Every row is checked (records.Table): a bad row, a missing
image or a second row for the same image ends the load in one DataError naming them; pass a
records.Problems to gather them instead (check.py does).

The `*_record` functions build a record from one row's names and label; pyiqa_layout.py builds the
same records from pyiqa's meta-info files with them.
"""

from __future__ import annotations

import re
from pathlib import Path

from data_pipelines.records import (
    BadRow,
    DataError,
    Problems,
    Record,
    Table,
    case_insensitive_index,
    find,
    gathering,
    mat_strings,
    normalize,
    read_mat,
    read_text,
    record_paths,
    require_file,
    xlsx_rows,
)

SCORE_FILES = {"kadid10k": "dmos.csv", "tid2013": "mos_with_names.txt", "live": "dmos.mat",
               "csiq": "csiq.DMOS.xlsx"}

KADID_TYPES = (
    "gaussian_blur", "lens_blur", "motion_blur", "color_diffusion", "color_shift",
    "color_quantization", "color_saturation_1", "color_saturation_2", "jpeg2000", "jpeg",
    "white_noise", "white_noise_color", "impulse_noise", "multiplicative_noise", "denoise",
    "brighten", "darken", "mean_shift", "jitter", "non_eccentricity_patch", "pixelate",
    "quantization", "color_block", "high_sharpen", "contrast_change")


def kadid_distortion(name: str) -> str | None:
    """The type of a KADID-10k name Ixx_TT_LL.png (TT 1..25), its number for another TT, None for a
    name of another form."""
    parts = Path(name).stem.split("_")
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    kind = int(parts[1])
    return KADID_TYPES[kind - 1] if 0 < kind <= len(KADID_TYPES) else str(kind)


def kadid_record(root: Path, dist: str, ref: str, mos: float) -> Record:
    return Record(dist=str(root / "images" / dist), ref=str(root / "images" / ref), mos=mos,
                  score=normalize(mos, "kadid10k"), content=Path(ref).stem,
                  distortion=kadid_distortion(dist), dataset="kadid10k")


def load_kadid10k(root: str | Path, problems: Problems | None = None) -> list[Record]:
    """KADID-10k: `dmos.csv` (dist_img, ref_img, dmos, var) and `images/`. DMOS 1..5, higher better."""
    root = Path(root)
    with gathering(problems, "kadid10k", root) as problems:
        table = Table(require_file(root / SCORE_FILES["kadid10k"], "KADID-10k score file"), "kadid10k",
                      problems)

        def make(where, row):
            dist = table.text(row["dist_img"], "distorted image")
            table.once(dist, where)
            ref = table.text(row["ref_img"], "reference image (the content id)")
            return kadid_record(root, dist, ref, table.score(row["dmos"]))

        records = table.records(table.csv_rows(("dist_img", "ref_img", "dmos")), make)
        problems.require_images(record_paths(records), table.path)
    return records


_TID_NAME = re.compile(r"^i(\d+)_(\d+)_(\d+)\.bmp$", re.IGNORECASE)


class TidFiles:
    """TID2013's image folders, found regardless of the file-name case (I01.BMP, i25.bmp)."""

    def __init__(self, root: Path):
        self.root = root
        self.dist_dir, self.ref_dir = root / "distorted_images", root / "reference_images"
        self.dists = case_insensitive_index(self.dist_dir)
        self.refs = case_insensitive_index(self.ref_dir)

    def record(self, name: str, mos: float) -> Record:
        """The record of distorted image `name` (iRR_TT_L.bmp: reference RR, type TT, level L)."""
        match = _TID_NAME.match(name)
        if match is None:
            raise BadRow(f"image name {name!r} is not iRR_TT_L.bmp (the reference id comes from it)")
        ref_id, kind = int(match.group(1)), int(match.group(2))
        return Record(
            dist=find(self.dists, name, self.dist_dir),
            ref=find(self.refs, f"I{ref_id:02d}.BMP", self.ref_dir),
            mos=mos, score=normalize(mos, "tid2013"), content=f"I{ref_id:02d}", distortion=f"{kind:02d}",
            dataset="tid2013")


def load_tid2013(root: str | Path, problems: Problems | None = None) -> list[Record]:
    """TID2013: `mos_with_names.txt` ("mos name" lines), `distorted_images/`, `reference_images/`.

    MOS 0..9, higher better. File-name case differs between releases (I01.BMP, i25.bmp), so
    files are found regardless of case.
    """
    root = Path(root)
    with gathering(problems, "tid2013", root) as problems:
        table = Table(require_file(root / SCORE_FILES["tid2013"], "TID2013 score file"), "tid2013", problems)
        files = TidFiles(root)

        def make(where, line):
            fields = line.split()
            if len(fields) != 2:
                raise BadRow(f"expected 'MOS NAME', got {line.strip()!r}")
            table.once(fields[1], where)
            return files.record(fields[1], table.score(fields[0]))

        lines = read_text(table.path).splitlines()
        records = table.records(((f"line {n}", line) for n, line in enumerate(lines, start=1)
                                 if line.strip()), make)
        problems.require_images(record_paths(records), table.path)
    return records


LIVE_FOLDERS = (("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174))


def live_record(root: Path, dist: str, ref: str, mos: float) -> Record:
    """dist: '<folder>/imgN.bmp', ref: 'refimgs/<name>.bmp', both relative to root."""
    return Record(dist=str(root / dist), ref=str(root / ref), mos=mos, score=normalize(mos, "live"),
                  content=Path(ref).stem, distortion=Path(dist).parts[0], dataset="live")


def load_live(root: str | Path, problems: Problems | None = None) -> list[Record]:
    """LIVE release 2: `dmos.mat` (dmos, orgs), `refnames_all.mat`, the five distortion folders
    (jp2k 227, jpeg 233, wn 174, gblur 174, fastfading 174 images, in this order in the .mat
    files) and `refimgs/`. Entries with orgs == 1 are the references themselves and are dropped
    (982 -> 779). DMOS ~0..100, lower better, flipped in `score`.
    """
    root = Path(root)
    with gathering(problems, "live", root) as problems:
        table = Table(require_file(root / SCORE_FILES["live"], "LIVE score file"), "live", problems, "entry")
        dmos, orgs = (a.ravel() for a in read_mat(table.path, "dmos", "orgs"))
        names_mat = require_file(root / "refnames_all.mat", "LIVE reference names")
        refnames = mat_strings(read_mat(names_mat, "refnames_all")[0])
        expected = sum(n for _, n in LIVE_FOLDERS)
        if not len(dmos) == len(orgs) == len(refnames) == expected:
            raise DataError(f"{table.path}: dmos/orgs/refnames_all hold {len(dmos)}/{len(orgs)}/"
                            f"{len(refnames)} entries, LIVE release 2 has {expected}")
        entries = [(folder, n) for folder, count in LIVE_FOLDERS for n in range(1, count + 1)]

        def make(where, k):
            if orgs[k] not in (0, 1):
                raise BadRow(f"orgs {float(orgs[k]):g} is neither 0 nor 1")
            if orgs[k] == 1:  # the reference itself, shown as a distorted image
                return None
            ref = Table.text(refnames[k], f"reference name in {names_mat.name} (the content id)")
            folder, n = entries[k]
            return live_record(root, f"{folder}/img{n}.bmp", f"refimgs/{ref}", table.score(dmos[k]))

        records = table.records(((f"entry {k + 1}", k) for k in range(expected)), make)
        problems.require_images(record_paths(records), table.path)
    return records


CSIQ_TYPES = {"noise": "awgn", "awgn": "awgn", "jpeg": "jpeg", "jpeg 2000": "jpeg2000",
              "jpeg2000": "jpeg2000", "fnoise": "fnoise", "blur": "blur", "contrast": "contrast"}


class CsiqFiles:
    """CSIQ's image folders: `src_imgs/<image>.png` and the distorted images anywhere under
    `dst_imgs/` (the release's `<type>/` folders or pyiqa's flat one), regardless of case."""

    def __init__(self, root: Path):
        self.root = root
        self.dists = case_insensitive_index(root / "dst_imgs", recursive=True)
        self.refs = case_insensitive_index(root / "src_imgs")

    @staticmethod
    def name(image: str, dst_type: object, level: object) -> tuple[str, int, str]:
        """(type, level, file name) of a distorted image from the spreadsheet's cells."""
        kind = CSIQ_TYPES.get(str(dst_type).strip().lower())
        if kind is None:
            raise BadRow(f"unknown distortion type {dst_type!r}; expected one of {sorted(set(CSIQ_TYPES))}")
        try:
            level = int(str(level).strip().removesuffix(".0"))
        except ValueError:
            raise BadRow(f"distortion level {level!r} is not a whole number") from None
        return kind, level, f"{image}.{kind}.{level}.png"

    def record(self, image: str, kind: str, name: str, mos: float) -> Record:
        return Record(dist=find(self.dists, name, self.root / "dst_imgs" / kind),
                      ref=find(self.refs, f"{image}.png", self.root / "src_imgs"),
                      mos=mos, score=normalize(mos, "csiq"), content=image, distortion=kind, dataset="csiq")


def load_csiq(root: str | Path, problems: Problems | None = None) -> list[Record]:
    """CSIQ: `csiq.DMOS.xlsx` (image, dst_type, dst_lev, dmos), `src_imgs/<image>.png`,
    `dst_imgs/<type>/<image>.<TYPE>.<lev>.png`. DMOS 0..1, lower better, flipped in `score`.
    """
    root = Path(root)
    with gathering(problems, "csiq", root) as problems:
        table = Table(require_file(root / SCORE_FILES["csiq"], "CSIQ score file"), "csiq", problems)
        files = CsiqFiles(root)

        def make(where, row):
            image = table.text(row["image"], "image name (the content id)")
            kind, _, name = files.name(image, row["dst_type"], row["dst_lev"])
            table.once(name, where)
            return files.record(image, kind, name, table.score(row["dmos"]))

        records = table.records(xlsx_rows(table.path, ("image", "dst_type", "dst_lev", "dmos")), make)
        problems.require_images(record_paths(records), table.path)
    return records

