"""The README demo, end to end on synthetic jaws: what a new user runs first."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console

from geot.config import load_config
from geot.data.sources import gather_data
from geot.data.synth import write_synthetic_dataset
from geot.engine.evaluate import evaluate_folders, format_report
from geot.engine.export import export_bundle
from geot.engine.predict import Segmenter, predict_files
from geot.engine.train import train
from geot.io.check import check_folder
from geot.io.teeth3ds import find_scans

_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"


def run_demo(out: Path, minutes: float = 3.0, console: Console | None = None) -> dict:
    """Generate 20 training jaws and 4 unseen ones, train GeoT with 20% labels, segment, export, evaluate."""
    console = console or Console()
    out = Path(out)
    t0 = time.time()
    console.rule("1. synthetic jaws")
    train_dir, new_dir = out / "data", out / "unseen"
    write_synthetic_dataset(train_dir, n=20, seed=0, resolution=0.5)
    write_synthetic_dataset(new_dir, n=4, seed=1000, resolution=0.5)
    report = check_folder(train_dir)
    console.print(f"{len(report.scans)} training jaws, {len(find_scans(new_dir))} unseen jaws "
                  f"({'all readable' if report.ok else report.problems})")

    console.rule("2. semi-supervised training (20% labelled)")
    cfg = load_config(_CONFIG if _CONFIG.is_file() else None)
    scale = max(minutes / 3.0, 0.1)
    cfg.optim.epochs = max(4, round(cfg.optim.epochs * scale))
    cfg.semi.warmup_epochs = round(cfg.semi.warmup_epochs * cfg.optim.epochs / 40)
    data = gather_data(cfg, train_dir)
    console.print(f"{len(data.labelled)} labelled, {len(data.unlabelled)} unlabelled, {len(data.val)} validation")
    result = train(cfg, data, out / "run", progress=console.is_terminal, overwrite=True)

    console.rule("3. segment unseen jaws, export the model")
    segmenter = Segmenter.load(out / "run")
    predicted = predict_files(segmenter, find_scans(new_dir), out / "predictions",
                              ("json", "ply", "png", "teeth", "html"), overwrite=True)
    bundle = export_bundle(out / "run", out / "model", overwrite=True)
    console.print(f"wrote {len(predicted.written)} predictions (JSON with instances and teeth, PLY, PNG, one mesh "
                  f"per tooth) to {out / 'predictions'}; report {predicted.page}; model bundle in {bundle}")

    console.rule("4. evaluation against the ground truth")
    evaluation = evaluate_folders(out / "predictions", new_dir, out / "predictions")
    console.print(format_report(evaluation))
    summary = {"best_val_miou": result["best_val_miou"], "unseen": evaluation.summary,
               "seconds": round(time.time() - t0, 1)}
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=1, default=float))
    console.print(f"done in {summary['seconds']:.0f} s; open {predicted.page} in a browser, pictures: "
                  f"{out / 'predictions'}/*.png")
    return summary
