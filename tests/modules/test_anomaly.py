"""OVOR's virtual outliers and energy, DictAS's sparse lookup, ResAD's residual distance."""

from __future__ import annotations

import pytest
import torch

from geot.modules.common import normalise
from geot.modules.explainers.dictas import DictionaryLookupAnomaly, dictionary_lookup_score, sparsemax
from geot.modules.explainers.ovor import EnergyExplainer
from geot.modules.explainers.resad import ResidualFeatureAnomaly, residual_distance
from geot.modules.losses.ovor import (
    VirtualOutlierEnergyReg,
    energy,
    energy_margin_loss,
    kth_neighbour_distance,
    virtual_outliers,
)
from geot.modules.targets.dictas import DictionaryAnomalyFilter
from tests.conftest import tiny_model
from tests.modules.steps import make_ctx


def test_energy_margin_loss_zero_inside_margins():
    assert energy_margin_loss(torch.tensor([-20.0, -16.0]), torch.tensor([-1.0, 0.0])).item() == 0
    assert energy_margin_loss(torch.tensor([-14.0]), torch.tensor([-1.0])).item() == pytest.approx(0.5)  # Huber
    assert energy_margin_loss(torch.tensor([-20.0]), torch.tensor([-5.0])).item() == pytest.approx(1.5)
    z = torch.randn(5, 17)
    torch.testing.assert_close(energy(z), -torch.logsumexp(z, 1))


def test_virtual_outliers_lie_beyond_the_boundary():
    torch.manual_seed(0)
    feats = torch.randn(300, 8) * 0.3 + torch.tensor([3.0, 0, 0, 0, 0, 0, 0, 0])
    outliers, distance, boundary = virtual_outliers(feats, k=20, select=20, samples=30, sigma=0.1, keep=100)
    assert outliers.shape == (100, 8)
    assert (distance >= boundary.min()).all()
    unit = normalise(feats)
    # on the unit sphere the outliers sit farther from the data than most data points do
    inside = kth_neighbour_distance(unit, unit, 20, exclude_self=True)
    assert distance.min() > inside.median()


def test_ovor_trains_only_the_head():
    torch.manual_seed(1)
    head = torch.nn.Linear(8, 17)
    feats_lab = torch.randn(80, 8, requires_grad=True)
    ctx = make_ctx(0, 0, 1, feats_lab=feats_lab, labels=torch.arange(80) % 17, head=head,
                   logits_lab=head(feats_lab))
    loss, logs = VirtualOutlierEnergyReg(k=10, select=10, samples=10)(ctx)
    loss.backward()
    assert loss > 0 and feats_lab.grad is None and head.weight.grad.abs().sum() > 0


def test_sparsemax_is_a_sparse_distribution():
    z = torch.tensor([[3.0, 1.0, 0.2, -1.0], [0.5, 0.4, 0.45, 0.3]])
    p = sparsemax(z)
    torch.testing.assert_close(p.sum(1), torch.ones(2))
    assert (p >= 0).all() and (p[0] == 0).sum() >= 1
    torch.testing.assert_close(p[0], torch.tensor([1.0, 0, 0, 0]))  # gap > 1: all mass on the top entry
    # the projection onto the simplex: z - tau on the support, with tau = (sum_support - 1) / |support|
    tau = (0.5 + 0.4 + 0.45 + 0.3 - 1) / 4
    torch.testing.assert_close(p[1], torch.tensor([0.5, 0.4, 0.45, 0.3]) - tau)


def test_dictionary_lookup_scores():
    keys = torch.eye(6, 16)
    assert dictionary_lookup_score(keys[2:3], keys).item() == pytest.approx(0.0, abs=1e-6)
    orthogonal = torch.zeros(1, 16)
    orthogonal[0, 10] = 1
    assert dictionary_lookup_score(orthogonal, keys).item() == pytest.approx(0.5, abs=1e-6)
    between = normalise(keys[:1] + keys[1:2])  # rebuilt exactly by a sparse mix of two entries
    assert dictionary_lookup_score(between, keys).item() == pytest.approx(0.0, abs=1e-6)
    assert residual_distance(between, keys).item() > 0.5  # the nearest entry alone does not rebuild it
    exclude = torch.zeros(1, 6, dtype=torch.bool)
    exclude[0, 2] = True
    assert dictionary_lookup_score(keys[2:3], keys, exclude=exclude).item() == pytest.approx(0.5, abs=1e-6)


def test_residual_distance_zero_in_pool_and_translation_invariant():
    torch.manual_seed(2)
    pool, queries = torch.randn(30, 5), torch.randn(10, 5)
    assert residual_distance(pool[:7], pool).abs().max() < 1e-5
    shift = torch.randn(5) * 10
    torch.testing.assert_close(residual_distance(queries + shift, pool + shift), residual_distance(queries, pool),
                               atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(residual_distance(queries, pool), torch.cdist(queries, pool).min(1).values)


def test_explainers_on_a_tiny_model():
    torch.manual_seed(3)
    model = tiny_model("dgcnn", channels=[8], global_channels=8, k=4)
    x, pos, batch = torch.randn(50, 7), torch.rand(50, 3), torch.zeros(50, dtype=torch.long)
    out = model(x, pos, batch)
    logits, feats = out.logits, out.feats
    torch.testing.assert_close(EnergyExplainer()(model, x, pos, batch)["energy"], energy(logits).detach())
    # a tiny random model's features are all alike, so a lookup shares weight among near-copies: ~1e-3
    for explainer, tol in ((DictionaryLookupAnomaly(confidence=0.0), 1e-2), (ResidualFeatureAnomaly(confidence=0.0),
                                                                               1e-5)):
        scores = explainer(model, x, pos, batch)[explainer.name]
        assert scores.shape == (50,) and torch.isfinite(scores).all() and (scores >= 0).all()
        assert scores.max() > 0  # a point may not find itself in its own scan's dictionary
        explainer.set_reference(feats.detach(), logits.argmax(1))
        fixed = explainer(model, x, pos, batch)[explainer.name]
        assert fixed.abs().max() < tol and fixed.mean() < scores.mean()  # every point is in the fixed pool


def test_dictas_filter_drops_unexplained_points():
    torch.manual_seed(4)
    directions = normalise(torch.randn(4, 16))
    feats_lab = directions.repeat_interleave(10, 0) + 0.01 * torch.randn(40, 16)
    labels = torch.arange(4).repeat_interleave(10)
    strange = torch.zeros(16)
    strange[torch.argmin(directions.abs().sum(0))] = 1.0
    strange = normalise(strange - (directions.T @ torch.linalg.pinv(directions.T) @ strange))  # orthogonal
    feats = torch.cat([directions[:2], strange[None]])
    probs = torch.nn.functional.one_hot(torch.tensor([0, 1, 1]), 17).float()
    ctx = make_ctx(0, 0, 1, feats_lab=feats_lab, labels=labels, feats=feats, probs_teacher=probs)
    targets = probs.clone()
    assert torch.equal(DictionaryAnomalyFilter()(ctx, targets), targets)
    assert ctx.target_weight.tolist() == [1.0, 1.0, 0.0]
