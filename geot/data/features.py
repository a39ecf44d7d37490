"""Per-vertex geometry the network sees: canonical coordinates, normals, optional curvature.

Real scans arrive in arbitrary frames (the occlusal axis is not always z), so each scan is moved to a
canonical frame: centred, scaled into the unit sphere and, by default, rotated so that

* z is the occlusal direction (the smallest principal axis, pointing to where the crowns face),
* y points to the incisors (the middle principal axis; the arch narrows towards the front),
* x = y cross z (a proper rotation: a mirrored scan gets the mirrored frame, never a reflection,
  so its side codes swap: it reads as the jaw of a mirrored patient).

Which way the axes point is read from the shape alone, never from the face winding, which files get wrong
(a mirrored mesh or flipped normals): see :func:`canonical_frame`. The winding is then checked against
the shape and the normals are flipped when the faces are wound inward.

These rules put the incisors in front and the crowns up for every one of the 108 real jaws in
``../shared/data``, in any pose, unit, winding and mirror image, with faces or without
(``tests/data/test_features.py``; wider sweeps in ``tools/robustness.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import breadth_first_order, connected_components, minimum_spanning_tree
from scipy.spatial import cKDTree

from geot.io.scan import Scan
from geot.ops import knn

# Each cue below is a number that is positive when the axis under test points the right way; it votes
# tanh(value / unit). A unit is about a quarter of the cue's median on the 108 real jaws, so a typical jaw
# votes 0.999, the weakest real value (in brackets) still votes 0.7 or more, and a cue near zero barely
# votes: only cues that clearly disagree lower the confidence.
_UP_UNITS = {"height skew": 0.14,        # -skewness of heights: crowns rise above a broad base (0.12)
             "bumpy crowns": 0.13,       # corr(height, surface variation): cusps high, smooth gingiva low (0.38)
             "open edge below": 0.3}     # -(standardised height of the mesh's open edge), cut at the gums (0.69)
_FRONT_UNITS = {"arch narrows": 0.14,    # -corr(depth, |width|): the arch narrows to the front (0.33)
                "closed front": 0.35}    # log(mean |width| of the back tenth / of the front tenth) (0.85)
_AXIS_UNIT = 0.1  # relative gap between two principal variances; a tie leaves the axes free to turn
_FACING_UNIT = 0.1  # mean normal . up on the crowns: 0.45 or more with outward normals on the real jaws
_MISWOUND = 0.01  # beyond this share of edges run the same way by both faces, the winding says nothing
UNCERTAIN = 0.5  # frames less confident than this carry a warning
_BUMP_SAMPLE = 2048  # vertices whose bumpiness is read: a fixed random subset, fast, and alike at any resolution
INWARD_WARNING = "faces wound inward; normals flipped"


@dataclass(frozen=True)
class Frame:
    """Maps source coordinates to canonical ones: ``(p - center) @ rotation.T / scale``.

    ``confidence`` (0..1) says how clearly the shape fixed the axes; ``warnings`` say what was doubtful or
    repaired; ``normal_sign`` is -1 when the normals the frame was built with face into the jaw.
    """

    center: np.ndarray
    scale: float
    rotation: np.ndarray
    confidence: float = 1.0
    warnings: tuple[str, ...] = ()
    normal_sign: float = 1.0

    def apply(self, points: np.ndarray) -> np.ndarray:
        return (points - self.center) @ self.rotation.T / self.scale

    def apply_vectors(self, vectors: np.ndarray) -> np.ndarray:
        return vectors @ self.rotation.T

    def apply_normals(self, normals: np.ndarray) -> np.ndarray:
        """Canonical normals facing out of the jaw (to the crowns' side), whatever the file's winding."""
        return normals @ self.rotation.T * self.normal_sign


@dataclass(frozen=True)
class PointFeatures:
    """Canonical per-vertex geometry of one scan (float32 arrays, vertex order of the scan)."""

    pos: np.ndarray              # (V, 3) in the unit sphere
    normal: np.ndarray           # (V, 3) unit vectors
    curvature: np.ndarray | None  # (V,) in (-1, 1), or None when not computed
    frame: Frame


def vertex_normals(vertices: np.ndarray, faces: np.ndarray | None, k: int = 16) -> np.ndarray:
    """Unit normals, consistently signed across the surface but not yet facing a known side.

    Meshes: face normals weighted by their corner angles (signed by the winding). Clouds, and meshes whose
    faces are wound every which way: local PCA normals whose signs are passed from neighbour to neighbour
    along the smoothest paths (a minimum spanning tree).
    """
    if faces is None or not len(faces) or _miswound_share(faces) > _MISWOUND:
        return _consistent_signs(vertices, _pca_normals(vertices, k))
    normals = _angle_weighted_normals(np.asarray(vertices, dtype=np.float64), np.asarray(faces))
    isolated = np.linalg.norm(normals, axis=1) < 0.5  # vertices in no face get a PCA normal
    if isolated.all():
        return _consistent_signs(vertices, _pca_normals(vertices, k))
    if isolated.any():
        _, nearest = cKDTree(vertices[~isolated]).query(vertices[isolated])  # sign them like their neighbour
        loose = _pca_normals(vertices, k)[isolated]
        normals[isolated] = loose * np.where((loose * normals[~isolated][nearest]).sum(1) < 0, -1.0, 1.0)[:, None]
    return normals


def _angle_weighted_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Each face's unit normal weighted by its angle at the vertex (Thürrner and Wüthrich 1998), so a vertex's
    normal does not depend on how finely the faces around it are cut; zero for vertices in no face.

    The same normals as trimesh's ``vertex_normals`` (to rounding), without importing trimesh on the path
    of ``geot predict``; degenerate faces (an angle under 1e-8 rad) add nothing, as there.
    """
    corners = vertices[faces]
    face_normals = _unit(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]))
    u, v, w = (_unit(corners[:, b] - corners[:, a]) for a, b in ((0, 1), (0, 2), (1, 2)))
    angles = np.empty((len(faces), 3))
    angles[:, 0] = np.arccos(np.clip((u * v).sum(1), -1.0, 1.0))
    angles[:, 1] = np.arccos(np.clip((-u * w).sum(1), -1.0, 1.0))
    angles[:, 2] = np.pi - angles[:, 0] - angles[:, 1]
    angles[(angles < 1e-8).any(axis=1)] = 0.0
    weighted = (angles[:, :, None] * face_normals[:, None, :]).reshape(-1, 3)
    corner_of = faces.reshape(-1)
    summed = np.stack([np.bincount(corner_of, weighted[:, d], minlength=len(vertices)) for d in range(3)], axis=1)
    return _unit(summed)


