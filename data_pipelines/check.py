"""Reads every row and decodes every file of a downloaded set once, and lists everything wrong.

    python -m data_pipelines.check --dataset kadid10k --root /data/kadid10k

Lists every bad row of the score files (a score that is not a finite number in the set's range, a
row with too few fields, an image listed twice, a missing name; KonIQ-10k's split file too when it
is there), every missing image, every image that does not decode, every distorted image whose size
differs from its reference's, and counts the images that needed a conversion to 8-bit RGB
(grayscale, RGBA, palette, 16-bit: fine, but worth knowing). Exits 1 if anything is wrong.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image
from tqdm import tqdm

import data_pipelines
from data_pipelines import nr_sets
from data_pipelines.images import ImageError, read_rgb
from data_pipelines.records import DataError, Problems


def _inspect(path: str) -> tuple[str, tuple[int, ...] | None, str | None]:
    """(path, shape, problem) after decoding; the mode is reported for non-RGB files."""
    try:
        with Image.open(path) as image:
            mode = image.mode
        shape = read_rgb(path).shape
    except (ImageError, OSError) as err:
        return path, None, str(err)
    return path, shape, None if mode == "RGB" else f"mode {mode}"


def _read_rows(dataset: str, root: str, found: Problems):
    """The records of the good rows; every bad row and missing image goes to `found`."""
    records = data_pipelines.read(dataset, root, found)
    official = data_pipelines.layout(dataset, root) == "official"
    if dataset == "koniq10k" and official and (Path(root) / nr_sets.KONIQ_SETS).is_file():
        nr_sets.official_split(root, found, scored=records)
    return records


def check(dataset: str, root: str, threads: int = 8) -> list[str]:
    """Problems found in the set (empty when all is well); prints a summary and every problem.

    A file that cannot be read at all (a missing score file, a header without a needed column)
    raises DataError, as loading does.
    """
    found = Problems(dataset, root)
    records = _read_rows(dataset, root, found)
    problems = found.lines()
    paths = sorted({p for r in records for p in (r.dist, r.ref) if p is not None and os.path.isfile(p)})
    shapes, modes = {}, Counter()
    with ThreadPoolExecutor(threads) as pool:
        for path, shape, note in tqdm(pool.map(_inspect, paths), total=len(paths),
                                      desc=f"decoding {dataset}", unit="img"):
            if shape is None:
                problems.append(note)
            else:
                shapes[path] = shape
                if note:
                    modes[note] += 1
    for r in records:
        if r.ref is not None and r.dist in shapes and r.ref in shapes and shapes[r.dist] != shapes[r.ref]:
            problems.append(f"size mismatch: {r.dist} is {shapes[r.dist][:2]}, its reference "
                            f"{r.ref} is {shapes[r.ref][:2]}")
    print(f"{dataset}: {len(records)} records, {len(paths)} image files, "
          f"{len({r.content for r in records})} contents")
    for mode, n in sorted(modes.items()):
        print(f"  note: {n} files in {mode}, converted to 8-bit RGB when read")
    for p in problems:
        print(f"  PROBLEM: {p}")
    print("  all rows are valid and all files decode" if not problems else
          f"  {len(problems)} problem{'s' if len(problems) != 1 else ''}")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, choices=sorted(data_pipelines.READERS))
    parser.add_argument("--root", required=True, help="the directory the set was unpacked into")
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args(argv)
    try:
        return 1 if check(args.dataset, args.root, args.threads) else 0
    except (DataError, FileNotFoundError) as err:
        print(f"{args.dataset}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
