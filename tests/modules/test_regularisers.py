"""Head diversity, adjacent-class confusion, feature dropout consistency, anti-collapse."""

from __future__ import annotations

import pytest
import torch

from geot.modules import Schedule, build_modules
from geot.modules.losses.ecaml import adjacent_pairs, centroid_confusion
from geot.modules.losses.msgcoop import HeadDiversityReg, diversity_penalty
from geot.modules.losses.text_dropout import ConditioningDropout, drop_mask
from geot.modules.losses.tjepa import AntiCollapseReg, variance_covariance
from tests.modules.steps import make_ctx


def test_diversity_penalty_values():
    eye = torch.eye(4)
    orthogonal = torch.stack([eye[i].repeat(17, 1) for i in range(4)])  # (K=4, C=17, D=4)
    assert diversity_penalty(orthogonal).item() == pytest.approx(0.0, abs=1e-7)
    same = torch.randn(1, 17, 8).repeat(3, 1, 1)
    assert diversity_penalty(same).item() == pytest.approx(1.0, abs=1e-6)
    w = torch.randn(4, 17, 8)
    scaled = w * torch.rand(4, 17, 1) * 10
    torch.testing.assert_close(diversity_penalty(scaled), diversity_penalty(w))
    a, b = torch.randn(17, 8), torch.randn(17, 8)
    cos = torch.nn.functional.cosine_similarity(a, b, dim=1)
    torch.testing.assert_close(diversity_penalty(torch.stack([a, b])), (cos ** 2).mean())


def test_head_diversity_module_and_disagreement():
    torch.manual_seed(0)
    term = HeadDiversityReg(feat_dim=8)
    feats_lab = torch.randn(20, 8, requires_grad=True)
    loss, logs = term(make_ctx(0, 0, 1, feats_lab=feats_lab, labels=torch.arange(20) % 17,
                               logits_lab=torch.zeros(20, 17)))
    loss.backward()
    assert term.heads.grad.abs().sum() > 0 and feats_lab.grad.abs().sum() > 0
    d = term.disagreement(feats_lab.detach())
    assert d.shape == (20,) and (d >= 0).all() and (d <= 1).all()


def test_confusion_pulls_only_adjacent_classes():
    pairs = adjacent_pairs()
    as_set = {tuple(p) for p in pairs.tolist()}
    assert (1, 2) in as_set and (1, 9) in as_set and (8, 16) in as_set and (1, 3) not in as_set
    assert not any(0 in p for p in as_set)  # gingiva is 8 away from every tooth
    torch.manual_seed(1)
    feats = torch.randn(30, 6, requires_grad=True)
    labels = torch.tensor([1] * 10 + [2] * 10 + [5] * 10)
    loss = centroid_confusion(feats, labels, pairs)
    loss.backward()
    assert feats.grad[20:].abs().max() == 0  # class 5 has no adjacent class present
    with torch.no_grad():
        stepped = feats - 0.5 * feats.grad
    assert centroid_confusion(stepped, labels, pairs) < loss  # the step brings 1 and 2 closer
    schedule = Schedule(stop=3)
    modules = build_modules([{"name": "energy_confusion", "schedule": {"stop": 3}}])
    assert modules.all[0].scale(5) == 0 and schedule(5) == 0 and modules.all[0].scale(0) == pytest.approx(0.01)


def test_feature_dropout_consistency():
    torch.manual_seed(2)
    head = torch.nn.Linear(6, 17)
    feats = torch.randn(40, 6, requires_grad=True)
    ctx = make_ctx(0, 0, 1, feats=feats, logits=head(feats), head=head, probs_teacher=torch.ones(40, 17) / 17)
    loss, logs = ConditioningDropout(p=0.0)(ctx)
    assert loss.item() == pytest.approx(0.0, abs=1e-6) and logs["dropped"] == 0
    mask = drop_mask((4000, 6), 0.3)
    assert abs(mask.float().mean().item() - 0.3) < 0.01
    only = drop_mask((1000, 6), 1.0, channels=[1, 4])
    assert only[:, [1, 4]].all() and not only[:, [0, 2, 3, 5]].any()
    # p = 1 on channels 1 and 4: the dropped prediction ignores them
    term = ConditioningDropout(p=1.0, channels=[1, 4])
    other = feats.detach().clone()
    other[:, [1, 4]] += 5.0
    torch.manual_seed(3)
    loss_a, _ = term(make_ctx(0, 0, 1, feats=feats, logits=head(feats).detach(), head=head))
    torch.manual_seed(3)
    loss_b, _ = term(make_ctx(0, 0, 1, feats=other, logits=head(feats).detach(), head=head))
    torch.testing.assert_close(loss_a, loss_b)


def test_anti_collapse():
    torch.manual_seed(4)
    signs = torch.sign(torch.randn(4096, 8)) * 2.0  # std 2 per channel, uncorrelated
    variance, covariance = variance_covariance(signs)
    assert variance.item() == 0 and covariance.item() < 0.05
    correlated = signs.clone()
    correlated[:, 1] = correlated[:, 0]
    assert variance_covariance(correlated)[1].item() > 2 * 16 / 8 * 0.9  # cov_01 = cov_10 = 4
    collapsed = torch.ones(100, 8) + 1e-3 * torch.randn(100, 8)
    assert variance_covariance(collapsed)[0].item() > 0.9
    feats = (0.1 * torch.randn(200, 8)).requires_grad_(True)
    loss, _ = AntiCollapseReg(sample=10000)(make_ctx(0, 0, 1, feats=feats))
    loss.backward()
    with torch.no_grad():
        stepped = feats - 1.0 * feats.grad
    assert stepped.std(0).mean() > feats.std(0).mean()
