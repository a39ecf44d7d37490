import numpy as np
import pytest
import trimesh

from geot.errors import ScanError
from geot.io.mesh import read_mesh, write_labelled_mesh
from tests.conftest import write_obj


@pytest.mark.parametrize("encoding", ["binary", "ascii"])
def test_ply_mesh_and_cloud_round_trip(tmp_path, sphere_scan, encoding):
    mesh = trimesh.Trimesh(sphere_scan.vertices, sphere_scan.faces, process=False)
    (tmp_path / "m.ply").write_bytes(mesh.export(file_type="ply", encoding=encoding))
    got = read_mesh(tmp_path / "m.ply")
    np.testing.assert_allclose(got.vertices, sphere_scan.vertices, atol=1e-5)
    np.testing.assert_array_equal(got.faces, sphere_scan.faces)
    cloud = trimesh.PointCloud(sphere_scan.vertices)
    (tmp_path / "c.ply").write_bytes(cloud.export(file_type="ply", encoding=encoding))
    got = read_mesh(tmp_path / "c.ply")
    assert got.faces is None
    np.testing.assert_allclose(got.vertices, sphere_scan.vertices, atol=1e-5)


def test_obj_keeps_vertex_order(tmp_path, sphere_scan):
    rng = np.random.default_rng(0)
    order = rng.permutation(len(sphere_scan.vertices))
    v = sphere_scan.vertices[order]
    inverse = np.argsort(order)
    write_obj(tmp_path / "s.obj", v, inverse[sphere_scan.faces])
    got = read_mesh(tmp_path / "s.obj")
    np.testing.assert_allclose(got.vertices, v, atol=1e-6)


def test_stl_soup_is_merged(tmp_path, sphere_scan):
    mesh = trimesh.Trimesh(sphere_scan.vertices, sphere_scan.faces, process=False)
    (tmp_path / "s.stl").write_bytes(mesh.export(file_type="stl"))
    got = read_mesh(tmp_path / "s.stl")
    assert len(got.vertices) == len(sphere_scan.vertices)
    assert len(got.faces) == len(sphere_scan.faces)


@pytest.mark.parametrize("suffix", [".ply", ".obj"])
def test_labelled_mesh_round_trip(tmp_path, sphere_scan, suffix):
    path = write_labelled_mesh(tmp_path / f"out{suffix}", sphere_scan.vertices, sphere_scan.faces,
                               sphere_scan.labels, "lower")
    got = read_mesh(path)
    np.testing.assert_allclose(got.vertices, sphere_scan.vertices, atol=1e-4)
    if suffix == ".ply":
        np.testing.assert_array_equal(got.vertex_labels, sphere_scan.labels)
    loaded = trimesh.load(path, process=False)
    colours = np.asarray(loaded.visual.vertex_colors)[:, :3]
    from geot.labels import PALETTE, fdi_to_class

    np.testing.assert_array_equal(colours, PALETTE[fdi_to_class(sphere_scan.labels, "lower")])


def test_labelled_cloud_round_trip(tmp_path, sphere_scan):
    path = write_labelled_mesh(tmp_path / "cloud.ply", sphere_scan.vertices, None, sphere_scan.labels, "lower")
    got = read_mesh(path)
    assert got.faces is None
    np.testing.assert_array_equal(got.vertex_labels, sphere_scan.labels)


def test_write_refuses_to_replace_unless_asked(tmp_path, sphere_scan):
    args = (sphere_scan.vertices, sphere_scan.faces, sphere_scan.labels, "lower")
    path = write_labelled_mesh(tmp_path / "o.ply", *args)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        write_labelled_mesh(path, *args, overwrite=False)
    assert path.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("content, problem", [
    (b"", "empty"),
    (b"v 0 0 0\nv nan 1 2\nv 1 1 1\nf 1 2 3\n", None),  # NaN is read; Scan validation reports it
    (b"\x00\x01garbage\xff" * 10, "cannot read|empty"),
])
def test_bad_obj_files(tmp_path, content, problem):
    path = tmp_path / "bad.obj"
    path.write_bytes(content)
    if problem is None:
        assert np.isnan(read_mesh(path).vertices).any()
    else:
        with pytest.raises(ScanError, match=problem) as info:
            read_mesh(path)
        assert str(path) in str(info.value)


def test_missing_and_unsupported(tmp_path):
    with pytest.raises(ScanError, match="not found"):
        read_mesh(tmp_path / "nope.obj")
    (tmp_path / "x.vtp").write_text("x")
    with pytest.raises(ScanError, match="unsupported"):
        read_mesh(tmp_path / "x.vtp")


def test_outputs_get_normal_permissions(tmp_path, sphere_scan):
    import os
    import stat

    path = write_labelled_mesh(tmp_path / "o.ply", sphere_scan.vertices, sphere_scan.faces, sphere_scan.labels, "lower")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
