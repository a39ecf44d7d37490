"""Mesh and point-cloud files (OBJ, PLY, STL), with vertex order kept as in the file.

Plain OBJs and the files geot writes take :mod:`geot.io.plain`; everything else is read by trimesh.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geot import labels as fdi
from geot.errors import ScanError
from geot.io.atomic import atomic_write
from geot.io.plain import obj_text, ply_bytes, read_plain_obj

MESH_SUFFIXES = (".obj", ".ply", ".stl")


@dataclass(frozen=True)
class MeshData:
    """What a mesh file holds: vertices, faces (None for a cloud) and an optional per-vertex label."""

    vertices: np.ndarray
    faces: np.ndarray | None
    vertex_labels: np.ndarray | None = None


def read_mesh(path: str | Path) -> MeshData:
    """Read an OBJ, PLY (ASCII or binary, with or without faces) or STL file.

    STL stores a triangle soup, so its duplicated corners are merged; other formats keep the file's
    vertex order exactly, because per-vertex label files index vertices by that order.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise ScanError(path, f"unsupported file type '{path.suffix}' (expected .obj, .ply or .stl)")
    if not path.is_file():
        raise ScanError(path, "file not found")
    if path.stat().st_size == 0:
        raise ScanError(path, "mesh is empty (file has 0 bytes)")
    plain = read_plain_obj(path) if suffix == ".obj" else None
    if plain is not None:
        return MeshData(*plain)
    import trimesh  # the general reader: about 0.3 s to import, so only when needed

    try:
        loaded = trimesh.load(path, file_type=suffix[1:], process=suffix == ".stl")
    except Exception as exc:  # trimesh raises many types on malformed files
        raise ScanError(path, f"cannot read {suffix[1:].upper()} file ({type(exc).__name__}: {exc})") from None
    if isinstance(loaded, trimesh.Scene):
        if not loaded.geometry:
            raise ScanError(path, "mesh is empty (no vertices)")
        loaded = loaded.to_geometry() if hasattr(loaded, "to_geometry") else loaded.dump(concatenate=True)
    if not isinstance(loaded, (trimesh.Trimesh, trimesh.PointCloud)):
        raise ScanError(path, f"holds a {type(loaded).__name__}, not a mesh or point cloud")
    vertices = np.asarray(loaded.vertices, dtype=np.float64)
    if len(vertices) == 0:
        raise ScanError(path, "mesh is empty (no vertices)")
    faces = None
    if isinstance(loaded, trimesh.Trimesh) and len(loaded.faces):
        faces = np.asarray(loaded.faces, dtype=np.int64)
    return MeshData(vertices, faces, _ply_labels(loaded) if suffix == ".ply" else None)


def _ply_labels(loaded: Any) -> np.ndarray | None:
    raw = loaded.metadata.get("_ply_raw", {}).get("vertex", {}).get("data")
    names = raw.keys() if isinstance(raw, dict) else getattr(getattr(raw, "dtype", None), "names", None) or ()
    if "label" not in names:  # binary PLY gives a structured array, ASCII a dict of columns
        return None
    return np.asarray(raw["label"], dtype=np.int64).reshape(-1)


def write_labelled_mesh(path: str | Path, vertices: np.ndarray, faces: np.ndarray | None,
                        fdi_labels: np.ndarray, jaw: str, overwrite: bool = True) -> Path:
    """Write a mesh coloured by tooth, atomically.

    PLY (binary) also stores the FDI code of each vertex as an int property ``label``; OBJ holds the
    colours only (its label companion is the Teeth3DS JSON that geot writes beside it).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".ply", ".obj"):
        raise ValueError(f"{path}: labelled meshes are written as .ply or .obj, not '{path.suffix}'")
    fdi_labels = np.asarray(fdi_labels, dtype=np.int64)
    colours = fdi.PALETTE[fdi.fdi_to_class(fdi_labels, jaw)]
    rgba = np.concatenate([colours, np.full((len(colours), 1), 255, np.uint8)], axis=1)
    vertices = np.asarray(vertices, dtype=np.float64)
    if suffix == ".ply":
        data: bytes | str = ply_bytes(vertices, faces, rgba, fdi_labels)
    else:
        data = obj_text(vertices, faces, colours)
    with atomic_write(path, "wb" if isinstance(data, bytes) else "w", overwrite=overwrite) as f:
        f.write(data)
    return path
