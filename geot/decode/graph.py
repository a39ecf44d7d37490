"""The vertex graph the decoder smooths over, and how cheap it is to cut each of its edges.

Teeth end where the surface folds inwards: at the tooth-gingiva margin and in the interproximal grooves.
Edges there get a low Potts weight so that label borders settle in those folds rather than across a
smooth crown.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix, csr_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from geot.data.features import vertex_normals


def mesh_edges(faces: np.ndarray, num_vertices: int) -> np.ndarray:
    """(E, 2) unique undirected edges ``i < j`` of a triangle mesh."""
    faces = np.asarray(faces, dtype=np.int64)
    pairs = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    pairs = np.sort(pairs, axis=1)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    return _unique_pairs(pairs, num_vertices)


def _unique_pairs(pairs: np.ndarray, num_vertices: int) -> np.ndarray:
    keys = np.sort(pairs[:, 0] * num_vertices + pairs[:, 1])  # a sort beats np.unique's hashing of wide keys
    keys = keys[np.r_[True, keys[1:] != keys[:-1]]] if len(keys) else keys
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
    return _unique_pairs(pairs, n)


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


def supervertices(points: np.ndarray, edges: np.ndarray, max_groups: int) -> np.ndarray | None:
    """(V,) group ids 0..G-1 with G about ``max_groups`` or fewer: connected pieces of voxel cells.

    Max-flow time grows faster than the mesh, so a large mesh is cut on patches about as fine as a
    scan of ``max_groups`` vertices; patches never join vertices that the mesh does not connect inside a
    cell (two touching teeth stay apart). None when the graph is small enough as it is.
    """
    n = len(points)
    if n <= max_groups or not len(edges):
        return None
    edge_length = float(np.linalg.norm(points[edges[:, 0]] - points[edges[:, 1]], axis=1).mean())
    cell = 1.2 * edge_length * np.sqrt(n / max_groups)  # surface samples grow with 1 / spacing^2
    voxel = np.floor((points - points.min(axis=0)) / cell).astype(np.int64)
    span = voxel.max(axis=0) + 1
    cells = (voxel[:, 0] * span[1] + voxel[:, 1]) * span[2] + voxel[:, 2]
    inside = edges[cells[edges[:, 0]] == cells[edges[:, 1]]]
    return connected_components(adjacency(inside, n), directed=False)[1]


def adjacency(edges: np.ndarray, num_vertices: int) -> csr_matrix:
    """Symmetric sparse adjacency (ones) of the graph."""
    rows = np.concatenate([edges[:, 0], edges[:, 1]])
    cols = np.concatenate([edges[:, 1], edges[:, 0]])
    return coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(num_vertices, num_vertices)).tocsr()
