"""Metrics where tools read them: TensorBoard event files and metrics.jsonl in the workdir, and
config.json beside them. Only process 0 writes."""

from __future__ import annotations

import json
from pathlib import Path

import jax


class MetricWriter:
    def __init__(self, workdir: str | Path):
        self.workdir = Path(workdir)
        self.active = jax.process_index() == 0
        self._tb = None
        if self.active:
            self.workdir.mkdir(parents=True, exist_ok=True)

    def write_config(self, config) -> None:
        if self.active:
            (self.workdir / "config.json").write_text(config.to_json_best_effort(indent=1) + "\n")

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if not self.active:
            return
        if self._tb is None:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(self.workdir))
        with (self.workdir / "metrics.jsonl").open("a") as f:
            f.write(json.dumps({"step": step, **{k: float(v) for k, v in scalars.items()}}) + "\n")
        for key, value in scalars.items():
            self._tb.add_scalar(key, float(value), step)
        self._tb.flush()
