#!/usr/bin/env python
"""Benchmark of the dentition decoder (geot.decode) on the real jaws, with simulated network outputs.

Two tables, printed as Markdown:

* ``speed``: CPU seconds per decode on one core for a real jaw (about 8k vertices) and for the same jaw
  subdivided (about 33k and 130k vertices), per stage of the ablation chain (argmax, + graph cut,
  + instances and numbering, with and without offsets);
* ``quality``: on every real jaw, posteriors simulated from the true labels
  (:func:`geot.decode.simulate.simulate_posteriors`) and offsets = true offsets + Gaussian noise of a
  given share of a tooth width; arch priors estimated on the other half of the patients (two folds).

    OMP_NUM_THREADS=1 python tools/decode_bench.py speed
    OMP_NUM_THREADS=1 python tools/decode_bench.py quality --noise 0.2 0.3 0.5
    OMP_NUM_THREADS=1 python tools/decode_bench.py quality --synthetic 40
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "iosseg-train"

from geot import labels as fdi  # noqa: E402
from geot.data.features import point_features  # noqa: E402
from geot.data.synth import synthetic_scan  # noqa: E402
from geot.decode import DecodeOptions, decode, estimate_priors, instance_quality  # noqa: E402
from geot.decode.graph import vertex_graph  # noqa: E402
from geot.decode.simulate import simulate_offsets, simulate_posteriors  # noqa: E402
from geot.io.scan import Scan  # noqa: E402
from geot.io.teeth3ds import find_scans, read_scan  # noqa: E402
from geot.metrics import challenge_metrics, segmentation_metrics  # noqa: E402

CONFIGS = {  # name -> (stage, with offsets)
    "argmax": ("argmax", False),
    "+ graph cut": ("graphcut", False),
    "+ instances, numbering (no offsets: code pieces)": ("full", False),
    "+ instances, numbering (offsets)": ("full", True),
}


def canonical(scan: Scan) -> tuple[str, str, np.ndarray, np.ndarray, np.ndarray]:
    """Patient, jaw, canonical points, faces, true classes of one scan."""
    return scan.patient, str(scan.jaw), point_features(scan).pos.astype(np.float64), scan.faces, scan.classes()


def load(path: Path) -> tuple[str, str, np.ndarray, np.ndarray, np.ndarray]:
    return canonical(read_scan(path))


def subdivided(points: np.ndarray, faces: np.ndarray, times: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mesh split ``times`` times (each face into four), and the nearest original vertex of each vertex."""
    import trimesh
    from scipy.spatial import cKDTree

    mesh = trimesh.Trimesh(points, faces, process=False)
    for _ in range(times):
        mesh = mesh.subdivide()
    big = np.asarray(mesh.vertices)
    return big, np.asarray(mesh.faces), cKDTree(points).query(big)[1]


def run_speed(args: argparse.Namespace) -> None:
    path = sorted(p.mesh for p in find_scans(args.data))[0]
    _, jaw, points, faces, classes = load(path)
    rng = np.random.default_rng(0)
    probs = simulate_posteriors(points, classes, vertex_graph(points, faces), rng)
    offsets = simulate_offsets(points, classes, 0.3 * 0.19, rng)
    print(f"decoder speed, CPU seconds on one core, median of {args.repeats}: {path.name}, subdivided 0, 1, 2 times "
          "(new vertices take the simulated outputs of their nearest original vertex)\n")
    print("| vertices | " + " | ".join(CONFIGS) + " |")
    print("|---:|" + "---:|" * len(CONFIGS))
    profiles = []
    for times in (0, 1, 2):
        pts, fcs, source = subdivided(points, faces, times)
        big_probs, big_offsets = probs[source], offsets[source] + points[source] - pts  # same target centroids
        cells = []
        for stage, with_offsets in CONFIGS.values():
            seconds = []
            for _ in range(args.repeats):
                start = time.process_time()  # CPU time of this one-threaded process: robust to a busy machine
                decode(big_probs, pts, jaw, fcs, offsets=big_offsets if with_offsets else None,
                       options=DecodeOptions(stage=stage))
                seconds.append(time.process_time() - start)
            cells.append(f"{statistics.median(seconds):.3f} s")
        print(f"| {len(pts):,} | " + " | ".join(cells) + " |", flush=True)
        profiles.append((len(pts), breakdown(big_probs, pts, jaw, fcs, big_offsets)))
    print("\nwhere the full decode with offsets spends its time (cProfile, cumulative CPU seconds):\n")
    print("| vertices | " + " | ".join(STEPS) + " |")
    print("|---:|" + "---:|" * len(STEPS))
    for n, row in profiles:
        print(f"| {n:,} | " + " | ".join(f"{row[s]:.3f} s" for s in STEPS) + " |")


STEPS = {  # step -> functions of geot.decode whose cumulative time it is
    "graph and weights": ("vertex_graph", "unit_normals", "cut_weights", "supervertices"),
    "tooth/gingiva cut": ("graph_cut",),
    "instances": ("offset_instances",),
    "numbering": ("instance_stats", "number_instances"),
    "absorb, table": ("absorb", "_code_instances", "_table"),
}


