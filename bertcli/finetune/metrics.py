"""The fine-tuning metrics GLUE reports, on plain sequences of predictions and references.

accuracy, F1 of the positive class (label id 1), Matthews correlation (CoLA), Pearson and
Spearman correlation (STS-B). Each is the textbook formula, checked against scikit-learn and
scipy in the tests; degenerate inputs (one class only, a constant series) give 0.0, as
scikit-learn's matthews_corrcoef and f1_score (zero_division=0) do, rather than NaN.
This module does not choose which metric a task reports (glue.py and `task_metrics` do).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def accuracy(predictions: Sequence[int], references: Sequence[int]) -> float:
    p, r = _pair(predictions, references)
    return float((p == r).mean())


def f1(predictions: Sequence[int], references: Sequence[int], positive: int = 1) -> float:
    """F1 of the `positive` class: 2·TP / (2·TP + FP + FN); 0.0 when there is no positive anywhere."""
    p, r = _pair(predictions, references)
    tp = int(((p == positive) & (r == positive)).sum())
    fp = int(((p == positive) & (r != positive)).sum())
    fn = int(((p != positive) & (r == positive)).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def matthews_correlation(predictions: Sequence[int], references: Sequence[int]) -> float:
    """Matthews correlation, multiclass form (Gorodkin 2004), which for two classes is
    (TP·TN − FP·FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN))."""
    p, r = _pair(predictions, references)
    classes = np.union1d(p, r)
    confusion = np.zeros((len(classes), len(classes)), dtype=np.float64)
    np.add.at(confusion, (np.searchsorted(classes, r), np.searchsorted(classes, p)), 1)
    t, pr = confusion.sum(1), confusion.sum(0)  # true and predicted count of each class
    c, s = np.trace(confusion), confusion.sum()
    denominator = math.sqrt((s * s - pr @ pr) * (s * s - t @ t))
    return float((c * s - t @ pr) / denominator) if denominator else 0.0


def pearson(predictions: Sequence[float], references: Sequence[float]) -> float:
    p, r = (np.asarray(x, dtype=np.float64) for x in _pair(predictions, references))
    p, r = p - p.mean(), r - r.mean()
    denominator = math.sqrt(float(p @ p) * float(r @ r))
    return float(p @ r / denominator) if denominator else 0.0


def spearman(predictions: Sequence[float], references: Sequence[float]) -> float:
    """Pearson correlation of the ranks, ties given their average rank (as scipy.stats.spearmanr)."""
    p, r = _pair(predictions, references)
    return pearson(_ranks(p), _ranks(r))


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(1, len(x) + 1)
    values, inverse = np.unique(x, return_inverse=True)
    sums = np.bincount(inverse, weights=ranks)
    return (sums / np.bincount(inverse))[inverse]  # every tied value gets the mean of its ranks


def _pair(predictions, references) -> tuple[np.ndarray, np.ndarray]:
    p, r = np.asarray(predictions), np.asarray(references)
    if p.shape != r.shape or p.ndim != 1:
        raise ValueError(f"predictions {p.shape} and references {r.shape} must be two sequences of one length")
    if len(p) == 0:
        raise ValueError("no predictions to score")
    return p, r


def task_metrics(task_type: str, predictions, references, num_labels: int) -> dict[str, float]:
    """Every metric that applies: classification accuracy and Matthews (and F1 with two labels), or
    regression Pearson and Spearman (and the mean squared error)."""
    if task_type == "regression":
        p, r = np.asarray(predictions, dtype=np.float64), np.asarray(references, dtype=np.float64)
        return {"pearson": pearson(p, r), "spearman": spearman(p, r), "mse": float(((p - r) ** 2).mean())}
    metrics = {"accuracy": accuracy(predictions, references),
               "matthews_correlation": matthews_correlation(predictions, references)}
    if num_labels == 2:
        metrics["f1"] = f1(predictions, references)
    return metrics
