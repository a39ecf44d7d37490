"""Patient-grouped splits: both jaws of a patient always land in the same part.

Four parts: ``test`` patients that no choice ever sees (not the checkpoint, not early stopping, not a
hyper-parameter, not the decoder's priors), ``val`` patients that pick the checkpoint, and the training
patients, of which ``labelled_fraction`` keep their labels and the rest train ``unlabelled``.

The test patients are drawn by their own seed (``test_seed``), before anything else, from a hash of each
patient id: they do not change with the split seed, the training seed or the labelled fraction, and
adding patients to a data folder leaves most test patients where they were.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

from pydantic import BaseModel, Field

PARTS = ("labelled", "unlabelled", "val", "test")


class Split(BaseModel):
    """Scan names of each part of an experiment (the run folder's ``split.json``)."""

    labelled: list[str]
    unlabelled: list[str]
    val: list[str]
    test: list[str] = Field(default_factory=list)  # old split files have no test part

    def parts(self) -> dict[str, list[str]]:
        return {name: getattr(self, name) for name in PARTS}

    def overlap(self) -> set[str]:
        """Scan names that sit in more than one part (empty for a valid split)."""
        seen: set[str] = set()
        twice: set[str] = set()
        for names in self.parts().values():
            twice |= seen & set(names)
            seen |= set(names)
        return twice


def _count(fraction: float, n: int, keep: int) -> int:
    """Patients for a part holding ``fraction`` of ``n``: at least one when asked for, leaving ``keep``."""
    if fraction <= 0 or n <= keep:
        return 0
    return min(max(round(fraction * n), 1), n - keep)


def _hash_order(patients: Sequence[str], seed: int) -> list[str]:
    """Patients sorted by a seeded hash of their id: a draw that does not depend on who else is there."""
    return sorted(patients, key=lambda p: hashlib.sha256(f"{seed}|{p}".encode()).hexdigest())


def split_patients(scans: Sequence[tuple[str, str]], labelled_fraction: float, val_fraction: float = 0.1,
                   seed: int = 0, test_fraction: float = 0.0, test_seed: int = 0) -> Split:
    """Split ``(scan name, patient)`` pairs by patient.

    ``test_fraction`` of all patients are held out for testing (drawn by ``test_seed`` only), then
    ``val_fraction`` of all patients for validation, drawn from the rest by ``seed``; ``labelled_fraction``
    of the remaining training patients keep their labels (at least one), the rest become unlabelled. At
    least one patient always trains. The order of ``scans`` does not matter.
    """
    if not 0 < labelled_fraction <= 1:
        raise ValueError(f"labelled fraction must be in (0, 1], got {labelled_fraction}")
    for name, value in (("validation", val_fraction), ("test", test_fraction)):
        if not 0 <= value < 1:
            raise ValueError(f"{name} fraction must be in [0, 1), got {value}")
    if val_fraction + test_fraction >= 1:
        raise ValueError(f"validation and test fractions leave no patient to train on "
                         f"({val_fraction} + {test_fraction} >= 1)")
    patients = sorted({p for _, p in scans})
    n = len(patients)
    n_test = _count(test_fraction, n, keep=1 + (val_fraction > 0))
    test = set(_hash_order(patients, test_seed)[:n_test])
    rest = [p for p in patients if p not in test]
    random.Random(seed).shuffle(rest)
    n_val = _count(val_fraction * n / max(len(rest), 1), len(rest), keep=1)
    val, train = set(rest[:n_val]), rest[n_val:]
    n_lab = min(max(1, round(labelled_fraction * len(train))), len(train))
    labelled = set(train[:n_lab])
    part = {p: "test" if p in test else "val" if p in val else "labelled" if p in labelled else "unlabelled"
            for p in patients}
    names: dict[str, list[str]] = {name: [] for name in PARTS}
    for name, patient in sorted(scans):
        names[part[patient]].append(name)
    return Split(**names)
