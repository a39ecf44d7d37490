"""Prototype terms: Happy (replay, group prior matching), RCAL, DiSa, Lbl2Vec, prototype head init."""

from __future__ import annotations

import math

import pytest
import torch

from geot.modules.common import class_groups, normalise
from geot.modules.losses.coact import prototype_head_init
from geot.modules.losses.disa import DirectionalPrototypeReg, direction_loss
from geot.modules.losses.happy import (
    GroupMarginalEntropy,
    HardnessAwareProtoReplay,
    group_prior_match,
    hardness_probabilities,
)
from geot.modules.losses.rcal import RepresentationCalibration, calibrate, robust_stats
from geot.modules.metric import tooth_metric
from geot.modules.targets.lbl2vec import PrototypeSimilarityLabeler, refine_prototypes
from tests.modules.steps import make_ctx


def test_group_prior_match_zero_at_prior_and_happy_form_at_uniform():
    groups = class_groups("type")
    assert sorted(c for g in groups for c in g) == list(range(17))
    prior = torch.softmax(torch.randn(17), 0)
    assert group_prior_match(prior, prior, groups).item() == pytest.approx(0.0, abs=1e-6)
    pbar = torch.softmax(torch.randn(17), 0)
    assert group_prior_match(pbar, prior, groups) > 0
    # uniform prior, two groups: Happy's w_on (sum m log m + log 2) + sum_g (log|g| - H(pbar_g / m_g))
    two = [list(range(0, 7)), list(range(7, 17))]
    uniform = torch.full((17,), 1 / 17)
    m = torch.stack([pbar[g].sum() for g in two])
    expected = 2 * (m * (m / torch.tensor([7 / 17, 10 / 17])).log()).sum()  # groups of 7 and 10 classes
    for i, g in enumerate(two):
        q = pbar[g] / m[i]
        expected = expected + math.log(len(g)) + (q * q.log()).sum()
    torch.testing.assert_close(group_prior_match(pbar, uniform, two), expected)
    equal_groups = [list(range(0, 8)), list(range(8, 16))]
    p16, u16 = torch.softmax(torch.randn(16), 0), torch.full((16,), 1 / 16)
    m = torch.stack([p16[g].sum() for g in equal_groups])
    happy = 2 * ((m * m.log()).sum() + math.log(2)) + sum(
        math.log(8) + (p16[g] / m[i] * (p16[g] / m[i]).log()).sum() for i, g in enumerate(equal_groups))
    torch.testing.assert_close(group_prior_match(p16, u16, equal_groups), happy)


def test_group_entropy_module_learns_the_labelled_prior():
    term = GroupMarginalEntropy()
    labels = torch.tensor([0] * 50 + list(range(1, 17)) * 2)
    logits = torch.log(term.prior().clone()).repeat(10, 1)
    term(make_ctx(0, 0, 1, logits_lab=torch.zeros(len(labels), 17), labels=labels, logits=logits))
    prior = (torch.bincount(labels, minlength=17) + 1) / (len(labels) + 17)
    torch.testing.assert_close(term.prior(), prior.float())
    loss, _ = term(make_ctx(0, 0, 1, logits=torch.log(term.prior()).repeat(5, 1).requires_grad_(True)))
    assert loss.item() == pytest.approx(0.0, abs=1e-4)


def test_happy_replay_sampling_follows_hardness():
    torch.manual_seed(0)
    replay = HardnessAwareProtoReplay(samples=20000, momentum=0.0)
    feats = torch.randn(5, 8) + torch.tensor([0.0, 0, 0, 0, 0, 0, 0, 4])
    feats[3:] = feats[2] + 0.05 * torch.randn(2, 8)  # classes 2, 3, 4 nearly coincide: hard
    replay.stats.update(feats, torch.arange(5))
    expected = hardness_probabilities(feats, 0.1)
    _, classes = replay.replay()
    observed = torch.bincount(classes, minlength=5).float()
    chi2 = ((observed - 20000 * expected) ** 2 / (20000 * expected)).sum()
    assert chi2 < 20.5  # chi^2 with 4 degrees of freedom, p ~ 0.0004
    assert expected[2:].min() > expected[:2].max()
    zero, classes = replay.replay(radius=0.0)
    torch.testing.assert_close(zero, feats[classes])  # r = 0: replayed features are the prototypes


