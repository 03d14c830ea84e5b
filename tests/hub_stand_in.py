"""A local stand-in for the Hugging Face hub, for the dataset downloads (data_pipelines.download) and
the exported models (bpclip_jax.hub): the routes huggingface_hub 2.4 uses, with faults a network
has. Point HF_ENDPOINT at its `url`.

    GET /api/datasets/<owner>/<name>/tree/<revision>[/<path>]   -> [{type, path, size, oid, lfs?}]
    GET /datasets/<owner>/<name>/resolve/<revision>/<path>      -> the bytes; 'Range: bytes=N-' -> 206
    HEAD/GET /<owner>/<name>/resolve/<revision>/<file>           -> a model repo's file at a revision

Dataset repos (`add`) have one revision: files are listed as the hub lists them, `oid` the git blob
sha1, and for LFS files `lfs.oid` the sha256 of the content. Model repos (`push`) keep every commit
and move a branch to the newest, and answer as the hub does: X-Repo-Commit and ETag headers, and
X-Error-Code RepoNotFound / RevisionNotFound / EntryNotFound on a 404. Faults, on the files of both:
`cut_after[path] = n` sends n bytes of the next GET of path and drops the connection, after which
`down` makes every fetch answer 503 until cleared; `corrupt` paths are served with one byte changed
(a dataset listing keeps the true hashes); `refuse` answers 403 to all.

    python -m tests.hub_stand_in --mib 256    # download throughput through data_pipelines.download
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_TREE = re.compile(r"^/api/datasets/([^/]+/[^/]+)/tree/[^/?]+(?:/[^?]*)?(?:\?.*)?$")
_DATASET_FILE = re.compile(r"^/datasets/([^/]+/[^/]+)/resolve/[^/]+/([^?]+)")
_MODEL_FILE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/([^?]+)")


class StandInHub:
    """Serves from `__enter__` to `__exit__`."""

    def __init__(self):
        self.files: dict[str, dict[str, tuple[bytes, bool]]] = {}   # dataset repo -> path -> (bytes, lfs)
        self.commits: dict[str, dict[str, dict[str, bytes]]] = {}   # model repo -> commit -> file -> bytes
        self.branches: dict[str, dict[str, str]] = {}               # model repo -> branch -> commit
        self.cut_after: dict[str, int] = {}
        self.corrupt: set[str] = set()
        self.down = False
        self.refuse = False
        self.requests: list[str] = []                               # every request's URL path
        self.log: list[tuple[str, str | None, int]] = []           # (path, Range header, bytes sent)
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                hub._answer(self)

            def do_HEAD(self):
                hub._answer(self, body=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add(self, repo: str, path: str, data: bytes, lfs: bool = False) -> None:
        """A file of dataset repo `repo`."""
        self.files.setdefault(repo, {})[path] = (data, lfs)

    def push(self, repo: str, folder: Path, branch: str = "main") -> str:
        """Commits every file of `folder` to model repo `repo` and moves `branch` to it; returns the
        commit."""
        files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
        commit = hashlib.sha1(repr(sorted((k, hashlib.sha1(v).hexdigest()) for k, v in files.items()))
                              .encode()).hexdigest()
        self.commits.setdefault(repo, {})[commit] = files
        self.branches.setdefault(repo, {})[branch] = commit
        return commit

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def served(self, path: str) -> list[tuple[str | None, int]]:
        """(Range header, bytes sent) of each fetch of `path`."""
        return [(r, n) for p, r, n in self.log if p == path]

    def _listing(self, repo: str) -> list[dict]:
        out = []
        for path, (data, lfs) in self.files.get(repo, {}).items():
            entry = {"type": "file", "path": path, "size": len(data),
                     "oid": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()}
            if lfs:
                sha256 = hashlib.sha256(data).hexdigest()
                entry["lfs"] = {"oid": sha256, "size": len(data), "pointerSize": 134}
            out.append(entry)
        return out

    def _send(self, handler, status: int, body: bytes, headers=(), send_body=True) -> None:
        handler.send_response(status)
        for key, value in (("Content-Length", str(len(body))), *headers):
            handler.send_header(key, value)
        handler.end_headers()
        if send_body:
            handler.wfile.write(body)

    def _answer(self, handler, body: bool = True) -> None:
        self.requests.append(handler.path)
        if self.refuse:
            return self._send(handler, 403, b'{"error": "blocked by the firewall"}', send_body=body)
        tree, dataset_file = _TREE.match(handler.path), _DATASET_FILE.match(handler.path)
        if tree:
            data = json.dumps(self._listing(tree.group(1))).encode()
            return self._send(handler, 200, data, [("Content-Type", "application/json")], body)
        if dataset_file:
            repo_files = self.files.get(dataset_file.group(1), {})
            if dataset_file.group(2) in repo_files:
                return self._file(handler, dataset_file.group(2), repo_files[dataset_file.group(2)][0], body)
            return self._send(handler, 404, b'{"error": "not found"}', send_body=body)
        model_file = _MODEL_FILE.match(handler.path)
        if model_file:
            return self._model_file(handler, *model_file.groups(), body)
        return self._send(handler, 404, b'{"error": "not found"}', send_body=body)

    def _model_file(self, handler, repo: str, revision: str, name: str, body: bool) -> None:
        if repo not in self.commits:
            return self._send(handler, 404, b"", [("X-Error-Code", "RepoNotFound")], body)
        commit = self.branches[repo].get(revision, revision)
        if commit not in self.commits[repo]:
            return self._send(handler, 404, b"", [("X-Error-Code", "RevisionNotFound")], body)
        data = self.commits[repo][commit].get(name)
        if data is None:
            missing = [("X-Error-Code", "EntryNotFound"), ("X-Repo-Commit", commit)]
            return self._send(handler, 404, b"", missing, body)
        self._file(handler, name, data, body, [("X-Repo-Commit", commit)])

    def _file(self, handler, path: str, data: bytes, body: bool, headers=()) -> None:
        if self.down:
            return self._send(handler, 503, b'{"error": "down"}', send_body=body)
        if path in self.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        asked = handler.headers.get("Range")
        start = int(re.match(r"bytes=(\d+)-", asked).group(1)) if asked else 0
        part = data[start:]
        status, headers = 200, [*headers, ("ETag", f'"{hashlib.sha256(data).hexdigest()}"')]
        if asked:
            status = 206
            headers.append(("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}"))
        cut = self.cut_after.pop(path, None) if body else None
        if cut is None:
            self.log.append((path, asked, len(part) if body else 0))
            return self._send(handler, status, part, headers, body)
        handler.send_response(status)
        handler.send_header("Content-Length", str(len(part)))
        handler.end_headers()
        handler.wfile.write(part[:cut])
        handler.wfile.flush()
        self.log.append((path, asked, cut))
        self.down = True  # the network is gone: the retry after the drop fails too
        handler.close_connection = True
        handler.connection.shutdown(2)


def _measure(mib: int) -> None:
    """Downloads an LFS archive of `mib` MiB through data_pipelines.download.Hub.fetch and prints MB/s
    (transfer alone, and with the sha256 verification)."""
    import os
    import tempfile
    import time

    os.environ.pop("HF_HUB_OFFLINE", None)
    from data_pipelines import download

    data = os.urandom(mib * 2**20)
    with StandInHub() as hub, tempfile.TemporaryDirectory() as tmp:
        hub.add(download.ARCHIVE_REPO, "big.tgz", data, lfs=True)
        source = download.Hub(hub.url)
        (file,) = source.files(download.ARCHIVE_REPO, ["big.tgz"])
        start = time.perf_counter()
        source._get(file, Path(tmp) / "big.part")
        transfer = time.perf_counter() - start
        (Path(tmp) / "big.part").unlink()
        start = time.perf_counter()
        source.fetch(file, Path(tmp) / "big.tgz", Path(tmp))
        total = time.perf_counter() - start
    print(f"{mib} MiB from a local stand-in hub: {mib * 2**20 / 1e6 / transfer:.0f} MB/s transfer, "
          f"{mib * 2**20 / 1e6 / total:.0f} MB/s with sha256 verification")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="download throughput against a local stand-in hub")
    parser.add_argument("--mib", type=int, default=256)
    _measure(parser.parse_args().mib)
