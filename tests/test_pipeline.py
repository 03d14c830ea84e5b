"""Splits, grain pipelines (crop alignment, flips, eval coverage, resumable state), bad input."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import data_pipelines
from data_pipelines import check, pipeline, synthetic
from data_pipelines.images import ImageError, read_rgb
from data_pipelines.records import Record
from tests import data_fixtures

# ---------------------------------------------------------------- splits


def _records(contents=50, per=4):
    return [Record(f"{c}_{k}.png", f"{c}.png", 1.0, 0.5, f"c{c:03d}") for c in range(contents)
            for k in range(per)]


def test_split_by_content_is_disjoint_deterministic_and_shared_as_asked():
    records = _records()
    parts = data_pipelines.split(records, (6, 2, 2), seed=3)
    assert list(parts) == ["train", "val", "test"]
    contents = {k: {r.content for r in v} for k, v in parts.items()}
    assert not (contents["train"] & contents["val"] or contents["train"] & contents["test"]
                or contents["val"] & contents["test"])
    assert [len(v) for v in parts.values()] == [120, 40, 40]
    assert sum(len(v) for v in parts.values()) == len(records)
    assert parts == data_pipelines.split(records, (6, 2, 2), seed=3)
    assert parts["test"] != data_pipelines.split(records, (6, 2, 2), seed=4)["test"]
    seeds = {tuple(r.content for r in data_pipelines.split(records, (6, 2, 2), s)["test"]) for s in range(10)}
    assert len(seeds) == 10  # ten seeds, ten different splits


def test_split_two_parts_one_part_and_by_record():
    records = _records(10, 3)
    two = data_pipelines.split(records, (8, 2), seed=0, by_content=False)
    assert list(two) == ["train", "test"] and [len(v) for v in two.values()] == [24, 6]
    assert data_pipelines.split(records, (1,), seed=0) == {"all": records}
    with pytest.raises(ValueError):
        data_pipelines.split(records, (1, 1, 1, 1), seed=0)


# ---------------------------------------------------------------- training crops


def _coordinate_image(h, w):
    """R = column, G = row, B = a constant: any misalignment or unpaired flip shows in R/G."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx % 256, yy % 256, np.full_like(xx, 77)], -1).astype(np.uint8)


@pytest.fixture
def coordinate_pair(tmp_path):
    ref = _coordinate_image(60, 90)
    dist = ref.copy()
    dist[..., 2] = 200  # a known change that leaves the coordinates alone
    Image.fromarray(ref).save(tmp_path / "ref.png")
    Image.fromarray(dist).save(tmp_path / "dist.png")
    return Record(str(tmp_path / "dist.png"), str(tmp_path / "ref.png"), 3.0, 0.5, "ref")


def test_crops_are_aligned_and_flipped_together(coordinate_pair):
    transform = pipeline.TrainTransform(crop=32)
    flips = set()
    for seed in range(40):
        out = transform.random_map(coordinate_pair, np.random.default_rng(seed))
        dist, ref = out["dist"], out["ref"]
        assert dist.shape == ref.shape == (32, 32, 3)
        np.testing.assert_array_equal(dist[..., :2], ref[..., :2])
        assert np.all(dist[..., 2] == 200) and np.all(ref[..., 2] == 77)
        flips.add((bool(dist[1, 0, 1] < dist[0, 0, 1]), bool(dist[0, 1, 0] < dist[0, 0, 0])))
    assert flips == {(False, False), (False, True), (True, False), (True, True)}


def test_identical_pair_gives_identical_crops(tmp_path):
    data_fixtures.image(tmp_path / "a.png", 0, size=(40, 50))
    record = Record(str(tmp_path / "a.png"), str(tmp_path / "a.png"), 1.0, 0.5, "a")
    out = pipeline.TrainTransform(crop=24).random_map(record, np.random.default_rng(0))
    np.testing.assert_array_equal(out["dist"], out["ref"])


def test_image_smaller_than_the_crop_is_mirror_padded(tmp_path):
    small = data_fixtures.image(tmp_path / "s.png", 0, size=(10, 40))
    record = Record(str(tmp_path / "s.png"), None, 1.0, 0.5, "s")
    out = pipeline.TrainTransform(crop=16, flips=False).random_map(record, np.random.default_rng(0))
    assert out["dist"].shape == (16, 16, 3) and "ref" not in out
    left = next(x for x in range(25) if np.array_equal(out["dist"][3:13], small[:, x:x + 16]))
    np.testing.assert_array_equal(out["dist"][:3], small[2::-1, left:left + 16])  # mirrored rows


