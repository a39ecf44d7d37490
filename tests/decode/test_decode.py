"""decode(): valid dentitions from every stage, instances that know where a tooth ends, sturdy on bad input."""

from __future__ import annotations

import numpy as np
import pytest

from geot.decode import DecodeError, DecodeOptions, Dentition, decode, instance_quality
from geot.errors import GeotError
from geot.labels import fdi_codes
from tests.decode.conftest import make_jaw, synthetic_priors


def assert_valid(out: Dentition, n: int, jaw: str) -> None:
    """One code per instance, one instance per code, gingiva = instance 0, table in step with the arrays."""
    assert out.classes.shape == out.instances.shape == (n,)
    np.testing.assert_array_equal(out.classes == 0, out.instances == 0)
    pairs = np.unique(np.c_[out.instances, out.classes][out.instances > 0], axis=0)
    assert len(np.unique(pairs[:, 0])) == len(pairs)      # an instance never carries two codes
    assert len(np.unique(pairs[:, 1])) == len(pairs)      # a code never sits on two instances
    assert [t.instance for t in out.teeth] == list(range(1, len(out.teeth) + 1))
    for tooth in out.teeth:
        members = out.instances == tooth.instance
        assert tooth.vertices == members.sum() and (out.classes[members] == tooth.cls).all()
        assert tooth.fdi == fdi_codes(jaw)[tooth.cls]
        assert np.isfinite(tooth.centroid).all() and 0.0 <= tooth.confidence <= 1.0


@pytest.mark.parametrize("stage", ["argmax", "graphcut", "full"])
@pytest.mark.parametrize("seed", [0, 1])
def test_every_stage_gives_a_valid_dentition(stage: str, seed: int) -> None:
    jaw = make_jaw("upper", 2)
    probs = jaw.posteriors(seed)
    for offsets in (None, jaw.offsets(seed=seed)):
        out = decode(probs, jaw.points, "upper", jaw.faces, offsets=offsets, options=DecodeOptions(stage=stage))
        assert_valid(out, len(probs), "upper")
        assert out.stage == stage
        assert out.fallback == (stage == "full" and offsets is None)


def test_stages_improve_on_noisy_posteriors() -> None:
    jaw = make_jaw("lower", 1)
    probs = jaw.posteriors(3)
    scores = {}
    for stage in ("argmax", "graphcut", "full"):
        out = decode(probs, jaw.points, "lower", jaw.faces, offsets=jaw.offsets(), priors=synthetic_priors("lower"),
                     options=DecodeOptions(stage=stage))
        scores[stage] = instance_quality(out.instances, jaw.classes)
    teeth = len(jaw.teeth)
    assert scores["argmax"]["split"] + scores["argmax"]["merged"] > 0      # the noise does harm argmax
    assert scores["full"]["matched"] == teeth
    assert scores["full"]["split"] == scores["full"]["merged"] == 0


def test_touching_teeth_with_one_code_become_two_instances_with_two_codes() -> None:
    jaw = make_jaw("lower", 1)
    a, b = 6, 7                                    # first and second molar of one side touch
    probs = jaw.posteriors(0, noise=0.5, patch_rate=0.0)
    both = probs.copy()
    rows = jaw.classes == b
    both[rows, a] += both[rows, b]                 # the network calls the second molar a first molar
    both[rows, b] = 0.0
    assert (both[(jaw.classes == a) | rows].argmax(axis=1) == a).mean() > 0.9
    plain = decode(both, jaw.points, "lower", jaw.faces)      # without offsets: one piece, one code
    assert instance_quality(plain.instances, jaw.classes)["merged"] >= 2
    out = decode(both, jaw.points, "lower", jaw.faces, offsets=jaw.offsets(noise=0.05))
    assert_valid(out, len(both), "lower")
    for cls in (a, b):
        assert np.mean(out.classes[jaw.classes == cls] == cls) > 0.9
    quality = instance_quality(out.instances, jaw.classes)
    assert quality["matched"] == len(jaw.teeth) and quality["merged"] == 0


