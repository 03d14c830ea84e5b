"""data_pipelines.download against a local stand-in for the hub (tests/hub_stand_in.py, reached
through HF_ENDPOINT): fetched, verified, resumed after an interruption, corruption caught, unpacked
into pyiqa's layout and checked; offline or refused, one line that says how to place the files."""

import io
import pickle
import tarfile
from pathlib import Path

import pytest

import data_pipelines
from data_pipelines import download, pyiqa_layout
from data_pipelines.records import DataError
from tests import data_fixtures
from tests.hub_stand_in import StandInHub

ARCHIVE = "kadid10k.tgz"


def _tgz(folder: Path, top: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(folder, arcname=top)
    return buffer.getvalue()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """The hub's two repositories with a tiny KADID-10k: the archive (kadid10k/images/...), its
    meta info and split file, and another set's files that must not be fetched."""
    import huggingface_hub.constants

    datasets = tmp_path / "hub_side"
    data_fixtures.kadid_pyiqa(datasets)
    splits = {1: {"train": list(range(16)), "val": list(range(16, 20)), "test": []}}
    stand_in = StandInHub()
    stand_in.add(download.ARCHIVE_REPO, ARCHIVE, _tgz(datasets / "kadid10k", "kadid10k"), lfs=True)
    stand_in.add(download.ARCHIVE_REPO, "csiq.tgz", b"not this one", lfs=True)
    meta = (datasets / "meta_info" / "meta_info_KADID10kDataset.csv").read_bytes()
    stand_in.add(download.META_REPO, "meta_info_KADID10kDataset.csv", meta)
    stand_in.add(download.META_REPO, "kadid10k_seed123.pkl", pickle.dumps(splits), lfs=True)
    stand_in.add(download.META_REPO, "meta_info_CSIQDataset.csv", b"ref_name,dist_name,dmos\n")
    monkeypatch.setenv("HF_ENDPOINT", stand_in.url)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # conftest sets it
    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 4096)  # partial writes
    with stand_in:
        yield stand_in