def breakdown(probs: np.ndarray, points: np.ndarray, jaw: str, faces: np.ndarray, offsets: np.ndarray
              ) -> dict[str, float]:
    """Cumulative CPU seconds of each step of one full decode, from a profile of it."""
    import cProfile
    import pstats

    profile = cProfile.Profile(time.process_time)
    profile.runcall(decode, probs, points, jaw, faces, offsets=offsets)
    stats = pstats.Stats(profile).stats  # (file, line, name) -> (calls, prims, tottime, cumtime, callers)
    cumulative: dict[str, float] = {}
    for (file, _, name), (_, _, _, cum, callers) in stats.items():
        if "geot/decode" in file and not any("geot/decode" in c[0] and c[2] == name for c in callers):
            cumulative[name] = cumulative.get(name, 0.0) + cum
    return {step: sum(cumulative.get(f, 0.0) for f in names) for step, names in STEPS.items()}


def run_quality(args: argparse.Namespace) -> None:
    if args.synthetic:
        scans = [canonical(synthetic_scan(i, seed=args.seed)) for i in range(args.synthetic)]
        source = f"{args.synthetic} synthetic jaws (geot.data.synth, seed {args.seed})"
    else:
        scans = [load(p) for p in sorted(p.mesh for p in find_scans(args.data))[: args.jaws or None]]
        source = f"{len(scans)} real jaws"
    patients = sorted({s[0] for s in scans})
    fold = {p: i % 2 for i, p in enumerate(patients)}
    priors = {(f, jaw): estimate_priors((s[2], s[4]) for s in scans if fold[s[0]] != f and s[1] == jaw)
              for f in (0, 1) for jaw in fdi.JAWS}
    configs = [(name, stage, None) for name, (stage, off) in CONFIGS.items() if not off]
    configs += [(f"+ instances, numbering (offsets, noise {n:g} tooth width)", "full", n) for n in args.noise]
    rows: dict[str, list[dict]] = {name: [] for name, _, _ in configs}
    for patient, jaw, points, faces, classes in scans:
        pri = priors[fold[patient], jaw]
        rng = np.random.default_rng(args.seed)
        probs = simulate_posteriors(points, classes, vertex_graph(points, faces), rng)
        truth = fdi.class_to_fdi(classes, jaw)
        for name, stage, noise in configs:
            offsets = None if noise is None else simulate_offsets(points, classes, noise * pri.tooth_width, rng)
            out = decode(probs, points, jaw, faces, offsets=offsets, priors=pri, options=DecodeOptions(stage=stage))
            row = instance_quality(out.instances, classes)
            row["miou"] = segmentation_metrics(out.classes, classes)["miou"]
            row.update(challenge_metrics(points, truth, classes, fdi.class_to_fdi(out.classes, jaw), out.instances))
            row["all_right"] = int(all(np.mean(out.classes[classes == c] == c) > 0.5 for c in np.unique(classes) if c))
            rows[name].append(row)
    n = len(scans)
    teeth = sum(r["true_teeth"] for r in rows[configs[0][0]])
    print(f"decoder quality on {source} ({teeth} teeth), simulated posteriors (seed {args.seed}), "
          "priors from the other half of the patients\n")
    print("| decoder | tooth mIoU | TSA | exp(-TLA) | TIR | matched | split | merged | missed | jaws all codes right |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, _, _ in configs:
        r = rows[name]
        mean = {k: float(np.nanmean([x[k] for x in r])) for k in ("miou", "tsa", "exp_neg_tla", "tir")}
        total = {k: sum(x[k] for x in r) for k in ("matched", "split", "merged", "missed", "all_right")}
        print(f"| {name} | {mean['miou']:.3f} | {mean['tsa']:.3f} | {mean['exp_neg_tla']:.3f} | {mean['tir']:.3f} "
              f"| {total['matched']} | {total['split']} | {total['merged']} | {total['missed']} "
              f"| {total['all_right']}/{n} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help="Teeth3DS-style folder of labelled jaws")
    sub = parser.add_subparsers(dest="command", required=True)
    speed = sub.add_parser("speed", help="seconds per decode by stage and mesh size")
    speed.add_argument("--repeats", type=int, default=3)
    quality = sub.add_parser("quality", help="decoder quality with simulated network outputs")
    quality.add_argument("--noise", type=float, nargs="+", default=[0.2, 0.3, 0.5],
                         help="offset noise, as a share of the median tooth width")
    quality.add_argument("--jaws", type=int, default=0, help="use the first N jaws only (0: all)")
    quality.add_argument("--seed", type=int, default=0)
    quality.add_argument("--synthetic", type=int, default=0, help="use N synthetic jaws instead of the real ones")
    args = parser.parse_args()
    if not args.data.is_dir() and not getattr(args, "synthetic", 0):
        parser.error(f"{args.data}: no such folder (the real jaws live in ../shared/data/iosseg-train)")
    {"speed": run_speed, "quality": run_quality}[args.command](args)


if __name__ == "__main__":
    main()
