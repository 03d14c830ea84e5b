"""The paper's protocol: ten random splits (seeds 0..9), each trained and tested, reported as
mean +- std next to the paper's numbers.

    python -m bpclip_jax.protocol --config configs/kadid_fr.py --workdir runs/kadid --splits 10
    python -m bpclip_jax.protocol --config configs/kadid_fr.py --workdir runs/kadid --parallel 8

Split k is `python main.py --config FILE[:arg] <this command's --config.* overrides>
--config.data.split_seed=k --workdir WORKDIR/split_k`, run in its own process with its output in
WORKDIR/split_k/log.txt: the very command a user would run for that split. The splits are
independent, so `--parallel N` runs N of them at once, each on its share of the GPUs (N = the
GPU count: one GPU each, through CUDA_VISIBLE_DEVICES; the GPUs are found with `nvidia-smi -L`
or named with --devices, and JAX is never initialized here), or as N CPU processes on a host
without GPUs. One line per running split shows its step and last validation SRCC (redrawn in a
terminal, plain lines in a log).

Restarting the same command resumes: a split with results.json is done and only read, one with
checkpoints resumes from them (bpclip_jax.train), one that another process is running (its
workdir lock, bpclip_jax.lock) is waited for; on Linux the splits die with a killed launcher, so
none is left holding its lock. On SIGTERM (a preempted or timed-out SLURM job) or Ctrl-C the
launcher passes SIGTERM to every running split, which writes a checkpoint of its step in flight
and stops (bpclip_jax.preempt), waits for them (STOP_GRACE_S at most) and exits 75 (130); a split
stopped by a signal of its own is resumed at once. A failed split is reported with the end of its log
and retried once; a split that fails twice is left out of the table, which says so. A finished
split whose config.json differs from this command's config is refused: a table never mixes runs.

`--variants progressive` compares the config as is (WORKDIR/base/split_k) with
model.progressive flipped (WORKDIR/progressive_true/split_k) in one table; `--variants
text_head=softmax` compares with another choice of a model field. `--only k` runs split k
alone (one SLURM array task), `--aggregate_only` only writes the table. Output: WORKDIR/table.md
(also printed) and WORKDIR/table.json ({"config", "splits", "runs": {variant ('' without
--variants): {"settings", "done", "missing": {seed: why}, "selection", "optimistic", "sets":
{test set: {metric: [mean, std (ddof 0), n]}}}}}), each with how the checkpoints were selected
(results.json's "selection"), a selection on the test part flagged "selected on test: optimistic".
"""

from __future__ import annotations

import collections
import copy
import ctypes
import dataclasses
import functools
import json
import os
import runpy
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from bpclip_jax import cli, preempt
from bpclip_jax.errors import UserError
from bpclip_jax.files import atomic_write
from bpclip_jax.preempt import EXIT_PREEMPTED

FLAGS = flags.FLAGS

MAIN = Path(__file__).resolve().parent.parent / "main.py"
RESULTS, LOG, METRICS = "results.json", "log.txt", "metrics.jsonl"
SWITCHES = ("progressive", "use_text")  # boolean model switches (configs/base.py), flipped by name
CHOICES = ("text_head", "direction", "branches", "stand_in_text")  # set by name=value
RETRIES = 1          # a failed split runs once more before it counts as missing
STOP_GRACE_S = 25    # a stopped launcher waits this long for its splits' checkpoints (SLURM: 30 s)
POLL_S = 1.0         # how often children are polled and a terminal's status lines redrawn
PLAIN_EVERY_S = 60   # how often status lines are printed when stdout is not a terminal
METRIC_NAMES = ("plcc", "srcc", "plcc_logistic", "krcc", "rmse")


# ------------------------------------------------------------------------------ the plan


@dataclasses.dataclass(frozen=True, eq=False)
class Job:
    """One split of one variant: its workdir, its config and main.py's flags that build it."""

    variant: str                # '' without --variants
    seed: int
    workdir: Path
    config: object              # ml_collections.ConfigDict: what main.py will train
    args: tuple[str, ...]       # main.py's flags, --workdir included

    @property
    def name(self) -> str:
        return f"{self.variant}/split {self.seed}" if self.variant else f"split {self.seed}"

    def done(self) -> bool:
        return (self.workdir / RESULTS).is_file()


