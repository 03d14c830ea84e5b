"""Checkpoints in WORKDIR/checkpoints that a kill, a full disk or a flipped byte cannot turn into a
wrong number.

    frozen/0/        what training never changes (BatchNorm statistics, the text features, a frozen
                     backbone), written once
    latest/<step>/   trained parameters, optimizer state and the run's record (validation history
                     and the selected step), `max_to_keep` of them
    best/<step>/     the selected parameters (no optimizer state: nothing resumes from them)
    best.json        a readable copy of the selection; rebuilt from the checkpoints when damaged
    corrupt/         step folders that failed verification, moved aside (never deleted)

Every item is written through orbax (a temporary folder renamed when complete) with a `meta` item
holding a CRC-32 of every array. A restore recomputes them: a step that does not read back
identical, or holds a non-finite value, is reported with its path and moved to corrupt/, and the
restore falls back to the previous step; only when none is left does it stop, naming the folders.

The record in the newest `latest` step is the run's truth: the best step is what it names. At an
epoch's end the trainer validates, saves `best` if improved, then `latest` (with the record), and
only then removes best steps the record no longer names, so a kill at any instant leaves a record
whose best checkpoint exists.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import zlib
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from bpclip_jax.errors import WorkdirError
from bpclip_jax.files import (
    DiskFullError,
    atomic_write,
    disk_full,
    disk_full_message,
    free_bytes,
    quiet_writer_threads,
)

log = logging.getLogger(__name__)


class CheckpointError(WorkdirError):
    """No usable checkpoint is left where one was expected; the message names the folders."""


class ModelMismatchError(CheckpointError):
    """A checkpoint holds another model's arrays: a config that differs from the run's, not damage
    (nothing is moved aside)."""


def checksums(tree) -> dict[str, int]:
    """{path: CRC-32 of the array's bytes} of every leaf (host copies: one transfer per save)."""
    leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]
    return {jax.tree_util.keystr(path): zlib.crc32(np.ascontiguousarray(leaf).view(np.uint8))
            for path, leaf in leaves}


def all_finite(tree) -> bool:
    return all(bool(np.all(np.isfinite(x))) for x in jax.tree.leaves(jax.device_get(tree))
               if np.issubdtype(np.asarray(x).dtype, np.inexact))


def verify(tree, meta: dict, where: Path) -> None:
    """Raises ValueError naming the first array whose bytes differ from those saved at `where`."""
    expected = meta.get("checksums")
    if not isinstance(expected, dict):
        raise ValueError(f"{where}: its meta item has no checksums")
    actual = checksums(tree)
    if set(actual) != set(expected):
        missing, extra = sorted(set(expected) - set(actual)), sorted(set(actual) - set(expected))
        raise ValueError(f"{where}: arrays differ from those saved (missing {missing[:3]}, "
                         f"extra {extra[:3]})")
    for key, crc in actual.items():
        if crc != expected[key]:
            raise ValueError(f"{where}: {key} does not read back as saved (checksum mismatch)")
    if not all_finite(tree):
        raise ValueError(f"{where}: holds non-finite values")


def _abstract(tree):
    """ShapeDtypeStructs of a tree's arrays, with their sharding: a restore lands where they are
    (replicated over every process's devices in a multi-process run)."""
    def spec(x):
        if not hasattr(x, "shape"):
            return x
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))

    return jax.tree.map(spec, tree)


class _UncompressedStateHandler(ocp.StandardCheckpointHandler):
    """orbax's StandardCheckpointHandler, writing arrays without zstd. Weights and Adam's moments
    are float noise to a compressor: zstd saved 7.5% of a 400 MB state for 2.5 times the CPU time
    of the save (0.64 against 0.26 CPU-s; benchmarks/RESULTS.md), which a run on shared cores waits
    for at every epoch. Reading is unchanged: each array's metadata names its codec, so compressed
    checkpoints of earlier releases restore as before. orbax 0.12 exposes the switch only on the
    PyTree handler that the standard one wraps, so the wrapped handler is replaced;
    tests/test_faults.py checks that saved arrays are stored raw (an orbax that moves this fails
    there, not silently)."""

    def __init__(self):
        super().__init__()
        self._impl = ocp.PyTreeCheckpointHandler(use_compression=False)


