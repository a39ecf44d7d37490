"""Neighbour search, sampling and interpolation for flat-batched point clouds (one place, two backends)."""

from geot.ops.neighbors import backend, dense_neighbours, fps, interpolate, knn, knn_graph, prefix_sample

__all__ = ["backend", "dense_neighbours", "fps", "interpolate", "knn", "knn_graph", "prefix_sample"]
