"""Errors that are a user's mistake, not a bug in the code.

The command line (bpclip_jax.cli) prints a UserError as one line and exits non-zero; every other
exception is a bug and keeps its traceback. Messages name the file, field or flag and the fix.
"""


class UserError(Exception):
    """A mistake in a command, a config, a workdir or an input; the message says what to do."""


class WorkdirError(UserError):
    """A workdir that cannot be used as asked: in use, holding another run, or without a model."""
