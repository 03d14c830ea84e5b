"""Files written whole or not at all, and a full disk as one line.

`atomic_write` writes a temporary file beside the target and renames it into place: a kill at
any instant leaves the old file or the new one, never a part. When the disk fills (ENOSPC, or a
quota: EDQUOT) the temporary file is removed, the target is left as it was, and a `DiskFullError`
names the path, the bytes the write needed and the bytes free; once space is freed the same
command continues. `disk_full` turns any write's failure (orbax's checkpoint writer reports it as
a ValueError naming os_error_code 28) into that error.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bpclip_jax.errors import WorkdirError

FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(WorkdirError):
    """A write failed for lack of space; the message names the path, the bytes needed and free."""


def is_disk_full(err: BaseException) -> bool:
    """Whether `err` (or an exception it was raised from) is a write that found no space."""
    while err is not None:
        if isinstance(err, OSError) and err.errno in FULL:
            return True
        text = str(err)
        if "No space left on device" in text or "Disk quota exceeded" in text or "os_error_code='28'" in text:
            return True
        err = err.__cause__ or err.__context__
    return False


def free_bytes(path: str | Path) -> int:
    """Bytes free to this user on the filesystem that holds `path` (or its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def size(n: float) -> str:
    """'1.5 GB': bytes in decimal units."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} TB"


def disk_full_message(path: str | Path, needed: int) -> str:
    return (f"{path}: no space left on the device ({size(needed)} needed, {size(free_bytes(path))} free "
            f"there); nothing saved before was lost: free space (or choose another folder) and run the "
            f"same command again")


class _NoSpaceRecords(logging.Filter):
    """Drops a library's log records of a write that found no space: DiskFullError says it once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not is_disk_full(Exception(record.getMessage()))


@contextlib.contextmanager
def disk_full(path: str | Path, needed: int, cleanup: Callable[[], None] | None = None):
    """Turns a write in the block that fails for lack of space into a DiskFullError naming `path`,
    the bytes `needed` and those free at the failure, then runs `cleanup` (which removes what the
    failed write left). The writers' own log records of that failure (orbax logs each failed
    thread) are held back."""
    quiet = _NoSpaceRecords()
    loggers = [logging.getLogger(), logging.getLogger("absl")]
    for logger in loggers:
        logger.addFilter(quiet)
        for handler in logger.handlers:
            handler.addFilter(quiet)
    try:
        yield
    except Exception as err:
        if not is_disk_full(err):
            raise
        message = disk_full_message(path, needed)  # the bytes free at the failure
        if cleanup is not None:
            cleanup()
        raise DiskFullError(message) from None
    finally:
        for logger in loggers:
            logger.removeFilter(quiet)
            for handler in logger.handlers:
                handler.removeFilter(quiet)


class _NoSpaceTasks(logging.Filter):
    """Drops asyncio's 'Task exception was never retrieved' records of writes that found no space
    (the writer threads of a failed checkpoint, collected later): DiskFullError said it once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and is_disk_full(record.exc_info[1])) and not is_disk_full(
            Exception(record.getMessage()))


_NO_SPACE_TASKS = _NoSpaceTasks()
_STDERR_LOCK = threading.Lock()  # fd 2 is the process's: one redirection at a time


@contextlib.contextmanager
def quiet_writer_threads(settle_s: float = 1.0, limit_s: float = 20.0):
    """Holds back what a library's writer threads print to stderr in the block when the block fails
    for lack of space. orbax writes a checkpoint with many concurrent tensorstore operations; when
    one finds the disk full, the save fails at once while the others are still running, and each of
    them then prints a traceback (to a closed event loop: hundreds of them) and leaves an asyncio
    task whose failure is logged when it is collected. Here stderr (the file descriptor, which the
    threads' C callbacks write to) goes to an anonymous file during the block: on success, or any
    other failure, it is passed on unchanged; on a full disk the block's error is raised once the
    threads have gone quiet (no output for `settle_s`, at most `limit_s`) and their output is
    dropped. The price: what is printed during a save reaches stderr when the save ends (or never,
    if the process dies in it). Where stderr cannot be redirected, the block runs as it is."""
    with _STDERR_LOCK:
        buffer = saved = None
        try:
            sys.stderr.flush()
            buffer = _memory_file()
            saved = os.dup(2)
            os.dup2(buffer, 2)
        except (OSError, ValueError):
            for fd in (buffer, saved):
                if fd is not None:
                    os.close(fd)
            buffer = None
        if buffer is None:
            yield
            return
        failed = False
        try:
            yield
        except BaseException as err:
            failed = is_disk_full(err)
            if failed:
                _settle(buffer, settle_s, limit_s)
                logging.getLogger("asyncio").addFilter(_NO_SPACE_TASKS)  # once: filters are a set
            raise
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            try:
                if not failed:
                    _replay(buffer)
            finally:
                os.close(buffer)


def _replay(fd: int) -> None:
    """Writes the content of `fd` to stderr; a stderr that cannot take it (a closed pipe, a full
    disk under a log file) loses it rather than failing the save."""
    os.lseek(fd, 0, os.SEEK_SET)
    with contextlib.suppress(OSError):
        while chunk := os.read(fd, 1 << 16):
            while chunk:
                chunk = chunk[os.write(2, chunk):]


def _memory_file() -> int:
    """A file descriptor of an anonymous file: in memory where memfd_create works (Linux), else an
    unlinked temporary file (macOS)."""
    try:
        return os.memfd_create("stderr")
    except (AttributeError, OSError):
        import tempfile

        with tempfile.TemporaryFile() as f:
            return os.dup(f.fileno())


def _settle(fd: int, settle_s: float, limit_s: float) -> None:
    """Waits until nothing more is written to `fd` for `settle_s` (at most `limit_s`), collecting
    garbage so that the failed writers' tasks report now rather than at exit."""
    start = last_change = time.monotonic()
    size = os.fstat(fd).st_size
    while time.monotonic() - start < limit_s:
        time.sleep(0.1)
        gc.collect()
        sys.stderr.flush()
        now = os.fstat(fd).st_size
        if now != size:
            size, last_change = now, time.monotonic()
        elif time.monotonic() - last_change >= settle_s:
            return


def atomic_write(path: str | Path, content: str | bytes) -> Path:
    """Writes `content` to a temporary file beside `path`, then renames it to `path`. A full disk:
    a DiskFullError naming `path` and the content's size; `path` untouched, no temporary left."""
    path = Path(path)
    data = content.encode() if isinstance(content, str) else content
    tmp = path.with_name(f".{path.name}.tmp")

    def remove_tmp():
        tmp.unlink(missing_ok=True)

    with disk_full(path, len(data), remove_tmp):
        try:
            tmp.write_bytes(data)
        except BaseException:
            remove_tmp()
            raise
        tmp.replace(path)
    return path
