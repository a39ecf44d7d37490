"""From per-vertex posteriors (and centroid offsets) to a valid dentition: one code per tooth, each once.

The stages form an ablation chain, chosen by :attr:`DecodeOptions.stage`:

* ``argmax``: each vertex its most probable class; one instance per code (what ``geot predict`` did);
* ``graphcut``: + a multi-label graph cut on the mesh (:mod:`geot.decode.graphcut`);
* ``full``: + tooth instances (:mod:`geot.decode.instances`) numbered along the arch
  (:mod:`geot.decode.numbering`). Teeth are first told from gingiva by a two-label cut on the gingiva
  posterior (a tooth whose mass the network splits between two codes is still a tooth). With offsets,
  instances come from centroid votes; without, from the connected pieces of each code after a cut among
  the tooth codes, and :attr:`Dentition.fallback` says so.

Meshes larger than :attr:`DecodeOptions.max_cut_vertices` are cut on patches of about that many
(:func:`geot.decode.graph.supervertices`): max-flow time grows faster than the mesh.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from geot import labels as fdi
from geot.decode.graph import cut_weights, supervertices, unit_normals, vertex_graph
from geot.decode.graphcut import graph_cut
from geot.decode.instances import absorb, code_pieces, offset_instances, subgraph
from geot.decode.numbering import NumberingWeights, instance_stats, number_instances
from geot.decode.priors import ArchPriors
from geot.errors import GeotError

Stage = Literal["argmax", "graphcut", "full"]
STAGES: tuple[Stage, ...] = ("argmax", "graphcut", "full")
TOOTH_WIDTH = 0.19  # median distance between neighbouring tooth centroids on the real jaws, canonical units


class DecodeError(GeotError):
    """The arrays given to :func:`decode` do not fit together (shapes, values)."""


@dataclass(frozen=True)
class Tooth:
    """One row of the per-scan instance table."""

    instance: int             # 1..K
    cls: int                  # class index 1..16
    fdi: int                  # FDI code for the jaw
    vertices: int             # vertex count
    centroid: np.ndarray      # (3,) in the coordinates given to decode()
    confidence: float         # mean posterior of its class over its vertices


@dataclass(frozen=True)
class Dentition:
    """A decoded scan: per-vertex classes and instances that agree, and the table of its teeth."""

    classes: np.ndarray       # (V,) class index per vertex
    instances: np.ndarray     # (V,) 0 gingiva, 1..K one per tooth, numbered along the arch
    teeth: list[Tooth]
    stage: Stage = "full"
    fallback: bool = False    # instances came from code pieces (no offsets), not from centroid votes

    @property
    def fdi(self) -> np.ndarray:
        """(V,) FDI code per vertex (needs the jaw: the codes of the teeth table)."""
        table = np.zeros(17, dtype=np.int64)
        for tooth in self.teeth:
            table[tooth.cls] = tooth.fdi
        return table[self.classes]


@dataclass(frozen=True)
class DecodeOptions:
    """Settings of :func:`decode`; lengths are in canonical units (the jaw fits the unit sphere)."""

    stage: Stage = "full"
    smoothness: float = 4.0        # Potts weight of a label change across a smooth edge, vs. -log posteriors
    groove: float = 20.0           # concavity (1 / radius) at which an edge costs 1/e as much to cut
    knn: int = 8                   # neighbours per point when there are no faces
    prob_floor: float = 1e-6       # posteriors below this cost as much as this
    cost_scale: int = 1000         # graph-cut costs are rounded to 1 / cost_scale
    tooth_width: float | None = None  # typical distance between neighbouring centroids; None: priors' or 0.19
    peak_radius: float = 0.25      # x tooth width: radius within which centroid votes are counted
    peak_separation: float = 0.3   # x tooth width: two tooth centroids are at least this far apart
    vote_steps: int = 2            # graph smoothing steps of the votes before the peaks are sought
    min_instance_share: float = 0.25  # instances under this x the median instance size are absorbed
    instance_smoothness: float = 1.0  # Potts weight of the graph cut that settles instance borders
    max_cut_vertices: int = 20000  # larger meshes are cut on about this many patches (max-flow is superlinear)
    numbering: NumberingWeights = field(default_factory=NumberingWeights)
    fallback_skip: float = 12.0    # numbering's skip cost for code pieces, often fragments of a tooth
    mirrored: bool = False         # the source is mirrored: codes 1-8 on +x instead of -x
    seed: int = 0                  # of the vote subset used to find peaks on large meshes

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise DecodeError(f"unknown decoder stage {self.stage!r}; expected one of {', '.join(STAGES)}")


def _check(probs: np.ndarray, points: np.ndarray, jaw: str, faces: np.ndarray | None, normals: np.ndarray | None,
           offsets: np.ndarray | None) -> np.ndarray:
    """Refuse arrays that do not fit; return the posteriors as float64 rows summing to 1."""
    try:
        fdi.check_jaw(jaw)
    except ValueError as exc:
        raise DecodeError(str(exc)) from None
    probs = np.asarray(probs, dtype=np.float64)
    points = np.asarray(points)
    if probs.ndim != 2 or probs.shape[1] != fdi.NUM_CLASSES:
        raise DecodeError(f"posteriors have shape {probs.shape}, expected (V, {fdi.NUM_CLASSES})")
    n = len(probs)
    for name, arr in (("points", points), ("normals", normals), ("offsets", offsets)):
        if arr is None:
            continue
        arr = np.asarray(arr)
        if arr.shape != (n, 3):
            raise DecodeError(f"{name} have shape {arr.shape}, expected ({n}, 3) for {n} posteriors")
        if not np.isfinite(arr).all():
            raise DecodeError(f"{name} hold NaN or infinite values")
    if not np.isfinite(probs).all() or (probs < 0).any():
        raise DecodeError("posteriors hold NaN, infinite or negative values")
    total = probs.sum(axis=1, keepdims=True)
    if (total <= 0).any():
        raise DecodeError(f"posteriors of vertex {int(np.argmax(total.ravel() <= 0))} are all zero")
    if faces is not None and len(faces):
        faces = np.asarray(faces)
        if faces.ndim != 2 or faces.shape[1] != 3:
            raise DecodeError(f"faces have shape {faces.shape}, expected (F, 3)")
        if faces.min() < 0 or faces.max() >= n:
            raise DecodeError(f"faces index vertex {int(faces.max())} but there are {n} vertices")
    return probs / total


def _code_instances(classes: np.ndarray) -> np.ndarray:
    """One instance per code present, numbered along the arch."""
    present = np.unique(classes[classes > 0])
    ids = np.zeros(fdi.NUM_CLASSES, dtype=np.int64)
    ids[present[np.argsort(fdi.ARCH_POSITION[present])]] = np.arange(1, len(present) + 1)
    return ids[classes]


def _table(classes: np.ndarray, instances: np.ndarray, points: np.ndarray, probs: np.ndarray, jaw: str
           ) -> list[Tooth]:
    codes = fdi.fdi_codes(jaw)
    teeth = []
    for k in range(1, int(instances.max(initial=0)) + 1):
        members = np.flatnonzero(instances == k)
        cls = int(classes[members[0]])
        teeth.append(Tooth(instance=k, cls=cls, fdi=int(codes[cls]), vertices=len(members),
                           centroid=points[members].mean(axis=0),
                           confidence=float(probs[members, cls].mean())))
    return teeth


def decode(probs: np.ndarray, points: np.ndarray, jaw: str, faces: np.ndarray | None = None,
           normals: np.ndarray | None = None, offsets: np.ndarray | None = None,
           priors: ArchPriors | None = None, options: DecodeOptions = DecodeOptions()) -> Dentition:
    """Turn per-vertex posteriors of one jaw into a dentition (see the module docstring for the stages).

    ``probs`` (V, 17) posteriors; ``points`` (V, 3) in the canonical frame; ``faces`` (F, 3) or None for a
    point cloud (a kNN graph is used); ``normals`` (V, 3) unit, computed when None; ``offsets`` (V, 3)
    predicted vectors to each point's tooth centroid, or None for the code-piece fallback; ``priors``
    sharpen the numbering. Inputs are never modified. Raises :class:`DecodeError` on arrays that do not fit.
    """
    probs = _check(probs, points, jaw, faces, normals, offsets)
    points = np.asarray(points, dtype=np.float64)
    n = len(probs)
    classes = probs.argmax(axis=1) if n else np.zeros(0, dtype=np.int64)
    if options.stage == "argmax" or n == 0:
        instances = _code_instances(classes)
        return Dentition(classes, instances, _table(classes, instances, points, probs, jaw), options.stage)

    edges = vertex_graph(points, faces, options.knn)
    normals = unit_normals(points, faces) if normals is None else np.asarray(normals, dtype=np.float64)
    weights = cut_weights(points, normals, edges, options.groove)
    groups = supervertices(points, edges, options.max_cut_vertices)
    cut = dict(smoothness=options.smoothness, floor=options.prob_floor, scale=options.cost_scale)
    if options.stage == "graphcut":
        classes, _ = graph_cut(probs, edges, weights, groups=groups, **cut)
        instances = _code_instances(classes)
        return Dentition(classes, instances, _table(classes, instances, points, probs, jaw), options.stage)

    # tooth or gingiva first, on the total tooth posterior: a tooth whose mass is split between two codes
    # is still a tooth
    gingiva = probs[:, 0]
    foreground = graph_cut(np.c_[gingiva, 1.0 - gingiva], edges, weights, groups=groups, **cut)[0] == 1
    if offsets is not None:
        width = options.tooth_width or (priors.tooth_width if priors is not None else None) or TOOTH_WIDTH
        instances = offset_instances(points, np.asarray(offsets, dtype=np.float64), foreground, edges, weights,
                                     width, options.peak_radius, options.peak_separation,
                                     options.min_instance_share, options.instance_smoothness,
                                     options.vote_steps, options.seed, groups)
    else:  # fallback: connected pieces of each code, the codes cut among teeth only
        fg = np.flatnonzero(foreground)
        local = subgraph(edges, fg, n)
        teeth = probs[fg, 1:] / np.maximum(probs[fg, 1:].sum(axis=1, keepdims=True), 1e-12)
        codes = np.zeros(n, dtype=np.int64)
        if len(fg):
            patches = None if groups is None else np.unique(groups[fg], return_inverse=True)[1]
            codes[fg] = graph_cut(teeth, local, weights[foreground[edges].all(axis=1)], groups=patches, **cut)[0] + 1
        instances = code_pieces(codes, edges, options.min_instance_share)
    votes = None if offsets is None else points + np.asarray(offsets, dtype=np.float64)
    stats = instance_stats(instances, points, probs, votes)
    numbering = options.numbering if offsets is not None else replace(options.numbering, skip=options.fallback_skip)
    codes = number_instances(stats, priors, numbering, options.mirrored)
    cls_of = np.r_[0, codes]
    unnumbered = (instances > 0) & (cls_of[instances] == 0)
    classes = absorb(cls_of[instances], ~unnumbered, edges)   # instances left without a code join neighbours
    instances = _code_instances(classes)                       # one code per instance: ids follow the arch
    return Dentition(classes, instances, _table(classes, instances, points, probs, jaw), options.stage,
                     fallback=offsets is None)
