"""The vertex graph the decoder smooths over, and how cheap it is to cut each of its edges.

Teeth end where the surface folds inwards: at the tooth-gingiva margin and in the interproximal grooves.
Edges there get a low Potts weight so that label borders settle in those folds rather than across a
smooth crown.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix, csr_matrix
from scipy.spatial import cKDTree

from geot.data.features import vertex_normals


def mesh_edges(faces: np.ndarray, num_vertices: int) -> np.ndarray:
    """(E, 2) unique undirected edges ``i < j`` of a triangle mesh."""
    faces = np.asarray(faces, dtype=np.int64)
    pairs = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    pairs = np.sort(pairs, axis=1)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    keys = np.unique(pairs[:, 0] * num_vertices + pairs[:, 1])
    return np.stack([keys // num_vertices, keys % num_vertices], axis=1)


def knn_edges(points: np.ndarray, k: int) -> np.ndarray:
    """(E, 2) unique undirected edges ``i < j`` joining each point to its ``k`` nearest neighbours."""
    n = len(points)
    k = min(k, n - 1)
    if k < 1:
        return np.zeros((0, 2), dtype=np.int64)
    _, nb = cKDTree(points).query(points, k + 1)
    rows = np.repeat(np.arange(n), k)
    pairs = np.sort(np.stack([rows, nb[:, 1:].reshape(-1)], axis=1), axis=1)
    pairs = pairs[(pairs[:, 0] != pairs[:, 1]) & (pairs[:, 1] < n)]  # duplicates of a point come back as itself
    keys = np.unique(pairs[:, 0] * n + pairs[:, 1])
    return np.stack([keys // n, keys % n], axis=1)


def vertex_graph(points: np.ndarray, faces: np.ndarray | None, k: int = 8) -> np.ndarray:
    """Edges of the mesh when it has faces, else of a ``k``-nearest-neighbour graph of the points."""
    if faces is not None and len(faces):
        return mesh_edges(faces, len(points))
    return knn_edges(points, k)


def unit_normals(points: np.ndarray, faces: np.ndarray | None) -> np.ndarray:
    """Normals for a decoder given none: mesh normals, or PCA normals turned to the crowns (+z)."""
    if len(points) < 3:
        return np.tile([0.0, 0.0, 1.0], (len(points), 1))
    normals = vertex_normals(points, faces)
    if faces is None or not len(faces):
        normals = np.where(normals[:, 2:3] < 0, -normals, normals)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return np.where(length > 1e-12, normals / np.maximum(length, 1e-12), [0.0, 0.0, 1.0])


def concavity(points: np.ndarray, normals: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Per edge, how sharply the surface folds inwards along it (0 on flat or convex edges).

    ``-(n_j - n_i) . (p_j - p_i) / |p_j - p_i|^2`` is the normal curvature along the edge (1/r on a
    sphere of radius r, with the sign flipped so that grooves are positive); in unit-sphere coordinates a
    groove of 1 mm radius on a jaw of about 40 mm gives about 40.
    """
    i, j = edges[:, 0], edges[:, 1]
    d = points[j] - points[i]
    bend = -((normals[j] - normals[i]) * d).sum(axis=1)
    return np.maximum(bend, 0.0) / np.maximum((d * d).sum(axis=1), 1e-12)


def cut_weights(points: np.ndarray, normals: np.ndarray, edges: np.ndarray, groove: float) -> np.ndarray:
    """Potts weight per edge in (0, 1]: 1 on smooth or convex surface, ``exp(-concavity / groove)`` in folds."""
    if groove <= 0:
        return np.ones(len(edges))
    return np.exp(-concavity(points, normals, edges) / groove)


def adjacency(edges: np.ndarray, num_vertices: int) -> csr_matrix:
    """Symmetric sparse adjacency (ones) of the graph."""
    rows = np.concatenate([edges[:, 0], edges[:, 1]])
    cols = np.concatenate([edges[:, 1], edges[:, 0]])
    return coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(num_vertices, num_vertices)).tocsr()
