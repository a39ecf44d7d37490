"""The Teeth3DS layout: ``<ID>/<ID>_<jaw>.obj`` beside ``<ID>_<jaw>.json`` holding per-vertex FDI labels.

Label JSON: ``{"id_patient": str, "jaw": "lower"|"upper", "labels": [FDI per vertex],
"instances": [instance id per vertex]}``, vertices in the order of the mesh file.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geot import labels as fdi
from geot.errors import ScanError
from geot.io.atomic import atomic_write
from geot.io.mesh import MESH_SUFFIXES, read_mesh
from geot.io.scan import Scan, scan_problems

# A jaw word stands alone between non-letters ("lowercase" is no jaw word); "jaw" or "arch" may follow it.
_JAW_WORD = re.compile(r"(?<![a-z])(?P<word>lower|upper|mandible|mandibular|maxilla|maxillary)"
                       r"(?:[^a-z0-9]*(?:jaw|arch))?(?![a-z])", re.IGNORECASE)
_JAW_OF_WORD: dict[str, fdi.Jaw] = {"lower": "lower", "mandible": "lower", "mandibular": "lower",
                                    "upper": "upper", "maxilla": "upper", "maxillary": "upper"}
_SEPARATORS = " _-.,;+~()[]{}"


@dataclass(frozen=True)
class ScanFiles:
    """Where one scan lives: its mesh, its label file (if any), and what its name says."""

    mesh: Path
    labels: Path | None
    name: str
    patient: str
    jaw: fdi.Jaw | None


def parse_name(stem: str) -> tuple[str, fdi.Jaw | None]:
    """Patient id and jaw from a file name: ``01A6GW4A_lower``, ``lower_scan``, ``Maxilla-P7``, ``scan.UPPER``.

    The jaw is a word anywhere in the name, in any case: lower/mandible/mandibular or upper/maxilla/
    maxillary. The patient id is the rest of the name without the separators around the jaw word (the
    whole name if nothing is left). Names with words of both jaws name no jaw.
    """
    matches = list(_JAW_WORD.finditer(stem))
    jaws = {_JAW_OF_WORD[m["word"].lower()] for m in matches}
    if len(jaws) != 1:
        return stem, None
    rest = stem
    for match in reversed(matches):  # cut each jaw word with the separators around it, keep one between
        before = rest[:match.start()].rstrip(_SEPARATORS)
        after = rest[match.end():].lstrip(_SEPARATORS)
        gaps = rest[len(before):match.start()] + rest[match.end():len(rest) - len(after)]
        rest = before + ((gaps[:1] or "_") if before and after else "") + after
    return rest or stem, jaws.pop()


def find_scans(root: str | Path, labels_root: str | Path | None = None) -> list[ScanFiles]:
    """Every mesh file under ``root`` (sorted), paired with ``<stem>.json`` beside it or under ``labels_root``.

    ``labels_root`` serves layouts that keep label files in a parallel tree
    (``labels_root/<ID>/<stem>.json`` or ``labels_root/<stem>.json``).
    """
    root = Path(root)
    if root.is_file():
        meshes = [root]
        root = root.parent
    elif root.is_dir():
        meshes = sorted(p for p in root.rglob("*") if p.suffix.lower() in MESH_SUFFIXES and p.is_file()
                        and not p.name.startswith("."))
    else:
        raise ScanError(root, "no such file or folder")
    found = []
    for mesh in meshes:
        patient, jaw = parse_name(mesh.stem)
        candidates = [mesh.with_suffix(".json")]
        if labels_root is not None:
            lr = Path(labels_root)
            candidates += [lr / mesh.relative_to(root).with_suffix(".json"), lr / patient / f"{mesh.stem}.json",
                           lr / f"{mesh.stem}.json"]
        label_file = next((c for c in candidates if c.is_file()), None)
        found.append(ScanFiles(mesh, label_file, mesh.stem, patient, jaw))
    return found


def read_labels(path: str | Path) -> dict[str, Any]:
    """Read and type-check a Teeth3DS label file; return ``jaw``, ``patient``, ``labels``, ``instances``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ScanError(path, "label file not found") from None
    except (OSError, ValueError) as exc:  # ValueError covers JSON syntax, UTF-8 and over-long integers
        raise ScanError(path, f"cannot read label JSON ({exc})") from None
    except RecursionError:
        raise ScanError(path, "cannot read label JSON (nested too deeply)") from None
    if not isinstance(data, dict):
        raise ScanError(path, f"label JSON must be an object, not {type(data).__name__}")
    if "labels" not in data:
        raise ScanError(path, "label JSON has no 'labels' list")
    out: dict[str, Any] = {"jaw": data.get("jaw"), "patient": data.get("id_patient")}
    if out["jaw"] is not None and out["jaw"] not in fdi.JAWS:
        raise ScanError(path, f"jaw must be 'lower' or 'upper', not {out['jaw']!r}")
    if out["patient"] is not None and not isinstance(out["patient"], (str, int)):
        raise ScanError(path, f"id_patient must be a string, not {type(out['patient']).__name__}")
    for key in ("labels", "instances"):
        out[key] = _int_array(path, key, data[key]) if data.get(key) is not None else None
    return out


