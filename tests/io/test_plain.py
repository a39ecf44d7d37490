"""The numpy fast paths for OBJ and PLY give what trimesh gives, and leave everything else to trimesh."""

import numpy as np
import pytest
import trimesh

from geot.data.features import vertex_normals
from geot.io.mesh import read_mesh, write_labelled_mesh
from geot.io.plain import read_plain_obj
from tests.conftest import REAL_DATA, real_data, write_obj


def assert_same_as_trimesh(path):
    plain = read_plain_obj(path)
    assert plain is not None, f"{path.name} should take the plain path"
    reference = trimesh.load(path, process=False)
    np.testing.assert_array_equal(plain[0], np.asarray(reference.vertices))
    np.testing.assert_array_equal(plain[1], np.asarray(reference.faces))


def test_plain_obj_matches_trimesh_with_colours_normals_and_comments(tmp_path, sphere_scan):
    v, f = sphere_scan.vertices, sphere_scan.faces
    rng = np.random.default_rng(1)
    lines = ["# exported by a scanner", "mtllib none.mtl", "s off"]
    colours = rng.random(v.shape)
    lines += [f"v {x:.6f} {y:.6f} {z:.6f} {r:.3f} {g:.3f} {b:.3f}"
              for (x, y, z), (r, g, b) in zip(v, colours, strict=True)]
    lines += ["vn 0 0 1" for _ in v] + [f"f  {a + 1} {b + 1}  {c + 1}" for a, b, c in f]
    (tmp_path / "s.obj").write_text("\r\n".join(lines) + "\r\n")
    assert_same_as_trimesh(tmp_path / "s.obj")


def test_a_vertex_in_no_face_keeps_its_place(tmp_path):
    """Teeth3DS labels count every ``v`` line; trimesh drops (and renumbers past) vertices no face uses."""
    (tmp_path / "m.obj").write_text("v 0 0 0\nv 9 9 9\nv 1 0 0\nv 1 1 0\nf 1 3 4\n")
    got = read_mesh(tmp_path / "m.obj")
    np.testing.assert_array_equal(got.vertices, [[0, 0, 0], [9, 9, 9], [1, 0, 0], [1, 1, 0]])
    np.testing.assert_array_equal(got.faces, [[0, 2, 3]])
    assert len(trimesh.load(tmp_path / "m.obj", process=False).vertices) == 3  # why trimesh is not used here


@pytest.mark.parametrize("body", [
    "v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nf 1 2 3 4\n",            # a quad: trimesh splits it
    "v 0 0 0\nv 1 0 0\nv 1 1 0\nvt 0 0\nf 1/1 2/1 3/1\n",          # texture indices
    "v 0 0 0\nv 1 0 0\nv 1 1 0\nf -3 -2 -1\n",                     # relative indices
    "o tooth\nv 0 0 0\nv 1 0 0\nv 1 1 0\nf 1 2 3\n",               # objects may be split
    "v 0 0 0 1\nv 1 0 0 1\nv 1 1 0 1\nf 1 2 3\n",                  # a w coordinate
])
def test_anything_unusual_goes_to_trimesh(tmp_path, body):
    (tmp_path / "m.obj").write_text(body)
    assert read_plain_obj(tmp_path / "m.obj") is None
    got = read_mesh(tmp_path / "m.obj")  # still read, by the general reader
    assert got.faces is not None and got.faces.max() < len(got.vertices)


def test_out_of_range_faces_are_not_read_as_a_plain_mesh(tmp_path):
    (tmp_path / "m.obj").write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\nf 1 2 4\n")
    assert read_plain_obj(tmp_path / "m.obj") is None


def test_vertices_alone_are_a_cloud(tmp_path, sphere_scan):
    write_obj(tmp_path / "c.obj", sphere_scan.vertices, None)
    got = read_mesh(tmp_path / "c.obj")
    assert got.faces is None
    np.testing.assert_allclose(got.vertices, sphere_scan.vertices, atol=1e-6)


@pytest.mark.parametrize("cloud", [False, True])
def test_labelled_ply_reads_back_in_trimesh_and_geot(tmp_path, sphere_scan, cloud):
    faces = None if cloud else sphere_scan.faces
    labels = np.random.default_rng(0).choice([0, 31, 36, 41, 47], len(sphere_scan.vertices))
    write_labelled_mesh(tmp_path / "m.ply", sphere_scan.vertices, faces, labels, "lower")
    other = trimesh.load(tmp_path / "m.ply", process=False)
    np.testing.assert_array_equal(np.asarray(other.vertices), sphere_scan.vertices)
    colours = np.asarray(other.visual.vertex_colors)
    assert len(np.unique(colours[:, :3], axis=0)) == len(np.unique(labels))  # one colour per tooth
    ours = read_mesh(tmp_path / "m.ply")
    np.testing.assert_array_equal(ours.vertex_labels, labels)
    if cloud:
        assert ours.faces is None
    else:
        np.testing.assert_array_equal(ours.faces, sphere_scan.faces)


def test_labelled_obj_reads_back_with_its_colours(tmp_path, sphere_scan):
    labels = np.where(sphere_scan.vertices[:, 0] > 0, 11, 21)
    write_labelled_mesh(tmp_path / "m.obj", sphere_scan.vertices, sphere_scan.faces, labels, "upper")
    other = trimesh.load(tmp_path / "m.obj", process=False)
    np.testing.assert_allclose(np.asarray(other.vertices), sphere_scan.vertices, rtol=1e-8, atol=1e-8)
    np.testing.assert_array_equal(np.asarray(other.faces), sphere_scan.faces)
    colours = np.asarray(other.visual.vertex_colors)[:, :3]
    assert len(np.unique(colours, axis=0)) == 2
    assert (colours[labels == 11] == colours[labels == 11][0]).all()


def test_normals_are_trimeshs_with_a_degenerate_face_and_a_loose_vertex(sphere_scan):
    v = np.concatenate([sphere_scan.vertices, [[5.0, 5.0, 5.0]]])
    f = np.concatenate([sphere_scan.faces, [[0, 0, 1]]])  # zero area
    expected = np.asarray(trimesh.Trimesh(v, f, process=False).vertex_normals)
    got = vertex_normals(v, f)
    np.testing.assert_allclose(got[:-1], expected[:-1], atol=1e-12)
    assert abs(np.linalg.norm(got[-1]) - 1) < 1e-9  # the loose vertex gets a PCA normal instead of zero


@real_data
def test_every_real_jaw_reads_as_trimesh_reads_it():
    paths = sorted(REAL_DATA.parent.glob("*/*/*.obj"))
    assert len(paths) >= 100
    for path in paths:
        assert_same_as_trimesh(path)
        mesh = read_mesh(path)
        expected = np.asarray(trimesh.Trimesh(mesh.vertices, mesh.faces, process=False).vertex_normals)
        in_faces = np.linalg.norm(expected, axis=1) > 0.5  # geot gives the rest a PCA normal, trimesh zero
        np.testing.assert_allclose(vertex_normals(mesh.vertices, mesh.faces)[in_faces], expected[in_faces], atol=1e-12)