_ZERO_LENGTH = 100 * np.finfo(np.float64).resolution  # 1e-13, trimesh's cut-off for a zero vector


def _unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1; rows of (near) zero length stay zero."""
    length = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, length, out=np.zeros_like(vectors), where=length > _ZERO_LENGTH)


def _pca_normals(vertices: np.ndarray, k: int) -> np.ndarray:
    return _local_pca(vertices, k)[1][:, :, 0]


def _local_pca(vertices: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Ascending eigenvalues (V, 3) and eigenvectors (V, 3, 3) of each vertex's k-neighbourhood."""
    # PCA in a centred unit frame: raw coordinates of extreme magnitude would overflow the covariances
    offsets = vertices - vertices.mean(axis=0)
    pos = torch.as_tensor(offsets / (np.abs(offsets).max() or 1.0), dtype=torch.float32)
    k = min(k, len(vertices))
    q, nb = knn(pos, pos, k)
    nbrs = pos[nb].view(len(pos), k, 3) if len(nb) == len(pos) * k else _ragged(pos, q, nb, k)
    centred = nbrs - nbrs.mean(dim=1, keepdim=True)
    cov = centred.transpose(1, 2) @ centred
    vals, vecs = torch.linalg.eigh(torch.nan_to_num(cov.double(), nan=0.0, posinf=0.0, neginf=0.0))
    return vals.numpy(), vecs.numpy()


