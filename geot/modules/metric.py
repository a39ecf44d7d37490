"""The tooth label metric: how far apart two classes are along the arch (with mirror and gingiva edges)."""

from __future__ import annotations

import numpy as np
from scipy.sparse.csgraph import shortest_path

from geot.labels import NUM_CLASSES


def tooth_metric(mirror: float = 1.0, gingiva: float = 8.0) -> np.ndarray:
    """(C, C) distances between the classes: shortest paths on a class graph, a true metric.

    Edges: arch neighbours (weight 1, including the two central incisors across the midline), mirror
    teeth of the two quadrants (same tooth type, weight ``mirror``; ``inf`` removes them) and gingiva to
    every tooth (weight ``gingiva``).
    """
    w = np.full((NUM_CLASSES, NUM_CLASSES), np.inf)
    np.fill_diagonal(w, 0.0)

    def edge(a: int, b: int, weight: float) -> None:
        w[a, b] = w[b, a] = min(w[a, b], weight)

    for t in range(1, 8):  # along each quadrant: class t <-> t+1, 8+t <-> 9+t
        edge(t, t + 1, 1.0)
        edge(8 + t, 9 + t, 1.0)
    edge(1, 9, 1.0)  # central incisors meet at the midline
    if np.isfinite(mirror):
        for t in range(1, 9):
            edge(t, 8 + t, mirror)
    for c in range(1, NUM_CLASSES):
        edge(0, c, gingiva)
    graph = np.where(np.isfinite(w), w, 0.0)
    return shortest_path(graph, method="D", directed=False)
