"""Offline hyper-parameter tuning helpers (no training-time module).

* ``simulated_holdout_tune`` (after "A practical approach to novel class discovery in tabular data"):
  choose hyper-parameters without touching the unlabelled scans by simulating the semi-supervised problem
  on the labelled ones: k patient-grouped folds, each fold's labelled scans treated as unlabelled in turn,
  ``run`` scores the held-out fold (pseudo-label mIoU, TIR, calibration, ...), and the grid point with the
  best mean score wins.
* ``hypergradient_tune`` (after the adaptively inexact first-order bilevel method): gradient descent on
  continuous hyper-parameters h of an inner problem min_theta f(theta, h), minimising a validation loss
  g(theta*(h)). The inner solve and the conjugate-gradient solve of the hypergradient run only to a
  tolerance eps_k, which is tightened whenever an outer step fails to decrease g. Meant for small inner
  problems (a head on frozen features, per-class thresholds), not a whole training run.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor


def patient_folds(patients: Sequence[str], k: int = 3, seed: int = 0) -> list[list[int]]:
    """Indices of the items, in ``k`` folds that never split a patient (both jaws stay together)."""
    unique = sorted(set(patients))
    if k < 2 or k > len(unique):
        raise ValueError(f"need 2 <= k <= {len(unique)} patients, got k={k}")
    random.Random(seed).shuffle(unique)
    fold_of = {p: i % k for i, p in enumerate(unique)}
    folds: list[list[int]] = [[] for _ in range(k)]
    for i, p in enumerate(patients):
        folds[fold_of[p]].append(i)
    return folds


def simulated_holdout_tune(patients: Sequence[str], grid: Sequence[dict[str, Any]],
                           run: Callable[[list[int], list[int], dict[str, Any]], float], k: int = 3,
                           seed: int = 0) -> tuple[dict[str, Any], list[float]]:
    """Best grid point by mean held-out score (higher is better), and the mean score of every point.

    ``run(labelled_indices, heldout_indices, params)`` trains with the held-out labelled scans as
    unlabelled data and returns a score measured on them against their true labels.
    """
    folds = patient_folds(patients, k, seed)
    means = []
    for params in grid:
        scores = []
        for i, heldout in enumerate(folds):
            labelled = [j for f, fold in enumerate(folds) if f != i for j in fold]
            scores.append(float(run(labelled, heldout, params)))
        means.append(sum(scores) / len(scores))
    best = max(range(len(grid)), key=lambda i: means[i])
    return dict(grid[best]), means


def _grad(value: Tensor, wrt: Tensor, create_graph: bool = False) -> Tensor:
    (g,) = torch.autograd.grad(value, wrt, create_graph=create_graph)
    return g


def _inner_solve(inner: Callable[[Tensor, Tensor], Tensor], theta: Tensor, h: Tensor, tol: float,
                 max_iter: int) -> Tensor:
    """Gradient descent with Armijo backtracking until ||grad_theta f|| <= tol."""
    theta = theta.detach().clone()
    step = 1.0
    for _ in range(max_iter):
        t = theta.requires_grad_(True)
        value = inner(t, h)
        g = _grad(value, t)
        if g.norm() <= tol:
            break
        theta = theta.detach()
        step = min(step * 2, 1e3)
        while step > 1e-12:
            candidate = theta - step * g
            if inner(candidate, h) <= value.detach() - 0.5 * step * g.pow(2).sum():
                break
            step /= 2
        theta = candidate.detach()
    return theta.detach()


def _conjugate_gradient(hvp: Callable[[Tensor], Tensor], b: Tensor, tol: float, max_iter: int) -> Tensor:
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = r.pow(2).sum()
    for _ in range(max_iter):
        if rs.sqrt() <= tol:
            break
        ap = hvp(p)
        alpha = rs / (p * ap).sum()
        x, r = x + alpha * p, r - alpha * ap
        new = r.pow(2).sum()
        p, rs = r + (new / rs) * p, new
    return x


def hypergradient(inner: Callable[[Tensor, Tensor], Tensor], outer: Callable[[Tensor], Tensor], theta: Tensor,
                  h: Tensor, tol: float, cg_iter: int = 100) -> Tensor:
    """dg/dh = -(d^2 f / dh dtheta) v with (d^2 f / dtheta^2) v = dg/dtheta (solved by CG to ``tol``)."""
    theta = theta.detach().requires_grad_(True)
    h = h.detach().requires_grad_(True)
    g_theta = _grad(outer(theta), theta)
    f_theta = _grad(inner(theta, h), theta, create_graph=True)

    def hvp(v: Tensor) -> Tensor:
        return torch.autograd.grad((f_theta * v).sum(), theta, retain_graph=True)[0]

    v = _conjugate_gradient(hvp, g_theta, tol, cg_iter)
    return -torch.autograd.grad((f_theta * v.detach()).sum(), h)[0]


def hypergradient_tune(inner: Callable[[Tensor, Tensor], Tensor], outer: Callable[[Tensor], Tensor],
                       theta0: Tensor, h0: Tensor, steps: int = 50, lr: float = 1.0, tol0: float = 1e-2,
                       tol_min: float = 1e-10, shrink: float = 0.1, max_inner: int = 500,
                       stop: float = 1e-6) -> tuple[Tensor, Tensor, list[float]]:
    """Minimise ``outer(theta*(h))`` over ``h``; returns (h, theta*(h), the tolerance used at each step).

    Each step solves the inner problem and the hypergradient to the current tolerance, then tries
    h - lr dg/dh with up to 5 halvings of lr (lr doubles after a full step succeeds); if none decreases g,
    the tolerance shrinks by ``shrink`` and the step is redone (the adaptive-accuracy rule).
    """
    h, tol = h0.detach().clone(), tol0
    theta = _inner_solve(inner, theta0, h, tol, max_inner)
    history: list[float] = []
    for _ in range(steps):
        history.append(tol)
        grad = hypergradient(inner, outer, theta, h, tol)
        if grad.norm() <= stop:
            break
        current = float(outer(theta))
        step, moved = lr, False
        for tries in range(6):
            candidate = h - step * grad
            theta_c = _inner_solve(inner, theta, candidate, tol, max_inner)
            if float(outer(theta_c)) < current:
                h, theta, moved = candidate.detach(), theta_c, True
                lr = step * 2 if tries == 0 else step  # grow after a full step, else keep what worked
                break
            step /= 2
        if not moved:
            if tol <= tol_min:
                break
            tol = max(tol * shrink, tol_min)
            theta = _inner_solve(inner, theta, h, tol, max_inner)
    return h, theta, history
