"""Orbax checkpoints in WORKDIR/checkpoints: `latest/` (model, optimizer, step and the data
iterator, `max_to_keep` of them) and `best/` (the best by validation SRCC, kept apart).

Resume order (train.py): the workdir's own latest checkpoint, then `config.init_from` (its best,
else its latest: parameters and frozen statistics only), then the pretrained weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import grain
import jax
import orbax.checkpoint as ocp


class Checkpoints:
    def __init__(self, workdir: str | Path, max_to_keep: int = 2):
        root = Path(workdir).absolute() / "checkpoints"
        self.best_file = root / "best.json"
        self.latest = ocp.CheckpointManager(
            root / "latest", options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
            item_handlers={"state": ocp.StandardCheckpointHandler(),
                           "data": grain.checkpoint.CheckpointHandler()})
        self.best = ocp.CheckpointManager(
            root / "best", options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True),
            item_handlers={"state": ocp.StandardCheckpointHandler()})

    def save_latest(self, step: int, state, iterator) -> None:
        self.latest.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(iterator)))
        self.latest.wait_until_finished()

    def save_best(self, step: int, state, metrics: dict) -> None:
        self.best.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)), force=True)
        self.best.wait_until_finished()
        if jax.process_index() == 0:
            self.best_file.write_text(json.dumps({"step": step, **metrics}, indent=1))

    def best_metrics(self) -> dict | None:
        return json.loads(self.best_file.read_text()) if self.best_file.is_file() else None

    def restore_latest(self, abstract_state, iterator):
        """The latest state (the iterator is restored in place), or None when there is none."""
        step = self.latest.latest_step()
        if step is None:
            return None
        restored = self.latest.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=grain.checkpoint.CheckpointRestore(iterator)))
        return restored["state"]

    def restore_best(self, abstract_state):
        """The best state, else the latest (runs without validation), or None."""
        for manager in (self.best, self.latest):
            step = manager.latest_step()
            if step is not None:
                return manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state)))["state"]
        return None

    def close(self) -> None:
        self.latest.close()
        self.best.close()
