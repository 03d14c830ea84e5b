"""What the command lines (main.py, bpclip_jax.protocol) share: flag parsing whose mistakes are one
line, and a runner that prints a user's mistake as one line with a non-zero exit.

Exit codes: 0 done, 1 a user error (the message names the file, field or flag and the fix; with
--verbose also its traceback), 2 a command line that does not parse, 75 stopped by SIGTERM after a
checkpoint (the same command resumes; bpclip_jax.preempt), 130 the same after Ctrl-C. Any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import runpy
import sys
from collections.abc import Callable
from pathlib import Path

from absl import app, flags
from absl import logging as absl_logging

from bpclip_jax.errors import UserError
from bpclip_jax.preempt import Preempted

FLAGS = flags.FLAGS
flags.DEFINE_bool("verbose", False, "show tracebacks of user errors and the libraries' INFO logs")

EXIT_USER_ERROR = 1
EXIT_USAGE = 2


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception types that are a user's mistake (their message is the whole story)."""
    from data_pipelines.records import DataError

    return UserError, DataError


def fail(message: str, code: int = EXIT_USER_ERROR):
    print("error: " + " ".join(str(message).split()), file=sys.stderr, flush=True)
    raise SystemExit(code)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parser, with one-line errors for the mistakes it turns into tracebacks: an unknown
    `--config.a.b` override (names the section's fields and the nearest one) and a config file
    that does not exist or does not load."""
    try:
        rest = FLAGS(argv)
    except flags.Error as err:
        fail(f"{err} (--help lists the flags)", EXIT_USAGE)
    except (AttributeError, KeyError) as err:
        fail(_unknown_override(argv) or f"bad --config override: {err}", EXIT_USAGE)
    if "config" in FLAGS and FLAGS["config"].present:
        try:
            FLAGS.config.keys()  # a config that failed to load raises on first use: use it now
        except OSError as err:
            from ml_collections import config_flags

            fail(_config_load_error(config_flags.get_config_filename(FLAGS["config"]), err), EXIT_USAGE)
    return rest


def _config_path(argv: list[str]) -> tuple[str, str | None] | None:
    for i, arg in enumerate(argv):
        value = None
        if arg.startswith("--config="):
            value = arg.split("=", 1)[1]
        elif arg == "--config" and i + 1 < len(argv):
            value = argv[i + 1]
        if value is not None:
            path, _, config_arg = value.partition(":")
            return path, config_arg or None
    return None


def _unknown_override(argv: list[str]) -> str | None:
    """'--config.optim.learning_rate: config.optim has no field ...' for the first override that
    names no field of the config, or None when all do."""
    spec = _config_path(argv)
    if spec is None:
        return None
    try:
        config = runpy.run_path(spec[0])["get_config"](spec[1])
    except Exception:  # noqa: BLE001  (the config's own error is reported when it is loaded)
        return None
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        dotted = arg[len("--config."):].split("=", 1)[0]
        node, path = config, "config"
        for name in dotted.split("."):
            fields = list(node.keys()) if hasattr(node, "keys") else []
            if name not in fields:
                near = _nearest(name, fields)
                hint = f" (did you mean {path}.{near[0]}?)" if near else ""
                listed = ", ".join(fields) if fields else f"{path} is a value, not a section"
                return f"--config.{dotted}: {path} has no field '{name}'{hint}; its fields: {listed}"
            node, path = node[name], f"{path}.{name}"
    return None


def _nearest(name: str, fields: list[str]) -> list[str]:
    """The field a misspelt or spelt-out name most likely means ('learning_rate' -> 'lr')."""
    initials = "".join(word[:1] for word in name.split("_"))
    if len(initials) > 1 and initials in fields:
        return [initials]
    return difflib.get_close_matches(name, fields, n=1, cutoff=0.5)


def _config_load_error(path: str, err: OSError) -> str:
    if not Path(path).is_file():
        path = path.partition(":")[0]  # FILE:ARG
    if not Path(path).is_file():
        configs = sorted(p.name for p in Path(__file__).parent.parent.joinpath("configs").glob("*.py")
                         if p.stem not in ("__init__", "base"))
        return f"--config {path}: no such file; the experiment configs are configs/{{{','.join(configs)}}}"
    last = str(err).strip().splitlines()[-1].strip()
    return f"--config {path} does not load: {last}"


@contextlib.contextmanager
def one_line_errors(verbose: bool = False):
    """A user's mistake as one line and exit 1 (with `verbose`, its traceback instead); a run
    stopped by SIGTERM or SIGINT after its checkpoint (bpclip_jax.preempt) as one line and its exit
    code (75, or 130 after Ctrl-C)."""
    try:
        yield
    except Preempted as stopped:
        print(f"stopped: {stopped}", file=sys.stderr, flush=True)
        raise SystemExit(stopped.exit_code) from None
    except user_errors() as err:
        if verbose:
            raise
        fail(str(err).strip().replace("\n", " "))


def run(main: Callable[[list[str]], None]) -> None:
    """app.run(main) with one-line user errors (see the module docstring)."""

    def guarded(argv):
        absl_logging.set_verbosity(absl_logging.INFO if FLAGS.verbose else absl_logging.WARNING)
        logging.getLogger("bpclip_jax").setLevel(logging.INFO)
        try:
            with one_line_errors(FLAGS.verbose):
                main(argv)
        except app.UsageError as err:
            fail(f"{err} (--help lists the flags)", EXIT_USAGE)
        except KeyboardInterrupt:
            fail("interrupted", 130)

    app.run(guarded, flags_parser=parse_flags)
