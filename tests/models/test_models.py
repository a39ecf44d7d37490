import pytest
import torch
from torch_geometric.data import Batch

from geot.config import load_config
from geot.data.augment import WEAK
from geot.data.dataset import ScanDataset, prepare
from geot.errors import ConfigError
from geot.models import count_parameters
from tests.conftest import tiny_model

CONFIGS = [("point_transformer", {"channels": [16, 32, 64], "k": 8}),
           ("point_transformer", {"channels": [16, 32], "k": 8, "sampling": "fps"}),
           ("dgcnn", {"channels": [16, 16], "global_channels": 32, "k": 8})]


@pytest.fixture
def batch(sphere_scan):
    ds = ScanDataset([prepare(sphere_scan)] * 2, num_points=128, augment=WEAK)
    return Batch.from_data_list([ds.sample(0, (0, 0)), ds.sample(1, (0, 1))])


@pytest.mark.parametrize("name, kwargs", CONFIGS)
def test_forward_shapes_and_overfit(batch, name, kwargs):
    torch.manual_seed(0)
    model = tiny_model(name, **kwargs)
    assert count_parameters(model) > 0
    out = model(batch.x, batch.pos, batch.batch)
    logits, feats = out.logits, out.feats
    assert logits.shape == (len(batch.x), 17) and feats.shape[0] == len(batch.x)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(batch.x, batch.pos, batch.batch).logits, batch.y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


@pytest.mark.parametrize("name, kwargs", CONFIGS)
def test_scans_do_not_influence_each_other(batch, name, kwargs):
    """Per-point normalisation: a scan's output is the same alone or batched, in train and eval mode."""
    torch.manual_seed(0)
    model = tiny_model(name, **kwargs)
    first = batch.batch == 0
    for mode in (model.train, model.eval):
        mode()
        together = model(batch.x, batch.pos, batch.batch).logits[first]
        alone = model(batch.x[first], batch.pos[first], batch.batch[first]).logits
        torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)


def test_unknown_backbone_and_arguments():
    with pytest.raises(ConfigError, match="unknown backbone 'pointnet9'; available: dgcnn, point_transformer"):
        load_config(overrides={"model.name": "pointnet9"})
    with pytest.raises(ConfigError, match="model.args \\(dgcnn\\).ratio"):
        load_config(overrides={"model.name": "dgcnn", "model.args.ratio": 0.5})


@pytest.mark.parametrize("name, kwargs", [("point_transformer", {"channels": [16, 32, 64], "sampling": "random"}),
                                          ("point_transformer", {"channels": [16, 32, 64], "sampling": "fps"}),
                                          ("dgcnn", {"channels": [16, 16], "global_channels": 32})])
def test_dense_neighbour_path_equals_the_scatter_path(batch, name, kwargs, monkeypatch):
    """The backbones reduce over regular kNN tables with dense ops; PyG's scatter layers are the
    reference: same outputs and gradients, same parameters (so checkpoints load in either)."""
    from geot import ops

    torch.manual_seed(0)
    model = tiny_model(name, k=8, **kwargs)

    def run() -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        logits = model(batch.x, batch.pos, batch.batch).logits
        (logits.square().mean()).backward()
        return logits.detach(), [p.grad.clone() for p in model.parameters()]

    dense, dense_grads = run()
    with monkeypatch.context() as m:
        m.setenv("GEOT_DENSE", "0")  # layers reduce with PyG's scatters
        table = ops.dense_neighbours(*ops.knn(batch.pos, batch.pos, 8, batch.batch, batch.batch), len(batch.pos), 8)
        assert table is None, "the scatter path would not be taken"
        sparse, sparse_grads = run()
    assert ops.dense_neighbours(*ops.knn(batch.pos, batch.pos, 8, batch.batch, batch.batch), len(batch.pos), 8) \
        is not None
    torch.testing.assert_close(dense, sparse, atol=1e-5, rtol=1e-4)
    for a, b in zip(dense_grads, sparse_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-3)


def test_dense_neighbours_rejects_irregular_lists():
    from geot.ops import dense_neighbours

    q = torch.tensor([0, 0, 1, 1])
    nb = torch.tensor([1, 2, 0, 2])
    assert torch.equal(dense_neighbours(q, nb, 2, 2), torch.tensor([[1, 2], [0, 2]]))
    assert dense_neighbours(torch.tensor([0, 0, 0, 1]), nb, 2, 2) is None  # 3 for one query, 1 for the other
    assert dense_neighbours(q[:3], nb[:3], 2, 2) is None
