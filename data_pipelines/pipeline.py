"""grain pipelines: random paired crops for training, whole images grouped by shape for evaluation.

Batches are dicts of numpy arrays. Images stay uint8 on the host ([B,H,W,3], 0..255): a quarter of
the bytes of float32 to move to the device, where the step divides by 255.
  train: dist, ref (FR only), score [B] float32
  eval:  dist, ref (FR only), score [B], mask [B] bool (False on padding), index [B] int32 (record)
Pipeline code lives in this importable module so that grain's worker processes can unpickle it.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence

import grain
import numpy as np

from data_pipelines.images import image_size, read_reference, read_rgb
from data_pipelines.records import Record


def pad_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pads an image smaller than height x width by mirroring its edges (numpy 'symmetric'), split
    evenly between the two sides; larger dimensions are left as they are."""
    ph, pw = max(height - image.shape[0], 0), max(width - image.shape[1], 0)
    if not (ph or pw):
        return image
    return np.pad(image, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)), mode="symmetric")


def _check_sizes(record: Record, dist_hw, ref_hw) -> None:
    if tuple(dist_hw) != tuple(ref_hw):
        raise ValueError(f"distorted image {record.dist} is {dist_hw[1]}x{dist_hw[0]} but its reference "
                         f"{record.ref} is {ref_hw[1]}x{ref_hw[0]}")


def load_pair(record: Record) -> tuple[np.ndarray, np.ndarray | None]:
    """Decoded whole (dist, ref) of a record; ref is None for NR. Sizes must agree."""
    dist = read_rgb(record.dist)
    if record.ref is None:
        return dist, None
    ref = read_reference(record.ref)
    _check_sizes(record, dist.shape[:2], ref.shape[:2])
    return dist, ref


def random_window(height: int, width: int, size: int, rng: np.random.Generator, flips: bool,
                  vertical: bool = True):
    """(top, left, vertical flip, horizontal flip) of a random size x size crop. vertical=False
    (TOPIQ's recipe: horizontal flips only) draws the same numbers and never flips vertically."""
    top = int(rng.integers(0, max(height - size, 0) + 1))
    left = int(rng.integers(0, max(width - size, 0) + 1))
    flip_v, flip_h = bool(flips and rng.random() < 0.5), bool(flips and rng.random() < 0.5)
    return top, left, flip_v and vertical, flip_h


def _flip(x: np.ndarray, vertical: bool, horizontal: bool) -> np.ndarray:
    return x[::-1 if vertical else 1, ::-1 if horizontal else 1]  # a view: batching copies once


def load_crop(record: Record, size: int, rng: np.random.Generator, flips: bool = True,
              vertical: bool = True):
    """A random size x size crop at the SAME position in the distorted and reference images, then
    the same random vertical and horizontal flips on both. The distorted image is cropped before it
    is converted to numpy; images smaller than the crop are padded first (pad_to)."""
    height, width = image_size(record.dist)
    ref = None if record.ref is None else read_reference(record.ref)
    if ref is not None:
        _check_sizes(record, (height, width), ref.shape[:2])
    top, left, vertical, horizontal = random_window(height, width, size, rng, flips, vertical)
    if height >= size and width >= size:
        dist = read_rgb(record.dist, (left, top, left + size, top + size))
    else:
        dist = pad_to(read_rgb(record.dist), size, size)[top:top + size, left:left + size]
    if ref is not None:
        ref = pad_to(ref, size, size)[top:top + size, left:left + size]
        ref = _flip(ref, vertical, horizontal)
    return _flip(dist, vertical, horizontal), ref


@dataclasses.dataclass(frozen=True)
class TrainTransform(grain.transforms.RandomMap):
    """Record -> {'dist', ['ref'], 'score'}: decode, paired random crop, paired flips."""

    crop: int
    flips: bool = True
    vertical_flips: bool = True

    def random_map(self, record: Record, rng: np.random.Generator) -> dict[str, np.ndarray]:
        dist, ref = load_crop(record, self.crop, rng, self.flips, self.vertical_flips)
        example = {"dist": dist, "score": np.float32(record.score)}
        if ref is not None:
            example["ref"] = ref
        return example