@ocp.args.register_with_handler(_UncompressedStateHandler, for_save=True)
class _StateSave(ocp.args.StandardSave):
    """StandardSave, routed to _UncompressedStateHandler (orbax finds an item's handler by its
    args' type)."""


@ocp.args.register_with_handler(_UncompressedStateHandler, for_restore=True)
class _StateRestore(ocp.args.StandardRestore):
    """StandardRestore, routed to _UncompressedStateHandler."""


def _manager(directory: Path, max_to_keep: int | None, writer: bool) -> ocp.CheckpointManager:
    """A reader (evaluation, export, predict) changes nothing on disk: no folder created, and no
    clean-up of temporary folders, which may be a training run's step being written."""
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=writer, read_only=not writer,
                                           cleanup_tmp_directories=writer,
                                           enable_async_checkpointing=False)
    return ocp.CheckpointManager(directory, options=options,
                                 item_handlers={"state": _UncompressedStateHandler(),
                                                "meta": ocp.JsonCheckpointHandler()})


class Checkpoints:
    """The checkpoints of one workdir. `abstract` arguments are trees of arrays (or of
    ShapeDtypeStructs) of the shapes to restore."""

    def __init__(self, workdir: str | Path, max_to_keep: int = 2, *, create: bool = True):
        """create=False (evaluation, export, predict) reads what exists and changes nothing: no
        folder is created and a bad step is reported, not moved aside (that is the training run's
        decision)."""
        self.root = Path(workdir).absolute() / "checkpoints"
        self.best_file = self.root / "best.json"
        self.writer = create
        if not create and not (self.root / "latest").is_dir():
            raise CheckpointError(f"{self.root.parent} holds no checkpoint; train first")
        folders = {name: self.root / name for name in ("latest", "best", "frozen")}
        self.latest = _manager(folders["latest"], max_to_keep, create)
        self.best = _manager(folders["best"], None, create)  # pruned by hand: see the module docstring
        self.frozen = _manager(folders["frozen"], 1, create)

    # ------------------------------------------------------------------ saving

    def _save(self, manager: ocp.CheckpointManager, step: int, tree, meta: dict) -> None:
        """One step, whole or not at all. A full disk: a DiskFullError names the folder, the bytes
        the step needs (its arrays' bytes, which are written uncompressed) and the bytes free. It is checked
        before the write starts (orbax's writer threads would each report the failure); a disk
        that fills during the write has the half-written step removed, the earlier ones kept."""
        if step in manager.all_steps():  # left by an attempt that was killed before its record
            manager.delete(step)
        meta = {**meta, "step": step, "checksums": checksums(tree)}
        where = Path(manager.directory) / str(step)
        needed = sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))

        def remove_partial():
            if jax.process_index() == 0:
                for partial in where.parent.glob(f"{step}.orbax-checkpoint-tmp*"):
                    shutil.rmtree(partial, ignore_errors=True)
            manager.reload()

        if free_bytes(where.parent) < needed:
            raise DiskFullError(disk_full_message(where, needed))
        with disk_full(where, needed, remove_partial), quiet_writer_threads():
            manager.save(step, args=ocp.args.Composite(state=_StateSave(tree),
                                                       meta=ocp.args.JsonSave(meta)), force=True)
            manager.wait_until_finished()

    def discard_unrecorded(self) -> None:
        """A run starting anew: best and frozen steps left without a latest record (a run killed
        before its first checkpoint) describe nothing; remove them. Refused when latest/ is empty
        because its steps were moved to corrupt/: that run is damaged, not new."""
        moved = sorted(p.name for p in (self.root / "corrupt").glob("latest-*"))
        if moved:
            raise CheckpointError(
                f"{self.latest.directory} is empty because its steps were unusable and moved to "
                f"{self.root / 'corrupt'} ({', '.join(moved)}); starting anew would discard the run's "
                f"best and frozen checkpoints. Restore a step from a backup, or delete {self.root} "
                f"to train from scratch")
        for manager in (self.best, self.frozen):
            for step in manager.all_steps():
                manager.delete(step)

    def save_frozen(self, frozen) -> None:
        """The parts training never changes; written once per run."""
        if self.frozen.latest_step() is None:
            self._save(self.frozen, 0, frozen, {})

    def save_latest(self, step: int, state, record: dict) -> None:
        """The resumable state (without `frozen`) and the run's record after `step`."""
        self._save(self.latest, step, state, {"record": record})
        keep = (record.get("best") or {}).get("step")
        for old in self.best.all_steps():
            if old != keep:
                self.best.delete(old)
        self.write_best_file(record)

    def save_best(self, step: int, params, metrics: dict) -> None:
        self._save(self.best, step, params, {"metrics": metrics})

    def write_best_file(self, record: dict) -> None:
        if jax.process_index() == 0 and record.get("best"):
            atomic_write(self.best_file, json.dumps(record["best"], indent=1) + "\n")

    # ------------------------------------------------------------------ restoring

    def _restore(self, manager: ocp.CheckpointManager, step: int, abstract, *,
                 part: bool = False) -> tuple[object, dict]:
        """(tree, meta) of one step, verified; raises on anything unreadable or altered. part=True:
        `abstract` is a part of the saved tree (a latest step's parameters, without its optimizer
        state), and only that part is read and verified."""
        where = Path(manager.directory) / str(step)
        if not (where / "state" / "_METADATA").is_file():  # orbax writes it with every state item
            raise ValueError(f"{where / 'state'} has no _METADATA: the write did not finish or a file "
                             f"was lost")
        meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        if not isinstance(meta, dict) or meta.get("step") != step:
            raise ValueError(f"{where}: its meta item does not describe step {step}")
        saved = set(meta.get("checksums") or {})
        wanted = {jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(abstract)[0]}
        if saved and (not wanted <= saved if part else saved != wanted):
            missing, extra = sorted(wanted - saved), sorted(saved - wanted)
            raise ModelMismatchError(
                f"{where} holds another model's arrays ({len(missing)} expected here are not in it, "
                f"e.g. {missing[:2]}; {len(extra)} in it are not expected, e.g. {extra[:2]}): the model "
                f"or train.freeze_backbone differs from the run's config.json")
        if part:
            state = _restore_part(where / "state", _abstract(abstract))
            if saved:  # the part is verified against its own arrays' checksums
                meta = {**meta, "checksums": {k: v for k, v in meta["checksums"].items() if k in wanted}}
        else:
            state = manager.restore(step, args=ocp.args.Composite(
                state=_StateRestore(_abstract(abstract))))["state"]
        verify(state, meta, where)
        return state, meta

    def _quarantine(self, manager: ocp.CheckpointManager, step: int, reason: str) -> Path:
        source = Path(manager.directory) / str(step)
        target = self.root / "corrupt" / f"{source.parent.name}-{step}-{time.strftime('%Y%m%d-%H%M%S')}"
        if jax.process_index() == 0 and source.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(source), str(target))
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"quarantine {source}")
        log.warning("checkpoint %s is unusable (%s); moved to %s", source, reason, target)
        manager.reload()
        return target

    def _newest_good(self, manager: ocp.CheckpointManager, abstract, steps=None, *, part: bool = False):
        """(step, tree, meta) of the newest step that verifies, moving bad ones aside; None if the
        manager holds no step. Raises CheckpointError when steps exist but none verifies. part: see
        _restore."""
        steps = sorted(manager.all_steps() if steps is None else steps, reverse=True)
        failures = []
        for step in steps:
            try:
                tree, meta = self._restore(manager, step, abstract, part=part)
            except ModelMismatchError:
                raise
            except Exception as err:  # noqa: BLE001  (any failure to read back is a bad step)
                reason = _one_line(err)
                where = Path(manager.directory) / str(step)
                if not self.writer:  # a reader neither moves it nor picks another step
                    raise CheckpointError(
                        f"checkpoint {where} is unusable ({reason}); nothing was changed. Running the "
                        f"training command again moves it aside and resumes from the previous step; "
                        f"or restore it from a backup") from err
                failures.append(f"{where} ({reason})")
                self._quarantine(manager, step, reason)
                continue
            if failures:
                log.warning("fell back to %s", Path(manager.directory) / str(step))
            return step, tree, meta
        if failures:
            raise CheckpointError(
                f"no usable checkpoint left in {manager.directory}: {'; '.join(failures)}. The bad "
                f"steps are in {self.root / 'corrupt'}; restore them from a backup or train anew in "
                f"another --workdir")
        return None

    def restore_frozen(self, abstract):
        found = self._newest_good(self.frozen, abstract)
        if found is None:
            raise CheckpointError(f"{self.frozen.directory} holds no checkpoint of the frozen parts")
        return found[1]

    def restore_latest(self, abstract) -> tuple[int, object, dict] | None:
        """(step, state, record) of the newest good `latest` step, or None when there is none."""
        found = self._newest_good(self.latest, abstract)
        if found is None:
            return None
        step, state, meta = found
        return step, state, meta.get("record") or {}

    def record(self) -> dict | None:
        """The run's record (validation history, best step) from the newest readable latest step's
        meta item, without restoring arrays; None when there is no latest step."""
        for step in sorted(self.latest.all_steps(), reverse=True):
            try:
                meta = self.latest.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
            except Exception:  # noqa: BLE001  (an unreadable step: an older one may do)
                continue
            if isinstance(meta, dict) and meta.get("step") == step:
                return {**(meta.get("record") or {}), "last_step": step}
        return None

    def restore_selected(self, abstract_params) -> tuple[int, object, str]:
        """(step, params, how) of the checkpoint a run reports: its best step when it validated
        ('best'), else its last one ('last'). abstract_params: {'params': tree}. Only parameters are
        read (from a latest step too: its optimizer state stays on disk). The best checkpoint has no
        fallback (another step would be another selection), except the same step in latest/ when it
        is still kept there."""
        record = self.record()
        if record is None:
            steps = self.best.all_steps()
            if len(steps) != 1:
                raise CheckpointError(f"{self.root} holds no readable record of a run (latest/ has no "
                                      f"usable step); nothing to evaluate")
            record = {"best": {"step": steps[0]}}
        best = (record.get("best") or {}).get("step")
        if best is None:
            step, saved, _ = self._newest_good(self.latest, abstract_params, part=True)
            return step, saved["params"], "last"
        try:
            return best, self._restore(self.best, best, abstract_params)[0]["params"], "best"
        except ModelMismatchError:
            raise
        except Exception as err:  # noqa: BLE001
            reason = _one_line(err)
        if best in self.latest.all_steps():
            try:
                saved = self._restore(self.latest, best, abstract_params, part=True)[0]
                log.warning("the best checkpoint %s is unusable (%s); read step %d from latest/",
                            Path(self.best.directory) / str(best), reason, best)
                return best, saved["params"], "best"
            except Exception:  # noqa: BLE001
                pass
        raise CheckpointError(
            f"the selected checkpoint {Path(self.best.directory) / str(best)} is unusable ({reason}) "
            f"and no copy of step {best} is left; another step would be another selection, so "
            f"nothing is evaluated. Restore it from a backup or train again")

    def check_best_file(self, record: dict) -> None:
        """Rewrites best.json from the record when it is missing, unreadable or disagrees."""
        if jax.process_index() != 0 or not record.get("best"):
            return
        problem = None
        if not self.best_file.is_file():
            problem = "missing"
        else:
            try:
                if json.loads(self.best_file.read_text()) != record["best"]:
                    problem = "it disagrees with the checkpoints' record"
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                problem = f"unreadable: {err}"
        if problem:
            self.write_best_file(record)
            log.warning("rebuilt %s from the checkpoints' record (%s)", self.best_file, problem)

    def has_checkpoints(self) -> bool:
        return bool(self.latest.all_steps() or self.best.all_steps())

    def close(self) -> None:
        for manager in (self.latest, self.best, self.frozen):
            # orbax's close() does not join the clean-up of temporary folders that the manager
            # starts when it opens; a process that exits at once (an early error) would print that
            # thread's traceback at shutdown. Join it first.
            join_cleanup = getattr(manager, "_maybe_await_cleanup_tmp_directory", None)
            if join_cleanup is not None:
                join_cleanup()
            manager.close()


def _restore_part(directory: Path, abstract):
    """The arrays of `abstract` (a part of the tree saved in `directory`), the rest left unread."""
    with ocp.PyTreeCheckpointer() as reader:
        return reader.restore(directory, args=ocp.args.PyTreeRestore(
            abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
            partial_restore=True))


def _one_line(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".strip().splitlines()
    return text[0][:300] if text else type(err).__name__

