"""Upper or lower jaw, read from the shape of a scan when nothing names it.

Two cues, both read in the canonical frame (:func:`geot.data.features.canonical_frame`), so pose, units,
winding and mirror images do not change them:

* **palate**: an upper scan carries the palate, which fills the inside of the arch; a lower scan is a
  U around the empty place of the tongue. Measured as the share of the arch's outline (the convex hull
  of the scan seen from above) that lies near the surface.
* **high front**: in a lower scan the front teeth stand as high as the back ones, so much of the highest
  fifth of the surface lies in the front half of the arch; in an upper scan (palate below, molars
  highest) little does.

On the 108 real jaws of ``../shared/data`` the palate cue spans 0.52-0.76 (lower) against 0.85-1.00
(upper) and the high-front cue 0.59-0.80 (lower) against 0.22-0.47 (upper); the thresholds below sit
midway and each jaw is right by either cue alone (``tools/robustness.py`` measures it).

Both cues lean on the palate (it also tilts the principal axes of an upper scan), so they suit whole
arches as scanned: an upper scan trimmed to its teeth reads as lower, and half an arch is no test at all.
A detected jaw is a fallback to report with its confidence, never a reason to overrule a named one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import ConvexHull, Delaunay, QhullError, cKDTree

from geot.data.features import canonical_frame
from geot.errors import ScanError
from geot.labels import Jaw, check_jaw

# cue -> (threshold, unit): a cue votes tanh((value - threshold) / unit), positive for upper. Thresholds sit
# midway between the two jaws' ranges on the real jaws; the units put their nearest jaws at votes of 0.8.
_CUES = {"palate": (0.805, 0.04), "high front": (0.527, -0.05)}
_GRID = 0.02  # spacing of the probes over the arch's outline, unit-sphere units (about 1 mm)
CONFLICT = 0.8  # a named jaw is contradicted only by a detection at least this confident
MIN_CONFIDENCE = 0.5  # a jaw nobody named is detected only from this confidence on


def jaw_cues(pos: np.ndarray) -> dict[str, float]:
    """The palate and high-front cues of canonical positions ``pos`` (missing when the shape is degenerate)."""
    cues = {}
    palate = _palate_cover(pos)
    if np.isfinite(palate):
        cues["palate"] = palate
    height, depth = pos[:, 2], pos[:, 1]
    highest = height >= np.quantile(height, 0.8)
    cues["high front"] = float((depth[highest] > np.median(depth)).mean())
    return cues


def _palate_cover(pos: np.ndarray) -> float:
    """Share of the scan's outline seen from above (convex hull in x, y) that lies near the surface."""
    plan = pos[:, :2]
    try:
        outline = Delaunay(plan[ConvexHull(plan).vertices])
    except (QhullError, ValueError):
        return float("nan")
    axis = np.arange(-1.0, 1.0 + _GRID, _GRID)
    probes = np.stack(np.meshgrid(axis, axis), axis=-1).reshape(-1, 2)
    probes = probes[outline.find_simplex(probes) >= 0]
    if not len(probes):
        return float("nan")
    spacing = np.median(cKDTree(pos).query(pos, 2)[0][:, 1])  # "near" adapts to the scan's resolution
    gap, _ = cKDTree(plan).query(probes)
    return float((gap <= max(_GRID, 3 * spacing)).mean())


def detect_jaw(vertices: np.ndarray, faces: np.ndarray | None = None) -> tuple[Jaw, float]:
    """Upper or lower, from the raw scan's shape, with a confidence in [0, 1].

    The confidence is the agreement of the cues' votes, capped by the canonical frame's own confidence:
    1 when both cues say the same clearly, 0 when they cancel out (then the jaw is a guess).
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    frame = canonical_frame(vertices, faces=faces)
    cues = jaw_cues(frame.apply(vertices))
    votes = [np.tanh((value - _CUES[name][0]) / _CUES[name][1]) for name, value in cues.items()]
    score = float(np.mean(votes)) if votes else 0.0
    return ("upper" if score > 0 else "lower"), min(abs(score), frame.confidence)


def jaw_conflict(named_jaw: str, vertices: np.ndarray, faces: np.ndarray | None = None) -> str | None:
    """A warning when the scan's shape clearly says the other jaw than ``named_jaw``, else None."""
    named = check_jaw(named_jaw)
    detected, confidence = detect_jaw(vertices, faces)
    if detected == named or confidence < CONFLICT:
        return None
    return (f"named the {named} jaw, but its shape says {detected} (confidence {confidence:.2f}); "
            f"check the file name or --jaw")


@dataclass(frozen=True)
class JawReading:
    """Which jaw a scan is, and who said so."""

    jaw: Jaw
    source: str                       # argument | json | name | header | detected
    confidence: float | None = None   # for a detected jaw
    warning: str | None = None        # the shape contradicts the named jaw


def settle_jaw(vertices: np.ndarray, faces: np.ndarray | None, named: str | None, source: str | None,
               path: object = None) -> JawReading:
    """The named jaw (with a warning when the shape clearly says the other), or the detected one.

    A detection is trusted only from :data:`MIN_CONFIDENCE` on; below, the jaw must be named (ScanError).
    """
    if named is not None:
        return JawReading(check_jaw(named), source or "argument", None, jaw_conflict(named, vertices, faces))
    detected, confidence = detect_jaw(vertices, faces)
    if confidence < MIN_CONFIDENCE:
        raise ScanError(path or "scan", f"jaw not named and not clear from the shape (looks {detected}, confidence "
                                        f"{confidence:.2f}): name the file <ID>_lower/<ID>_upper or pass --jaw")
    return JawReading(detected, "detected", confidence)