def test_train_batches_are_deterministic_and_resume_exactly(tmp_path):
    records = data_pipelines.load("kadid10k", data_fixtures.kadid(tmp_path))
    ds = pipeline.train_dataset(records, batch_size=4, crop=16, seed=7)
    it = pipeline.loader(ds, threads=2)
    first = [next(it) for _ in range(3)]
    state = it.get_state()
    after = [next(it) for _ in range(7)]  # crosses the epoch boundary (20 records, batch 4)
    assert first[0]["dist"].shape == (4, 16, 16, 3) and first[0]["dist"].dtype == np.uint8
    assert set(first[0]) == {"dist", "ref", "score"}
    again = pipeline.loader(ds, threads=1)
    again.set_state(state)
    for a, b in zip(after, [next(again) for _ in range(7)]):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    fresh = pipeline.loader(pipeline.train_dataset(records, batch_size=4, crop=16, seed=7))
    np.testing.assert_array_equal(next(fresh)["dist"], first[0]["dist"])
    other = pipeline.loader(pipeline.train_dataset(records, batch_size=4, crop=16, seed=8))
    assert not np.array_equal(next(other)["dist"], first[0]["dist"])


def test_epochs_are_reshuffled_and_processes_split_each_global_batch(tmp_path):
    records = data_pipelines.load("kadid10k", data_fixtures.kadid(tmp_path))
    it = pipeline.loader(pipeline.train_dataset(records, batch_size=20, crop=8, seed=0))
    epoch1, epoch2 = next(it), next(it)
    assert sorted(epoch1["score"]) == sorted(epoch2["score"])
    assert not np.array_equal(epoch1["score"], epoch2["score"])
    # Two processes hold the two halves of the same global batches (same records, crops, flips),
    # from any start step.
    for start, whole in ((0, epoch1), (1, epoch2)):
        halves = [next(pipeline.loader(pipeline.train_dataset(
            records, batch_size=20, crop=8, seed=0, process=(i, 2), start_step=start))) for i in range(2)]
        for key in whole:
            np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), whole[key])
    with pytest.raises(ValueError, match="does not split over 3 processes"):
        pipeline.train_dataset(records, batch_size=20, crop=8, seed=0, process=(0, 3))


# ---------------------------------------------------------------- evaluation


def test_eval_keeps_every_record_once_grouped_by_shape(tmp_path):
    root = data_fixtures.kadid(tmp_path, refs=3, per_ref=3)
    for k in (1, 2):  # two distortions of I02 at another size (and their reference)
        data_fixtures.image(root / "images" / f"I02_{k:02d}_{k:02d}.png", k, size=(20, 28))
    data_fixtures.image(root / "images" / "I02.png", 9, size=(20, 28))
    (root / "images" / "I02_03_03.png").unlink()
    data_fixtures.image(root / "images" / "I02_03_03.png", 3, size=(20, 28))
    records = data_pipelines.load("kadid10k", root)
    batches = list(pipeline.eval_dataset(records, batch_size=4))
    seen = np.concatenate([b["index"][b["mask"]] for b in batches])
    assert sorted(seen) == list(range(len(records)))
    assert all(not b["mask"][i] or b["index"][i] >= 0 for b in batches for i in range(4))
    assert {b["dist"].shape[1:3] for b in batches} == {(24, 32), (20, 28)}
    for b in batches:
        for i in np.flatnonzero(b["mask"]):
            np.testing.assert_array_equal(b["dist"][i], read_rgb(records[b["index"][i]].dist))
            assert b["score"][i] == np.float32(records[b["index"][i]].score)
    assert len(batches) == 2 + 1  # six 24x32 records in two batches, three 20x28 in one


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "LA"])
def test_other_modes_become_8bit_rgb(tmp_path, mode):
    rgb = data_fixtures.image(tmp_path / "x.png", 0)
    if mode == "I;16":
        image = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)  # a 16-bit grayscale PNG
        expected = np.repeat(rgb[..., :1], 3, -1)
    else:
        image = Image.fromarray(rgb).convert(mode)
        expected = np.asarray(image.convert("RGB"))
    image.save(tmp_path / "y.png")
    out = read_rgb(str(tmp_path / "y.png"))
    assert out.dtype == np.uint8 and out.shape == (*rgb.shape[:2], 3)
    np.testing.assert_array_equal(out, expected)


