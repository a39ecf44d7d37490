"""Cr-KD, CoACT's logit anchor, MMRL's feature alignment and the local-mean teacher."""

from __future__ import annotations

import math

import pytest
import torch

from geot.modules import StepContext
from geot.modules.losses.coact import LogitAnchorMSE
from geot.modules.losses.cr_kd import ClassRelationKD, class_relation_kd
from geot.modules.losses.mmrl import FrozenFeatureAlignment
from geot.modules.targets.ogen import AdaptiveLocalMeanTeacher
from tests.modules.steps import make_ctx


def test_cr_kd_minimum_at_the_anchor_up_to_a_row_constant():
    torch.manual_seed(0)
    anchor = torch.randn(40, 17)
    z = (anchor + torch.randn(40, 1) * 3).requires_grad_(True)  # same relations, shifted rows
    loss, gate = class_relation_kd(z, anchor)
    loss.backward()
    assert z.grad.abs().max() < 1e-5
    r = torch.softmax(anchor / 0.4, 1)
    entropy = -(r * torch.log(r)).sum(1).mean()
    torch.testing.assert_close(loss.detach(), 16 * entropy)  # T^2 * H(r_old) at the minimum (tau T = 0.4)
    other = (anchor + torch.randn(40, 17)).requires_grad_(True)
    assert class_relation_kd(other, anchor)[0] > loss
    torch.testing.assert_close(gate, torch.ones(40))


def test_cr_kd_known_subset_and_gate():
    torch.manual_seed(1)
    z, anchor = torch.randn(30, 17, requires_grad=True), torch.randn(30, 17)
    known = torch.tensor([1, 2, 3, 9, 10])
    loss, gate = class_relation_kd(z, anchor, known)
    mass = torch.softmax(z.detach() / 0.4, 1)[:, known].sum(1)
    torch.testing.assert_close(gate.mean(), torch.tensor(1.0))
    torch.testing.assert_close(gate, mass / mass.mean())
    r_old = torch.softmax(anchor[:, known] / 0.4, 1)
    expected = 16 * (gate * -(r_old * torch.log_softmax(z.detach()[:, known] / 0.4, 1)).sum(1)).mean()
    torch.testing.assert_close(loss.detach(), expected)
    loss.backward()
    outside = torch.ones(17, dtype=torch.bool)
    outside[known] = False
    assert z.grad[:, outside].abs().max() == 0  # the gate is detached; only K's logits learn


def ctx_with(**fields) -> StepContext:
    return make_ctx(0, 0, 10, **fields)


def test_cr_kd_module_falls_back_to_teacher():
    torch.manual_seed(2)
    probs = torch.softmax(torch.randn(20, 17), 1)
    z = torch.log(probs).clone().requires_grad_(True)
    loss, _ = ClassRelationKD()(ctx_with(logits=z, probs_teacher=probs))
    assert math.isclose(loss.item(), class_relation_kd(z, torch.log(probs))[0].item(), rel_tol=1e-6)


def test_logit_anchor_zero_at_anchor():
    z = torch.randn(10, 17, requires_grad=True)
    loss, _ = LogitAnchorMSE()(ctx_with(logits=z, frozen_logits=z.detach().clone()))
    loss.backward()
    assert loss.item() == 0 and z.grad.abs().max() == 0
    anchor = torch.randn(10, 17)
    loss, _ = LogitAnchorMSE()(ctx_with(logits=z, frozen_logits=anchor))
    torch.testing.assert_close(loss, ((z - anchor) ** 2).sum(1).mean() / 17)


def test_mmrl_alignment_direction_only():
    frozen = torch.randn(30, 8, requires_grad=True)
    f = (frozen.detach() * (torch.rand(30, 1) * 5 + 0.1)).requires_grad_(True)
    term = FrozenFeatureAlignment()
    loss, _ = term(ctx_with(feats=f, frozen_feats=frozen))
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    loss, _ = term(ctx_with(feats=-f, frozen_feats=frozen))
    assert loss.item() == pytest.approx(2.0, abs=1e-6)
    loss.backward()
    assert frozen.grad is None  # nothing flows into the frozen model


def local_ctx(probs: torch.Tensor, epoch: int = 0, epochs: int = 10) -> StepContext:
    n = len(probs)
    return make_ctx(epoch, 0, epochs, probs_teacher=probs, point_index=torch.stack([torch.zeros(n).long(),
                    torch.arange(n)], 1), pos=torch.rand(n, 3), batch=torch.zeros(n, dtype=torch.long))


def test_local_mean_teacher_constant_and_step_response():
    constant = torch.softmax(torch.randn(1, 17), 1).repeat(30, 1)
    teacher = AdaptiveLocalMeanTeacher(spatial=0.5, k=4)
    for _ in range(3):
        out = teacher(local_ctx(constant), constant.clone())
    torch.testing.assert_close(out, constant)  # a constant teacher is its own local mean

    w = 10
    teacher = AdaptiveLocalMeanTeacher(window_min=w, window_max=w, spatial=0.0)
    before = torch.softmax(torch.randn(5, 17), 1)
    after = torch.softmax(torch.randn(5, 17), 1)
    teacher(local_ctx(before), before.clone())
    for _ in range(w):
        out = teacher(local_ctx(after), after.clone())
    moved = ((out - before) / (after - before))
    torch.testing.assert_close(moved, torch.full_like(moved, 1 - (1 - 1 / w) ** w))  # ~ 1 - 1/e
    assert 0.6 < moved.mean() < 0.7


def test_local_mean_teacher_lags_more_late_and_keeps_hard_targets():
    teacher = AdaptiveLocalMeanTeacher(window_min=1, window_max=8, spatial=0.0)
    assert teacher.window(0, 10) == 1 and teacher.window(9, 10) == 8
    a, b = torch.softmax(torch.randn(4, 17), 1), torch.softmax(torch.randn(4, 17), 1)
    moves = []
    for epoch in (0, 9):
        t = AdaptiveLocalMeanTeacher(window_min=1, window_max=8, spatial=0.0)
        t(local_ctx(a, epoch), a.clone())
        moves.append((t(local_ctx(b, epoch), b.clone()) - a).norm())
    assert moves[1] < moves[0]  # late in training the teacher averages over more history
    hard = torch.nn.functional.one_hot(a.argmax(1), 17).float()
    out = AdaptiveLocalMeanTeacher()(local_ctx(a), hard)
    assert ((out == 0) | (out == 1)).all() and torch.equal(out.argmax(1), a.argmax(1))
