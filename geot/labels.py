"""The label scheme: FDI tooth codes <-> 17 class indices per jaw, arch order and colours.

One jaw holds gingiva plus 16 teeth. Class ``k`` in 1..8 is tooth ``k`` of the first quadrant of the
jaw (11-18 upper, 31-38 lower) and class ``8 + k`` is tooth ``k`` of the second (21-28 upper, 41-48
lower). With each jaw viewed from its occlusal side, classes 1..8 then lie on the same side of the image
for both jaws, so one network serves both with a jaw flag as input.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Jaw = Literal["lower", "upper"]
JAWS: tuple[Jaw, Jaw] = ("lower", "upper")
NUM_CLASSES = 17
GINGIVA = 0

_QUADRANTS: dict[str, tuple[int, int]] = {"upper": (1, 2), "lower": (3, 4)}

# Position of each class along the dental arch, from the last molar of the first quadrant (1) to the
# last molar of the second (16); gingiva is off the arch (0). Central incisors 1 and 9 are neighbours.
ARCH_POSITION = np.array([0, *range(8, 0, -1), *range(9, 17)], dtype=np.int64)

TOOTH_NAMES = ["central incisor", "lateral incisor", "canine", "first premolar", "second premolar",
               "first molar", "second molar", "third molar"]


def check_jaw(jaw: str) -> Jaw:
    """The jaw that ``jaw`` names, in any case and padding (``"Lower"``, ``" UPPER"``), else raise ValueError."""
    name = jaw.strip().lower() if isinstance(jaw, str) else jaw
    if name not in JAWS:
        raise ValueError(f"unknown jaw {jaw!r}; expected 'lower' or 'upper'")
    return name  # type: ignore[return-value]


def fdi_codes(jaw: str) -> np.ndarray:
    """FDI code of every class of ``jaw``, indexed by class (0 for gingiva)."""
    q1, q2 = _QUADRANTS[check_jaw(jaw)]
    return np.array([0, *(10 * q1 + t for t in range(1, 9)), *(10 * q2 + t for t in range(1, 9))])


def _lookup(jaw: str) -> np.ndarray:
    table = np.full(100, -1, dtype=np.int64)
    table[fdi_codes(jaw)] = np.arange(NUM_CLASSES)
    return table


_FDI_TO_CLASS = {jaw: _lookup(jaw) for jaw in JAWS}


def unknown_fdi(fdi: np.ndarray, jaw: str) -> list[int]:
    """FDI codes in ``fdi`` that are not permanent teeth (or gingiva) of ``jaw``, sorted."""
    codes = np.unique(np.asarray(fdi))
    bad = (codes < 0) | (codes > 99)
    bad[~bad] = _FDI_TO_CLASS[check_jaw(jaw)][codes[~bad]] < 0
    return [int(c) for c in codes[bad]]


def fdi_to_class(fdi: np.ndarray, jaw: str) -> np.ndarray:
    """Map per-vertex FDI codes of one jaw to class indices 0..16; raise ValueError on foreign codes."""
    fdi = np.asarray(fdi, dtype=np.int64)
    bad = unknown_fdi(fdi, jaw)
    if bad:
        raise ValueError(f"FDI codes {bad} are not teeth of the {jaw} jaw "
                         f"(expected 0 and {fdi_codes(jaw)[1]}-{fdi_codes(jaw)[8]}, "
                         f"{fdi_codes(jaw)[9]}-{fdi_codes(jaw)[16]})")
    return _FDI_TO_CLASS[check_jaw(jaw)][fdi]


def class_to_fdi(classes: np.ndarray, jaw: str) -> np.ndarray:
    """Map class indices 0..16 of ``jaw`` back to FDI codes."""
    classes = np.asarray(classes, dtype=np.int64)
    if classes.size and (classes.min() < 0 or classes.max() >= NUM_CLASSES):
        raise ValueError(f"class indices must lie in 0..{NUM_CLASSES - 1}")
    return fdi_codes(jaw)[classes]


def jaw_of_fdi(fdi: np.ndarray) -> Jaw | None:
    """The jaw that the tooth codes in ``fdi`` belong to, None if only gingiva, ValueError if mixed."""
    quadrants = {int(c) // 10 for c in np.unique(np.asarray(fdi)) if c != 0}
    jaws = {jaw for jaw, qs in _QUADRANTS.items() if quadrants & set(qs)}
    if len(jaws) > 1:
        raise ValueError("labels mix teeth of the upper and the lower jaw")
    return jaws.pop() if jaws else None


def class_names(jaw: str) -> list[str]:
    """Readable name of each class, e.g. '36 first molar'."""
    return ["gingiva"] + [f"{c} {TOOTH_NAMES[c % 10 - 1]}" for c in fdi_codes(jaw)[1:]]


def arch_distance() -> np.ndarray:
    """(17, 17) distance between classes along the arch; gingiva is 16 (farther than any two teeth)."""
    pos = ARCH_POSITION.astype(np.float64)
    d = np.abs(pos[:, None] - pos[None, :])
    d[0, 1:] = d[1:, 0] = 16.0
    return d


# One colour per class (gingiva pink, each tooth type its own hue, second quadrant darker).
PALETTE = np.array(
    [[231, 170, 170],
     [255, 255, 153], [153, 255, 153], [153, 204, 255], [204, 153, 255],
     [255, 178, 102], [102, 255, 255], [255, 102, 178], [178, 178, 178],
     [204, 204, 0], [0, 178, 0], [0, 102, 204], [127, 0, 255],
     [204, 102, 0], [0, 153, 153], [204, 0, 102], [96, 96, 96]], dtype=np.uint8)