def test_large_meshes_are_cut_on_patches_alike() -> None:
    jaw = make_jaw("lower", 1)
    probs, offsets = jaw.posteriors(0), jaw.offsets()
    fine = decode(probs, jaw.points, "lower", jaw.faces, offsets=offsets)
    coarse = decode(probs, jaw.points, "lower", jaw.faces, offsets=offsets,
                    options=DecodeOptions(max_cut_vertices=len(probs) // 4))
    assert_valid(coarse, len(probs), "lower")
    assert [t.cls for t in coarse.teeth] == [t.cls for t in fine.teeth]
    assert np.mean(coarse.classes == fine.classes) > 0.9      # borders move by a patch (about 4 vertices here)


def test_point_cloud_uses_a_knn_graph() -> None:
    jaw = make_jaw("lower", 1)
    probs = jaw.posteriors(0)
    out = decode(probs, jaw.points, "lower", None, offsets=jaw.offsets())
    assert_valid(out, len(probs), "lower")
    assert instance_quality(out.instances, jaw.classes)["matched"] >= len(jaw.teeth) - 1


def test_inputs_are_not_modified() -> None:
    jaw = make_jaw("lower", 1)
    arrays = [jaw.posteriors(0), jaw.points.copy(), jaw.faces.copy(), jaw.normals.copy(), jaw.offsets()]
    before = [a.copy() for a in arrays]
    decode(arrays[0], arrays[1], "lower", arrays[2], arrays[3], arrays[4])
    for a, b in zip(arrays, before, strict=True):
        np.testing.assert_array_equal(a, b)


def test_all_gingiva_gives_no_teeth() -> None:
    jaw = make_jaw("lower", 1)
    probs = np.zeros((len(jaw.points), 17))
    probs[:, 0] = 1.0
    for offsets in (None, jaw.offsets()):
        out = decode(probs, jaw.points, "lower", jaw.faces, offsets=offsets, priors=synthetic_priors("lower"))
        assert out.teeth == [] and not out.classes.any() and not out.instances.any()


def test_one_tooth_only() -> None:
    jaw = make_jaw("upper", 2)
    probs = np.zeros((len(jaw.points), 17))
    probs[:, 0] = 1.0
    probs[jaw.classes == 3] = np.eye(17)[3]
    out = decode(probs, jaw.points, "upper", jaw.faces, offsets=jaw.offsets(), priors=synthetic_priors("upper"))
    assert_valid(out, len(probs), "upper")
    assert [t.fdi for t in out.teeth] == [13]


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("with_faces", [False, True])
def test_tiny_inputs(n: int, with_faces: bool) -> None:
    rng = np.random.default_rng(n)
    probs = rng.dirichlet(np.ones(17), n)
    points = rng.normal(size=(n, 3)) * 0.1
    faces = np.array([[0, 1, 2]]) if with_faces and n == 3 else None
    for offsets in (None, rng.normal(size=(n, 3)) * 0.01):
        out = decode(probs, points, "lower", faces, offsets=offsets)
        assert_valid(out, n, "lower")
    empty = decode(np.zeros((0, 17)), np.zeros((0, 3)), "lower")
    assert empty.teeth == [] and empty.classes.shape == (0,)


@pytest.mark.parametrize("change, message", [
    (lambda a: {**a, "probs": a["probs"][:, :16]}, "posteriors have shape"),
    (lambda a: {**a, "points": a["points"][:-1]}, "points have shape"),
    (lambda a: {**a, "probs": np.where(np.eye(17)[np.zeros(len(a["probs"]), int)] > 0, np.nan, a["probs"])},
     "NaN"),
    (lambda a: {**a, "probs": -a["probs"]}, "negative"),
    (lambda a: {**a, "offsets": a["offsets"][:, :2]}, "offsets have shape"),
    (lambda a: {**a, "normals": np.full_like(a["normals"], np.inf)}, "normals hold NaN"),
    (lambda a: {**a, "faces": a["faces"] + 10_000}, "faces index vertex"),
    (lambda a: {**a, "jaw": "left"}, "unknown jaw"),
])
def test_bad_input_is_a_one_line_error(change, message: str) -> None:
    jaw = make_jaw("lower", 1)
    args = {"probs": jaw.posteriors(0), "points": jaw.points, "jaw": "lower", "faces": jaw.faces,
            "normals": jaw.normals, "offsets": jaw.offsets()}
    with pytest.raises(DecodeError, match=message) as info:
        decode(**change(args))
    assert isinstance(info.value, GeotError) and "\n" not in str(info.value)


def test_unknown_stage_is_refused() -> None:
    with pytest.raises(DecodeError, match="stage"):
        DecodeOptions(stage="magic")  # type: ignore[arg-type]


def test_rows_not_summing_to_one_are_normalised() -> None:
    jaw = make_jaw("lower", 1)
    probs = jaw.posteriors(0)
    a = decode(probs, jaw.points, "lower", jaw.faces, offsets=jaw.offsets())
    b = decode(probs * 3.0, jaw.points, "lower", jaw.faces, offsets=jaw.offsets())
    np.testing.assert_array_equal(a.classes, b.classes)