def _int_array(path: Path, key: str, value: Any) -> np.ndarray:
    if not isinstance(value, list):
        raise ScanError(path, f"'{key}' must be a list of integers, not {type(value).__name__}")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        bad = next(v for v in value if not (isinstance(v, int) and not isinstance(v, bool)))
        raise ScanError(path, f"'{key}' must hold integers only; found {bad!r}")
    try:
        return np.asarray(value, dtype=np.int64)
    except OverflowError:
        raise ScanError(path, f"'{key}' holds integers beyond 64 bits") from None


def read_scan(mesh_path: str | Path, labels: str | Path | None | bool = True,
              jaw: fdi.Jaw | None = None) -> Scan:
    """Read one scan and its labels, checked: the first problem raises ScanError naming the file.

    ``labels=True`` looks for ``<stem>.json`` beside the mesh (a PLY ``label`` property also counts);
    a path reads that file; ``False``/``None`` reads geometry only. The jaw comes from, in order,
    the argument, the label file, the file name, the OBJ header and the tooth codes; conflicting
    sources are an error.
    """
    scan, problems = load_scan(mesh_path, labels, jaw)
    if problems:
        raise ScanError(*problems[0])
    return scan


def load_scan(mesh_path: str | Path, labels: str | Path | None | bool = True,
              jaw: fdi.Jaw | None = None) -> tuple[Scan, list[tuple[Path, str]]]:
    """Read a scan without stopping at its problems: return it with every ``(file, problem)`` found.

    Unreadable files still raise ScanError, since there is no scan to return.
    """
    mesh_path = Path(mesh_path)
    mesh = read_mesh(mesh_path)
    patient, name_jaw = parse_name(mesh_path.stem)
    label_path: Path | None
    if labels is True:
        label_path = mesh_path.with_suffix(".json") if mesh_path.with_suffix(".json").is_file() else None
    elif labels is False or labels is None:
        label_path = None
    else:
        label_path = Path(labels)
    fdi_labels = instances = None
    file_jaw = None
    if label_path is not None:
        record = read_labels(label_path)
        fdi_labels, instances, file_jaw = record["labels"], record["instances"], record["jaw"]
        patient = str(record["patient"]) if record["patient"] is not None else patient
    elif labels is not False and labels is not None and mesh.vertex_labels is not None:
        fdi_labels = mesh.vertex_labels
    problems: list[tuple[Path, str]] = []
    sources = {"argument": jaw, "label file": file_jaw, "file name": name_jaw,
               "OBJ header": _obj_header_jaw(mesh_path)}
    named = {k: v for k, v in sources.items() if v is not None}
    resolved = next(iter(named.values()), None)
    if len(set(named.values())) > 1:
        detail = ", ".join(f"{k} says {v}" for k, v in named.items())
        problems.append((label_path or mesh_path, f"mismatched jaw: {detail}"))
    if resolved is None and fdi_labels is not None and len(fdi_labels) == len(mesh.vertices):
        try:
            resolved = fdi.jaw_of_fdi(fdi_labels)
        except ValueError as exc:
            problems.append((label_path or mesh_path, str(exc)))
    scan = Scan(mesh.vertices, mesh.faces, resolved, fdi_labels, instances, mesh_path.stem, patient, mesh_path)
    for problem in scan_problems(scan):
        about_labels = any(w in problem for w in ("labels", "FDI", "instances", "jaw"))
        problems.append((label_path if about_labels and label_path else mesh_path, problem))
    return scan, problems


def _obj_header_jaw(path: Path) -> fdi.Jaw | None:
    """The jaw named by a challenge-style first line ``# lower`` / ``# upper`` of an OBJ file."""
    if path.suffix.lower() != ".obj":
        return None
    with open(path, "rb") as f:
        first = f.readline(64).decode("ascii", "replace").strip().lower()
    return first[1:].strip() if first in ("# lower", "# upper") else None  # type: ignore[return-value]


def instances_from_labels(fdi_labels: np.ndarray) -> np.ndarray:
    """One instance id per distinct tooth code (1, 2, ... in FDI order), 0 for gingiva."""
    fdi_labels = np.asarray(fdi_labels, dtype=np.int64)
    teeth = np.unique(fdi_labels[fdi_labels != 0])
    ids = np.zeros(100, dtype=np.int64)
    ids[teeth] = np.arange(1, len(teeth) + 1)
    return ids[fdi_labels]


def write_labels(path: str | Path, fdi_labels: np.ndarray, jaw: str, patient: str,
                 instances: np.ndarray | None = None, overwrite: bool = True,
                 extra: dict[str, Any] | None = None) -> Path:
    """Write a Teeth3DS label JSON atomically (instances derived from labels when not given).

    ``extra`` adds keys beside the Teeth3DS ones (geot writes its ``"geot"`` block there; readers of the
    format ignore keys they do not know).
    """
    fdi.fdi_to_class(fdi_labels, jaw)  # refuses codes foreign to the jaw
    fdi_labels = np.asarray(fdi_labels, dtype=np.int64)
    instances = instances_from_labels(fdi_labels) if instances is None else np.asarray(instances, np.int64)
    record = {"id_patient": patient, "jaw": jaw, "labels": fdi_labels.tolist(), "instances": instances.tolist(),
              **(extra or {})}
    with atomic_write(path, "w", overwrite=overwrite) as f:
        json.dump(record, f)
    return Path(path)
