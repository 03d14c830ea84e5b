"""CPU time and bytes of one checkpoint save: the project's (arrays written raw) against orbax's
standard handler (zstd, what releases before 2026-12-04 wrote).

    python -m benchmarks.checkpoint_save [--megabytes 400] [--repeats 5]

The state is float32 noise of the given size in 100 arrays, as a model's weights and Adam's
moments are to a compressor. Each save is followed by the wait for orbax's writer threads; the CPU
time is the process's (user + system, every thread), so it does not depend on what else the cores
run, unlike the wall time, which is printed too.
"""

import resource
import shutil
import tempfile
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import app, flags

from bpclip_jax import checkpoint

FLAGS = flags.FLAGS
flags.DEFINE_integer("megabytes", 400, "size of the saved state")
flags.DEFINE_integer("repeats", 5, "saves per writer (the figures are their means)")


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _ours(directory: Path, tree) -> None:
    ckpt = checkpoint.Checkpoints(directory)
    try:
        ckpt.save_latest(1, tree, {"history": [], "best": None})
    finally:
        ckpt.close()


def _zstd(directory: Path, tree) -> None:
    manager = ocp.CheckpointManager(directory / "checkpoints" / "latest",
                                    item_handlers={"state": ocp.StandardCheckpointHandler()})
    try:
        manager.save(1, args=ocp.args.Composite(state=ocp.args.StandardSave(tree)))
        manager.wait_until_finished()
    finally:
        manager.close()


def measure(megabytes: int, repeats: int) -> dict[str, dict[str, float]]:
    """{writer: {cpu_s, wall_s, stored_mb}} per save, means over `repeats`."""
    per_array = megabytes * 2**20 // 4 // 100
    rng = np.random.default_rng(0)
    tree = {f"w{i}": jnp.asarray(rng.standard_normal(per_array, np.float32)) for i in range(100)}
    out = {}
    for name, save in (("ours (raw)", _ours), ("orbax standard (zstd)", _zstd)):
        cpu = wall = stored = 0.0
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as tmp:
                cpu0, wall0 = _cpu_s(), time.perf_counter()
                save(Path(tmp), tree)
                cpu, wall = cpu + _cpu_s() - cpu0, wall + time.perf_counter() - wall0
                stored += sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file()) / 2**20
                shutil.rmtree(tmp, ignore_errors=True)
        out[name] = {"cpu_s": cpu / repeats, "wall_s": wall / repeats, "stored_mb": stored / repeats}
    return out


def main(argv):
    del argv
    for name, row in measure(FLAGS.megabytes, FLAGS.repeats).items():
        print(f"{name}: {row['cpu_s']:.2f} CPU-s, {row['wall_s']:.2f} s wall, "
              f"{row['stored_mb']:.0f} MB stored per save of {FLAGS.megabytes} MB")


if __name__ == "__main__":
    app.run(main)
