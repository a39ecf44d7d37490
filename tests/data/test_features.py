import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from geot.data.features import canonical_frame, point_features, signed_curvature
from geot.io.scan import Scan
from geot.io.teeth3ds import find_scans, read_scan
from tests.conftest import REAL_DATA, real_data


def test_normalisation_invariants(sphere_scan):
    f = point_features(sphere_scan, align=False)
    np.testing.assert_allclose(f.pos.mean(0), 0, atol=1e-6)
    assert np.linalg.norm(f.pos, axis=1).max() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(np.linalg.norm(f.normal, axis=1), 1, atol=1e-5)
    # outward normals on a sphere point along the position
    assert (np.sum(f.normal * f.pos, axis=1) > 0.9).all()


@pytest.mark.parametrize("magnitude", [1e-30, 1e30])
def test_cloud_features_at_extreme_coordinate_scales(sphere_scan, magnitude):
    """Point-cloud normals come from local PCA; huge or tiny raw units must not break it (found by fuzzing)."""
    cloud = Scan(sphere_scan.vertices * magnitude + 1e3 * magnitude, None, name="cloud")
    f = point_features(cloud, align=False)  # a sphere has no preferred axes to align to
    assert np.isfinite(f.pos).all() and np.isfinite(f.normal).all()
    reference = point_features(Scan(sphere_scan.vertices, None, name="cloud"), align=False)
    np.testing.assert_allclose(np.abs((f.normal * reference.normal).sum(1)), 1, atol=1e-2)


def arch_like(scan: Scan) -> Scan:
    """An open dome, wide, flat, narrower at the front: a shape the canonical frame can orient."""
    import trimesh

    mesh = trimesh.Trimesh(scan.vertices, scan.faces, process=False)
    keep = mesh.vertices[mesh.faces].mean(axis=1)[:, 2] > -2.0
    dome = trimesh.Trimesh(mesh.vertices, mesh.faces[keep], process=False)
    dome.remove_unreferenced_vertices()
    v = np.asarray(dome.vertices) * [3.0, 2.0, 0.7]
    v[:, 0] *= 1.3 - 0.03 * v[:, 1]  # narrower towards +y
    return Scan(v, np.asarray(dome.faces), "lower")


def test_frame_is_a_proper_rotation_and_invariant_to_pose(sphere_scan):
    rng = np.random.default_rng(1)
    squashed = arch_like(sphere_scan)
    f0 = point_features(squashed)
    narrow_front = np.abs(f0.pos[f0.pos[:, 1] > 0.3, 0]).mean() < np.abs(f0.pos[f0.pos[:, 1] < -0.3, 0]).mean()
    assert narrow_front and (f0.normal[:, 2].mean() > 0)
    assert np.linalg.det(f0.frame.rotation) == pytest.approx(1.0)
    for _ in range(3):
        r = Rotation.random(random_state=rng).as_matrix()
        moved = Scan(squashed.vertices @ r.T + rng.normal(size=3) * 50, squashed.faces, "lower")
        f1 = point_features(moved)
        np.testing.assert_allclose(f1.pos, f0.pos, atol=1e-4)  # same canonical coordinates


def test_inputs_are_not_modified(sphere_scan):
    before = sphere_scan.vertices.copy()
    point_features(sphere_scan, curvature=True)
    np.testing.assert_array_equal(sphere_scan.vertices, before)


def test_curvature_sign_on_sphere(sphere_scan):
    f = point_features(sphere_scan, align=False)
    curv = signed_curvature(f.pos, f.normal)
    assert (curv > 0).all()  # convex everywhere
    inverted = signed_curvature(f.pos, -f.normal)
    assert (inverted < 0).all()


@real_data
def test_alignment_on_real_scans():
    """Incisors in front (+y) for every real jaw, first-quadrant teeth on -x, clouds aligned like meshes."""
    files = find_scans(REAL_DATA)
    assert len(files) == 108
    for entry in files:
        scan = read_scan(entry.mesh, entry.labels)
        classes = scan.classes()
        f = point_features(scan)
        teeth = f.pos[classes > 0]
        incisors = f.pos[(classes == 1) | (classes == 9)]
        assert incisors[:, 1].mean() > teeth[:, 1].mean(), scan.name
        assert f.pos[(classes >= 1) & (classes <= 8), 0].mean() < 0 < f.pos[classes >= 9, 0].mean(), scan.name
    cloud = Scan(scan.vertices, None, scan.jaw)
    frame = canonical_frame(cloud.vertices, None, True, has_faces=False)
    assert np.sign(np.diag(frame.rotation @ f.frame.rotation.T)).tolist() == [1, 1, 1]
