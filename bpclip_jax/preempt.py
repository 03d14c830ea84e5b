"""A training run that stops on SIGTERM or SIGINT without losing a step.

SLURM sends SIGTERM before it preempts a job or ends it at its time limit (and SIGKILL after its
grace, 30 s by default); `docker stop`, Kubernetes and many notebook hosts send it too; Ctrl-C
sends SIGINT. While `Signals` is installed (the whole of a training run):
  - in a train step, the step finishes; the trainer then writes a verified checkpoint of it and
    stops with `Preempted` (bpclip_jax.train);
  - in validation, the final test or the run's set-up, the work stops at once: the same command
    redoes it (validation of that step, the test) from the checkpoint;
  - a second signal stops at once (a checkpoint being written stays a temporary folder, which the
    next run removes).
The command then exits with EXIT_PREEMPTED (75, EX_TEMPFAIL: "try again"), or 130 after Ctrl-C,
and the same command resumes from that step. In a multi-process run the processes agree to stop
at the next log step (train.log_every) or epoch end, so that all save the same step.
"""

from __future__ import annotations

import contextlib
import signal
import threading

EXIT_PREEMPTED = 75   # sysexits' EX_TEMPFAIL: a temporary failure; the same command resumes
EXIT_INTERRUPTED = 130
HANDLED = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """The run stopped on a signal; `exit_code` is what the command exits with."""

    def __init__(self, signum: int, message: str = ""):
        self.signum = signum
        self.exit_code = EXIT_INTERRUPTED if signum == signal.SIGINT else EXIT_PREEMPTED
        name = signal.Signals(signum).name
        super().__init__(message or f"stopped by {name}; the same command resumes the run")


class Signals:
    """SIGTERM/SIGINT handlers for the duration of a `with` block (installed from the main thread
    only: elsewhere, e.g. in a notebook's worker thread, signals keep their default handling).

    `received` is the first signal's number (None before). Inside `interruptible()` a signal
    raises Preempted at once; elsewhere the first one is only recorded, for the trainer to act
    on at the end of the step (`stop_requested`)."""

    def __init__(self, jax_processes: bool = True):
        """jax_processes=False: a process that never starts JAX (the protocol's launcher); it is
        one process and asks JAX nothing."""
        self.received: int | None = None
        self._interruptible = 0
        self._previous: dict = {}
        self._jax = jax_processes

    def _processes(self) -> int:
        if not self._jax:
            return 1
        import jax

        return jax.process_count()

    def __enter__(self) -> Signals:
        if threading.current_thread() is threading.main_thread():
            for signum in HANDLED:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        second = self.received is not None
        self.received = signum
        if second or self._interruptible:
            raise Preempted(signum)

    @contextlib.contextmanager
    def interruptible(self):
        """A block that a signal stops at once (work redone on resume, nothing half-written).
        With several processes it is not: one process leaving a collective early would leave
        the others waiting; they stop together at the next agreement instead."""
        if self._processes() > 1:
            yield
            return
        if self.received is not None:
            raise Preempted(self.received)
        self._interruptible += 1
        try:
            yield
        finally:
            self._interruptible -= 1

    def stop_requested(self, sync_point: bool) -> bool:
        """Whether the run should stop after the step just done. One process: whenever a signal
        came. Several: only at a `sync_point` (a log step or an epoch end), where they agree (any
        process's signal stops all), so that every process saves the same step."""
        if self._processes() == 1:
            return self.received is not None
        if not sync_point:
            return False
        import jax
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(jax.numpy.asarray(self.received is not None))
        return bool(flags.any())

    def preempted(self, message: str) -> Preempted:
        return Preempted(self.received or signal.SIGTERM, message)
