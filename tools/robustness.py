#!/usr/bin/env python
"""Does geot hold up when a user's scan is moved, rescaled, re-wound, mirrored or stripped of its faces?

Each real jaw is transformed as a user's file might be; the copy must land on the canonical coordinates
and normals of the original (x negated for a mirror image, whose side codes then swap), its jaw must be
detected from its shape, and, with a model, its labels must match the model's labels on the original.

    python tools/robustness.py                          # frame and jaw detection on all real jaws
    python tools/robustness.py --model runs/bench/X     # also labels (run folder, checkpoint or bundle)

Prints one table row per transformation and stores the record in docs/results/robustness.json (one row
per model, 'none' without one).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from geot import labels as fdi
from geot.data.features import (
    INWARD_WARNING,
    _consistent_signs,
    _pca_normals,
    canonical_frame,
    point_features,
    vertex_normals,
)
from geot.data.jaw import detect_jaw
from geot.io.scan import Scan

MATCH = 1e-3  # canonical coordinates this close (unit-sphere units, about 0.05 mm) count as the same
SIDE_SWAP = np.array([0, *range(9, 17), *range(1, 9)])  # class of each class in the mirror image


def _moved(scan: Scan, vertices: np.ndarray, faces: np.ndarray | None, mirrored: bool = False) -> Scan:
    labels = scan.labels
    if mirrored and labels is not None:  # the mirror image of a tooth is its namesake on the other side
        labels = fdi.class_to_fdi(SIDE_SWAP[scan.classes()], scan.jaw)
    return dataclasses.replace(scan, vertices=vertices, faces=faces, labels=labels, instances=None)


def _rotated(scan: Scan, rng: np.random.Generator) -> Scan:
    turn = Rotation.random(random_state=rng).as_matrix()
    return _moved(scan, scan.vertices @ turn.T + rng.normal(scale=100.0, size=3), scan.faces)


def _mirror(vertices: np.ndarray) -> np.ndarray:
    return vertices * np.array([-1.0, 1.0, 1.0])


def _flipped(faces: np.ndarray | None) -> np.ndarray | None:
    return None if faces is None else faces[:, ::-1].copy()


def _shuffled_winding(faces: np.ndarray | None, rng: np.random.Generator) -> np.ndarray | None:
    """Every other face, at random, wound the other way: a mesh stitched from badly merged pieces."""
    if faces is None:
        return None
    turned = rng.random(len(faces)) < 0.5
    return np.where(turned[:, None], faces[:, ::-1], faces)


# name -> (transformation, whether it mirrors the jaw)
TRANSFORMS: dict[str, tuple[Callable[[Scan, np.random.Generator], Scan], bool]] = {
    "rotated + moved": (_rotated, False),  # a random rotation of SO(3) and a shift of about 100 mm
    "in metres": (lambda s, rng: _moved(s, s.vertices / 1000.0, s.faces), False),
    "faces re-wound": (lambda s, rng: _moved(s, s.vertices, _flipped(s.faces)), False),
    "faces wound at random": (lambda s, rng: _moved(s, s.vertices, _shuffled_winding(s.faces, rng)), False),
    "point cloud": (lambda s, rng: _moved(s, s.vertices, None), False),
    "mirrored": (lambda s, rng: _moved(s, _mirror(s.vertices), s.faces, True), True),  # winding now inward
    "mirrored, faces flipped": (lambda s, rng: _moved(s, _mirror(s.vertices), _flipped(s.faces), True), True),
    "all at once": (lambda s, rng: _moved(s, _mirror(_rotated(s, rng).vertices) / 1000.0, None, True), True),
}


def truth_checks(pos: np.ndarray, classes: np.ndarray) -> dict[str, bool]:
    """What the true labels say of canonical positions ``pos``: quadrant 1 (classes 1-8) on -x and quadrant 2 on
    +x, incisors in front of molars, teeth above the gingiva within 0.15 of them (seen from above)."""
    first, second = pos[(classes >= 1) & (classes <= 8)], pos[classes >= 9]
    incisors = pos[(classes == 1) | (classes == 9)]
    molars = pos[np.isin(classes, [6, 7, 8, 14, 15, 16])]
    gingiva = pos[classes == 0]
    above = []
    for tooth in np.unique(classes[classes > 0]):
        crown = pos[classes == tooth]
        near = gingiva[np.linalg.norm(gingiva[:, :2] - crown[:, :2].mean(0), axis=1) < 0.15]
        above.append(len(near) == 0 or crown[:, 2].mean() > near[:, 2].mean())
    sides = len(first) == 0 or len(second) == 0 or first[:, 0].mean() < 0 < second[:, 0].mean()
    front = len(incisors) == 0 or len(molars) == 0 or incisors[:, 1].mean() > molars[:, 1].mean()
    # a partly erupted wisdom tooth may sit below the gingiva behind it: three teeth in four is the rule
    return {"quadrant 1 on -x": bool(sides), "incisors in front": bool(front),
            "teeth above their gingiva": bool(np.mean(above) >= 0.75) if above else True}


def agreement(reference: Any, moved: Any, mirrored: bool) -> tuple[float, float]:
    """Shares of vertices whose canonical position matches and whose normal agrees in sign."""
    flip = np.array([-1.0, 1.0, 1.0]) if mirrored else np.ones(3)
    same = np.linalg.norm(moved.pos - reference.pos * flip, axis=1) <= MATCH
    facing = (moved.normal * reference.normal * flip).sum(1) > 0
    return float(same.mean()), float(facing.mean())


def step_seconds(scans: list[Scan]) -> dict[str, float]:
    """Mean seconds per scan of what makes the frame robust: the cues and checks of the frame (a bare PCA
    frame takes about a millisecond), the signs of a cloud's normals, and the jaw detection."""
    clocks = dict.fromkeys(("frame (shape cues, winding check)", "cloud normal signs", "jaw detection"), 0.0)
    if scans:
        detect_jaw(scans[0].vertices, scans[0].faces)  # the first call pays for loading libraries
    for scan in scans:
        normals = vertex_normals(scan.vertices, scan.faces)
        unsigned = _pca_normals(scan.vertices, 16)
        start = time.perf_counter()
        canonical_frame(scan.vertices, normals, faces=scan.faces)
        signs = time.perf_counter()
        _consistent_signs(scan.vertices, unsigned)
        jaw = time.perf_counter()
        detect_jaw(scan.vertices, scan.faces)
        end = time.perf_counter()
        for step, seconds in zip(clocks, (signs - start, jaw - signs, end - jaw), strict=True):
            clocks[step] += seconds
    return {step: total / max(len(scans), 1) for step, total in clocks.items()}


