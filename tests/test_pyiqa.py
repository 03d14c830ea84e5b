"""pyiqa's layout (image folders + meta_info_*.csv) gives the records of the official files; pyiqa's
split files give its parts and never run code."""

import os
import pickle
from pathlib import Path

import pytest

import data_pipelines
from bpclip_jax.errors import UserError
from data_pipelines import pyiqa_layout
from data_pipelines.records import DataError
from tests import data_fixtures

NAMES = sorted(data_fixtures.PYIQA)


def _same_record(a, b):
    assert (a.content, a.distortion, a.dataset) == (b.content, b.distortion, b.dataset)
    assert a.mos == pytest.approx(b.mos, abs=1e-9) and a.score == pytest.approx(b.score, abs=1e-9)
    assert Path(a.dist).name.lower() == Path(b.dist).name.lower()
    assert (a.ref is None) == (b.ref is None)
    if a.ref is not None:
        assert Path(a.ref).name.lower() == Path(b.ref).name.lower()
    assert os.path.isfile(b.dist) and (b.ref is None or os.path.isfile(b.ref))


@pytest.mark.parametrize("name", NAMES)
def test_pyiqa_layout_gives_the_official_records(tmp_path, name):
    """The set folder of pyiqa's datasets/ (meta info in ../meta_info) loads as is, with the labels,
    scores, content ids and order of the official files."""
    official = data_pipelines.load(name, data_fixtures.OFFICIAL[name](tmp_path / "official"))
    root = data_fixtures.PYIQA[name](tmp_path / "datasets")
    assert data_pipelines.layout(name, root) == "pyiqa"
    records = data_pipelines.load(name, root)
    assert len(records) == len(official) > 0
    for a, b in zip(official, records):
        _same_record(a, b)


def test_meta_info_inside_the_set_folder_is_found(tmp_path):
    root = data_fixtures.kadid_pyiqa(tmp_path / "datasets")
    (tmp_path / "datasets" / "meta_info").rename(root / "meta_info")  # as `download` places it
    assert len(data_pipelines.load("kadid10k", root)) == 20


def test_official_files_win_when_both_layouts_are_there(tmp_path):
    root = data_fixtures.kadid_pyiqa(tmp_path / "datasets")
    data_fixtures.kadid(root, refs=2, per_ref=1)
    assert data_pipelines.layout("kadid10k", root) == "official"
    assert len(data_pipelines.load("kadid10k", root)) == 2


def test_pyiqa_rows_are_checked_like_official_ones(tmp_path):
    root = data_fixtures.kadid_pyiqa(tmp_path / "datasets")
    meta = tmp_path / "datasets" / "meta_info" / "meta_info_KADID10kDataset.csv"
    lines = meta.read_text().splitlines()
    lines[2] = lines[2].replace("2.80", "nan")
    lines.append(lines[5])
    meta.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as err:
        data_pipelines.load("kadid10k", root)
    assert str(err.value).startswith(f"{meta}: 2 bad rows; line 3: score 'nan' is not finite; line 22: "
                                     "'I02_01_01.png' again (first on line 6)")


@pytest.mark.parametrize("column", ["split", "official_split"])
def test_koniq_official_split_in_both_layouts(tmp_path, column):
    """The same parts from the authors' split file and from pyiqa's meta info (old 0/1/2 codes or
    names), with the score file's MOS 1..5, not the split file's 1..100 labels."""
    official = data_pipelines.official_split(data_fixtures.koniq(tmp_path / "official"))
    root = data_fixtures.koniq_pyiqa(tmp_path / "datasets", split_column=column)
    pyiqa = data_pipelines.official_split(root)
    assert {k: len(v) for k, v in official.items()} == {"train": 12, "val": 3, "test": 5}
    for part in official:
        for a, b in zip(official[part], pyiqa[part], strict=True):
            _same_record(a, b)
    assert all(1 <= r.mos <= 5 for part in official.values() for r in part)


def _pyiqa_splits(meta_refs: list[str], seed_refs: list[list[str]]) -> dict:
    """A split file as pyiqa's scripts write it: per split k, the rows whose reference is a training
    reference go to 'train', the others to 'val', 'test' is empty."""
    return {k + 1: {"train": [i for i, r in enumerate(meta_refs) if r in train],
                    "val": [i for i, r in enumerate(meta_refs) if r not in train], "test": []}
            for k, train in enumerate(seed_refs)}


