#!/usr/bin/env python
"""Benchmarks on real scans: accuracy per method and label fraction, inference and training speed.

Every table in docs/benchmarks.md comes from a command of this script; results accumulate in
docs/results/*.json (one row per run, with the command, data, hardware and wall time), and
``report`` rewrites the tables and the plot from them.

    python tools/benchmark.py accuracy --methods supervised geot --fractions 0.2 --seeds 0
    python tools/benchmark.py inference
    python tools/benchmark.py startup runs/bench/geot-f0.2-s0-cpu-small
    python tools/benchmark.py training
    python tools/benchmark.py report
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import fcntl
import functools
import itertools
import json
import os
import platform
import re
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "iosseg-train"
RESULTS = ROOT / "docs" / "results"
RUNS = ROOT / "runs" / "bench"

VARIANTS_DIR = ROOT / "configs" / "variants"  # method variants (ablations) as partial configs


def hardware() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} GPU, {os.cpu_count()}-core CPU, torch {torch.__version__}"
    return f"{os.cpu_count()}-core {cpu} CPU, torch {torch.__version__}, {torch.get_num_threads()} threads"


def load_rows(name: str) -> list[dict[str, Any]]:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else []


@contextlib.contextmanager
def rows_locked(name: str):
    """Hold while reading, changing and saving a results file: runs that share a machine finish in any order."""
    with open(Path(tempfile.gettempdir()) / f"geot-bench-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def put_row(name: str, row: dict[str, Any], key: str) -> None:
    """Add ``row`` to results file ``name``, replacing the row with the same ``key`` value (a rerun)."""
    with rows_locked(name):
        save_rows(name, [r for r in load_rows(name) if r.get(key) != row[key]] + [row])


def short_hardware(hardware: str) -> str:
    """'NVIDIA H200 GPU, ...' -> 'H200 GPU'; a CPU description -> '2-core CPU'."""
    first = hardware.split(",")[0]
    return first.removeprefix("NVIDIA ") if "GPU" in first else " ".join(first.split()[:1] + ["CPU"])


def save_rows(name: str, rows: list[dict[str, Any]]) -> None:
    """Atomically: two benchmark processes may finish at nearly the same moment."""
    from geot.io.atomic import atomic_write

    with atomic_write(RESULTS / f"{name}.json", "w") as fh:
        fh.write(json.dumps(rows, indent=1, sort_keys=True))


def command_line() -> str:
    return "python tools/benchmark.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])


# --- accuracy ----------------------------------------------------------------------------------------

def variant_overrides(name: str) -> dict[str, Any]:
    """Config overrides of a method variant: ``configs/variants/<name>.yaml`` when it exists (an ablation such
    as ``geot-no-plgr``), else nothing (a plain method name)."""
    from geot.config import read_variant

    path = VARIANTS_DIR / f"{name}.yaml"
    return read_variant(path) if path.is_file() else {}


def run_accuracy(args: argparse.Namespace) -> None:
    from geot.analysis.diagnosis import logged_column
    from geot.analysis.experiment import run_experiment
    from geot.config import load_config, parse_overrides

    rows = load_rows("accuracy")
    for fraction in args.fractions:
        for method in args.methods:
            for seed in args.seeds:
                variant = variant_overrides(method)
                base = variant.get("semi.method", method)
                if fraction >= 1.0 and base != "supervised":
                    continue  # with every scan labelled there is nothing to pseudo-label
                tag = f"+{args.tag}" if args.tag else ""
                base_name = f"{method}{tag}-f{fraction:g}-s{seed}-{Path(args.config).stem}"
                name = base_name + (f"-rule-{args.rule}" if args.rule else "")
                if any(r["name"] == name for r in rows) and not args.force:
                    print(f"skip {name} (in docs/results/accuracy.json; --force reruns)")
                    continue
                overrides = {"semi.method": base, "data.labelled_fraction": fraction, "seed": seed,
                             **variant, **parse_overrides(args.set)}
                cfg = load_config(args.config, overrides)
                # --resume continues an interrupted run of the same config (and the same code!)
                exp = run_experiment(cfg, args.data, RUNS / base_name, resume=args.resume, rule=args.rule)
                train_seconds = exp.train_seconds
                if exp.resumed:  # the wall time of an interrupted run is the sum of its logged epochs
                    train_seconds = sum(logged_column(RUNS / base_name / "log.csv", "seconds"))
                overall = exp.report.summary["overall"]
                data = exp.data
                row = {"name": name, "method": method + tag + (f" (rule {args.rule})" if args.rule else ""),
                       "fraction": fraction, "seed": seed,
                       "config": str(Path(args.config).name), "overrides": overrides,
                       "labelled": len(data.labelled), "unlabelled": len(data.unlabelled), "val": len(data.val),
                       "test": len(data.split.test), "scored_on": "test",
                       **{k: overall[k] for k in ("miou", "dice", "accuracy", "tsa", "exp_neg_tla", "tir")},
                       "best_val_miou_sampled": exp.result["best_val_miou"], "train_minutes": train_seconds / 60,
                       "epochs": load_run_config(RUNS / base_name)["optim"]["epochs"], "threads": torch_threads(),
                       "minutes": (train_seconds + exp.evaluate_seconds) / 60, "resumed": exp.resumed,
                       "hardware": hardware(),
                       "command": command_line(),
                       "date": time.strftime("%Y-%m-%d")}
                put_row("accuracy", row, key="name")
                print(f"{name}: mIoU {row['miou']:.4f} Dice {row['dice']:.4f} acc {row['accuracy']:.4f} "
                      f"TSA {row['tsa']:.4f} TIR {row['tir']:.4f} ({row['minutes']:.1f} min)", flush=True)


# --- training levers (chosen on validation jaws) --------------------------------------------------------

def run_levers(args: argparse.Namespace) -> None:
    """Train one recipe and record its validation curve: val tooth mIoU against steps, wall and CPU time.

    Choices of recipe are made here, on the validation patients only; the test patients are not scored.
    """
    from geot.analysis.diagnosis import logged_column
    from geot.config import load_config, parse_overrides
    from geot.data.sources import gather_data
    from geot.engine.train import train

    overrides = {"semi.method": args.method, "data.labelled_fraction": args.fraction, "seed": args.seed,
                 **parse_overrides(args.set)}
    cfg = load_config(args.config, overrides)
    name = f"lever-{args.name}-{args.method}-f{args.fraction:g}-s{args.seed}-{Path(args.config).stem}"
    out = RUNS / name
    if not args.record:
        resume = args.resume and (out / "checkpoints" / "last.pt").is_file()
        train(cfg, gather_data(cfg, args.data), out, progress=False, resume=resume, overwrite=not resume)
    log = out / "log.csv"
    epochs, val = logged_column(log, "epoch"), {}
    with log.open() as f:
        rows = list(csv.DictReader(f))
    cpu = itertools.accumulate(float(r.get("cpu_seconds") or 0) for r in rows)
    wall = itertools.accumulate(float(r["seconds"]) for r in rows)
    for r, c, w in zip(rows, cpu, wall, strict=True):
        if r.get("val_miou"):
            val[int(r["epoch"])] = {"val_miou": float(r["val_miou"]), "cpu_minutes": c / 60, "wall_minutes": w / 60}
    record = {"name": args.name, "run": name, "method": args.method, "fraction": args.fraction, "seed": args.seed,
              "config": Path(args.config).name, "overrides": overrides, "epochs": len(epochs),
              "stopped_early": len(epochs) < cfg.optim.epochs,
              "steps": len(epochs) * cfg.optim.steps_per_epoch, "curve": val,
              "best_val_miou": max(v["val_miou"] for v in val.values()) if val else None,
              "final_val_miou": val[max(val)]["val_miou"] if val else None,
              "threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or None,
              "hardware": hardware(), "command": command_line(), "date": time.strftime("%Y-%m-%d")}
    put_row("levers", record, key="run")
    print(json.dumps({k: v for k, v in record.items() if k != "curve"}), flush=True)


# --- time to accuracy: a run's snapshots scored on its test patients -------------------------------------

def run_curve(args: argparse.Namespace) -> None:
    """Score every weight snapshot of a run (``snapshot_every``) on the run's test patients, through the whole
    prediction pipeline (decoder stage ``--decode``), against the training time spent to reach it."""
    from geot.analysis.diagnosis import logged_column
    from geot.analysis.experiment import score_scans
    from geot.engine.predict import Segmenter

    test = test_scans(args.run, args.data)
    seconds = list(itertools.accumulate(logged_column(args.run / "log.csv", "seconds")))
    cpu = list(itertools.accumulate(logged_column(args.run / "log.csv", "cpu_seconds")))
    points = []
    snapshots = sorted((args.run / "checkpoints" / "snapshots").glob("epoch*.pt"), key=snapshot_epoch)
    for snapshot in chosen_snapshots(snapshots, args.stride, args.epochs):
        epoch = snapshot_epoch(snapshot)
        out = args.run / "curve" / f"{snapshot.stem}-{args.decode}"
        report = score_scans(Segmenter.load(snapshot, device="cpu", decode=args.decode), test, out / "predictions",
                             out / "evaluation")
        overall = report.summary["overall"]
        points.append({"epoch": epoch, "wall_minutes": seconds[epoch - 1] / 60,
                       "cpu_minutes": cpu[epoch - 1] / 60 if len(cpu) >= epoch else None,
                       **{k: overall[k] for k in ("miou", "dice", "tsa", "exp_neg_tla", "tir")},
                       "jaws_with_duplicated_code": report.summary["jaws_with_duplicated_code"]})
        print(json.dumps(points[-1]), flush=True)
    cfg = load_run_config(args.run)
    record = {"key": f"{args.run.name}|{args.decode}", "run": args.run.name, "decode": args.decode,
              "method": cfg["semi"]["method"], "fraction": cfg["data"]["labelled_fraction"], "seed": cfg["seed"],
              "points": points, "test_scans": len(test), "hardware": hardware(), "command": command_line(),
              "date": time.strftime("%Y-%m-%d")}
    put_row("curves", record, key="key")


def snapshot_epoch(path: Path) -> int:
    return int(path.stem.removeprefix("epoch"))


def chosen_snapshots(snapshots: list[Path], stride: int, epochs: Sequence[int] = ()) -> list[Path]:
    """Every ``stride``-th snapshot counted back from the last (so the last is always scored), plus those of
    ``epochs`` (the settings table compares runs at ``EQUAL_EPOCH``, which a stride may step over), in order."""
    asked = set(epochs)
    kept = set(snapshots[::-1][::stride]) | {s for s in snapshots if snapshot_epoch(s) in asked}
    return [s for s in snapshots if s in kept]


def test_scans(run: Path, data: Path) -> list[Any]:
    """The run's test jaws (named in its ``split.json``), as found in ``data``, in the split's order."""
    from geot.io.teeth3ds import find_scans

    by_name = {f.name: f for f in find_scans(data)}
    return [by_name[n] for n in json.loads((run / "split.json").read_text())["test"]]


def repo_path(path: Path) -> str:
    """``path`` relative to the checkout when it lies inside it (the form result rows keep), else as given."""
    full = path.resolve()
    return str(full.relative_to(ROOT)) if full.is_relative_to(ROOT) else str(path)


def load_run_config(run: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load((run / "config.yaml").read_text())


# --- the dentition decoder, stage by stage -------------------------------------------------------------

def run_decoding(args: argparse.Namespace) -> None:
    """From one checkpoint, the test patients scored after each decoder stage (none = one sample + argmax,
    argmax = full resolution, graphcut, full = instances numbered along the arch), with instance quality
    and seconds per scan on real jaws and on meshes upsampled to ``--sizes`` vertices."""
    import numpy as np

    from geot.analysis.experiment import score_scans
    from geot.decode import instance_quality
    from geot.engine.predict import Segmenter
    from geot.io.teeth3ds import read_scan

    test = test_scans(args.run, args.data)
    timed = test[: args.timed]
    with tempfile.TemporaryDirectory() as tmp:
        big = [upsampled(test[0].mesh, size, Path(tmp) / f"up{size}") for size in args.sizes]
        for stage in args.stages:
            segmenter = Segmenter.load(args.run, device="cpu", decode=stage)
            segmenter.views = args.views
            stage_name = stage + (f"+tta{args.views}" if args.views > 1 else "")
            out = args.run / f"decoding-{stage_name}"
            report = score_scans(segmenter, test, out / "predictions", out / "evaluation")
            quality: dict[str, int] = {}
            for entry in test:
                truth = read_scan(entry.mesh, entry.labels)
                pred = json.loads((out / "predictions" / f"{entry.name}.json").read_text())
                for key, value in instance_quality(np.array(pred["instances"]), truth.instances).items():
                    quality[key] = quality.get(key, 0) + value
            seconds = []
            for entry in timed:
                scan = read_scan(entry.mesh, labels=False)
                t = time.perf_counter()
                segmenter.predict(scan)
                seconds.append(time.perf_counter() - t)
            large = {}
            for path in big:
                scan = read_scan(path, labels=False, jaw=test[0].jaw)
                t = time.perf_counter()
                segmenter.predict(scan)
                large[str(scan.num_vertices)] = time.perf_counter() - t
            overall = report.summary["overall"]
            row = {"run": repo_path(args.run),
                   "stage": stage_name, "test_scans": len(test),
                   **{k: overall[k] for k in ("miou", "dice", "accuracy", "tsa", "exp_neg_tla", "tir")},
                   "jaws_with_duplicated_code": report.summary["jaws_with_duplicated_code"],
                   "jaws_with_missing_tooth": report.summary["jaws_with_missing_tooth"],
                   "instances": quality, "median_s_per_scan": statistics.median(seconds),
                   "s_large_mesh": large, "threads": torch_threads(),
                   "hardware": hardware(), "command": command_line(), "date": time.strftime("%Y-%m-%d")}
            row["key"] = f"{row['run']}|{stage_name}"
            put_row("decoding", row, key="key")
            print(json.dumps({k: v for k, v in row.items() if k not in ("command", "hardware")}), flush=True)


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


# --- inference speed -----------------------------------------------------------------------------------

_PREDICT_ONE = r"""
import sys, time, json, resource
from pathlib import Path
t0 = time.perf_counter()
from geot.engine.predict import Segmenter, predict_files
from geot.io.teeth3ds import find_scans
seg = Segmenter.load(sys.argv[1], sys.argv[4])
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
        # a subdivided face adds up to 3 vertices (fewer when its neighbours are subdivided too)
        need = int((target - len(v)) / 3) + 1
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
            cmd = [sys.executable, "-c", _PREDICT_ONE, str(args.model), str(folder), str(tmp / "out"), args.device]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, **args.env})
            res = json.loads(out.stdout.strip().splitlines()[-1])
            import trimesh

            nverts = statistics.median(len(trimesh.load(m, process=False).vertices) for m in meshes)
            rows.append({"set": label, "vertices": int(nverts), "scans": len(meshes),
                         "median_s": statistics.median(res["times"]), "min_s": min(res["times"]),
                         "peak_mb": res["peak_mb"], "model_load_s": res["load"]})
            print(rows[-1], flush=True)
    record = {"model": str(args.model), "rows": rows, "hardware": hardware(), "device": args.device,
              "command": command_line(),
              "date": time.strftime("%Y-%m-%d"), "note": "end to end: read, features, forward, propagate, write "
              "JSON + PLY; one process, model loaded once"}
    put_row("inference", record, key="command")


