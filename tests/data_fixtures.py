"""Tiny datasets written in each benchmark's official layout (real file names and columns), and the
same sets in pyiqa's layout (its folders, its meta-info CSV files as its scripts/process_*.py write
them). The two layouts of a set hold the same images and labels, so their records must agree."""

import csv
from pathlib import Path

import numpy as np
from PIL import Image

H, W = 24, 32


def image(path: Path, seed: int, size=(H, W), fmt=None) -> np.ndarray:
    array = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)
    return array


def write_csv(path: Path, header, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


# ---------------------------------------------------------------- KADID-10k

def _kadid_rows(refs: int, per_ref: int):
    """(dist, ref, dmos, var, seed of the dist image) in dmos.csv's order."""
    return [(f"I{r:02d}_{k:02d}_{k:02d}.png", f"I{r:02d}.png", f"{1 + k * 0.9:.2f}", "0.5", 100 * r + k)
            for r in range(1, refs + 1) for k in range(1, per_ref + 1)]


def _kadid_images(folder: Path, refs: int, rows) -> None:
    for r in range(1, refs + 1):
        image(folder / f"I{r:02d}.png", r)
    for dist, _, _, _, seed in rows:
        image(folder / dist, seed)


def kadid(root: Path, refs: int = 5, per_ref: int = 4) -> Path:
    rows = _kadid_rows(refs, per_ref)
    _kadid_images(root / "images", refs, rows)
    write_csv(root / "dmos.csv", ["dist_img", "ref_img", "dmos", "var"], [r[:4] for r in rows])
    return root


def kadid_pyiqa(datasets: Path, refs: int = 5, per_ref: int = 4) -> Path:
    """pyiqa's datasets/kadid10k/images/ and meta_info_KADID10kDataset.csv (ref, dist, dmos, std)."""
    rows = _kadid_rows(refs, per_ref)
    _kadid_images(datasets / "kadid10k" / "images", refs, rows)
    write_csv(datasets / "meta_info" / "meta_info_KADID10kDataset.csv",
              ["ref_name", "dist_name", "dmos", "std"],
              [(ref, dist, dmos, var) for dist, ref, dmos, var, _ in rows])
    return datasets / "kadid10k"


# ---------------------------------------------------------------- TID2013

def _tid2013_rows():
    """(mos, name as listed, name on disk, seed): the release's mixed case, I01.BMP and i02.bmp."""
    rows = []
    for r, dist_case in ((1, "i{r:02d}_{t:02d}_{lv}.bmp"), (2, "I{r:02d}_{t:02d}_{lv}.BMP")):
        for t, lv in ((1, 1), (1, 2), (24, 5)):
            name = dist_case.format(r=r, t=t, lv=lv)
            rows.append((f"{9 - lv * 1.5:.5f}", name.lower(), name, 10 * r + lv + t))
    return rows


def _tid2013_images(root: Path) -> None:
    image(root / "reference_images" / "I01.BMP", 1, fmt="BMP")
    image(root / "reference_images" / "i02.bmp", 2, fmt="BMP")
    for _, _, name, seed in _tid2013_rows():
        image(root / "distorted_images" / name, seed, fmt="BMP")


def tid2013(root: Path) -> Path:
    _tid2013_images(root)
    (root / "mos_with_names.txt").write_text("".join(f"{m} {n}\n" for m, n, _, _ in _tid2013_rows()))
    return root


def tid2013_pyiqa(datasets: Path) -> Path:
    root = datasets / "tid2013"
    _tid2013_images(root)
    write_csv(datasets / "meta_info" / "meta_info_TID2013Dataset.csv",
              ["ref_name", "dist_name", "mos", "std"],
              [(f"I{n[1:3]}.BMP", n, m, "0.1") for m, n, _, _ in _tid2013_rows()])
    return root


# ---------------------------------------------------------------- LIVE

LIVE_REFS = [f"ref{i}.bmp" for i in range(29)]


def _live_entries():
    """(folder, n, dmos, orgs, refname) for the 982 entries in the release's order; every 10th is
    an original (orgs == 1)."""
    from data_pipelines.fr_sets import LIVE_FOLDERS

    entries, k = [], 0
    for folder, count in LIVE_FOLDERS:
        for n in range(1, count + 1):
            entries.append((folder, n, float(k % 100), 1 if k % 10 == 0 else 0, LIVE_REFS[k % 29]))
            k += 1
    return entries


def _live_images(root: Path) -> None:
    for k, (folder, n, *_) in enumerate(_live_entries()):
        image(root / folder / f"img{n}.bmp", k, size=(8, 8), fmt="BMP")
    for i, name in enumerate(LIVE_REFS):
        image(root / "refimgs" / name, i, size=(8, 8), fmt="BMP")


def live_mats(root: Path, dmos, orgs, names) -> None:
    from scipy.io import savemat

    savemat(root / "dmos.mat", {"dmos": np.asarray([dmos], float), "orgs": np.asarray([orgs], float)})
    cell = np.empty((1, len(names)), dtype=object)
    cell[0, :] = names
    savemat(root / "refnames_all.mat", {"refnames_all": cell})


def live(root: Path) -> Path:
    _live_images(root)
    folders, ns, dmos, orgs, names = zip(*_live_entries())
    live_mats(root, dmos, orgs, names)
    return root


def live_pyiqa(datasets: Path) -> Path:
    root = datasets / "LIVEIQA_release2"
    _live_images(root)
    write_csv(datasets / "meta_info" / "meta_info_LIVEIQADataset.csv", ["ref_name", "dist_name", "mos"],
              [(f"refimgs/{ref}", f"{folder}/img{n}.bmp", dmos)
               for folder, n, dmos, orgs, ref in _live_entries() if orgs != 1])
    return root


# ---------------------------------------------------------------- CSIQ

_CSIQ_FILES = {"noise": ("awgn", "AWGN"), "jpeg 2000": ("jpeg2000", "jpeg2000"), "blur": ("blur", "BLUR")}


def _csiq_rows():
    """(image, dst_type as in the xlsx, level, dmos, folder, file name)."""
    return [(name, kind, level, 0.1 * level + (0.3 if kind == "blur" else 0), folder,
             f"{name}.{tag}.{level}.png")
            for name in (1600, "cactus") for level in (1, 2) for kind, (folder, tag) in _CSIQ_FILES.items()]


def csiq(root: Path) -> Path:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "all_by_image"
    sheet.append(["CSIQ DMOS"])
    sheet.append([])
    sheet.append(["image", "dst_idx", "dst_type", "dst_lev", "dmos_std", "dmos"])
    for name, kind, level, dmos, folder, file in _csiq_rows():
        image(root / "src_imgs" / f"{name}.png", 7)
        image(root / "dst_imgs" / folder / file, level)
        sheet.append([name, 1, kind, level, 0.01, dmos])
    book.save(root / "csiq.DMOS.xlsx")
    return root


def csiq_pyiqa(datasets: Path) -> Path:
    """pyiqa's CSIQ: every distorted image in one dst_imgs/ folder, meta (ref_name, dist_name, dmos)."""
    root = datasets / "CSIQ"
    for name, _, level, _, _, file in _csiq_rows():
        image(root / "src_imgs" / f"{name}.png", 7)
        image(root / "dst_imgs" / file, level)
    write_csv(datasets / "meta_info" / "meta_info_CSIQDataset.csv", ["ref_name", "dist_name", "dmos"],
              [(f"{name}.png", file, f"{dmos:.6f}") for name, _, _, dmos, _, file in _csiq_rows()])
    return root


# ---------------------------------------------------------------- KonIQ-10k

KONIQ_HEADER = ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "MOS_zscore"]