def test_split_file_gives_pyiqa_parts_by_row(tmp_path):
    root = data_fixtures.kadid_pyiqa(tmp_path / "datasets")
    records = data_pipelines.load("kadid10k", root)
    trains = [["I01", "I02", "I03", "I04"], ["I02", "I03", "I04", "I05"]]
    splits = _pyiqa_splits([r.content for r in records], trains)
    path = tmp_path / "datasets" / "meta_info" / "kadid10k_seed123.pkl"
    path.write_bytes(pickle.dumps(splits))
    parts = pyiqa_layout.split_parts("kadid10k", root, path, 2)
    assert set(parts) == {"train", "val"}  # the empty 'test' is left out
    assert parts["val"] == [records[i] for i in splits[2]["val"]]
    assert {r.content for r in parts["val"]} == {"I01"}
    assert parts["train"] == [records[i] for i in splits[2]["train"]]


def test_clive_split_indices_count_after_the_seven_training_images(tmp_path):
    root = data_fixtures.clive_pyiqa(tmp_path / "datasets")
    path = tmp_path / "split.pkl"
    path.write_bytes(pickle.dumps({1: {"train": [1, 2, 3, 4, 5, 6, 7, 8], "val": [0, 9]}}))
    parts = pyiqa_layout.split_parts("clive", root, path, 1)
    assert [Path(r.dist).name for r in parts["val"]] == ["0.JPG", "9.JPG"]


def test_config_split_file_reaches_the_parts(tmp_path):
    from bpclip_jax.data import load_parts
    from configs import base

    root = data_fixtures.kadid_pyiqa(tmp_path / "datasets")
    path = tmp_path / "split.pkl"
    path.write_bytes(pickle.dumps({1: {"train": list(range(16)), "val": list(range(16, 20)), "test": []}}))
    config = base.get_config()
    config.data.root, config.data.split_file, config.data.split_index = str(root), str(path), 1
    config.data.test_parts = ("val",)
    parts = load_parts(config.data)
    assert [len(parts[p]) for p in ("train", "val")] == [16, 4] and "test" not in parts
    config.data.test_parts = ("test",)
    with pytest.raises(UserError, match=r"config names part 'test' .*the data has \['train', 'val'\]"):
        load_parts(config.data)


class _Payload:
    """Unpickling this with pickle.load runs os.mkdir(marker): what a hostile split file could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_split_file_that_would_run_code_is_refused_and_does_not_run(tmp_path):
    hostile = {1: {"train": [0, 1], "val": [_Payload(tmp_path / "ran")], "test": []}}
    path = tmp_path / "split.pkl"
    path.write_bytes(pickle.dumps(hostile))
    with pytest.raises(DataError, match=r"split.pkl: refused to load \w+\.mkdir"):
        pyiqa_layout.read_split_file(path)
    assert not (tmp_path / "ran").exists()
    pickle.loads(pickle.dumps({1: _Payload(tmp_path / "control")}))  # the payload is real: pickle runs it
    assert (tmp_path / "control").is_dir()


def test_split_file_with_objects_or_damage_is_a_data_error(tmp_path):
    import numpy as np

    path = tmp_path / "split.pkl"
    path.write_bytes(pickle.dumps({1: {"train": np.arange(3)}}))
    with pytest.raises(DataError, match="refused to load numpy"):
        pyiqa_layout.read_split_file(path)
    path.write_bytes(pickle.dumps({1: {"train": [1, 2, 3]}})[:-5])
    with pytest.raises(DataError, match="not a readable pyiqa split file"):
        pyiqa_layout.read_split_file(path)
    path.write_bytes(pickle.dumps({1: {"train": {1, 2}}}, protocol=4))  # a set needs no class at protocol 4
    with pytest.raises(DataError, match="holds a set"):
        pyiqa_layout.read_split_file(path)


@pytest.mark.parametrize("split, message", [
    ({1: {"train": [0]}}, r"no split 2; it holds \[1\]"),
    ({2: {"train": [0, 20]}}, r"split 2 part 'train': 20 is not a row of the 20 records"),
    ({2: {"train": [0, 1], "val": [1]}}, r"split 2: row 1 is in part 'train' and again in 'val'"),
    ({2: {"training": [0]}}, r"split 2 is not a dict with parts \['train', 'val', 'test'\]"),
])
def test_split_file_contents_are_checked(tmp_path, split, message):
    root = data_fixtures.kadid_pyiqa(tmp_path / "datasets")
    path = tmp_path / "split.pkl"
    path.write_bytes(pickle.dumps(split))
    with pytest.raises(DataError, match=message):
        pyiqa_layout.split_parts("kadid10k", root, path, 2)


def test_neither_layout_names_both_and_the_download(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        data_pipelines.load("csiq", tmp_path)
    message = str(err.value)
    assert "CSIQ score file not found" in message and "meta_info_CSIQDataset.csv" in message
    assert f"python -m data_pipelines.download csiq --root {tmp_path}" in message and "\n" not in message
