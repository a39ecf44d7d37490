"""The 3D view of one predicted scan as a plotly figure: one trace per tooth, so each can be hidden.

Scans are shown in geot's canonical frame (:mod:`geot.data.features`), so every jaw appears the same way
round, seen from its occlusal side with the incisors at the top. Coordinates are stored as 16-bit
integers (steps of 1e-4 of the unit sphere, about 4 microns on a jaw) and the per-vertex confidence as a
byte of percent: plotly embeds such arrays as base64, which keeps a page of tens of scans small.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

from geot import labels as fdi
from geot.data.features import canonical_frame, vertex_normals
from geot.report.prediction import Geometry

QUANTUM = 1e-4
OTHER = fdi.NUM_CLASSES  # class of codes that are not teeth of the jaw
OTHER_COLOUR = (40, 40, 40)
LIGHTING = {"ambient": 0.55, "diffuse": 0.6, "specular": 0.1, "roughness": 0.7, "fresnel": 0.05}


def scan_figure(geometry: Geometry, jaw: str) -> str:
    """Plotly JSON (``{"data": [...]}``) of one scan: a mesh (or point) trace per class present.

    Each trace holds its own vertices; a face belongs to the class most of its corners carry. Every trace
    carries ``customdata`` = per-vertex confidence in percent (0-100), or none when unknown.
    """
    vertices, faces = geometry.vertices, geometry.faces
    mesh = faces is not None and len(faces) > 0
    with np.errstate(invalid="ignore", divide="ignore"):  # a flat or collinear scan has no arch direction
        normals = vertex_normals(vertices, faces) if mesh else None
        pos = canonical_frame(vertices, normals, align=True, faces=faces if mesh else None).apply(vertices)
    if not np.isfinite(pos).all():
        pos = canonical_frame(vertices, align=False).apply(vertices)
    quantised = np.clip(np.round(pos / QUANTUM), -32767, 32767).astype(np.int16)
    table = np.full(100, OTHER, dtype=np.int64)
    table[fdi.fdi_codes(jaw)] = np.arange(fdi.NUM_CLASSES)
    codes = geometry.labels
    classes = np.where((codes >= 0) & (codes < 100), table[np.clip(codes, 0, 99)], OTHER)
    percent = None
    if geometry.confidence is not None:
        percent = np.round(np.clip(geometry.confidence, 0.0, 1.0) * 100).astype(np.uint8)
    names = fdi.class_names(jaw) + ["codes of no tooth of this jaw"]
    traces = []
    if mesh:
        a, b, c = classes[faces[:, 0]], classes[faces[:, 1]], classes[faces[:, 2]]
        face_class = np.where(b == c, b, a)  # the majority corner, else the first
    for k in np.unique(classes):
        if mesh:
            own = faces[face_class == k]
            if len(own) == 0:
                continue
            used, local = np.unique(own, return_inverse=True)
            local = local.reshape(own.shape).astype(np.uint16 if len(used) < 2**16 else np.uint32)
        else:
            used = np.flatnonzero(classes == k)
        colour = OTHER_COLOUR if k == OTHER else tuple(int(x) for x in fdi.PALETTE[k])
        name = names[k]
        if k not in (0, OTHER):
            code = int(fdi.fdi_codes(jaw)[k])
            if code in geometry.tooth_confidence:
                name += f" ({100 * geometry.tooth_confidence[code]:.0f}%)"
        hover = f"<b>{names[k]}</b>" + ("<br>confidence %{customdata}%" if percent is not None else "")
        common = {"x": quantised[used, 0], "y": quantised[used, 1], "z": quantised[used, 2], "name": name,
                  "customdata": None if percent is None else percent[used], "showlegend": True,
                  "hovertemplate": hover + "<extra></extra>"}
        if mesh:
            traces.append(go.Mesh3d(**common, i=local[:, 0], j=local[:, 1], k=local[:, 2],
                                    color=f"rgb{colour}", lighting=LIGHTING, flatshading=False))
        else:
            traces.append(go.Scatter3d(**common, mode="markers", marker={"size": 2, "color": f"rgb{colour}"}))
    return pio.to_json(go.Figure(traces, layout={"template": go.layout.Template()}), validate=True)
