"""Readers of the four full-reference benchmarks, from the files their authors distribute.

Each returns a list of Record (data_pipelines.records), label as published in `mos` and mapped to
[0, 1], higher = better, in `score`; `content` is the reference id, so splits keep a reference
and all its distortions in one part.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from data_pipelines.records import (
    Record,
    case_insensitive_index,
    find,
    normalize,
    require_file,
    require_files,
)

KADID_TYPES = (
    "gaussian_blur", "lens_blur", "motion_blur", "color_diffusion", "color_shift",
    "color_quantization", "color_saturation_1", "color_saturation_2", "jpeg2000", "jpeg",
    "white_noise", "white_noise_color", "impulse_noise", "multiplicative_noise", "denoise",
    "brighten", "darken", "mean_shift", "jitter", "non_eccentricity_patch", "pixelate",
    "quantization", "color_block", "high_sharpen", "contrast_change")


def load_kadid10k(root: str | Path) -> list[Record]:
    """KADID-10k: `dmos.csv` (dist_img, ref_img, dmos, var) and `images/`. DMOS 1..5, higher better."""
    root = Path(root)
    table = require_file(root / "dmos.csv", "KADID-10k score file")
    records = []
    with table.open(newline="") as f:
        for row in csv.DictReader(f):
            dist, ref = row["dist_img"].strip(), row["ref_img"].strip()
            kind = int(dist.split("_")[1])
            mos = float(row["dmos"])
            records.append(Record(
                dist=str(root / "images" / dist), ref=str(root / "images" / ref), mos=mos,
                score=normalize(mos, "kadid10k"), content=Path(ref).stem,
                distortion=KADID_TYPES[kind - 1] if 0 < kind <= len(KADID_TYPES) else str(kind),
                dataset="kadid10k"))
    require_files([r.dist for r in records] + [r.ref for r in records], table, root)
    return records


_TID_NAME = re.compile(r"^i(\d+)_(\d+)_(\d+)\.bmp$", re.IGNORECASE)


def load_tid2013(root: str | Path) -> list[Record]:
    """TID2013: `mos_with_names.txt` ("mos name" lines), `distorted_images/`, `reference_images/`.

    MOS 0..9, higher better. File-name case differs between releases (I01.BMP, i25.bmp), so
    files are found regardless of case.
    """
    root = Path(root)
    table = require_file(root / "mos_with_names.txt", "TID2013 score file")
    dist_dir, ref_dir = root / "distorted_images", root / "reference_images"
    dists, refs = case_insensitive_index(dist_dir), case_insensitive_index(ref_dir)
    records = []
    for line_no, line in enumerate(table.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            mos_text, name = line.split()
            match = _TID_NAME.match(name)
            ref_id, kind = int(match.group(1)), int(match.group(2))
        except (ValueError, AttributeError) as err:
            raise ValueError(f"{table}:{line_no}: expected 'mos iRR_TT_L.bmp', got {line!r}") from err
        mos = float(mos_text)
        records.append(Record(
            dist=find(dists, name, dist_dir), ref=find(refs, f"I{ref_id:02d}.BMP", ref_dir), mos=mos,
            score=normalize(mos, "tid2013"), content=f"I{ref_id:02d}",
            distortion=f"{kind:02d}", dataset="tid2013"))
    require_files([r.dist for r in records] + [r.ref for r in records], table, root)
    return records


LIVE_FOLDERS = (("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174))


def load_live(root: str | Path) -> list[Record]:
    """LIVE release 2: `dmos.mat` (dmos, orgs), `refnames_all.mat`, the five distortion folders
    (jp2k 227, jpeg 233, wn 174, gblur 174, fastfading 174 images, in this order in the .mat
    files) and `refimgs/`. Entries with orgs == 1 are the references themselves and are dropped
    (982 -> 779). DMOS ~0..100, lower better, flipped in `score`.
    """
    from scipy.io import loadmat

    root = Path(root)
    mat = loadmat(require_file(root / "dmos.mat", "LIVE score file"))
    dmos, orgs = mat["dmos"].ravel(), mat["orgs"].ravel()
    names = loadmat(require_file(root / "refnames_all.mat", "LIVE reference names"))["refnames_all"]
    refnames = [str(n.ravel()[0]) if hasattr(n, "ravel") else str(n) for n in names.ravel()]
    expected = sum(n for _, n in LIVE_FOLDERS)
    if not len(dmos) == len(orgs) == len(refnames) == expected:
        raise ValueError(f"{root}: dmos.mat/refnames_all.mat hold {len(dmos)}/{len(refnames)} "
                         f"entries, LIVE release 2 has {expected}")
    records, k = [], 0
    for folder, count in LIVE_FOLDERS:
        for n in range(1, count + 1):
            if not orgs[k]:
                records.append(Record(
                    dist=str(root / folder / f"img{n}.bmp"), ref=str(root / "refimgs" / refnames[k]),
                    mos=float(dmos[k]), score=normalize(float(dmos[k]), "live"),
                    content=Path(refnames[k]).stem, distortion=folder, dataset="live"))
            k += 1
    require_files([r.dist for r in records] + [r.ref for r in records], root / "dmos.mat", root)
    return records


CSIQ_TYPES = {"noise": "awgn", "awgn": "awgn", "jpeg": "jpeg", "jpeg 2000": "jpeg2000",
              "jpeg2000": "jpeg2000", "fnoise": "fnoise", "blur": "blur", "contrast": "contrast"}


def xlsx_table(path: Path, required: tuple[str, ...]) -> list[dict[str, object]]:
    """Rows of the first sheet holding a header row with all `required` columns (case-insensitive)."""
    import openpyxl

    book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    for sheet in book.worksheets:
        rows = sheet.iter_rows(values_only=True)
        for row in rows:
            header = [str(c).strip().lower() if c is not None else "" for c in row]
            if all(col in header for col in required):
                table = []
                for values in rows:
                    if values is None or all(v is None for v in values):
                        continue
                    table.append(dict(zip(header, values)))
                return table
    raise ValueError(f"{path}: no sheet has a header row with the columns {list(required)}")


def load_csiq(root: str | Path) -> list[Record]:
    """CSIQ: `csiq.DMOS.xlsx` (image, dst_type, dst_lev, dmos), `src_imgs/<image>.png`,
    `dst_imgs/<type>/<image>.<TYPE>.<lev>.png`. DMOS 0..1, lower better, flipped in `score`.
    """
    root = Path(root)
    table = require_file(root / "csiq.DMOS.xlsx", "CSIQ score file")
    dists = case_insensitive_index(root / "dst_imgs", recursive=True)
    refs = case_insensitive_index(root / "src_imgs")
    records = []
    for row in xlsx_table(table, ("image", "dst_type", "dst_lev", "dmos")):
        image = row["image"]
        image = str(int(image)) if isinstance(image, float | int) else str(image).strip()
        kind = CSIQ_TYPES.get(str(row["dst_type"]).strip().lower())
        if kind is None:
            raise ValueError(f"{table}: unknown dst_type {row['dst_type']!r} for image {image}")
        level = int(row["dst_lev"])
        mos = float(row["dmos"])
        name = f"{image}.{kind}.{level}.png"
        records.append(Record(
            dist=find(dists, name, root / "dst_imgs" / kind),
            ref=find(refs, f"{image}.png", root / "src_imgs"),
            mos=mos, score=normalize(mos, "csiq"), content=image,
            distortion=kind, dataset="csiq"))
    require_files([r.dist for r in records] + [r.ref for r in records], table, root)
    return records
