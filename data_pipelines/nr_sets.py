"""Readers of the three no-reference benchmarks, from the files their authors distribute.

`content` is the image id (each image its own content); `ref` is None. Rows are checked as in
fr_sets (records.Table): one DataError names every bad row, or a records.Problems gathers them.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from pathlib import Path

from bpclip_jax.files import atomic_write
from data_pipelines.images import read_rgb
from data_pipelines.records import (
    BadRow,
    DataError,
    Problems,
    Record,
    Table,
    gathering,
    mat_strings,
    normalize,
    read_mat,
    record_paths,
    require_file,
    xlsx_rows,
)

KONIQ_SCORES = "koniq10k_scores_and_distributions.csv"
KONIQ_SETS = "koniq10k_distributions_sets.csv"
KONIQ_PARTS = {"training": "train", "validation": "val", "test": "test"}
SCORE_FILES = {"koniq10k": KONIQ_SCORES, "clive": "Data/AllMOS_release.mat",
               "spaq": "Annotations/MOS and Image attribute scores.xlsx"}


def koniq_record(root: Path, name: str, mos: float) -> Record:
    return Record(dist=str(root / "512x384" / name), ref=None, mos=mos, score=normalize(mos, "koniq10k"),
                  content=Path(name).stem, dataset="koniq10k")


def load_koniq10k(root: str | Path, problems: Problems | None = None) -> list[Record]:
    """KonIQ-10k: `koniq10k_scores_and_distributions.csv` (image_name, ..., MOS, ...) and
    `512x384/`. MOS 1..5, higher better."""
    root = Path(root)
    with gathering(problems, "koniq10k", root) as problems:
        table = Table(require_file(root / KONIQ_SCORES, "KonIQ-10k score file"), "koniq10k", problems)

        def make(where, row):
            name = table.text(row["image_name"], "image name")
            table.once(name, where)
            return koniq_record(root, name, table.score(row["MOS"]))

        records = table.records(table.csv_rows(("image_name", "MOS")), make)
        problems.require_images(record_paths(records), table.path)
    return records


def official_split(root: str | Path, problems: Problems | None = None,
                   scored: list[Record] | None = None) -> dict[str, list[Record]]:
    """KonIQ-10k's own split from `koniq10k_distributions_sets.csv` (column `set`: training 7058,
    validation 1000, test 2015) as parts train, val, test.

    The labels come from the score file, as in load_koniq10k (or `scored`, its records when read
    already): the split file's own MOS column is on another scale (1..100, from the authors'
    GitHub), so it is not read.
    """
    root = Path(root)
    with gathering(problems, "koniq10k", root) as problems:
        table = Table(require_file(root / KONIQ_SETS, "KonIQ-10k split file"), "koniq10k", problems)
        if scored is None:
            scored = load_koniq10k(root, problems)
        by_name = {Path(r.dist).name.lower(): r for r in scored}
        listed = _first_column(root / KONIQ_SCORES)

        def make(where, row):
            name = table.text(row["image_name"], "image name")
            table.once(name, where)
            part = KONIQ_PARTS.get(row["set"])
            if part is None:
                raise BadRow(f"set {row['set']!r} is not one of {list(KONIQ_PARTS)}")
            if name.lower() in by_name:
                return part, by_name[name.lower()]
            if name.lower() not in listed:
                raise BadRow(f"{name} is not in {KONIQ_SCORES}")
            return None  # its row in the score file is bad, and reported there

        parts: dict[str, list[Record]] = {p: [] for p in KONIQ_PARTS.values()}
        for part, record in table.records(table.csv_rows(("image_name", "set")), make):
            parts[part].append(record)
    return parts


def _first_column(path: Path) -> set[str]:
    """The lower-cased first field of every row of a CSV file, whatever else the row holds."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        return {row[0].strip().lower() for row in csv.reader(f) if row}


CLIVE_TRAINING_IMAGES = 7  # the first 7 entries are the trainingImages/ examples, not rated data


def clive_record(path: Path, mos: float) -> Record:
    return Record(dist=str(path), ref=None, mos=mos, score=normalize(mos, "clive"), content=path.stem,
                  dataset="clive")