def test_unreadable_and_truncated_files_are_named(tmp_path):
    data_fixtures.image(tmp_path / "ok.png", 0)
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "cut.png").write_bytes((tmp_path / "ok.png").read_bytes()[:300])
    for name in ("text.png", "cut.png"):
        with pytest.raises(ImageError, match=name):
            read_rgb(str(tmp_path / name))
    record = Record(str(tmp_path / "cut.png"), None, 1.0, 0.5, "cut")
    with pytest.raises(ImageError, match="cut.png"):
        pipeline.TrainTransform(crop=8).random_map(record, np.random.default_rng(0))


def test_pairs_of_different_sizes_name_both(tmp_path):
    data_fixtures.image(tmp_path / "d.png", 0, size=(20, 30))
    data_fixtures.image(tmp_path / "r.png", 0, size=(20, 31))
    record = Record(str(tmp_path / "d.png"), str(tmp_path / "r.png"), 1.0, 0.5, "r")
    for call in (lambda: pipeline.load_pair(record),
                 lambda: pipeline.TrainTransform(crop=8).random_map(record, np.random.default_rng(0))):
        with pytest.raises(ValueError, match=r"d.png is 30x20 but its reference .*r.png is 31x20"):
            call()


def test_check_command_reports_every_problem(tmp_path, capsys):
    root = data_fixtures.kadid(tmp_path, refs=2, per_ref=2)
    (root / "images" / "I01_02_02.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    data_fixtures.image(root / "images" / "I02_01_01.png", 1, size=(24, 30))
    Image.open(root / "images" / "I02.png").convert("L").save(root / "images" / "I02.png")
    assert check.main(["--dataset", "kadid10k", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "I01_02_02.png" in out and "size mismatch" in out and "I02_01_01.png" in out
    assert "1 files in mode L" in out and "2 problems" in out


# ---------------------------------------------------------------- synthetic sets


@pytest.mark.slow
def test_synthetic_fr_set_is_kadid_shaped_labelled_and_deterministic(tmp_path):
    a = synthetic.build(tmp_path / "a", "fr", seed=0, photos=2)
    records = data_pipelines.load("kadid10k", a)
    assert len(records) == 2 * len(synthetic.DISTORTIONS) * synthetic.LEVELS
    assert len({r.distortion for r in records}) == len(synthetic.DISTORTIONS) >= 12
    assert Image.open(records[0].dist).size == (512, 384)
    by_key = {}
    for r in records:  # label = 1 + 4 * the mean SSIM of the type and level over the photos
        key = tuple(int(x) for x in Path(r.dist).stem.split("_")[1:])
        by_key.setdefault(key, []).append((r.mos, synthetic.ssim(read_rgb(r.dist), read_rgb(r.ref))))
    for (kind, level), pairs in by_key.items():
        expected = 1 + 4 * np.mean([s for _, s in pairs])
        assert all(mos == pytest.approx(expected, abs=1e-4) for mos, _ in pairs), (kind, level)
        if level < synthetic.LEVELS:
            assert pairs[0][0] > by_key[(kind, level + 1)][0][0]  # stronger levels score lower
    assert synthetic.is_current(a)
    b = synthetic.build(tmp_path / "b", "fr", seed=0, photos=2)
    c = synthetic.build(tmp_path / "c", "fr", seed=1, photos=2)
    noisy = "images/I01_11_03.png"
    assert (a / noisy).read_bytes() == (b / noisy).read_bytes() != (c / noisy).read_bytes()
    for r in records[:: len(records) // 8]:  # every distortion changes the image
        assert not np.array_equal(read_rgb(r.dist), read_rgb(r.ref))


@pytest.mark.slow
def test_synthetic_nr_set_is_koniq_shaped(tmp_path):
    root = synthetic.build(tmp_path, "nr", seed=0, photos=3)
    records = data_pipelines.load("koniq10k", root)
    assert len(records) == 3 * len(synthetic.DISTORTIONS) * synthetic.LEVELS
    parts = data_pipelines.nr_sets.official_split(root)
    photos = {k: {Path(r.dist).name[:3] for r in v} for k, v in parts.items()}
    assert sum(len(v) for v in parts.values()) == len(records)
    assert not (photos["train"] & photos["test"])


def test_record_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        _records(1, 1)[0].score = 1.0


def test_worker_processes_give_the_same_batches_as_threads(tmp_path):
    records = data_pipelines.load("kadid10k", data_fixtures.kadid(tmp_path))
    ds = pipeline.train_dataset(records, batch_size=4, crop=16, seed=3)
    threads = pipeline.loader(ds, threads=2)
    workers = pipeline.loader(ds, threads=1, workers=2)
    for _ in range(4):
        a, b = next(threads), next(workers)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
