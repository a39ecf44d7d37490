"""Positions along the dental arch: which class stands where, and the order of teeth found in a scan."""

from __future__ import annotations

import numpy as np

from geot.labels import ARCH_POSITION, NUM_CLASSES

# class at each arch position 1..16, from the last molar on -x to the last molar on +x (index 0: gingiva)
CLASS_AT_POSITION = np.argsort(ARCH_POSITION)


def tooth_centroids(points: np.ndarray, labels: np.ndarray, num_labels: int = NUM_CLASSES) -> np.ndarray:
    """(num_labels, 3) centroid of the vertices of each label (NaN for labels absent)."""
    count = np.bincount(labels, minlength=num_labels).astype(np.float64)
    sums = np.stack([np.bincount(labels, points[:, d], num_labels) for d in range(3)], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / count[:, None]


def arch_angle(centroids: np.ndarray, behind: float = 0.3) -> np.ndarray:
    """Angle of each tooth centroid about a point on the y axis behind the teeth, in (-pi, pi).

    The arch opens towards -y, so seen from a point ``behind`` (canonical units) behind the rearmost tooth
    the angle falls from the -x end of the arch through the incisors (near 0) to the +x end: sorting by it
    gives arch order, with 1..8 first. A point far behind keeps the angle monotone along straight or
    flaring rows of molars.
    """
    if not len(centroids):
        return np.zeros(0)
    y_back = centroids[:, 1].min() - behind
    return np.arctan2(centroids[:, 0], centroids[:, 1] - y_back)