def measure(scans: list[Scan], segmenter: Any = None, seed: int = 0,
            on_scan: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The robustness record of ``scans`` (labelled real jaws): one entry per transformation."""
    rng = np.random.default_rng(seed)
    rows: dict[str, dict[str, list]] = {name: {} for name in ["original", *TRANSFORMS]}

    def add(name: str, key: str, value: Any) -> None:
        rows[name].setdefault(key, []).append(value)

    for scan in scans:
        reference = point_features(scan)
        add("original", "confidence", reference.frame.confidence)
        add("original", "warnings", len(reference.frame.warnings))
        for check, ok in truth_checks(reference.pos, scan.classes()).items():
            add("original", check, ok)
        jaw, confidence = detect_jaw(scan.vertices, scan.faces)
        add("original", "jaw", (jaw == scan.jaw, confidence))
        original_labels = None
        if segmenter is not None:
            original_labels = segmenter.predict(scan).classes
            add("original", "accuracy", float((original_labels == scan.classes()).mean()))
        for name, (transform, mirrored) in TRANSFORMS.items():
            moved = transform(scan, rng)
            feats = point_features(moved)
            same, facing = agreement(reference, feats, mirrored)
            add(name, "frame", same)
            add(name, "normals", facing)
            add(name, "confidence", feats.frame.confidence)
            add(name, "inward warnings", INWARD_WARNING in feats.frame.warnings)
            add(name, "winding warnings", any("inconsistently" in w for w in feats.frame.warnings))
            add(name, "other warnings", len([w for w in feats.frame.warnings
                                             if w != INWARD_WARNING and "inconsistently" not in w]))
            jaw, confidence = detect_jaw(moved.vertices, moved.faces)
            add(name, "jaw", (jaw == scan.jaw, confidence))
            if segmenter is not None:
                labels = segmenter.predict(moved).classes
                expected = SIDE_SWAP[original_labels] if mirrored else original_labels
                add(name, "labels", float((labels == expected).mean()))
                add(name, "accuracy", float((labels == moved.classes()).mean()))
        if on_scan:
            on_scan(scan.name)
    return {name: _summary(values) for name, values in rows.items()}


def _summary(values: dict[str, list]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, vals in values.items():
        if key == "jaw":
            right = np.array([ok for ok, _ in vals])
            conf = np.array([c for _, c in vals])
            out["jaw_accuracy"] = float(right.mean())
            out["jaw_confidence_min"] = float(conf[right].min()) if right.any() else None
            out["jaw_error_confidences"] = sorted(float(c) for c in conf[~right])
        elif key in ("warnings", "inward warnings", "winding warnings", "other warnings"):
            out[key.replace(" ", "_")] = int(np.sum(vals))
        elif isinstance(vals[0], bool):
            out[key.replace(" ", "_")] = float(np.mean(vals))  # share of jaws that pass
        else:
            out[f"{key}_mean"] = float(np.mean(vals))
            out[f"{key}_min"] = float(np.min(vals))
    return out


def table(record: dict[str, Any]) -> list[str]:
    """Markdown table of a record: one row per transformation."""
    model = "labels_mean" in record["transforms"]["rotated + moved"]
    head = "| transformation | frame agreement | normals agree | frame confidence (min) | warnings | jaw detected |"
    head += " labels agree | vertex accuracy |" if model else ""
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, r in record["transforms"].items():
        frame = "-" if name == "original" else f"{r['frame_mean']:.4f} (min {r['frame_min']:.4f})"
        normals = "-" if name == "original" else f"{r['normals_mean']:.4f} (min {r['normals_min']:.4f})"
        warnings = str(r["warnings"]) if name == "original" else (
            f"{r['inward_warnings']} inward, {r['winding_warnings']} mixed winding, {r['other_warnings']} other")
        errors = ", ".join(f"{c:.2f}" for c in r["jaw_error_confidences"]) or "none"
        jaw = f"{r['jaw_accuracy']:.1%} (least sure right {r['jaw_confidence_min']:.2f}; errors at {errors})"
        row = f"| {name} | {frame} | {normals} | {r['confidence_min']:.2f} | {warnings} | {jaw} |"
        if model:
            labels = "-" if name == "original" else f"{r['labels_mean']:.4f}"
            row += f" {labels} | {r['accuracy_mean']:.4f} |"
        lines.append(row)
    return lines


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from benchmark import DATA, ROOT, command_line, hardware, put_row, repo_path, test_scans

    from geot.io.teeth3ds import find_scans, read_scan

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="run folder, .pt checkpoint or exported bundle")
    parser.add_argument("--data", type=Path, default=DATA, help="labelled real jaws (Teeth3DS layout)")
    parser.add_argument("--limit", type=int, help="only the first N jaws (sorted by name)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random rotations and shifts")
    parser.add_argument("--test-only", action="store_true",
                        help="only the test jaws of the --model run folder (its split.json): a model's accuracy "
                             "on jaws it was trained or chosen on says nothing")
    args = parser.parse_args()

    if args.test_only and (args.model is None or not (args.model / "split.json").is_file()):
        parser.error("--test-only needs --model RUN_FOLDER with a split.json")
    files = sorted(test_scans(args.model, args.data), key=lambda f: f.name) if args.test_only \
        else find_scans(args.data)
    files = files[: args.limit]
    scans = [read_scan(f.mesh, f.labels) for f in files]
    segmenter = None
    if args.model is not None:
        from geot.engine.predict import Segmenter

        segmenter = Segmenter.load(args.model, device="cpu")
    start = time.time()
    transforms = measure(scans, segmenter, args.seed, on_scan=lambda name: print(f"  {name}", end="\r", flush=True))
    model = "none" if args.model is None else repo_path(args.model)
    record = {"model": model, "scans": len(scans), "jaws": "test" if args.test_only else "all",
              "transforms": transforms,
              "seconds_per_scan": step_seconds(scans), "minutes": (time.time() - start) / 60,
              "match_tolerance": MATCH, "seed": args.seed, "data": os.path.relpath(args.data, ROOT),
              "hardware": hardware(), "command": command_line().replace("benchmark.py", "robustness.py").strip(),
              "date": time.strftime("%Y-%m-%d")}
    put_row("robustness", record, key="model")
    print("\n" + "\n".join(table(record)))
    original = record["transforms"]["original"]
    print("true labels agree with the canonical frame: " + ", ".join(
        f"{check} {original[check.replace(' ', '_')]:.0%}" for check in truth_checks(np.zeros((0, 3)), np.zeros(0))))
    print(json.dumps(record["seconds_per_scan"], indent=1))


if __name__ == "__main__":
    main()
