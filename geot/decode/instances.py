"""One instance per tooth: where one tooth ends and the next begins.

Teeth touch, so the tooth region of a jaw is only a few connected pieces; what separates neighbours is
a per-point vote for the centroid of the point's tooth (``points + offsets``). The votes of one tooth
pile up around one place: after averaging each vote with its mesh neighbours, the density peaks of the
votes (found with scipy's KD-tree) mark the piles, peaks with too few votes are dropped, and a graph cut
on the mesh settles the borders between the remaining ones, so that every instance is one patch bounded
by the surface's folds wherever the votes are ambiguous. (DBSCAN and HDBSCAN were tried on the real
jaws: with votes a few tenths of a tooth off they chain neighbouring teeth into one cluster.)

Without offsets the fallback is :func:`code_pieces`: the connected pieces of each predicted code. Split
along concave grooves instead, a molar breaks at its fissures as readily as at its contacts, and
nothing but a centroid vote tells the two apart; code pieces at least follow where the network put its
borders, and the numbering then gives each piece its own code.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import diags
from scipy.sparse.csgraph import connected_components, dijkstra
from scipy.spatial import cKDTree

from geot.decode.graph import adjacency
from geot.decode.graphcut import expand, potts_energy


def vote_modes(votes: np.ndarray, radius: float, separation: float, min_density: float = 0.2,
               max_votes: int = 2000, seed: int = 0) -> np.ndarray:
    """(K, 3) density peaks of the votes: votes denser than every other vote within ``separation``.

    Density is the number of votes within ``radius``. Each vote's distance to the nearest denser vote is
    large only at the top of a pile, so thresholding it at ``separation`` (a fraction of a tooth width)
    yields one peak per pile however spread the pile is, where density-linkage methods (DBSCAN, HDBSCAN)
    chain neighbouring teeth together through the votes between them. Peaks under ``min_density`` x the
    highest density are stray votes, not piles. Peaks are sought among at most ``max_votes`` votes (a
    fixed random subset), so that cost does not grow with the mesh; densities count all votes.
    """
    tree = cKDTree(votes)
    if len(votes) > max_votes:
        votes = votes[np.random.default_rng(seed).choice(len(votes), max_votes, replace=False)]
    if len(votes) < 2:
        return votes.copy()
    density = tree.query_ball_point(votes, radius, return_length=True)  # counted over all votes
    rank = np.empty(len(votes), dtype=np.int64)
    rank[np.lexsort((np.arange(len(votes)), -density))] = np.arange(len(votes))  # densest first
    pairs = cKDTree(votes).query_pairs(separation, output_type="ndarray")
    denser_near = np.full(len(votes), len(votes))                # best rank within separation
    np.minimum.at(denser_near, pairs[:, 0], rank[pairs[:, 1]])
    np.minimum.at(denser_near, pairs[:, 1], rank[pairs[:, 0]])
    peak = (denser_near > rank) & (density >= min_density * density.max())
    return votes[peak]


def smooth_votes(votes: np.ndarray, edges: np.ndarray, steps: int) -> np.ndarray:
    """Average each vote with its graph neighbours' ``steps`` times.

    Neighbouring points of one tooth vote for the same centroid, so averaging cancels independent
    errors; only votes within ``steps`` rings of a border mix two teeth.
    """
    if steps <= 0 or not len(edges):
        return votes
    adj = adjacency(edges, len(votes))
    adj.setdiag(1.0)
    walk = diags(1.0 / np.asarray(adj.sum(axis=1)).ravel()) @ adj
    for _ in range(steps):
        votes = walk @ votes
    return votes


def drop_small_modes(votes: np.ndarray, modes: np.ndarray, min_share: float) -> np.ndarray:
    """Modes to which at least ``min_share`` x the median count of votes are nearest (at least one)."""
    if len(modes) < 2:
        return modes
    count = np.bincount(cKDTree(modes).query(votes)[1], minlength=len(modes))
    big = count >= min_share * np.median(count[count > 0])
    return modes[big] if big.any() else modes[[int(np.argmax(count))]]


def absorb(labels: np.ndarray, keep: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Give each vertex outside ``keep`` the label of the kept vertex nearest to it in graph steps.

    Vertices that no kept vertex reaches keep their labels.
    """
    n = len(labels)
    out = labels.copy()
    if keep.all() or not keep.any() or not len(edges):
        return out
    _, _, source = dijkstra(adjacency(edges, n), directed=False, indices=np.flatnonzero(keep),
                            unweighted=True, min_only=True, return_predecessors=True)
    fill = ~keep & (source >= 0)
    out[fill] = labels[source[fill]]
    return out