def _ragged(pos: torch.Tensor, q: torch.Tensor, nb: torch.Tensor, k: int) -> torch.Tensor:
    out = pos[:, None, :].repeat(1, k, 1)
    slot = torch.arange(len(q)) - torch.repeat_interleave(torch.cumsum(torch.bincount(q, minlength=len(pos)), 0)
                                                          - torch.bincount(q, minlength=len(pos)),
                                                          torch.bincount(q, minlength=len(pos)))
    out[q, slot] = pos[nb]
    return out


def _consistent_signs(vertices: np.ndarray, normals: np.ndarray, k: int = 8) -> np.ndarray:
    """Flip unsigned normals so that neighbours agree: signs travel along a minimum spanning tree of the
    k-nearest-neighbour graph weighted by how much neighbouring normals differ (the smoothest paths)."""
    n = len(vertices)
    if n < 3:
        return normals
    _, nb = cKDTree(vertices).query(vertices, min(k + 1, n))
    rows, cols = np.repeat(np.arange(n), nb.shape[1] - 1), nb[:, 1:].ravel()
    rows, cols = _joined(vertices, rows, cols)
    weight = 1.0 - np.abs((normals[rows] * normals[cols]).sum(1)) + 1e-6  # zero would mean "no edge"
    tree = minimum_spanning_tree(coo_matrix((weight, (rows, cols)), shape=(n, n)).tocsr())
    _, parent = breadth_first_order(tree, 0, directed=False)
    parent = np.where(parent < 0, np.arange(n), parent)  # the root is its own parent
    sign = np.where((normals * normals[parent]).sum(1) >= 0, 1.0, -1.0)  # relative to the parent
    while (parent != parent[parent]).any():  # pointer jumping: relative to the grandparent, and so on up
        sign, parent = sign * sign[parent], parent[parent]
    return normals * sign[:, None]


