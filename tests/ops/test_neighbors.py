import pytest
import torch

from geot import ops
from geot.ops import neighbors

needs_cluster = pytest.mark.skipif(neighbors._tc is None, reason="torch-cluster not installed")


def edges(e: torch.Tensor) -> set:
    return set(map(tuple, e.t().tolist()))


@pytest.fixture
def clouds():
    g = torch.Generator().manual_seed(0)
    pos = torch.rand(900, 3, generator=g)
    batch = torch.cat([torch.zeros(300), torch.ones(600)]).long()
    return pos, batch


def test_fallback_knn_is_exact(clouds, monkeypatch):
    monkeypatch.setenv("GEOT_NEIGHBORS", "torch")
    pos, batch = clouds
    q, nb = ops.knn(pos, pos[:50], 4, batch, batch[:50])
    d = torch.cdist(pos[:50], pos[:300])
    expected = d.topk(4, largest=False).indices
    assert torch.equal(nb.view(50, 4), expected)
    assert torch.equal(q, torch.arange(50).repeat_interleave(4))


def test_knn_graph_stays_inside_scans(clouds, monkeypatch):
    monkeypatch.setenv("GEOT_NEIGHBORS", "torch")
    pos, batch = clouds
    src, dst = ops.knn_graph(pos, 8, batch)
    assert torch.equal(batch[src], batch[dst])
    assert (src != dst).all()
    assert torch.equal(torch.bincount(dst, minlength=len(pos)), torch.full((len(pos),), 8))


@needs_cluster
def test_backends_agree(clouds, monkeypatch):
    pos, batch = clouds
    assert ops.backend() == "torch-cluster"
    fast = (ops.knn_graph(pos, 8, batch), ops.knn(pos[:400], pos, 5, batch[:400], batch))
    interp_fast = ops.interpolate(pos[:400] * 2, pos[:400], pos, batch[:400], batch)
    monkeypatch.setenv("GEOT_NEIGHBORS", "torch")
    assert ops.backend() == "torch"
    slow = (ops.knn_graph(pos, 8, batch), ops.knn(pos[:400], pos, 5, batch[:400], batch))
    assert edges(fast[0]) == edges(slow[0])
    assert edges(fast[1]) == edges(slow[1])
    torch.testing.assert_close(interp_fast, ops.interpolate(pos[:400] * 2, pos[:400], pos, batch[:400], batch))


@pytest.mark.parametrize("backend", ["torch-cluster", "torch"])
def test_fps_spreads_points(clouds, monkeypatch, backend):
    if backend == "torch-cluster" and neighbors._tc is None:
        pytest.skip("torch-cluster not installed")
    if backend == "torch":
        monkeypatch.setenv("GEOT_NEIGHBORS", "torch")
    pos, batch = clouds
    idx = ops.fps(pos, 0.1, batch)
    assert torch.equal(torch.bincount(batch[idx]), torch.tensor([30, 60]))
    assert len(set(idx.tolist())) == len(idx)
    chosen = pos[idx[:30]]
    nearest = torch.cdist(chosen, chosen).fill_diagonal_(9).min(dim=1).values
    randoms = pos[:30]
    nearest_random = torch.cdist(randoms, randoms).fill_diagonal_(9).min(dim=1).values
    assert nearest.min() > nearest_random.min()  # farthest points are farther apart than random ones


def test_prefix_sample_nests():
    batch = torch.tensor([0] * 10 + [1] * 7)
    idx = ops.prefix_sample(batch, 0.5)
    assert idx.tolist() == [0, 1, 2, 3, 4, 10, 11, 12, 13]
    assert ops.prefix_sample(batch, 0.01).tolist() == [0, 10]


def test_interpolate_reproduces_at_samples_and_is_convex(clouds):
    pos, batch = clouds
    values = torch.randn(900, 2)
    same = ops.interpolate(values, pos, pos, batch, batch)
    torch.testing.assert_close(same, values, atol=1e-4, rtol=1e-4)
    coarse = ops.interpolate(values[::3], pos[::3], pos, batch[::3], batch)
    assert (coarse.min(0).values >= values.min(0).values - 1e-6).all()
    assert (coarse.max(0).values <= values.max(0).values + 1e-6).all()
