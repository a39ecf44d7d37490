"""The in-memory scan: one jaw's mesh (or point cloud) with optional per-vertex labels."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from geot import labels as fdi
from geot.errors import ScanError

MIN_VERTICES = 16  # below this no neighbourhood, normal or alignment means anything


@dataclass(frozen=True, eq=False)
class Scan:
    """One jaw: vertices in the source frame (mm), optional faces, jaw and per-vertex FDI labels.

    Arrays are never modified by geot; every transform returns new arrays.
    """

    vertices: np.ndarray                  # (V, 3) float64
    faces: np.ndarray | None = None       # (F, 3) int64, or None for a point cloud
    jaw: fdi.Jaw | None = None
    labels: np.ndarray | None = None      # (V,) FDI codes, 0 = gingiva
    instances: np.ndarray | None = None   # (V,) tooth instance ids, 0 = gingiva
    name: str = "scan"                    # e.g. "IOS007_upper"
    patient: str = ""                     # patients group scans in splits
    path: Path | None = field(default=None)

    @property
    def num_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def is_labelled(self) -> bool:
        return self.labels is not None

    def classes(self) -> np.ndarray:
        """Per-vertex class indices 0..16 (needs labels and jaw)."""
        if self.labels is None or self.jaw is None:
            raise ScanError(self.path, "has no labels or no jaw; cannot map FDI codes to classes")
        return fdi.fdi_to_class(self.labels, self.jaw)

    def in_canonical_order(self) -> tuple[Scan, np.ndarray]:
        """The same scan with vertices sorted by position and faces sorted, and the order used.

        Files of the same geometry can list vertices and faces in any order (an STL export, a re-save);
        computing on the sorted scan makes every float sum, sample and tie-break the same, so the result
        depends on the geometry alone. ``result[order] = values`` maps per-vertex values back.
        """
        order = np.lexsort(self.vertices.T[::-1])  # by x, then y, then z
        faces = None
        if self.faces is not None:
            rank = np.empty_like(order)
            rank[order] = np.arange(len(order))
            f = rank[self.faces]
            f = np.take_along_axis(f, (np.argmin(f, axis=1)[:, None] + np.arange(3)) % 3, axis=1)  # keeps winding
            faces = f[np.lexsort(f.T[::-1])]
        labels = None if self.labels is None else self.labels[order]
        instances = None if self.instances is None else self.instances[order]
        return Scan(self.vertices[order], faces, self.jaw, labels, instances, self.name, self.patient,
                    self.path), order

    def validate(self) -> Scan:
        """Raise ScanError naming the file and the first problem found; return self when sound."""
        for problem in scan_problems(self):
            raise ScanError(self.path or self.name, problem)
        return self


def scan_problems(scan: Scan) -> list[str]:
    """Every problem of a scan, as short sentences (empty when the scan is usable)."""
    v = scan.vertices
    problems: list[str] = []
    if v.ndim != 2 or v.shape[1] != 3:
        return [f"vertices have shape {v.shape}, expected (V, 3)"]
    if len(v) == 0:
        return ["mesh is empty (no vertices)"]
    if len(v) < MIN_VERTICES:
        return [f"only {len(v)} vertices: too few for a jaw scan (at least {MIN_VERTICES})"]
    bad = ~np.isfinite(v).all(axis=1)
    if bad.any():
        problems.append(f"{int(bad.sum())} vertices have NaN or infinite coordinates (first: {int(np.argmax(bad))})")
    if scan.faces is not None and len(scan.faces):
        f = scan.faces
        if f.ndim != 2 or f.shape[1] != 3:
            problems.append(f"faces have shape {f.shape}, expected (F, 3)")
        elif f.min() < 0 or f.max() >= len(v):
            problems.append(f"faces index vertex {int(f.max())} but the mesh has {len(v)} vertices")
    if len(v) >= 1 and np.isfinite(v).all() and np.ptp(v, axis=0).max() == 0:
        problems.append("all vertices coincide (degenerate scan)")
    for name, arr in (("labels", scan.labels), ("instances", scan.instances)):
        if arr is not None and len(arr) != len(v):
            problems.append(f"{len(arr)} {name} for {len(v)} vertices")
    if scan.labels is not None and len(scan.labels) == len(v):
        if scan.jaw is None:
            problems.append("labels given but jaw unknown")
        else:
            unknown = fdi.unknown_fdi(scan.labels, scan.jaw)
            if unknown:
                other = "upper" if scan.jaw == "lower" else "lower"
                if not fdi.unknown_fdi(scan.labels, other):
                    problems.append(f"jaw is '{scan.jaw}' but the labels are teeth of the {other} jaw")
                else:
                    problems.append(f"unknown FDI codes {unknown[:10]} for the {scan.jaw} jaw")
    return problems