def _koniq_rows(n: int):
    """(name, vote counts c1..c5, MOS = their mean rating, z-score MOS on 1..100, set, seed)."""
    rows = []
    for i in range(n):
        counts = [i % 3, 1 + i % 2, 2, 3 + i % 4, i % 5]
        mos = sum(k * c for k, c in enumerate(counts, start=1)) / sum(counts)
        part = "training" if i < 12 else "validation" if i < 15 else "test"
        rows.append((f"{1000 + i}.jpg", counts, mos, 20 * mos - 15, part, i))
    return rows


def koniq(root: Path, n: int = 20) -> Path:
    """The score file as the authors' site has it (counts, MOS 1..5, MOS_zscore) and the split file
    as their GitHub has it (shares of votes, MOS on 1..100, set)."""
    scores, sets = [], []
    for name, counts, mos, zscore, part, seed in _koniq_rows(n):
        image(root / "512x384" / name, seed, fmt="JPEG")
        scores.append([name, *counts, sum(counts), f"{mos:.14g}", "0.5", f"{zscore:.4f}"])
        shares = [f"{c / sum(counts):.12g}" for c in counts]
        sets.append([name, *shares, sum(counts), f"{zscore:.10g}", "0.5", part])
    write_csv(root / "koniq10k_scores_and_distributions.csv", KONIQ_HEADER, scores)
    write_csv(root / "koniq10k_distributions_sets.csv", KONIQ_HEADER[:-1] + ["set"], sets)
    return root


