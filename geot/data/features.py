"""Per-vertex geometry the network sees: canonical coordinates, normals, optional curvature.

Real scans arrive in arbitrary frames (the occlusal axis is not always z), so each scan is moved to a
canonical frame: centred, scaled into the unit sphere and, by default, rotated so that

* z is the occlusal direction (the smallest principal axis, pointing to where the crowns face),
* y points to the incisors (the middle principal axis; the arch narrows towards the front),
* x = y cross z (a proper rotation: left and right are never mirrored).

These rules put the incisors in front for every one of the 108 real jaws in ``../shared/data``
(checked by ``tests/data/test_features.py::test_alignment_on_real_scans``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import trimesh

from geot.io.scan import Scan
from geot.ops import knn


@dataclass(frozen=True)
class Frame:
    """Maps source coordinates to canonical ones: ``(p - center) @ rotation.T / scale``."""

    center: np.ndarray
    scale: float
    rotation: np.ndarray

    def apply(self, points: np.ndarray) -> np.ndarray:
        return (points - self.center) @ self.rotation.T / self.scale

    def apply_vectors(self, vectors: np.ndarray) -> np.ndarray:
        return vectors @ self.rotation.T


@dataclass(frozen=True)
class PointFeatures:
    """Canonical per-vertex geometry of one scan (float32 arrays, vertex order of the scan)."""

    pos: np.ndarray              # (V, 3) in the unit sphere
    normal: np.ndarray           # (V, 3) unit vectors
    curvature: np.ndarray | None  # (V,) in (-1, 1), or None when not computed
    frame: Frame


def vertex_normals(vertices: np.ndarray, faces: np.ndarray | None, k: int = 16) -> np.ndarray:
    """Unit normals: area-weighted face normals for meshes, local PCA for clouds (sign not yet fixed)."""
    if faces is not None and len(faces):
        mesh = trimesh.Trimesh(vertices, faces, process=False)
        normals = np.array(mesh.vertex_normals, dtype=np.float64)
        isolated = np.linalg.norm(normals, axis=1) < 0.5  # vertices in no face get a PCA normal
        if not isolated.any():
            return normals
        normals[isolated] = _pca_normals(vertices, k)[isolated]
        return normals
    return _pca_normals(vertices, k)


def _pca_normals(vertices: np.ndarray, k: int) -> np.ndarray:
    # PCA in a centred unit frame: raw coordinates of extreme magnitude would overflow the covariances
    offsets = vertices - vertices.mean(axis=0)
    pos = torch.as_tensor(offsets / (np.abs(offsets).max() or 1.0), dtype=torch.float32)
    k = min(k, len(vertices))
    q, nb = knn(pos, pos, k)
    nbrs = pos[nb].view(len(pos), k, 3) if len(nb) == len(pos) * k else _ragged(pos, q, nb, k)
    centred = nbrs - nbrs.mean(dim=1, keepdim=True)
    cov = centred.transpose(1, 2) @ centred
    _, vecs = torch.linalg.eigh(torch.nan_to_num(cov.double(), nan=0.0, posinf=0.0, neginf=0.0))
    return vecs[:, :, 0].numpy()


def _ragged(pos: torch.Tensor, q: torch.Tensor, nb: torch.Tensor, k: int) -> torch.Tensor:
    out = pos[:, None, :].repeat(1, k, 1)
    slot = torch.arange(len(q)) - torch.repeat_interleave(torch.cumsum(torch.bincount(q, minlength=len(pos)), 0)
                                                          - torch.bincount(q, minlength=len(pos)),
                                                          torch.bincount(q, minlength=len(pos)))
    out[q, slot] = pos[nb]
    return out


def canonical_frame(vertices: np.ndarray, normals: np.ndarray | None = None, align: bool = True,
                    has_faces: bool = True) -> Frame:
    """Centre, unit-sphere scale and (with ``align``) the rotation to the canonical jaw frame."""
    center = vertices.mean(axis=0)
    centred = vertices - center
    scale = float(np.linalg.norm(centred, axis=1).max()) or 1.0
    if not align or len(vertices) < 4:
        return Frame(center, scale, np.eye(3))
    _, axes = np.linalg.eigh(np.cov(centred.T))  # ascending variance: occlusal, depth, width
    up, front = axes[:, 0], axes[:, 1]
    if has_faces and normals is not None:
        up = up if normals.sum(axis=0) @ up >= 0 else -up  # mesh normals face the scanner
    else:
        height = centred @ up  # crowns rise above a broad gingival base: height is skewed negative
        up = up if ((height - height.mean()) ** 3).mean() <= 0 else -up
    depth = centred @ front
    width = np.abs(centred @ np.cross(front, up))
    front = front if np.corrcoef(depth, width)[0, 1] <= 0 else -front  # the arch narrows to the front
    return Frame(center, scale, np.stack([np.cross(front, up), front, up]))


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
    """Canonical coordinates, normals facing the occlusal side, and optional curvature of a scan."""
    has_faces = scan.faces is not None and len(scan.faces) > 0
    normals = vertex_normals(scan.vertices, scan.faces)
    frame = canonical_frame(scan.vertices, normals if has_faces else None, align, has_faces)
    pos = frame.apply(scan.vertices)
    normals = frame.apply_vectors(normals)
    if not has_faces:  # a cloud's PCA normals have no sign: face them to the scanner (+z)
        normals = np.where(normals[:, 2:3] < 0, -normals, normals)
    normals = normals / np.linalg.norm(normals, axis=1, keepdims=True).clip(min=1e-12)
    curv = signed_curvature(pos, normals) if curvature else None
    return PointFeatures(pos.astype(np.float32), normals.astype(np.float32),
                         None if curv is None else curv.astype(np.float32), frame)
