"""Readers of the three no-reference benchmarks, from the files their authors distribute.

`content` is the image id (each image its own content); `ref` is None.
"""

from __future__ import annotations

import csv
from pathlib import Path

from data_pipelines.fr_sets import xlsx_table
from data_pipelines.images import read_rgb
from data_pipelines.records import Record, normalize, require_file, require_files

KONIQ_SCORES = "koniq10k_scores_and_distributions.csv"
KONIQ_SETS = "koniq10k_distributions_sets.csv"
KONIQ_PARTS = {"training": "train", "validation": "val", "test": "test"}


def _koniq_record(root: Path, row: dict[str, str]) -> Record:
    name, mos = row["image_name"].strip(), float(row["MOS"])
    return Record(dist=str(root / "512x384" / name), ref=None, mos=mos,
                  score=normalize(mos, "koniq10k"), content=Path(name).stem,
                  dataset="koniq10k")


def load_koniq10k(root: str | Path) -> list[Record]:
    """KonIQ-10k: `koniq10k_scores_and_distributions.csv` (image_name, ..., MOS, ...) and
    `512x384/`. MOS 1..5, higher better."""
    root = Path(root)
    table = require_file(root / KONIQ_SCORES, "KonIQ-10k score file")
    with table.open(newline="") as f:
        records = [_koniq_record(root, row) for row in csv.DictReader(f)]
    require_files([r.dist for r in records], table, root)
    return records


def official_split(root: str | Path) -> dict[str, list[Record]]:
    """KonIQ-10k's own split from `koniq10k_distributions_sets.csv` (column `set`: training 7058,
    validation 1000, test 2015) as parts train, val, test."""
    root = Path(root)
    table = require_file(root / KONIQ_SETS, "KonIQ-10k split file")
    parts: dict[str, list[Record]] = {p: [] for p in KONIQ_PARTS.values()}
    with table.open(newline="") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            part = KONIQ_PARTS.get(row["set"].strip())
            if part is None:
                raise ValueError(f"{table}:{line}: unknown set {row['set']!r}, expected one of "
                                 f"{list(KONIQ_PARTS)}")
            parts[part].append(_koniq_record(root, row))
    require_files([r.dist for p in parts.values() for r in p], table, root)
    return parts


CLIVE_TRAINING_IMAGES = 7  # the first 7 entries are the trainingImages/ examples, not rated data


def load_clive(root: str | Path) -> list[Record]:
    """LIVE In the Wild (CLIVE): `Data/AllImages_release.mat`, `Data/AllMOS_release.mat`,
    `Images/`. The first 7 entries are dropped (1169 -> 1162). MOS 0..100, higher better."""
    from scipy.io import loadmat

    root = Path(root)
    names_mat = require_file(root / "Data" / "AllImages_release.mat", "CLIVE image list")
    mos_mat = require_file(root / "Data" / "AllMOS_release.mat", "CLIVE score file")
    names = [str(n.ravel()[0]) if hasattr(n, "ravel") else str(n)
             for n in loadmat(names_mat)["AllImages_release"].ravel()]
    mos = loadmat(mos_mat)["AllMOS_release"].ravel()
    if len(names) != len(mos):
        raise ValueError(f"{root}: {len(names)} image names but {len(mos)} scores")
    records = [Record(dist=str(root / "Images" / n), ref=None, mos=float(m),
                      score=normalize(float(m), "clive"),
                      content=Path(n).stem, dataset="clive")
               for n, m in list(zip(names, mos))[CLIVE_TRAINING_IMAGES:]]
    require_files([r.dist for r in records], mos_mat, root)
    return records


SPAQ_TABLE = Path("Annotations") / "MOS and Image attribute scores.xlsx"
SPAQ_SHORT_SIDE = 448
SPAQ_RESIZED = "TestImage_448"


def load_spaq(root: str | Path) -> list[Record]:
    """SPAQ: `Annotations/MOS and Image attribute scores.xlsx` (Image name, MOS, ...) and
    `TestImage/`. MOS 0..100, higher better. Images are resized once so that the shorter side is
    448 (Table I), cached in `TestImage_448/` beside the originals; records point at the copies.
    """
    root = Path(root)
    table = require_file(root / SPAQ_TABLE, "SPAQ score file")
    rows = xlsx_table(table, ("image name", "mos"))
    originals = [root / "TestImage" / str(row["image name"]).strip() for row in rows]
    require_files([str(p) for p in originals], table, root)
    resized = resize_short_side(originals, root / SPAQ_RESIZED, SPAQ_SHORT_SIDE)
    return [Record(dist=str(path), ref=None, mos=float(row["mos"]),
                   score=normalize(float(row["mos"]), "spaq"),
                   content=path.stem, dataset="spaq")
            for path, row in zip(resized, rows)]


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
        tmp = dst.with_suffix(".tmp.png")
        image.save(tmp)
        tmp.replace(dst)

    if todo:
        with ThreadPoolExecutor() as pool:
            for _ in tqdm(pool.map(resize, todo), total=len(todo), desc=f"resizing to {out_dir}"):
                pass
    return targets
