import pytest
import torch
from torch_geometric.data import Batch

from geot.data.augment import WEAK
from geot.data.dataset import ScanDataset, prepare
from geot.models import build_model, count_parameters

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
    model = build_model(name, 7, 17, **kwargs)
    assert count_parameters(model) > 0
    logits, feats = model(batch.x, batch.pos, batch.batch)
    assert logits.shape == (len(batch.x), 17) and feats.shape[0] == len(batch.x)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(batch.x, batch.pos, batch.batch)[0], batch.y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


@pytest.mark.parametrize("name, kwargs", CONFIGS)
def test_scans_do_not_influence_each_other(batch, name, kwargs):
    """Per-point normalisation: a scan's output is the same alone or batched, in train and eval mode."""
    torch.manual_seed(0)
    model = build_model(name, 7, 17, **kwargs)
    first = batch.batch == 0
    for mode in (model.train, model.eval):
        mode()
        together = model(batch.x, batch.pos, batch.batch)[0][first]
        alone = model(batch.x[first], batch.pos[first], batch.batch[first])[0]
        torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)


def test_unknown_backbone():
    with pytest.raises(ValueError, match="unknown backbone"):
        build_model("pointnet9", 7, 17)
