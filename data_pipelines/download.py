"""Fetches a benchmark from the Hugging Face dataset repositories pyiqa (IQA-PyTorch) uses.

    python -m data_pipelines.download kadid10k --root data/kadid10k

Before anything is fetched, the set's source, terms and citation are printed (SOURCES). Then, into
ROOT (through huggingface_hub, from HF_ENDPOINT if set):
  ROOT/meta_info/   the set's meta-info CSV and split files, from chaofengc/IQA-PyTorch-Datasets-metainfo
  ROOT/...          the set's archive (e.g. kadid10k.tgz) from chaofengc/IQA-PyTorch-Datasets, unpacked
so that ROOT is a set folder in pyiqa's layout (data_pipelines.pyiqa_layout reads it, and the split
files work with --config.data.split_file). Each file is
  resumable:  its bytes go to ROOT/.download/<file>.<hash>.part, which a rerun continues (HTTP range);
  verified:   against the hub's hash of it (sha256 for LFS files, the git blob sha1 for the others);
              a mismatch is fetched again from scratch once, then is an error;
and the archive is unpacked with tarfile's 'data' filter (no absolute paths, no links out of ROOT),
moved into place, and the set is checked with data_pipelines.check. A set already in ROOT (either
layout) is not fetched again. Offline or behind a firewall, one line says what could not be reached
and how to place the official files by hand.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import tarfile
from pathlib import Path

from data_pipelines import pyiqa_layout
from data_pipelines.records import TITLES, DataError

ARCHIVE_REPO = "chaofengc/IQA-PyTorch-Datasets"
META_REPO = "chaofengc/IQA-PyTorch-Datasets-metainfo"
WORK_DIR = ".download"
DONE_FILE = "done.json"


class DownloadError(DataError):
    """A download that could not be made or verified; the message is one line."""


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a set comes from and how it may be used."""

    archive: str     # the file in ARCHIVE_REPO
    splits: str      # pattern of its split files in META_REPO
    home: str        # the authors' page
    terms: str
    cite: str
    official: str    # the official files, placed by hand (ROOT = the --root directory)
    pyiqa: str       # the image folders of pyiqa's layout


_LIVE_TERMS = ("UT Austin's copyright notice: free to use, copy, modify and distribute for any "
               "purpose, provided the notice appears in all copies and LIVE is acknowledged in any "
               "publication that reports research using the database")
_AUTHORS_TERMS = "the authors' terms on the source page apply (not restated here): read them before use"

