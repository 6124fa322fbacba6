"""The one metrics function: every reported number comes from :func:`regression_metrics`."""

from __future__ import annotations

import math

import numpy as np

METRICS = ("mse", "mae", "pearson", "r2")


def regression_metrics(y_true, y_pred) -> dict:
    """Pooled metrics over one split, on the scale given (the paper: log10(CAGE + 1)).

    Returns ``{"mse", "mae", "pearson", "r2", "n"}``; Pearson is NaN when either side is constant.
    Computed in float64 whatever the input dtype.
    """
    y = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y_true has {y.size} values but y_pred has {p.size}")
    if y.size == 0:
        raise ValueError("no values to score")
    if not (np.isfinite(y).all() and np.isfinite(p).all()):
        raise ValueError("non-finite values among targets or predictions")
    err = p - y
    yc, pc = y - y.mean(), p - p.mean()
    denom = math.sqrt(float(yc @ yc) * float(pc @ pc))
    ss_tot = float(yc @ yc)
    return {
        "mse": float(np.mean(err**2)),
        "mae": float(np.mean(np.abs(err))),
        "pearson": float(yc @ pc) / denom if denom > 0 else float("nan"),
        "r2": 1.0 - float(err @ err) / ss_tot if ss_tot > 0 else float("nan"),
        "n": int(y.size),
    }
