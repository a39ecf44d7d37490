"""PNG renders: right size, byte-identical for the same input, and coloured by the labels."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import imread

from geot import labels as fdi
from geot.data.synth import synth_jaw
from geot.render import DPI, LEGEND_INCHES, PANEL_INCHES, TITLE_INCHES, render_scan


@pytest.fixture(scope="module")
def jaw():
    return synth_jaw("upper", 7, resolution=0.25)


def _matches(image: np.ndarray, colour: np.ndarray) -> int:
    """Pixels whose colour is ``colour`` under some shading (a factor in [0.3, 1])."""
    rgb = image[..., :3].reshape(-1, 3).astype(np.float64)
    c = colour / 255.0
    shade = rgb @ c / (c @ c)
    close = np.abs(rgb - shade[:, None] * c).max(axis=1) < 0.02
    return int((close & (shade > 0.3) & (shade < 1.02)).sum())


def _big_coloured_tooth(classes: np.ndarray) -> int:
    """The tooth class with most vertices among those whose palette colour is not a grey."""
    counts = np.bincount(classes, minlength=fdi.NUM_CLASSES)
    chroma = np.ptp(fdi.PALETTE.astype(int), axis=1)
    counts[(chroma < 40) | (np.arange(fdi.NUM_CLASSES) == 0)] = 0
    return int(np.argmax(counts))


def test_png_has_the_expected_size(tmp_path, jaw):
    out = render_scan(tmp_path / "a.png", jaw.vertices, jaw.faces, jaw.classes(), title="upper", jaw="upper")
    assert out == tmp_path / "a.png"
    height, width = imread(out).shape[:2]
    assert (width, height) == (round((2 * PANEL_INCHES + LEGEND_INCHES) * DPI),
                               round((PANEL_INCHES + TITLE_INCHES) * DPI))
    single = render_scan(tmp_path / "b.png", jaw.vertices, jaw.faces, views=("occlusal",))
    assert imread(single).shape[:2] == (round(PANEL_INCHES * DPI), round(PANEL_INCHES * DPI))
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, nothing left behind


def test_same_input_gives_identical_bytes(tmp_path, jaw):
    args = (jaw.vertices, jaw.faces, jaw.classes(), "SYN0000_upper")
    a = render_scan(tmp_path / "a.png", *args, jaw="upper").read_bytes()
    b = render_scan(tmp_path / "b.png", *args, jaw="upper").read_bytes()
    assert a == b
    shifted = render_scan(tmp_path / "c.png", jaw.vertices, jaw.faces, np.zeros_like(jaw.classes()), "x").read_bytes()
    assert shifted != a


def test_label_colours_appear_only_when_labelled(tmp_path, jaw):
    classes = jaw.classes()
    tooth = _big_coloured_tooth(classes)
    labelled = imread(render_scan(tmp_path / "l.png", jaw.vertices, jaw.faces, classes, legend=False))
    plain = imread(render_scan(tmp_path / "p.png", jaw.vertices, jaw.faces, None))
    for k in (0, tooth):  # gingiva and a big tooth, drawn on the mesh itself (no legend)
        assert _matches(labelled, fdi.PALETTE[k]) > 300, k
        assert _matches(plain, fdi.PALETTE[k]) < 20, k
    assert _matches(plain, np.array([200, 200, 200])) > 3000  # the unlabelled mesh is grey
    # a class that the scan lacks is nowhere in the picture
    absent = next(k for k in range(1, 17) if k not in classes and np.ptp(fdi.PALETTE[k].astype(int)) >= 40)
    assert _matches(labelled, fdi.PALETTE[absent]) < 20


def test_point_cloud_and_legend(tmp_path, jaw):
    classes = jaw.classes()
    tooth = _big_coloured_tooth(classes)
    cloud = imread(render_scan(tmp_path / "c.png", jaw.vertices, None, classes, legend=False))
    assert _matches(cloud, fdi.PALETTE[tooth]) > 50
    with_legend = imread(render_scan(tmp_path / "g.png", jaw.vertices, None, classes, jaw="upper"))
    assert with_legend.shape[1] > cloud.shape[1]


def test_bad_input(tmp_path, jaw):
    with pytest.raises(ValueError, match="views"):
        render_scan(tmp_path / "x.png", jaw.vertices, jaw.faces, views=("side",))
    with pytest.raises(ValueError, match="classes"):
        render_scan(tmp_path / "x.png", jaw.vertices, jaw.faces, jaw.classes()[:-1])
    with pytest.raises(ValueError, match="vertices"):
        render_scan(tmp_path / "x.png", jaw.vertices[:, :2], None)
    assert not (tmp_path / "x.png").exists()
