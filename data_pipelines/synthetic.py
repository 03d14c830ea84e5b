"""Small synthetic IQA sets in KADID-10k's and KonIQ-10k's exact layouts, built offline.

    python -m data_pipelines.synthetic --out DIR [--kind fr|nr] [--seed 0]

The references are the eleven colour photographs that ship inside scikit-image, scikit-learn and
matplotlib, resized to cover 512x384 and centre-cropped. Each is distorted with 16 of KADID-10k's
25 types at 5 levels, implemented after KADID's definitions (parameters in DISTORTIONS).

The labels are SYNTHETIC: a stated function of type and level, never human opinion,
    label(type, level) = 1 + 4 * mean SSIM(distorted, reference)     (1..5, higher = better)
the mean over the set's photographs of scikit-image's SSIM (colour channels, 7x7 window) between
each image of that type and level and its reference, so a pristine image would score 5 and equal
labels mean equal average structural damage, whatever the type: the levels of different types are
comparable, as human opinion makes them in KADID. (An earlier version scaled each type's level by a
hand-set severity; with a frozen random backbone a model could not rank across types by it: test
SRCC ~0.83 for BPCLIP and for a ridge probe of the backbone's difference features alike, 0.92 for
the probe on these labels.) A model trained on them learns to rank distortion strength; the
numbers say nothing about the paper's benchmarks. SYNTHETIC_VERSION names the label definition;
the trainer rebuilds a set of another version.

fr: DIR/images/Ixx.png, DIR/images/Ixx_TT_LL.png, DIR/dmos.csv (dist_img, ref_img, dmos, var).
nr: DIR/512x384/Ixx_TT_LL.png, DIR/koniq10k_scores_and_distributions.csv and
    DIR/koniq10k_distributions_sets.csv (its split keeps each photograph in one part).
Deterministic given the seed (the noises draw from it).
"""

from __future__ import annotations

import argparse
import csv
import io
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from data_pipelines.fr_sets import KADID_TYPES
from data_pipelines.nr_sets import KONIQ_SCORES, KONIQ_SETS

WIDTH, HEIGHT = 512, 384
LEVELS = 5


def photo_paths() -> list[Path]:
    """The colour photographs shipped inside pip packages (no download)."""
    import matplotlib
    import skimage
    import sklearn.datasets

    sk = Path(skimage.__file__).parent / "data"
    paths = [sk / n for n in ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg",
                              "motorcycle_left.png", "retina.jpg", "hubble_deep_field.jpg", "ihc.png")]
    paths.append(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    paths += [Path(sklearn.datasets.__file__).parent / "images" / n for n in ("china.jpg", "flower.jpg")]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"photos missing from the installed packages: {missing}")
    return paths


