"""Prediction folders as ``geot predict`` writes them (JSON + geot block + labelled PLY), from synthetic jaws."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from geot.data.synth import synth_jaw
from geot.io.mesh import write_labelled_mesh
from geot.io.scan import Scan
from geot.io.teeth3ds import instances_from_labels, write_labels


def geot_block(scan: Scan, confidence: np.ndarray | None, **fields) -> dict:
    """The predictor's ``"geot"`` block for ``scan``'s labels."""
    labels = scan.labels
    instances = instances_from_labels(labels)
    teeth = [{"fdi": int(code), "instance": int(instances[labels == code][0]), "vertices": int((labels == code).sum()),
              "centroid": scan.vertices[labels == code].mean(axis=0).round(3).tolist(),
              "confidence": 0.9} for code in np.unique(labels[labels > 0])]
    block = {"source": str(scan.path) if scan.path else None, "jaw_source": "name", "jaw_confidence": None,
             "frame_confidence": 0.95, "warnings": [], "teeth": teeth,
             "confidence": None if confidence is None else confidence.round(4).tolist()}
    block.update(fields)
    return block


def write_prediction(folder: Path, scan: Scan, confidence: np.ndarray | None = None, ply: bool = True,
                     block: dict | None | bool = True) -> Path:
    """``folder/<name>.json`` (with the geot block unless ``block`` is False) and ``<name>.ply``."""
    path = write_labels(folder / f"{scan.name}.json", scan.labels, scan.jaw, scan.patient)
    if block is not False:
        record = json.loads(path.read_text())
        record["geot"] = geot_block(scan, confidence) if block is True else block
        path.write_text(json.dumps(record))
    if ply:
        write_labelled_mesh(folder / f"{scan.name}.ply", scan.vertices, scan.faces, scan.labels, scan.jaw)
    return path


def synthetic_scan(jaw: str, seed: int, resolution: float = 0.25) -> Scan:
    scan = synth_jaw(jaw, seed, patient=f"P{seed:03d}", resolution=resolution)
    return Scan(scan.vertices, scan.faces, scan.jaw, scan.labels, None, f"P{seed:03d}_{jaw}", f"P{seed:03d}")


@pytest.fixture(scope="module")
def scans() -> list[Scan]:
    """Three small synthetic jaws (about 2k vertices each)."""
    return [synthetic_scan("lower", 1), synthetic_scan("upper", 2), synthetic_scan("lower", 3)]
