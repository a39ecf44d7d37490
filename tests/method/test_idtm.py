import torch
import torch.nn.functional as F

from geot.method.geot import GeoT, GeoTSettings
from geot.method.idtm import ClassLevelState, IDTMHead, anchor_matrix, posterior_confusion
from geot.method.losses import corrected_nll, poly1_focal


def test_head_rows_are_stochastic_both_projections():
    torch.manual_seed(0)
    p = torch.softmax(torch.randn(50, 17), 1)
    for projection in ("softmax", "clamp"):
        t = IDTMHead(projection=projection)(p, torch.eye(17))
        assert t.shape == (50, 17, 17)
        assert (t >= 0).all()
        torch.testing.assert_close(t.sum(-1), torch.ones(50, 17))
    start = IDTMHead()(p, torch.eye(17))
    assert torch.diagonal(start, dim1=1, dim2=2).mean() > 0.5  # starts near the identity


def test_identity_transition_gives_plain_cross_entropy():
    torch.manual_seed(1)
    logits, y = torch.randn(40, 17), torch.randint(0, 17, (40,))
    eye = torch.eye(17).expand(40, 17, 17)
    torch.testing.assert_close(corrected_nll(torch.softmax(logits, 1), eye, y),
                               F.cross_entropy(logits, y, reduction="none"), atol=1e-5, rtol=1e-5)


def test_transition_explains_a_systematic_flip():
    """If pseudo label 2 really means clean class 1, a T with T[1,2]=1 makes the clean guess cheap."""
    p = F.one_hot(torch.tensor([1]), 17).float() * 0.98 + 0.02 / 17
    y = torch.tensor([2])
    flip = torch.eye(17)
    flip[1] = 0
    flip[1, 2] = 1
    assert corrected_nll(p, flip[None], y) < corrected_nll(p, torch.eye(17)[None], y) - 2


def test_anchor_matrix_takes_most_confident_rows():
    q = torch.tensor([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]])
    rows, trusted = anchor_matrix(q)
    torch.testing.assert_close(rows, torch.tensor([[0.9, 0.1], [0.3, 0.7]]))
    assert trusted.all()
    absent = torch.tensor([[0.9, 0.05, 0.05], [0.8, 0.15, 0.05], [0.1, 0.1, 0.8]])  # class 1 never predicted
    rows, trusted = anchor_matrix(absent, min_confidence=0.5)
    assert trusted.tolist() == [True, False, True]
    state = ClassLevelState(3)
    state.update_transition(rows, decay=0.5, rows=trusted)
    torch.testing.assert_close(state.transition[1], torch.tensor([0.0, 1.0, 0.0]))  # untouched
    torch.testing.assert_close(state.transition[0], torch.tensor([0.95, 0.025, 0.025]))


def test_class_means_fixed_and_reference_bug():
    state = ClassLevelState(3)
    probs = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.7, 0.2, 0.1], [0.2, 0.2, 0.6]])
    target = torch.tensor([0, 1, 0, 2])
    state.update_class_means(probs, target, decay=0.0)
    torch.testing.assert_close(state.class_means, torch.tensor([[0.75, 0.15, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]]))
    state.update_class_means(probs, target, decay=0.0, reference_bug=True)
    rows = state.class_means
    assert torch.allclose(rows[0], rows[1]) and torch.allclose(rows[1], rows[2])  # the reference's identical rows


def test_class_level_ema_keeps_rows_stochastic():
    state = ClassLevelState(4)
    a = torch.softmax(torch.randn(4, 4), 1)
    state.update_transition(a, decay=0.9)
    torch.testing.assert_close(state.transition, 0.9 * torch.eye(4) + 0.1 * a)
    torch.testing.assert_close(state.transition.sum(1), torch.ones(4))


def test_poly1_focal_matches_formula():
    z, y = torch.tensor([[2.0, -1.0]]), torch.tensor([0])
    s = torch.sigmoid(z)
    pt = torch.tensor([[s[0, 0], 1 - s[0, 1]]])
    at = torch.tensor([[0.25, 0.75]])
    bce = -torch.log(pt)
    expected = (at * bce * (1 - pt) ** 2 + (1 - pt) ** 3).mean()
    torch.testing.assert_close(poly1_focal(z, y)[0], expected)


