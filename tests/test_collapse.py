"""The collapse alarm: every validation records the model's health (its predictions' spread against
the labels', the image-to-prompt cosines' spread across images), and a collapsed model is named in
one line with its likely cause and the flag to try."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from bpclip_jax import evaluate, train
from data_pipelines.records import Record
from tests.runs import tiny_config


def _records(scores):
    return [Record(dist=f"{i}.png", ref=None, mos=float(s), score=float(s), content=str(i),
                   dataset="koniq10k") for i, s in enumerate(scores)]


def test_health_tells_a_collapsed_model_from_a_live_one():
    records = _records(np.linspace(0.1, 0.9, 20))
    cosines = np.random.default_rng(0).normal(size=(20, 4, 40))
    live = evaluate.health(records, np.linspace(0.2, 0.8, 20), cosines)
    assert live["pred_std_ratio"] == pytest.approx(0.75) and live["cos_spread"] > 0.5
    assert not evaluate.collapsed(live)
    dead = evaluate.health(records, np.full(20, 0.6) + np.linspace(0, 1e-3, 20), np.ones((20, 4, 40)))
    assert dead["pred_std_ratio"] < 0.01 and dead["cos_spread"] == 0.0 and evaluate.collapsed(dead)
    assert evaluate.collapsed({"pred_std_ratio": float("nan")})
    assert "cos_spread" not in evaluate.health(records, np.linspace(0, 1, 20), None)


@pytest.mark.slow  # validates a model under each head (compiles three)
@pytest.mark.parametrize("head, cause", [
    ("softmax", "model.text_head=softmax) saturates: every image reads the same prompt. "
                "Try --config.model.text_head=cosine"),
    ("softmax_learned", "Try --config.model.text_head=cosine"),
    ("cosine", "one direction of the text space. Try a lower --config.optim.lr"),
])
def test_a_collapsed_model_is_named_at_validation_with_its_cause_and_the_flag_to_try(
        kadid_root, tmp_path, capsys, head, cause):
    """A tiny run whose text mapping MLP_x is driven to one output for every image (its last layer
    zeroed: x_i = its bias): the validation line and metrics.jsonl show the collapse, and one
    warning line names the likely cause and the flag to try."""
    config = tiny_config(kadid_root)
    config.model.text_head = head
    run = train.setup(config, tmp_path)
    try:
        params = run.state.params
        params["mlp_x"]["fc2"]["kernel"].value = jnp.zeros_like(params["mlp_x"]["fc2"]["kernel"].value)
        train._end_of_epoch(run, 3)
    finally:
        run.ckpt.close()
    out = capsys.readouterr().out.splitlines()
    line = next(x for x in out if x.startswith("step 3 (epoch 1): val SRCC"))
    assert "spread 0.00 of labels', cosines 0.0e+00" in line
    warning = [x for x in out if x.startswith("warning: collapse:")]
    assert len(warning) == 1 and cause in warning[0], out
    assert "predictions on val spread 0.00 of the labels', image-to-prompt cosines 0.0e+00" in warning[0]
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    val = next(r for r in rows if "val/srcc" in r)
    assert val["val/pred_std_ratio"] < 1e-3 and val["val/cos_spread"] == 0.0

