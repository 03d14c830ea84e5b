"""Random splits of a dataset by content (FR: a reference with its distortions), deterministic per seed."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from data_pipelines.records import Record

PART_NAMES = {1: ("all",), 2: ("train", "test"), 3: ("train", "val", "test")}


def split(records: Sequence[Record], ratios: Sequence[float], seed: int, *,
          by_content: bool = True) -> dict[str, list[Record]]:
    """Splits records into parts: ('train', 'test') for two ratios, ('train', 'val', 'test') for
    three, ('all',) for one (cross-dataset: a whole set as one part).

    by_content: contents (FR: the reference) are assigned whole, so no reference is in two parts;
    the shares are those of contents, which for FR sets (equal distortions per reference) are the
    shares of records. Otherwise records are assigned one by one. Deterministic given the seed;
    record order within a part is the order of `records`.
    """
    if len(ratios) not in PART_NAMES:
        raise ValueError(f"ratios must have 1, 2 or 3 entries, got {ratios}")
    if any(r <= 0 for r in ratios):
        raise ValueError(f"ratios must be positive, got {ratios}")
    keys = [r.content if by_content else i for i, r in enumerate(records)]
    groups = sorted(set(keys), key=str)
    order = np.random.default_rng(seed).permutation(len(groups))
    shares = np.cumsum(np.asarray(ratios, float) / sum(ratios))
    bounds = [0] + [int(round(s * len(groups))) for s in shares]
    part_of = {}
    for part, (lo, hi) in zip(PART_NAMES[len(ratios)], zip(bounds[:-1], bounds[1:])):
        for g in order[lo:hi]:
            part_of[groups[g]] = part
    parts: dict[str, list[Record]] = {name: [] for name in PART_NAMES[len(ratios)]}
    for key, record in zip(keys, records):
        parts[part_of[key]].append(record)
    return parts