def reference(path: Path, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """A photo resized to cover width x height (bicubic) and centre-cropped: [height,width,3] uint8."""
    image = Image.open(path).convert("RGB")
    scale = max(width / image.width, height / image.height)
    image = image.resize((max(width, round(image.width * scale)), max(height, round(image.height * scale))),
                         Image.BICUBIC)
    left, top = (image.width - width) // 2, (image.height - height) // 2
    return np.asarray(image.crop((left, top, left + width, top + height)))


# --- distortions: x float32 [H,W,3] in [0,1] -> same; p is the level's parameter -----------------

def _per_channel(fn, x):
    return np.stack([fn(x[..., c]) for c in range(3)], axis=-1)


def gaussian_blur(x, sigma, rng):
    return _per_channel(lambda c: ndimage.gaussian_filter(c, sigma), x)


def lens_blur(x, radius, rng):
    r = int(np.ceil(radius))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    disk = (xx ** 2 + yy ** 2 <= radius ** 2).astype(np.float32)
    return _per_channel(lambda c: ndimage.convolve(c, disk / disk.sum(), mode="reflect"), x)


def motion_blur(x, length, rng):
    kernel = np.ones((1, int(length)), np.float32) / int(length)
    return _per_channel(lambda c: ndimage.convolve(c, kernel, mode="reflect"), x)


def color_saturation(x, factor, rng):
    gray = x @ np.asarray([0.299, 0.587, 0.114], np.float32)
    return gray[..., None] + factor * (x - gray[..., None])


def _codec(x, **save):
    buffer = io.BytesIO()
    Image.fromarray(np.round(x * 255).astype(np.uint8)).save(buffer, **save)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"), np.float32) / 255


def jpeg2000(x, ratio, rng):
    return _codec(x, format="JPEG2000", quality_mode="rates", quality_layers=[ratio])


def jpeg(x, quality, rng):
    return _codec(x, format="JPEG", quality=int(quality))


def white_noise(x, variance, rng):
    return x + rng.normal(0, np.sqrt(variance), x.shape).astype(np.float32)


def white_noise_color(x, variance, rng):
    m = np.asarray([[0.299, 0.587, 0.114], [-0.1687, -0.3313, 0.5], [0.5, -0.4187, -0.0813]], np.float32)
    ycc = x @ m.T
    ycc[..., 1:] += rng.normal(0, np.sqrt(variance), ycc[..., 1:].shape).astype(np.float32)
    return ycc @ np.linalg.inv(m).T


def impulse_noise(x, density, rng):
    u = rng.random(x.shape[:2])
    out = x.copy()
    out[u < density / 2] = 0.0
    out[(u >= density / 2) & (u < density)] = 1.0
    return out


def multiplicative_noise(x, variance, rng):
    return x + x * rng.normal(0, np.sqrt(variance), x.shape).astype(np.float32)


def brighten(x, gamma, rng):
    return np.power(np.clip(x, 0, 1), 1.0 / gamma)


def darken(x, gamma, rng):
    return np.power(np.clip(x, 0, 1), gamma)


def mean_shift(x, shift, rng):
    return x + shift


def pixelate(x, factor, rng):
    h, w = x.shape[:2]
    image = Image.fromarray(np.round(np.clip(x, 0, 1) * 255).astype(np.uint8))
    small = image.resize((max(1, w // factor), max(1, h // factor)), Image.BOX)
    return np.asarray(small.resize((w, h), Image.NEAREST), np.float32) / 255


def quantization(x, levels, rng):
    return np.round(np.clip(x, 0, 1) * (levels - 1)) / (levels - 1)


def contrast_change(x, factor, rng):
    return x.mean() + factor * (x - x.mean())


# KADID type number -> (function, the five levels' parameters, from mild to strong)
DISTORTIONS = {
    1: (gaussian_blur, (0.5, 1.0, 2.0, 3.5, 5.0)),
    2: (lens_blur, (1, 2, 4, 6, 8)),
    3: (motion_blur, (3, 5, 9, 13, 19)),
    7: (color_saturation, (0.7, 0.5, 0.3, 0.15, 0.0)),
    9: (jpeg2000, (16, 32, 64, 120, 200)),
    10: (jpeg, (43, 20, 12, 7, 3)),
    11: (white_noise, (0.001, 0.003, 0.006, 0.012, 0.025)),
    12: (white_noise_color, (0.0005, 0.002, 0.005, 0.01, 0.02)),
    13: (impulse_noise, (0.005, 0.01, 0.025, 0.05, 0.1)),
    14: (multiplicative_noise, (0.005, 0.015, 0.03, 0.06, 0.12)),
    16: (brighten, (1.15, 1.35, 1.6, 2.0, 2.6)),
    17: (darken, (1.2, 1.5, 2.0, 2.7, 3.5)),
    18: (mean_shift, (0.05, 0.1, 0.15, 0.22, 0.3)),
    21: (pixelate, (2, 3, 5, 8, 12)),
    22: (quantization, (24, 14, 9, 6, 4)),
    25: (contrast_change, (0.8, 0.6, 0.45, 0.3, 0.15)),
}
SYNTHETIC_VERSION = "2: label = 1 + 4 * mean SSIM of the type and level"
VERSION_FILE = "SYNTHETIC_VERSION"


def ssim(dist: np.ndarray, ref: np.ndarray) -> float:
    """scikit-image's SSIM of two [H,W,3] uint8 images over their colour channels (7x7 window)."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(dist, ref, channel_axis=2, data_range=255))


def labels(similarities: dict[tuple[int, int], list[float]]) -> dict[tuple[int, int], float]:
    """{(type, level): 1 + 4 * the mean of its images' SSIM}; raises if a type's labels do not fall
    strictly with the level (its levels would not be distortions of growing strength)."""
    out = {key: 1.0 + 4.0 * float(np.mean(values)) for key, values in similarities.items()}
    for kind in {k for k, _ in out}:
        row = [out[(kind, level)] for level in range(1, LEVELS + 1)]
        if any(a <= b for a, b in zip(row, row[1:])):
            raise ValueError(f"type {kind}: labels {row} do not fall with the level")
    return out


def distort(image: np.ndarray, kind: int, level: int, rng: np.random.Generator) -> np.ndarray:
    fn, params = DISTORTIONS[kind]
    out = fn(image.astype(np.float32) / 255, params[level - 1], rng)
    return np.round(np.clip(out, 0, 1) * 255).astype(np.uint8)


def _save_png(array: np.ndarray, path: Path) -> None:
    Image.fromarray(array).save(path, compress_level=1)


def build(out: str | Path, kind: str = "fr", seed: int = 0, photos: int | None = None,
          size: tuple[int, int] = (WIDTH, HEIGHT)) -> Path:
    """Writes the synthetic set of `kind` ('fr': KADID-10k layout, 'nr': KonIQ-10k layout) to out.

    photos: use only the first n photographs (tests); all eleven by default.
    size: (width, height) of every image; KADID's 512x384 by default (the CPU demos use less).
    """
    if kind not in ("fr", "nr"):
        raise ValueError(f"kind must be 'fr' or 'nr', got {kind!r}")
    out = Path(out)
    image_dir = out / ("images" if kind == "fr" else "512x384")
    image_dir.mkdir(parents=True, exist_ok=True)
    refs = [reference(p, *size) for p in photo_paths()[:photos]]
    ref_ids = [f"I{i + 1:02d}" for i in range(len(refs))]
    if kind == "fr":
        for ref_id, ref in zip(ref_ids, refs):
            _save_png(ref, image_dir / f"{ref_id}.png")
    jobs = [(r, t, lv) for r in range(len(refs)) for t in DISTORTIONS for lv in range(1, LEVELS + 1)]

    def make(job):
        r, t, lv = job
        rng = np.random.default_rng([seed, r, t, lv])
        name = f"{ref_ids[r]}_{t:02d}_{lv:02d}.png"
        image = distort(refs[r], t, lv, rng)
        _save_png(image, image_dir / name)
        return name, ref_ids[r], (t, lv), ssim(image, refs[r])

    with ThreadPoolExecutor() as pool:
        made = list(pool.map(make, jobs))
    similarities = defaultdict(list)
    for _, _, key, value in made:
        similarities[key].append(value)
    table = labels(similarities)
    rows = [(name, ref_id, table[key]) for name, ref_id, key, _ in made]
    if kind == "fr":
        _write_kadid_table(out, rows)
    else:
        _write_koniq_tables(out, rows, ref_ids, seed)
    (out / VERSION_FILE).write_text(SYNTHETIC_VERSION + "\n")
    return out


def is_current(out: str | Path) -> bool:
    """Whether `out` holds a synthetic set built with today's label definition."""
    path = Path(out) / VERSION_FILE
    return path.is_file() and path.read_text().strip() == SYNTHETIC_VERSION


def _write_kadid_table(out: Path, rows) -> None:
    with (out / "dmos.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["dist_img", "ref_img", "dmos", "var"])
        for name, ref_id, value in rows:
            writer.writerow([name, f"{ref_id}.png", f"{value:.4f}", "0.0"])


def _write_koniq_tables(out: Path, rows, ref_ids, seed: int) -> None:
    header = ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "MOS_zscore"]
    values = np.asarray([v for _, _, v in rows])
    zscores = (values - values.mean()) / values.std()
    order = np.random.default_rng(seed).permutation(len(ref_ids))
    n_train, n_val = round(0.64 * len(ref_ids)), round(0.18 * len(ref_ids))
    part = {ref_ids[i]: ("training" if k < n_train else "validation" if k < n_train + n_val else "test")
            for k, i in enumerate(order)}
    with (out / KONIQ_SCORES).open("w", newline="") as f, (out / KONIQ_SETS).open("w", newline="") as g:
        scores, sets = csv.writer(f), csv.writer(g)
        scores.writerow(header)
        sets.writerow(header + ["set"])
        for (name, ref_id, value), z in zip(rows, zscores):
            row = [name, 0, 0, 0, 0, 0, 0, f"{value:.4f}", "0.0", f"{z:.4f}"]
            scores.writerow(row)
            sets.writerow(row + [part[ref_id]])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="directory to write the set into")
    parser.add_argument("--kind", default="fr", choices=("fr", "nr"),
                        help="fr: KADID-10k layout (pairs); nr: KonIQ-10k layout (single images)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise distortions")
    parser.add_argument("--size", default=f"{WIDTH}x{HEIGHT}", help="WIDTHxHEIGHT of every image")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    out = build(args.out, args.kind, args.seed, size=size)
    n = sum(1 for _ in (out / ("images" if args.kind == "fr" else "512x384")).iterdir())
    print(f"wrote {n} images of the synthetic {args.kind.upper()} set ({len(DISTORTIONS)} KADID types x "
          f"{LEVELS} levels, synthetic labels) to {out} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()

assert all(k <= len(KADID_TYPES) for k in DISTORTIONS)