class ProcessSlice(grain.MapDataset):
    """This process's share of a stream of global batches: element j is the global element
    (j // local) * global + index * local + j % local, so process `index` of `count` holds rows
    [index * local, (index + 1) * local) of every global batch, local = global // count."""

    def __init__(self, parent: grain.MapDataset, global_batch: int, index: int, count: int):
        super().__init__(parent)
        if global_batch % count:
            raise ValueError(f"the global batch of {global_batch} does not split over {count} processes")
        self._global, self._local, self._index = global_batch, global_batch // count, index

    def __len__(self) -> int:
        return len(self._parent) // self._global * self._local

    def __getitem__(self, j):
        if isinstance(j, slice):
            return self.slice(j)
        batch, row = divmod(j, self._local)
        return self._parent[batch * self._global + self._index * self._local + row]


def train_dataset(records: Sequence[Record], *, batch_size: int, crop: int, seed: int,
                  flips: bool = True, process: tuple[int, int] = (0, 1),
                  start_step: int = 0, vertical_flips: bool = True) -> grain.MapDataset:
    """An endless stream of training batches: reshuffled every epoch, with new crops every epoch.

    batch_size is the GLOBAL batch; process=(index, count) yields this process's rows of each
    global batch (batch_size // count of them). The stream is a function of the seed and the global
    position only: the shuffle is global, and each example's crop and flips are drawn from its
    position in the global stream, so the global batch of every step holds the same records, crops
    and flips whatever the number of processes, and `start_step` resumes at any step without an
    iterator state. Batches may span an epoch boundary (an epoch is len(records) // batch_size
    steps). Deterministic given the seed.
    """
    ds = grain.MapDataset.source(list(records))
    if len(ds) < batch_size:
        raise ValueError(f"{len(ds)} training records cannot fill one batch of {batch_size}")
    ds = ds.shuffle(seed=seed).repeat(None).random_map(TrainTransform(crop, flips, vertical_flips),
                                                      seed=seed + 1)
    ds = ds[start_step * batch_size:]
    index, count = process
    return ProcessSlice(ds, batch_size, index, count).batch(batch_size // count, drop_remainder=True)


def loader(dataset: grain.MapDataset, *, threads: int = 2, workers: int = 0,
           prefetch: int = 4) -> grain.DatasetIterator:
    """An iterator over a dataset with `threads` reader threads and, if `workers` > 0, that many
    worker processes. Its state (get_state/set_state) resumes the stream exactly."""
    ds = dataset.to_iter_dataset(grain.ReadOptions(num_threads=threads,
                                                   prefetch_buffer_size=prefetch))
    if workers > 0:
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
    return iter(ds)


def eval_batches(records: Sequence[Record], batch_size: int) -> list[list[int]]:
    """Record indices in batches of one image size each: sizes in first-seen order, records in
    their order within a size. Every record appears exactly once."""
    by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, record in enumerate(records):
        by_size[image_size(record.dist)].append(i)
    return [idx[i:i + batch_size] for idx in by_size.values() for i in range(0, len(idx), batch_size)]


@dataclasses.dataclass(frozen=True)
class EvalBatch(grain.transforms.Map):
    """Record indices -> one padded batch of whole images (no crop)."""

    records: tuple[Record, ...]
    batch_size: int

    def map(self, indices: list[int]) -> dict[str, np.ndarray]:
        pairs = [load_pair(self.records[i]) for i in indices]
        pad = self.batch_size - len(indices)
        batch = {"dist": np.stack([d for d, _ in pairs] + [np.zeros_like(pairs[0][0])] * pad)}
        if pairs[0][1] is not None:
            batch["ref"] = np.stack([r for _, r in pairs] + [np.zeros_like(pairs[0][1])] * pad)
        batch["score"] = np.asarray([self.records[i].score for i in indices] + [0.0] * pad, np.float32)
        batch["mask"] = np.arange(self.batch_size) < len(indices)
        batch["index"] = np.asarray(list(indices) + [-1] * pad, np.int32)
        return batch


def eval_dataset(records: Sequence[Record], batch_size: int = 1) -> grain.MapDataset:
    """Every record once, at full size, in a deterministic order, batches padded with `mask`."""
    return grain.MapDataset.source(eval_batches(records, batch_size)).map(
        EvalBatch(tuple(records), batch_size))
