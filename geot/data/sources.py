"""Turn the folders a user names into the labelled / unlabelled / validation scans of a run."""

from __future__ import annotations

from pathlib import Path

from geot.config import Config
from geot.data.dataset import PreparedScan, load_prepared
from geot.data.splits import Split, split_patients
from geot.errors import GeotError
from geot.io.teeth3ds import ScanFiles, find_scans


def _prepare(files: list[ScanFiles], cfg: Config, labelled: bool, cache_dir: Path | None) -> list[PreparedScan]:
    return [load_prepared(f, cfg.data.align, cfg.data.curvature, labelled, cache_dir) for f in files]


def gather_data(cfg: Config, data: Path | None = None, labelled: Path | None = None,
                unlabelled: Path | None = None, val: Path | None = None, cache_dir: Path | None = None):
    """Scans of each part of a run.

    With ``data``: one folder, split by patient (``cfg.data`` fractions and seed); scans without label
    files are unlabelled. With ``labelled``/``unlabelled`` (and optionally ``val``) folders: taken as given,
    validation split off the labelled patients when no ``val`` folder is named. Labels of unlabelled scans
    are never read.
    """
    from geot.engine.train import TrainData

    if data is not None:
        files = find_scans(data)
        if not files:
            raise GeotError(f"{data}: no scans found")
        with_labels = [f for f in files if f.labels is not None]
        split = split_patients([(f.name, f.patient) for f in with_labels], cfg.data.labelled_fraction,
                               cfg.data.val_fraction, cfg.data.split_seed)
        split.unlabelled += sorted(f.name for f in files if f.labels is None)
        by_name = {f.name: f for f in files}
    else:
        if labelled is None:
            raise GeotError("name a data folder, or --labeled (and --unlabeled) folders")
        lab_files = find_scans(labelled)
        missing = [f.mesh for f in lab_files if f.labels is None]
        if missing:
            raise GeotError(f"{missing[0]}: no label file beside it, but it is in the labelled folder")
        unl_files = find_scans(unlabelled) if unlabelled is not None else []
        val_files = find_scans(val) if val is not None else []
        if val is None:
            inner = split_patients([(f.name, f.patient) for f in lab_files], 1.0, cfg.data.val_fraction,
                                   cfg.data.split_seed)
            split = Split(labelled=inner.labelled, unlabelled=[f.name for f in unl_files], val=inner.val)
        else:
            split = Split(labelled=[f.name for f in lab_files], unlabelled=[f.name for f in unl_files],
                          val=[f.name for f in val_files])
        by_name = {f.name: f for f in [*lab_files, *unl_files, *val_files]}
        if len(by_name) < len(lab_files) + len(unl_files) + len(val_files):
            raise GeotError("the same scan name appears in more than one folder")
    parts = {name: [by_name[n] for n in getattr(split, name)] for name in ("labelled", "unlabelled", "val")}
    return TrainData(labelled=_prepare(parts["labelled"], cfg, True, cache_dir),
                     unlabelled=_prepare(parts["unlabelled"], cfg, False, cache_dir),
                     val=_prepare(parts["val"], cfg, True, cache_dir), split=split)
