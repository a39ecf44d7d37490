"""Check a folder of scans before training: every problem of every file, reported at once."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from geot.errors import ScanError
from geot.io.teeth3ds import find_scans, load_scan


@dataclass
class FolderReport:
    """What ``check_folder`` found: usable scans, problems per file, and the label histogram."""

    root: Path
    scans: list[dict] = field(default_factory=list)            # name, jaw, vertices, faces, labelled
    problems: list[tuple[Path, str]] = field(default_factory=list)
    fdi_histogram: Counter = field(default_factory=Counter)     # FDI code -> vertices

    @property
    def ok(self) -> bool:
        return not self.problems and bool(self.scans)


def check_folder(root: str | Path, labels_root: str | Path | None = None) -> FolderReport:
    """Read every scan under ``root`` with its labels and collect all problems instead of stopping."""
    report = FolderReport(Path(root))
    try:
        files = find_scans(root, labels_root)
    except ScanError as exc:
        report.problems.append((Path(root), exc.problem))
        return report
    if not files:
        report.problems.append((Path(root), "no .obj, .ply or .stl files found"))
    for entry in files:
        try:
            scan, problems = load_scan(entry.mesh, entry.labels if entry.labels else True)
        except ScanError as exc:
            report.problems.append((exc.path or entry.mesh, exc.problem))
            continue
        report.problems.extend(problems)
        if problems:
            continue
        report.scans.append({"name": scan.name, "patient": scan.patient, "jaw": scan.jaw,
                             "vertices": scan.num_vertices,
                             "faces": 0 if scan.faces is None else len(scan.faces),
                             "labelled": scan.is_labelled})
        if scan.labels is not None:
            report.fdi_histogram.update(scan.labels.tolist())
    return report
