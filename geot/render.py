"""Deterministic PNG pictures of a (labelled) scan, for reports, demos and eyeballing synthetic data.

Meshes are rasterised here with a small numpy z-buffer (smooth Lambert shading from interpolated vertex
normals) and shown with ``imshow``: this is exact about visibility, needs no OpenGL (open3d cannot
render on headless machines) and takes well under a second for a 16k-face scan. Point clouds are drawn
as a depth-sorted scatter. Scans are shown in the canonical frame of :mod:`geot.data.features`, so
every jaw appears the same way round: the occlusal view looks down onto the crowns with the incisors at
the top and classes 1..8 on the left; the front view looks at the incisors with the crowns up.

Renders are byte-identical for the same input: fixed figure size and dpi, no timestamps or software
tag in the PNG, no dependence on global pyplot state (a bare ``Figure`` drawn by Agg).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from geot import labels as fdi
from geot.data.features import canonical_frame, vertex_normals
from geot.io.atomic import atomic_write

VIEWS = ("occlusal", "front")
PANEL_INCHES = 4.0       # side of the square panel of one view
LEGEND_INCHES = 2.0      # extra width for the legend column
TITLE_INCHES = 0.4       # extra height for the title row
DPI = 100
GREY = np.array([200, 200, 200], dtype=np.uint8)  # colour of unlabelled scans
_LIGHT = np.array([-0.35, 0.45, 0.82])           # in view coordinates (right, up, towards the viewer)
_AMBIENT = 0.3
_SUPERSAMPLE = 2
_HALF_WIDTH = 1.05       # canonical coordinates lie in the unit sphere; the panel shows [-1.05, 1.05]


def render_scan(path_png: str | Path, vertices: np.ndarray, faces: np.ndarray | None = None,
                classes: np.ndarray | None = None, title: str | None = None,
                views: Sequence[str] = VIEWS, jaw: str | None = None, legend: bool = True) -> Path:
    """Write a PNG of a scan seen from each of ``views`` ("occlusal", "front") and return its path.

    ``classes`` are per-vertex class indices 0..16 (coloured by :data:`geot.labels.PALETTE`; grey when
    None). With ``jaw`` the legend names the FDI codes present, otherwise it lists class numbers.
    The figure is ``PANEL_INCHES`` per view wide (plus a legend column when labelled) at ``DPI``.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or len(vertices) == 0:
        raise ValueError(f"vertices must have shape (V, 3) with V > 0, not {vertices.shape}")
    unknown = [v for v in views if v not in VIEWS]
    if unknown or not views:
        raise ValueError(f"unknown views {unknown}; expected some of {VIEWS}")
    mesh = faces is not None and len(faces) > 0
    faces = np.asarray(faces, dtype=np.int64) if mesh else None
    if classes is not None:
        classes = np.asarray(classes, dtype=np.int64)
        if classes.shape != (len(vertices),):
            raise ValueError(f"{classes.shape[0] if classes.ndim else 0} classes for {len(vertices)} vertices")
        if classes.size and (classes.min() < 0 or classes.max() >= fdi.NUM_CLASSES):
            raise ValueError(f"classes must lie in 0..{fdi.NUM_CLASSES - 1}")
    colours = fdi.PALETTE[classes] if classes is not None else np.broadcast_to(GREY, vertices.shape)

    normals = vertex_normals(vertices, faces) if mesh else None
    frame = canonical_frame(vertices, normals, faces=faces)
    pos = frame.apply(vertices)
    if normals is not None:
        normals = frame.apply_vectors(normals)

    show_legend = legend and classes is not None
    width = PANEL_INCHES * len(views) + (LEGEND_INCHES if show_legend else 0.0)
    height = PANEL_INCHES + (TITLE_INCHES if title else 0.0)
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    panel_px = int(round(PANEL_INCHES * DPI))
    for i, view in enumerate(views):
        ax = fig.add_axes((i * PANEL_INCHES / width, 0.0, PANEL_INCHES / width, PANEL_INCHES / height))
        ax.set_axis_off()
        ax.set_xlim(-_HALF_WIDTH, _HALF_WIDTH)
        ax.set_ylim(-_HALF_WIDTH, _HALF_WIDTH)
        ax.set_aspect("equal")
        ax.text(0.02, 0.98, view, transform=ax.transAxes, va="top", ha="left", fontsize=9, color="0.3")
        proj = _project(pos, view)
        if mesh:
            rgb = _rasterise(proj, _project(normals, view), faces, colours, panel_px * _SUPERSAMPLE)
            rgb = _downsample(rgb, _SUPERSAMPLE)
            ax.imshow(rgb, extent=(-_HALF_WIDTH, _HALF_WIDTH, -_HALF_WIDTH, _HALF_WIDTH), origin="lower",
                      interpolation="nearest")
        else:
            order = np.argsort(proj[:, 2], kind="stable")  # far points first, near ones on top
            depth = (proj[order, 2] + 1.0) / 2.0
            shade = (0.55 + 0.45 * np.clip(depth, 0.0, 1.0))[:, None]
            ax.scatter(proj[order, 0], proj[order, 1], s=1.5, c=colours[order] / 255.0 * shade,
                       linewidths=0, marker="o")
    if title:
        fig.text(0.5, 1.0 - 0.5 * TITLE_INCHES / height, title, ha="center", va="center", fontsize=11)
    if show_legend:
        present = np.unique(classes)
        names = fdi.class_names(jaw) if jaw is not None else [f"class {k}" for k in range(fdi.NUM_CLASSES)]
        handles = [Patch(facecolor=fdi.PALETTE[k] / 255.0, edgecolor="0.4", label=names[k]) for k in present]
        fig.legend(handles=handles, loc="center right", fontsize=7, frameon=False,
                   bbox_to_anchor=(1.0, 0.5 * PANEL_INCHES / height))
    path = Path(path_png)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=DPI, metadata={"Software": None})
    return path


