"""Metrics where tools read them: TensorBoard event files and metrics.jsonl in the workdir (one
JSON object per row: {"step": N, "<namespace>/<name>": value, ...}). Only process 0 writes.

A resumed run re-runs the steps after its checkpoint, so on resume the rows past that step are
dropped from metrics.jsonl (rewritten whole, then renamed) and TensorBoard is told to purge its
events past it: every plot and table reads each step once.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax

from bpclip_jax.files import atomic_write, disk_full

METRICS_FILE = "metrics.jsonl"


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
        if self._tb is None:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(self.workdir), purge_step=self.purge_step)
        return self._tb

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if not self.active:
            return
        line = json.dumps({"step": step, **{k: float(v) for k, v in scalars.items()}}) + "\n"
        with disk_full(self.path, len(line)), self.path.open("a") as f:  # a cut line is skipped on read
            f.write(line)
        board = self._board()
        for key, value in scalars.items():
            board.add_scalar(key, float(value), step)
        board.flush()

    def replace(self, prefix: str, step: int, scalars: dict[str, float]) -> None:
        """Writes `scalars` as the only row whose keys start with `prefix` (a re-evaluation's test
        metrics replace the earlier ones)."""
        if self.active:
            self._rewrite(lambda row: not any(k.startswith(prefix) for k in row))
        self.write(step, scalars)
