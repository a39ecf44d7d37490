"""Contrastive terms: SupCon forms, focal InfoNCE with mixed negatives, SBCL, Core-tuning, region masking."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from geot.modules.common import normalise, sample_balanced, supcon
from geot.modules.losses.coact import AsyncContrastConsistency
from geot.modules.losses.core_tuning import hard_pair_mix
from geot.modules.losses.kalm import focal_infonce, mix_hard_negatives
from geot.modules.losses.region_masking import CorrelatedRegionMaskingSSL, region_masks, two_view_infonce
from geot.modules.losses.sbcl import sbcl_loss, subclass_ids
from tests.modules.steps import make_ctx


def reference_supcon(q, k, ql, kl, tau, same_set):
    """Plain loops over the SupCon formula."""
    out = []
    for i in range(len(q)):
        allowed = [j for j in range(len(k)) if not (same_set and j == i)]
        denominator = torch.logsumexp(torch.stack([q[i] @ k[j] / tau for j in allowed]), 0)
        positives = [j for j in allowed if ql[i] == kl[j]]
        if not positives:
            out.append(torch.tensor(0.0))
            continue
        out.append(-sum(q[i] @ k[p] / tau - denominator for p in positives) / len(positives))
    return torch.stack(out)


@pytest.mark.parametrize("same_set", [False, True])
def test_supcon_matches_the_formula(same_set):
    torch.manual_seed(0)
    q, k = normalise(torch.randn(12, 5)), normalise(torch.randn(12, 5))
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 3, 0, 1, 2, 2, 5])
    k = q if same_set else k
    torch.testing.assert_close(supcon(q, k, labels, labels, 0.1, same_set),
                               reference_supcon(q, k, labels, labels, 0.1, same_set))


def test_async_supcon_one_class_bound():
    """One class and keys = queries: the loss is >= log n, with equality when all embeddings are equal."""
    n = 16
    labels = torch.zeros(n, dtype=torch.long)
    spread = normalise(torch.randn(n, 4))
    equal = normalise(torch.ones(n, 4))
    assert supcon(spread, spread, labels, labels, 0.07).mean() > math.log(n) + 1e-3
    assert supcon(equal, equal, labels, labels, 0.07).mean().item() == pytest.approx(math.log(n), abs=1e-5)


def test_async_supcon_module_uses_teacher_keys_of_confident_points():
    torch.manual_seed(1)
    feats = torch.randn(40, 6, requires_grad=True)
    probs = torch.softmax(torch.randn(40, 17) * 5, 1)
    teacher = torch.randn(40, 6)
    ctx = make_ctx(0, 0, 1, feats=feats, probs_teacher=probs, feats_teacher=teacher)
    torch.manual_seed(5)
    loss, logs = AsyncContrastConsistency(threshold=0.7, anchors=1000)(ctx)
    conf, labels = probs.max(1)
    idx = (conf >= 0.7).nonzero().squeeze(1)
    assert logs["anchors"] == len(idx)  # all confident points when the budget allows
    expected = supcon(normalise(feats[idx]), normalise(teacher[idx]), labels[idx], labels[idx], 0.07).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)  # order of the anchors does not matter


def test_sample_balanced():
    labels = torch.tensor([0] * 50 + [1] * 3 + [2] * 10)
    chosen = sample_balanced(labels, 30)
    counts = torch.bincount(labels[chosen], minlength=3)
    assert counts.tolist() == [10, 3, 10] and len(chosen.unique()) == len(chosen)


def test_focal_infonce_gamma_zero_is_infonce_and_weights_fall():
    torch.manual_seed(2)
    q, k = normalise(torch.randn(10, 8)), normalise(torch.randn(10, 8))
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 4, 4])
    loss, s = focal_infonce(q, k, labels, temperature=0.1, gamma=0.0, mixed=0)
    for i in range(10):
        negatives = [j for j in range(10) if labels[j] != labels[i]]
        logits = torch.cat([(q[i] @ k[i])[None], q[i] @ k[negatives].T]) / 0.1
        assert loss[i].item() == pytest.approx(-torch.log_softmax(logits, 0)[0].item(), rel=1e-5)
    focal, s2 = focal_infonce(q, k, labels, temperature=0.1, gamma=2.0, mixed=0)
    torch.testing.assert_close(s2, s)
    weight = focal / loss
    torch.testing.assert_close(weight, (1 - s) ** 2)
    order = s.argsort()
    assert (weight[order].diff() <= 1e-6).all()  # the weight decreases as the positive's probability rises


def test_mixed_negatives_unit_norm_in_span():
    torch.manual_seed(3)
    keys = normalise(torch.randn(12, 6))
    sims = torch.randn(12, 12)
    negative = torch.rand(12, 12) > 0.3
    mixed, valid = mix_hard_negatives(sims, keys, negative, hardest=8, mixed=4)
    assert mixed.shape == (12, 4, 6)
    torch.testing.assert_close(mixed.norm(dim=-1), torch.ones(12, 4))
    top = sims.masked_fill(~negative, float("-inf")).topk(8, dim=1).indices
    for i in range(12):
        for m in range(4):
            if not valid[i, m]:
                continue
            a, b = keys[top[i, 2 * m]], keys[top[i, 2 * m + 1]]
            basis = torch.stack([a, b], 1)
            coef = torch.linalg.lstsq(basis, mixed[i, m][:, None]).solution
            torch.testing.assert_close(basis @ coef, mixed[i, m][:, None], atol=1e-5, rtol=1e-5)
            assert (coef >= -1e-6).all()  # a convex mix before normalising: both weights >= 0


def test_sbcl_one_subclass_per_class_is_supcon():
    torch.manual_seed(4)
    emb = normalise(torch.randn(30, 5))
    labels = torch.randint(0, 4, (30,))
    one_each = subclass_ids(emb, labels, size=1000)
    assert torch.equal(one_each.unique(return_inverse=True)[1], labels.unique(return_inverse=True)[1])
    torch.testing.assert_close(sbcl_loss(emb, labels, one_each, 0.1, 0.25),
                               supcon(emb, emb, labels, labels, 0.1, same_set=True).mean())


def test_sbcl_subclasses_stay_inside_classes():
    torch.manual_seed(5)
    labels = torch.tensor([0] * 60 + [1] * 12 + [2] * 25)
    emb = normalise(torch.randn(len(labels), 6))
    sub = subclass_ids(emb, labels, size=12)
    for s in sub.unique():
        assert len(labels[sub == s].unique()) == 1  # a subclass never spans two classes
    per_class = [len(sub[labels == c].unique()) for c in range(3)]
    assert per_class[1] == 1 and per_class[2] <= 2 and 2 <= per_class[0] <= 5
    # the class term pulls together subclasses of one class: more weight, different loss
    assert sbcl_loss(emb, labels, sub, 0.1, 0.25) != sbcl_loss(emb, labels, sub, 0.1, 0.0)


def test_focal_supcon_weights_and_hard_pairs():
    torch.manual_seed(6)
    feats = torch.randn(20, 5)
    labels = torch.randint(0, 3, (20,))
    emb = normalise(feats)
    plain = supcon(emb, emb, labels, labels, 0.07, same_set=True)
    focal = supcon(emb, emb, labels, labels, 0.07, same_set=True, focal=True)
    assert (focal <= plain + 1e-6).all() and (focal >= 0).all()  # weights (1 - p) lie in [0, 1]
    logits = emb @ emb.T / 0.07
    logits.fill_diagonal_(-1e4)
    log_p = torch.log_softmax(logits, 1)
    pos = (labels[:, None] == labels[None]) & ~torch.eye(20, dtype=torch.bool)
    expected = -((1 - log_p.exp()) * log_p * pos).sum(1) / pos.sum(1).clamp(min=1)
    torch.testing.assert_close(focal, expected)

    mixed, soft, lam = hard_pair_mix(feats, labels, 3)
    assert ((lam >= 0) & (lam <= 1)).all() and len(mixed) == len(lam)
    sims = emb @ emb.T
    row = 0
    for i in range(20):
        same = labels == labels[i]
        others = same.clone()
        others[i] = False
        if not others.any() or same.all():
            continue
        p = sims[i].masked_fill(~others, float("inf")).argmin()
        n = sims[i].masked_fill(same, float("-inf")).argmax()
        torch.testing.assert_close(mixed[row], lam[row] * feats[p] + (1 - lam[row]) * feats[n])
        torch.testing.assert_close(soft[row].sum(), torch.tensor(1.0))
        row += 1
    assert row == len(mixed)


def test_region_masks_are_complementary_halves():
    torch.manual_seed(7)
    pos = torch.rand(100, 3)
    batch = torch.tensor([0] * 60 + [1] * 40)
    mask = region_masks(pos, batch, 0.5)
    for b, n in ((0, 60), (1, 40)):
        m = mask[batch == b]
        p = pos[batch == b]
        assert int(m.sum()) == n // 2 and int((~m).sum()) == n - n // 2  # the two views cover the scan
        seed_candidates = [i for i in range(n) if m[i]]
        # the region is a ball around some seed: every region point is nearer it than every other point
        assert any(((p[m] - p[s]).norm(dim=1).max() <= (p[~m] - p[s]).norm(dim=1).min() + 1e-6)
                   for s in seed_candidates)


def test_region_infonce_lower_bound():
    b, tau = 5, 0.5
    views = torch.eye(b, 8)  # identical views, orthogonal negatives
    expected = math.log(1 + (b - 1) * math.exp(-1 / tau))
    assert two_view_infonce(views, views, tau).item() == pytest.approx(expected, rel=1e-5)
    ctx = make_ctx(0, 0, 1, feats=torch.randn(60, 4, requires_grad=True), pos=torch.rand(60, 3),
                   batch=torch.arange(60) // 20, probs_teacher=torch.ones(60, 17) / 17)
    loss, _ = CorrelatedRegionMaskingSSL()(ctx)
    loss.backward()
    assert torch.isfinite(loss) and ctx.unl.feats.grad.abs().sum() > 0
    # each scan's features one direction: both halves of a scan pool to it, so the module reaches the bound
    scans = torch.arange(60) // 20
    feats = F.one_hot(scans, 4).float() + 0.01 * torch.randn(60, 4)
    ctx = make_ctx(0, 0, 1, feats=feats, pos=torch.rand(60, 3), batch=scans, probs_teacher=torch.ones(60, 17) / 17)
    term = CorrelatedRegionMaskingSSL(temperature=tau)
    assert term(ctx)[0].item() == pytest.approx(math.log(1 + 2 * math.exp(-1 / tau)), rel=1e-2)
    # features that split each scan in two directions instead make its halves disagree: far above the bound
    torch.manual_seed(8)
    mask = region_masks(ctx.unl.pos, scans)
    halves = F.one_hot(scans * 2 + mask.long(), 8).float()
    torch.manual_seed(8)  # the module draws the same halves
    split = make_ctx(0, 0, 1, feats=halves, pos=ctx.unl.pos, batch=scans, probs_teacher=torch.ones(60, 17) / 17)
    assert term(split)[0].item() == pytest.approx(math.log(3), rel=1e-3)