SOURCES = {
    "kadid10k": Source(
        "kadid10k.tgz", "kadid10k_*.pkl", "http://database.mmsp-kn.de/kadid-10k-database.html",
        _AUTHORS_TERMS, "H. Lin, V. Hosu, D. Saupe, KADID-10k: A Large-scale Artificially Distorted "
        "IQA Database, QoMEX 2019", "ROOT/dmos.csv and ROOT/images/ (I01.png, I01_01_01.png, ...)",
        "images/"),
    "tid2013": Source(
        "tid2013.tgz", "tid2013_*.pkl", "http://www.ponomarenko.info/tid2013.htm", _AUTHORS_TERMS,
        "N. Ponomarenko et al., Image database TID2013: Peculiarities, results and perspectives, "
        "Signal Processing: Image Communication 30, 2015",
        "ROOT/mos_with_names.txt, ROOT/distorted_images/ and ROOT/reference_images/",
        "distorted_images/ and reference_images/"),
    "live": Source(
        "live.tgz", "live_*.pkl", "https://live.ece.utexas.edu/research/quality/subjective.htm",
        _LIVE_TERMS, "H.R. Sheikh, M.F. Sabir, A.C. Bovik, A statistical evaluation of recent full "
        "reference image quality assessment algorithms, IEEE TIP 15(11), 2006",
        "ROOT/dmos.mat, ROOT/refnames_all.mat, ROOT/refimgs/ and ROOT/{jp2k,jpeg,wn,gblur,fastfading}/",
        "refimgs/ and jp2k/, jpeg/, wn/, gblur/, fastfading/"),
    "csiq": Source(
        "csiq.tgz", "csiq_*.pkl", "https://s2.smu.edu/~eclarson/csiq.html", _AUTHORS_TERMS,
        "E.C. Larson, D.M. Chandler, Most apparent distortion: full-reference image quality "
        "assessment and the role of strategy, J. Electronic Imaging 19(1), 2010",
        "ROOT/csiq.DMOS.xlsx, ROOT/src_imgs/ and ROOT/dst_imgs/<type>/", "src_imgs/ and dst_imgs/"),
    "koniq10k": Source(
        "koniq10k.tgz", "koniq10k_*.pkl", "http://database.mmsp-kn.de/koniq-10k-database.html",
        _AUTHORS_TERMS, "V. Hosu, H. Lin, T. Sziranyi, D. Saupe, KonIQ-10k: An ecologically valid "
        "database for deep learning of blind image quality assessment, IEEE TIP 29, 2020",
        "ROOT/koniq10k_scores_and_distributions.csv (and koniq10k_distributions_sets.csv for the "
        "official split) and ROOT/512x384/", "512x384/"),
    "clive": Source(
        "live_challenge.tgz", "livechallenge_*.pkl", "https://live.ece.utexas.edu/research/ChallengeDB/index.html",
        _LIVE_TERMS, "D. Ghadiyaram, A.C. Bovik, Massive online crowdsourced study of subjective and "
        "objective picture quality, IEEE TIP 25(1), 2016",
        "ROOT/Data/AllImages_release.mat, ROOT/Data/AllMOS_release.mat and ROOT/Images/",
        "the images in ROOT/ or ROOT/Images/"),
    "spaq": Source(
        "spaq.tgz", "spaq_*.pkl", "https://github.com/h4nwei/SPAQ", _AUTHORS_TERMS,
        "Y. Fang, H. Zhu, Y. Zeng, K. Ma, Z. Wang, Perceptual quality assessment of smartphone "
        "photography, CVPR 2020", "ROOT/Annotations/MOS and Image attribute scores.xlsx and ROOT/TestImage/",
        "TestImage/"),
}


def by_hand(name: str, root: Path) -> str:
    """How to place set `name` without this command, in one sentence."""
    source = SOURCES[name]
    layout = source.official.replace("ROOT", str(root))
    return (f"place the official files by hand: {layout}, from {source.home}; or pyiqa's layout: "
            f"{source.pyiqa} in {root} and {pyiqa_layout.META_INFO[name]} in {root / 'meta_info'}")


def print_terms(name: str, endpoint: str) -> None:
    source = SOURCES[name]
    print(f"{TITLES[name]} ({name})\n  source: {source.home}\n  terms:  {source.terms}\n"
          f"  cite:   {source.cite}\n  copy:   {endpoint}/datasets/{ARCHIVE_REPO} ({source.archive}), "
          "pyiqa's copy of the authors' release", flush=True)


def _file_hash(path: Path, algorithm: str) -> str:
    """sha256 of the bytes, or git's blob sha1 (sha1 of 'blob <size>\\0' + bytes) as the hub lists
    files kept outside LFS."""
    digest = hashlib.sha256() if algorithm == "sha256" else hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class HubFile:
    """A file of a hub repository as its listing gives it."""

    repo: str
    path: str
    size: int
    digest: str
    algorithm: str   # 'sha256' (LFS) or 'git-sha1'

    @classmethod
    def from_listing(cls, repo: str, entry) -> HubFile:
        if entry.lfs is not None:
            return cls(repo, entry.path, entry.lfs.size, entry.lfs.sha256, "sha256")
        return cls(repo, entry.path, entry.size, entry.blob_id, "git-sha1")