def variants(config, specs: list[str]) -> dict[str, dict]:
    """{directory: {model field: value} of the fields compared}: '' (no variants), or 'base' (the
    config as is) and one '<field>_<value>' per spec. A spec is a boolean switch (SWITCHES),
    flipped, or 'field=value' for a choice (CHOICES), e.g. 'text_head=softmax'."""
    changes = []
    for spec in specs:
        name, eq, value = spec.partition("=")
        if not eq and name in SWITCHES:
            changes.append((name, not bool(config.model[name])))
        elif eq and name in CHOICES and value:
            changes.append((name, value))
        else:
            raise UserError(f"--variants: {spec!r} is neither a boolean model switch ({', '.join(SWITCHES)}) "
                            f"nor name=value for a choice ({', '.join(CHOICES)}), e.g. text_head=softmax")
    if not changes:
        return {"": {}}
    base = {name: config.model[name] for name, _ in changes}
    return {"base": base, **{f"{name}_{str(value).lower().replace(':', '_')}": {**base, name: value}
                             for name, value in changes}}


def define_flags(flag_values: flags.FlagValues = FLAGS, sys_argv: list[str] | None = None) -> None:
    """The command's flags (defined when it runs, not on import: main.py defines --config too).
    sys_argv: where --config.* overrides are read from (default sys.argv)."""
    config_flags.DEFINE_config_file("config", None, "experiment config file (configs/*.py[:arg])",
                                    flag_values=flag_values, lock_config=True, sys_argv=sys_argv)
    into = {"flag_values": flag_values}
    flags.DEFINE_string("workdir", None, "the protocol's directory (one split_<k> per seed)", **into)
    flags.DEFINE_integer("splits", 10, "number of split seeds, 0..splits-1", lower_bound=1, **into)
    flags.DEFINE_integer("parallel", 1, "splits run at once, each in its own process on an equal "
                         "share of the GPUs (or on the CPU without GPUs)", lower_bound=1, **into)
    flags.DEFINE_list("devices", None, "GPU ids the splits share (default: CUDA_VISIBLE_DEVICES, "
                      "else every GPU that `nvidia-smi -L` lists; none: CPU)", **into)
    flags.DEFINE_list("variants", [], "model variants to compare: boolean switches, flipped (e.g. "
                      "progressive), or name=value choices (e.g. text_head=softmax): the config as is "
                      "(WORKDIR/base) and each variant (WORKDIR/<name>_<value>)", **into)
    flags.DEFINE_integer("only", None, "run split k only (of every variant; e.g. one SLURM array "
                         "task) and write no table", lower_bound=0, **into)
    flags.DEFINE_bool("aggregate_only", False, "run nothing: write the table of the splits that "
                      "are done", **into)


def overrides(flag_values: flags.FlagValues = FLAGS) -> dict[str, list[str]]:
    """{flag: its arguments} of every --config.* override on the command line, serialized by absl
    (each parses back to the value given; a tuple is one argument per element)."""
    found = {}
    for name in flag_values:
        flag = flag_values[name]
        if name.startswith("config.") and flag.present:
            text = flag.serialize()
            found[name] = text.split("\n") if isinstance(flag, flags.MultiFlag) else [text]
    if "config.data.split_seed" in found:
        raise UserError("--config.data.split_seed: the protocol sets it (split k uses seed k); drop it")
    return found


def plan(config, config_arg: str, given: dict[str, list[str]], workdir: Path, seeds,
         runs: dict[str, dict[str, bool]]) -> list[Job]:
    """The jobs, variant by variant and seed by seed; each job's flags are `config_arg`, the given
    overrides and its own seed and switches (which replace a given override of the same field)."""
    jobs = []
    for variant, switches in runs.items():
        for seed in seeds:
            job_config = copy.deepcopy(config)
            flipped = {s: v for s, v in switches.items() if config.model[s] != v}
            own = {"config.data.split_seed": seed, **{f"config.model.{s}": v for s, v in flipped.items()}}
            with job_config.unlocked():
                job_config.data.split_seed = seed
                job_config.model.update(flipped)
            split_dir = workdir / variant / f"split_{seed}"
            merged = {**given, **{k: [f"--{k}={v}"] for k, v in own.items()}}
            args = (config_arg, *(a for flag_args in merged.values() for a in flag_args),
                    f"--workdir={split_dir}")
            jobs.append(Job(variant, seed, split_dir, job_config, args))
    return jobs


