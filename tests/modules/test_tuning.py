"""Offline tuners: patient-grouped simulated hold-out, and the adaptively inexact hypergradient method."""

from __future__ import annotations

import pytest
import torch

from geot.modules.tuning import hypergradient_tune, patient_folds, simulated_holdout_tune


def test_folds_never_split_a_patient():
    patients = [f"P{i // 2:03d}" for i in range(30)] + ["P100"]  # upper and lower jaw per patient, one single
    folds = patient_folds(patients, k=4, seed=1)
    assert sorted(i for f in folds for i in f) == list(range(31))  # disjoint and complete
    for fold in folds:
        inside = {patients[i] for i in fold}
        assert all(patients[j] not in inside for other in folds if other is not fold for j in other)
    assert max(len(f) for f in folds) - min(len(f) for f in folds) <= 2
    with pytest.raises(ValueError):
        patient_folds(["a", "a"], k=2)


def test_tuner_picks_the_best_grid_point():
    patients = [f"P{i // 2}" for i in range(12)]
    calls = []

    def run(labelled, heldout, params):
        calls.append((set(labelled), set(heldout)))
        assert not set(labelled) & set(heldout)
        return -(params["threshold"] - 0.8) ** 2 + 0.01 * len(heldout)  # best at 0.8 on every fold

    grid = [{"threshold": t} for t in (0.5, 0.7, 0.8, 0.9)]
    best, means = simulated_holdout_tune(patients, grid, run, k=3)
    assert best == {"threshold": 0.8} and len(means) == 4 and means[2] == max(means)
    assert len(calls) == 12 and all(len(lab) + len(held) == 12 for lab, held in calls)


def ridge(seed: int = 2):
    d = torch.float64
    torch.manual_seed(seed)
    n, p = 12, 10
    w = torch.randn(p, dtype=d) * 0.3
    xt, xv = torch.randn(n, p, dtype=d), torch.randn(200, p, dtype=d)
    yt, yv = xt @ w + torch.randn(n, dtype=d), xv @ w + torch.randn(200, dtype=d)

    def inner(theta, h):
        return ((xt @ theta - yt) ** 2).mean() + torch.exp(h).sum() * (theta ** 2).sum()

    def outer(theta):
        return ((xv @ theta - yv) ** 2).mean()

    def closed(log_lam):
        return torch.linalg.solve(xt.T @ xt / n + torch.exp(log_lam) * torch.eye(p, dtype=d), xt.T @ yt / n)

    grid = torch.linspace(-6, 4, 10001, dtype=d)
    s, v = torch.linalg.eigh(xt.T @ xt / n)  # theta(lam) = V diag(1 / (s + lam)) V^T X^T y / n, all at once
    thetas = (v @ ((v.T @ (xt.T @ yt / n))[:, None] / (s[:, None] + torch.exp(grid)[None]))).T
    best = grid[((thetas @ xv.T - yv) ** 2).mean(1).argmin()]
    return inner, outer, closed, best, p


def test_hypergradient_finds_the_ridge_optimum():
    inner, outer, closed, best, p = ridge()
    assert -5 < best < 3  # an interior optimum
    h, theta, history = hypergradient_tune(inner, outer, torch.zeros(p, dtype=torch.float64),
                                           torch.tensor([-2.0], dtype=torch.float64), steps=40)
    assert h.item() == pytest.approx(best.item(), abs=0.01)
    torch.testing.assert_close(theta, closed(h[0]), atol=1e-3, rtol=0)


def test_accuracy_tightens_when_descent_fails():
    inner, outer, _, best, p = ridge()
    h, _, history = hypergradient_tune(inner, outer, torch.zeros(p, dtype=torch.float64),
                                       torch.tensor([-2.0], dtype=torch.float64), steps=40, tol0=1.0)
    assert all(a >= b for a, b in zip(history, history[1:], strict=False))  # never loosened
    assert history[0] == 1.0 and history[-1] < 1.0  # a failed descent made the solves more exact
    assert h.item() == pytest.approx(best.item(), abs=0.01)
