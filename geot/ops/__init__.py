"""Neighbour search, sampling, interpolation and group reductions for flat-batched point clouds."""

from geot.ops.neighbors import backend, dense_neighbours, fps, interpolate, knn, knn_graph, prefix_sample
from geot.ops.scatter import global_max_pool, scatter_max, scatter_softmax, scatter_sum

__all__ = ["backend", "dense_neighbours", "fps", "global_max_pool", "interpolate", "knn", "knn_graph",
           "prefix_sample", "scatter_max", "scatter_softmax", "scatter_sum"]