def test_happy_replay_trains_only_the_head():
    torch.manual_seed(1)
    head = torch.nn.Linear(6, 17)
    feats_lab = torch.randn(30, 6, requires_grad=True)
    ctx = make_ctx(0, 0, 1, feats_lab=feats_lab, labels=torch.arange(30) % 4, head=head,
                   logits_lab=head(feats_lab))
    loss, _ = HardnessAwareProtoReplay()(ctx)
    loss.backward()
    assert feats_lab.grad is None and head.weight.grad.abs().sum() > 0


def test_rcal_lof_mean_beats_raw_mean_on_flipped_labels():
    torch.manual_seed(2)
    clean = torch.randn(180, 4)
    others = torch.tensor([[8.0, 0, 0, 0], [0, -8.0, 0, 0], [0, 0, 8.0, 0], [6.0, 6.0, 0, 0]])
    flipped = torch.randn(20, 4) + others.repeat_interleave(5, 0)  # 10% labels flipped from 4 other classes
    x = torch.cat([clean, flipped])
    robust_mean, _ = robust_stats(x, k=20, outlier_fraction=0.1, shrinkage=0.0)
    assert robust_mean.norm() < 0.5 * x.mean(0).norm()


def test_rcal_calibration_and_sampling():
    torch.manual_seed(3)
    covs = torch.stack([torch.eye(3) * (c + 1) for c in range(17)])
    valid = torch.ones(17, dtype=torch.bool)
    tail = torch.zeros(17, dtype=torch.bool)
    tail[8] = True
    metric = torch.as_tensor(tooth_metric(), dtype=torch.float32)
    torch.testing.assert_close(calibrate(covs, valid, tail, metric, donors=0), covs)  # q = 0: own stats
    out = calibrate(covs, valid, tail, metric, donors=2)
    # class 8 (a third molar): its arch neighbour 7 and its mirror 16 are the donors
    torch.testing.assert_close(out[8], (covs[8] + covs[7] + covs[16]) / 3)
    torch.testing.assert_close(out[:8], covs[:8])

    rcal = RepresentationCalibration(samples=20000, donors=0, outlier_fraction=0.0, shrinkage=0.0, lof_k=5)
    mean, a = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([[1.0, 0, 0], [0.5, 0.5, 0], [0.2, 0.1, 0.3]])
    feats = mean + torch.randn(200, 3) @ a.T
    labels = torch.zeros(200, dtype=torch.long)
    labels[150:] = 1
    rcal.collect(feats, labels)
    rcal.on_epoch_end(0)
    assert rcal.ready.tolist()[:2] == [True, True] and not rcal.ready[2:].any()
    sampled, classes = rcal.sample()
    s0 = sampled[classes == 0]
    x0 = rcal.bank[0, :150]
    torch.testing.assert_close(s0.mean(0), x0.mean(0), atol=0.05, rtol=0)
    torch.testing.assert_close(torch.cov(s0.T), torch.cov(x0.T), atol=0.06, rtol=0)


def test_rcal_module_replays_after_an_epoch_and_holds_features_to_the_anchor():
    torch.manual_seed(4)
    head = torch.nn.Linear(4, 17)
    feats_lab = torch.randn(64, 4, requires_grad=True)
    ctx = make_ctx(0, 0, 1, feats_lab=feats_lab, labels=torch.arange(64) % 2, head=head,
                   logits_lab=head(feats_lab), frozen_feats_lab=feats_lab.detach().clone())
    rcal = RepresentationCalibration(lof_k=5)
    loss, logs = rcal(ctx)
    assert logs["drift"] == 0 and "replay" not in logs
    rcal.on_epoch_end(0)
    loss, logs = rcal(ctx)
    assert "replay" in logs and loss > 0


