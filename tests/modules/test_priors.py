"""Per-scan label-shift correction: EM recovers a shifted prior, and the adjusted posterior behaves."""

from __future__ import annotations

import torch

from geot.modules.rules.label_shift import PerScanPriorRule, adjust_posterior, correct_scan, em_prior, reference_prior
from geot.modules.targets.label_shift import PerScanPriorTargets
from tests.modules.steps import make_ctx


def shifted_domain(prior: list[float], n: int = 8000, seed: int = 0,
                   train: list[float] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Posteriors of a model trained under prior ``train`` (default uniform) on 4 Gaussian classes, for a
    domain with ``prior``; and the true classes."""
    g = torch.Generator().manual_seed(seed)
    means = torch.tensor([0.0, 2.0, 4.0, 6.0])
    y = torch.multinomial(torch.tensor(prior), n, replacement=True, generator=g)
    x = means[y] + torch.randn(n, generator=g)
    log_lik = -0.5 * (x[:, None] - means[None]) ** 2
    log_train = torch.zeros(4) if train is None else torch.log(torch.tensor(train))
    return torch.softmax(log_lik + log_train, dim=1), y


def test_em_recovers_a_prior_with_a_missing_class():
    probs, _ = shifted_domain([0.5, 0.3, 0.2, 0.0])
    uniform = torch.full((4,), 0.25)
    recovered = em_prior(probs, uniform, iters=500)
    torch.testing.assert_close(recovered, torch.tensor([0.5, 0.3, 0.2, 0.0]), atol=0.03, rtol=0)
    assert probs.mean(0)[3] > 0.04  # the uncorrected posteriors still give the missing class mass
    adjusted = adjust_posterior(probs, uniform, recovered, absent=0.01)
    assert adjusted[:, 3].max() == 0  # an absent tooth leaves the locus
    torch.testing.assert_close(adjusted.sum(1), torch.ones(len(probs)))
    _, y = shifted_domain([0.5, 0.3, 0.2, 0.0])
    assert (adjusted.argmax(1) == y).float().mean() > (probs.argmax(1) == y).float().mean()


def test_em_with_a_non_uniform_training_prior():
    train = [0.1, 0.2, 0.3, 0.4]
    probs, _ = shifted_domain([0.5, 0.3, 0.2, 0.0], seed=5, train=train)
    recovered = em_prior(probs, torch.tensor(train), iters=500)
    torch.testing.assert_close(recovered, torch.tensor([0.5, 0.3, 0.2, 0.0]), atol=0.03, rtol=0)
    same, _ = shifted_domain(train, seed=6, train=train)
    torch.testing.assert_close(em_prior(same, torch.tensor(train)), torch.tensor(train), atol=0.03, rtol=0)


def test_no_shift_no_change():
    probs, _ = shifted_domain([0.25, 0.25, 0.25, 0.25], seed=1)
    prior = torch.full((4,), 0.25)
    torch.testing.assert_close(adjust_posterior(probs, prior, prior), probs)
    torch.testing.assert_close(em_prior(probs, prior), prior, atol=0.02, rtol=0)
    # with pi_d = pi the posterior is unchanged for any pi
    other = torch.tensor([0.1, 0.2, 0.3, 0.4])
    torch.testing.assert_close(adjust_posterior(probs, other, other), probs)


def test_rule_without_a_prior_removes_only_missing_teeth():
    torch.manual_seed(2)
    truth = torch.arange(17).repeat_interleave(40)
    logits = torch.nn.functional.one_hot(truth, 17).float() * 4 + torch.randn(len(truth), 17) * 0.5
    probs = torch.softmax(logits, 1)
    ref = reference_prior(probs)
    torch.testing.assert_close(ref, probs.mean(0))  # every tooth present: no floor bites
    assert torch.equal(PerScanPriorRule()(probs), correct_scan(probs, None).argmax(1))
    assert (PerScanPriorRule()(probs) == probs.argmax(1)).float().mean() > 0.99
    keep = truth != 5  # tooth 5 is missing; its class still collects a little posterior mass everywhere
    missing = probs[keep]
    corrected = correct_scan(missing, None, absent=1e-3)
    assert corrected[:, 5].sum() < 0.2 * missing[:, 5].sum()
    assert PerScanPriorRule(decode="loki")(probs).shape == (len(probs),)


def test_targets_per_scan_and_learnt_prior():
    probs_a, _ = shifted_domain([0.5, 0.3, 0.2, 0.0], n=400, seed=3)
    probs_b, _ = shifted_domain([0.1, 0.1, 0.4, 0.4], n=400, seed=4)
    probs = torch.cat([probs_a, probs_b])
    batch = torch.tensor([0] * 400 + [1] * 400)
    labels = torch.arange(4).repeat(25)
    transform = PerScanPriorTargets(num_classes=4)
    ctx = make_ctx(0, 0, 1, probs_teacher=probs, batch=batch, labels=labels)
    hard = torch.nn.functional.one_hot(probs.argmax(1), 4).float()
    out = transform(ctx, hard)
    torch.testing.assert_close(transform.learnt_prior(), torch.full((4,), 0.25))
    assert ((out == 0) | (out == 1)).all() and torch.equal(out.sum(1), torch.ones(800))
    for b, probs_b_ in ((0, probs_a), (1, probs_b)):
        pi_d = em_prior(probs_b_, torch.full((4,), 0.25))
        expected = adjust_posterior(probs_b_, torch.full((4,), 0.25), pi_d).argmax(1)
        assert torch.equal(out[batch == b].argmax(1), expected)  # each scan gets its own prior
    soft = transform(make_ctx(0, 0, 1, probs_teacher=probs, batch=batch), probs.clone())
    torch.testing.assert_close(soft.sum(1), torch.ones(800))
