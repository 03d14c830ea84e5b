"""The SLURM recipe, with stand-ins for sbatch and scontrol: tasks ask for SIGTERM ahead of their time
limit and may be requeued; a task's wrapper passes SIGTERM to the protocol and requeues the task
when it stopped after a checkpoint (exit 75)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).parent.parent
# A command that stops as a preempted training run does: on SIGTERM, exit 75 after a moment.
CHILD = ("import signal, sys, time, pathlib\n"
         "def stop(signum, frame):\n"
         "    pathlib.Path(sys.argv[1]).write_text(str(signum)); time.sleep(0.5); sys.exit(75)\n"
         "signal.signal(signal.SIGTERM, stop)\n"
         "pathlib.Path(sys.argv[2]).write_text('ready')\n"
         "time.sleep(120)\n")


def _fake(bin_dir: Path, name: str, log: Path, output: str = "") -> None:
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / name
    script.write_text(f'#!/bin/bash\necho "{name} $*" >> {log}\n' + (f"echo {output}\n" if output else ""))
    script.chmod(0o755)


def test_the_wrapper_passes_sigterm_on_and_requeues_a_preempted_task(tmp_path):
    calls = tmp_path / "calls.txt"
    _fake(tmp_path / "bin", "scontrol", calls)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242"}
    got, ready = tmp_path / "got_signal", tmp_path / "ready"
    wrapper = subprocess.Popen([str(REPO / "scripts/requeue_on_preempt.sh"), sys.executable, "-c", CHILD,
                                str(got), str(ready)], env=env, stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + 60
    while not ready.exists():
        assert time.monotonic() < end and wrapper.poll() is None
        time.sleep(0.05)
    wrapper.send_signal(signal.SIGTERM)  # what `sbatch --signal=B:TERM@...` sends
    _, err = wrapper.communicate(timeout=60)
    assert wrapper.returncode == 75 and got.read_text() == str(int(signal.SIGTERM))
    assert calls.read_text() == "scontrol requeue 4242\n"
    assert "requeueing SLURM job 4242" in err


def test_the_wrapper_requeues_nothing_when_the_task_ends_otherwise(tmp_path):
    calls = tmp_path / "calls.txt"
    _fake(tmp_path / "bin", "scontrol", calls)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242"}
    for code in (0, 1):
        out = subprocess.run([str(REPO / "scripts/requeue_on_preempt.sh"), "bash", "-c", f"exit {code}"],
                             env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == code
    assert not calls.exists()


def test_slurm_protocol_asks_for_the_signal_ahead_of_the_limit_and_allows_requeue(tmp_path):
    calls = tmp_path / "calls.txt"
    _fake(tmp_path / "bin", "sbatch", calls, output="777")
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "GRACE": "240"}
    command = [str(REPO / "scripts/slurm_protocol.sh"), "configs/kadid_fr.py", str(tmp_path / "runs"), "3",
               "--config.data.root=/data/kadid"]
    out = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    array, table = calls.read_text().splitlines()
    assert "--array=0-2" in array and "--requeue" in array and "--signal=B:TERM@240" in array
    assert f"--wrap={REPO / 'scripts/requeue_on_preempt.sh'} python -m bpclip_jax.protocol" in array
    assert "--only $SLURM_ARRAY_TASK_ID" in array and "--config.data.root=/data/kadid" in array
    assert "--dependency=afterany:777" in table and "--aggregate_only" in table