def _project(xyz: np.ndarray, view: str) -> np.ndarray:
    """Canonical coordinates -> (image right, image up, towards the viewer)."""
    x, y, z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    if view == "occlusal":  # from +z: incisors (+y) at the top, classes 1..8 (-x) on the left
        return np.stack([x, y, z], axis=1)
    return np.stack([-x, z, y], axis=1)  # front, from +y: crowns (+z) up


def _rasterise(proj: np.ndarray, normals: np.ndarray, faces: np.ndarray, colours: np.ndarray,
               size: int) -> np.ndarray:
    """Z-buffer a triangle mesh into a (size, size, 3) float image (row 0 at the bottom, white background).

    Triangles are grouped by the size of their pixel bounding box; each group tests all candidate pixels
    of all its triangles at once (barycentric coordinates are affine in the pixel offsets), so the work
    is vectorised whatever the triangle sizes. The nearest candidate of each pixel wins.
    """
    scale = size / (2 * _HALF_WIDTH)
    px = (proj[:, 0] + _HALF_WIDTH) * scale - 0.5  # pixel centres sit at integer coordinates
    py = (proj[:, 1] + _HALF_WIDTH) * scale - 0.5
    tx, ty, tz = px[faces], py[faces], proj[faces, 2]
    x0 = np.clip(np.ceil(tx.min(1)), 0, size).astype(np.int64)
    y0 = np.clip(np.ceil(ty.min(1)), 0, size).astype(np.int64)
    x1 = np.clip(np.floor(tx.max(1)), -1, size - 1).astype(np.int64)
    y1 = np.clip(np.floor(ty.max(1)), -1, size - 1).astype(np.int64)
    extent = np.maximum(x1 - x0, y1 - y0) + 1
    det = (tx[:, 1] - tx[:, 0]) * (ty[:, 2] - ty[:, 0]) - (tx[:, 2] - tx[:, 0]) * (ty[:, 1] - ty[:, 0])
    visible = (extent > 0) & (np.abs(det) > 1e-12)
    det = np.where(visible, det, 1.0)
    # barycentric weights of corners 1 and 2 at the first candidate pixel, and their steps along x and y
    dx0, dy0 = x0 - tx[:, 0], y0 - ty[:, 0]
    w1_x, w1_y = (ty[:, 2] - ty[:, 0]) / det, -(tx[:, 2] - tx[:, 0]) / det
    w2_x, w2_y = -(ty[:, 1] - ty[:, 0]) / det, (tx[:, 1] - tx[:, 0]) / det
    w1_0 = w1_x * dx0 + w1_y * dy0
    w2_0 = w2_x * dx0 + w2_y * dy0
    bucket = np.where(visible, np.ceil(np.log2(np.maximum(extent, 1))).astype(np.int64), -1)

    pix_all, face_all, w1_all, w2_all = [], [], [], []
    eps = -1e-7
    for b in np.unique(bucket[bucket >= 0]):
        ids = np.flatnonzero(bucket == b)
        off = np.arange(1 << int(b), dtype=np.float64)
        ox, oy = off[None, None, :], off[None, :, None]
        w1 = w1_0[ids, None, None] + w1_x[ids, None, None] * ox + w1_y[ids, None, None] * oy
        w2 = w2_0[ids, None, None] + w2_x[ids, None, None] * ox + w2_y[ids, None, None] * oy
        inside = (w1 >= eps) & (w2 >= eps) & (w1 + w2 <= 1.0 - eps)
        inside &= (x0[ids, None, None] + ox <= x1[ids, None, None]) & (y0[ids, None, None] + oy <= y1[ids, None, None])
        t, r, c = np.nonzero(inside)
        fid = ids[t]
        pix_all.append((y0[fid] + r) * size + x0[fid] + c)
        face_all.append(fid)
        w1_all.append(w1[t, r, c])
        w2_all.append(w2[t, r, c])

    image = np.ones((size * size, 3))
    if not pix_all:
        return image.reshape(size, size, 3)
    pix, fid = np.concatenate(pix_all), np.concatenate(face_all)
    bary = np.stack([np.zeros(len(pix)), np.concatenate(w1_all), np.concatenate(w2_all)], axis=1)
    bary[:, 0] = 1.0 - bary[:, 1] - bary[:, 2]
    depth = (bary * tz[fid]).sum(1)
    zbuf = np.full(size * size, -np.inf)
    np.maximum.at(zbuf, pix, depth)
    win = np.flatnonzero(depth >= zbuf[pix])
    owner = np.full(size * size, -1)
    np.maximum.at(owner, pix[win], win)  # exact ties: the last candidate, deterministically
    win = owner[owner >= 0]
    pix, fid, bary = pix[win], fid[win], bary[win]

    corners = faces[fid]
    n = (bary[:, :, None] * normals[corners]).sum(1)
    n /= np.linalg.norm(n, axis=1, keepdims=True).clip(min=1e-12)
    light = _LIGHT / np.linalg.norm(_LIGHT)
    shade = _AMBIENT + (1.0 - _AMBIENT) * np.abs(n @ light)  # two-sided: winding need not be consistent
    nearest = corners[np.arange(len(fid)), bary.argmax(1)]  # colour of the nearest corner: smooth borders
    image[pix] = np.asarray(colours, dtype=np.float64)[nearest] / 255.0 * shade[:, None]
    return image.reshape(size, size, 3)


def _downsample(image: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor`` x ``factor`` blocks (anti-aliasing of the supersampled raster)."""
    out = np.zeros((image.shape[0] // factor, image.shape[1] // factor, image.shape[2]))
    for i in range(factor):
        for j in range(factor):
            out += image[i::factor, j::factor]
    return out / factor**2
