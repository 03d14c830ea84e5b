"""One training run per workdir: an exclusive lock that the OS releases when the process dies.

A second `main.py` on a workdir in use would write the same checkpoint steps and log rows as the
first; it is refused at once with the other process's pid, host and command. The lock is
`fcntl.flock` on WORKDIR/.lock, held by an open file: a killed run never leaves a stale lock
(the file may stay; only a live holder counts). Evaluation, prediction and export only read
verified checkpoints, which are renamed into place whole, so they take no lock.

The holder may remove the file as it releases it (a run that failed before its first step leaves
nothing behind): it unlinks it while still holding it, and a process that was waiting on the old
file sees that it no longer names the path and takes the lock anew.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

import jax

from bpclip_jax.errors import WorkdirError

LOCK_FILE = ".lock"


class Held:
    """The lock while it is held; `remove = True` unlinks its file on release."""

    def __init__(self, path: Path | None):
        self.path, self.remove = path, False


def _acquire(path: Path, workdir):
    """An open file holding the flock of `path`, whose inode is still the one `path` names."""
    while True:
        handle = path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(path)
            handle.close()
            raise WorkdirError(f"{workdir} is in use by another run ({holder}); wait for it to end, "
                               f"or use another --workdir") from None
        try:
            if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                return handle
        except FileNotFoundError:
            pass
        handle.close()  # its holder removed it as it let go: lock the file that is there now


@contextlib.contextmanager
def exclusive(workdir: str | Path):
    """Holds WORKDIR/.lock for the duration (process 0 of a multi-process run: the others share its
    workdir and follow it) and yields a `Held`; raises WorkdirError naming the holder when
    another process has it."""
    if jax.process_index() != 0:
        yield Held(None)
        return
    path = Path(workdir) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = _acquire(path, workdir)
    held = Held(path)
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                                 "command": " ".join(sys.argv)}) + "\n")
        handle.flush()
        yield held
    finally:
        if held.remove:
            path.unlink(missing_ok=True)
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def holder(workdir: str | Path) -> str | None:
    """Who holds the workdir's lock now ('pid N on host, started ...'), or None."""
    path = Path(workdir) / LOCK_FILE
    if not path.is_file():
        return None
    with path.open() as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _describe(path)
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def _describe(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return (f"pid {info['pid']} on {info['host']}, started {info['started']}: "
                f"{info['command']}")
    except (OSError, ValueError, KeyError):
        return "a process whose details could not be read"