# --- start-up: one scan, one fresh process ----------------------------------------------------------------

HEAVY = ("torch_geometric", "torch._dynamo", "trimesh", "matplotlib")  # modules predicting should not load
_HEAVY_CHECK = f"""
import json, sys
import geot.engine.predict
print(json.dumps({{"geot": geot.__file__, "heavy": [name for name in {HEAVY!r} if name in sys.modules]}}))
"""


def timed(cmd: list[str], env: dict[str, str], cwd: str | None = None) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + sys of the child) and stdout of one run of ``cmd``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{shlex.join(cmd)} failed:\n{done.stdout}{done.stderr}")
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, done.stdout


def run_startup(args: argparse.Namespace) -> None:
    """``geot predict MODEL scan`` (default outputs: JSON and PLY) in a fresh process, and
    ``import geot.engine.predict`` alone.

    Each tree (a checkout: ``before=/path/to/base``) is timed with its own geot on the path; the runs of the
    trees alternate, so a machine whose load drifts during the sitting treats them alike.
    """
    from geot.io.mesh import read_mesh

    scan = (args.scan or sorted(args.data.glob("*/*.obj"))[0]).resolve()
    trees = dict(t.split("=", 1) for t in args.trees) if args.trees else {"this checkout": str(ROOT)}
    extra = dict(e.split("=", 1) for e in args.env)
    samples: dict[str, dict[str, list[float]]] = {label: {} for label in [*trees, "import torch (floor)"]}
    loaded: dict[str, list[str]] = {}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for label, tree in trees.items():
                tree = str(Path(tree).resolve())  # run from the tree too: the working folder comes first on the path
                env = {**os.environ, **extra, "PYTHONPATH": tree}
                predict = [sys.executable, "-m", "geot", "predict", str(args.model.resolve()), str(scan), "--out",
                           str(Path(tmp) / label), "--overwrite", "--device", "cpu"]  # default outputs
                for kind, cmd in (("predict", predict), ("import", [sys.executable, "-c", _HEAVY_CHECK])):
                    wall, cpu, out = timed(cmd, env, cwd=tree)
                    samples[label].setdefault(f"{kind}_wall_s", []).append(wall)
                    samples[label].setdefault(f"{kind}_cpu_s", []).append(cpu)
                    if kind == "import":
                        found = json.loads(out.strip().splitlines()[-1])
                        if not found["geot"].startswith(tree + os.sep):
                            raise SystemExit(f"{label}: timed {found['geot']}, not the geot of {tree}")
                        loaded[label] = found["heavy"]
            wall, cpu, _ = timed([sys.executable, "-c", "import torch"], {**os.environ, **extra})
            samples["import torch (floor)"].setdefault("import_wall_s", []).append(wall)
            samples["import torch (floor)"].setdefault("import_cpu_s", []).append(cpu)
    rows = []
    for label, series in samples.items():
        row = {"tree": label, "path": trees.get(label), "heavy_imports": loaded.get(label), "samples": series,
               **{key: statistics.median(values) for key, values in series.items()}}
        if label in trees:
            row["commit"] = subprocess.run(["git", "-C", trees[label], "describe", "--always", "--dirty"],
                                           capture_output=True, text=True).stdout.strip() or None
        rows.append(row)
    kind = "bundle" if (args.model / "model.safetensors").is_file() else "run folder" if args.model.is_dir() \
        else "checkpoint"
    record = {"model": str(args.model), "model_kind": kind, "scan": str(scan),
              "vertices": len(read_mesh(scan).vertices), "heavy_checked": list(HEAVY),
              "repeats": args.repeats, "env": extra,
              "threads": {**os.environ, **extra}.get("OMP_NUM_THREADS", "default"),
              "load_average": [load_before, os.getloadavg()[0]], "rows": rows, "hardware": hardware(),
              "command": command_line(), "date": time.strftime("%Y-%m-%d %H:%M")}
    print("\n".join(startup_table([record])))
    put_row("startup", record, key="command")


