#!/usr/bin/env python
"""Benchmarks on real scans: accuracy per method and label fraction, inference and training speed.

Every table in docs/benchmarks.md comes from a command of this script; results accumulate in
docs/results/*.json (one row per run, with the command, data, hardware and wall time), and
``report`` rewrites the tables and the plot from them.

    python tools/benchmark.py accuracy --methods supervised geot --fractions 0.2 --seeds 0
    python tools/benchmark.py inference
    python tools/benchmark.py training
    python tools/benchmark.py report
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "iosseg-train"
RESULTS = ROOT / "docs" / "results"
RUNS = ROOT / "runs" / "bench"

ABLATIONS = {  # name -> config overrides of the geot method
    "geot": {},
    "geot-no-idtm": {"geot.idtm": False},
    "geot-no-plgr": {"geot.plgr_weight": 0.0},
    "geot-no-clgs": {"geot.clgs_weight": 0.0},
}


def hardware() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} GPU"
    return f"{os.cpu_count()}-core {cpu} CPU, torch {torch.__version__}, {torch.get_num_threads()} threads"


def load_rows(name: str) -> list[dict[str, Any]]:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else []


def save_rows(name: str, rows: list[dict[str, Any]]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(rows, indent=1, sort_keys=True))


def command_line() -> str:
    return "python tools/benchmark.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])


# --- accuracy ----------------------------------------------------------------------------------------

def run_accuracy(args: argparse.Namespace) -> None:
    from geot.config import load_config
    from geot.data.sources import gather_data
    from geot.engine.evaluate import evaluate_folders
    from geot.engine.predict import Segmenter, predict_files
    from geot.engine.train import train
    from geot.io.teeth3ds import find_scans

    rows = load_rows("accuracy")
    by_name = {f.name: f for f in find_scans(args.data)}
    for fraction in args.fractions:
        for method in args.methods:
            for seed in args.seeds:
                variant = method if method in ABLATIONS else None
                base = "geot" if variant else method
                if fraction >= 1.0 and base != "supervised":
                    continue  # with every scan labelled there is nothing to pseudo-label
                name = f"{method}-f{fraction:g}-s{seed}-{Path(args.config).stem}"
                if any(r["name"] == name for r in rows) and not args.force:
                    print(f"skip {name} (in docs/results/accuracy.json; --force reruns)")
                    continue
                overrides = {"semi.method": base, "data.labelled_fraction": fraction, "seed": seed,
                             **(ABLATIONS.get(method, {})), **dict(kv.split("=", 1) for kv in args.set)}
                overrides = {k: json.loads(v) if isinstance(v, str) and v[:1] in "0123456789-[{tf" else v
                             for k, v in overrides.items()}
                cfg = load_config(args.config, overrides)
                t0 = time.time()
                data = gather_data(cfg, args.data)
                out = RUNS / name
                result = train(cfg, data, out, progress=False)
                train_seconds = time.time() - t0
                with tempfile.TemporaryDirectory() as tmp:
                    gt = Path(tmp) / "gt"
                    for scan in data.split.val:
                        files = by_name[scan]
                        target = gt / files.patient
                        target.mkdir(parents=True, exist_ok=True)
                        for source in (files.mesh, files.labels):
                            (target / source.name).symlink_to(source.resolve())
                    segmenter = Segmenter.load(out)
                    predict_files(segmenter, find_scans(gt), out / "val_predictions", ("json",), overwrite=True)
                    report = evaluate_folders(out / "val_predictions", gt, out / "val_evaluation")
                overall = report.summary["overall"]
                row = {"name": name, "method": method, "fraction": fraction, "seed": seed,
                       "config": str(Path(args.config).name), "overrides": overrides,
                       "labelled": len(data.labelled), "unlabelled": len(data.unlabelled), "val": len(data.val),
                       **{k: overall[k] for k in ("miou", "dice", "accuracy", "tsa", "exp_neg_tla", "tir")},
                       "best_val_miou_sampled": result["best_val_miou"], "train_minutes": train_seconds / 60,
                       "minutes": (time.time() - t0) / 60, "hardware": hardware(), "command": command_line(),
                       "date": time.strftime("%Y-%m-%d")}
                rows = [r for r in load_rows("accuracy") if r["name"] != name] + [row]
                save_rows("accuracy", rows)
                print(f"{name}: mIoU {row['miou']:.4f} Dice {row['dice']:.4f} acc {row['accuracy']:.4f} "
                      f"TSA {row['tsa']:.4f} TIR {row['tir']:.4f} ({row['minutes']:.1f} min)", flush=True)


# --- inference speed -----------------------------------------------------------------------------------

_PREDICT_ONE = r"""
import sys, time, json, resource
from pathlib import Path
t0 = time.perf_counter()
from geot.engine.predict import Segmenter, predict_files
from geot.io.teeth3ds import find_scans
seg = Segmenter.load(sys.argv[1], "cpu")
files = find_scans(sys.argv[2])
load = time.perf_counter() - t0
times = []
for i, f in enumerate(files):
    t = time.perf_counter()
    rep = predict_files(seg, [f], Path(sys.argv[3]) / str(i), ("json", "ply"), overwrite=True)
    assert not rep.failed, rep.failed
    times.append(time.perf_counter() - t)
