"""One scan of a prediction folder, read for the report: its labels, the ``geot`` block and its geometry.

A prediction is ``<name>.json`` (Teeth3DS labels, maybe with the predictor's ``"geot"`` block) beside
``<name>.ply`` (the mesh with a per-vertex ``label``). Nothing here raises on a bad file: what cannot be
used becomes a line in :attr:`PredictedScan.problems`, so one broken scan never hides the others.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from geot import labels as fdi
from geot.errors import ScanError
from geot.io.mesh import read_mesh
from geot.io.teeth3ds import parse_name, read_labels

UNCERTAIN = 0.75  # a jaw or frame confidence below this is flagged in the table
PREDICTION_KEYS = ("labels", "jaw", "id_patient", "geot")  # a JSON object with none of these is another file

Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class ToothInfo(BaseModel):
    """One predicted tooth as the predictor describes it."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)
    fdi: int
    instance: int | None = None
    vertices: int | None = None
    centroid: list[float] | None = None
    confidence: Probability | None = None


class GeotBlock(BaseModel):
    """The ``"geot"`` block of a prediction JSON: where the scan came from and how sure the predictor was."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)
    source: str | None = None
    jaw_source: str | None = None  # name | header | json | argument | detected
    jaw_confidence: Probability | None = None
    frame_confidence: Probability | None = None
    warnings: list[str] = []
    teeth: list[ToothInfo] = []
    confidence: list[Probability] | None = None  # per vertex


@dataclass
class Geometry:
    """What the 3D view needs: the mesh (or cloud), the FDI code and the confidence of every vertex."""

    vertices: np.ndarray
    faces: np.ndarray | None
    labels: np.ndarray
    confidence: np.ndarray | None
    tooth_confidence: dict[int, float]


@dataclass
class PredictedScan:
    """One row of the report; ``problems`` say what could not be read (the row is listed all the same)."""

    name: str
    path: Path
    jaw: str | None = None
    teeth: list[int] | None = None    # FDI codes predicted; None when the labels could not be read
    missing: list[int] | None = None  # x1-x7 codes of the jaw that were not predicted; None: jaw unknown
    confidence: float | None = None   # mean per-vertex confidence; None when unknown
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    geometry: Geometry | None = None


def read_prediction(path: Path, name: str | None = None) -> PredictedScan | None:
    """Read ``<name>.json`` and its geometry; None when the JSON is some other file (e.g. summary.json)."""
    scan = PredictedScan(name or path.stem, path)
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as exc:
        scan.problems.append(_one_line(f"{path}: cannot read prediction JSON ({exc})"))
        return scan
    if isinstance(data, dict) and not any(key in data for key in PREDICTION_KEYS):
        return None
    try:
        record = read_labels(path)
    except ScanError as exc:
        scan.problems.append(_one_line(str(exc)))
        return scan
    labels = record["labels"]
    if labels is None:
        scan.problems.append(f"{path}: 'labels' is null, not a list of FDI codes")
        return scan
    block = _geot_block(data, path, scan.problems)
    scan.jaw = _jaw(record["jaw"], path, labels, scan.problems)
    scan.teeth = sorted(int(c) for c in np.unique(labels[labels != 0]))
    if scan.jaw is not None:
        foreign = fdi.unknown_fdi(labels, scan.jaw)
        if foreign:
            scan.problems.append(f"{path}: codes {foreign[:10]} are not teeth of the {scan.jaw} jaw")
        expected = [int(c) for c in fdi.fdi_codes(scan.jaw)[1:] if c % 10 != 8]  # wisdom teeth are often absent
        scan.missing = sorted(set(expected) - set(scan.teeth))
    confidence = None
    if block is not None:
        if block.confidence is not None and len(block.confidence) != len(labels):
            scan.problems.append(f"{path}: {len(block.confidence)} confidences for {len(labels)} labels; ignored")
        elif block.confidence is not None:
            confidence = np.asarray(block.confidence, dtype=np.float64)
            scan.confidence = float(confidence.mean()) if len(confidence) else None
        scan.warnings = _warnings(block)
    vertices, faces = _geometry(path, block, len(labels), scan.problems)
    if vertices is not None and scan.jaw is not None:
        scan.geometry = Geometry(vertices, faces, labels, confidence, _tooth_confidence(labels, confidence, block))
    return scan


def _one_line(message: str) -> str:
    return " ".join(message.split())


def _geot_block(data: dict[str, Any], path: Path, problems: list[str]) -> GeotBlock | None:
    if data.get("geot") is None:
        return None  # written before the predictor described itself: confidence unknown
    try:
        return GeotBlock.model_validate(data["geot"])
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "block"
        problems.append(_one_line(f"{path}: 'geot' block ignored ({where}: {first['msg']})"))
        return None


def _jaw(jaw: str | None, path: Path, labels: np.ndarray, problems: list[str]) -> str | None:
    """The jaw from the JSON, else the file name, else the tooth codes."""
    jaw = jaw or parse_name(path.stem)[1]
    if jaw is not None:
        return jaw
    try:
        jaw = fdi.jaw_of_fdi(labels)
    except ValueError as exc:
        problems.append(f"{path}: {exc}")
        return None
    if jaw is None:
        problems.append(f"{path}: jaw unknown (no 'jaw' field, and neither the name nor a tooth code says it)")
    return jaw


def _warnings(block: GeotBlock) -> list[str]:
    """The predictor's own warnings, plus a flag for each confidence below :data:`UNCERTAIN`."""
    warnings = list(block.warnings)
    if block.jaw_confidence is not None and block.jaw_confidence < UNCERTAIN:
        how = f"{block.jaw_source}, " if block.jaw_source else ""
        warnings.append(f"uncertain jaw ({how}{block.jaw_confidence:.2f})")
    if block.frame_confidence is not None and block.frame_confidence < UNCERTAIN:
        warnings.append(f"uncertain frame ({block.frame_confidence:.2f})")
    return list(dict.fromkeys(warnings))


