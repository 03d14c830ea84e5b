"""A run is read back with its own config: evaluation builds the model and split from config.json,
a resume refuses a changed config, and the checkpoint selection is honest and labelled."""

import json

import pytest

import data_pipelines
from bpclip_jax import data, run_config, train
from bpclip_jax.errors import UserError, WorkdirError
from configs import base, koniq_nr
from data_pipelines import split
from tests import data_fixtures
from tests.runs import same_results, tiny_config


def test_resume_refuses_every_changed_field_but_runtime_ones(kadid_root):
    saved = tiny_config(kadid_root)
    same = tiny_config("/elsewhere", log_every=7, stop_at_step=2)
    same.data.threads = 5
    run_config.check_resume(saved, same, "runs/x")  # roots, threads, logging: allowed
    changed = tiny_config(kadid_root)
    changed.optim.lr = 3e-4
    changed.model.direction = "top_down"
    changed.data.split_seed = 4
    with pytest.raises(WorkdirError, match=r"data.split_seed: 0 in config.json, 4 now; "
                                           r"model.direction: 'bottom_up' in config.json, 'top_down' now; "
                                           r"optim.lr: 0.0001 in config.json, 0.0003 now"):
        run_config.check_resume(saved, changed, "runs/x")


def test_config_json_round_trips(kadid_root, tmp_path):
    config = tiny_config(kadid_root)
    config.model.direction = "top_down"
    run_config.write(config, tmp_path)
    assert run_config.differences(run_config.read(tmp_path), config) == {}


@pytest.mark.parametrize("learn_tau, head", [(False, "softmax"), (True, "softmax_learned")])
def test_a_config_json_from_before_the_text_heads_reads_as_the_model_it_trained(tmp_path, learn_tau, head):
    """Runs before `model.text_head` regressed on the prompt softmax, with uniform 0.995 stand-ins:
    today's defaults (cosine head, CLIP-like stand-ins) share their parameter tree, so reading
    them as today's would restore without error and score wrongly."""
    config = base.get_config("tiny")
    saved = json.loads(config.to_json_best_effort())
    del saved["model"]["text_head"], saved["model"]["stand_in_text"]
    saved["model"]["learn_tau"] = learn_tau
    (tmp_path / "config.json").write_text(json.dumps(saved))
    old = run_config.read(tmp_path)
    assert (old.model.text_head, old.model.stand_in_text) == (head, "uniform:0.995")
    assert "learn_tau" not in old.model
    assert set(run_config.run_differences(old, config)) == {"model.stand_in_text", "model.text_head"}


def _one_step(config):
    """One epoch of one step: a run with a selected checkpoint and test results, at least cost."""
    config.train.steps_per_epoch = config.optim.epochs = 1
    return config


@pytest.fixture(scope="module")
def top_down_run(kadid_root, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("top_down")
    config = _one_step(tiny_config(kadid_root))
    config.model.direction = "top_down"
    return workdir, train.train_and_evaluate(config, workdir)


@pytest.mark.slow
def test_evaluation_builds_the_model_the_run_was_trained_with(top_down_run, kadid_root, capsys):
    workdir, results = top_down_run
    again = train.evaluate_workdir(_one_step(tiny_config(kadid_root)), workdir)  # a bottom-up command line
    assert same_results(again, results)
    assert "model.direction='top_down'" in capsys.readouterr().out
    assert same_results(train.evaluate_workdir(None, workdir), results)  # no --config: the run's own
    with pytest.raises(UserError, match=r"model.direction: 'top_down' in .*config.json, 'bottom_up' on "
                                        r"the command line"):
        train.evaluate_workdir(_one_step(tiny_config(kadid_root)), workdir, {"model.direction": "bottom_up"})


@pytest.mark.slow
def test_a_resumed_run_must_be_the_run_it_continues(top_down_run, kadid_root):
    workdir, _ = top_down_run
    with pytest.raises(WorkdirError, match="refusing to resume it: model.direction"):
        train.train_and_evaluate(_one_step(tiny_config(kadid_root)), workdir)


@pytest.mark.slow
def test_best_checkpoints_hold_no_optimizer_state(trained):
    import orbax.checkpoint as ocp

    workdir, results = trained
    step = results["selection"]["step"]
    best = ocp.StandardCheckpointer().restore(workdir / f"checkpoints/best/{step}/state")
    latest = ocp.StandardCheckpointer().restore(workdir / "checkpoints/latest/6/state")
    assert set(best) == {"params"} and set(latest) == {"step", "params", "opt_state"}


# ------------------------------------------------------------------------------ selection


def test_nr_protocols_select_on_a_part_held_out_of_training_and_test_the_same_images(tmp_path):
    root = data_fixtures.koniq(tmp_path, n=40)
    config = koniq_nr.get_config("tiny")
    config.data.root = str(root)
    parts = data.load_parts(config.data)
    plain = split(data_pipelines.load("koniq10k", root), (8, 2), 0, by_content=False)
    assert set(parts) == {"train", "val", "test"} and len(parts["val"]) == 3  # 0.1 of 32
    assert parts["test"] == plain["test"]  # the reported part is the 8:2 split's, untouched
    assert sorted(r.dist for r in parts["train"] + parts["val"]) == sorted(r.dist for r in plain["train"])
    assert not {r.dist for r in parts["val"]} & {r.dist for r in parts["train"]}
    assert train.selection_label(config) == "best koniq10k/val SRCC (0.1 of the training part held out)"
    config.data.select_part = "test"  # pyiqa's practice: no held-out part, labelled
    assert set(data.load_parts(config.data)) == {"train", "test"}
    assert "selected on test, optimistic" in train.selection_label(config)


def test_cross_dataset_selection_holds_out_whole_references(kadid_root):
    from configs import kadid_cross

    config = kadid_cross.get_config("tiny")
    config.data.root = str(kadid_root)
    config.data.val_holdout = 0.2
    config.data.cross = type(config.data.cross)()
    parts = data.load_parts(config.data)
    val, rest = {r.content for r in parts["val"]}, {r.content for r in parts["all"]}
    assert len(val) == 1 and len(rest) == 4 and not val & rest


def test_no_protocol_tests_the_last_checkpoint_of_the_periodic_cosine():
    import importlib
    import pathlib

    for path in sorted(pathlib.Path(base.__file__).parent.glob("*.py")):
        if path.stem in ("__init__", "base"):
            continue
        config = importlib.import_module(f"configs.{path.stem}").get_config()
        assert config.data.select_part, path.stem


@pytest.mark.slow
def test_results_say_how_the_checkpoint_was_selected(trained):
    workdir, results = trained
    assert results["selection"]["how"] == "best kadid10k/val SRCC"
    assert json.loads((workdir / "results.json").read_text())["selection"] == results["selection"]


def test_eval_without_config_applies_the_command_lines_overrides_to_the_runs_config(kadid_root):
    saved = tiny_config(kadid_root)
    config, taken = run_config.for_evaluation(saved, None, {"data.root": "/elsewhere"}, "W")
    assert config.data.root == "/elsewhere" and config.model == saved.model and taken == {}
    with pytest.raises(UserError, match=r"model.direction: 'bottom_up' in W/config.json, 'top_down' on "):
        run_config.for_evaluation(saved, None, {"model.direction": "top_down"}, "W")
