"""IGNITE's Lagrangian gradient-norm constraint and the GLAD-style gradient-norm penalty."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from geot.modules.losses.glad import GradientNormPenalty, task_loss
from geot.modules.losses.ignite import GradNormConstraint
from tests.modules.steps import make_ctx


def step(head, feats, **kw):
    return make_ctx(0, 0, 1, feats=feats, logits=head(feats), head=head, **kw)


def test_dual_variable_follows_the_constraint():
    torch.manual_seed(0)
    head = torch.nn.Linear(4, 17)
    feats = torch.randn(30, 4, requires_grad=True)
    tight = GradNormConstraint(epsilon=0.0, lambda_init=0.5, dual_lr=0.1)
    _, logs = tight(step(head, feats))
    assert logs["lambda"] == pytest.approx(0.5 + 0.1 * 0.05 * logs["grad_norm"], rel=1e-5)  # rho||g|| > eps: up
    loose = GradNormConstraint(epsilon=100.0, lambda_init=0.5, dual_lr=0.1)
    _, logs = loose(step(head, feats))
    assert logs["lambda"] == 0.0  # would go negative: clamped at 0


def test_lambda_zero_changes_nothing():
    head = torch.nn.Linear(4, 17)
    feats = torch.randn(10, 4, requires_grad=True)
    loss, _ = GradNormConstraint(lambda_init=0.0)(step(head, feats))
    loss.backward()
    assert loss.item() == 0 and feats.grad.abs().max() == 0 and head.weight.grad.abs().max() == 0


class Quadratic(GradNormConstraint):
    def __init__(self, a: torch.Tensor, **kw) -> None:
        super().__init__(**kw)
        self.a = a

    def surrogate(self, feats, head):
        return 0.5 * torch.einsum("pi,ij,pj->", feats, self.a, feats)


def test_gradient_of_the_norm_is_hessian_times_direction():
    torch.manual_seed(1)
    b = torch.randn(5, 5, dtype=torch.float64)
    a = b @ b.T + torch.eye(5, dtype=torch.float64)
    f = torch.randn(1, 5, dtype=torch.float64, requires_grad=True)
    term = Quadratic(a, lambda_init=2.0, rho=0.5, dual_lr=0.0)
    loss, logs = term(make_ctx(0, 0, 1, feats=f, head=torch.nn.Identity()))
    loss.backward()
    g = a @ f.detach()[0]
    assert logs["grad_norm"] == pytest.approx(g.norm().item())
    torch.testing.assert_close(f.grad[0], 2.0 * 0.5 * a @ g / g.norm())  # lambda rho H grad G / ||grad G||


def test_gradient_norm_penalty_value_and_gradient():
    torch.manual_seed(2)
    head = torch.nn.Linear(3, 17).double()
    feats = torch.randn(12, 3, dtype=torch.float64, requires_grad=True)
    probs = torch.softmax(torch.randn(12, 17, dtype=torch.float64) * 6, 1)
    ctx = step(head, feats, probs_teacher=probs)
    assert GradientNormPenalty(rho=0.0)(ctx)[0].item() == 0
    loss, logs = GradientNormPenalty(rho=0.3, threshold=0.5)(ctx)

    def grad_norm(weight):
        logits = F.linear(feats.detach(), weight, head.bias)
        conf, pseudo = probs.max(1)
        mask = conf >= 0.5
        task = F.cross_entropy(logits[mask], pseudo[mask], reduction="sum") / 12
        (gw, gb) = torch.autograd.grad(task, (weight, head.bias), create_graph=True)
        return torch.sqrt((gw ** 2).sum() + (gb ** 2).sum())

    w = head.weight.detach().clone().requires_grad_(True)
    assert loss.item() == pytest.approx(0.3 * grad_norm(w).item(), rel=1e-9)
    loss.backward()
    h = 1e-6
    for idx in [(0, 0), (3, 1), (16, 2)]:
        plus, minus = w.detach().clone(), w.detach().clone()
        plus[idx] += h
        minus[idx] -= h
        numeric = 0.3 * (grad_norm(plus.requires_grad_(True)) - grad_norm(minus.requires_grad_(True))) / (2 * h)
        assert head.weight.grad[idx].item() == pytest.approx(numeric.item(), rel=1e-4, abs=1e-8)


def test_task_loss_parts():
    assert task_loss(make_ctx(0, 0, 1), 0.5) is None
    z = torch.randn(6, 17, requires_grad=True)
    y = torch.arange(6)
    torch.testing.assert_close(task_loss(make_ctx(0, 0, 1, logits_lab=z, labels=y), 0.5), F.cross_entropy(z, y))
