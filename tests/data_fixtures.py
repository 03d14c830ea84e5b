"""Tiny datasets written in each benchmark's official layout (real file names and columns)."""

from pathlib import Path

import numpy as np
from PIL import Image

H, W = 24, 32


def image(path: Path, seed: int, size=(H, W), fmt=None) -> np.ndarray:
    array = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)
    return array


def kadid(root: Path, refs: int = 5, per_ref: int = 4) -> Path:
    lines = ["dist_img,ref_img,dmos,var"]
    for r in range(1, refs + 1):
        image(root / "images" / f"I{r:02d}.png", r)
        for k in range(1, per_ref + 1):
            name = f"I{r:02d}_{k:02d}_{k:02d}.png"
            image(root / "images" / name, 100 * r + k)
            lines.append(f"{name},I{r:02d}.png,{1 + k * 0.9:.2f},0.5")
    (root / "dmos.csv").write_text("\n".join(lines) + "\n")
    return root


def tid2013(root: Path) -> Path:
    """Two references with the release's mixed case: I01.BMP and i02.bmp."""
    image(root / "reference_images" / "I01.BMP", 1, fmt="BMP")
    image(root / "reference_images" / "i02.bmp", 2, fmt="BMP")
    lines = []
    for r, dist_case in ((1, "i{r:02d}_{t:02d}_{lv}.bmp"), (2, "I{r:02d}_{t:02d}_{lv}.BMP")):
        for t, lv in ((1, 1), (1, 2), (24, 5)):
            name = dist_case.format(r=r, t=t, lv=lv)
            image(root / "distorted_images" / name, 10 * r + lv + t, fmt="BMP")
            lines.append(f"{9 - lv * 1.5:.5f} {name.lower()}")
    (root / "mos_with_names.txt").write_text("\n".join(lines) + "\n")
    return root


def live(root: Path) -> Path:
    """982 entries in the release's order; every 10th is an original (orgs == 1)."""
    from scipy.io import savemat

    from data_pipelines.fr_sets import LIVE_FOLDERS

    refs = [f"ref{i}.bmp" for i in range(29)]
    dmos, orgs, names, k = [], [], [], 0
    for folder, count in LIVE_FOLDERS:
        for n in range(1, count + 1):
            image(root / folder / f"img{n}.bmp", k, size=(8, 8), fmt="BMP")
            dmos.append(float(k % 100))
            orgs.append(1 if k % 10 == 0 else 0)
            names.append(refs[k % 29])
            k += 1
    for i, name in enumerate(refs):
        image(root / "refimgs" / name, i, size=(8, 8), fmt="BMP")
    savemat(root / "dmos.mat", {"dmos": np.asarray([dmos]), "orgs": np.asarray([orgs])})
    cell = np.empty((1, len(names)), dtype=object)
    cell[0, :] = names
    savemat(root / "refnames_all.mat", {"refnames_all": cell})
    return root


def csiq(root: Path) -> Path:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "all_by_image"
    sheet.append(["CSIQ DMOS"])
    sheet.append([])
    sheet.append(["image", "dst_idx", "dst_type", "dst_lev", "dmos_std", "dmos"])
    files = {"noise": ("awgn", "AWGN"), "jpeg 2000": ("jpeg2000", "jpeg2000"), "blur": ("blur", "BLUR")}
    for name in (1600, "cactus"):
        image(root / "src_imgs" / f"{name}.png", 7)
        for level in (1, 2):
            for kind, (folder, tag) in files.items():
                image(root / "dst_imgs" / folder / f"{name}.{tag}.{level}.png", level)
                sheet.append([name, 1, kind, level, 0.01, 0.1 * level + (0.3 if kind == "blur" else 0)])
    book.save(root / "csiq.DMOS.xlsx")
    return root


def koniq(root: Path, n: int = 20) -> Path:
    header = "image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,MOS_zscore"
    scores, sets = [header], [header + ",set"]
    for i in range(n):
        name = f"{1000 + i}.jpg"
        image(root / "512x384" / name, i, fmt="JPEG")
        row = f"{name},1,2,3,4,5,15,{1 + 4 * i / n:.3f},0.5,0.1"
        scores.append(row)
        sets.append(row + "," + ("training" if i < 12 else "validation" if i < 15 else "test"))
    (root / "koniq10k_scores_and_distributions.csv").write_text("\n".join(scores) + "\n")
    (root / "koniq10k_distributions_sets.csv").write_text("\n".join(sets) + "\n")
    return root


def clive(root: Path) -> Path:
    from scipy.io import savemat

    names = [f"t{i}.bmp" for i in range(7)] + [f"{i}.JPG" for i in range(10)]
    for i, name in enumerate(names):
        if i >= 7:
            image(root / "Images" / name, i, fmt="JPEG")
    cell = np.empty((len(names), 1), dtype=object)
    cell[:, 0] = names
    (root / "Data").mkdir(parents=True, exist_ok=True)
    savemat(root / "Data" / "AllImages_release.mat", {"AllImages_release": cell})
    savemat(root / "Data" / "AllMOS_release.mat",
            {"AllMOS_release": np.asarray([[10.0 * i for i in range(len(names))]])})
    return root


def spaq(root: Path) -> Path:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["Image name", "MOS", "Brightness", "Colorfulness"])
    for i, size in enumerate([(500, 600), (900, 450), (448, 448)]):
        image(root / "TestImage" / f"{i:05d}.jpg", i, size=size, fmt="JPEG")
        sheet.append([f"{i:05d}.jpg", 20.0 * i + 10, 50, 50])
    (root / "Annotations").mkdir()
    book.save(root / "Annotations" / "MOS and Image attribute scores.xlsx")
    return root
