"""Synthetic jaws: deterministic, labelled like Teeth3DS, and obeying the conventions of real scans."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from geot import labels as fdi
from geot.data.features import point_features
from geot.data.synth import RESOLUTIONS, synth_jaw, synthetic_scan, write_synthetic_dataset
from geot.errors import ConfigError, ScanError
from geot.io.teeth3ds import find_scans, read_scan

RES = 0.25  # about 2k vertices: fast, still every tooth


def _components(faces: np.ndarray, n: int) -> np.ndarray:
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def _tooth_centroids(scan) -> dict[int, np.ndarray]:
    """Canonical-frame centroid (mm) of every tooth class present."""
    feats = point_features(scan)
    pos = feats.pos.astype(np.float64) * feats.frame.scale
    cls = scan.classes()
    return {int(k): pos[cls == k].mean(0) for k in np.unique(cls) if k > 0}


def test_same_seed_same_jaw_other_seed_other_jaw():
    a = synth_jaw("lower", 3, resolution=RES)
    b = synth_jaw("lower", 3, resolution=RES)
    c = synth_jaw("lower", np.random.default_rng(3), resolution=RES)  # a generator seeded alike
    for other in (b, c):
        np.testing.assert_array_equal(a.vertices, other.vertices)
        np.testing.assert_array_equal(a.faces, other.faces)
        np.testing.assert_array_equal(a.labels, other.labels)
        np.testing.assert_array_equal(a.instances, other.instances)
    d = synth_jaw("lower", 4, resolution=RES)
    assert a.vertices.shape != d.vertices.shape or not np.allclose(a.vertices, d.vertices)
    assert (a.name, a.patient, a.jaw) == ("SYN0000_lower", "SYN0000", "lower")


@pytest.mark.parametrize(("resolution", "target"), [(1.0, 8200), (RES, 8200 * RES)])
def test_vertex_count_near_real_scans(resolution, target):
    for seed, jaw in ((0, "lower"), (1, "upper")):
        scan = synth_jaw(jaw, seed, resolution=resolution)
        assert 0.75 * target <= scan.num_vertices <= 1.25 * target, (jaw, scan.num_vertices)
        assert 1.7 * scan.num_vertices <= len(scan.faces) <= 2.2 * scan.num_vertices  # a surface, not a cloud


@pytest.mark.parametrize("jaw", fdi.JAWS)
def test_labels_are_teeth_of_the_jaw_and_instances_match(jaw):
    for seed in range(3):
        scan = synth_jaw(jaw, seed, resolution=RES).validate()
        assert scan.labels.dtype.kind == "i" and scan.instances.shape == scan.labels.shape
        assert set(np.unique(scan.labels)) <= set(fdi.fdi_codes(jaw).tolist())
        teeth = np.unique(scan.labels[scan.labels > 0])
        assert 8 <= len(teeth) <= 16
        assert ((scan.instances == 0) == (scan.labels == 0)).all()
        pairs = np.unique(np.stack([scan.instances, scan.labels], 1), axis=0)
        assert len(pairs) == len(np.unique(scan.instances)) == len(np.unique(scan.labels))  # one-to-one
        assert np.array_equal(np.unique(scan.instances), np.arange(len(teeth) + 1))
        share = (scan.labels == 0).mean()
        assert 0.35 <= share <= 0.7  # gingiva holds about half of the vertices, as in real scans


@pytest.mark.parametrize("jaw", fdi.JAWS)
def test_mesh_is_one_sheet_with_clean_tooth_boundaries(jaw):
    scan = synth_jaw(jaw, 2, resolution=1.0)
    comp = _components(scan.faces, scan.num_vertices)
    assert len(np.unique(comp)) <= 3
    cls = scan.classes()
    mixed = (cls[scan.faces].min(1) != cls[scan.faces].max(1)).mean()
    assert mixed < 0.12  # real scans: about 0.07
    for k in np.unique(cls[cls > 0]):  # every tooth is one patch of the surface
        inside = cls == k
        patch = _components(scan.faces[inside[scan.faces].all(1)], scan.num_vertices)[inside]
        assert np.bincount(patch).max() >= 0.9 * inside.sum()


def test_tooth_sizes_and_left_right_likeness():
    for seed, jaw in ((0, "upper"), (1, "lower"), (2, "upper")):
        counts = np.bincount(synth_jaw(jaw, seed, resolution=1.0, missing_prob=0.0).classes(), minlength=17)
        for q in (0, 8):
            assert counts[q + 6] > 1.3 * counts[q + 2]  # first molar much larger than the lateral incisor
            assert counts[q + 6] > counts[q + 4]        # and than the first premolar
        for k in range(1, 8):  # homologous teeth of the two quadrants look alike
            assert 0.7 < counts[k] / counts[k + 8] < 1.4, (jaw, k, counts[k], counts[k + 8])


def test_all_teeth_without_missing_and_third_molars_rare():
    with_third = 0
    for seed in range(30):
        jaw = fdi.JAWS[seed % 2]
        classes = set(np.unique(synth_jaw(jaw, seed, resolution=RES, missing_prob=0.0).classes()).tolist())
        assert set(range(1, 8)) | set(range(9, 16)) <= classes
        with_third += bool(classes & {8, 16})
    assert 1 <= with_third <= 8  # about 10% of jaws, like the real data
    few = [len(np.unique(synth_jaw("upper", s, resolution=RES, missing_prob=0.5).labels)) - 1 for s in range(6)]
    assert min(few) >= 1 and np.mean(few) < 11


@pytest.mark.parametrize("jaw", fdi.JAWS)
def test_teeth_in_arch_order(jaw):
    """Around the arch centre, the angle of the tooth centroids grows with ARCH_POSITION."""
    for seed in range(4):
        cent = _tooth_centroids(synth_jaw(jaw, seed, resolution=RES))
        classes = sorted(cent, key=lambda k: fdi.ARCH_POSITION[k])
        xy = np.array([cent[k][:2] for k in classes])
        d = xy - xy.mean(0)
        angle = np.arctan2(d[:, 0], d[:, 1])  # 0 towards the incisors, negative on the -x side
        assert np.all(np.diff(angle) > 0), (seed, classes, np.degrees(angle).round())


@pytest.mark.parametrize("jaw", fdi.JAWS)
def test_canonical_frame_conventions(jaw):
    """After alignment: crowns up (+z), incisors in front (+y), classes 1..8 on -x and 9..16 on +x."""
    for seed in range(5):
        scan = synth_jaw(jaw, 10 + seed, resolution=RES)
        feats = point_features(scan)
        cls = scan.classes()
        cent = _tooth_centroids(scan)
        middle = np.mean(list(cent.values()), axis=0)
        incisors = [k for k in (1, 9) if k in cent]
        assert incisors and all(cent[k][1] > middle[1] + 10 for k in incisors)
        first = np.mean([c for k, c in cent.items() if k <= 8], axis=0)
        second = np.mean([c for k, c in cent.items() if k >= 9], axis=0)
        assert first[0] < middle[0] - 5 and second[0] > middle[0] + 5
        # every tooth but the central incisors (they touch the midline) on the side of its quadrant
        assert all(c[0] < middle[0] for k, c in cent.items() if 2 <= k <= 8)
        assert all(c[0] > middle[0] for k, c in cent.items() if k >= 10)
        assert feats.pos[cls > 0, 2].mean() > feats.pos[cls == 0, 2].mean()
        assert (feats.normal[cls > 0, 2] > 0).mean() > 0.6  # tooth surfaces face the scanner


def test_random_pose_differs_between_scans():
    a, b = synth_jaw("upper", 0, resolution=RES), synth_jaw("upper", 1, resolution=RES)
    axes = [np.linalg.eigh(np.cov((s.vertices - s.vertices.mean(0)).T))[1][:, 0] for s in (a, b)]
    assert abs(axes[0] @ axes[1]) < 0.99  # occlusal axes point different ways
    assert np.linalg.norm(a.vertices.mean(0) - b.vertices.mean(0)) > 1.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="jaw"):
        synth_jaw("middle", 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="resolution"):
        synth_jaw("lower", 0, resolution=0)
    with pytest.raises(ValueError, match="missing_prob"):
        synth_jaw("lower", 0, missing_prob=1.0)


def test_write_synthetic_dataset_reads_back(tmp_path):
    paths = write_synthetic_dataset(tmp_path / "syn", 20, seed=5, resolution=RES)
    assert len(paths) == 20
    assert paths[0] == tmp_path / "syn" / "SYN0000" / "SYN0000_lower.obj"
    assert paths[1] == tmp_path / "syn" / "SYN0000" / "SYN0000_upper.obj"
    found = find_scans(tmp_path / "syn")
    assert sorted(f.mesh for f in found) == sorted(paths)
    assert len({f.patient for f in found}) == 10
    assert all(f.labels is not None for f in found)
    for i in (0, 1, 19):
        expected = synthetic_scan(i, seed=5, resolution=RES)
        scan = read_scan(paths[i])
        assert (scan.jaw, scan.patient, scan.name) == (expected.jaw, expected.patient, expected.name)
        np.testing.assert_array_equal(scan.labels, expected.labels)
        np.testing.assert_array_equal(scan.instances, expected.instances)
        np.testing.assert_array_equal(scan.faces, expected.faces)
        np.testing.assert_allclose(scan.vertices, expected.vertices, rtol=0, atol=1e-5)
    again = write_synthetic_dataset(tmp_path / "again", 2, seed=5, resolution=RES)  # same seed, fewer scans
    for p, q in zip(paths[:2], again, strict=True):
        assert p.read_bytes() == q.read_bytes()
        assert p.with_suffix(".json").read_bytes() == q.with_suffix(".json").read_bytes()
    other = write_synthetic_dataset(tmp_path / "other", 1, seed=6, resolution=RES)
    assert other[0].read_bytes() != paths[0].read_bytes()


@pytest.mark.parametrize(("n", "seed", "resolution", "match"), [
    (-1, 0, 0.1, "number of jaws"), (1, -1, 0.1, "seed"), (1, 0, 0.0, "resolution"), (1, 0, float("nan"), "resolution"),
    (1, 0, float("inf"), "resolution"), (1, 0, 1e-9, "resolution"), (1, 0, 1e9, "resolution")])
def test_write_synthetic_dataset_refuses_bad_settings_with_a_user_error(tmp_path, n, seed, resolution, match):
    with pytest.raises(ConfigError, match=match):
        write_synthetic_dataset(tmp_path / "syn", n, seed=seed, resolution=resolution)
    assert not (tmp_path / "syn").exists()


def test_write_synthetic_dataset_into_a_file_is_a_user_error(tmp_path):
    (tmp_path / "taken").write_text("")
    with pytest.raises(ScanError, match="cannot write synthetic jaws"):
        write_synthetic_dataset(tmp_path / "taken", 1, resolution=RESOLUTIONS[0])
