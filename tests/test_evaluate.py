"""The test-set scatter plot: what it draws and states, in the set's own scale."""

import numpy as np
import pytest
from PIL import Image

from bpclip_jax import evaluate, metrics
from data_pipelines.records import Record, normalize, to_mos


def _records(dataset: str, mos: np.ndarray) -> list[Record]:
    return [Record(dist=f"d{i}.png", ref=None, mos=float(m), score=normalize(float(m), dataset),
                   content=f"c{i}", dataset=dataset) for i, m in enumerate(mos)]


@pytest.mark.parametrize("dataset", ["kadid10k", "live"])
def test_scatter_states_metrics_step_and_scale_and_fits_over_the_predictions(dataset, tmp_path):
    rng = np.random.default_rng(0)
    lo, hi = {"kadid10k": (1.0, 5.0), "live": (0.0, 100.0)}[dataset]
    mos = rng.uniform(lo + 0.2 * (hi - lo), hi, 60)
    records = _records(dataset, mos)
    # predictions squeezed into a narrow band of the scale, as an undertrained model gives them
    pred = 0.45 + 0.1 * np.asarray([r.score for r in records]) + rng.normal(0, 0.01, mos.size)
    fig = evaluate.scatter_figure(records, pred, f"{dataset}/test", step=140)
    ax = fig.axes[0]
    mapped = to_mos(pred, dataset)
    m = metrics.all_metrics(mapped, mos)
    title = ax.get_title()
    assert "step 140" in title
    assert f"SRCC {m['srcc']:.3f}" in title and f"PLCC {m['plcc']:.3f}" in title and "n 60" in title
    direction = "higher" if dataset == "kadid10k" else "lower"
    for label in (ax.get_xlabel(), ax.get_ylabel()):
        assert f"{dataset} scale {lo:g}-{hi:g}, {direction} = better" in label
    assert ax.get_xlim()[0] <= lo and ax.get_xlim()[1] >= hi and ax.get_ylim() == ax.get_xlim()

    fit = next(line for line in ax.get_lines() if line.get_label().startswith("logistic fit"))
    x, y = fit.get_data()
    assert x.min() == pytest.approx(mapped.min()) and x.max() == pytest.approx(mapped.max())
    np.testing.assert_allclose(y, metrics.logistic4(x, *metrics.fit_logistic(mapped, mos)))
    assert f"PLCC {m['plcc_logistic']:.3f}" in fit.get_label()


    evaluate.scatter_plot(tmp_path / "scatter.png", records, pred, f"{dataset}/test", step=140)
    with Image.open(tmp_path / "scatter.png") as image:
        assert image.format == "PNG" and image.size == (672, 624)  # 5.6 x 5.2 inches at 120 dpi