def check_configs(jobs: list[Job]) -> None:
    """Refuses a split workdir whose config.json differs from the job's config (but for runtime
    fields): its results or checkpoints belong to another run."""
    from bpclip_jax import run_config

    for job in jobs:
        if not (job.workdir / run_config.CONFIG_FILE).is_file():
            continue
        diffs = run_config.run_differences(run_config.read(job.workdir), job.config)
        if diffs:
            listing = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in diffs.items())
            raise UserError(f"{job.workdir} holds a run of another config ({listing}); the table "
                            f"would mix runs: use the command line it was started with, or another "
                            f"--workdir")


# ------------------------------------------------------------------------------ devices


@dataclasses.dataclass(frozen=True)
class Slot:
    """Where one split runs: a label for the status line and the environment that confines it."""

    label: str
    env: dict


def visible_gpus(given: list[str] | None) -> list[str]:
    """GPU ids the splits share: --devices, else CUDA_VISIBLE_DEVICES, else those `nvidia-smi -L`
    lists; [] means the CPU. JAX is not initialized (it would take the GPUs' memory)."""
    if given:
        return given
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        ids = [d.strip() for d in env.split(",") if d.strip()]
        return [] if not ids or ids[0].startswith("-") or ids[0] == "NoDevFiles" else ids
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return []
    lines = listing.stdout.splitlines() if listing.returncode == 0 else []
    return [str(i) for i, _ in enumerate(line for line in lines if line.startswith("GPU "))]


def slots(gpus: list[str], parallel: int, batch_size: int) -> list[Slot]:
    """`parallel` slots, each an equal share of the GPUs (the rest idle), or CPU processes."""
    if not gpus:
        return [Slot(f"cpu {i}", {"JAX_PLATFORMS": "cpu"}) for i in range(parallel)]
    if parallel > len(gpus):
        raise UserError(f"--parallel {parallel} needs a GPU per split, {len(gpus)} are visible "
                        f"({','.join(gpus)}): use --parallel {len(gpus)}, or name them with --devices")
    share = len(gpus) // parallel
    if batch_size % share:
        raise UserError(f"data.batch_size={batch_size} does not divide over {share} GPUs per split: "
                        f"choose --parallel so that it does (--parallel {len(gpus)}: one GPU each)")
    groups = [gpus[i * share:(i + 1) * share] for i in range(parallel)]
    return [Slot(f"gpu {','.join(g)}", {"CUDA_VISIBLE_DEVICES": ",".join(g)}) for g in groups]


# ------------------------------------------------------------------------------ one split's process


