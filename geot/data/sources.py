"""Turn the folders a user names into the labelled / unlabelled / validation scans of a run.

Test scans are named in the split (so a run records which patients it must never see) but never
read: nothing in training, checkpoint choice or the decoder's priors can depend on them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from geot.config import Config
from geot.data.dataset import PreparedScan, load_prepared
from geot.data.splits import PARTS, Split, split_patients
from geot.errors import GeotError
from geot.io.teeth3ds import ScanFiles, find_scans


@dataclass
class TrainData:
    """Prepared scans of the parts training reads, and the split (all four parts) that produced them."""

    labelled: list[PreparedScan]
    unlabelled: list[PreparedScan]
    val: list[PreparedScan]
    split: Split


def _prepare(files: list[ScanFiles], cfg: Config, labelled: bool, cache_dir: Path | None) -> list[PreparedScan]:
    return [load_prepared(f, cfg.data.align, cfg.data.curvature, labelled, cache_dir) for f in files]


def read_split(path: Path) -> Split:
    """A split file: ``{"labelled": [...], "unlabelled": [...], "val": [...], "test": [...]}`` of scan names."""
    try:
        split = Split.model_validate(json.loads(Path(path).read_text()))
    except (OSError, ValueError, ValidationError) as exc:
        first = str(exc).splitlines()[0]
        raise GeotError(f"{path}: not a split file with lists {', '.join(PARTS)} ({first})") from None
    twice = split.overlap()
    if twice:
        raise GeotError(f"{path}: scans in more than one part: {', '.join(sorted(twice)[:5])}")
    return split


def gather_data(cfg: Config, data: Path | None = None, labelled: Path | None = None,
                unlabelled: Path | None = None, val: Path | None = None, cache_dir: Path | None = None,
                test: Path | None = None, split_file: Path | None = None) -> TrainData:
    """Scans of each part of a run.

    With ``data``: one folder, split by patient (``cfg.data`` fractions and seeds: test, validation, labelled,
    unlabelled), or by the scan names of ``split_file``; scans without label files are unlabelled. With
    ``labelled``/``unlabelled`` (and optionally ``val`` and ``test``) folders: taken as given, validation split
    off the labelled patients when no ``val`` folder is named. Labels of unlabelled scans are never read;
    test scans are never read at all.
    """
    if data is not None:
        files = find_scans(data)
        if not files:
            raise GeotError(f"{data}: no scans found")
        by_name = {f.name: f for f in files}
        if split_file is not None:
            split = read_split(split_file)
            unknown = [n for names in split.parts().values() for n in names if n not in by_name]
            if unknown:
                raise GeotError(f"{split_file}: names scans that are not in {data}: {', '.join(unknown[:5])}")
            unlabelled_files = [n for n in split.labelled + split.val if by_name[n].labels is None]
            if unlabelled_files:
                raise GeotError(f"{by_name[unlabelled_files[0]].mesh}: no label file beside it, but {split_file} "
                                "puts it in a labelled part")
        else:
            with_labels = [f for f in files if f.labels is not None]
            d = cfg.data
            split = split_patients([(f.name, f.patient) for f in with_labels], d.labelled_fraction, d.val_fraction,
                                   d.split_seed, d.test_fraction, d.test_seed)
            split.unlabelled += sorted(f.name for f in files if f.labels is None)
    else:
        if labelled is None:
            raise GeotError("name a data folder, or --labeled (and --unlabeled) folders")
        if split_file is not None:
            raise GeotError("--split names scans of one data folder; it does not combine with --labeled")
        lab_files = find_scans(labelled)
        if not lab_files:
            raise GeotError(f"{labelled}: no scans found in the labelled folder")
        missing = [f.mesh for f in lab_files if f.labels is None]
        if missing:
            raise GeotError(f"{missing[0]}: no label file beside it, but it is in the labelled folder")
        unl_files = find_scans(unlabelled) if unlabelled is not None else []
        val_files = find_scans(val) if val is not None else []
        test_files = find_scans(test) if test is not None else []
        if val is None:
            inner = split_patients([(f.name, f.patient) for f in lab_files], 1.0, cfg.data.val_fraction,
                                   cfg.data.split_seed)
            split = Split(labelled=inner.labelled, unlabelled=[f.name for f in unl_files], val=inner.val,
                          test=[f.name for f in test_files])
        else:
            split = Split(labelled=[f.name for f in lab_files], unlabelled=[f.name for f in unl_files],
                          val=[f.name for f in val_files], test=[f.name for f in test_files])
        all_files = [*lab_files, *unl_files, *val_files, *test_files]
        by_name = {f.name: f for f in all_files}
        if len(by_name) < len(all_files):
            raise GeotError("the same scan name appears in more than one folder")
    parts = {name: [by_name[n] for n in getattr(split, name)] for name in ("labelled", "unlabelled", "val")}
    return TrainData(labelled=_prepare(parts["labelled"], cfg, True, cache_dir),
                     unlabelled=_prepare(parts["unlabelled"], cfg, False, cache_dir),
                     val=_prepare(parts["val"], cfg, True, cache_dir), split=split)
