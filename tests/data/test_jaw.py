import numpy as np
import pytest

from geot.data.jaw import CONFLICT, detect_jaw, jaw_conflict, jaw_cues
from geot.data.synth import synth_jaw
from tests.conftest import real_data
from tests.data.real_jaws import real_features, real_jaws, robustness


def test_palate_and_high_front_cues_respond_to_the_shape():
    """An arch with a filled inside reads as a palate; one with its highest points in front reads as lower."""
    angle = np.linspace(-0.9 * np.pi, -0.1 * np.pi, 400)
    arch = np.stack([0.8 * np.cos(angle), -0.9 * np.sin(angle) - 0.4, np.zeros_like(angle)], axis=1)
    ring = arch + np.random.default_rng(0).normal(scale=0.005, size=arch.shape)
    inside = np.stack(np.meshgrid(np.linspace(-0.6, 0.6, 25), np.linspace(-0.3, 0.4, 15)), -1).reshape(-1, 2)
    palate = np.concatenate([ring, np.c_[inside, np.full(len(inside), -0.1)]])
    assert jaw_cues(palate)["palate"] > jaw_cues(ring)["palate"] + 0.3
    front_high = ring.copy()
    front_high[:, 2] = ring[:, 1]  # height grows towards the incisors
    back_high = ring.copy()
    back_high[:, 2] = -ring[:, 1]
    assert jaw_cues(front_high)["high front"] > 0.9 and jaw_cues(back_high)["high front"] < 0.1


def test_confidence_is_low_when_the_cues_disagree():
    """Synthetic lower jaws have no curve of Spee: the palate cue says lower, the high-front cue upper."""
    scan = synth_jaw("lower", 0, resolution=0.25)
    jaw, confidence = detect_jaw(scan.vertices, scan.faces)
    assert confidence < 0.3
    assert jaw_conflict("upper", scan.vertices, scan.faces) is None  # too unsure to contradict a name


def test_degenerate_input_gives_no_confidence():
    flat = np.random.default_rng(0).random((50, 3)) * [1.0, 1.0, 0.0]
    assert detect_jaw(flat)[1] < 0.5
    line = np.c_[np.linspace(0, 1, 30), np.zeros(30), np.zeros(30)]
    assert detect_jaw(line)[1] == 0.0


def test_named_jaw_is_checked_in_any_case():
    with pytest.raises(ValueError, match="unknown jaw"):
        jaw_conflict("middle", np.zeros((20, 3)))


@real_data
def test_jaw_detected_on_every_real_jaw():
    """Upper or lower from the shape alone, right on all 108 real jaws and confident on each."""
    for scan, feats in zip(real_jaws(), real_features(), strict=True):
        jaw, confidence = detect_jaw(scan.vertices, scan.faces)
        assert jaw == scan.jaw and confidence > 0.8, (scan.name, jaw, confidence)
        assert jaw_cues(feats.pos).keys() == {"palate", "high front"}


@real_data
def test_jaw_detected_on_transformed_real_jaws():
    """Every ninth real jaw under each transformation a user's file may have gone through."""
    rng = np.random.default_rng(1)
    for scan in real_jaws()[::9]:
        for name, (transform, _) in robustness().TRANSFORMS.items():
            moved = transform(scan, rng)
            jaw, confidence = detect_jaw(moved.vertices, moved.faces)
            assert jaw == scan.jaw and confidence > 0.8, (scan.name, name, confidence)


@real_data
def test_wrong_name_is_contradicted():
    lower = next(s for s in real_jaws() if s.jaw == "lower")
    upper = next(s for s in real_jaws() if s.jaw == "upper")
    assert jaw_conflict("lower", lower.vertices, lower.faces) is None
    warning = jaw_conflict("Lower", upper.vertices, upper.faces)
    assert warning.startswith("named the lower jaw, but its shape says upper")
    assert jaw_conflict("upper", lower.vertices, None) is not None
    assert detect_jaw(lower.vertices, lower.faces)[1] >= CONFLICT