def _die_with_parent(parent: int) -> None:
    """In the child before exec (Linux): SIGTERM when the launcher dies, even by SIGKILL, so that a
    killed launcher leaves no split running (its workdir lock would block the restart)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the launcher died before prctl took effect
        os._exit(1)


@dataclasses.dataclass
class Running:
    job: Job
    slot: Slot
    attempt: int
    process: subprocess.Popen
    log_start: int                      # where this attempt's output begins in log.txt
    started: float
    progress: MetricsTail


def command(job: Job) -> list[str]:
    return [sys.executable, str(MAIN), *job.args, *(["--verbose"] if FLAGS.verbose else [])]


def start(job: Job, slot: Slot, attempt: int) -> Running:
    """Starts main.py for the job on the slot, its output appended to WORKDIR/split_k/log.txt."""
    job.workdir.mkdir(parents=True, exist_ok=True)
    cmd = command(job)
    with (job.workdir / LOG).open("a") as log:
        log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} attempt {attempt} on {slot.label}: "
                  f"{shlex.join(cmd)}\n")
        log.flush()
        log_start = log.tell()
        preexec = functools.partial(_die_with_parent, os.getpid()) if sys.platform == "linux" else None
        process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, **slot.env, "PYTHONUNBUFFERED": "1"},
                                   preexec_fn=preexec)
    return Running(job, slot, attempt, process, log_start, time.monotonic(),
                   MetricsTail(job.workdir / METRICS))


def log_tail(path: Path, start: int = 0, lines: int = 15) -> list[str]:
    with path.open("rb") as f:
        f.seek(start)
        return f.read().decode(errors="replace").splitlines()[-lines:]


class MetricsTail:
    """A split's progress from its metrics.jsonl, read incrementally (a resumed run rewrites the
    file shorter: then it is read again from the start)."""

    def __init__(self, path: Path):
        self.path, self.offset = path, 0
        self.step, self.steps_per_epoch, self.val, self.best = 0, 0, None, None

    def update(self) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size < self.offset:
            self.__init__(self.path)
        with self.path.open("rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        whole = chunk[:chunk.rfind(b"\n") + 1]  # a line still being written is read next time
        self.offset += len(whole)
        for line in whole.decode(errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            self.step = max(self.step, row.get("step", 0))
            if row.get("train/epoch"):  # train rows say step / steps_per_epoch
                self.steps_per_epoch = round(row["step"] / row["train/epoch"])
            if "val/srcc" in row:
                self.val = row["val/srcc"]
                self.best = self.val if self.best is None else max(self.best, self.val)

    def describe(self, config) -> str:
        spe = config.train.steps_per_epoch or self.steps_per_epoch
        if not (self.step and spe):
            return "starting"
        total = config.optim.epochs * spe
        total = min(total, config.train.stop_at_step or total)
        text = f"step {self.step}/{total} (epoch {self.step / spe:.1f} of {config.optim.epochs})"
        if self.val is not None:
            text += f", val SRCC {self.val:.4f} (best {self.best:.4f})"
        return text


# ------------------------------------------------------------------------------ status output


class Display:
    """Events as lines; one status line per running split, redrawn in place on a terminal, printed
    as plain lines every PLAIN_EVERY_S seconds (those that changed) otherwise."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.drawn, self.last, self.printed = 0, time.monotonic(), {}

    def _clear(self) -> None:
        if self.drawn:
            self.stream.write(f"\x1b[{self.drawn}F\x1b[J")
            self.drawn = 0

    def event(self, text: str) -> None:
        self._clear()
        print(text, file=self.stream, flush=True)

    def status(self, lines: dict[str, str]) -> None:
        """lines: {split name: its status}."""
        if self.tty:
            self._clear()
            for name, line in lines.items():
                self.stream.write(f"{name}: {line}\n")
            self.drawn = len(lines)
            self.stream.flush()
        elif time.monotonic() - self.last >= PLAIN_EVERY_S:
            for name, line in lines.items():
                if self.printed.get(name) != line.rsplit(", ", 1)[0]:
                    print(f"{name}: {line}", file=self.stream, flush=True)
                    self.printed[name] = line.rsplit(", ", 1)[0]
            self.last = time.monotonic()


# ------------------------------------------------------------------------------ the scheduler


def run_jobs(jobs: list[Job], free: list[Slot], display: Display) -> dict[Job, str]:
    """Runs the jobs that are not done, at most one per slot at a time; returns {job: why it is
    missing} for the jobs without results at the end (failed twice, or stopped early)."""
    from bpclip_jax import lock, progress

    queue = collections.deque((job, 1) for job in jobs if not job.done())
    if len(queue) < len(jobs):
        display.event(f"{len(jobs) - len(queue)} of {len(jobs)} splits are done already")
    running: list[Running] = []
    waiting: list[tuple[Job, int]] = []   # run by another process: started again once it ends
    missing = {}
    try:
        while queue or running or waiting:
            for item in [w for w in waiting if lock.holder(w[0].workdir) is None]:
                waiting.remove(item)
                if not item[0].done():
                    queue.appendleft(item)
            while queue and free:
                job, attempt = queue.popleft()
                if job.done():  # finished meanwhile by another process
                    continue
                holder = lock.holder(job.workdir)
                if holder:
                    display.event(f"{job.name} is being run by another process ({holder}); waiting for it")
                    waiting.append((job, attempt))
                    continue
                running.append(start(job, free.pop(0), attempt))
                display.event(f"{job.name}: started on {running[-1].slot.label}"
                              + (f" (attempt {attempt})" if attempt > 1 else ""))
            for run in [r for r in running if r.process.poll() is not None]:
                running.remove(run)
                free.append(run.slot)
                retry = finished(run, display, missing)
                if retry:
                    queue.append((run.job, run.attempt + 1))
            for run in running:
                run.progress.update()
            display.status({**{r.job.name: f"{r.progress.describe(r.job.config)} [{r.slot.label}], "
                                           f"{progress.duration(time.monotonic() - r.started)}"
                               for r in running},
                            **{job.name: "waiting for the process that runs it" for job, _ in waiting}})
            time.sleep(POLL_S if running or waiting else 0)
    finally:
        if running:
            display.event(f"stopping {len(running)} running split(s); the same command resumes them")
        stop(running)
    return missing