def largest_pieces(labels: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Mask of vertices in the largest connected piece of their label (pieces joined by same-label edges)."""
    n = len(labels)
    same = edges[labels[edges[:, 0]] == labels[edges[:, 1]]] if len(edges) else edges
    _, piece = connected_components(adjacency(same, n), directed=False)
    size = np.bincount(piece)
    best = np.zeros(labels.max() + 1 if n else 0, dtype=np.int64)
    np.maximum.at(best, labels, size[piece])
    return size[piece] == best[labels]


def one_piece_each(labels: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Relabel the smaller pieces of each label by their neighbours, so that a label is one patch."""
    return absorb(labels, largest_pieces(labels, edges), edges)


def subgraph(edges: np.ndarray, members: np.ndarray, num_vertices: int) -> np.ndarray:
    """Edges among ``members`` (vertex indices), renumbered to positions in ``members``."""
    local = np.full(num_vertices, -1, dtype=np.int64)
    local[members] = np.arange(len(members))
    sub = local[edges]
    return sub[(sub >= 0).all(axis=1)]


def offset_instances(points: np.ndarray, offsets: np.ndarray, foreground: np.ndarray, edges: np.ndarray,
                     weights: np.ndarray, tooth_width: float, radius: float = 0.25, separation: float = 0.3,
                     min_share: float = 0.25, smoothness: float = 1.0, vote_steps: int = 2, seed: int = 0,
                     groups: np.ndarray | None = None) -> np.ndarray:
    """(V,) instance ids 1..K of the foreground vertices by their centroid votes, 0 elsewhere.

    ``weights`` are the Potts weights of ``edges`` (see :func:`geot.decode.graph.cut_weights`). The border
    cut charges a vertex ``|vote - mode|^2 / (2 s^2)`` for joining a mode, with ``s`` the votes' median
    distance to their nearest mode, against ``smoothness`` x the weight of each edge it cuts; ``groups``
    (V,) lets a large mesh be cut on patches (:func:`geot.decode.graph.supervertices`).
    """
    fg = np.flatnonzero(foreground)
    out = np.zeros(len(points), dtype=np.int64)
    if not len(fg):
        return out
    local = subgraph(edges, fg, len(points))
    votes = smooth_votes(points[fg] + offsets[fg], local, vote_steps)
    modes = vote_modes(votes, radius * tooth_width, separation * tooth_width, seed=seed)
    modes = drop_small_modes(votes, modes, min_share)
    dist = np.linalg.norm(votes[:, None, :] - modes[None, :, :], axis=2)      # (F, K)
    spread = max(float(np.median(dist.min(axis=1))), 0.05 * tooth_width)
    keep = foreground[edges].all(axis=1)
    costs = np.minimum(dist**2 / (2 * spread**2), 50.0)  # a far-off vote costs no more than a sure miss
    energy = potts_energy(costs, local, weights[keep], smoothness)
    patches = None if groups is None else np.unique(groups[fg], return_inverse=True)[1]
    labels = expand(energy, dist.argmin(axis=1), groups=patches)
    labels = one_piece_each(labels, local)
    _, labels = np.unique(labels, return_inverse=True)
    out[fg] = labels + 1
    return out


def code_pieces(classes: np.ndarray, edges: np.ndarray, min_share: float = 0.0) -> np.ndarray:
    """(V,) instance ids 1..K: one per connected piece of each tooth code, 0 on gingiva.

    Pieces under ``min_share`` x the median piece size join the neighbouring piece (or gingiva) they touch.
    """
    n = len(classes)
    if not n:
        return np.zeros(0, dtype=np.int64)
    same = edges[classes[edges[:, 0]] == classes[edges[:, 1]]] if len(edges) else edges
    _, piece = connected_components(adjacency(same, n), directed=False)
    piece = np.where(classes == 0, 0, piece + 1)
    sizes = np.bincount(piece)
    tooth_sizes = sizes[1:][sizes[1:] > 0]
    if len(tooth_sizes):
        small = (piece > 0) & (sizes[piece] < min_share * np.median(tooth_sizes))
        piece = absorb(piece, ~small, edges)
    _, out = np.unique(piece, return_inverse=True)
    return out if (piece == 0).any() else out + 1
