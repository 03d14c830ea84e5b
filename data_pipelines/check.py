"""Decodes every file of a downloaded set once and reports what is wrong.

    python -m data_pipelines.check --dataset kadid10k --root /data/kadid10k

Checks: the score files parse and every listed image exists (the reader), each image decodes,
each distorted image has its reference's size, and how many images needed a conversion to 8-bit
RGB (grayscale, RGBA, palette, 16-bit: fine, but worth knowing). Exits 1 if anything is wrong.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from PIL import Image
from tqdm import tqdm

import data_pipelines
from data_pipelines.images import ImageError, read_rgb


def _inspect(path: str) -> tuple[str, tuple[int, ...] | None, str | None]:
    """(path, shape, problem) after decoding; the mode is reported for non-RGB files."""
    try:
        with Image.open(path) as image:
            mode = image.mode
        shape = read_rgb(path).shape
    except (ImageError, OSError) as err:
        return path, None, str(err)
    return path, shape, None if mode == "RGB" else f"mode {mode}"


def check(dataset: str, root: str, threads: int = 8) -> list[str]:
    """Problems found in the set (empty when all is well); prints a summary."""
    records = data_pipelines.load(dataset, root)  # missing files and bad score files raise here
    paths = sorted({p for r in records for p in (r.dist, r.ref) if p is not None})
    shapes, problems, modes = {}, [], Counter()
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
    print("  all files decode" if not problems else f"  {len(problems)} problems")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, choices=sorted(data_pipelines.READERS))
    parser.add_argument("--root", required=True, help="the directory the set was unpacked into")
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args(argv)
    try:
        return 1 if check(args.dataset, args.root, args.threads) else 0
    except (FileNotFoundError, ValueError) as err:
        print(f"{args.dataset}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