def test_disa_direction_loss():
    mu = torch.randn(5, 7)
    f = mu * (torch.rand(5, 1) + 0.1)
    assert direction_loss(f, mu).abs().max() < 1e-6
    torch.testing.assert_close(direction_loss(-f, mu), torch.full((5,), 2.0))
    g = torch.randn(5, 7)
    torch.testing.assert_close(direction_loss(3 * g, mu), direction_loss(g, mu))  # scale invariant
    term = DirectionalPrototypeReg(momentum=0.0)
    labels = torch.arange(5)
    loss, _ = term(make_ctx(0, 0, 1, feats_lab=mu * 2, labels=labels, logits_lab=torch.zeros(5, 17)))
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_lbl2vec_refinement_on_two_clusters():
    torch.manual_seed(5)
    centres = normalise(torch.tensor([[1.0, 0.2, 0.0], [0.0, 1.0, 0.3]]))
    emb = normalise(torch.cat([centres[0] + 0.1 * torch.randn(50, 3), centres[1] + 0.1 * torch.randn(50, 3)]))
    truth = torch.tensor([0] * 50 + [1] * 50)
    seeds = normalise(torch.stack([emb[0], emb[50]]))  # one seed per cluster, an arbitrary member
    refined = refine_prototypes(emb, seeds, top_m=50)
    means = normalise(torch.stack([emb[:50].mean(0), emb[50:].mean(0)]))
    assert ((refined - means).norm(dim=1) < (seeds - means).norm(dim=1)).all()
    assert ((refined - means).norm(dim=1) < 0.05).all()
    assert torch.equal((emb @ refined.T).argmax(1), truth)


def test_lbl2vec_weights():
    torch.manual_seed(6)
    directions = normalise(torch.randn(17, 8))
    feats_lab = directions.repeat(3, 1) + 0.01 * torch.randn(51, 8)
    labels = torch.arange(17).repeat(3)
    feats = directions[torch.tensor([3] * 10 + [12] * 10)] + 0.01 * torch.randn(20, 8)
    agree = torch.nn.functional.one_hot(torch.tensor([3] * 10 + [12] * 10), 17).float() * 0.9 + 0.1 / 17
    labeler = PrototypeSimilarityLabeler(top_m=5)
    ctx = make_ctx(0, 0, 1, feats_lab=feats_lab, labels=labels, feats=feats, probs_teacher=agree,
                   batch=torch.zeros(20, dtype=torch.long))
    targets = torch.nn.functional.one_hot(agree.argmax(1), 17).float()
    assert torch.equal(labeler(ctx, targets), targets)
    assert torch.equal(ctx.target_weight, torch.ones(20))  # the labellers agree: the teacher's mask stays
    far = agree[:, torch.tensor([0, *range(1, 17)])].clone()
    far[:10] = torch.nn.functional.one_hot(torch.tensor(7), 17).float()  # 3 vs 7: 4 teeth apart
    far[10:] = torch.nn.functional.one_hot(torch.tensor(13), 17).float()  # 12 vs 13: neighbours, kept
    ctx = make_ctx(0, 0, 1, feats_lab=feats_lab, labels=labels, feats=feats, probs_teacher=far,
                   batch=torch.zeros(20, dtype=torch.long))
    labeler(ctx, targets)
    assert ctx.target_weight.tolist() == [0.0] * 10 + [1.0] * 10


def test_prototype_head_init_maps_class_means_to_their_class():
    torch.manual_seed(7)
    centres = torch.randn(17, 12) * 3
    labels = torch.arange(17).repeat(20)
    feats = centres[labels] + torch.randn(len(labels), 12)
    head = torch.nn.Linear(12, 17)
    prototype_head_init(head, feats, labels)
    means = torch.stack([feats[labels == c].mean(0) for c in range(17)])
    assert torch.equal(head(means).argmax(1), torch.arange(17))
