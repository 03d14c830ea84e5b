"""Metrics where tools read them: TensorBoard event files and metrics.jsonl in the workdir (one
JSON object per row: {"step": N, "<namespace>/<name>": value, ...}). Only process 0 writes.

A resumed run re-runs the steps after its checkpoint, so on resume the rows past that step are
dropped from metrics.jsonl (rewritten whole, then renamed) and TensorBoard is told to purge its
events past it: every plot and table reads each step once.

Events are written in the training loop's own thread (tensorboardX's EventsWriter, not its
queued SummaryWriter): a write that fails, e.g. on a full disk, raises here as a DiskFullError;
in SummaryWriter's thread it would end that thread and leave the next flush waiting for ever.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
import time
from pathlib import Path

import jax

from bpclip_jax.files import atomic_write, disk_full

METRICS_FILE = "metrics.jsonl"


@contextlib.contextmanager
def _without_torch():
    """tensorboardX imports torch when it is installed (to accept torch tensors, which these
    scalars never are): 1.2 s and some 300 MB of libraries at a run's first log row, on Colab and in
    any environment that has torch. Importing tensorboardX inside this block makes its
    `import torch` fail, as it would without torch, which it handles; torch stays importable."""
    if "torch" in sys.modules or "tensorboardX" in sys.modules:
        yield
        return
    sys.modules["torch"] = None  # `import torch` raises ImportError while this holds
    try:
        yield
    finally:
        if sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]


@functools.cache
def _tensorboardx():
    """(EventsWriter, Event, SessionLog, scalar) of tensorboardX, imported once, without torch."""
    with _without_torch():
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto.event_pb2 import Event, SessionLog
        from tensorboardX.summary import scalar
    return EventsWriter, Event, SessionLog, scalar


class MetricWriter:
    def __init__(self, workdir: str | Path, resume_step: int | None = None):
        """resume_step: the step a (re)started training run continues from, 0 for a new one: rows
        past it are dropped. None (evaluation) keeps every row."""
        self.workdir = Path(workdir)
        self.path = self.workdir / METRICS_FILE
        self.active = jax.process_index() == 0
        self.purge_step = None if resume_step is None else resume_step + 1
        self._tb = None
        if self.active:
            self.workdir.mkdir(parents=True, exist_ok=True)
            if resume_step is not None:
                self._rewrite(lambda row: row["step"] <= resume_step)

    def _rows(self) -> list[dict]:
        if not self.path.is_file():
            return []
        rows = []
        for line in self.path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a kill mid-write: it said nothing whole
                continue
        return rows

    def _rewrite(self, keep) -> None:
        rows = [r for r in self._rows() if isinstance(r, dict) and "step" in r and keep(r)]
        atomic_write(self.path, "".join(json.dumps(r) + "\n" for r in rows))

    def _board(self):
        """The events file, opened at the first write, with TensorBoard's purge marker first."""
        if self._tb is None:
            EventsWriter, Event, SessionLog, _ = _tensorboardx()
            with disk_full(self.workdir / "events.out.tfevents.*", 256):
                self._tb = EventsWriter(str(self.workdir / "events"))
                if self.purge_step is not None:
                    self._tb.write_event(Event(step=self.purge_step, file_version="brain.Event:2"))
                    self._tb.write_event(Event(step=self.purge_step,
                                               session_log=SessionLog(status=SessionLog.START)))
                self._tb.flush()
        return self._tb

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if not self.active:
            return
        _, Event, _, scalar = _tensorboardx()
        line = json.dumps({"step": step, **{k: float(v) for k, v in scalars.items()}}) + "\n"
        with disk_full(self.path, len(line)), self.path.open("a") as f:  # a cut line is skipped on read
            f.write(line)
        board = self._board()
        with disk_full(board._file_name, 64 * len(scalars)):
            for key, value in scalars.items():
                board.write_event(Event(wall_time=time.time(), step=step, summary=scalar(key, float(value))))
            board.flush()

    def replace(self, prefix: str, step: int, scalars: dict[str, float]) -> None:
        """Writes `scalars` as the only row whose keys start with `prefix` (a re-evaluation's test
        metrics replace the earlier ones)."""
        if self.active:
            self._rewrite(lambda row: not any(k.startswith(prefix) for k in row))
        self.write(step, scalars)
