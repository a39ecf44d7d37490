"""What labelled jaws say about where each tooth stands, how big it is and how often it is there.

All statistics are in geot's canonical frame (unit sphere, z to the crowns, y to the incisors, classes
1-8 on -x), so they transfer between scans of any size or pose. Estimate them from the scans of one jaw
kind (lower or upper) for the sharpest priors; a mix of both still orders and spaces teeth sensibly.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from geot.decode.arch import CLASS_AT_POSITION, tooth_centroids
from geot.labels import NUM_CLASSES

MIN_STD = 0.01        # canonical units (about 0.4 mm): no prior is sharper than this
MIN_PAIR_SCANS = 3    # fewer joint observations: a pair's spacing comes from the two teeth's own statistics
MIN_REL_STD = 0.1     # nor is a distance known better than to 10 %


@dataclass(frozen=True, eq=False)
class ArchPriors:
    """Per-class statistics of labelled jaws in the canonical frame (index 0, gingiva, is unused).

    ``spacing_mean[a, b]`` is the mean distance between the centroids of teeth ``a`` and ``b`` in scans
    holding both: spacing without the spread of whole-arch position or orientation, and what tells a gap
    (twice the usual distance) from a shifted code. Classes never seen hold NaN.
    """

    n_scans: int
    presence: np.ndarray        # (17,) share of scans holding the class
    centroid_mean: np.ndarray   # (17, 3)
    centroid_std: np.ndarray    # (17, 3)
    size_mean: np.ndarray       # (17,) RMS distance of a tooth's vertices from its centroid
    size_std: np.ndarray        # (17,)
    spacing_mean: np.ndarray    # (17, 17)
    spacing_std: np.ndarray     # (17, 17)
    tooth_width: float          # median distance between the centroids of arch neighbours

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: arrays become nested lists, NaN becomes None."""
        return {f.name: _to_json(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchPriors:
        """Inverse of :meth:`to_dict`; raise ValueError naming a missing or misshapen field."""
        shapes = {"presence": (17,), "centroid_mean": (17, 3), "centroid_std": (17, 3), "size_mean": (17,),
                  "size_std": (17,), "spacing_mean": (17, 17), "spacing_std": (17, 17)}
        missing = [f.name for f in fields(cls) if f.name not in data]
        if missing:
            raise ValueError(f"arch priors lack {', '.join(missing)}")
        values: dict[str, Any] = {"n_scans": int(data["n_scans"]), "tooth_width": float(data["tooth_width"])}
        for name, shape in shapes.items():
            arr = np.array(data[name], dtype=np.float64)  # None -> nan
            if arr.shape != shape:
                raise ValueError(f"arch priors: {name} has shape {arr.shape}, expected {shape}")
            values[name] = arr
        return cls(**values)


def _to_json(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [_to_json(v) for v in value.tolist()] if value.ndim else _to_json(value.item())
    if isinstance(value, list):
        return [_to_json(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def tooth_sizes(points: np.ndarray, classes: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """(17,) RMS distance of each class's vertices from its centroid (NaN when absent)."""
    tooth = classes > 0
    dev = ((points[tooth] - centroids[classes[tooth]]) ** 2).sum(axis=1)
    count = np.bincount(classes, minlength=NUM_CLASSES).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        size = np.sqrt(np.bincount(classes[tooth], dev, NUM_CLASSES) / count)
    size[0] = np.nan
    return size


def estimate_priors(scans: Iterable[tuple[np.ndarray, np.ndarray]]) -> ArchPriors:
    """Priors from labelled scans: (canonical points (V, 3), class indices (V,)) per scan."""
    cents, sizes = [], []
    for i, (points, classes) in enumerate(scans):
        points = np.asarray(points, dtype=np.float64)
        classes = np.asarray(classes, dtype=np.int64)
        if points.ndim != 2 or points.shape[1] != 3 or classes.shape != (len(points),):
            raise ValueError(f"scan {i}: points {points.shape} and classes {classes.shape} do not match")
        if classes.size and (classes.min() < 0 or classes.max() >= NUM_CLASSES):
            raise ValueError(f"scan {i}: class indices must lie in 0..{NUM_CLASSES - 1}")
        c = tooth_centroids(points, classes)
        c[0] = np.nan
        cents.append(c)
        sizes.append(tooth_sizes(points, classes, c))
    if not cents:
        raise ValueError("no scans to estimate arch priors from")
    cent = np.stack(cents)                      # (S, 17, 3)
    size = np.stack(sizes)                      # (S, 17)
    seen = ~np.isnan(size)                      # (S, 17)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: classes never seen
        c_mean, c_std = np.nanmean(cent, axis=0), np.nanstd(cent, axis=0)
        s_mean, s_std = np.nanmean(size, axis=0), np.nanstd(size, axis=0)
        dist = np.linalg.norm(cent[:, None, :, :] - cent[:, :, None, :], axis=-1)     # (S, a, b)
        sp_mean, sp_std = np.nanmean(dist, axis=0), np.nanstd(dist, axis=0)
    both = (seen[:, :, None] & seen[:, None, :]).sum(axis=0)
    c_std, s_std = np.maximum(c_std, MIN_STD), np.maximum(s_std, MIN_STD)
    # pairs rarely seen together: their spacing from the two teeth's mean positions and spreads
    fallback = both < MIN_PAIR_SCANS
    sp_mean[fallback] = np.linalg.norm(c_mean[None, :, :] - c_mean[:, None, :], axis=-1)[fallback]
    sp_std[fallback] = np.linalg.norm(np.hypot(c_std[None, :, :], c_std[:, None, :]), axis=-1)[fallback]
    sp_std = np.maximum(sp_std, np.maximum(MIN_STD, MIN_REL_STD * sp_mean))
    # neighbours along the arch: consecutive arch positions both present in a scan
    gaps = [np.linalg.norm(c[b] - c[a])
            for c in cents for a, b in zip(CLASS_AT_POSITION[1:-1], CLASS_AT_POSITION[2:], strict=True)
            if not (np.isnan(c[a]).any() or np.isnan(c[b]).any())]
    width = float(np.median(gaps)) if gaps else float("nan")
    return ArchPriors(n_scans=len(cents), presence=np.r_[1.0, seen[:, 1:].mean(axis=0)],
                      centroid_mean=c_mean, centroid_std=c_std, size_mean=s_mean, size_std=s_std,
                      spacing_mean=sp_mean, spacing_std=sp_std, tooth_width=width)