class Hub:
    """The two dataset repositories at one endpoint and revision."""

    def __init__(self, endpoint: str, revision: str = "main"):
        from huggingface_hub import HfApi

        self.endpoint, self.revision = endpoint.rstrip("/"), revision
        self.api = HfApi(endpoint=self.endpoint)

    def files(self, repo: str, patterns: list[str]) -> list[HubFile]:
        """The repository's files whose name matches one of the patterns, each pattern at least once."""
        from fnmatch import fnmatch

        from huggingface_hub.hf_api import RepoFile

        listing = [HubFile.from_listing(repo, e) for e in self.api.list_repo_tree(
            repo, recursive=True, repo_type="dataset", revision=self.revision) if isinstance(e, RepoFile)]
        found = []
        for pattern in patterns:
            hits = [f for f in listing if fnmatch(Path(f.path).name, pattern)]
            if not hits and not any(c in pattern for c in "*?["):
                raise DownloadError(f"{self.endpoint}/datasets/{repo} has no {pattern} at {self.revision}")
            found += hits
        return found

    def fetch(self, file: HubFile, dest: Path, work: Path) -> Path:
        """dest holding the file's verified bytes; resumes a .part left in `work` by an earlier run."""
        if dest.is_file() and dest.stat().st_size == file.size and _file_hash(dest, file.algorithm) == \
                file.digest:
            return dest
        part = work / f"{Path(file.path).name}.{file.digest[:12]}.part"
        for attempt in (1, 2):
            self._get(file, part)
            got = _file_hash(part, file.algorithm)
            if got == file.digest:
                dest.parent.mkdir(parents=True, exist_ok=True)
                part.replace(dest)
                return dest
            part.unlink()
            if attempt == 1:
                print(f"{file.path}: {file.algorithm} {got[:12]}... differs from the hub's "
                      f"{file.digest[:12]}...; fetching it again from the start", flush=True)
        raise DownloadError(f"{file.path} from {self.endpoint}/datasets/{file.repo}: {file.algorithm} {got} "
                            f"differs from the hub's {file.digest} twice; the copy was deleted")

    def _get(self, file: HubFile, part: Path) -> None:
        from huggingface_hub import hf_hub_url
        from huggingface_hub.file_download import http_get
        from huggingface_hub.utils import build_hf_headers

        part.parent.mkdir(parents=True, exist_ok=True)
        have = part.stat().st_size if part.is_file() else 0
        if have > file.size:
            part.unlink()
            have = 0
        if have:
            print(f"{file.path}: resuming at {have / 2**20:.1f} of {file.size / 2**20:.1f} MiB", flush=True)
        url = hf_hub_url(file.repo, file.path, repo_type="dataset", revision=self.revision,
                         endpoint=self.endpoint)
        with part.open("ab") as out:
            http_get(url, out, resume_size=have, headers=build_hf_headers(), expected_size=file.size,
                     displayed_filename=Path(file.path).name)


def unpack(archive: Path, root: Path, work: Path) -> None:
    """Extracts the archive into work/unpack, then moves its set folder's contents into root (a
    lone top-level folder is the set folder), replacing what an interrupted run left there."""
    from tqdm import tqdm

    staging = work / "unpack"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            with tqdm(total=sum(m.size for m in members), unit="B", unit_scale=True,
                      desc=f"unpacking {archive.name}") as bar:
                for member in members:
                    tar.extract(member, staging, filter="data")
                    bar.update(member.size)
    except (tarfile.TarError, EOFError) as err:
        raise DownloadError(f"{archive}: cannot unpack it ({err})") from None
    top = list(staging.iterdir())
    folder = top[0] if len(top) == 1 and top[0].is_dir() else staging
    for item in folder.iterdir():
        target = root / item.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        item.rename(target)
    shutil.rmtree(staging)


