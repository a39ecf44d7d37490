"""Shared fixtures: small self-made scans, and the real jaws of ../shared/data when present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh

from geot.io.scan import Scan

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "iosseg-train"

real_data = pytest.mark.skipif(not REAL_DATA.is_dir(), reason="real scans (../shared/data) not present")


@pytest.fixture
def sphere_scan() -> Scan:
    """A labelled 'jaw' made of an icosphere: gingiva below the equator, two 'teeth' above."""
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=10.0)
    v = np.asarray(mesh.vertices)
    labels = np.where(v[:, 2] < 0, 0, np.where(v[:, 0] < 0, 31, 41))
    return Scan(v, np.asarray(mesh.faces), "lower", labels, None, "P001_lower", "P001")


def write_obj(path: Path, vertices: np.ndarray, faces: np.ndarray | None, header: str = "") -> Path:
    """Write a plain OBJ (v / f lines) the way scanners and Teeth3DS do."""
    lines = [header] if header else []
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in vertices]
    if faces is not None:
        lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def tiny_model(name: str, **args):
    """A small network of a registered backbone, built the way training builds it (from a config)."""
    from geot.config import load_config
    from geot.models import build_model

    return build_model(load_config(overrides={"model.name": name, "model.args": args}))
