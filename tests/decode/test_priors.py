"""Arch priors: what labelled jaws say, and a JSON round trip that loses nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from geot.decode import ArchPriors, estimate_priors
from geot.decode.arch import CLASS_AT_POSITION
from tests.decode.conftest import make_jaw, synthetic_priors


def test_priors_survive_json() -> None:
    priors = synthetic_priors("upper")
    text = json.dumps(priors.to_dict(), allow_nan=False)           # strict JSON: NaN became null
    back = ArchPriors.from_dict(json.loads(text))
    for name, value in vars(priors).items():
        np.testing.assert_array_equal(getattr(back, name), value, err_msg=name)
    assert np.isnan(priors.size_mean[0]) and np.isnan(back.size_mean[0])


def test_from_dict_names_what_is_wrong() -> None:
    data = synthetic_priors("lower").to_dict()
    with pytest.raises(ValueError, match="presence"):
        ArchPriors.from_dict({k: v for k, v in data.items() if k != "presence"})
    with pytest.raises(ValueError, match="spacing_mean has shape"):
        ArchPriors.from_dict({**data, "spacing_mean": [[0.0]]})


def test_priors_describe_the_arch() -> None:
    priors = synthetic_priors("lower")
    # the jaws used hold no third molars on the second side at least sometimes; all hold 1-7 on both sides
    assert priors.n_scans == 6 and np.all(priors.presence[[1, 2, 3, 4, 5, 6, 7, 9, 10]] == 1.0)
    assert np.all(priors.centroid_mean[1:8, 0] < 0) and np.all(priors.centroid_mean[9:16, 0] > 0)
    assert priors.centroid_mean[1, 1] > priors.centroid_mean[6, 1]          # incisors in front of molars
    assert priors.size_mean[6] > priors.size_mean[1]                         # molars bigger than incisors
    neighbours = [priors.spacing_mean[a, b] for a, b in zip(CLASS_AT_POSITION[2:8], CLASS_AT_POSITION[3:9],
                                                             strict=True)]
    assert np.allclose(neighbours, priors.tooth_width, rtol=0.6)
    gap = priors.spacing_mean[3, 5]                                           # canine to second premolar
    assert gap > priors.spacing_mean[3, 4] + 0.5 * priors.tooth_width


def test_estimate_refuses_bad_scans() -> None:
    jaw = make_jaw("lower", 1)
    with pytest.raises(ValueError, match="no scans"):
        estimate_priors([])
    with pytest.raises(ValueError, match="scan 0"):
        estimate_priors([(jaw.points, jaw.classes[:-1])])
    with pytest.raises(ValueError, match="class indices"):
        estimate_priors([(jaw.points, jaw.classes + 17)])
