"""Which unlabelled scans to annotate next: a selector module scores each scan from the model's posteriors."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from geot.errors import GeotError
from geot.io.atomic import atomic_write
from geot.io.teeth3ds import ScanFiles, read_scan
from geot.modules import build_module


@dataclass(frozen=True)
class Ranking:
    """Scans sorted by score, highest (annotate first) first."""

    round: int
    scores: list[tuple[str, float]]

    def write(self, path: str | Path, budget: int) -> None:
        """JSON with the ``budget`` scans to annotate and every score."""
        with atomic_write(path, "w") as f:
            json.dump({"round": self.round, "selected": [n for n, _ in self.scores[:budget]],
                       "scores": dict(self.scores)}, f, indent=1)


def rank_scans(segmenter, files: Sequence[ScanFiles], round_: int = 0, selector: str = "margin",
               on_skip: Callable[[str], None] | None = None) -> Ranking:
    """Score every readable scan with ``selector`` (adaptive margin: confident scans early, unsure ones later);
    unreadable scans are skipped and reported through ``on_skip``."""
    scorer = build_module({"name": selector, "args": {"round": round_}})
    probs, names = [], []
    for entry in files:
        try:
            probs.append(torch.from_numpy(segmenter.predict(read_scan(entry.mesh, labels=False)).probs))
            names.append(entry.name)
        except GeotError as exc:
            if on_skip is not None:
                on_skip(str(exc))
    scores = scorer(probs).tolist() if probs else []
    return Ranking(round_, sorted(zip(names, scores, strict=True), key=lambda t: -t[1]))
