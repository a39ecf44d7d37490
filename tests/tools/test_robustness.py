"""tools/robustness.py: its transformations do what they say, and its measures can tell right from wrong."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from geot.data.features import point_features
from geot.data.synth import synth_jaw
from tests.data.real_jaws import robustness


@pytest.fixture(scope="module")
def tool():
    return robustness()


@pytest.fixture(scope="module")
def jaw():
    return synth_jaw("upper", 1, resolution=0.25)


def test_transformations_change_what_they_name(tool, jaw):
    rng = np.random.default_rng(0)
    out = {name: transform(jaw, rng) for name, (transform, _) in tool.TRANSFORMS.items()}
    assert not np.allclose(out["rotated + moved"].vertices, jaw.vertices)
    np.testing.assert_allclose(out["in metres"].vertices, jaw.vertices / 1000)
    np.testing.assert_array_equal(out["faces re-wound"].faces, jaw.faces[:, ::-1])
    turned = (out["faces wound at random"].faces != jaw.faces).any(1)
    assert 0.4 < turned.mean() < 0.6
    assert out["point cloud"].faces is None and out["all at once"].faces is None
    np.testing.assert_allclose(out["mirrored"].vertices, jaw.vertices * [-1, 1, 1])
    np.testing.assert_array_equal(out["mirrored"].faces, jaw.faces)
    np.testing.assert_array_equal(out["mirrored, faces flipped"].faces, jaw.faces[:, ::-1])
    # a mirror image's teeth are their namesakes on the other side
    np.testing.assert_array_equal(out["mirrored"].classes(), tool.SIDE_SWAP[jaw.classes()])
    assert [name for name, (_, mirrored) in tool.TRANSFORMS.items() if mirrored] == [
        "mirrored", "mirrored, faces flipped", "all at once"]


def test_truth_checks_fail_on_wrong_frames(tool, jaw):
    pos, classes = point_features(jaw).pos, jaw.classes()
    assert all(tool.truth_checks(pos, classes).values())
    upside_down = pos * [-1, 1, -1]  # turned about y: crowns down, sides swapped
    assert tool.truth_checks(upside_down, classes) == {
        "quadrant 1 on -x": False, "incisors in front": True, "teeth above their gingiva": False}
    backwards = pos * [-1, -1, 1]  # turned about z
    assert not tool.truth_checks(backwards, classes)["incisors in front"]
    assert not tool.truth_checks(pos * [-1, 1, 1], classes)["quadrant 1 on -x"]  # a mirror image


def test_agreement_counts_matching_vertices(tool, jaw):
    f = point_features(jaw)
    assert tool.agreement(f, f, mirrored=False) == (1.0, 1.0)
    assert tool.agreement(f, f, mirrored=True)[0] < 0.5  # x negated no longer matches
    moved = SimpleNamespace(pos=f.pos + np.where(np.arange(len(f.pos))[:, None] % 4 == 0, 0.01, 0.0),
                            normal=-f.normal)
    same, facing = tool.agreement(f, moved, mirrored=False)
    assert same == pytest.approx(0.75, abs=0.01) and facing == 0.0


class _Oracle:
    """Predicts the true classes: a model that is right whatever the pose, so every label agrees."""

    def predict(self, scan):
        return SimpleNamespace(classes=scan.classes())


class _RawSide:
    """Labels by the side of the raw x axis, blind to the canonical frame: a pose-dependent model."""

    def predict(self, scan):
        x = scan.vertices[:, 0]
        return SimpleNamespace(classes=np.where(x < x.mean(), 1, 9))


def test_measure_without_and_with_a_model(tool):
    scans = [synth_jaw("upper", seed, resolution=0.25) for seed in (1, 2)]
    record = tool.measure(scans)
    assert list(record) == ["original", *tool.TRANSFORMS]
    for name in ("rotated + moved", "in metres", "faces re-wound", "mirrored", "mirrored, faces flipped"):
        assert record[name]["frame_mean"] == 1.0 and record[name]["normals_mean"] == 1.0, name
    assert record["faces re-wound"]["inward_warnings"] == 2 and record["rotated + moved"]["inward_warnings"] == 0
    assert record["faces wound at random"]["winding_warnings"] == 2
    assert 0.9 < record["point cloud"]["normals_mean"] < 1.0
    assert "labels_mean" not in record["mirrored"]
    with_model = tool.measure(scans, _Oracle())
    assert all(r["accuracy_mean"] == 1.0 for r in with_model.values())
    assert all(r["labels_mean"] == 1.0 for name, r in with_model.items() if name != "original")
    lines = tool.table({"transforms": with_model})
    assert len(lines) == 2 + len(with_model) and "labels agree" in lines[0]
    assert lines[2].startswith("| original |")
    blind = tool.measure(scans[:1], _RawSide())
    assert blind["in metres"]["labels_mean"] == 1.0 and blind["rotated + moved"]["labels_mean"] < 0.9