def koniq_pyiqa(datasets: Path, n: int = 20, split_column: str = "split") -> Path:
    """pyiqa's meta (img_name, mos = the z-score MOS, std, split, c1..c5 as shares, c_total); the
    split column as pyiqa's older files ('split': 0/1/2) or newer ones ('official_split': names)."""
    root = datasets / "koniq10k"
    codes = {"training": "0", "validation": "1", "test": "2"}
    names = {"training": "train", "validation": "val", "test": "test"}
    rows = []
    for name, counts, _, zscore, part, seed in _koniq_rows(n):
        image(root / "512x384" / name, seed, fmt="JPEG")
        shares = [f"{c / sum(counts):.12g}" for c in counts]
        split = codes[part] if split_column == "split" else names[part]
        rows.append([name, f"{zscore:.10g}", "0.5", split, *shares, sum(counts)])
    write_csv(datasets / "meta_info" / "meta_info_KonIQ10kDataset.csv",
              ["img_name", "mos", "std", split_column, "c1", "c2", "c3", "c4", "c5", "c_total"], rows)
    return root


# ---------------------------------------------------------------- CLIVE

CLIVE_NAMES = [f"t{i}.bmp" for i in range(1, 8)] + [f"{i}.JPG" for i in range(10)]
CLIVE_MOS = [10.0 * i for i in range(7)] + [70.0 - 5 * i for i in range(10)]


def clive_mats(root: Path, names, mos) -> None:
    from scipy.io import savemat

    cell = np.empty((len(names), 1), dtype=object)
    cell[:, 0] = names
    (root / "Data").mkdir(parents=True, exist_ok=True)
    savemat(root / "Data" / "AllImages_release.mat", {"AllImages_release": cell})
    savemat(root / "Data" / "AllMOS_release.mat", {"AllMOS_release": np.asarray([mos], float)})


def clive(root: Path) -> Path:
    for i, name in enumerate(CLIVE_NAMES[7:], start=7):
        image(root / "Images" / name, i, fmt="JPEG")
    clive_mats(root, CLIVE_NAMES, CLIVE_MOS)
    return root


def clive_pyiqa(datasets: Path) -> Path:
    """pyiqa's LIVEC/ with the images directly in it, meta (img_name, mos, std) for all 1169."""
    root = datasets / "LIVEC"
    for i, name in enumerate(CLIVE_NAMES[7:], start=7):
        image(root / name, i, fmt="JPEG")
    write_csv(datasets / "meta_info" / "meta_info_LIVEChallengeDataset.csv", ["img_name", "mos", "std"],
              [(n, m, 15.0) for n, m in zip(CLIVE_NAMES, CLIVE_MOS)])
    return root


# ---------------------------------------------------------------- SPAQ

SPAQ_SIZES = [(500, 600), (900, 450), (448, 448)]


def spaq(root: Path) -> Path:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["Image name", "MOS", "Brightness", "Colorfulness"])
    for i, size in enumerate(SPAQ_SIZES):
        image(root / "TestImage" / f"{i:05d}.jpg", i, size=size, fmt="JPEG")
        sheet.append([f"{i:05d}.jpg", 20.0 * i + 10, 50, 50])
    (root / "Annotations").mkdir()
    book.save(root / "Annotations" / "MOS and Image attribute scores.xlsx")
    return root


def spaq_pyiqa(datasets: Path) -> Path:
    root = datasets / "SPAQ"
    for i, size in enumerate(SPAQ_SIZES):
        image(root / "TestImage" / f"{i:05d}.jpg", i, size=size, fmt="JPEG")
    # pyiqa's SPAQ meta repeats 'Brightness' (a MOS attribute and an EXIF tag)
    write_csv(datasets / "meta_info" / "meta_info_SPAQDataset.csv",
              ["Image name", "MOS", "Brightness", "Colorfulness", "Brightness"],
              [(f"{i:05d}.jpg", 20.0 * i + 10, 50, 50, 1.5) for i in range(len(SPAQ_SIZES))])
    return root


PYIQA = {"kadid10k": kadid_pyiqa, "tid2013": tid2013_pyiqa, "live": live_pyiqa, "csiq": csiq_pyiqa,
         "koniq10k": koniq_pyiqa, "clive": clive_pyiqa, "spaq": spaq_pyiqa}
OFFICIAL = {"kadid10k": kadid, "tid2013": tid2013, "live": live, "csiq": csiq, "koniq10k": koniq,
            "clive": clive, "spaq": spaq}
