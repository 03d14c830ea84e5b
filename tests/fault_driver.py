"""A training run that SIGKILLs (or SIGTERMs) itself at a chosen point, for the fault-injection
and preemption tests.

    python -m tests.fault_driver WORKDIR DATA_ROOT [term@|fill@]POINT [SECTION.FIELD=VALUE ...]

POINT is one of
  step:N[:P]     when the train loop is about to run step N (mid-epoch), in process P only if given
  save:latest:N  while the latest checkpoint of step N is being written (its meta item)
  validate       during the first validation this process runs
  test           while the final test writes its files
  none           no kill: the run ends normally
The kill is a real SIGKILL: no finally block, no flush, no lock release but the OS's. With
`term@`, the process sends itself SIGTERM there instead (what SLURM sends before a preemption) and
goes on as the signal lets it; the time it was sent is printed as "SIGTERM at <time.time()>". With
`fill@`, it fills the filesystem there instead (a ballast file, $BPCLIP_BALLAST, leaving no byte
free) and goes on: the next large write finds the disk full. The config is
tests.runs.tiny_config, the one the unstopped reference run uses, with the given fields set
(numbers are parsed as Python literals).
"""

import os
import signal
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from absl import flags  # noqa: E402

flags.FLAGS.mark_as_parsed()


SIGNAL = [signal.SIGKILL]
FILL = "fill"


def fill_disk(ballast: str, keep: int = 0) -> None:
    """Grows `ballast` until its filesystem has at most `keep` bytes free (real ENOSPC for what
    follows)."""
    import shutil

    with open(ballast, "ab") as f:
        for _ in range(100):  # other writers may take space meanwhile: measure again
            size = f.seek(0, os.SEEK_END)
            free = shutil.disk_usage(os.path.dirname(ballast)).free
            if free <= keep:
                return
            try:
                os.posix_fallocate(f.fileno(), 0, size + free - keep)
            except OSError:
                continue


def die():
    if SIGNAL[0] == FILL:
        fill_disk(os.environ["BPCLIP_BALLAST"])
        return
    if SIGNAL[0] == signal.SIGTERM:
        import time

        print(f"SIGTERM at {time.time()}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), SIGNAL[0])


def arm(point: str) -> None:
    import orbax.checkpoint as ocp

    from bpclip_jax import evaluate, train

    if point.startswith("term@"):
        SIGNAL[0], point = signal.SIGTERM, point[len("term@"):]
    elif point.startswith("fill@"):
        SIGNAL[0], point = FILL, point[len("fill@"):]
    kind, _, arg = point.partition(":")
    if kind == "step":
        import jax

        target, _, process = arg.partition(":")
        real_compile = train.compile_step

        def compile_step(step_fn, mesh):
            compiled = real_compile(step_fn, mesh)

            def step(state, batch, hyper):
                if int(state.step) + 1 == int(target) and process in ("", str(jax.process_index())):
                    die()
                return compiled(state, batch, hyper)

            return step

        train.compile_step = compile_step
    elif kind == "save":
        # orbax writes a step into a temporary folder and renames it when every item is written;
        # the meta item's writer is the last of ours to run, inside that folder.
        where, step = arg.split(":")
        real_save = ocp.JsonCheckpointHandler._save_fn

        async def save(self, x, directory):
            if f"/{where}/{step}." in str(directory):
                die()
            return await real_save(self, x, directory)

        ocp.JsonCheckpointHandler._save_fn = save
    elif kind == "validate":
        real_predict = evaluate.predict

        def predict(*args, desc="", **kwargs):
            if desc.startswith("validate"):
                die()
            return real_predict(*args, desc=desc, **kwargs)

        evaluate.predict = predict
    elif kind == "test":
        real_write = evaluate.write_predictions

        def write_predictions(*args, **kwargs):
            die()
            return real_write(*args, **kwargs)

        evaluate.write_predictions = write_predictions
    elif kind != "none":
        raise SystemExit(f"unknown kill point {point}")


def main(workdir: str, root: str, point: str, *fields: str) -> None:
    import ast

    from bpclip_jax import train
    from tests.runs import tiny_config

    train.maybe_initialize_distributed()  # a multi-process run when the environment says so
    arm(point)
    config = tiny_config(root)
    for field in fields:
        dotted, value = field.split("=", 1)
        section, name = dotted.split(".")
        config[section][name] = ast.literal_eval(value)
    from bpclip_jax.cli import one_line_errors

    with one_line_errors():
        train.train_and_evaluate(config, workdir)


if __name__ == "__main__":
    main(*sys.argv[1:])
