"""The plain cases of OBJ and PLY, read and written with numpy alone.

Importing trimesh takes about a third of a second (it pulls in much of scipy and networkx), a tenth of
what ``geot predict`` on one scan may take in all. The files geot meets most (Teeth3DS and scanner OBJs:
``v`` and triangle ``f`` lines; the labelled PLY/OBJ that predict writes) need none of its generality, so
they take this path; anything else goes to trimesh (:func:`geot.io.mesh.read_mesh`), and the tests check
both give the same arrays, with one intended difference: a vertex that no face uses keeps its place here,
as Teeth3DS labels (one per ``v`` line) need, where trimesh drops it even with ``process=False``.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np

# OBJ statements that change nothing about a triangle mesh's vertices and faces. Groups, objects and
# materials ("g", "o", "usemtl") are left to trimesh, which may split the mesh by them.
_KNOWN = {"v", "f", "vn", "vt", "s", "mtllib"}
_FIRST_WORD = re.compile(r"^(\S+)", re.MULTILINE)
_INDENTED = re.compile(r"^[ \t]+\S", re.MULTILINE)


def read_plain_obj(path: Path) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Vertices (file order) and 0-based triangles of an OBJ holding only ``v`` and ``f a b c`` lines.

    ``v`` lines may carry a colour (``v x y z r g b``). None when the file needs the general reader:
    polygons, ``/`` indices, negative or out-of-range indices, groups, or lines this reader does not know.
    Parsed by numpy's C reader, so a 160k-vertex scan reads in about the time trimesh takes.
    """
    text = path.read_text(encoding="utf-8", errors="replace")
    words = set(_FIRST_WORD.findall(text))
    if any(w not in _KNOWN and not w.startswith("#") for w in words) or _INDENTED.search(text):
        return None
    try:
        vertices = _table(text, "v", np.float64)
        faces = _table(text, "f", np.int64)
    except ValueError:  # "1/2/3" indices, rows of unequal length, or text where a number belongs
        return None
    if vertices is None or vertices.shape[1] not in (3, 6):
        return None
    if faces is None:
        return vertices[:, :3].copy(), None
    if faces.shape[1] != 3 or faces.min() < 1 or faces.max() > len(vertices):
        return None
    return vertices[:, :3].copy(), faces - 1


def _table(text: str, keyword: str, dtype: type) -> np.ndarray | None:
    """The numbers after ``keyword`` on each of its lines, one row per line (None when there is none)."""
    rows = re.findall(rf"^{keyword}[ \t]+(.*)$", text, re.MULTILINE)
    if not rows:
        return None
    return np.loadtxt(io.StringIO("\n".join(rows)), dtype=dtype, ndmin=2, comments=None)


def ply_bytes(vertices: np.ndarray, faces: np.ndarray | None, rgba: np.ndarray, labels: np.ndarray) -> bytes:
    """A binary PLY: float64 positions, RGBA colours, an int ``label`` per vertex and triangles (if any)."""
    vertex = np.empty(len(vertices), dtype=[("x", "<f8"), ("y", "<f8"), ("z", "<f8"), ("red", "u1"), ("green", "u1"),
                                            ("blue", "u1"), ("alpha", "u1"), ("label", "<i4")])
    for i, axis in enumerate("xyz"):
        vertex[axis] = vertices[:, i]
    for i, channel in enumerate(("red", "green", "blue", "alpha")):
        vertex[channel] = rgba[:, i]
    vertex["label"] = labels
    faces = np.zeros((0, 3), np.int64) if faces is None else np.asarray(faces)
    face = np.empty(len(faces), dtype=[("count", "u1"), ("corners", "<i4", (3,))])
    face["count"], face["corners"] = 3, faces
    header = ["ply", "format binary_little_endian 1.0", "comment written by geot",
              f"element vertex {len(vertex)}", *(f"property double {a}" for a in "xyz"),
              *(f"property uchar {c}" for c in ("red", "green", "blue", "alpha")), "property int label"]
    if len(face):
        header += [f"element face {len(face)}", "property list uchar int vertex_indices"]
    return ("\n".join([*header, "end_header"]) + "\n").encode("ascii") + vertex.tobytes() + face.tobytes()


def obj_text(vertices: np.ndarray, faces: np.ndarray | None, rgb: np.ndarray) -> str:
    """An OBJ with a colour on each ``v`` line (``v x y z r g b``, colours in 0..1) and 1-based triangles."""
    rows = np.concatenate([vertices, rgb / 255.0], axis=1)
    lines = [f"v {x:.9g} {y:.9g} {z:.9g} {r:.4f} {g:.4f} {b:.4f}" for x, y, z, r, g, b in rows.tolist()]
    if faces is not None:
        lines += [f"f {a} {b} {c}" for a, b, c in (np.asarray(faces) + 1).tolist()]
    return "\n".join(lines) + "\n"
