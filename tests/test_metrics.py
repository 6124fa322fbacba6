import numpy as np
import pytest

from prism.metrics import regression_metrics


def test_regression_metrics_against_numpy():
    rng = np.random.default_rng(0)
    y = rng.normal(size=500)
    p = y + rng.normal(scale=0.5, size=500)
    m = regression_metrics(y, p.astype(np.float32))
    assert m["n"] == 500
    assert m["mse"] == pytest.approx(np.mean((p - y) ** 2), rel=1e-6)
    assert m["mae"] == pytest.approx(np.mean(np.abs(p - y)), rel=1e-6)
    assert m["pearson"] == pytest.approx(np.corrcoef(y, p)[0, 1], rel=1e-6)
    assert m["r2"] == pytest.approx(1 - np.sum((p - y) ** 2) / np.sum((y - y.mean()) ** 2), rel=1e-6)


def test_regression_metrics_edge_cases():
    assert np.isnan(regression_metrics([1, 2, 3], [1, 1, 1])["pearson"])
    with pytest.raises(ValueError, match="3 values"):
        regression_metrics([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="non-finite"):
        regression_metrics([1, 2], [1, np.nan])
