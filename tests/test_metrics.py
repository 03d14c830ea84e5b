"""Metrics against scipy (ties included) and the logistic fit; the schedule against torch."""

import warnings

import numpy as np
import pytest
from scipy import stats

from bpclip_jax import metrics
from bpclip_jax.train import epoch_lr, make_optimizer
from configs import base


@pytest.fixture
def tied():
    rng = np.random.default_rng(0)
    mos = np.round(rng.uniform(1, 5, 300), 1)            # many ties
    pred = np.round(mos + rng.normal(0, 0.7, 300), 0)    # ties too
    return pred, mos


def test_correlations_equal_scipy_with_ties(tied):
    pred, mos = tied
    assert metrics.srcc(pred, mos) == pytest.approx(stats.spearmanr(pred, mos)[0], abs=1e-12)
    assert metrics.plcc(pred, mos) == pytest.approx(stats.pearsonr(pred, mos)[0], abs=1e-12)
    assert metrics.krcc(pred, mos) == pytest.approx(stats.kendalltau(pred, mos)[0], abs=1e-12)
    assert metrics.rmse(pred, mos) == pytest.approx(np.sqrt(np.mean((pred - mos) ** 2)))
    assert 0.5 < metrics.srcc(pred, mos) < 0.95


def test_logistic_fit_recovers_a_logistic_relation():
    x = np.linspace(-3, 3, 200)
    mos = metrics.logistic4(x, 5.0, 1.0, 0.3, 0.6)
    assert metrics.plcc(x, mos) < 0.98  # non-linear: plain PLCC is lower
    assert metrics.plcc_logistic(x, mos) == pytest.approx(1.0, abs=1e-6)
    params = metrics.fit_logistic(x, mos)
    np.testing.assert_allclose(metrics.logistic4(x, *params), mos, atol=1e-4)


def test_a_steep_logistic_reaches_its_limits_without_a_warning():
    # a fit of near-binary predictions: far below b3, exp overflows and the term is 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        values = metrics.logistic4(np.array([0.0, 1.0, 2.0]), 5.0, 1.0, 1.0, 1e-5)
    np.testing.assert_array_equal(values, [1.0, 3.0, 5.0])


def test_all_metrics_and_bad_input(tied):
    result = metrics.all_metrics(*tied)
    assert set(result) == {"srcc", "plcc", "plcc_logistic", "krcc", "rmse", "n"} and result["n"] == 300
    with pytest.raises(ValueError, match="pred has 2 values, mos 3"):
        metrics.srcc([1, 2], [1, 2, 3])


def test_schedule_equals_torch_cosine_annealing_for_200_epochs():
    torch = pytest.importorskip("torch")
    optim = base.get_config().optim
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=optim.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=optim.t_max, eta_min=optim.eta_min)
    expected = []
    for _ in range(optim.epochs):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    ours = [float(epoch_lr(optim, e)) for e in range(optim.epochs)]
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-11)
    assert ours[50] < 1e-11 and ours[100] == pytest.approx(optim.lr) and ours[150] < 1e-11
    _, schedule = make_optimizer(optim, steps_per_epoch=7)  # per step: constant within an epoch
    assert [float(schedule(s)) for s in (0, 6, 7, 7 * 25)] == pytest.approx(
        [expected[0], expected[0], expected[1], expected[25]], rel=1e-5)