def test_download_fetches_verifies_unpacks_and_checks(tmp_path, hub, capsys):
    root = tmp_path / "data" / "kadid10k"
    assert download.main(["kadid10k", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    source = "source: http://database.mmsp-kn.de/kadid-10k-database.html"
    assert out.index(source) < out.index("kadid10k: 20 records")
    assert "terms:" in out and "cite:   H. Lin, V. Hosu, D. Saupe" in out
    assert "all rows are valid and all files decode" in out
    assert sorted(p.name for p in (root / "meta_info").iterdir()) == [
        "kadid10k_seed123.pkl", "meta_info_KADID10kDataset.csv"]  # not the other set's files
    assert not (root / ".download" / ARCHIVE).exists()  # unpacked, then deleted
    records = data_pipelines.load("kadid10k", root)
    assert len(records) == 20 and records[0].dist == str(root / "images" / "I01_01_01.png")
    parts = pyiqa_layout.split_parts("kadid10k", root, root / "meta_info" / "kadid10k_seed123.pkl", 1)
    assert [len(parts[p]) for p in ("train", "val")] == [16, 4]
    assert download.main(["kadid10k", "--root", str(root), "--no-check"]) == 0  # in place: no fetch
    assert "nothing to download" in capsys.readouterr().out and len(hub.served(ARCHIVE)) == 1


def test_an_interrupted_download_resumes_where_it_stopped(tmp_path, hub, capsys):
    root = tmp_path / "kadid10k"
    size = len(hub.files[download.ARCHIVE_REPO][ARCHIVE][0])
    hub.cut_after[ARCHIVE] = size // 2  # the connection drops, and the retry finds the network down
    with pytest.raises(DataError) as err:
        download.download("kadid10k", root)
    assert "answered HTTP 503" in str(err.value) and "\n" not in str(err.value)
    (part,) = (root / ".download").glob(f"{ARCHIVE}.*.part")
    kept = part.stat().st_size
    assert 0 < kept <= size // 2
    assert not download.present("kadid10k", root)  # meta info is there, but the download is half done
    hub.down = False
    download.ensure("kadid10k", root)
    assert hub.served(ARCHIVE)[-1] == (f"bytes={kept}-", size - kept)  # only the rest was sent
    assert len(data_pipelines.load("kadid10k", root)) == 20
    assert f"resuming at {kept / 2**20:.1f}" in capsys.readouterr().out


def test_a_corrupted_download_is_caught_and_not_kept(tmp_path, hub):
    root = tmp_path / "kadid10k"
    hub.corrupt.add(ARCHIVE)
    with pytest.raises(DataError) as err:
        download.download("kadid10k", root)
    message = str(err.value)
    assert f"{ARCHIVE} from {hub.url}/datasets/{download.ARCHIVE_REPO}: sha256 " in message
    assert "differs from the hub's" in message and "twice; the copy was deleted" in message
    assert len(hub.served(ARCHIVE)) == 2  # fetched again once from the start
    assert not list((root / ".download").glob("*.part")) and not (root / "images").exists()


def test_a_corrupted_partial_file_is_fetched_again(tmp_path, hub):
    root = tmp_path / "kadid10k"
    data = hub.files[download.ARCHIVE_REPO][ARCHIVE][0]
    (file,) = download.Hub(hub.url).files(download.ARCHIVE_REPO, [ARCHIVE])
    part = root / ".download" / f"{ARCHIVE}.{file.digest[:12]}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * (len(data) // 3))  # left by an earlier run, but not the hub's bytes
    download.download("kadid10k", root, run_check=False)
    assert [r for r, _ in hub.served(ARCHIVE)] == [f"bytes={len(data) // 3}-", None]
    assert len(data_pipelines.load("kadid10k", root)) == 20


def test_offline_is_one_line_saying_how_to_place_the_files(tmp_path, hub, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    root = tmp_path / "kadid10k"
    assert download.main(["kadid10k", "--root", str(root)]) == 1
    with pytest.raises(DataError) as err:
        download.download("kadid10k", root)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"KADID-10k: could not reach {hub.url} (")
    assert "offline mode is enabled" in message
    assert f"place the official files by hand: {root}/dmos.csv and {root}/images/" in message
    assert f"meta_info_KADID10kDataset.csv in {root / 'meta_info'}" in message


def test_a_refusing_firewall_is_one_line_too(tmp_path, hub):
    hub.refuse = True
    with pytest.raises(DataError) as err:
        download.download("csiq", tmp_path / "csiq")
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"CSIQ: {hub.url} answered HTTP 403")
    assert "csiq.DMOS.xlsx" in message and "https://s2.smu.edu/~eclarson/csiq.html" in message


def test_a_set_the_hub_lacks_is_named(tmp_path, hub):
    with pytest.raises(DataError, match=rf"{hub.url}/datasets/{download.META_REPO} has no "
                                        r"meta_info_TID2013Dataset.csv at main"):
        download.download("tid2013", tmp_path / "tid2013")


def test_config_download_fetches_a_missing_set_before_loading(tmp_path, hub):
    from bpclip_jax.data import load_parts
    from configs import base

    config = base.get_config()
    config.data.root, config.data.download = str(tmp_path / "kadid10k"), True
    parts = load_parts(config.data)
    assert sum(len(p) for p in parts.values()) == 20 and len(hub.served(ARCHIVE)) == 1
    load_parts(config.data)  # present now: not fetched again
    assert len(hub.served(ARCHIVE)) == 1


def test_every_reader_has_a_source_and_terms():
    assert set(download.SOURCES) == set(data_pipelines.READERS) == set(pyiqa_layout.META_INFO)
    assert all(s.home.startswith("http") and s.terms and s.cite for s in download.SOURCES.values())
