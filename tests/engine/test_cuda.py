"""The CUDA path: the same numbers as on the CPU, and runs that move between the two.

Skipped without a GPU (CI has none); run on a GPU machine with ``pytest tests/engine/test_cuda.py``.
The rest of the suite also runs on the GPU there, since configs default to ``device: auto``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from geot import ops
from geot.config import load_config
from geot.data.augment import WEAK
from geot.data.dataset import ScanDataset, prepare
from geot.data.sources import gather_data
from geot.data.synth import write_synthetic_dataset
from geot.engine.predict import Segmenter
from geot.engine.train import train
from geot.io.teeth3ds import find_scans, read_scan
from tests.conftest import tiny_model
from tests.engine.test_train import TINY, read_log

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
CUDA = torch.device("cuda")


def clouds(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two scans of random points (no distance ties), stacked PyG-style."""
    g = torch.Generator().manual_seed(seed)
    pos = torch.rand(3000, 3, generator=g)
    return pos, torch.cat([torch.zeros(1200, dtype=torch.long), torch.ones(1800, dtype=torch.long)])


def test_neighbour_ops_match_cpu():
    pos, batch = clouds()
    on_gpu = ops.knn_graph(pos.to(CUDA), 8, batch.to(CUDA))
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), ops.knn_graph(pos, 8, batch))
    query = torch.rand(500, 3)
    qb = (torch.arange(500) >= 200).long()
    torch.testing.assert_close(ops.knn(pos.to(CUDA), query.to(CUDA), 5, batch.to(CUDA), qb.to(CUDA)).cpu(),
                               ops.knn(pos, query, 5, batch, qb))
    torch.testing.assert_close(ops.fps(pos.to(CUDA), 0.1, batch.to(CUDA)).cpu(), ops.fps(pos, 0.1, batch))
    x = torch.randn(len(pos), 4)
    torch.testing.assert_close(ops.interpolate(x.to(CUDA), pos.to(CUDA), query.to(CUDA), batch.to(CUDA),
                                               qb.to(CUDA)).cpu(),
                               ops.interpolate(x, pos, query, batch, qb), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name, kwargs", [("point_transformer", {"channels": [16, 32, 64], "k": 8}),
                                          ("point_transformer", {"channels": [16, 32], "k": 8, "sampling": "fps"}),
                                          ("dgcnn", {"channels": [16, 16], "global_channels": 32, "k": 8})])
def test_model_output_and_gradients_match_cpu(sphere_scan, name, kwargs):
    ds = ScanDataset([prepare(sphere_scan)] * 2, num_points=256, augment=WEAK)
    batch = Batch.from_data_list([ds.sample(0, (0, 0)), ds.sample(1, (0, 1))])
    torch.manual_seed(0)
    cpu_model = tiny_model(name, **kwargs)
    gpu_model = tiny_model(name, **kwargs).to(CUDA)
    gpu_model.load_state_dict(cpu_model.state_dict())
    results = []
    for model, device in ((cpu_model, "cpu"), (gpu_model, CUDA)):
        b = batch.to(device)
        logits = model(b.x, b.pos, b.batch).logits
        torch.nn.functional.cross_entropy(logits, b.y).backward()
        results.append((logits.detach().cpu(), next(model.parameters()).grad.cpu()))
    (ref, ref_grad), (out, grad) = results
    assert float((out - ref).norm() / ref.norm()) < 1e-4  # float32 on both sides (no TF32 by default)
    assert float((grad - ref_grad).norm() / ref_grad.norm()) < 1e-3


def test_run_trained_on_gpu_predicts_the_same_on_cpu(tmp_path):
    """A geot run on the GPU learns, and its checkpoint segments a new scan alike on either device."""
    write_synthetic_dataset(tmp_path / "train", n=8, seed=0, resolution=0.25)
    write_synthetic_dataset(tmp_path / "new", n=1, seed=99, resolution=0.25)
    cfg = load_config(overrides={**TINY, "semi.method": "geot", "device": "cuda", "optim.epochs": 6})
    train(cfg, gather_data(cfg, tmp_path / "train", cache_dir=tmp_path / "cache"), tmp_path / "run", progress=False)
    log = read_log(tmp_path / "run")
    assert float(log[-1]["sup"]) < 0.85 * float(log[0]["sup"]) and float(log[-1]["pseudo"]) > 0
    new = find_scans(tmp_path / "new")[0]
    scan = read_scan(new.mesh, new.labels)
    on_gpu = Segmenter.load(tmp_path / "run", device="cuda").predict(scan).probs
    on_cpu = Segmenter.load(tmp_path / "run", device="cpu").predict(scan).probs
    assert np.abs(on_gpu - on_cpu).max() < 1e-3