def test_geot_objective_gradients_and_ablation():
    torch.manual_seed(2)
    pos = torch.rand(200, 3)
    batch = torch.zeros(200, dtype=torch.long)
    logits = torch.randn(200, 17, requires_grad=True)
    q = torch.softmax(torch.randn(200, 17) * 3, 1)
    obj = GeoT(GeoTSettings(plgr_k=8, plgr_weight=0.1, clgs_weight=0.1))
    loss, logs = obj(logits, q, obj.targets(q), pos, batch)
    loss.backward()
    assert torch.isfinite(loss) and {"pseudo", "plgr", "diag"} <= logs.keys()
    assert logits.grad.abs().sum() > 0
    assert obj.head.weight_p.grad.abs().sum() > 0 and obj.prior.raw_sigma.grad.abs().sum() > 0
    assert not torch.allclose(obj.state.transition, torch.eye(17))  # the class-level EMA moved
    plain = GeoT(GeoTSettings(idtm=False))
    loss_plain, _ = plain(logits, q, plain.targets(q), pos, batch)
    torch.testing.assert_close(loss_plain, F.cross_entropy(logits, q.argmax(1)))


def test_geot_soft_targets_are_the_teacher_posteriors():
    torch.manual_seed(3)
    logits = torch.randn(50, 17)
    q = torch.softmax(torch.randn(50, 17) * 2, 1)
    pos, batch = torch.rand(50, 3), torch.zeros(50, dtype=torch.long)
    soft = GeoT(GeoTSettings(soft_targets=True, idtm=False))
    torch.testing.assert_close(soft.targets(q), q)
    loss, _ = soft(logits, q, soft.targets(q), pos, batch)
    torch.testing.assert_close(loss, -(q * torch.log_softmax(logits, 1)).sum(1).mean())
    hard = GeoT(GeoTSettings(idtm=False))
    assert hard.targets(q).max(1).values.eq(1).all()  # default: one-hot argmax, as the paper trains