# --- training speed and profile ----------------------------------------------------------------------

VARIANTS = ("torch-cluster", "torch-cluster + scatter", "torch", "baseline")


def run_training(args: argparse.Namespace) -> None:
    """Step time (2 scans, forward + backward + AdamW), peak memory and where the time goes, per config.

    Each (config, variant) runs in a fresh process, so peak memory is its own. The step time is the
    median of ``--steps`` unprofiled steps; the shares come from a separate profiled pass. The baseline
    variant is what a user would write without torch-cluster: neighbours by ``cdist`` + ``topk``,
    farthest point sampling in a Python loop and PyG's scatter-based attention, on the same backbone;
    the torch-cluster + scatter variant has torch-cluster but PyG's scatters, to show each fix's share;
    ``torch`` is geot without torch-cluster (its pure-torch neighbours, dense layers, the config's sampling).
    The variants with torch-cluster are left out where it is not installed. On a GPU the shares come from
    synchronising at the end of each phase, so they include the GPU's time.
    """
    from geot import ops

    records = []
    for config in args.configs:
        for variant in VARIANTS:
            if variant.startswith("torch-cluster") and ops.neighbors._tc is None:
                continue
            env = {**os.environ, "GEOT_NEIGHBORS": "auto" if variant.startswith("torch-cluster") else "torch",
                   "GEOT_DENSE": "0" if variant in ("torch-cluster + scatter", "baseline") else "1"}
            cmd = [sys.executable, __file__, "training-one", config, variant, "--steps", str(args.steps),
                   "--data", str(args.data), "--device", args.device, "--set", *args.set] \
                + (["--points", str(args.points)] if args.points else [])
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            records.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(records[-1], flush=True)
    record = {"rows": records, "hardware": hardware(), "command": command_line(),
              "date": time.strftime("%Y-%m-%d"), "steps": args.steps}
    put_row("training", record, key="hardware")  # the latest record per machine