def finished(run: Running, display: Display, missing: dict) -> bool:
    """Reports a split's end; True when it failed and has a retry left."""
    job, code = run.job, run.process.returncode
    if job.done():
        display.event(f"{job.name}: done")
        return False
    if code == 0:  # train.stop_at_step: it stopped on purpose; the same command continues it
        display.event(f"{job.name}: stopped before its last step (train.stop_at_step)")
        missing[job] = "stopped before its last step (train.stop_at_step)"
        return False
    if code == EXIT_PREEMPTED:  # a signal to the split alone: it saved its step; go on from there
        display.event(f"{job.name}: stopped by a signal after a checkpoint; resuming it")
        run.attempt -= 1  # not a failure: the retry is not used up
        return True
    how = f"exit code {code}" if code > 0 else f"killed by signal {-code}"
    log = job.workdir / LOG
    tail = "\n".join(f"    | {line}" for line in log_tail(log, run.log_start))
    retry = run.attempt <= RETRIES
    display.event(f"{job.name}: FAILED ({how}, attempt {run.attempt} of {RETRIES + 1}); the end of "
                  f"{log}:\n{tail}\n" + (f"{job.name}: retrying" if retry else
                                          f"{job.name}: left out of the table"))
    if not retry:
        missing[job] = f"failed {run.attempt} times ({how}); see {log}"
    return retry


def stop(running: list[Running]) -> None:
    """Ends the splits still running (the launcher is interrupted or preempted): SIGTERM, on which
    each writes a checkpoint of its step in flight and exits (bpclip_jax.preempt), then SIGKILL
    for any still running after STOP_GRACE_S in all. Each resumes at the next start."""
    for run in running:
        run.process.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    for run in running:
        try:
            run.process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            run.process.kill()
            run.process.wait()


# ------------------------------------------------------------------------------ the table


def aggregate(done: dict[int, dict], paper: dict) -> dict:
    """{test set: {metric: (mean, std, n)}} over the finished splits (std with ddof=0), with the
    paper's (PLCC, SRCC) under 'paper' where the config has them."""
    table = {}
    sets = sorted({k for results in done.values() for k in results if k != "selection"})
    for name in sets:
        rows = [r[name] for r in done.values() if name in r]
        table[name] = {m: (float(np.mean([r[m] for r in rows])), float(np.std([r[m] for r in rows])),
                           len(rows)) for m in METRIC_NAMES}
        if name in paper:
            table[name]["paper"] = paper[name]
    return table


def selections(done: dict[int, dict]) -> list[str]:
    """How the splits' checkpoints were selected (results.json's selection.how), each once."""
    hows = [r.get("selection", {}).get("how", "not recorded (results.json has no selection)")
            for r in done.values()]
    return list(dict.fromkeys(hows))


def optimistic(how: str) -> bool:
    return "selected on test" in how


def summarize(jobs: list[Job], missing: dict[Job, str], paper: dict, settings: dict) -> dict:
    """table.json's content: per variant its switches (`settings`, from `variants`), the finished
    splits, the missing ones and why, how the checkpoints were selected and the metrics."""
    runs = {}
    for variant in dict.fromkeys(j.variant for j in jobs):
        own = [j for j in jobs if j.variant == variant]
        done = {j.seed: json.loads((j.workdir / RESULTS).read_text()) for j in own if j.done()}
        hows = selections(done)
        runs[variant] = {
            "settings": settings[variant], "done": sorted(done),
            "missing": {j.seed: missing.get(j, f"no {RESULTS} in {j.workdir}") for j in own if not j.done()},
            "selection": hows, "optimistic": any(optimistic(h) for h in hows),
            "sets": aggregate(done, paper)}
    return runs


def _selection_cell(hows: list[str]) -> str:
    return "; ".join(f"**{h}**" if optimistic(h) else h for h in hows) or "-"


