"""Synthetic jaws in the canonical frame, with posteriors and offsets made from their true labels."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import pytest

from geot.data.features import point_features
from geot.data.synth import synth_jaw
from geot.decode import ArchPriors, estimate_priors
from geot.decode.graph import vertex_graph
from geot.decode.simulate import simulate_offsets, simulate_posteriors


@dataclass(frozen=True)
class Jaw:
    jaw: str
    points: np.ndarray    # canonical
    faces: np.ndarray
    normals: np.ndarray
    classes: np.ndarray   # true class per vertex

    def posteriors(self, seed: int = 0, **kw) -> np.ndarray:
        return simulate_posteriors(self.points, self.classes, vertex_graph(self.points, self.faces),
                                   np.random.default_rng(seed), **kw)

    def offsets(self, noise: float = 0.05, seed: int = 0) -> np.ndarray:
        return simulate_offsets(self.points, self.classes, noise, np.random.default_rng(seed))

    @property
    def teeth(self) -> list[int]:
        return [int(c) for c in np.unique(self.classes) if c]


@cache
def make_jaw(jaw: str, seed: int, missing_prob: float = 0.0, resolution: float = 0.35) -> Jaw:
    scan = synth_jaw(jaw, seed, resolution=resolution, missing_prob=missing_prob)
    feats = point_features(scan)
    return Jaw(jaw, feats.pos.astype(np.float64), scan.faces, feats.normal.astype(np.float64), scan.classes())


@cache
def synthetic_priors(jaw: str) -> ArchPriors:
    return estimate_priors((j.points, j.classes) for j in (make_jaw(jaw, 100 + s) for s in range(6)))


@pytest.fixture
def lower() -> Jaw:
    return make_jaw("lower", 1)


@pytest.fixture
def upper() -> Jaw:
    return make_jaw("upper", 2)
