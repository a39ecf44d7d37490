"""Procedural Teeth3DS-style jaws: labelled meshes for unit tests and demos, without patient data.

Each jaw is built in a local frame (z towards the crowns, y towards the incisors, classes 1..8 on -x:
the conventions that :func:`geot.data.features.canonical_frame` recovers from real scans) as the zero
level set of a field: a gum ridge along a U-shaped dental arch (plus a palate for upper jaws) united
with one solid per tooth. Surface nets turn the field into one open sheet like a real scan: no hidden
tooth parts, no base, borders where the "scanner" stopped, outward normals. Every vertex takes the
label of the solid whose surface it lies on, so the tooth/gum boundary is as clean as in hand-labelled
data. Teeth follow the FDI order along the arch with realistic widths and shapes (blade-like incisors,
pointed canines, two-cusp premolars, four-cusp molars), and left/right homologous teeth are mirror
images: position along the arch is what tells neighbours apart, as in real jaws. Arch form, tooth
sizes and gum shape vary per patient; each scan gets a random rigid pose and scanner-like noise.

Sizes follow the real scans in ``../shared/data``: about 8.2k vertices at ``resolution=1.0``, half of
them on the gum, arch about 55 x 45 mm between the crown centres. Pure numpy/scipy: a jaw takes about
0.1-0.2 s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import maximum_filter, minimum_filter
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from geot import labels as fdi
from geot.errors import ConfigError, ScanError
from geot.io.atomic import atomic_write
from geot.io.scan import Scan
from geot.io.teeth3ds import instances_from_labels, write_labels

# Tooth number 1..8 -> (mesiodistal width, buccolingual depth, crown height above the gum crest), mm.
# Average permanent-tooth sizes; the upper arch is the larger one overall.
_TOOTH_SIZE: dict[str, dict[int, tuple[float, float, float]]] = {
    "upper": {1: (8.9, 7.0, 9.0), 2: (6.9, 6.2, 8.0), 3: (7.9, 8.0, 9.0), 4: (7.3, 9.0, 7.2),
              5: (6.9, 9.0, 6.8), 6: (10.6, 11.0, 6.2), 7: (9.6, 10.8, 5.8), 8: (8.9, 10.2, 5.4)},
    "lower": {1: (5.4, 5.9, 8.0), 2: (5.9, 6.2, 8.0), 3: (6.9, 7.6, 9.0), 4: (7.0, 7.8, 7.5),
              5: (7.2, 8.2, 7.0), 6: (11.0, 10.4, 6.2), 7: (10.4, 10.0, 5.8), 8: (10.0, 9.8, 5.4)},
}
_KIND = {1: "incisor", 2: "incisor", 3: "canine", 4: "premolar", 5: "premolar", 6: "molar", 7: "molar",
         8: "molar"}
_THIRD_MOLAR_PROB = 0.12   # share of jaws with third molars (x8): a long tail, as in real data
_TARGET_VERTICES = 8200   # at resolution 1.0, like the real scans
_VOXEL_MM = {"upper": 0.94, "lower": 0.85}  # surface-net cell giving about that many vertices
RESOLUTIONS = (0.01, 16.0)  # what write_synthetic_dataset accepts: about 80 to 130k vertices per jaw
_NOISE_MM = 0.03           # scanner-like jitter


@dataclass(frozen=True)
class _Tooth:
    number: int            # 1..8 within the quadrant
    cls: int               # class index 1..16
    fdi: int
    kind: str
    md: float              # mesiodistal width
    bl: float              # buccolingual depth
    hc: float              # crown height above its base
    base: np.ndarray       # (3,) centre of the crown base (gum crest level), local frame
    axes: np.ndarray       # (3, 3) rows: distal, buccal, occlusal unit vectors (mirror image per side)
    rotation: np.ndarray   # (3, 3) small rotation of the tooth in its (distal, buccal, occlusal) frame
    cusps: np.ndarray      # (C, 5): u, v (fractions of half sizes), height (fraction of hc), sigma u, v


def synth_jaw(jaw: fdi.Jaw, seed: int | np.random.Generator, patient: str = "SYN0000",
              resolution: float = 1.0, missing_prob: float = 0.1) -> Scan:
    """One synthetic, fully labelled jaw as a :class:`~geot.io.scan.Scan` (mm, arbitrary rigid pose).

    Patient traits (arch shape, tooth sizes) come first from ``seed``, then jaw-specific draws, so the
    two jaws generated with the same integer seed look like one patient. ``resolution`` scales the
    vertex count (1.0: about 8k like the real scans; 0.25: about 2k for fast tests). ``missing_prob``
    is the chance that each tooth other than the third molars is absent (never all of them).
    """
    fdi.check_jaw(jaw)
    if resolution <= 0:
        raise ValueError(f"resolution must be positive, not {resolution}")
    if not 0.0 <= missing_prob < 1.0:
        raise ValueError(f"missing_prob must lie in [0, 1), not {missing_prob}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    traits = _patient_traits(rng)
    rng = np.random.default_rng([int(rng.integers(2**62)), fdi.JAWS.index(jaw)])
    teeth, arch = _layout(jaw, traits, rng, missing_prob)
    mesh_seed = int(rng.integers(2**62))
    # real scans are decimated to a fixed vertex count whatever the jaw's size: pick the cell to match
    target = _TARGET_VERTICES * resolution
    h = _VOXEL_MM[jaw] / np.sqrt(resolution)
    for _ in range(3):
        vertices, faces, cls = _mesh_jaw(jaw, teeth, arch, np.random.default_rng(mesh_seed), h)
        if abs(len(vertices) / target - 1.0) < 0.1:
            break
        h *= np.sqrt(len(vertices) / target)

    # scanner noise, a random order of vertices, then an arbitrary rigid pose
    vertices = vertices + rng.normal(0.0, _NOISE_MM, vertices.shape)
    order = rng.permutation(len(vertices))
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    vertices, cls, faces = vertices[order], cls[order], inverse[faces]
    rotation = _random_rotation(rng)
    vertices = vertices @ rotation.T + rng.uniform(-40.0, 40.0, 3)

    labels = fdi.class_to_fdi(cls, jaw)
    return Scan(vertices=vertices, faces=faces, jaw=jaw, labels=labels,
                instances=instances_from_labels(labels), name=f"{patient}_{jaw}", patient=patient)


def synthetic_scan(index: int, seed: int = 0, resolution: float = 1.0) -> Scan:
    """Scan ``index`` of the synthetic dataset ``seed``: what :func:`write_synthetic_dataset` writes.

    Even indices are lower jaws and odd ones upper jaws; scans ``2k`` and ``2k + 1`` are the two jaws of
    patient ``SYN{k:04d}`` (they share the patient's traits). Depends only on ``seed`` and ``index``.
    """
    if index < 0:
        raise ValueError(f"index must be >= 0, not {index}")
    patient = f"SYN{index // 2:04d}"
    return synth_jaw(fdi.JAWS[index % 2], np.random.default_rng([seed, index // 2]), patient, resolution)


def write_synthetic_dataset(out_dir: str | Path, n: int, seed: int = 0, resolution: float = 1.0) -> list[Path]:
    """Write ``n`` synthetic scans in the Teeth3DS layout ``out/<ID>/<ID>_<jaw>.obj`` + ``.json``.

    Scans alternate lower/upper, so patients ``SYN0000``, ``SYN0001``, ... have both jaws (the last one
    only a lower jaw when ``n`` is odd); scan ``i`` is :func:`synthetic_scan` ``(i, seed, resolution)``,
    so a seed gives the same files whatever ``n``. Returns the mesh paths.
    """
    if n < 0:
        raise ConfigError(f"the number of jaws must be >= 0, not {n}")
    if seed < 0:
        raise ConfigError(f"the seed must be >= 0, not {seed}")
    if not RESOLUTIONS[0] <= resolution <= RESOLUTIONS[1]:  # also refuses NaN
        raise ConfigError(f"resolution must lie in [{RESOLUTIONS[0]}, {RESOLUTIONS[1]}] "
                          f"(1.0 gives about 8k vertices per jaw), not {resolution}")
    out = Path(out_dir)
    paths = []
    for i in range(n):
        scan = synthetic_scan(i, seed, resolution)
        assert scan.jaw is not None and scan.labels is not None and scan.faces is not None
        folder = out / scan.patient
        mesh_path = folder / f"{scan.name}.obj"
        try:
            _write_obj(mesh_path, scan.vertices, scan.faces, scan.jaw)
            write_labels(folder / f"{scan.name}.json", scan.labels, scan.jaw, scan.patient, scan.instances)
        except OSError as exc:  # e.g. OUT names a file
            raise ScanError(out, f"cannot write synthetic jaws ({exc.strerror or exc})") from None
        paths.append(mesh_path)
    return paths


def _write_obj(path: Path, vertices: np.ndarray, faces: np.ndarray, jaw: str) -> None:
    """A plain OBJ (``# <jaw>`` header like the challenge files, ``v`` and 1-based ``f`` lines)."""
    lines = [f"# {jaw}", "# synthetic jaw generated by geot.data.synth"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in vertices.tolist()]
    lines += [f"f {a} {b} {c}" for a, b, c in (faces + 1).tolist()]
    with atomic_write(path, "w") as f:
        f.write("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------------------------
# layout: arch curve and teeth


@dataclass(frozen=True)
class _Patient:
    """Traits shared by both jaws of a patient."""

    scale: float           # overall tooth (and so arch) size
    flare: float           # arch form: tapered (-1) .. square (+1)
    spacing: float         # mm between neighbouring teeth: crowding (< 0) .. spacing (> 0)
    turn: float            # how quickly the arch turns behind the incisors (factor on its length scale)
    size_seed: int         # per tooth-type size factors


def _patient_traits(rng: np.random.Generator) -> _Patient:
    return _Patient(scale=float(np.clip(rng.normal(1.0, 0.045), 0.9, 1.1)), flare=float(rng.uniform(-1.0, 1.0)),
                    spacing=float(rng.uniform(-0.2, 0.3)), turn=float(rng.uniform(0.93, 1.07)),
                    size_seed=int(rng.integers(2**31)))


@dataclass(frozen=True)
class _Arch:
    """Dense samples of the arch (the line through the crown centres), ordered from class 8 to class 16."""

    points: np.ndarray     # (S, 2)
    tangent: np.ndarray    # (S, 2) unit, pointing along increasing ARCH_POSITION
    normal: np.ndarray     # (S, 2) unit, buccal (out of the U)
    side: np.ndarray       # (S,) -1 for the first quadrant (x < 0), +1 for the second
    length: np.ndarray     # (S,) arc length from the midline (>= 0)
    crest: np.ndarray      # (S,) gum crest height
    half_width: np.ndarray  # (S,) half width of the alveolar ridge
    papilla: np.ndarray    # (S,) rise of the gum between neighbouring teeth
    end: np.ndarray        # (2,) arc length where the ridge ends on each side (first, second quadrant)


def _arch_line(phi_max: float, l0: float, length: float, step: float) -> np.ndarray:
    """Half arch (x >= 0) from the midline: the tangent turns from +x towards -y as phi_max*tanh(l/l0)."""
    ell = np.arange(0.0, length + step, step)
    phi = phi_max * np.tanh(ell / l0)
    dx, dy = np.cos(phi) * step, -np.sin(phi) * step
    xy = np.stack([np.r_[0.0, np.cumsum(dx)[:-1]], np.r_[0.0, np.cumsum(dy)[:-1]]], axis=1)
    return np.column_stack([xy, ell, phi])


def _layout(jaw: str, patient: _Patient, rng: np.random.Generator, missing_prob: float
            ) -> tuple[list[_Tooth], _Arch]:
    """Which teeth are present, where they stand and how they are turned; the arch the gum follows."""
    size_rng = np.random.default_rng([patient.size_seed, fdi.JAWS.index(jaw)])
    scale = patient.scale * (1.0 + rng.normal(0.0, 0.01))
    # per tooth number size factor, nearly equal on both sides (homologous teeth look alike)
    number_factor = size_rng.normal(1.0, 0.035, 9)
    present = {q: {t: True for t in range(1, 9)} for q in (0, 1)}
    if rng.random() < _THIRD_MOLAR_PROB:  # erupted on both sides or on one
        both = rng.random() < 0.55
        side = int(rng.integers(2))
        present[0][8], present[1][8] = both or side == 0, both or side == 1
    else:
        present[0][8] = present[1][8] = False
    for q in (0, 1):
        for t in range(1, 8):
            present[q][t] = bool(rng.random() >= missing_prob)
    # a missing tooth leaves a gap, except after orthodontic extraction of both first premolars, where
    # the neighbours were moved in (gaps elsewhere would make one side of the arch shorter than the other)
    ortho = bool(rng.random() < missing_prob / 2)
    if ortho:
        present[0][4] = present[1][4] = False
    if not any(present[q][t] for q in (0, 1) for t in range(1, 9)):
        present[int(rng.integers(2))][int(rng.integers(1, 8))] = True
    close_gap = {q: {t: ortho and t == 4 for t in range(1, 9)} for q in (0, 1)}

    # arch form, fitted to the median tooth positions of real jaws: tapered (-1) .. square (+1)
    flare = patient.flare + rng.normal(0.0, 0.15)
    phi_max = np.radians((79.0 if jaw == "upper" else 89.0) + 2.5 * flare)
    l0 = (24.5 if jaw == "upper" else 28.0) * (1.0 - 0.06 * flare) * patient.turn * scale
    step = 0.2
    widths = {q: {t: _TOOTH_SIZE[jaw][t][0] * scale * number_factor[t] * (1 + rng.normal(0.0, 0.012))
                  for t in range(1, 9)} for q in (0, 1)}

    teeth: list[_Tooth] = []
    crest_knots: dict[int, list[tuple[float, float, float]]] = {0: [], 1: []}  # (arc length, z, half bl)
    spans: dict[int, list[tuple[float, float, float]]] = {0: [], 1: []}  # present teeth: (start, end, hc)
    ends = []
    side_phi = phi_max + rng.normal(0.0, np.radians(0.7), 2)  # a slightly asymmetric arch
    behind = rng.uniform(2.0, 4.0)  # ridge scanned behind the last tooth
    for q, side in ((0, -1.0), (1, 1.0)):
        line = _arch_line(side_phi[q], l0, 90.0, step)
        cursor = rng.normal(0.0, 0.15) + 0.1 * side  # the midline gap between the central incisors
        last_end = 0.0
        for t in range(1, 9):
            _, bl, hc = _TOOTH_SIZE[jaw][t]
            w = widths[q][t]
            if not present[q][t] and t == 8:
                break
            if not present[q][t] and close_gap[q][t]:
                continue  # the neighbours drifted into the gap
            gap = max(patient.spacing + rng.normal(0.0, 0.15), -0.4)
            centre = cursor + gap + w / 2
            cursor = centre + w / 2
            k = int(round(centre / step))
            x, y, _, phi = line[k]
            tangent = np.array([side * np.cos(phi), -np.sin(phi)])
            normal = np.array([side * np.sin(phi), np.cos(phi)])
            f = scale * number_factor[t]
            z_base = -hc * f + rng.normal(0.0, 0.25)  # crown tips near the occlusal plane z = 0
            crest_knots[q].append((centre, z_base, 0.5 * bl * f))
            last_end = cursor
            if not present[q][t]:
                continue
            spans[q].append((centre - w / 2, centre + w / 2, hc * f))
            offset = rng.normal(0.0, 0.35)
            xy = np.array([side * x, y]) + normal * offset
            axes = np.array([[*tangent, 0.0], [*normal, 0.0], [0.0, 0.0, 1.0]])
            torque = {"incisor": 14.0 if jaw == "upper" else 8.0, "canine": 6.0}.get(_KIND[t], 0.0)
            angles = np.radians([rng.normal(torque, 3.0), rng.normal(0.0, 3.0), rng.normal(0.0, 5.0)])
            cls = t + (8 if q else 0)
            teeth.append(_Tooth(
                number=t, cls=cls, fdi=int(fdi.fdi_codes(jaw)[cls]), kind=_KIND[t],
                md=w, bl=bl * f * (1 + rng.normal(0.0, 0.015)), hc=hc * f * (1 + rng.normal(0.0, 0.03)),
                base=np.array([xy[0], xy[1], z_base]), axes=axes, rotation=_tooth_rotation(*angles),
                cusps=_cusps(jaw, t, rng)))
        ends.append(last_end + behind)
        crest_knots[q].sort()

    # gum papillae fill the spaces between neighbouring teeth up to below their contacts
    contacts: dict[int, list[tuple[float, float]]] = {0: [], 1: []}
    for q in (0, 1):
        for (_, end_a, hc_a), (start_b, _, hc_b) in zip(spans[q][:-1], spans[q][1:], strict=True):
            if start_b - end_a < 1.5:
                contacts[q].append(((end_a + start_b) / 2, 0.4 * min(hc_a, hc_b)))
        if spans[0] and spans[1] and spans[0][0][0] < 1.0 and spans[1][0][0] < 1.0:
            contacts[q].append((0.0, 0.4 * min(spans[0][0][2], spans[1][0][2])))

    # dense arch samples for the gum, both halves joined through the midline (class 8 end first)
    halves = []
    ends = [max(ends)] * 2  # the scan covers the ridge as far back on both sides
    for q, side in ((0, -1.0), (1, 1.0)):
        line = _arch_line(side_phi[q], l0, ends[q] + 12.0, step)
        knots = np.array(crest_knots[q]) if crest_knots[q] else np.array([[0.0, -8.0, 4.0]])
        crest = np.interp(line[:, 2], knots[:, 0], knots[:, 1])
        half = np.interp(line[:, 2], knots[:, 0], knots[:, 2])
        pts = np.column_stack([side * line[:, 0], line[:, 1]])
        tangent = np.column_stack([side * np.cos(line[:, 3]), -np.sin(line[:, 3])])
        normal = np.column_stack([side * np.sin(line[:, 3]), np.cos(line[:, 3])])
        papilla = np.zeros(len(line))
        for at, height in contacts[q]:
            papilla += height * np.exp(-0.5 * ((line[:, 2] - at) / 1.0) ** 2)
        halves.append((pts, tangent, normal, np.full(len(line), side), line[:, 2], crest, half, papilla))
    first = [a[::-1] for a in halves[0]]
    first[1] = -first[1]  # tangents point along increasing ARCH_POSITION
    arch = _Arch(*(np.concatenate([a, b[1:]]) for a, b in zip(first, halves[1], strict=True)),
                 end=np.array(ends))
    return teeth, arch


def _cusps(jaw: str, number: int, rng: np.random.Generator) -> np.ndarray:
    """Cusp tips of a tooth: (u, v, height, sigma_u, sigma_v) with u distal and v buccal (fractions)."""
    kind = _KIND[number]
    if kind == "premolar":
        lingual = 0.8 if jaw == "upper" else (0.45 if number == 4 else 0.7)
        c = [(0.0, 0.42, 1.0, 0.45, 0.28), (0.0, -0.45, lingual, 0.42, 0.28)]
    elif kind == "molar":
        c = [(-0.45, 0.45, 1.0, 0.28, 0.28), (0.45, 0.45, 0.9, 0.28, 0.28),
             (-0.45, -0.45, 0.95 if jaw == "upper" else 0.9, 0.3, 0.3), (0.45, -0.45, 0.75, 0.28, 0.28)]
        if jaw == "lower" and number == 6:  # the distal (fifth) cusp of the lower first molar
            c = [(-0.5, 0.45, 1.0, 0.28, 0.3), (0.1, 0.5, 0.9, 0.28, 0.3), (0.62, 0.2, 0.7, 0.25, 0.28),
                 (-0.45, -0.45, 0.9, 0.32, 0.32), (0.4, -0.45, 0.85, 0.32, 0.32)]
    else:
        return np.zeros((0, 5))
    cusps = np.array(c)
    cusps[:, 2] *= 1.0 + rng.normal(0.0, 0.05, len(cusps))
    cusps[:, :2] += rng.normal(0.0, 0.03, (len(cusps), 2))
    return cusps


def _tooth_rotation(torque: float, tip: float, turn: float) -> np.ndarray:
    """Columns: the tooth's own axes in its (distal, buccal, occlusal) frame (torque tilts it buccally)."""
    ct, st = np.cos(torque), np.sin(torque)
    ci, si = np.cos(tip), np.sin(tip)
    cr, sr = np.cos(turn), np.sin(turn)
    about_u = np.array([[1, 0, 0], [0, ct, st], [0, -st, ct]])
    about_v = np.array([[ci, 0, si], [0, 1, 0], [-si, 0, ci]])
    about_w = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return about_w @ about_u @ about_v


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random proper rotation (never a mirror: that would swap the quadrants)."""
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


# ---------------------------------------------------------------------------------------------------
# fields


def _random_waves(rng: np.random.Generator, n: int, wavelength: tuple[float, float], amplitude: float
                  ) -> np.ndarray:
    angle = rng.uniform(0, 2 * np.pi, n)
    k = 2 * np.pi / rng.uniform(*wavelength, n)
    return np.column_stack([k * np.cos(angle), k * np.sin(angle), rng.uniform(0, 2 * np.pi, n),
                            amplitude * rng.uniform(0.3, 1.0, n)])


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _smax(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth maximum (rounded intersection) with blend radius k."""
    hh = np.maximum(k - np.abs(a - b), 0.0) / k
    return np.maximum(a, b) + hh * hh * k * 0.25


def _tooth_field(tooth: _Tooth, p: np.ndarray, min_half: float) -> np.ndarray:
    """Approximate signed distance (mm, negative inside) of a crown with its root stub, at points (N, 3).

    ``min_half`` is the thinnest half-thickness of a blade (incisal edges stay meshable on coarse grids).
    """
    pivot = tooth.base - np.array([0.0, 0.0, 3.0])
    local = (p - pivot) @ tooth.axes.T @ tooth.rotation + np.array([0.0, 0.0, -3.0])
    u, v, w = local[:, 0], local[:, 1], local[:, 2]
    a, b, hc = tooth.md / 2, tooth.bl / 2, tooth.hc
    # crowns bulge: widest at the contact height, narrower at the neck and towards the occlusal surface
    contact = 0.6 * hc
    below = np.clip((contact - w) / (contact + 2.5), 0.0, 1.0)
    above = np.clip((w - contact) / (hc - contact), 0.0, 1.0)
    half_u = a * (1.0 - 0.24 * below**1.5 - 0.1 * above**2)
    half_v = b * (0.82 + 0.18 * _smoothstep(-2.5, 0.35 * hc, w))
    centre_v = np.zeros_like(w)
    power = 2.2
    if tooth.kind in ("incisor", "canine"):
        taper = _smoothstep(0.1 * hc, 1.05 * hc, w)
        thin = 0.82 if tooth.kind == "incisor" else 0.6
        half_v = half_v * (1 - thin * taper)
        centre_v = 0.5 * b * thin * taper  # the lingual face slopes up to a labial edge
        if tooth.kind == "canine":
            half_u = half_u * (1 - 0.25 * taper)
    else:
        converge = _smoothstep(0.45 * hc, hc, w)
        half_u = half_u * (1 - 0.08 * converge)
        half_v = half_v * (1 - 0.14 * converge)
        power = 2.5 if tooth.kind == "molar" else 2.3
    half_v = np.maximum(half_v, min_half)
    r = ((np.abs(u) / half_u) ** power + (np.abs(v - centre_v) / half_v) ** power) ** (1 / power)
    side = (r - 1.0) * np.minimum(half_u, half_v)

    uu, vv = u / a, v / b
    if tooth.kind == "incisor":
        top = hc * (1 - 0.06 * uu**2 - 0.5 * np.maximum(np.abs(uu + 0.1 * np.sign(uu)) - 0.75, 0) ** 2)
    elif tooth.kind == "canine":
        top = hc * (1 - 0.38 * np.abs(uu + 0.08) ** 1.2 - 0.05 * vv**2)
    else:
        # an occlusal table with cusps, a central fossa and marginal ridges
        rim = _smoothstep(0.55, 0.9, np.maximum(np.abs(uu), np.abs(vv)))
        top = hc * (0.5 + 0.12 * rim - 0.1 * (uu**2 + vv**2))
        for cu, cv, ch, su, sv in tooth.cusps:
            top = top + 0.5 * hc * ch * np.exp(-0.5 * (((uu - cu) / su) ** 2 + ((vv - cv) / sv) ** 2))
    crown = _smax(side, w - top, 1.2)
    return np.maximum(crown, -(w + 4.0))  # a short root stub, hidden in the gum


@dataclass(frozen=True)
class _ArchCoords:
    """Where points lie relative to the arch: nearest sample, buccal offset, arc length, ridge end."""

    idx: np.ndarray
    offset: np.ndarray     # buccal (+) / lingual (-) distance from the arch
    along: np.ndarray      # distance past the nearest sample along the arch (beyond the sampled ends)
    length: np.ndarray
    end: np.ndarray


def _arch_coords(arch: _Arch, tree: cKDTree, xy: np.ndarray) -> _ArchCoords:
    _, idx = tree.query(xy)
    rel = xy - arch.points[idx]
    return _ArchCoords(idx, (rel * arch.normal[idx]).sum(1), np.abs((rel * arch.tangent[idx]).sum(1)),
                       arch.length[idx], np.where(arch.side[idx] < 0, arch.end[0], arch.end[1]))


@dataclass(frozen=True)
class _Gum:
    """Shape of the gum and where the scan of it ends."""

    cut: float             # height below which the scan ends
    buccal: float          # steepness of the ridge's outer and inner walls
    lingual: float
    vault_floor: float     # upper jaw: height of the deepest part of the palate
    reach: float           # distance from the teeth over which the palate deepens
    rugae: float           # height of the palatal folds behind the incisors
    y_back: float          # the palate is scanned up to here
    y_rugae: float
    bumps: np.ndarray      # (K, 4) plane waves: soft irregularities of the gum surface


def _gum_height(jaw: str, arch: _Arch, at: _ArchCoords, xy: np.ndarray, gum: _Gum) -> np.ndarray:
    """Height of the gum surface above each (x, y): an alveolar ridge along the arch (+ palate)."""
    d = at.offset
    half = arch.half_width[at.idx]
    crest = arch.crest[at.idx] + 0.4 - 0.3 * at.along**2
    crest = crest + arch.papilla[at.idx] * np.exp(-0.5 * (np.maximum(np.abs(d) - 0.3 * half, 0.0) / 1.2) ** 2)
    # the ridge keeps its crest, then falls steeply on both sides (the scan is cut further down)
    crest = crest - 0.08 * np.maximum(at.length - at.end, 0.0) ** 2
    buccal = np.maximum(d - 0.45 * half, 0.0)
    lingual = np.maximum(-d - 0.45 * half, 0.0)
    ridge = crest - gum.buccal * (buccal**2 + 0.15 * buccal**3) - gum.lingual * (lingual**2 + 0.15 * lingual**3)
    ridge = ridge + _bumps(xy, gum.bumps)
    if jaw == "lower":
        return ridge
    # upper: a vault inside the arch, deepest along the midline, with rugae behind the incisors
    inside = np.maximum(-d - 0.45 * half, 0.0)
    vault = crest + (gum.vault_floor - crest) * _smoothstep(0.0, gum.reach, inside)
    front = _smoothstep(gum.y_rugae, gum.y_rugae + 8.0, xy[:, 1]) * (1 - _smoothstep(5.0, 11.0, np.abs(xy[:, 0])))
    vault += gum.rugae * np.sin(xy[:, 1] * 1.3 + 0.25 * np.abs(xy[:, 0])) * _smoothstep(1.0, 4.0, inside) * front
    return np.maximum(ridge, np.where(d < 0, vault, -np.inf))


def _bumps(xy: np.ndarray, waves: np.ndarray) -> np.ndarray:
    """Soft irregularities of the gum: a sum of plane waves (rows: kx, ky, phase, amplitude)."""
    return (waves[:, 3] * np.sin(xy @ waves[:, :2].T + waves[:, 2])).sum(1)


def _mesh_jaw(jaw: str, teeth: list[_Tooth], arch: _Arch, rng: np.random.Generator,
              h: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mesh the union of gum and teeth; return vertices, faces and per-vertex class."""
    tree = cKDTree(arch.points)
    ends_y = []
    for q, half in enumerate((arch.side < 0, arch.side > 0)):
        order = np.argsort(arch.length[half])
        ends_y.append(float(np.interp(arch.end[q], arch.length[half][order], arch.points[half, 1][order])))
    crest = float(np.median(arch.crest))
    cut = crest - (rng.uniform(9.5, 11.5) if jaw == "lower" else rng.uniform(11.0, 13.5))
    gum = _Gum(cut=cut, buccal=float(rng.uniform(0.8, 1.1)), lingual=float(rng.uniform(0.8, 1.1)),
               vault_floor=crest - float(rng.uniform(6.0, 8.5)), reach=float(rng.uniform(15.0, 20.0)),
               rugae=float(rng.uniform(0.3, 0.6)), y_back=min(ends_y) + float(rng.uniform(2.0, 6.0)),
               y_rugae=float(arch.points[:, 1].max() - 22.0), bumps=_random_waves(rng, 8, (3.0, 12.0), 0.25))

    lo = np.r_[arch.points.min(0) - 12.0, cut - 2.0 - 2 * h]
    hi = np.r_[arch.points.max(0) + 12.0, 2.5]
    shape = np.ceil((hi - lo) / h).astype(int) + 1
    gx, gy, gz = (lo[i] + h * np.arange(shape[i]) for i in range(3))
    xy = np.stack(np.meshgrid(gx, gy, indexing="ij"), axis=-1).reshape(-1, 2)
    gum2d = _gum_height(jaw, arch, _arch_coords(arch, tree, xy), xy, gum).reshape(shape[0], shape[1])
    field = gz[None, None, :] - gum2d[:, :, None]
    for tooth in teeth:
        reach = 0.75 * max(tooth.md, tooth.bl) + 2.0
        box_lo = np.searchsorted(gx, tooth.base[0] - reach), np.searchsorted(gy, tooth.base[1] - reach)
        box_hi = np.searchsorted(gx, tooth.base[0] + reach), np.searchsorted(gy, tooth.base[1] + reach)
        z_lo = np.searchsorted(gz, tooth.base[2] - 5.0)
        sub = np.stack(np.meshgrid(gx[box_lo[0]:box_hi[0]], gy[box_lo[1]:box_hi[1]], gz[z_lo:],
                                   indexing="ij"), axis=-1)
        tf = _tooth_field(tooth, sub.reshape(-1, 3), 0.8 * h).reshape(sub.shape[:3])
        view = field[box_lo[0]:box_hi[0], box_lo[1]:box_hi[1], z_lo:]
        np.minimum(view, tf, out=view)

    # close slits thinner than about two cells (embrasures under the contacts): surface nets would pinch
    # them into non-manifold edges; flat and convex parts of the surface stay where they are
    closed = maximum_filter(minimum_filter(field, size=3), size=3)
    field = np.where(gz[None, None, :] < -3.0, closed, field)  # the occlusal embrasures stay open
    vertices, faces = _surface_nets(field, lo, h)

    # a real scan ends where the scanner stopped: cut the gum along wavy lines (open, ragged borders)
    at = _arch_coords(arch, tree, vertices[:, :2])
    phase = rng.uniform(0, 2 * np.pi, 3)
    wave = 0.9 * np.sin(vertices[:, 0] * 0.21 + phase[0]) + 0.6 * np.sin(vertices[:, 1] * 0.33 + phase[1])
    keep = vertices[:, 2] > cut + wave
    keep &= at.length - at.end < 0.8 * np.sin(vertices[:, 2] * 0.7 + at.offset * 0.4 + phase[2])
    if jaw == "upper":
        keep &= (at.offset > 0) | (vertices[:, 1] > gum.y_back + 0.8 * np.sin(vertices[:, 0] * 0.3 + phase[2]))
    vertices, faces = _keep_vertices(vertices, faces, keep)
    vertices, faces = _largest_components(vertices, faces)

    # label each vertex by the solid whose surface it lies on
    # (gum: vertical distance scaled by the slope, to compare like with like on steep walls)
    xy = vertices[:, :2]
    g = [_gum_height(jaw, arch, _arch_coords(arch, tree, xy + off), xy + off, gum)
         for off in ([0.0, 0.0], [0.1, 0.0], [0.0, 0.1])]
    slope = np.hypot(g[1] - g[0], g[2] - g[0]) / 0.1
    best = np.abs(vertices[:, 2] - g[0]) / np.sqrt(1.0 + np.nan_to_num(slope, posinf=1e6) ** 2)
    cls = np.zeros(len(vertices), dtype=np.int64)
    for tooth in teeth:
        near = np.linalg.norm(vertices[:, :2] - tooth.base[:2], axis=1) < max(tooth.md, tooth.bl) + 2.0
        tf = np.abs(_tooth_field(tooth, vertices[near], 0.8 * h))
        idx = np.flatnonzero(near)
        better = tf < best[idx]
        best[idx[better]] = tf[better]
        cls[idx[better]] = tooth.cls
    return vertices, faces, _majority_filter(faces, cls, 2)


def _majority_filter(faces: np.ndarray, cls: np.ndarray, iterations: int) -> np.ndarray:
    """Give each vertex the most common class of its 1-ring (itself included; ties keep its own).

    Vertices on the crease between two solids are equidistant from both, so their labels flicker;
    a couple of passes make the tooth/gum boundary as clean as in hand-labelled scans.
    """
    n = len(cls)
    rows = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2], np.arange(n)])
    cols = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0], np.arange(n)])
    adjacency = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n)).tocsr()
    adjacency = ((adjacency + adjacency.T) > 0).astype(np.float64)
    for _ in range(iterations):
        onehot = coo_matrix((np.ones(n), (np.arange(n), cls)), shape=(n, fdi.NUM_CLASSES)).tocsr()
        votes = (adjacency @ onehot).toarray()
        votes[np.arange(n), cls] += 0.5  # ties keep the current class
        cls = votes.argmax(axis=1)
    return cls


# ---------------------------------------------------------------------------------------------------
# meshing


def _surface_nets(field: np.ndarray, origin: np.ndarray, h: float) -> tuple[np.ndarray, np.ndarray]:
    """Naive surface nets: one vertex per cell that the zero level crosses, one quad per crossed edge.

    Faces are wound so that their normals point out of the solid (towards positive field values).
    """
    n = np.array(field.shape)
    cells = n - 1
    inside = field < 0
    total = int(np.prod(cells))
    acc = np.zeros((total, 3))
    count = np.zeros(total)
    quads = []
    strides = np.array([cells[1] * cells[2], cells[2], 1])
    for axis in range(3):
        lo_sl = [slice(None)] * 3
        hi_sl = [slice(None)] * 3
        lo_sl[axis] = slice(0, -1)
        hi_sl[axis] = slice(1, None)
        crossing = inside[tuple(lo_sl)] != inside[tuple(hi_sl)]
        ijk = np.argwhere(crossing)
        f0 = field[tuple(lo_sl)][crossing]
        f1 = field[tuple(hi_sl)][crossing]
        t = f0 / (f0 - f1)
        point = origin + h * ijk.astype(np.float64)
        point[:, axis] += h * t
        b, c = (axis + 1) % 3, (axis + 2) % 3
        corner_ids = []
        valid_all = np.ones(len(ijk), dtype=bool)
        for db, dc in ((-1, -1), (0, -1), (0, 0), (-1, 0)):
            cell = ijk.copy()
            cell[:, b] += db
            cell[:, c] += dc
            valid = (cell[:, b] >= 0) & (cell[:, b] < cells[b]) & (cell[:, c] >= 0) & (cell[:, c] < cells[c])
            cid = cell @ strides
            acc[:, 0] += np.bincount(cid[valid], point[valid, 0], total)
            acc[:, 1] += np.bincount(cid[valid], point[valid, 1], total)
            acc[:, 2] += np.bincount(cid[valid], point[valid, 2], total)
            count += np.bincount(cid[valid], minlength=total)
            corner_ids.append(cid)
            valid_all &= valid
        quad = np.stack(corner_ids, axis=1)[valid_all]
        flip = ~inside[tuple(lo_sl)][crossing][valid_all]  # solid on the high side: normal points to -axis
        quad[flip] = quad[flip][:, ::-1]
        quads.append(quad)
    active = count > 0
    vid = np.full(total, -1, dtype=np.int64)
    vid[active] = np.arange(int(active.sum()))
    vertices = acc[active] / count[active, None]
    quad = vid[np.concatenate(quads)]
    v = vertices[quad]
    split_02 = np.linalg.norm(v[:, 0] - v[:, 2], axis=1) <= np.linalg.norm(v[:, 1] - v[:, 3], axis=1)
    tri_a = np.where(split_02[:, None], quad[:, [0, 1, 2]], quad[:, [0, 1, 3]])
    tri_b = np.where(split_02[:, None], quad[:, [0, 2, 3]], quad[:, [1, 2, 3]])
    faces = np.concatenate([tri_a, tri_b])
    return _keep_vertices(vertices, faces, np.ones(len(vertices), dtype=bool))


def _keep_vertices(vertices: np.ndarray, faces: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop vertices not in ``keep``, faces touching them, degenerate faces and unused vertices."""
    faces = faces[keep[faces].all(axis=1)]
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    used = np.zeros(len(vertices), dtype=bool)
    used[faces.ravel()] = True
    remap = np.cumsum(used) - 1
    return vertices[used], remap[faces]


def _largest_components(vertices: np.ndarray, faces: np.ndarray, min_share: float = 0.01
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Drop crumbs: connected components holding less than ``min_share`` of the vertices."""
    n = len(vertices)
    rows = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    cols = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    sizes = np.bincount(comp)
    return _keep_vertices(vertices, faces, sizes[comp] >= min_share * n)
