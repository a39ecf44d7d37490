import torch

from geot.labels import ARCH_POSITION
from geot.method.clgs import ArchPrior, arch_prior, row_normalise
from geot.method.plgr import plgr_loss


def points(n: int = 10) -> torch.Tensor:
    """A flat n x n grid with unit spacing."""
    x = torch.arange(n, dtype=torch.float32)
    xy = torch.stack(torch.meshgrid(x, x, indexing="ij"), -1).reshape(-1, 2)
    return torch.cat([xy, torch.zeros(len(xy), 1)], 1)


def test_plgr_zero_for_equal_matrices_and_grows_with_disagreement():
    pos = points()
    batch = torch.zeros(len(pos), dtype=torch.long)
    labels = torch.zeros(len(pos), dtype=torch.long)
    same = torch.eye(17).expand(len(pos), 17, 17)
    assert plgr_loss(same, labels, pos, batch, k=4) == 0
    g = torch.Generator().manual_seed(0)
    noise = torch.softmax(torch.randn(len(pos), 17, 17, generator=g), -1)
    small = plgr_loss(0.9 * same + 0.1 * noise, labels, pos, batch, k=4)
    large = plgr_loss(0.5 * same + 0.5 * noise, labels, pos, batch, k=4)
    assert 0 < small < large


def test_plgr_ignores_neighbours_with_other_pseudo_labels():
    pos = points()
    batch = torch.zeros(len(pos), dtype=torch.long)
    left = pos[:, 0] < 5
    labels = left.long()
    t = torch.where(left[:, None, None], torch.eye(17), torch.full((17, 17), 1 / 17))
    assert plgr_loss(t, labels, pos, batch, k=8) == 0  # the jump is at a label boundary: no penalty
    assert plgr_loss(t, torch.zeros_like(labels), pos, batch, k=8) > 0


def test_plgr_weights_depend_on_distance():
    pos = points()
    batch = torch.zeros(len(pos), dtype=torch.long)
    labels = torch.zeros(len(pos), dtype=torch.long)
    g = torch.Generator().manual_seed(1)
    t = torch.softmax(torch.randn(len(pos), 17, 17, generator=g), -1)
    relative = plgr_loss(t, labels, pos * 0.01, batch, k=8, sigma=1.0)
    assert torch.isclose(relative, plgr_loss(t, labels, pos * 10, batch, k=8, sigma=1.0))  # scale-free
    absolute = plgr_loss(t, labels, pos * 0.01, batch, k=8, sigma=1.0, absolute_sigma=True)
    assert not torch.isclose(relative, absolute)


def test_plgr_on_random_centres_estimates_the_mean_over_every_point():
    # Two scans of scattered points, two pseudo labels; absolute sigma keeps each point's term independent of
    # which centres were drawn, so the subsampled loss is an unbiased estimate of the full one.
    g = torch.Generator().manual_seed(2)
    pos = torch.rand(300, 3, generator=g)
    batch = torch.repeat_interleave(torch.tensor([0, 1]), torch.tensor([140, 160]))
    labels = (pos[:, 0] > 0.5).long()
    t = torch.softmax(torch.randn(300, 17, 17, generator=g), -1)
    full = plgr_loss(t, labels, pos, batch, k=6, absolute_sigma=True, sigma=0.2)
    assert plgr_loss(t, labels, pos, batch, k=6, absolute_sigma=True, sigma=0.2, points=300) == full
    torch.manual_seed(0)
    draws = torch.stack([plgr_loss(t, labels, pos, batch, k=6, absolute_sigma=True, sigma=0.2, points=30)
                         for _ in range(400)])
    assert draws.std() > 0.01 * full                                   # each draw reads other centres
    assert abs(draws.mean() - full) < 3 * draws.std() / 400**0.5       # but their mean is the full loss
    # the gradient reaches only the drawn centres and their neighbours
    t.requires_grad_(True)
    plgr_loss(t, labels, pos, batch, k=6, absolute_sigma=True, sigma=0.2, points=10).backward()
    touched = (t.grad.abs().sum(dim=(1, 2)) > 0).sum()
    assert 10 <= touched <= 10 * 7


def test_knn_graph_around_chosen_centres_is_the_full_graph_restricted_to_them():
    from geot.ops import knn_graph

    g = torch.Generator().manual_seed(3)
    pos = torch.rand(200, 3, generator=g)
    batch = torch.repeat_interleave(torch.tensor([0, 1]), torch.tensor([90, 110]))
    full = {tuple(e) for e in knn_graph(pos, 5, batch).T.tolist()}
    centres = torch.tensor([0, 7, 89, 90, 150, 199])
    part = {tuple(e) for e in knn_graph(pos, 5, batch, centres=centres).T.tolist()}
    assert part == {e for e in full if e[1] in set(centres.tolist())} and len(part) == 5 * len(centres)
    every = {tuple(e) for e in knn_graph(pos, 5, batch, centres=torch.arange(200)).T.tolist()}
    assert every == full