def _joined(vertices: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Add edges until the graph is connected: each part links to the nearest vertex outside it."""
    n = len(vertices)
    while True:
        parts, label = connected_components(coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n)),
                                            directed=False)
        if parts == 1:
            return rows, cols
        extra = []
        for part in range(parts):
            inside = np.flatnonzero(label == part)
            outside = np.flatnonzero(label != part)
            dist, nearest = cKDTree(vertices[outside]).query(vertices[inside])
            best = int(np.argmin(dist))
            extra.append((inside[best], outside[nearest[best]]))
        rows = np.concatenate([rows, [a for a, _ in extra]])
        cols = np.concatenate([cols, [b for _, b in extra]])


def canonical_frame(vertices: np.ndarray, normals: np.ndarray | None = None, align: bool = True,
                    faces: np.ndarray | None = None) -> Frame:
    """Centre, unit-sphere scale and (with ``align``) the rotation to the canonical jaw frame.

    The principal axes give the occlusal, depth and width lines; which way each points is voted by cues
    of the shape that neither the face winding nor a mirror image can fool:

    * up (to the crowns): heights are skewed negative (crowns rise above a broad base), the bumpiest
      surface lies high (cusps and fissures against smooth gingiva), and the open edge of a mesh, where
      the scan was cut, lies low;
    * front (to the incisors): the arch narrows towards the front and is closed there, open at the back.

    ``normals`` (signed consistently, e.g. by the winding) are checked against the crowns: when they face
    inward, ``normal_sign`` is -1 and, for a mesh (``faces`` given), a warning says so.
    """
    center = vertices.mean(axis=0)
    centred = vertices - center
    scale = float(np.linalg.norm(centred, axis=1).max()) or 1.0
    if len(vertices) < 4:
        return Frame(center, scale, np.eye(3), 0.0 if align else 1.0)
    variances, axes = np.linalg.eigh(np.cov(centred.T))  # ascending variance: occlusal, depth, width
    points = centred / scale
    up_votes = _votes(_up_cues(points, axes[:, 0], faces), _UP_UNITS)
    up = axes[:, 0] if sum(up_votes.values()) >= 0 else -axes[:, 0]
    front_votes = _votes(_front_cues(points, axes[:, 1], np.cross(axes[:, 1], up)), _FRONT_UNITS)
    front = axes[:, 1] if sum(front_votes.values()) >= 0 else -axes[:, 1]
    rotation = np.stack([np.cross(front, up), front, up])

    warnings: list[str] = []
    miswound = _miswound_share(faces) if faces is not None and len(faces) else 0.0
    if miswound > _MISWOUND:
        warnings.append(f"faces wound inconsistently ({miswound:.0%} of edges); normals taken from the vertices")
    normal_sign = 1.0
    if normals is not None and len(normals) == len(vertices):
        facing = _facing(centred / scale, normals, up)
        normal_sign = 1.0 if facing >= 0 else -1.0
        if faces is not None and len(faces) and miswound <= _MISWOUND:  # the winding gave the normals' signs
            if abs(facing) < _FACING_UNIT:
                warnings.append(f"face winding unclear (normals . crowns = {facing:+.2f}); normals may be wrong")
            elif facing < 0:
                warnings.append(INWARD_WARNING)
    if not align:
        return Frame(center, scale, np.eye(3), 1.0, tuple(warnings), normal_sign)

    parts = {"occlusal side": _agreement(up_votes), "front": _agreement(front_votes),
             "occlusal axis": _separation(variances[0], variances[1]),
             "front axis": _separation(variances[1], variances[2])}
    confidence = min(parts.values())
    if confidence < UNCERTAIN:
        doubts = ", ".join(f"{name} {value:.2f}" for name, value in parts.items() if value < UNCERTAIN)
        warnings.insert(0, f"orientation uncertain (confidence {confidence:.2f}: {doubts}); "
                           "check that this is one jaw's intra-oral scan")
    return Frame(center, scale, rotation, confidence, tuple(warnings), normal_sign)


def _agreement(votes: dict[str, float]) -> float:
    """How firmly the votes agree: 1 when all are clear and alike, 0 when they cancel out or none voted."""
    return abs(float(np.mean(list(votes.values())))) if votes else 0.0


def _separation(smaller: float, larger: float) -> float:
    """How firmly two principal axes are told apart by their variances (0 when tied, towards 1 apart)."""
    return float(np.tanh((1 - smaller / larger) / _AXIS_UNIT)) if larger > 0 else 0.0


def _bump_sample(n: int) -> np.ndarray:
    """The vertices whose bumpiness is read: all of them, or a fixed random subset of a larger scan."""
    if n <= _BUMP_SAMPLE:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, _BUMP_SAMPLE, replace=False))


def _votes(cues: dict[str, float], units: dict[str, float]) -> dict[str, float]:
    return {name: float(np.tanh(value / units[name])) for name, value in cues.items() if np.isfinite(value)}


def _up_cues(points: np.ndarray, axis: np.ndarray, faces: np.ndarray | None) -> dict[str, float]:
    """Cues that are positive when ``axis`` points to the crowns (``points`` centred, unit-sphere)."""
    height = points @ axis
    spread = height.std() or 1.0
    standard = (height - height.mean()) / spread
    cues = {"height skew": -float((standard ** 3).mean())}
    sample = _bump_sample(len(points))
    variances = _local_pca(points[sample], 16)[0]
    variation = variances[:, 0] / variances.sum(1).clip(min=1e-30)
    if variation.std() > 0:
        cues["bumpy crowns"] = float(np.corrcoef(height[sample], variation)[0, 1])
    edge = _boundary_vertices(faces) if faces is not None and len(faces) else np.empty(0, int)
    if len(edge) >= 3:
        cues["open edge below"] = -float(standard[edge].mean())
    return cues


def _front_cues(points: np.ndarray, axis: np.ndarray, side: np.ndarray) -> dict[str, float]:
    """Cues that are positive when ``axis`` points to the incisors."""
    depth, width = points @ axis, np.abs(points @ side)
    cues = {}
    if depth.std() > 0 and width.std() > 0:
        cues["arch narrows"] = -float(np.corrcoef(depth, width)[0, 1])
    back, front = np.quantile(depth, [0.1, 0.9])
    far_back, far_front = width[depth <= back].mean(), width[depth >= front].mean()
    if far_back > 0 and far_front > 0:
        cues["closed front"] = float(np.log(far_back / far_front))
    return cues


def _boundary_vertices(faces: np.ndarray) -> np.ndarray:
    """Vertices on the open edge of a mesh: on some edge that only one face uses."""
    keys, ends = _edge_keys(np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1))
    alone = np.ones(len(keys), dtype=bool)
    alone[1:] &= keys[1:] != keys[:-1]
    alone[:-1] &= keys[:-1] != keys[1:]
    return np.unique(ends[alone])


def _miswound_share(faces: np.ndarray) -> float:
    """About how many of the edges that two faces share both faces run the same way (0: a consistent winding)."""
    keys, _ = _edge_keys(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2))
    return float(np.count_nonzero(keys[1:] == keys[:-1]) / max(1.5 * len(faces), 1.0))


def _edge_keys(ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges as sorted integer keys, with the edges' vertex pairs in the same order."""
    ends = ends.astype(np.int64)
    keys = ends[:, 0] * (int(ends.max()) + 1) + ends[:, 1]
    order = np.argsort(keys, kind="stable")
    return keys[order], ends[order]


def _facing(points: np.ndarray, normals: np.ndarray, up: np.ndarray) -> float:
    """Mean of normal . up over the highest fifth of the surface: the crowns' tops face up from outside."""
    height = points @ up
    top = height >= np.quantile(height, 0.8)
    unit = normals[top] / np.linalg.norm(normals[top], axis=1, keepdims=True).clip(min=1e-12)
    return float((unit @ up).mean())


def signed_curvature(pos: np.ndarray, normals: np.ndarray, k: int = 16) -> np.ndarray:
    """Mean-curvature-like signal per vertex, positive on cusps and negative in grooves, squashed to (-1, 1).

    For neighbours j of i: mean of ``(n_i - n_j) . (p_i - p_j) / |p_i - p_j|^2`` (equals 1/r on a sphere
    of radius r with outward normals), on unit-sphere coordinates, passed through ``tanh(x / 20)``
    (on the real jaws the 1st-99th percentiles land near -0.8 and +0.8).
    """
    p = torch.as_tensor(pos, dtype=torch.float32)
    n = torch.as_tensor(normals, dtype=torch.float32)
    q, nb = knn(p, p, k + 1)
    keep = q != nb
    q, nb = q[keep], nb[keep]
    dp = p[q] - p[nb]
    num = ((n[q] - n[nb]) * dp).sum(-1)
    val = num / (dp * dp).sum(-1).clamp(min=1e-12)
    total = torch.zeros(len(p)).index_add_(0, q, val)
    count = torch.bincount(q, minlength=len(p)).clamp(min=1)
    return torch.tanh(total / count / 20.0).numpy()


def point_features(scan: Scan, align: bool = True, curvature: bool = False) -> PointFeatures:
    """Canonical coordinates, normals facing out of the jaw, and optional curvature of a scan."""
    faces = scan.faces if scan.faces is not None and len(scan.faces) else None
    normals = vertex_normals(scan.vertices, faces)
    frame = canonical_frame(scan.vertices, normals, align, faces)
    pos = frame.apply(scan.vertices)
    normals = frame.apply_normals(normals)
    normals = normals / np.linalg.norm(normals, axis=1, keepdims=True).clip(min=1e-12)
    curv = signed_curvature(pos, normals) if curvature else None
    return PointFeatures(pos.astype(np.float32), normals.astype(np.float32),
                         None if curv is None else curv.astype(np.float32), frame)
