"""HPM: the relative loss-prediction objective and the easy-to-hard masking policy."""

from __future__ import annotations

import math

import pytest
import torch

from geot.modules.losses.hpm import LossPredictorHead, hard_region_mask, hpm_alpha, relative_loss
from tests.modules.steps import make_ctx


def test_relative_loss_rewards_the_right_order():
    torch.manual_seed(0)
    target = torch.rand(200)
    partner = torch.randperm(200)
    right = relative_loss(50 * target + 3, target, partner)
    wrong = relative_loss(-50 * target, target, partner)
    assert right.item() < 0.05  # any increasing map of the loss, scaled up: ~0
    assert wrong.item() > 5
    assert relative_loss(torch.zeros(200), target, partner).item() == pytest.approx(math.log(2), rel=1e-5)
    assert relative_loss(torch.randn(10), torch.ones(10), torch.randperm(10)).item() == 0  # no ordered pair


def test_hard_mask_counts_and_curriculum():
    scores = torch.randn(1000)
    mask = hard_region_mask(scores, ratio=0.75, alpha=0.4)
    assert int(mask.sum()) == 750
    top = scores.topk(int(750 * 0.4)).indices
    assert mask[top].all()  # the loss-guided share is the top predicted loss
    assert hpm_alpha(0, 10) == pytest.approx(0.05) and hpm_alpha(9, 10) == pytest.approx(0.5)


def test_alpha_zero_masks_uniformly():
    torch.manual_seed(1)
    scores = torch.arange(100.0)
    counts = torch.zeros(100)
    for _ in range(400):
        counts += hard_region_mask(scores, ratio=0.5, alpha=0.0).float()
    high, low = counts[50:].mean(), counts[:50].mean()
    assert abs(high - low) < 10 and abs(counts.mean() - 200) < 1e-6  # exactly half each time, unbiased


def test_loss_predictor_trains_only_itself():
    torch.manual_seed(2)
    feats = torch.randn(50, 8, requires_grad=True)
    logits = torch.randn(50, 17, requires_grad=True)
    probs = torch.softmax(torch.randn(50, 17) * 3, 1)
    term = LossPredictorHead(feat_dim=8)
    loss, _ = term(make_ctx(0, 0, 1, logits=logits, feats=feats, probs_teacher=probs))
    loss.backward()
    assert feats.grad is None and logits.grad is None
    assert all(p.grad is not None for p in term.parameters())
    # a few steps learn the order of the pseudo-label loss from the features it depends on
    target_feats = torch.randn(300, 8)
    truth = target_feats[:, 0] * 2
    opt = torch.optim.Adam(term.parameters(), lr=0.05)
    for _ in range(60):
        opt.zero_grad()
        relative_loss(term.predict(target_feats), truth, torch.randperm(300)).backward()
        opt.step()
    rank = torch.corrcoef(torch.stack([term.predict(target_feats).argsort().argsort().float(),
                                       truth.argsort().argsort().float()]))[0, 1]
    assert rank > 0.9