def run_training_one(args: argparse.Namespace) -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function
    from torch_geometric.data import Batch

    from geot.config import load_config, parse_overrides
    from geot.data.dataset import ScanDataset, load_prepared
    from geot.engine.inference import resolve_device
    from geot.io.teeth3ds import find_scans
    from geot.models import build_model, count_parameters

    cfg = load_config(args.config, {**parse_overrides(args.set),
                                    **({"data.num_points": args.points} if args.points else {})})
    device = resolve_device(args.device)
    if args.variant == "baseline" and cfg.model.name == "point_transformer":
        cfg.model.args["sampling"] = "fps"
    scans = [load_prepared(f, cfg.data.align, cfg.data.curvature) for f in find_scans(args.data)[:8]]
    ds = ScanDataset(scans, cfg.data.num_points, cfg.augment.labelled, use_curvature=cfg.data.curvature)
    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)  # GPU work is asynchronous

    def step(k: int) -> None:
        with record_function("geot.data"):
            batch = Batch.from_data_list([ds.sample((2 * k + i) % len(ds), (0, 2 * k + i))
                                          for i in range(2)]).to(device)
            sync()
        with record_function("geot.forward"):
            loss = torch.nn.functional.cross_entropy(model(batch.x, batch.pos, batch.batch).logits, batch.y)
            sync()
        with record_function("geot.backward"):
            opt.zero_grad()
            loss.backward()
            opt.step()
            sync()

    step(0)  # warm-up: allocators, caches
    walls = []
    for k in range(1, args.steps + 1):
        t = time.perf_counter()
        step(k)
        walls.append(time.perf_counter() - t)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for k in range(args.steps + 1, args.steps + 3):
            step(k)
    t = {e.key: e.cpu_time_total for e in prof.key_averages() if e.key.startswith("geot.")}
    total = t["geot.data"] + t["geot.forward"] + t["geot.backward"]
    search, sampling = t.get("geot.neighbours", 0.0), t.get("geot.sampling", 0.0)
    share = {"data": t["geot.data"] / total, "neighbour search": search / total, "sampling": sampling / total,
             "forward (layers)": (t["geot.forward"] - search - sampling) / total,
             "backward + step": t["geot.backward"] / total}
    gpu_mb = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    print(json.dumps({"config": Path(args.config).stem, "backbone": cfg.model.name, "variant": args.variant,
                      "points": cfg.data.num_points, "parameters": count_parameters(model),
                      "median_step_s": statistics.median(walls), "scans_per_s": 2 / statistics.median(walls),
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "peak_gpu_mb": gpu_mb, "device": device.type, "sampling": cfg.model.args.get("sampling"),
                      "share": share}))


# --- method step -------------------------------------------------------------------------------------------

def run_method_step(args: argparse.Namespace) -> None:
    """CPU seconds of a training step, supervised (warm-up) and semi-supervised, per method variant.

    What a time budget buys depends on it: a semi-supervised step adds the unlabelled scans' student pass, the
    teacher's pass and the method's own terms. Each variant trains in a temporary run folder on the real
    scans' split, one untimed epoch of each kind first; the timed epochs are ``--steps`` steps each.
    """
    import tempfile

    from geot.config import load_config, parse_overrides
    from geot.data.sources import gather_data
    from geot.engine.train import Trainer

    rows = []
    for variant in args.variants:
        overrides = {**variant_overrides(variant), **parse_overrides(args.set), "optim.steps_per_epoch": args.steps}
        overrides.setdefault("semi.method", variant)
        cfg = load_config(args.config, overrides)
        data = gather_data(cfg, args.data, None, None, None)
        with tempfile.TemporaryDirectory() as tmp:
            trainer = Trainer(cfg, data, Path(tmp), progress=False)
            cpu = {}
            for phase, epoch in (("supervised", 0), ("semi-supervised", cfg.semi.warmup_epochs)):
                trainer.run_epoch(epoch)  # untimed: allocators, caches, the teacher's first pass
                start = time.process_time()
                trainer.run_epoch(epoch)
                cpu[phase] = (time.process_time() - start) / args.steps
        rows.append({"variant": variant, "overrides": overrides, "supervised_cpu_s": cpu["supervised"],
                     "semi_cpu_s": cpu["semi-supervised"]})
        print(rows[-1], flush=True)
    record = {"rows": rows, "hardware": hardware(), "threads": torch_threads(), "config": Path(args.config).name,
              "command": command_line(), "date": time.strftime("%Y-%m-%d"), "steps": args.steps}
    put_row("method_step", record, key="command")  # one record per measuring run; a rerun replaces its own


def method_step_table(records: list[dict[str, Any]]) -> list[str]:
    """Step costs by variant, one block of rows per measuring run: the machine's load differs between runs, so
    seconds compare within a run (its number) and ratios to the supervised step across runs."""
    lines = ["| run | hardware | config | variant | supervised step, CPU s | semi-supervised step, CPU s | ratio |",
             "|---|---|---|---|---|---|---|"]
    for i, record in enumerate(records, 1):
        for r in record["rows"]:
            lines.append(f"| {i} ({record['date']}) | {short_hardware(record['hardware'])}, {record['threads']} "
                         f"thread(s) | {record['config']} | {r['variant']} | {r['supervised_cpu_s']:.2f} | "
                         f"{r['semi_cpu_s']:.2f} | {r['semi_cpu_s'] / r['supervised_cpu_s']:.1f}x |")
    return lines


# --- diagnosis -------------------------------------------------------------------------------------------

def run_diagnose(args: argparse.Namespace) -> None:
    """Pseudo-label quality of a run's teacher on its unlabelled scans (geot.analysis.diagnosis)."""
    from geot.analysis.diagnosis import diagnose

    report = diagnose(args.run, args.data, args.threshold, args.views)
    report["run"] = repo_path(args.run)
    report.update(command=command_line(), hardware=hardware(), date=time.strftime("%Y-%m-%d"))
    put_row("diagnosis", report, key="run")
    print(json.dumps(report, indent=1))


# --- report -----------------------------------------------------------------------------------------------

def mean_std(values: list[float]) -> str:
    """``mean ± sample standard deviation`` of seeds' values (the mean alone for one seed)."""
    import numpy as np

    return f"{np.mean(values):.3f}" + (f" ± {np.std(values, ddof=1):.3f}" if len(values) > 1 else "")


def seed_groups(rows: list[dict[str, Any]]) -> dict[tuple[str, float, str], list[dict[str, Any]]]:
    """Accuracy rows by (method, label fraction, config): the seeds of one recipe, averaged in a table row."""
    groups: dict[tuple[str, float, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["fraction"], r["config"]), []).append(r)
    return groups


