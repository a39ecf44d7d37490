import copy

import pytest
import torch
from torch_geometric.data import Batch
from torch_geometric.nn import EdgeConv as PygEdgeConvBase
from torch_geometric.nn import PointTransformerConv

from geot.config import load_config
from geot.data.augment import WEAK
from geot.data.dataset import ScanDataset, prepare
from geot.errors import ConfigError
from geot.models import count_parameters
from geot.models.layers import EdgeConv, VectorAttention
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


class PygVectorAttention(PointTransformerConv):
    """PyG's layer behind geot's call signature: it always reduces over the edge list with scatters."""

    def forward(self, x, pos, edge_index, table=None):
        return super().forward(x, pos, edge_index)


class PygEdgeConv(PygEdgeConvBase):
    def forward(self, x, edge_index, table=None):
        return super().forward(x, edge_index)


def with_pyg_layers(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` whose graph layers are PyG's, loaded with the same weights (the reference)."""
    reference = copy.deepcopy(model)
    for name, module in list(reference.named_modules()):
        if isinstance(module, VectorAttention):
            layer = PygVectorAttention(module.lin.in_features, module.lin.out_features, pos_nn=module.pos_nn,
                                       attn_nn=module.attn_nn)
        elif isinstance(module, EdgeConv):
            layer = PygEdgeConv(module.nn, aggr="max")
        else:
            continue
        parent, _, attr = name.rpartition(".")
        setattr(reference.get_submodule(parent), attr, layer)
    reference.load_state_dict(model.state_dict())  # strict: geot's layers keep PyG's state-dict keys
    assert sum(isinstance(m, (PygVectorAttention, PygEdgeConv)) for m in reference.modules()) >= 2
    return reference


def forward_backward(model, x, pos, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    logits = model(x, pos, batch).logits
    logits.square().mean().backward()
    return logits.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("dense", [True, False])
@pytest.mark.parametrize("name, kwargs", [("point_transformer", {"channels": [16, 32, 64], "sampling": "random"}),
                                          ("point_transformer", {"channels": [16, 32, 64], "sampling": "fps"}),
                                          ("dgcnn", {"channels": [16, 16], "global_channels": 32}),
                                          ("dgcnn", {"channels": [16, 16], "global_channels": 32, "dynamic": True})])
def test_backbones_equal_the_same_network_with_pyg_layers(batch, name, kwargs, dense, monkeypatch):
    """geot's own graph layers against PyG's PointTransformerConv / EdgeConv with the same weights: same
    state-dict keys, outputs and gradients, whether the layers reduce over dense neighbour tables or (with
    ``GEOT_DENSE=0``) scatter over the edge list. Checkpoints trained with PyG's layers therefore load."""
    from geot import ops

    torch.manual_seed(0)
    model = tiny_model(name, k=8, **kwargs)
    reference = with_pyg_layers(model)
    monkeypatch.setenv("GEOT_DENSE", "1" if dense else "0")
    table = ops.dense_neighbours(*ops.knn(batch.pos, batch.pos, 8, batch.batch, batch.batch), len(batch.pos), 8)
    assert (table is not None) == dense, "the path under test would not be taken"
    ours, our_grads = forward_backward(model, batch.x, batch.pos, batch.batch)
    theirs, their_grads = forward_backward(reference, batch.x, batch.pos, batch.batch)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)
    assert our_grads.keys() == their_grads.keys()
    for key, grad in our_grads.items():
        torch.testing.assert_close(grad, their_grads[key], atol=1e-5, rtol=1e-3, msg=key)


def irregular_graph(n: int = 12, edges: int = 40) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features, positions and a random edge list: uneven degrees, self loops, points nothing points to."""
    g = torch.Generator().manual_seed(0)
    edge_index = torch.randint(0, n - 2, (2, edges), generator=g)  # the last two points receive no edge
    edge_index[:, :3] = torch.tensor([[0, 1, 2], [0, 1, 2]])       # explicit self loops
    x = torch.randn(n, 8, generator=g, requires_grad=True)
    pos = torch.randn(n, 3, generator=g, requires_grad=True)
    return x, pos, edge_index


def test_graph_layers_equal_pyg_on_irregular_edge_lists():
    """The edge-list path beyond kNN graphs: outputs and gradients (inputs and weights) equal PyG's."""
    from geot.models.common import mlp

    torch.manual_seed(0)
    attention = VectorAttention(8, 8, pos_nn=mlp([3, 8], last_act=False), attn_nn=mlp([8, 8], last_act=False))
    edge_conv = EdgeConv(mlp([16, 8, 8]))
    pairs = [(attention, PygVectorAttention(8, 8, pos_nn=copy.deepcopy(attention.pos_nn),
                                            attn_nn=copy.deepcopy(attention.attn_nn)), True),
             (edge_conv, PygEdgeConv(copy.deepcopy(edge_conv.nn), aggr="max"), False)]
    for ours, theirs, uses_pos in pairs:
        theirs.load_state_dict(ours.state_dict())
        results = []
        for layer in (ours, theirs):
            x, pos, edge_index = irregular_graph()
            out = layer(x, pos, edge_index) if uses_pos else layer(x, edge_index)
            out.sin().sum().backward()
            results.append((out.detach(), x.grad, pos.grad, [p.grad for p in layer.parameters()]))
        (out, gx, gpos, gw), (ref, rx, rpos, rw) = results
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(gx, rx, atol=1e-5, rtol=1e-3)
        if uses_pos:
            torch.testing.assert_close(gpos, rpos, atol=1e-5, rtol=1e-3)
        for a, b in zip(gw, rw, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-3)
        if not uses_pos:
            assert torch.equal(out[-2:], torch.zeros_like(out[-2:]))  # no neighbours: 0, as PyG's max gives


def test_group_reductions_equal_pyg():
    from torch_geometric.nn import global_max_pool as pyg_global_max_pool
    from torch_geometric.utils import scatter

    from geot import ops

    g = torch.Generator().manual_seed(1)
    src = torch.randn(30, 5, generator=g, requires_grad=True)
    index = torch.randint(0, 6, (30,), generator=g)  # group 6 stays empty
    batch = index.sort().values
    for ours, theirs in [(ops.scatter_max(src, index, 7), scatter(src, index, dim=0, dim_size=7, reduce="max")),
                         (ops.scatter_sum(src, index, 7), scatter(src, index, dim=0, dim_size=7, reduce="sum")),
                         (ops.global_max_pool(src, batch), pyg_global_max_pool(src, batch))]:
        torch.testing.assert_close(ours, theirs)
        (grad,) = torch.autograd.grad(ours.square().sum(), src)
        (ref,) = torch.autograd.grad(theirs.square().sum(), src)
        torch.testing.assert_close(grad, ref)
    softmax = ops.scatter_softmax(src, index, 7)
    torch.testing.assert_close(ops.scatter_sum(softmax, index, 7)[:6], torch.ones(6, 5))  # sums to 1 per group
    from torch_geometric.utils import softmax as pyg_softmax

    torch.testing.assert_close(softmax, pyg_softmax(src, index, num_nodes=7))


def test_dense_neighbours_rejects_irregular_lists():
    from geot.ops import dense_neighbours

    q = torch.tensor([0, 0, 1, 1])
    nb = torch.tensor([1, 2, 0, 2])
    assert torch.equal(dense_neighbours(q, nb, 2, 2), torch.tensor([[1, 2], [0, 2]]))
    assert dense_neighbours(torch.tensor([0, 0, 0, 1]), nb, 2, 2) is None  # 3 for one query, 1 for the other
    assert dense_neighbours(q[:3], nb[:3], 2, 2) is None