def markdown(runs: dict, title: str, splits: int) -> str:
    """table.md: one row per test set (and variant), the splits each mean covers, how their
    checkpoints were selected, and below the table what is missing or optimistic."""
    with_variants = any(runs)
    head = ["test set", *(["variant"] if with_variants else []), "splits", "PLCC", "SRCC",
            "PLCC (logistic)", "KRCC", "paper PLCC / SRCC", "checkpoint selected by"]
    seeds = f"{splits} splits (seeds 0-{splits - 1})" if splits > 1 else "1 split (seed 0)"
    lines = [f"# {title}: mean ± std over {seeds}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    sets = sorted({s for run in runs.values() for s in run["sets"]})
    for name in sets:
        for variant, run in runs.items():
            row = run["sets"].get(name)
            if row is None:
                continue
            cells = [name, *([variant] if with_variants else []), f"{row['srcc'][2]} of {splits}",
                     *(f"{row[m][0]:.4f} ± {row[m][1]:.4f}" for m in METRIC_NAMES[:4]),
                     "{:.3f} / {:.3f}".format(*row["paper"]) if "paper" in row else "-",
                     _selection_cell(run["selection"])]
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if with_variants:
        lines += [f"- {variant}: " + ", ".join(f"model.{k}={v}" for k, v in run["settings"].items())
                  for variant, run in runs.items()] + [""]
    for variant, run in runs.items():
        where = f" ({variant})" if variant else ""
        if run["missing"]:
            lines.append(f"**Missing**{where}, not in the means: " + "; ".join(
                f"split {seed}: {why}" for seed, why in run["missing"].items()))
        if run["optimistic"]:
            lines.append(f"**Selected on test: optimistic**{where}. The checkpoint was chosen by SRCC on "
                         f"the part it is tested on (the pyiqa/TOPIQ practice): an upper bound, not a "
                         f"held-out result.")
    return "\n".join(lines).rstrip() + "\n"


# ------------------------------------------------------------------------------ the command


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.only is not None and FLAGS.aggregate_only:
        raise app.UsageError("--only runs one split, --aggregate_only runs none: give one of them")
    if not MAIN.is_file():
        raise UserError(f"{MAIN} is missing: run the protocol from a checkout of the repository")
    config, workdir = FLAGS.config, Path(FLAGS.workdir)
    config_arg = FLAGS["config"].serialize()
    runs = variants(config, FLAGS.variants)
    seeds = [FLAGS.only] if FLAGS.only is not None else range(FLAGS.splits)
    jobs = plan(config, config_arg, overrides(), workdir, seeds, runs)
    check_configs(jobs)
    missing = {}
    if not FLAGS.aggregate_only:
        free = slots(visible_gpus(FLAGS.devices), FLAGS.parallel, config.data.batch_size)
        # SIGTERM (a preempted or timed-out SLURM job) or Ctrl-C: every running split is asked to
        # checkpoint and stop, and the launcher exits 75 (130): the same command resumes them.
        with preempt.Signals(jax_processes=False) as signals, signals.interruptible():
            missing = run_jobs(jobs, free, Display())
    if FLAGS.only is not None:
        if missing:
            raise UserError("; ".join(f"{j.name}: {why}" for j, why in missing.items()))
        print(f"split {FLAGS.only} done; the table: the same command with --aggregate_only instead of "
              f"--only", flush=True)
        return
    write_table(jobs, missing, runs, workdir)


def write_table(jobs: list[Job], missing: dict[Job, str], runs: dict, workdir: Path) -> None:
    spec = FLAGS["config"].serialize().partition("=")[2]   # FILE[:arg]
    config_file, _, config_arg = spec.partition(":")
    paper = runpy.run_path(config_file).get("PAPER", {})
    table = summarize(jobs, missing, paper, runs)
    if not any(run["done"] for run in table.values()):
        raise UserError(f"no split of {workdir} has {RESULTS} yet"
                        + ("" if FLAGS.aggregate_only else f"; see their {LOG}"))
    title = Path(config_file).stem + (f":{config_arg}" if config_arg else "")
    text = markdown(table, title, FLAGS.splits)
    atomic_write(workdir / "table.json", json.dumps({"config": title, "splits": FLAGS.splits,
                                                     "runs": table}, indent=1) + "\n")
    atomic_write(workdir / "table.md", text)
    print(text, flush=True)
    lost = sum(len(run["missing"]) for run in table.values())
    if lost:
        raise UserError(f"{lost} split(s) have no results; {workdir / 'table.md'} says which")


if __name__ == "__main__":
    define_flags()
    flags.mark_flags_as_required(["config", "workdir"])
    cli.run(main)