def accuracy_table(rows: list[dict[str, Any]]) -> list[str]:
    import numpy as np

    groups = seed_groups(rows)

    lines = ["| method | labelled | config | epochs | seeds | tooth mIoU | Dice | accuracy | TSA | exp(-TLA) | TIR "
             "| minutes/run |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    order = {m: i for i, m in enumerate(("supervised", "mean_teacher", "fixmatch", "geot"))}
    for (method, fraction, config), rs in sorted(
            groups.items(), key=lambda kv: (kv[0][2], -kv[0][1], order.get(kv[0][0], 9), kv[0][0])):
        metrics = " | ".join(mean_std([r[k] for r in rs]) for k in ("miou", "dice", "accuracy", "tsa", "exp_neg_tla",
                                                                      "tir"))
        minutes = f"{np.mean([r['minutes'] for r in rs]):.0f}" + (" (resumed)" if any(r.get("resumed") for r in rs)
                                                                   else "")
        if "GPU" in rs[0].get("hardware", ""):
            minutes += f", {short_hardware(rs[0]['hardware'])}"
        elif rs[0].get("threads") == 1:
            minutes += ", 1 thread"
        lines.append(f"| {method} | {fraction:.0%} ({rs[0]['labelled']} scans) | {config} | "
                     f"{epochs_cell(*rs)} | {len(rs)} | {metrics} | "
                     f"{minutes} |")
    return lines


def inference_table(runs: list[dict[str, Any]]) -> list[str]:
    lines = ["| hardware | scans | vertices | median s/scan | min s/scan | peak RSS (MB) | model load (s) |",
             "|---|---|---|---|---|---|---|"]
    latest = {(run["hardware"], run.get("device", "cpu")): run for run in runs}  # the last run per machine
    for (hardware, device), run in latest.items():
        where = f"{short_hardware(hardware)}{' (model on the GPU)' if device != 'cpu' else ''}"
        for r in run["rows"]:
            lines.append(f"| {where} | {r['set']} ({r['scans']}) | {r['vertices']:,} | {r['median_s']:.2f} | "
                         f"{r['min_s']:.2f} | {r['peak_mb']:.0f} | {r['model_load_s']:.1f} |")
    return lines


def startup_table(runs: list[dict[str, Any]]) -> list[str]:
    lines = ["| hardware | environment | model | tree | geot predict: median wall (s) | min wall (s) | median CPU "
             "user+sys (s) | import geot.engine.predict: median wall (s) | median CPU (s) | heavy modules imported "
             "| load avg |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    latest = {(run["hardware"], json.dumps(run["env"], sort_keys=True), run.get("model")): run
              for run in runs}  # the last sitting of each machine, environment and model
    for run in latest.values():
        env = " ".join(f"{k}={v}" for k, v in sorted(run["env"].items())) or "defaults"
        load = "-".join(f"{x:.1f}" for x in run["load_average"])
        for r in run["rows"]:
            predict = (f"{r['predict_wall_s']:.2f} | {min(r['samples']['predict_wall_s']):.2f} | "
                       f"{r['predict_cpu_s']:.2f}" if "predict_wall_s" in r else "- | - | -")
            heavy = "-" if r["heavy_imports"] is None else ", ".join(r["heavy_imports"]) or "none"
            if r["heavy_imports"] is not None and "heavy_checked" not in run:  # sittings before trimesh was checked
                heavy += " (PyG, dynamo checked)"
            model = run.get("model_kind", "run folder")  # sittings before 2026-12-03 10:00 all timed run folders
            lines.append(f"| {short_hardware(run['hardware'])} | {env} | {model} | {r['tree']} | {predict} | "
                         f"{r['import_wall_s']:.2f} | {r['import_cpu_s']:.2f} | {heavy} | {load} |")
    return lines


def training_table(runs: list[dict[str, Any]]) -> list[str]:
    parts = ("data", "neighbour search", "sampling", "forward (layers)", "backward + step")
    lines = ["| hardware | config | points | parameters | variant | median s/step | scans/s | peak RSS (MB) | "
             "peak GPU (MB) | " + " | ".join(parts) + " |", "|---" * (9 + len(parts)) + "|"]
    latest = {run["hardware"]: run for run in runs}  # one record per machine, the last one written
    for run in latest.values():
        base = {r["config"]: r["median_step_s"] for r in run["rows"] if r["variant"] == "baseline"}
        for r in run["rows"]:
            speed = f" ({base[r['config']] / r['median_step_s']:.2f}x)" if r["variant"] != "baseline" \
                and r["config"] in base else ""
            gpu = f"{r['peak_gpu_mb']:.0f}" if r.get("peak_gpu_mb") is not None else "-"
            variant = r["variant"] + (f", {r['sampling']} sampling" if "sampling" in r else "")
            lines.append(f"| {short_hardware(run['hardware'])} | {r['config']} | {r['points']:,} | "
                         f"{r['parameters'] / 1e6:.2f}M | {variant} | {r['median_step_s']:.3f}{speed} | "
                         f"{r['scans_per_s']:.2f} | {r['peak_rss_mb']:.0f} | {gpu} | "
                         + " | ".join(f"{r['share'][p]:.0%}" for p in parts) + " |")
    return lines


MAIN_METHODS = ("supervised", "mean_teacher", "fixmatch", "geot")
RUN_KEYS = {"semi.method", "data.labelled_fraction", "seed", "optim.epochs"}


@functools.cache
def config_epochs(config: str) -> int:
    """Epochs a committed config trains for (read once per config, not once per row)."""
    from geot.config import load_config

    return load_config(ROOT / "configs" / config).optim.epochs


def row_epochs(row: dict[str, Any]) -> int:
    """Training epochs of one result row: as trained (a time budget settles them), else the config's unless
    overridden."""
    return int(row.get("epochs") or row["overrides"].get("optim.epochs", config_epochs(row["config"])))


def epochs_cell(*rows: dict[str, Any]) -> str:
    """The epochs of one or more runs of a row: a range when a time budget settled them differently."""
    low, high = min(map(row_epochs, rows)), max(map(row_epochs, rows))
    epochs = str(low) if low == high else f"{low}-{high}"
    budget = rows[0]["overrides"].get("optim.minutes")
    return f"{epochs} ({budget:g} min budget)" if budget else epochs


def accuracy_series(rows: list[dict[str, Any]]) -> dict[tuple[str, int], dict[float, list[float]]]:
    """mIoU per labelled fraction for each main method and training length of ``cpu-small``; ablations,
    modules and other configs stay out.

    Every method's 100% point is supervised training of the same length: with every scan labelled there is
    nothing to pseudo-label.
    """
    series: dict[tuple[str, int], dict[float, list[float]]] = {}
    for r in rows:
        base = r["method"].split("+")[0]
        if base in MAIN_METHODS and set(r["overrides"]) <= RUN_KEYS and r["config"] == "cpu-small.yaml":
            series.setdefault((base, row_epochs(r)), {}).setdefault(r["fraction"], []).append(r["miou"])
    for (method, epochs), points in series.items():
        full = series.get(("supervised", epochs), {}).get(1.0)
        if method != "supervised" and full:
            points.setdefault(1.0, full)
    return {key: dict(sorted(points.items())) for key, points in series.items()}


def target_reference(rows: list[dict[str, Any]]) -> tuple[int, float] | None:
    """(epochs, mean mIoU) of the longest-trained fully supervised run: the reference the target is set against."""
    full = [(epochs, points[1.0]) for (method, epochs), points in accuracy_series(rows).items()
            if method == "supervised" and 1.0 in points]
    if not full:
        return None
    epochs, values = max(full)
    return epochs, statistics.fmean(values)


def plot_accuracy(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = accuracy_series(rows)
    lengths = sorted({epochs for _, epochs in series})  # one marker and line style per training length
    styles = dict(zip(lengths, itertools.cycle([("o", "-"), ("s", ":"), ("^", "-."), ("D", (0, (1, 3)))])))
    colours = dict(zip(MAIN_METHODS, ("C0", "C1", "C2", "C3"), strict=True))
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    for (method, epochs), points in sorted(series.items(), key=lambda kv: (kv[0][1], MAIN_METHODS.index(kv[0][0]))):
        marker, line = styles[epochs]
        ax.errorbar([f * 100 for f in points], [np.mean(v) for v in points.values()],
                    yerr=[np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in points.values()],
                    color=colours[method], capsize=3, marker=marker, linestyle=line, label=f"{method}, {epochs} epochs")
    reference = target_reference(rows)
    if reference:  # the project's target: 98% of fully supervised mIoU
        ax.axhline(0.98 * reference[1], color="grey", linestyle="--", linewidth=1,
                   label=f"98% of supervised 100%, {reference[0]} epochs")
    values = [v for points in series.values() for vs in points.values() for v in vs]
    ax.set_ylim(np.floor((min(values) - 0.05) * 10) / 10, np.ceil((max(values) + 0.02) * 10) / 10)
    ax.set_xlabel("labelled patients (%)")
    ax.set_ylabel("tooth mIoU, held-out patients")
    ax.set_title("cpu-small on 108 real jaws (2-core CPU)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})


def replace_block(text: str, name: str, lines: list[str]) -> str:
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    if begin not in text:
        raise SystemExit(f"docs/benchmarks.md: no {begin} marker")
    head, rest = text.split(begin, 1)
    return head + begin + "\n" + "\n".join(lines) + "\n" + end + rest.split(end, 1)[1]


def versus(rows: list[dict[str, Any]], base: list[dict[str, Any]]) -> str:
    """Difference of mean test mIoU to another row, and in units of the larger of the two rows' seed standard
    deviations (the yardstick of issue 16: "by more than two standard deviations of seeds")."""
    import numpy as np

    if not base or rows is base:
        return "-"
    diff = np.mean([r["miou"] for r in rows]) - np.mean([r["miou"] for r in base])
    if min(len(rows), len(base)) < 2:
        return f"{diff:+.3f}"
    sd = max(np.std([r["miou"] for r in rs], ddof=1) for rs in (rows, base))
    return f"{diff:+.3f} ({diff / sd:+.1f} sd)"


def paired(rows: list[dict[str, Any]], base: list[dict[str, Any]]) -> str:
    """Mean ± sd of the per-seed differences of test mIoU to another row, over the seeds both have, and how many.

    Runs of one seed share the split and the initialisation; geot and its variants also share their supervised
    warm-up (its epochs log the same losses). A per-seed difference leaves out the spread those cause, which
    the unpaired column keeps.
    """
    import numpy as np

    if rows is base:
        return "-"
    by_seed = {r["seed"]: r["miou"] for r in base}
    diffs = [r["miou"] - by_seed[r["seed"]] for r in rows if r["seed"] in by_seed]
    if not diffs:
        return "-"
    spread = f" ± {np.std(diffs, ddof=1):.3f}" if len(diffs) > 1 else ""
    return f"{np.mean(diffs):+.3f}{spread} ({len(diffs)})"


def diagnosed_mean(diagnoses: list[dict[str, Any]], *keys: str) -> float | None:
    """Mean of one diagnosis field (``keys`` down nested dicts) over every diagnosed seed, or None when a seed
    lacks it: one cell never mixes seeds."""
    import numpy as np

    values = []
    for d in diagnoses:
        for key in keys:
            d = d.get(key) if isinstance(d, dict) else None
        values.append(d)
    return float(np.mean(values)) if values and None not in values else None


EQUAL_EPOCH = 100  # the curve snapshot at which geot's settings are compared at equal training


def snapshot_index(curves: Sequence[dict[str, Any]]) -> dict[tuple[str, int], float]:
    """Test mIoU (whole pipeline) of every snapshot ``curve`` scored, by (run name, epoch).

    A time budget buys fewer epochs on a slower day of a shared machine; the same epoch does not depend on it.
    """
    return {(Path(c["run"]).name, p["epoch"]): p["miou"] for c in curves if c["decode"] == "full"
            for p in c["points"]}


def snapshot_mious(rows: list[dict[str, Any]], snapshots: dict[tuple[str, int], float], epoch: int) -> list[float]:
    """The snapshot mIoU at ``epoch`` of each run among ``rows`` that has one."""
    return [snapshots[(r["name"], epoch)] for r in rows if (r["name"], epoch) in snapshots]


def geot_settings_table(rows: list[dict[str, Any]], diagnoses: list[dict[str, Any]],
                        curves: Sequence[dict[str, Any]] = ()) -> list[str]:
    """geot's settings side by side on the test protocol: test mIoU against default geot and supervised training
    with the same labels, the same at an equal epoch (``curve`` snapshots), and what each teacher and noise
    model did (``diagnose``), mean over diagnosed seeds."""
    import numpy as np

    groups = seed_groups(rows)
    by_run = {Path(d["run"]).name: d for d in diagnoses}
    snapshots = snapshot_index(curves)
    lines = ["| setting | labelled | seeds | epochs | test mIoU | vs geot | vs geot, paired by seed (pairs) | "
             "vs supervised, same labels | vs supervised, paired by seed (pairs) | "
             f"epoch {EQUAL_EPOCH} snapshot: test mIoU (seeds), vs geot | diagnosed seeds | "
             "pseudo labels right, raw / decoded | class-level diagonal: measured / anchor / posterior | "
             "instance diagonal, first -> last |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def cell(*values: float | None, sep: str = " / ") -> str:
        return "-" if None in values else sep.join(f"{v:.3f}" for v in values)

    for (method, fraction, config), rs in sorted(groups.items(), key=lambda kv: (kv[0][2], kv[0][1], kv[0][0])):
        variant, _, tag = method.partition("+")
        if not variant.startswith("geot"):
            continue
        suffix = f"+{tag}" if tag else ""
        geot, sup = (groups.get((f"{m}{suffix}", fraction, config), []) for m in ("geot", "supervised"))
        ds = [by_run[r["name"]] for r in rs if r["name"] in by_run]
        pseudo = cell(diagnosed_mean(ds, "pseudo_label_accuracy"), diagnosed_mean(ds, "pseudo_label_accuracy_decoded"))
        level = cell(*(diagnosed_mean(ds, "class_level_diagonal", k)
                       for k in ("measured", "anchor estimate", "posterior estimate")))
        instance = cell(diagnosed_mean(ds, "idtm_diagonal_mass_first_semi_epoch"),
                        diagnosed_mean(ds, "idtm_diagonal_mass_last_epoch"), sep=" -> ")
        same, base = (snapshot_mious(g, snapshots, EQUAL_EPOCH) for g in (rs, geot))
        equal = "-" if not same else f"{mean_std(same)} ({len(same)})" + (
            f", {np.mean(same) - np.mean(base):+.3f}" if base and rs is not geot else "")
        lines.append(f"| {method} | {fraction:.0%} | {len(rs)} | {epochs_cell(*rs)} | "
                     f"{mean_std([r['miou'] for r in rs])} | {versus(rs, geot)} | {paired(rs, geot)} | "
                     f"{versus(rs, sup)} | {paired(rs, sup)} | {equal} | "
                     f"{len(ds)} | {pseudo} | {level} | {instance} |")
    return lines


def levers_table(records: list[dict[str, Any]]) -> list[str]:
    """One row per training recipe: validation tooth mIoU (argmax) at the end and the time it took."""
    lines = ["| recipe | overrides | method, labelled | steps | val mIoU, end | val mIoU, best | CPU min | wall min |",
             "|---|---|---|---|---|---|---|---|"]
    for r in sorted(records, key=lambda r: (r["method"], -r["fraction"], r["name"])):
        lever = {k: v for k, v in r["overrides"].items()
                 if k not in ("semi.method", "data.labelled_fraction", "seed", "optim.epochs", "val_every")}
        last = r["curve"][max(r["curve"], key=int)] if r["curve"] else {}
        text = ", ".join(f"`{k}={v}`" for k, v in lever.items()) or "(cpu-small as shipped)"
        steps = f"{r['steps']}" + (" (stopped early)" if r.get("stopped_early") else "")
        lines.append(f"| {r['name']} | {text} | {r['method']}, {r['fraction']:.0%} | {steps} | "
                     f"{r['final_val_miou']:.3f} | {r['best_val_miou']:.3f} | {last.get('cpu_minutes', 0):.0f} | "
                     f"{last.get('wall_minutes', 0):.0f} |")
    return lines


def decoding_table(rows: list[dict[str, Any]]) -> list[str]:
    """The test patients after each decoder stage, from the same checkpoint."""
    names = {"none": "argmax of one sample (geot 0.1)", "argmax": "+ full resolution", "graphcut": "+ graph cut",
             "full": "+ instances and numbering", "full+tta3": "+ 3 test-time views (rotations +-10 deg)"}
    lines = ["| checkpoint | decoder | tooth mIoU | Dice | TSA | exp(-TLA) | TIR | jaws: code on 2 teeth | "
             "jaws: tooth not found | split / merged teeth | s per 8k jaw | s per large mesh |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    order = list(names)
    for r in sorted(rows, key=lambda r: (r["run"], order.index(r["stage"]) if r["stage"] in order else 9)):
        q = r["instances"]
        large = ", ".join(f"{s:.2f} ({int(v) // 1000}k)" for v, s in r["s_large_mesh"].items()) or "-"
        lines.append(f"| {Path(r['run']).name} | {names.get(r['stage'], r['stage'])} | {r['miou']:.3f} | "
                     f"{r['dice']:.3f} | {r['tsa']:.3f} | {r['exp_neg_tla']:.3f} | {r['tir']:.3f} | "
                     f"{r['jaws_with_duplicated_code']} of {r['test_scans']} | {r['jaws_with_missing_tooth']} | "
                     f"{q['split']} / {q['merged']} of {q['true_teeth']} | {r['median_s_per_scan']:.2f}"
                     f"{' (1 thread)' if r.get('threads') == 1 else ''} | {large} |")
    return lines


def curves_table(records: list[dict[str, Any]]) -> list[str]:
    """Test tooth mIoU (whole pipeline) of each snapshot against training minutes."""
    lines = ["| run | decoder | epoch | wall minutes | tooth mIoU | Dice | TSA | exp(-TLA) | TIR |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        for p in r["points"]:
            lines.append(f"| {r['run']} | {r['decode']} | {p['epoch']} | {p['wall_minutes']:.0f} | {p['miou']:.3f} | "
                         f"{p['dice']:.3f} | {p['tsa']:.3f} | {p['exp_neg_tla']:.3f} | {p['tir']:.3f} |")
    return lines


CURVE_MARKS = (5, 10, 20, 30, 45, 60)  # training minutes at which the summary reads each run


def seeds_pooled(run: str) -> str:
    """A run's name without its seed (``geot+60min-f0.2-s1-cpu-small`` -> ``geot+60min-f0.2-cpu-small``): runs
    that differ only by seed share it, and only they are averaged (variant, budget, fraction, config all differ
    in the name)."""
    return re.sub(r"-s\d+(?=-)", "", run, count=1)


def curve_groups(records: list[dict[str, Any]]) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(runs without their seed, decoder, records), most labelled first."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((seeds_pooled(r["run"]), r["decode"]), []).append(r)
    order = sorted(groups.items(), key=lambda kv: (-kv[1][0]["fraction"], kv[0]))
    return [(name, decode, sorted(rs, key=lambda r: r["seed"])) for (name, decode), rs in order]


def curves_summary(records: list[dict[str, Any]]) -> list[str]:
    """Test tooth mIoU of the model one would hold after each mark's minutes of training (a run's last
    snapshot at or before the mark), mean ± sample standard deviation over the seeds of one recipe; "-" where
    a seed had no snapshot yet or had ended more than 5 minutes before the mark."""
    lines = ["| runs (seeds pooled) | decoder | seeds | " + " | ".join(f"{m} min" for m in CURVE_MARKS) + " |",
             "|---|---|---|" + "---|" * len(CURVE_MARKS)]
    for name, decode, rs in curve_groups(records):
        cells = []
        for mark in CURVE_MARKS:
            values = []
            for r in rs:
                held = [p for p in r["points"] if p["wall_minutes"] <= mark]
                if held and max(p["wall_minutes"] for p in r["points"]) + 5 >= mark:
                    values.append(max(held, key=lambda p: p["wall_minutes"])["miou"])
            cells.append("-" if len(values) < len(rs) else mean_std(values))
        lines.append(f"| {name} | {decode} | {', '.join(str(r['seed']) for r in rs)} | " + " | ".join(cells) + " |")
    return lines


def headline_curves(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The curves of the plain ``supervised`` and ``geot`` recipes: the ones a user picks between. geot's variants
    (``geot-paper+60min``) are compared in the settings table and would crowd the plot."""
    return [r for r in records if re.match(r"(supervised|geot)(\+[^/]*)?-f\d", Path(r["run"]).name)]


def plot_curves(records: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    for i, (name, decode, rs) in enumerate(curve_groups(records)):
        for j, r in enumerate(rs):  # one line per seed, one colour per recipe
            pts = sorted(r["points"], key=lambda p: p["epoch"])
            ax.plot([p["wall_minutes"] for p in pts], [p["miou"] for p in pts], marker="o", markersize=3,
                    color=f"C{i}", alpha=0.8, linewidth=1,
                    label=None if j else f"{name} ({decode} decoder; seed {', '.join(str(x['seed']) for x in rs)})")
    ax.axvline(60, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("training minutes (wall clock, 2-core CPU; docs/benchmarks.md says the threads)")
    ax.set_ylabel("tooth mIoU, test patients")
    ax.set_title("time to accuracy, cpu-small recipe on 108 real jaws", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})


def run_report(args: argparse.Namespace) -> None:
    """Rewrite the tables of docs/benchmarks.md and the plots from docs/results/*.json.

    Accuracy rows scored on the test patients fill the main table; rows from before the three-way split
    (scored on the patients that also chose the checkpoint) go to the appendix.
    """
    rows = load_rows("accuracy")
    test_rows = [r for r in rows if r.get("scored_on") == "test"]
    old_rows = [r for r in rows if r.get("scored_on") != "test"]
    curves = load_rows("curves")
    tables = {"accuracy": accuracy_table(test_rows), "accuracy-selection": accuracy_table(old_rows),
              "levers": levers_table(load_rows("levers")), "decoding": decoding_table(load_rows("decoding")),
              "geot-settings": geot_settings_table(test_rows, load_rows("diagnosis"), curves),
              "curves": curves_table(curves), "curves-summary": curves_summary(curves),
              "inference": inference_table(load_rows("inference")),
              "training": training_table(load_rows("training")),
              "method-step": method_step_table(load_rows("method_step")),
              "startup": startup_table(load_rows("startup"))}
    doc = ROOT / "docs" / "benchmarks.md"
    text = doc.read_text()
    for name, lines in tables.items():
        print("\n".join(lines) + "\n")
        text = replace_block(text, name, lines)
    doc.write_text(text)
    if accuracy_series(test_rows):  # rows of fixed-epoch runs; time-budget runs are in the curves plot
        plot_accuracy(test_rows, ROOT / "docs" / "miou_vs_fraction.png")
    if accuracy_series(old_rows):
        plot_accuracy(old_rows, ROOT / "docs" / "miou_vs_fraction-selection.png")
    headline = headline_curves(curves)
    if headline:
        plot_curves(headline, ROOT / "docs" / "time_to_accuracy.png")
    print("rewrote docs/benchmarks.md and its plots")


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
    acc.add_argument("--resume", action="store_true", help="continue interrupted runs of the same config")
    acc.add_argument("--tag", default="", help="name suffix for runs with extra --set overrides (e.g. modules)")
    acc.add_argument("--rule", default=None, help="prediction rule module; reuses the trained run when present")
    lev = sub.add_parser("levers", help="one training recipe, its validation curve against time (no test scores)")
    lev.add_argument("name", help="a name for the recipe (the lever it tries)")
    lev.add_argument("--data", type=Path, default=DATA)
    lev.add_argument("--config", default=str(ROOT / "configs" / "cpu-small.yaml"))
    lev.add_argument("--method", default="supervised")
    lev.add_argument("--fraction", type=float, default=1.0)
    lev.add_argument("--seed", type=int, default=0)
    lev.add_argument("--set", nargs="*", default=[], help="config overrides key=value: the lever")
    lev.add_argument("--resume", action="store_true")
    lev.add_argument("--record", action="store_true", help="record the run's log as it is (a run stopped early)")
    cur = sub.add_parser("curve", help="a run's weight snapshots scored on its test patients against time")
    cur.add_argument("run", type=Path)
    cur.add_argument("--data", type=Path, default=DATA)
    cur.add_argument("--decode", default="full", help="decoder stage the snapshots predict with")
    cur.add_argument("--stride", type=int, default=1, help="score every STRIDE-th snapshot (always the last)")
    cur.add_argument("--epochs", type=int, nargs="*", default=[EQUAL_EPOCH],
                     help=f"snapshots scored whatever the stride (default: {EQUAL_EPOCH}, the settings table's)")
    dec = sub.add_parser("decoding", help="a run's test patients after each decoder stage, with timings")
    dec.add_argument("run", type=Path)
    dec.add_argument("--data", type=Path, default=DATA)
    dec.add_argument("--stages", nargs="+", default=["none", "argmax", "graphcut", "full"])
    dec.add_argument("--timed", type=int, default=5, help="test scans timed one by one")
    dec.add_argument("--sizes", nargs="*", type=int, default=[100_000])
    dec.add_argument("--views", type=int, default=1, help="test-time views rotated about the occlusal axis")
    inf = sub.add_parser("inference", help="seconds per scan for geot predict, real and upsampled meshes")
    inf.add_argument("model", type=Path)
    inf.add_argument("--data", type=Path, default=DATA)
    inf.add_argument("--scans", type=int, default=10)
    inf.add_argument("--sizes", nargs="*", type=int, default=[50_000, 100_000, 200_000])
    inf.add_argument("--device", default="cpu", help="where the model runs: cpu, cuda or auto")
    inf.set_defaults(env={})
    st = sub.add_parser("startup", help="geot predict on one scan in a fresh process, and its imports, per tree")
    st.add_argument("model", type=Path)
    st.add_argument("--data", type=Path, default=DATA)
    st.add_argument("--scan", type=Path, default=None, help="the scan to segment [default: the first real jaw]")
    st.add_argument("--repeats", type=int, default=5)
    st.add_argument("--trees", nargs="*", default=[], help="LABEL=PATH checkouts to compare [default: this one]")
    st.add_argument("--env", nargs="*", default=[], help="KEY=VALUE for the timed processes (OMP_NUM_THREADS=1)")
    tr = sub.add_parser("training", help="training step time, memory and where the time goes")
    tr.add_argument("--data", type=Path, default=DATA)
    tr.add_argument("--configs", nargs="+", default=[str(ROOT / "configs" / "cpu-small.yaml")])
    tr.add_argument("--points", type=int, default=None)
    tr.add_argument("--steps", type=int, default=5)
    tr.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    tr.add_argument("--set", nargs="*", default=[], help="config overrides key=value (e.g. model.args.sampling=random)")
    one = sub.add_parser("training-one", help=argparse.SUPPRESS)
    one.add_argument("config")
    one.add_argument("variant")
    one.add_argument("--data", type=Path, default=DATA)
    one.add_argument("--points", type=int, default=None)
    one.add_argument("--steps", type=int, default=5)
    one.add_argument("--device", default="cpu")
    one.add_argument("--set", nargs="*", default=[])
    ms = sub.add_parser("method-step", help="CPU seconds of a supervised and a semi-supervised step per variant")
    ms.add_argument("--data", type=Path, default=DATA)
    ms.add_argument("--config", default=str(ROOT / "configs" / "cpu-small.yaml"))
    ms.add_argument("--variants", nargs="+", default=["geot", "geot-paper", "geot-plgr1024", "mean_teacher"])
    ms.add_argument("--steps", type=int, default=10)
    ms.add_argument("--set", nargs="*", default=[], help="config overrides key=value")
    dg = sub.add_parser("diagnose", help="pseudo-label quality of a run's teacher on its unlabelled scans")
    dg.add_argument("run", type=Path)
    dg.add_argument("--data", type=Path, default=DATA)
    dg.add_argument("--threshold", type=float, default=0.9)
    dg.add_argument("--views", type=int, default=1, help="also score the mean of up to this many augmented "
                                                         "teacher views (test-time augmentation)")
    sub.add_parser("report", help="print the tables of docs/benchmarks.md from docs/results")
    args = parser.parse_args()
    if args.what != "report" and not Path(getattr(args, "data", DATA)).is_dir():
        sys.exit(f"{args.data}: real scans not found (see ../shared/data/README)")
    runners = {"accuracy": run_accuracy, "levers": run_levers, "curve": run_curve, "decoding": run_decoding,
               "inference": run_inference, "training": run_training, "training-one": run_training_one,
               "diagnose": run_diagnose, "startup": run_startup, "method-step": run_method_step, "report": run_report}
    runners[args.what](args)


if __name__ == "__main__":
    main()
