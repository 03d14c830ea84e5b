"""IQA metrics over a whole split at once (numpy/scipy): SRCC, PLCC, PLCC after the VQEG logistic
fit, KRCC, RMSE. `pred` and `mos` are 1-D arrays of equal length; ties are handled as scipy does."""

from __future__ import annotations

import warnings

import numpy as np
from scipy import optimize, stats


def _pair(pred, mos) -> tuple[np.ndarray, np.ndarray]:
    pred, mos = np.asarray(pred, np.float64).ravel(), np.asarray(mos, np.float64).ravel()
    if pred.shape != mos.shape:
        raise ValueError(f"pred has {pred.size} values, mos {mos.size}")
    if pred.size < 2:
        raise ValueError("correlations need at least two values")
    return pred, mos


def srcc(pred, mos) -> float:
    """Spearman rank correlation."""
    return float(stats.spearmanr(*_pair(pred, mos))[0])


def plcc(pred, mos) -> float:
    """Pearson linear correlation of the raw predictions."""
    return float(stats.pearsonr(*_pair(pred, mos))[0])


def krcc(pred, mos) -> float:
    """Kendall rank correlation (tau-b)."""
    return float(stats.kendalltau(*_pair(pred, mos))[0])


def rmse(pred, mos) -> float:
    """Root mean squared error of the raw predictions against the labels (same scale)."""
    pred, mos = _pair(pred, mos)
    return float(np.sqrt(np.mean((pred - mos) ** 2)))


def logistic4(x, b1, b2, b3, b4):
    """VQEG's 4-parameter logistic: (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2. Far below b3
    (a steep fit) exp overflows to inf and the term is its limit, 0: not worth a warning."""
    with np.errstate(over="ignore"):
        return (b1 - b2) / (1.0 + np.exp(-(x - b3) / (np.abs(b4) + 1e-12))) + b2


def fit_logistic(pred, mos) -> np.ndarray:
    """Parameters of logistic4 mapping pred to mos (least squares), starting from VQEG's guess."""
    pred, mos = _pair(pred, mos)
    start = [mos.max(), mos.min(), np.mean(pred), np.std(pred) / 4 + 1e-6]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            params, _ = optimize.curve_fit(logistic4, pred, mos, p0=start, maxfev=20000)
        except RuntimeError:  # no convergence: the identity-like start is the honest fallback
            params = np.asarray(start)
    return params


def plcc_logistic(pred, mos) -> float:
    """Pearson correlation after fitting the 4-parameter logistic from pred to mos."""
    pred, mos = _pair(pred, mos)
    return plcc(logistic4(pred, *fit_logistic(pred, mos)), mos)


def all_metrics(pred, mos) -> dict[str, float]:
    """{srcc, plcc, plcc_logistic, krcc, rmse, n} of one split."""
    pred, mos = _pair(pred, mos)
    return dict(srcc=srcc(pred, mos), plcc=plcc(pred, mos), plcc_logistic=plcc_logistic(pred, mos),
                krcc=krcc(pred, mos), rmse=rmse(pred, mos), n=int(pred.size))