print(json.dumps({"load": load, "times": times, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def upsampled(mesh_path: Path, target: int, out: Path) -> Path:
    """A copy of a real jaw subdivided to about ``target`` vertices (labels not needed for timing)."""
    import numpy as np
    import trimesh

    mesh = trimesh.load(mesh_path, process=False)
    v, f = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    rng = np.random.default_rng(0)
    while len(v) < target:
        # each subdivided face adds about 1.5 vertices; subdivide just enough faces
        need = int((target - len(v)) / 1.5) + 1
        pick = rng.choice(len(f), size=min(len(f), need), replace=False)
        v, f = trimesh.remesh.subdivide(v, f, face_index=pick)
    path = out / f"{mesh_path.stem.split('_')[0]}x{target // 1000}k_{mesh_path.stem.split('_')[1]}.obj"
    path.parent.mkdir(parents=True, exist_ok=True)
    trimesh.Trimesh(v, f, process=False).export(path)
    return path


def run_inference(args: argparse.Namespace) -> None:
    from geot.io.teeth3ds import find_scans

    real = [f.mesh for f in find_scans(args.data)][: args.scans]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sets = {"real (8.2k vertices)": real}
        for target in args.sizes:
            sets[f"upsampled {target // 1000}k"] = [upsampled(m, target, tmp / f"up{target}") for m in real[:3]]
        for label, meshes in sets.items():
            folder = tmp / f"in-{len(rows)}"
            folder.mkdir()
            for m in meshes:
                (folder / m.name).symlink_to(m.resolve())
            out = subprocess.run([sys.executable, "-c", _PREDICT_ONE, str(args.model), str(folder), str(tmp / "out")],
                                 capture_output=True, text=True, check=True, env={**os.environ, **args.env})
            res = json.loads(out.stdout.strip().splitlines()[-1])
            import trimesh

            nverts = statistics.median(len(trimesh.load(m, process=False).vertices) for m in meshes)
            rows.append({"set": label, "vertices": int(nverts), "scans": len(meshes),
                         "median_s": statistics.median(res["times"]), "min_s": min(res["times"]),
                         "peak_mb": res["peak_mb"], "model_load_s": res["load"]})
            print(rows[-1], flush=True)
    record = {"model": str(args.model), "rows": rows, "hardware": hardware(), "command": command_line(),
              "date": time.strftime("%Y-%m-%d"), "note": "end to end: read, features, forward, propagate, write "
              "JSON + PLY; one process, model loaded once"}
    save_rows("inference", [r for r in load_rows("inference") if r.get("command") != record["command"]] + [record])


# --- training speed and profile ----------------------------------------------------------------------

def run_training(args: argparse.Namespace) -> None:
    """Median step time (2 scans, forward + backward + AdamW) and the share of each part, per config.

    The baseline variant is what a user would write without torch-cluster: neighbours by ``cdist`` +
    ``topk`` and farthest point sampling in a Python loop, on the same backbone.
    """
    import torch
    from torch.profiler import ProfilerActivity, profile
    from torch_geometric.data import Batch

    from geot import ops
    from geot.config import load_config
    from geot.data.dataset import ScanDataset, load_prepared, num_input_features
    from geot.io.teeth3ds import find_scans
    from geot.models import build_model, count_parameters

    files = find_scans(args.data)[:8]
    records = []
    for config in args.configs:
        for variant in ("torch-cluster", "baseline"):
            if variant == "torch-cluster" and ops.neighbors._tc is None:
                continue
            os.environ["GEOT_NEIGHBORS"] = "torch" if variant == "baseline" else "auto"
            cfg = load_config(config, {"data.num_points": args.points} if args.points else None)
            if variant == "baseline" and cfg.model.backbone == "point_transformer":
                cfg.model.sampling = "fps"
            scans = [load_prepared(f, cfg.data.align, cfg.data.curvature) for f in files]
            ds = ScanDataset(scans, cfg.data.num_points, cfg.augment.labelled, use_curvature=cfg.data.curvature)
            torch.manual_seed(0)
            model = build_model(cfg.model.backbone, num_input_features(cfg.data.curvature), 17, **cfg.model.kwargs())
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
            walls, parts = [], {"data": 0.0, "forward": 0.0, "backward + step": 0.0}
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for step in range(args.steps + 1):
                    t0 = time.perf_counter()
                    batch = Batch.from_data_list([ds.sample((2 * step + i) % len(ds), (0, 2 * step + i))
                                                  for i in range(2)])
                    t1 = time.perf_counter()
                    with torch.profiler.record_function("geot.forward"):
                        loss = torch.nn.functional.cross_entropy(model(batch.x, batch.pos, batch.batch)[0], batch.y)
                    t2 = time.perf_counter()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    t3 = time.perf_counter()
                    if step:  # the first step warms up allocators and caches
                        walls.append(t3 - t0)
                        for key, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                            parts[key] += dt
            labelled = {e.key: e.cpu_time_total / 1e6 for e in prof.key_averages() if e.key.startswith("geot.")}
            scale = parts["forward"] / max(labelled.get("geot.forward", 1e-9), 1e-9)  # profiler -> wall seconds
            search = labelled.get("geot.neighbours", 0.0) * scale
            sampling = labelled.get("geot.sampling", 0.0) * scale
            total = sum(parts.values())
            share = {"data": parts["data"] / total, "neighbour search": search / total, "sampling": sampling / total,
                     "forward (layers)": (parts["forward"] - search - sampling) / total,
                     "backward + step": parts["backward + step"] / total}
            records.append({"config": Path(config).stem, "backbone": cfg.model.backbone, "variant": variant,
                            "points": cfg.data.num_points, "parameters": count_parameters(model),
                            "median_step_s": statistics.median(walls), "scans_per_s": 2 / statistics.median(walls),
                            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "share": share})
            print(records[-1], flush=True)
    os.environ.pop("GEOT_NEIGHBORS", None)
    save_rows("training", [{"rows": records, "hardware": hardware(), "command": command_line(),
                            "date": time.strftime("%Y-%m-%d"), "steps": args.steps}])


# --- report -----------------------------------------------------------------------------------------------

def run_report(args: argparse.Namespace) -> None:
    """Print the markdown tables (and write the plot) from docs/results/*.json."""
    import numpy as np

    rows = load_rows("accuracy")
    groups: dict[tuple, list] = {}
    for r in rows:
        groups.setdefault((r["method"], r["fraction"], r["config"]), []).append(r)
    print("| method | labelled | config | seeds | tooth mIoU | Dice | accuracy | TSA | exp(-TLA) | TIR | minutes/run |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    def cell(rs: list[dict], key: str) -> str:
        vals = [r[key] for r in rs]
        return f"{np.mean(vals):.3f}" + (f" ± {np.std(vals):.3f}" if len(vals) > 1 else "")

    for (method, fraction, config), rs in sorted(groups.items(), key=lambda kv: (kv[0][2], kv[0][1], kv[0][0])):
        metrics = " | ".join(cell(rs, k) for k in ("miou", "dice", "accuracy", "tsa", "exp_neg_tla", "tir"))
        print(f"| {method} | {fraction:.0%} ({rs[0]['labelled']} scans) | {config} | {len(rs)} | {metrics} | "
              f"{np.mean([r['minutes'] for r in rs]):.0f} |")
    if rows:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        methods = ("supervised", "mean_teacher", "fixmatch", "geot")
        for method in sorted({r["method"] for r in rows if r["method"] in methods}):
            pts = sorted((f, np.mean([r["miou"] for r in rs])) for (m, f, _), rs in groups.items() if m == method)
            full = [np.mean([r["miou"] for r in rs]) for (m, f, _), rs in groups.items()
                    if m == "supervised" and f >= 1]
            if method != "supervised" and full:
                pts.append((1.0, full[0]))
            ax.plot([p[0] * 100 for p in pts], [p[1] for p in pts], marker="o", label=method)
        ax.set_xlabel("labelled patients (%)")
        ax.set_ylabel("tooth mIoU (held-out patients)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(ROOT / "docs" / "miou_vs_fraction.png", metadata={"Software": None})
        print("\nwrote docs/miou_vs_fraction.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    acc = sub.add_parser("accuracy", help="train and evaluate methods on the real scans")
    acc.add_argument("--data", type=Path, default=DATA)
    acc.add_argument("--config", default=str(ROOT / "configs" / "cpu-small.yaml"))
    acc.add_argument("--methods", nargs="+", default=["supervised", "mean_teacher", "fixmatch", "geot"])
    acc.add_argument("--fractions", nargs="+", type=float, default=[0.1, 0.2, 1.0])
    acc.add_argument("--seeds", nargs="+", type=int, default=[0])
    acc.add_argument("--set", nargs="*", default=[], help="extra config overrides key=value")
    acc.add_argument("--force", action="store_true")
    inf = sub.add_parser("inference", help="seconds per scan for geot predict, real and upsampled meshes")
    inf.add_argument("model", type=Path)
    inf.add_argument("--data", type=Path, default=DATA)
    inf.add_argument("--scans", type=int, default=10)
    inf.add_argument("--sizes", nargs="*", type=int, default=[50_000, 100_000, 200_000])
    inf.set_defaults(env={})
    tr = sub.add_parser("training", help="training step time, memory and where the time goes")
    tr.add_argument("--data", type=Path, default=DATA)
    tr.add_argument("--configs", nargs="+", default=[str(ROOT / "configs" / "cpu-small.yaml")])
    tr.add_argument("--points", type=int, default=None)
    tr.add_argument("--steps", type=int, default=5)
    sub.add_parser("report", help="print the tables of docs/benchmarks.md from docs/results")
    args = parser.parse_args()
    if args.what != "report" and not Path(getattr(args, "data", DATA)).is_dir():
        sys.exit(f"{args.data}: real scans not found (see ../shared/data/README)")
    runners = {"accuracy": run_accuracy, "inference": run_inference, "training": run_training, "report": run_report}
    runners[args.what](args)


if __name__ == "__main__":
    main()