def test_arch_prior_puts_mass_on_arch_neighbours():
    g = arch_prior(torch.full((17,), 0.4))
    torch.testing.assert_close(g.sum(1), torch.ones(17))
    assert g[0, 0] == 1 and (g[1:, 0] == 0).all()
    pos = torch.as_tensor(ARCH_POSITION)
    for c in range(1, 17):
        neighbours = (pos - pos[c]).abs() == 1
        far = (pos - pos[c]).abs() >= 2
        neighbours[0] = far[0] = False  # gingiva is off the arch
        assert g[c, c] > 0.9
        assert (g[c, neighbours] > 0.03).all()
        assert (g[c, far] < 1e-3).all()
    assert g[1, 9] > 0.03  # central incisors of the two quadrants touch at the midline
    wide = arch_prior(torch.full((17,), 2.0))
    assert wide[5, 5] < g[5, 5]


def test_sigma_stays_positive_and_learns():
    prior = ArchPrior(0.4)
    torch.testing.assert_close(prior.sigma, torch.full((17,), 0.4))
    prior.raw_sigma.data.fill_(-20)
    assert (prior.sigma > 0).all()
    fresh = ArchPrior(0.4)
    fresh()[3, 4].backward()
    assert fresh.raw_sigma.grad[3] != 0 and (fresh.raw_sigma.grad[torch.arange(17) != 3] == 0).all()


def test_reference_rownorm_bug():
    m = torch.tensor([[1.0, 3.0], [1.0, 1.0]])
    torch.testing.assert_close(row_normalise(m), torch.tensor([[0.25, 0.75], [0.5, 0.5]]))
    torch.testing.assert_close(row_normalise(m, reference_bug=True), torch.tensor([[0.25, 1.5], [0.25, 0.5]]))


def test_plgr_reaches_the_network_only_without_the_detach():
    """PLGR alone gives the backbone and its class head a gradient with ``idtm_detach: false``, none with the
    default; the IDTM head learns from it either way, and the pseudo-label term's gradient does not change."""
    from geot.method.geot import GeoT, GeoTSettings
    from tests.conftest import tiny_model

    g = torch.Generator().manual_seed(0)
    x, pos = torch.randn(60, 7, generator=g), torch.rand(60, 3, generator=g)
    batch = torch.zeros(60, dtype=torch.long)
    probs_weak = torch.softmax(torch.randn(60, 17, generator=g) + 5 * torch.eye(17)[4], 1)  # one pseudo label
    grads = {}
    for detach in (True, False):
        torch.manual_seed(1)
        model = tiny_model("dgcnn", channels=[8], global_channels=8, k=4)
        method = GeoT(GeoTSettings(idtm_detach=detach, plgr_k=4, plgr_weight=0.1))
        method(model(x, pos, batch).logits, probs_weak, method.targets(probs_weak), pos, batch)
        terms, names = method.loss_terms(), [n for n, _ in model.named_parameters()]
        params = list(model.parameters())
        *network, idtm = torch.autograd.grad(terms["plgr"], [*params, method.head.weight_p], allow_unused=True,
                                             retain_graph=True)
        norms = {part: sum(float(gr.norm()) for n, gr in zip(names, network, strict=True)
                           if gr is not None and n.startswith(part)) for part in ("backbone.", "head.")}
        pseudo = torch.autograd.grad(terms["pseudo"], params, allow_unused=True)
        grads[detach] = (norms, float(idtm.norm()), pseudo)
    assert grads[False][0]["backbone."] > 0 and grads[False][0]["head."] > 0
    assert grads[True][0] == {"backbone.": 0, "head.": 0}  # with the detach autograd finds no path to the network
    assert grads[False][1] > 0 and grads[True][1] > 0
    for a, b in zip(grads[True][2], grads[False][2], strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)


def test_training_logs_each_terms_gradient_on_the_network(tmp_path):
    """``log_grad_norms``: the trainer reads GeoT's weighted ``pseudo`` and ``plgr`` parts; PLGR's gradient on
    the network is 0 by default and positive with ``idtm_detach: false``."""
    import csv

    from geot.config import load_config
    from geot.data.sources import gather_data
    from geot.data.synth import write_synthetic_dataset
    from geot.engine.train import train

    write_synthetic_dataset(tmp_path / "jaws", n=6, seed=0, resolution=0.25)
    tiny = {"data.num_points": 256, "data.labelled_fraction": 0.5, "data.val_fraction": 0.2,
            "data.test_fraction": 0.0, "model.args": {"channels": [16, 32], "k": 8}, "optim.steps_per_epoch": 1,
            "optim.epochs": 3, "semi.warmup_epochs": 1, "semi.rampup_epochs": 0, "geot.plgr_k": 4,
            "geot.plgr_weight": 0.1, "log_grad_norms": True, "val_every": 3, "device": "cpu"}
    norms = {}
    for detach in (True, False):
        cfg = load_config(None, {**tiny, "geot.idtm_detach": detach})
        data = gather_data(cfg, tmp_path / "jaws", cache_dir=tmp_path / "cache")
        train(cfg, data, tmp_path / str(detach), progress=False)
        with open(tmp_path / str(detach) / "log.csv") as f:
            norms[detach] = list(csv.DictReader(f))[-1]
    for detach, row in norms.items():
        assert float(row["grad/sup"]) > 0 and float(row["grad/pseudo"]) > 0
        assert (float(row["grad/plgr"]) > 0) == (not detach)
