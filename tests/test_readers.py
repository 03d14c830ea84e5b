"""The seven readers on fixtures in each set's official layout; the KonIQ split; missing files."""

import os
from pathlib import Path

import pytest

import data_pipelines
from data_pipelines.nr_sets import official_split
from tests import data_fixtures


def _check(records, n, dataset, fr):
    assert len(records) == n
    assert all(r.dataset == dataset for r in records)
    assert all(os.path.isfile(r.dist) for r in records)
    assert all((r.ref is not None and os.path.isfile(r.ref)) == fr for r in records)


def test_kadid10k(tmp_path):
    records = data_pipelines.load("kadid10k", data_fixtures.kadid(tmp_path))
    _check(records, 20, "kadid10k", fr=True)
    r = records[1]
    assert Path(r.dist).name == "I01_02_02.png" and Path(r.ref).name == "I01.png"
    assert r.content == "I01" and r.distortion == "lens_blur"
    assert r.mos == pytest.approx(2.8) and r.score == pytest.approx((2.8 - 1) / 4)


def test_tid2013_finds_files_regardless_of_case(tmp_path):
    records = data_pipelines.load("tid2013", data_fixtures.tid2013(tmp_path))
    _check(records, 6, "tid2013", fr=True)
    assert {Path(r.ref).name for r in records} == {"I01.BMP", "i02.bmp"}
    assert {r.content for r in records} == {"I01", "I02"}
    assert records[0].score == pytest.approx(records[0].mos / 9)


def test_live_drops_originals_and_flips_dmos(tmp_path):
    records = data_pipelines.load("live", data_fixtures.live(tmp_path))
    _check(records, 982 - 99, "live", fr=True)  # every 10th of 982 was an original
    assert not any(r.mos % 10 == 0 and r.mos < 100 and r.dist.endswith("img1.bmp") for r in records)
    worse, better = max(records, key=lambda r: r.mos), min(records, key=lambda r: r.mos)
    assert worse.score < better.score  # DMOS: lower is better, score: higher is better
    assert records[0].distortion == "jp2k" and Path(records[0].dist).name == "img2.bmp"
    assert Path(records[-1].dist).parent.name == "fastfading"


def test_csiq_reads_the_xlsx_and_flips_dmos(tmp_path):
    records = data_pipelines.load("csiq", data_fixtures.csiq(tmp_path))
    _check(records, 12, "csiq", fr=True)
    assert {r.content for r in records} == {"1600", "cactus"}
    assert {r.distortion for r in records} == {"awgn", "jpeg2000", "blur"}
    r = records[0]
    assert Path(r.dist).name == "1600.AWGN.1.png" and r.score == pytest.approx(1 - r.mos)


def test_koniq10k_and_its_official_split(tmp_path):
    root = data_fixtures.koniq(tmp_path)
    records = data_pipelines.load("koniq10k", root)
    _check(records, 20, "koniq10k", fr=False)
    assert records[5].content == "1005" and records[5].score == pytest.approx((records[5].mos - 1) / 4)
    parts = official_split(root)
    assert {k: len(v) for k, v in parts.items()} == {"train": 12, "val": 3, "test": 5}


def test_koniq_official_split_takes_its_labels_from_the_score_file(tmp_path):
    """The split file from the authors' GitHub has its MOS on 1..100; the labels are the score
    file's MOS 1..5, the same records load_koniq10k gives."""
    root = data_fixtures.koniq(tmp_path)
    by_name = {r.dist: r for r in data_pipelines.load("koniq10k", root)}
    parts = official_split(root)
    assert all(r == by_name[r.dist] for part in parts.values() for r in part)
    assert all(0 <= r.score <= 1 for part in parts.values() for r in part)


def test_clive_drops_the_seven_training_images(tmp_path):
    records = data_pipelines.load("clive", data_fixtures.clive(tmp_path))
    _check(records, 10, "clive", fr=False)
    assert records[0].mos == 70.0 and records[0].score == pytest.approx(0.7)


def test_spaq_resizes_once_to_shorter_side_448(tmp_path):
    from PIL import Image

    records = data_pipelines.load("spaq", data_fixtures.spaq(tmp_path))
    _check(records, 3, "spaq", fr=False)
    sizes = [Image.open(r.dist).size for r in records]
    assert sizes == [(448 * 600 // 500 + 1, 448), (448, 896), (448, 448)]  # (w, h)
    stamps = [os.stat(r.dist).st_mtime_ns for r in records]
    data_pipelines.load("spaq", tmp_path)
    assert [os.stat(r.dist).st_mtime_ns for r in records] == stamps  # cached, not redone


def test_missing_images_are_reported_at_load_time(tmp_path):
    root = data_fixtures.kadid(tmp_path)
    for name in ("I02_01_01.png", "I03_02_02.png"):
        (root / "images" / name).unlink()
    message = r"2 of the 25 images listed in .*dmos.csv are missing"
    with pytest.raises(FileNotFoundError, match=message) as err:
        data_pipelines.load("kadid10k", root)
    assert "I02_01_01.png" in str(err.value) and "I03_02_02.png" in str(err.value)


def test_missing_score_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="KonIQ-10k score file not found"):
        data_pipelines.load("koniq10k", tmp_path)
    with pytest.raises(ValueError, match="unknown dataset 'kadid'"):
        data_pipelines.load("kadid", tmp_path)


def test_every_reader_has_a_test():
    assert set(data_pipelines.READERS) == {"kadid10k", "tid2013", "live", "csiq", "koniq10k", "clive", "spaq"}
