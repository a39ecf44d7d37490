"""Multi-label graph cut: the labelling that best trades the network's posteriors against short borders.

Energy of a labelling ``l`` (one label per vertex)::

    E(l) = sum_v -log max(p_v(l_v), floor)  +  smoothness * sum_(i,j) w_ij [l_i != l_j]

with Potts weights ``w_ij`` from :func:`geot.decode.graph.cut_weights` (cheap in concave folds). It is
minimised by alpha-expansion (GCO, through ``gco-wrapper``), started from the argmax labelling; each
expansion move only ever lowers the energy, so the result is never worse than argmax.

GCO works on integers: costs are rounded to ``1 / scale`` once, in :func:`potts_energy`, and that
rounded energy is the one minimised and reported, so the never-worse guarantee holds exactly. Rounding
is monotone, so the argmax labelling stays a minimiser of the data term after rounding. On a large mesh
cut on patches the guarantee is kept by checking: a result worse than argmax is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np


def _import_gco() -> ModuleType:
    # gco-wrapper puts np.int / np.float / np.bool back onto numpy at import for its own type lists;
    # take them away again so that the rest of the process keeps the numpy it asked for
    missing = [name for name in ("int", "float", "bool") if name not in np.__dict__]
    import gco

    for name in missing:
        np.__dict__.pop(name, None)
    return gco


gco = _import_gco()

MAX_TERM = 2**30  # GCO adds int32 terms into a 64-bit total: keep each term well inside int32


@dataclass(frozen=True)
class PottsEnergy:
    """A Potts labelling problem with integer costs (divide by ``scale`` for the energy in nats)."""

    unary: np.ndarray    # (V, L) int32, cost of each label at each vertex
    edges: np.ndarray    # (E, 2) int64, i < j
    weights: np.ndarray  # (E,) int32, cost of a label change across each edge
    scale: int

    def __call__(self, labels: np.ndarray) -> float:
        """Energy of ``labels`` (V,), in the units of the unrounded costs."""
        labels = np.asarray(labels, dtype=np.int64)
        data = self.unary[np.arange(len(labels)), labels].sum(dtype=np.int64)
        changed = labels[self.edges[:, 0]] != labels[self.edges[:, 1]]
        smooth = self.weights[changed].sum(dtype=np.int64)
        return float(data + smooth) / self.scale

    def coarsened(self, groups: np.ndarray) -> PottsEnergy:
        """The same energy over groups of vertices that take one label together (ids 0..G-1)."""
        num_groups = int(groups.max()) + 1
        unary = np.zeros((num_groups, self.unary.shape[1]), dtype=np.int64)
        np.add.at(unary, groups, self.unary)
        pairs = np.sort(groups[self.edges], axis=1)
        across = pairs[:, 0] != pairs[:, 1]
        keys, where = np.unique(pairs[across, 0] * num_groups + pairs[across, 1], return_inverse=True)
        weights = np.bincount(where, self.weights[across], len(keys))
        edges = np.stack([keys // num_groups, keys % num_groups], axis=1)
        if unary.max(initial=0) > MAX_TERM or weights.max(initial=0) > MAX_TERM:
            raise ValueError("graph-cut costs of the groups overflow: use more, smaller groups")
        return PottsEnergy(unary.astype(np.int32), edges, weights.astype(np.int32), self.scale)


def potts_energy(costs: np.ndarray, edges: np.ndarray, weights: np.ndarray, smoothness: float,
                 scale: int = 1000) -> PottsEnergy:
    """Round float ``costs`` (V, L) and ``smoothness * weights`` (E,) to integers of ``1 / scale``."""
    unary = np.rint(np.asarray(costs, dtype=np.float64) * scale)
    pair = np.rint(smoothness * np.asarray(weights, dtype=np.float64) * scale)
    if unary.size and unary.max() > MAX_TERM or pair.size and pair.max() > MAX_TERM:
        raise ValueError(f"graph-cut costs above {MAX_TERM / scale:g}: lower scale or smoothness")
    return PottsEnergy(unary.astype(np.int32), np.asarray(edges, dtype=np.int64), pair.astype(np.int32), scale)


def _init_labels(cut: gco.GCO, init: np.ndarray) -> None:
    # the wrapper sets one site per call and checks each in Python (about 5 us a site, a second for
    # 200k vertices); the C call it wraps takes a fifth of that. Fall back to the wrapper if it moves.
    setter = getattr(getattr(gco.pygco, "_cgco", None), "gcoInitLabelAtSite", None)
    if setter is None:
        for site, label in enumerate(init.tolist()):
            cut.init_label_at_site(site, label)
        return
    handle = cut.handle
    for site, label in enumerate(init.tolist()):
        setter(handle, site, label)


def posterior_costs(probs: np.ndarray, floor: float = 1e-6) -> np.ndarray:
    """Data term ``-log max(p, floor)``: a floor keeps a zero posterior from forbidding a label outright."""
    return -np.log(np.maximum(probs, floor))


def expand(energy: PottsEnergy, init: np.ndarray, labels: np.ndarray | None = None, max_sweeps: int = -1,
           groups: np.ndarray | None = None) -> np.ndarray:
    """Alpha-expansion from ``init`` (V,) until no move lowers the energy (or ``max_sweeps`` sweeps).

    ``labels`` limits the moves to those labels (plus the ones in ``init``): each label costs one max-flow
    per sweep, and labels no vertex is likely to take are not worth it. ``groups`` (V,) solves on groups
    of vertices instead (see :func:`geot.decode.graph.supervertices`), for meshes too large for a
    max-flow per label; the result is kept only if it does not raise the energy over ``init``.
    """
    init = np.asarray(init, dtype=np.int64)
    if groups is not None and len(init):
        coarse = energy.coarsened(groups)
        found = expand(coarse, coarse.unary.argmin(axis=1), labels, max_sweeps)[groups]
        return found if energy(found) <= energy(init) else init.copy()
    if labels is not None:
        labels = np.union1d(labels, init)
        if len(labels) < energy.unary.shape[1]:
            sub = PottsEnergy(np.ascontiguousarray(energy.unary[:, labels]), energy.edges, energy.weights,
                              energy.scale)
            return labels[expand(sub, np.searchsorted(labels, init), None, max_sweeps)]
    n, num_labels = energy.unary.shape
    if n < 2 or num_labels < 2 or not len(energy.edges) or not energy.weights.any():
        if not n:
            return init.copy()
        own = energy.unary[np.arange(n), init]  # no interaction: each vertex on its own, ties keep init
        return np.where(own <= energy.unary.min(axis=1), init, energy.unary.argmin(axis=1))
    cut = gco.GCO()
    cut.create_general_graph(n, num_labels, False)
    try:
        cut.set_data_cost(energy.unary)
        keep = energy.weights > 0
        cut.set_all_neighbors(energy.edges[keep, 0], energy.edges[keep, 1], energy.weights[keep])
        cut.set_smooth_cost((1 - np.eye(num_labels)).astype(np.int32))
        _init_labels(cut, init)
        cut.expansion(int(max_sweeps))
        return cut.get_labels().astype(np.int64)
    finally:
        cut.destroy_graph()


def graph_cut(probs: np.ndarray, edges: np.ndarray, weights: np.ndarray, smoothness: float,
              floor: float = 1e-6, scale: int = 1000, candidate: float = 0.1, groups: np.ndarray | None = None
              ) -> tuple[np.ndarray, PottsEnergy]:
    """Labels (V,) minimising the Potts energy of ``probs`` (V, L) on the graph, and that energy.

    Only labels whose posterior reaches ``candidate`` somewhere (or that are some vertex's argmax) are
    tried: a network sure that a tooth is absent leaves that label out of every move. ``groups``: see
    :func:`expand`.
    """
    energy = potts_energy(posterior_costs(probs, floor), edges, weights, smoothness, scale)
    labels = np.flatnonzero(probs.max(axis=0, initial=0.0) >= candidate)
    return expand(energy, probs.argmax(axis=1), labels, groups=groups), energy
