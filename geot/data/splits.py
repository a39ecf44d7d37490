"""Patient-grouped splits: both jaws of a patient always land in the same part."""

from __future__ import annotations

import random
from collections.abc import Sequence

from pydantic import BaseModel


class Split(BaseModel):
    """Scan names of each part of a semi-supervised experiment."""

    labelled: list[str]
    unlabelled: list[str]
    val: list[str]


def split_patients(scans: Sequence[tuple[str, str]], labelled_fraction: float, val_fraction: float = 0.2,
                   seed: int = 0) -> Split:
    """Split ``(scan name, patient)`` pairs by patient.

    ``val_fraction`` of the patients are held out for validation; ``labelled_fraction`` of the remaining
    patients keep their labels (at least one), the rest become unlabelled. The order of ``scans`` does not
    matter: patients are sorted before the seeded shuffle.
    """
    if not 0 < labelled_fraction <= 1:
        raise ValueError(f"labelled fraction must be in (0, 1], got {labelled_fraction}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"validation fraction must be in [0, 1), got {val_fraction}")
    patients = sorted({p for _, p in scans})
    random.Random(seed).shuffle(patients)
    n_val = round(val_fraction * len(patients)) if val_fraction else 0
    if val_fraction and len(patients) > 1:
        n_val = min(max(n_val, 1), len(patients) - 1)
    val, train = set(patients[:n_val]), patients[n_val:]
    n_lab = min(max(1, round(labelled_fraction * len(train))), len(train))
    labelled = set(train[:n_lab])
    part = {p: "val" if p in val else "labelled" if p in labelled else "unlabelled" for p in patients}
    names: dict[str, list[str]] = {"labelled": [], "unlabelled": [], "val": []}
    for name, patient in sorted(scans):
        names[part[patient]].append(name)
    return Split(**names)