def load_clive(root: str | Path, problems: Problems | None = None) -> list[Record]:
    """LIVE In the Wild (CLIVE): `Data/AllImages_release.mat`, `Data/AllMOS_release.mat`,
    `Images/`. The first 7 entries are dropped (1169 -> 1162). MOS 0..100, higher better."""
    root = Path(root)
    with gathering(problems, "clive", root) as problems:
        names_mat = require_file(root / "Data" / "AllImages_release.mat", "CLIVE image list")
        mos_mat = require_file(root / SCORE_FILES["clive"], "CLIVE score file")
        names = mat_strings(read_mat(names_mat, "AllImages_release")[0])
        mos = read_mat(mos_mat, "AllMOS_release")[0].ravel()
        if len(names) != len(mos):
            raise DataError(f"{mos_mat}: {len(mos)} scores for the {len(names)} images of {names_mat}")
        table = Table(mos_mat, "clive", problems, "entry")

        def make(where, k):
            name = table.text(names[k], f"image name in {names_mat.name}")
            table.once(name, where)
            return clive_record(root / "Images" / name, table.score(mos[k]))

        rated = range(CLIVE_TRAINING_IMAGES, len(names))
        records = table.records(((f"entry {k + 1}", k) for k in rated), make)
        problems.require_images(record_paths(records), mos_mat)
    return records


SPAQ_SHORT_SIDE = 448
SPAQ_RESIZED = "TestImage_448"


def spaq_record(root: Path, name: str, mos: float) -> Record:
    """The record of `TestImage/<name>`; resized_spaq points it at its resized copy."""
    path = root / "TestImage" / name
    return Record(dist=str(path), ref=None, mos=mos, score=normalize(mos, "spaq"), content=path.stem,
                  dataset="spaq")


def load_spaq(root: str | Path, problems: Problems | None = None) -> list[Record]:
    """SPAQ: `Annotations/MOS and Image attribute scores.xlsx` (Image name, MOS, ...) and
    `TestImage/`. MOS 0..100, higher better. Images are resized once so that the shorter side is
    448 (Table I), cached in `TestImage_448/` beside the originals; records point at the copies.
    """
    root = Path(root)
    with gathering(problems, "spaq", root) as problems:
        table = Table(require_file(root / SCORE_FILES["spaq"], "SPAQ score file"), "spaq", problems)

        def make(where, row):
            name = table.text(row["image name"], "image name")
            table.once(name, where)
            return spaq_record(root, name, table.score(row["mos"]))

        records = table.records(xlsx_rows(table.path, ("image name", "mos")), make)
        problems.require_images(record_paths(records), table.path)
    return resized_spaq(root, records)


def resized_spaq(root: Path, records: list[Record]) -> list[Record]:
    """The records whose original exists, pointed at their copy with the shorter side 448 (made once)."""
    records = [r for r in records if os.path.isfile(r.dist)]
    resized = resize_short_side([Path(r.dist) for r in records], root / SPAQ_RESIZED, SPAQ_SHORT_SIDE)
    return [dataclasses.replace(r, dist=str(path)) for r, path in zip(records, resized)]


def resize_short_side(paths: list[Path], out_dir: Path, short: int) -> list[Path]:
    """Copies of `paths` in out_dir with the shorter side `short` (bicubic, antialiased), made once:
    existing copies are kept. Shows a progress bar while it works."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image
    from tqdm import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    targets = [out_dir / (p.stem + ".png") for p in paths]
    todo = [(p, t) for p, t in zip(paths, targets) if not t.is_file()]

    def resize(pair):
        src, dst = pair
        image = Image.fromarray(read_rgb(str(src)))
        w, h = image.size
        scale = short / min(w, h)
        image = image.resize((round(w * scale), round(h * scale)), Image.BICUBIC)
        png = io.BytesIO()
        image.save(png, format="PNG")
        atomic_write(dst, png.getvalue())

    if todo:
        with ThreadPoolExecutor() as pool:
            for _ in tqdm(pool.map(resize, todo), total=len(todo), desc=f"resizing to {out_dir}"):
                pass
    return targets
