"""MMRL++'s shared residual adapters."""

from __future__ import annotations

import torch

from geot.modules.losses.mmrl_plus import ResidualAdapterBranch, SharedResidualAdapters
from tests.modules.steps import make_ctx


def test_starts_as_identity_and_zero_residuals_share_one_map():
    torch.manual_seed(0)
    adapters = SharedResidualAdapters(6, layers=3, rank=2)
    x = torch.randn(10, 6)
    torch.testing.assert_close(adapters(x), x)
    with torch.no_grad():
        adapters.shared.weight.copy_(torch.randn(6, 6) * 0.3)
    for layer in range(3):  # U = 0: every layer applies the same mapping
        torch.testing.assert_close(adapters.step(x, layer), adapters.shared(x))
    with torch.no_grad():
        adapters.up.normal_()
    assert not torch.allclose(adapters.step(x, 0), adapters.step(x, 1))


def test_beta_one_has_no_carry_over():
    torch.manual_seed(1)
    adapters = SharedResidualAdapters(5, layers=2, rank=2, beta=1.0)
    with torch.no_grad():
        adapters.up.normal_()
        adapters.shared.weight.copy_(torch.randn(5, 5))
    x = torch.randn(4, 5)
    torch.testing.assert_close(adapters(x), adapters.step(adapters.step(x, 0), 1))
    adapters.beta = 0.9
    expected = x
    for layer in range(2):
        expected = 0.9 * adapters.step(expected, layer) + 0.1 * expected
    torch.testing.assert_close(adapters(x), expected)


def test_branch_trains_adapters_and_head():
    torch.manual_seed(2)
    head = torch.nn.Linear(6, 17)
    feats = torch.randn(20, 6, requires_grad=True)
    term = ResidualAdapterBranch(feat_dim=6)
    loss, _ = term(make_ctx(0, 0, 1, feats_lab=feats, labels=torch.arange(20) % 17, head=head,
                            logits_lab=head(feats)))
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(head(feats), torch.arange(20) % 17))
    loss.backward()
    assert term.adapters.up.grad.abs().sum() > 0 and head.weight.grad is not None