def _geometry(path: Path, block: GeotBlock | None, n_labels: int, problems: list[str]
              ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Vertices and faces from ``<name>.ply``, else ``<name>.obj``, else the ``source`` mesh."""
    candidates = [path.with_suffix(".ply"), path.with_suffix(".obj")]
    if block is not None and block.source:
        source = Path(block.source)
        candidates += [source] if source.is_absolute() else [source, path.parent / source]
    tried = []
    for mesh_path in dict.fromkeys(candidates):
        if not mesh_path.is_file():
            continue
        try:
            mesh = read_mesh(mesh_path)
        except ScanError as exc:
            tried.append(exc.problem)
            continue
        v, f = mesh.vertices, mesh.faces
        if len(v) != n_labels:
            tried.append(f"{mesh_path.name} has {len(v)} vertices for {n_labels} labels")
        elif not np.isfinite(v).all():
            tried.append(f"{mesh_path.name} has NaN or infinite coordinates")
        elif f is not None and (f.min() < 0 or f.max() >= len(v)):
            tried.append(f"{mesh_path.name} has faces indexing missing vertices")
        else:
            return v, f
    reason = "; ".join(tried) if tried else "no <name>.ply, <name>.obj or readable 'source' mesh"
    problems.append(_one_line(f"{path}: no 3D view ({reason})"))
    return None, None


def _tooth_confidence(labels: np.ndarray, confidence: np.ndarray | None, block: GeotBlock | None
                      ) -> dict[int, float]:
    """Mean confidence per FDI code: from the vertices when known, else from the block's tooth list."""
    if confidence is not None:
        return {int(c): float(confidence[labels == c].mean()) for c in np.unique(labels)}
    if block is None:
        return {}
    sums: dict[int, list[float]] = {}
    for tooth in block.teeth:
        if tooth.confidence is not None:
            weight = float(tooth.vertices or 1)
            total = sums.setdefault(tooth.fdi, [0.0, 0.0])
            total[0] += weight * tooth.confidence
            total[1] += weight
    return {code: s / w for code, (s, w) in sums.items() if w > 0}
