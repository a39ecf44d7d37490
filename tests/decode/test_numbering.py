"""Numbering along the arch: codes unique and in order, gaps kept, sides from geometry."""

from __future__ import annotations

import numpy as np
import pytest

from geot.decode import DecodeOptions, decode
from geot.decode.numbering import TYPE_OF_CLASS, InstanceStats, instance_stats, number_instances
from geot.labels import ARCH_POSITION
from tests.decode.conftest import Jaw, make_jaw, synthetic_priors


def true_instances(jaw: Jaw) -> tuple[np.ndarray, np.ndarray]:
    """Instance ids 1..K per tooth (in class order) and the class of each instance."""
    teeth = np.array(jaw.teeth)
    inst = np.searchsorted(teeth, jaw.classes) + 1
    inst[jaw.classes == 0] = 0
    return inst, teeth


@pytest.mark.parametrize("use_priors", [False, True])
def test_swapped_neighbours_are_put_back_in_arch_order(use_priors: bool) -> None:
    jaw = make_jaw("lower", 1)
    a, b = 4, 5                                   # first and second premolar of one side: neighbours
    probs = jaw.posteriors(0, noise=0.5, patch_rate=0.0)
    swapped = probs.copy()
    for src, dst in ((a, b), (b, a)):             # each favours the other's code, 0.6 against 0.4
        rows = jaw.classes == src
        swapped[rows, dst] = 0.6 * probs[rows, src]
        swapped[rows, src] = 0.4 * probs[rows, src]
    assert (swapped[jaw.classes == a].argmax(axis=1) == b).mean() > 0.9
    priors = synthetic_priors("lower") if use_priors else None
    inst, teeth = true_instances(jaw)
    codes = number_instances(instance_stats(inst, jaw.points, swapped), priors)
    np.testing.assert_array_equal(codes, teeth)
    out = decode(swapped, jaw.points, "lower", jaw.faces, offsets=jaw.offsets(), priors=priors)
    for cls in (a, b):
        assert np.mean(out.classes[jaw.classes == cls] == cls) > 0.9


def test_missing_tooth_stays_missing_and_later_teeth_keep_their_codes() -> None:
    jaw = make_jaw("lower", 1)
    gone = 4
    keep = jaw.classes != gone
    # remove the first premolar's vertices from the scan: a real gap in the arch
    remap = np.cumsum(keep) - 1
    faces = remap[jaw.faces[keep[jaw.faces].all(axis=1)]]
    cut = Jaw(jaw.jaw, jaw.points[keep], faces, jaw.normals[keep], jaw.classes[keep])
    probs = cut.posteriors(0, noise=0.6)
    out = decode(probs, cut.points, "lower", cut.faces, offsets=cut.offsets(), priors=synthetic_priors("lower"))
    codes = sorted(t.cls for t in out.teeth)
    assert gone not in codes
    assert codes == cut.teeth
    for cls in cut.teeth:
        assert np.mean(out.classes[cut.classes == cls] == cls) > 0.85, cls


def test_shift_after_a_gap_is_undone_by_spacing_priors() -> None:
    # the posteriors of every tooth behind a missing one lean (0.6 / 0.4) to the code of its neighbour
    # towards the gap, the way a per-point classifier shifts after a gap; spacing says there is a gap
    jaw = make_jaw("lower", 1)
    gone = 4
    inst, teeth = true_instances(jaw)
    stats = instance_stats(inst, jaw.points, jaw.posteriors(0, noise=0.5))
    keep = teeth != gone
    mass = stats.type_mass[keep].copy()
    behind = [i for i, c in enumerate(teeth[keep]) if 1 <= c <= 8 and c > gone]
    for i in behind:
        t = TYPE_OF_CLASS[teeth[keep][i]]
        mass[i] = 0.0
        mass[i, t - 1], mass[i, t] = 0.6, 0.4
    shifted = InstanceStats(stats.centroid[keep], stats.size[keep], mass)
    plain = number_instances(shifted)
    assert (plain[behind] != teeth[keep][behind]).any()   # posteriors alone follow the shift
    fixed = number_instances(shifted, synthetic_priors("lower"))
    np.testing.assert_array_equal(fixed, teeth[keep])


@pytest.mark.parametrize("jaw_name, seed", [("lower", 1), ("upper", 2)])
def test_mirrored_jaw_gets_the_other_sides_codes(jaw_name: str, seed: int) -> None:
    jaw = make_jaw(jaw_name, seed)
    probs = jaw.posteriors(0, noise=0.6)
    flip = np.array([-1.0, 1.0, 1.0])
    points, normals, faces = jaw.points * flip, jaw.normals * flip, jaw.faces[:, ::-1]  # keep outward faces
    offsets = jaw.offsets() * flip
    other = np.where(jaw.classes == 0, 0, np.where(jaw.classes <= 8, jaw.classes + 8, jaw.classes - 8))
    out = decode(probs, points, jaw_name, faces, normals, offsets)
    assert np.mean(out.classes == other) > 0.9
    declared = decode(probs, points, jaw_name, faces, normals, offsets, options=DecodeOptions(mirrored=True))
    assert np.mean(declared.classes == jaw.classes) > 0.9


def test_more_instances_than_codes_leaves_some_without_a_code() -> None:
    # 20 'teeth' along a U: at most 16 codes, each once, in arch order
    angle = np.linspace(-1.4, 1.4, 20)
    centroid = np.c_[0.8 * np.sin(angle), 0.8 * np.cos(angle), np.zeros(20)]
    stats = InstanceStats(centroid, np.full(20, 0.09), np.full((20, 9), 1 / 9))
    codes = number_instances(stats)
    used = codes[codes > 0]
    assert len(used) == 16 and len(set(used.tolist())) == 16
    order = np.argsort(angle)
    pos = ARCH_POSITION[codes[order][codes[order] > 0]]
    assert (np.diff(pos) > 0).all()


def test_fallback_keeps_a_tooth_the_priors_never_saw() -> None:
    # the upper jaw has a third molar (class 8) that none of the scans behind the priors has: unknown
    # geometry must not make numbering drop it (pieces can be dropped as fragments in the fallback)
    jaw = make_jaw("upper", 2)
    priors = synthetic_priors("upper")
    assert 8 in jaw.teeth and priors.presence[8] == 0.0
    probs = jaw.posteriors(0, noise=0.5, patch_rate=0.0)
    out = decode(probs, jaw.points, "upper", jaw.faces, priors=priors)
    assert out.fallback
    for cls in jaw.teeth:
        assert np.mean(out.classes[jaw.classes == cls] == cls) > 0.6, cls
