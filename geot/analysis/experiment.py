"""One experiment on a labelled data folder: train on its split, then segment and score the test patients.

The test patients are scored only after training has finished; nothing in training reads them (the
checkpoint is chosen on the validation patients).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geot.config import Config, load_config
from geot.data.sources import TrainData, gather_data
from geot.engine.evaluate import EvaluationReport, evaluate_folders
from geot.engine.predict import Segmenter, predict_files
from geot.engine.train import train
from geot.io.teeth3ds import ScanFiles, find_scans


@dataclass
class Experiment:
    """What an experiment did: its data, the training result and the scores on the test patients."""

    data: TrainData
    result: dict[str, Any]
    report: EvaluationReport
    train_seconds: float
    evaluate_seconds: float
    resumed: bool


def score_scans(segmenter: Segmenter, files: Sequence[ScanFiles], pred_dir: Path, eval_dir: Path | None = None,
                formats: Sequence[str] = ("json",)) -> EvaluationReport:
    """Segment labelled scans into ``pred_dir`` and score the predictions against their labels."""
    with tempfile.TemporaryDirectory() as tmp:
        truth = Path(tmp) / "truth"
        for entry in files:  # a Teeth3DS folder of just these scans, as links
            target = truth / entry.patient
            target.mkdir(parents=True, exist_ok=True)
            for source in (entry.mesh, entry.labels):
                if source is not None:
                    (target / source.name).symlink_to(source.resolve())
        predict_files(segmenter, find_scans(truth), pred_dir, formats, overwrite=True)
        return evaluate_folders(pred_dir, truth, eval_dir or pred_dir)


def run_experiment(cfg: Config, data_dir: Path, out: Path, resume: bool = False, rule: str | None = None,
                   split_file: Path | None = None) -> Experiment:
    """Train ``cfg`` on ``data_dir``'s split into ``out`` and score its test scans.

    ``resume`` continues an interrupted run of the same config. With a ``rule`` and a trained run in
    ``out``, training is skipped: a prediction rule changes only how the model's posteriors are read.
    """
    t0 = time.time()
    data = gather_data(cfg, data_dir, split_file=split_file)
    if rule and (out / "checkpoints" / "best.pt").is_file():
        result: dict[str, Any] = {"best_val_miou": float("nan")}
        resumed = False
    else:
        resumed = resume and (out / "checkpoints" / "last.pt").is_file() and (out / "config.yaml").is_file() \
            and load_config(out / "config.yaml") == cfg
        result = train(cfg, data, out, progress=False, resume=resumed, overwrite=not resumed)
    train_seconds = time.time() - t0
    t1 = time.time()
    by_name = {f.name: f for f in find_scans(data_dir)}
    suffix = f"-{rule}" if rule else ""
    report = score_scans(Segmenter.load(out, rule=rule), [by_name[n] for n in data.split.test],
                         out / f"test_predictions{suffix}", out / f"test_evaluation{suffix}")
    return Experiment(data, result, report, train_seconds, time.time() - t1, resumed)
