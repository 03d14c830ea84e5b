"""Progress output that reads well both in a terminal and in a log file.

In a terminal (stderr a TTY) long work shows a tqdm bar. Written to a file, a bar would leave
carriage returns and glue other lines onto its own, so there it is off and `Ticker` prints one
plain line at most every `every` seconds instead. Only process 0 of a multi-process run reports.
"""

from __future__ import annotations

import sys
import time

import jax


def interactive() -> bool:
    return jax.process_index() == 0 and sys.stderr.isatty()


def bar(total: int, desc: str, unit: str, *, initial: int = 0, leave: bool = True):
    """A tqdm bar in a terminal; a silent one otherwise."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=leave, file=sys.stderr,
                disable=not interactive(), dynamic_ncols=True, mininterval=2)


class Ticker:
    """Plain progress lines for logs: `tick(text)` prints `text` if `every` seconds have passed
    since the last line (or `force`); silent in a terminal, where a bar shows the same."""

    def __init__(self, every: float = 30.0):
        self.every, self.last = every, -float("inf")
        self.active = jax.process_index() == 0 and not sys.stderr.isatty()

    def tick(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if self.active and (force or now - self.last >= self.every):
            print(text, file=sys.stderr, flush=True)
            self.last = now


def say(text: str) -> None:
    """A line every run prints (validation results, files written): stdout, process 0."""
    if jax.process_index() == 0:
        print(text, flush=True)


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
