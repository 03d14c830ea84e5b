"""`--mode predict`: one-line refusals before the model loads, rows that survive a failed image, a
crash or Ctrl-C, resuming, pairs files in the datasets' own format, and the size hint."""

import csv
import subprocess
import sys
from pathlib import Path

import ml_collections
import numpy as np
import pytest

from bpclip_jax import api, predict
from bpclip_jax.api import Scorer
from bpclip_jax.errors import UserError
from bpclip_jax.inputs import SizePolicy
from configs import base
from tests import data_fixtures
from tests.run_fixtures import huge_png, untrained_workdir

ROOT = Path(__file__).parent.parent


def main_py(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """main.py in a subprocess (it inherits the session's compilation cache: tests/conftest.py)."""
    return subprocess.run([sys.executable, "main.py", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout)


def error_line(out: subprocess.CompletedProcess) -> str:
    """The one line a user error prints; fails if there is a traceback instead."""
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    lines = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, out.stderr[-2000:]
    return lines[0]


def read_rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def predict_cfg(inputs, **overrides) -> ml_collections.ConfigDict:
    cfg = base.get_config().predict
    cfg.inputs = str(inputs)
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


@pytest.fixture(scope="module")
def nr_workdir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("nr_run")
    untrained_workdir(workdir, full_reference=False, dataset="koniq10k")
    return workdir


@pytest.mark.slow
def test_mistakes_are_refused_in_one_line_before_the_model_loads(tmp_path):
    """Each of these needs only config.json: the refusal comes before any checkpoint is read."""
    fr, images = tmp_path / "fr_run", tmp_path / "images"
    untrained_workdir(fr, full_reference=True, checkpoints=False)
    data_fixtures.image(images / "a.png", 1)
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnope")
    (tmp_path / "pairs.csv").write_text("image_name,mos\na.png,3\n")
    (fr / "predictions.csv").write_text("file\n")
    flag = "--config.predict."
    a_png, broken = str(images / "a.png"), str(images / "broken.png")
    runs = {  # name: (workdir, flags)
        "no refs": (fr, [flag + "inputs", str(images)]),
        "bad pairs": (fr, [flag + "inputs", str(images), flag + "refs", str(tmp_path / "pairs.csv")]),
        "exists": (fr, [flag + "inputs", a_png, flag + "refs", a_png]),
        "nothing scorable": (fr, [flag + "inputs", broken, flag + "refs", a_png,
                                  flag + "output", str(tmp_path / "out.csv")]),
        "no config.json": (tmp_path, [flag + "inputs", str(images)]),
        "no model, overwrite": (fr, [flag + "inputs", a_png, flag + "refs", a_png,
                                     flag + "overwrite=True"]),
    }
    procs = {name: subprocess.Popen(
        [sys.executable, "main.py", "--mode", "predict", "--workdir", str(workdir), *args], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name, (workdir, args) in runs.items()}
    outs = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        outs[name] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert all(out.returncode == 1 for out in outs.values()), {k: v.stderr[-500:] for k, v in outs.items()}
    assert "holds a full-reference model (trained on KADID-10k): give each image's reference with " \
           "--config.predict.refs" in error_line(outs["no refs"])
    assert "a pairs CSV needs a column naming the distorted image (dist or dist_img or distorted or image) " \
           "and one naming its reference (ref or ref_img or reference); its columns are: image_name, mos" \
           in error_line(outs["bad pairs"])
    line = error_line(outs["exists"])
    assert "predictions.csv exists" in line and "--config.predict.resume=True" in line \
           and "--config.predict.overwrite=True" in line
    assert (fr / "predictions.csv").read_text() == "file\n"
    assert "none of the 1 images can be scored" in error_line(outs["nothing scorable"])
    # a model that cannot be loaded costs the CSV nothing, even with overwrite
    assert "holds no checkpoint" in error_line(outs["no model, overwrite"])
    assert (fr / "predictions.csv").read_text() == "file\n"
    assert "holds no config.json" in error_line(outs["no config.json"])


@pytest.mark.slow
def test_a_huge_image_fails_its_row_and_the_others_are_written(nr_workdir, tmp_path):
    """A 225-megapixel PNG (PIL's DecompressionBombError) used to end the run with rc 1 and no CSV."""
    images = tmp_path / "images"
    for i in range(2):
        data_fixtures.image(images / f"ok{i}.png", i, size=(32, 48))
    huge_png(images / "huge.png")
    output = tmp_path / "scores.csv"
    out = main_py("--mode", "predict", "--workdir", str(nr_workdir), "--config.predict.inputs", str(images),
                  "--config.predict.output", str(output))
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {Path(r["file"]).name: r for r in read_rows(output)}
    assert set(rows) == {"ok0.png", "ok1.png", "huge.png"}
    huge = rows["huge.png"]["error"]
    assert "too large to decode" in huge and "225000000 pixels" in huge
    expected = Scorer.from_workdir(nr_workdir)([images / "ok0.png", images / "ok1.png"])  # one batch too
    for name, score in zip(("ok0.png", "ok1.png"), expected):
        assert not rows[name]["error"] and rows[name]["scored_size"] == "48x32"
        assert float(rows[name]["score"]) == pytest.approx(score, abs=1e-4)
    assert "2 scored, 1 failed" in out.stdout


@pytest.mark.slow
def test_rows_survive_an_interrupt_and_resume_scores_only_the_rest(nr_workdir, tmp_path, monkeypatch):
    images = tmp_path / "images"
    for i in range(3):
        data_fixtures.image(images / f"im{i}.png", 10 + i, size=(32, 32))
    output = tmp_path / "predictions.csv"
    calls = []
    run = Scorer.run

    def interrupted_on_the_third(self, pairs):
        calls.append(len(pairs))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return run(self, pairs)

    monkeypatch.setattr(Scorer, "run", interrupted_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        api.predict_command(predict_cfg(images, output=str(output), batch_size=1), nr_workdir)
    assert [Path(r["file"]).name for r in read_rows(output)] == ["im0.png", "im1.png"]  # flushed rows

    with pytest.raises(UserError, match="resume=True scores only the images it lacks"):
        api.predict_command(predict_cfg(images, output=str(output)), nr_workdir)
    monkeypatch.setattr(Scorer, "run", lambda self, pairs: calls.append(len(pairs)) or run(self, pairs))
    calls.clear()
    api.predict_command(predict_cfg(images, output=str(output), resume=True), nr_workdir)
    rows = read_rows(output)
    assert [Path(r["file"]).name for r in rows] == ["im0.png", "im1.png", "im2.png"] and calls == [1]
    assert all(r["error"] == "" and np.isfinite(float(r["score"])) for r in rows)

    def bug(self, pairs):
        raise RuntimeError("a bug in the model code")

    monkeypatch.setattr(Scorer, "run", bug)  # a bug is no image's fault: it propagates, traceback kept
    with pytest.raises(RuntimeError, match="a bug in the model code"):
        api.predict_command(predict_cfg(images, output=str(tmp_path / "other.csv")), nr_workdir)


def test_resume_keeps_scored_rows_and_drops_failed_and_cut_ones(tmp_path):
    path = tmp_path / "predictions.csv"
    header = ",".join(predict.PREDICTION_COLUMNS)
    blank = "," * (len(predict.PREDICTION_COLUMNS) - 6)
    path.write_text(f"{header}\na.png,,3.5,0.6,32x32{blank},\nb.png,,,,{blank},cannot decode b.png\n"
                    f"c.png,,3.1,0.5,32x32{blank},\nd.png,,3.")  # d: a line cut by a kill
    sink = predict.PredictionsFile(path, resume=True)
    sink.close()
    assert sink.done == {("a.png", ""), ("c.png", "")}
    assert [r["file"] for r in read_rows(path)] == ["a.png", "c.png"]
    with pytest.raises(UserError, match="exclude each other"):
        predict.PredictionsFile(path, resume=True, overwrite=True)
    predict.PredictionsFile(path, overwrite=True).close()
    assert read_rows(path) == []
    (tmp_path / "other.csv").write_text("path,score\nx.png,1\n")
    with pytest.raises(UserError, match="was not written by --mode predict"):
        predict.PredictionsFile(tmp_path / "other.csv", resume=True)


def test_the_datasets_own_score_file_pairs_images_with_references(tmp_path):
    """KADID-10k's dmos.csv (dist_img,ref_img,dmos,var) used to fail with KeyError: 'dist'."""
    root = data_fixtures.kadid(tmp_path / "kadid", refs=2, per_ref=2)
    cfg = predict_cfg(root / "images", refs=str(root / "dmos.csv"))
    dists, refs, note = predict.select_inputs(cfg)
    assert [d.name for d in dists] == ["I01_01_01.png", "I01_02_02.png", "I02_01_01.png", "I02_02_02.png"]
    assert [r.name for r in refs] == ["I01.png", "I01.png", "I02.png", "I02.png"]
    assert all(r.is_file() for r in refs) and note == f"skipped 2 images that {cfg.refs} lists as references"
    (tmp_path / "pairs.csv").write_text("dist,ref\nI01_01_01.png,images/I01.png\n")
    table = predict.PairsTable.read(tmp_path / "pairs.csv")
    assert table.reference_of(root / "images" / "I01_01_01.png") == tmp_path / "images" / "I01.png"
    assert table.reference_of(root / "images" / "I02_01_01.png") is None


def test_a_missing_reference_fails_its_row_before_the_model_loads(tmp_path):
    root = data_fixtures.kadid(tmp_path / "kadid", refs=1, per_ref=2)
    (root / "images" / "I01.png").unlink()
    dists = predict.list_images(str(root / "images"))
    jobs = predict.plan(dists, predict.pair_references(dists, str(root / "dmos.csv")), SizePolicy(),
                        full_reference=True, refs_spec="dmos.csv")
    assert [j.error.endswith("I01.png: no such file") for j in jobs] == [True, True]


def test_many_sizes_suggest_size_step(tmp_path, capsys):
    sizes = [(24 + 2 * i, 32) for i in range(9)]
    files = [tmp_path / f"s{i}.png" for i in range(len(sizes))]
    for i, (f, size) in enumerate(zip(files, sizes)):
        data_fixtures.image(f, i, size=size)
    sink = predict.PredictionsFile(tmp_path / "out.csv")
    for policy, hinted in ((SizePolicy(), True), (SizePolicy(size_step=64), False)):
        predict._announce(predict.plan(files, None, policy, full_reference=False), sink, policy, "")
        said = capsys.readouterr().out
        assert ("these images come in 9 sizes" in said and "--config.predict.size_step=64" in said
                and "scores then differ slightly from the protocol's" in said) == hinted
    sink.close()
