import numpy as np
import torch

from geot.data.augment import STRONG, WEAK
from geot.data.dataset import ScanDataset, load_prepared, prepare
from geot.io.teeth3ds import ScanFiles, write_labels
from tests.conftest import write_obj


def test_sampling_indices_and_views(sphere_scan):
    scan = prepare(sphere_scan)
    ds = ScanDataset([scan], num_points=100, augment=WEAK, strong=STRONG, seed=0)
    item = ds.sample(0, (0, 0))
    assert item.vertex.shape == (100,) and len(set(item.vertex.tolist())) == 100
    torch.testing.assert_close(item.y, torch.from_numpy(scan.y)[item.vertex])
    torch.testing.assert_close(item.raw_pos, torch.from_numpy(scan.pos)[item.vertex])  # same points, both views
    assert not torch.allclose(item.pos, item.pos_strong)
    assert item.x.shape == (100, 7) and torch.equal(item.x[:, 6], torch.zeros(100))  # lower jaw flag
    again = ds.sample(0, (0, 0))
    assert torch.equal(again.vertex, item.vertex) and torch.equal(again.pos_strong, item.pos_strong)
    other = ds.sample(0, (1, 0))
    assert not torch.equal(other.vertex, item.vertex)


def test_all_points_when_scan_is_small(sphere_scan):
    scan = prepare(sphere_scan)
    item = ScanDataset([scan], num_points=10_000)[0]
    assert sorted(item.vertex.tolist()) == list(range(scan.num_vertices))
    torch.testing.assert_close(item.pos, torch.from_numpy(scan.pos)[item.vertex])  # no augmentation


def test_cache_is_reused_and_invalidated(tmp_path, sphere_scan):
    obj = write_obj(tmp_path / "data" / "P1_lower.obj", sphere_scan.vertices, sphere_scan.faces)
    label = write_labels(tmp_path / "data" / "P1_lower.json", sphere_scan.labels, "lower", "P1")
    files = ScanFiles(obj, label, "P1_lower", "P1", "lower")
    cache = tmp_path / "cache"
    first = load_prepared(files, curvature=True, cache_dir=cache)
    assert len(list(cache.iterdir())) == 1
    second = load_prepared(files, curvature=True, cache_dir=cache)
    np.testing.assert_array_equal(first.pos, second.pos)
    np.testing.assert_array_equal(first.curvature, second.curvature)
    np.testing.assert_array_equal(first.y, second.y)
    unlabelled = load_prepared(files, labelled=False, cache_dir=cache)
    assert unlabelled.y is None
    write_labels(label, np.where(sphere_scan.labels == 31, 0, sphere_scan.labels), "lower", "P1")
    changed = load_prepared(files, curvature=True, cache_dir=cache)
    assert (changed.y == 1).sum() == 0 and (first.y == 1).sum() > 0
    assert not list(tmp_path.joinpath("data").glob("*.npz"))  # nothing written beside the inputs