def test_posterior_confusion_is_the_expected_label_distribution_per_class():
    # 10 points the teacher labels 0 while believing them 80% class 0, 20 labelled 1 at 30% / 70%
    q = torch.tensor([[0.8, 0.2]] * 10 + [[0.3, 0.7]] * 20)
    pseudo = q.argmax(1)
    rows, trusted = posterior_confusion(q, pseudo, min_mass=1.0)
    # class 0: 8 points' belief labelled 0, 6 labelled 1; class 1: 2 labelled 0, 14 labelled 1
    torch.testing.assert_close(rows, torch.tensor([[8 / 14, 6 / 14], [2 / 16, 14 / 16]]))
    assert trusted.all()
    weight = torch.tensor([1.0] * 10 + [0.0] * 20)  # filtered points do not count
    rows, trusted = posterior_confusion(q, pseudo, weight, min_mass=1.0)
    torch.testing.assert_close(rows, torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    assert trusted.tolist() == [True, True]
    _, trusted = posterior_confusion(q, pseudo, weight, min_mass=5.0)
    assert trusted.tolist() == [True, False]  # class 1 holds 2 points' worth of belief


def test_posterior_estimate_keeps_the_noise_that_anchors_lose():
    """A teacher sure of some points and torn on others: the anchor rows are one-hot (identity), the
    posterior rows keep the off-diagonal mass of the torn points, and the objective's EMA follows them."""
    sure = torch.eye(3).repeat(20, 1) * 0.98 + 0.02 / 3
    torn = torch.tensor([[0.55, 0.45, 0.0], [0.0, 0.55, 0.45]]).repeat(20, 1)
    q = torch.cat([sure, torn])
    anchors, _ = anchor_matrix(q)
    confusion, _ = posterior_confusion(q, q.argmax(1))
    assert torch.diagonal(anchors).min() > 0.97
    assert torch.diagonal(confusion)[1:].max() < 0.8
    logits, pos = torch.randn(len(q), 17), torch.rand(len(q), 3)
    q17 = torch.cat([q, torch.zeros(len(q), 14)], 1)
    batch = torch.zeros(len(q), dtype=torch.long)
    diag = {}
    for estimate in ("anchor", "posterior"):
        obj = GeoT(GeoTSettings(class_estimate=estimate, class_ema=0.5, plgr_weight=0.0))
        for _ in range(10):
            obj(logits, q17, obj.targets(q17), pos, batch)
        diag[estimate] = torch.diagonal(obj.state.transition)[1:3].mean().item()
    assert diag["anchor"] > 0.97 and diag["posterior"] < 0.8


def arch_noise(up: float = 0.2, down: float = 0.08, gingiva: float = 0.04) -> torch.Tensor:
    """A known class-level noise process: each tooth turns into its arch neighbour one position up with
    ``up``, one down with ``down`` (an asymmetric matrix, so a transposed estimate shows), into gingiva
    with ``gingiva``; gingiva stays gingiva."""
    from geot.labels import ARCH_POSITION

    pos = torch.as_tensor(ARCH_POSITION)
    t = torch.zeros(17, 17, dtype=torch.float64)
    t[0, 0] = 1
    for a in range(1, 17):
        for b in range(1, 17):
            t[a, b] = up if pos[b] == pos[a] + 1 else down if pos[b] == pos[a] - 1 else 0
        t[a, 0] = gingiva
        t[a, a] = 1 - t[a].sum()
    return t


def noisy_batch(noise: torch.Tensor, prior: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    """Teacher posteriors consistent with the process: half the points are clear (the teacher is sure and
    right), on the other half the pseudo label is drawn from ``noise`` and the teacher's posterior is the
    Bayes posterior of the true class given that label. Over both, P(label b | true a) = (I + noise) / 2."""
    true = torch.multinomial(prior, n, replacement=True, generator=g)
    clear = torch.rand(n, generator=g) < 0.5
    label = torch.multinomial(noise[true], 1, generator=g).squeeze(1)
    joint = prior[:, None] * noise                        # P(true a, label b) among unclear points
    bayes = (joint / joint.sum(0, keepdim=True)).T          # row b: P(true | label b)
    q = torch.where(clear[:, None], F.one_hot(true, 17).double(), bayes[label])
    assert torch.equal(q.argmax(1), torch.where(clear, true, label))  # the pseudo label is the teacher's argmax
    return q.float()


def test_posterior_estimate_recovers_a_known_noise_process_and_anchors_do_not():
    """Fed batch by batch through the class-level EMA as training does, the posterior estimate approaches the
    true class-level matrix; the anchor estimate sees the sure points only and stays at the identity."""
    noise = arch_noise()
    truth = (torch.eye(17, dtype=torch.float64) + noise) / 2
    prior = torch.cat([torch.tensor([0.4]), 0.6 * torch.linspace(1, 2, 16) / torch.linspace(1, 2, 16).sum()])
    found = {}
    for estimate in ("posterior", "anchor"):
        g = torch.Generator().manual_seed(0)
        obj = GeoT(GeoTSettings(class_estimate=estimate, class_ema=0.95, plgr_weight=0.0))
        for _ in range(100):
            q = noisy_batch(noise, prior, 3000, g)
            n = len(q)
            obj(torch.zeros(n, 17), q, obj.targets(q), torch.zeros(n, 3), torch.zeros(n, dtype=torch.long))
        found[estimate] = obj.state.transition.double()
    error = {k: (v - truth).abs().max().item() for k, v in found.items()}
    assert error["posterior"] < 0.015  # measured 0.004
    assert (found["anchor"] - torch.eye(17)).abs().max() < 0.01 and error["anchor"] > 0.09
    # an estimate that transposed the matrix (true class given label) or kept the identity would miss by > 0.05
    assert (truth.T - truth).abs().max() > 0.05 and (truth - torch.eye(17)).abs().max() > 0.09


def test_confidence_weighting_weighs_points_by_the_teacher_but_not_the_estimate():
    torch.manual_seed(4)
    logits, q = torch.randn(600, 17), torch.softmax(torch.randn(600, 17) * 2, 1)
    pos, batch = torch.rand(600, 3), torch.zeros(600, dtype=torch.long)
    conf = q.max(1).values
    plain = GeoT(GeoTSettings(idtm=False))
    weighted = GeoT(GeoTSettings(idtm=False, confidence_weighting=True))
    each = F.cross_entropy(logits, q.argmax(1), reduction="none")
    loss, _ = weighted(logits, q, weighted.targets(q), pos, batch)
    torch.testing.assert_close(loss, (conf * each).sum() / conf.sum())
    assert not torch.isclose(loss, plain(logits, q, plain.targets(q), pos, batch)[0])
    torch.testing.assert_close(weighted.loss_terms()["pseudo"], loss)
    states = []
    for on in (False, True):
        obj = GeoT(GeoTSettings(class_estimate="posterior", class_ema=0.0, confidence_weighting=on, plgr_weight=0.0))
        obj(logits, q, obj.targets(q), pos, batch)
        states.append(obj.state.transition)
    assert (torch.diagonal(states[0]) < 0.9).all()  # every row was updated
    torch.testing.assert_close(states[0], states[1])  # the class-level estimate counts every point alike