def download(name: str, root: str | Path, *, revision: str = "main", keep_archive: bool = False,
             run_check: bool = True, endpoint: str | None = None) -> Path:
    """Fetches, verifies, unpacks and checks set `name` into `root` (see the module docstring).

    A set already in root is not fetched again. Raises DownloadError (one line) when the hub cannot
    be reached or a file cannot be verified, DataError when the unpacked set fails the check.
    """
    import data_pipelines

    if name not in SOURCES:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(SOURCES)}")
    root = Path(root).expanduser()
    if present(name, root):
        print(f"{TITLES[name]} is already in {root} ({data_pipelines.layout(name, root)} layout); "
              "nothing to download")
    else:
        endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or _default_endpoint()).rstrip("/")
        print_terms(name, endpoint)
        _fetch_and_unpack(name, root, root / WORK_DIR, Hub(endpoint, revision), keep_archive)
    if run_check:
        _check(name, root)
    return root


def _default_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def present(name: str, root: str | Path) -> bool:
    """Whether set `name` is in root (either layout) and no download into root is half done."""
    import data_pipelines

    work = Path(root).expanduser() / WORK_DIR
    in_progress = work.is_dir() and not (work / DONE_FILE).is_file()
    return bool(data_pipelines.layout(name, root)) and not in_progress


def _fetch_and_unpack(name: str, root: Path, work: Path, hub: Hub, keep_archive: bool) -> None:
    """The meta info, then the archive, then the unpacking; `work` exists throughout, so that an
    interrupted run is seen as one (present() is False) and resumed."""
    source = SOURCES[name]
    try:
        work.mkdir(parents=True, exist_ok=True)
        (work / DONE_FILE).unlink(missing_ok=True)
        metas = hub.files(META_REPO, [pyiqa_layout.META_INFO[name], source.splits])
        (archive_file,) = hub.files(ARCHIVE_REPO, [source.archive])
        for meta in metas:
            hub.fetch(meta, root / "meta_info" / Path(meta.path).name, work)
        archive = hub.fetch(archive_file, work / source.archive, work)
        unpack(archive, root, work)
        (work / DONE_FILE).write_text(json.dumps({"dataset": name, "archive": source.archive,
                                                  archive_file.algorithm: archive_file.digest}))
        if not keep_archive:
            archive.unlink()
    except DataError:
        raise
    except Exception as err:
        raise _download_error(err, name, root, hub) from None


def _download_error(err: Exception, name: str, root: Path, hub: Hub) -> Exception:
    """One line for what went wrong while talking to the hub; errors of other kinds are bugs and
    keep their traceback."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
    if isinstance(err, HfHubHTTPError):
        status = err.response.status_code if err.response is not None else "?"
        return DownloadError(f"{TITLES[name]}: {hub.endpoint} answered HTTP {status} ({reason}); "
                             f"{by_hand(name, root)}")
    if isinstance(err, ConnectionError | httpx2.TransportError):
        return DownloadError(f"{TITLES[name]}: could not reach {hub.endpoint} ({reason}); "
                             f"{by_hand(name, root)}")
    if isinstance(err, OSError):
        return DownloadError(f"{TITLES[name]}: {reason}")
    return err


def _check(name: str, root: Path) -> None:
    from data_pipelines import check

    problems = check.check(name, str(root))
    if problems:
        raise DataError(f"{root}: the {TITLES[name]} files are in place but {len(problems)} problems "
                        f"were found (listed above); `python -m data_pipelines.check --dataset {name} "
                        f"--root {root}` lists them again")


def ensure(name: str, root: str | Path) -> None:
    """Downloads set `name` into root unless it is already there (either layout)."""
    if not present(name, root):
        download(name, root)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=sorted(SOURCES))
    parser.add_argument("--root", required=True, help="the set's folder (created)")
    parser.add_argument("--revision", default="main", help="branch, tag or commit of the hub repositories")
    parser.add_argument("--keep-archive", action="store_true", help=f"keep the archive in ROOT/{WORK_DIR}/")
    parser.add_argument("--no-check", action="store_true", help="skip data_pipelines.check after unpacking")
    args = parser.parse_args(argv)
    try:
        download(args.name, args.root, revision=args.revision, keep_archive=args.keep_archive,
                 run_check=not args.no_check)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
