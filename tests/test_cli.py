"""A user's mistake on the command line ends in one line naming the problem and the fix, with a
non-zero exit, before any work starts (and without creating anything)."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parent.parent


def _main(*args, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "main.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def _one_line(out: subprocess.CompletedProcess, code: int) -> str:
    assert out.returncode == code, (out.returncode, out.stderr[-3000:])
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr[-3000:]
    return lines[0]


def test_an_unknown_override_names_the_section_fields_and_the_nearest(tmp_path):
    line = _one_line(_main("--config", "configs/kadid_fr.py", "--workdir", str(tmp_path / "w"),
                           "--config.optim.learning_rate=1e-3"), 2)
    assert "--config.optim.learning_rate: config.optim has no field 'learning_rate'" in line
    assert "did you mean config.optim.lr?" in line and "weight_decay" in line
    line = _one_line(_main("--config", "configs/kadid_fr.py", "--workdir", str(tmp_path / "w"),
                           "--config.optimizer.lr=1e-3"), 2)
    assert "config has no field 'optimizer' (did you mean config.optim?)" in line
    assert not (tmp_path / "w").exists()


def test_a_config_file_that_does_not_exist_stops_before_training(tmp_path):
    line = _one_line(_main("--config", "configs/nope.py", "--workdir", str(tmp_path / "w")), 2)
    assert "--config configs/nope.py: no such file" in line and "kadid_fr.py" in line
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("config", [None, "configs/demo_fr.py"])
def test_eval_of_an_empty_workdir_checks_it_first_and_creates_nothing(tmp_path, config):
    workdir = tmp_path / "empty"
    workdir.mkdir()
    args = ["--mode", "eval", "--workdir", str(workdir)] + (["--config", config] if config else [])
    line = _one_line(_main(*args), 1)
    assert f"{workdir} holds no config.json: it is not a training run's workdir" in line
    assert list(workdir.iterdir()) == []


def test_a_dataset_root_without_the_set_names_the_file_it_expected(tmp_path):
    line = _one_line(_main("--config", "configs/kadid_fr.py", "--workdir", str(tmp_path / "w"),
                           f"--config.data.root={tmp_path / 'nowhere'}"), 1)
    assert f"KADID-10k score file not found: expected {tmp_path / 'nowhere' / 'dmos.csv'}" in line


def test_flags_that_do_not_parse_get_one_line(tmp_path):
    line = _one_line(_main("--config", "configs/kadid_fr.py", "--workdir", str(tmp_path),
                           "--config.optim.lr=abc"), 2)
    assert "--config.optim.lr=abc" in line
    _one_line(_main("--mode", "train", "--workdir", str(tmp_path)), 2)  # train without --config
