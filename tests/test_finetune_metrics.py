"""finetune/metrics.py: known answers from scikit-learn and scipy, and the degenerate cases."""

from __future__ import annotations

import numpy as np
import pytest

from bertcli.finetune import metrics

sklearn_metrics = pytest.importorskip("sklearn.metrics")
stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("classes", [2, 3, 5])
def test_classification_metrics_equal_sklearn(seed, classes):
    rng = np.random.default_rng(seed)
    references = rng.integers(0, classes, 200)
    predictions = np.where(rng.random(200) < 0.6, references, rng.integers(0, classes, 200))
    assert metrics.accuracy(predictions, references) == pytest.approx(sklearn_metrics.accuracy_score(references, predictions))
    assert metrics.matthews_correlation(predictions, references) == pytest.approx(
        sklearn_metrics.matthews_corrcoef(references, predictions), abs=1e-12)
    assert metrics.f1(predictions, references) == pytest.approx(
        sklearn_metrics.f1_score(references == 1, predictions == 1, zero_division=0), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_correlations_equal_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    references = rng.integers(0, 6, 100).astype(float)  # many ties, as STS-B's 0-5 scores have
    predictions = references + rng.normal(0, 1.5, 100)
    predictions[:10] = predictions[0]  # ties among the predictions too
    assert metrics.pearson(predictions, references) == pytest.approx(stats.pearsonr(predictions, references)[0], abs=1e-12)
    assert metrics.spearman(predictions, references) == pytest.approx(stats.spearmanr(predictions, references)[0], abs=1e-12)


@pytest.mark.filterwarnings("ignore:A single label was found")  # sklearn, on purpose here
def test_degenerate_inputs_give_zero_as_sklearn_does():
    one_class = [1, 1, 1, 1]
    assert metrics.matthews_correlation(one_class, one_class) == sklearn_metrics.matthews_corrcoef(one_class, one_class) == 0.0
    assert metrics.f1([0, 0], [0, 0]) == 0.0
    assert metrics.pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) == 0.0
    assert metrics.accuracy([1, 0, 1], [1, 1, 1]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        metrics.accuracy([], [])
    with pytest.raises(ValueError):
        metrics.accuracy([1, 2], [1])


def test_task_metrics_names():
    assert set(metrics.task_metrics("classification", [0, 1], [0, 1], 2)) == {"accuracy", "f1", "matthews_correlation"}
    assert set(metrics.task_metrics("classification", [0, 2], [0, 1], 3)) == {"accuracy", "matthews_correlation"}
    assert set(metrics.task_metrics("regression", [0.1, 0.7, 0.2], [0.0, 1.0, 0.5], 1)) == {"pearson", "spearman", "mse"}
