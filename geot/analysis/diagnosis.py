"""Pseudo-label diagnosis: how right a run's teacher is on its unlabelled scans, and what geot's noise model sees.

Needs the true labels of the unlabelled scans (the benchmark's data folder has them; training never reads them).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geot import labels as fdi
from geot.config import load_config
from geot.data.dataset import ScanDataset, item_generator, load_prepared, point_inputs
from geot.decode import DecodeOptions, decode
from geot.engine.inference import segment
from geot.engine.predict import Segmenter
from geot.errors import GeotError
from geot.io.teeth3ds import find_scans
from geot.method import build_method
from geot.method.idtm import anchor_matrix, posterior_confusion


def logged_column(log: Path, column: str) -> list[float]:
    """One column of a run's ``log.csv``, skipping epochs that left it empty (a resumed run logs into the same file)."""
    with log.open() as f:
        return [float(row[column]) for row in csv.DictReader(f) if row.get(column)]


def class_level_diagonals(posteriors: list[Any], confusion: Any, anchor_confidence: float = 0.5) -> dict[str, float]:
    """Mean diagonal of the class-level transition matrix three ways: measured (``confusion``, the pooled
    counts of true class against pseudo label) and as geot's two estimators see it from the teacher's
    posteriors alone (one scan at a time, as in training, rows averaged over the scans that trust them).
    Classes absent from the truth are left out of all three."""
    c = confusion.shape[0]
    sums = {"anchor estimate": np.zeros(c), "posterior estimate": np.zeros(c)}
    counts = {name: np.zeros(c) for name in sums}
    for probs in posteriors:
        q = torch.as_tensor(probs, dtype=torch.float32)
        estimates = {"anchor estimate": anchor_matrix(q, anchor_confidence),
                     "posterior estimate": posterior_confusion(q, q.argmax(dim=1))}
        for name, (rows, trusted) in estimates.items():
            ok = trusted.numpy()
            sums[name][ok] += torch.diagonal(rows).numpy()[ok]
            counts[name][ok] += 1
    present = confusion.sum(1) > 0
    out = {"measured": float((np.diag(confusion)[present] / confusion.sum(1)[present]).mean())}
    for name in sums:
        seen = present & (counts[name] > 0)
        out[name] = float((sums[name][seen] / counts[name][seen]).mean())
    return out


def multi_view_accuracy(model: Any, scans: list[Any], cfg: Any, views: int) -> dict[str, float]:
    """Would averaging the teacher over several augmented views give better pseudo labels?

    For each scan, the points of one training sample, seen as ``views`` copies with independent draws of
    the teacher's (weak) augmentation, as training would see them: the share of points whose pseudo
    label is right from the first view alone and from the mean posterior of 1, 2, 4, ... ``views`` views.
    """
    counts = sorted({1, *(2**i for i in range(1, views.bit_length())), views})
    right, total = dict.fromkeys(counts, 0), 0
    data = ScanDataset(scans, cfg.data.num_points, use_curvature=cfg.data.curvature, seed=cfg.seed)
    with torch.no_grad():
        for i, scan in enumerate(scans):
            points = data.sample(i, (0, i))  # un-augmented: the same points for every view
            normal = torch.from_numpy(scan.normal)[points.vertex]
            curv = torch.from_numpy(scan.curvature)[points.vertex] if cfg.data.curvature else None
            batch = torch.zeros(len(points.pos), dtype=torch.long)
            mean = 0
            for v in range(1, views + 1):
                pos, n = cfg.augment.weak(points.pos, normal, item_generator(cfg.seed, 10**6 + i, v))
                mean = mean + torch.softmax(model(point_inputs(pos, n, curv, scan.jaw), pos, batch).logits, 1)
                if v in right:
                    right[v] += int((mean.argmax(1) == points.y).sum())
            total += len(points.y)
    return {f"{v} view{'s' if v > 1 else ''}": right[v] / total for v in counts}


def gradient_norm_medians(log: Path) -> dict[str, float]:
    """Median over the logged epochs of each ``grad/<term>`` column (``log_grad_norms``): how hard each loss term
    pulls on the network, from one step per epoch. Empty when the run did not log them."""
    with log.open() as f:
        rows = list(csv.DictReader(f))
    columns = sorted({c for row in rows for c in row if c and c.startswith("grad/")})
    return {c.removeprefix("grad/"): float(np.median(values)) for c in columns
            if (values := [float(row[c]) for row in rows if row.get(c)])}


def diagnose(run: Path, data_dir: Path, threshold: float = 0.9, views: int = 1, decoded: bool = True
             ) -> dict[str, Any]:
    """How good are the pseudo labels? The teacher of a run segments its unlabelled scans (whose true
    labels the data folder has), and the errors are sorted by kind: arch neighbours (off by one tooth),
    teeth further apart, tooth vs gingiva. With ``decoded``, also how right they are after the dentition
    decoder (``semi.decode_pseudo_labels``). The IDTM diagonal mass comes from the run's log."""
    # the model that labelled the unlabelled scans in the last epoch: the EMA teacher, or the student itself
    # (the reference's frozen_then_student after its switch)
    run_cfg = load_config(run / "config.yaml")
    source = build_method(run_cfg).pseudo_label_source(run_cfg.optim.epochs - 1)
    if source not in ("teacher", "student"):
        raise GeotError(f"{run}: its last pseudo labels came from a {source} model the checkpoint does not keep")
    segmenter = Segmenter.load(run / "checkpoints" / "last.pt", device="cpu", teacher=source == "teacher")
    model, cfg, priors = segmenter.model, segmenter.cfg, segmenter.priors
    split = json.loads((run / "split.json").read_text())
    by_name = {f.name: f for f in find_scans(data_dir)}
    conf = np.zeros((fdi.NUM_CLASSES, fdi.NUM_CLASSES), dtype=np.int64)
    confident, confident_right, posteriors, scans = 0, 0, [], []
    decoded_right = total = 0
    for name in split["unlabelled"]:
        scan = load_prepared(by_name[name], cfg.data.align, cfg.data.curvature)
        scans.append(scan)
        # one sample, as training draws pseudo labels
        post = segment(model, scan, cfg.data.num_points, cfg.data.curvature, seed=cfg.seed, passes=1)
        probs = post.probs
        pred = probs.argmax(1)
        if decoded:  # the same posteriors through the dentition decoder, as semi.decode_pseudo_labels does
            jaw = fdi.JAWS[scan.jaw]
            dentition = decode(probs, scan.pos, jaw, offsets=post.offsets, priors=priors.get(jaw),
                               options=DecodeOptions(stage="full" if post.offsets is not None else "graphcut"))
            decoded_right += int((dentition.classes == scan.y).sum())
        total += len(scan.y)
        posteriors.append(probs)
        np.add.at(conf, (scan.y, pred), 1)
        sure = probs.max(1) >= threshold
        confident += int(sure.sum())
        confident_right += int((pred[sure] == scan.y[sure]).sum())
    dist = fdi.arch_distance()
    wrong = conf.sum() - np.trace(conf)
    tooth = np.arange(1, fdi.NUM_CLASSES)
    kinds = {"arch neighbour (1 tooth apart)": conf[np.ix_(tooth, tooth)][dist[1:, 1:] == 1].sum(),
             "teeth 2+ apart": conf[np.ix_(tooth, tooth)][dist[1:, 1:] >= 2].sum(),
             "tooth <-> gingiva": conf[0, 1:].sum() + conf[1:, 0].sum()}
    inter = np.diag(conf)
    iou = inter / np.maximum(conf.sum(0) + conf.sum(1) - inter, 1)
    present = conf.sum(1) > 0
    upper, lower = (fdi.class_to_fdi(np.arange(fdi.NUM_CLASSES), j) for j in ("upper", "lower"))
    names = ["gingiva", *(f"FDI {u}/{lo}" for u, lo in zip(upper[1:], lower[1:], strict=True))]
    diag = logged_column(run / "log.csv", "diag")
    return {"run": str(run), "unlabelled_scans": len(split["unlabelled"]),
            "pseudo_label_accuracy": float(np.trace(conf) / conf.sum()),
            **({"pseudo_label_accuracy_decoded": decoded_right / max(total, 1)} if decoded else {}),
            "pseudo_label_tooth_miou": float(iou[1:][present[1:]].mean()),
            f"share_confident_{threshold:g}": confident / conf.sum(),
            f"accuracy_confident_{threshold:g}": confident_right / max(confident, 1),
            "error_kinds": {k: float(v / max(wrong, 1)) for k, v in kinds.items()},
            "iou_per_class": {names[c]: float(iou[c]) for c in range(fdi.NUM_CLASSES) if present[c]},
            "class_level_diagonal": class_level_diagonals(posteriors, conf, cfg.geot.anchor_confidence),
            "idtm_diagonal_mass_last_epoch": diag[-1] if diag else None,
            "idtm_diagonal_mass_first_semi_epoch": diag[0] if diag else None, "pseudo_labels_by": source,
            **({"gradient_norm_median": norms} if (norms := gradient_norm_medians(run / "log.csv")) else {}),
            **({"pseudo_label_accuracy_by_teacher_views": multi_view_accuracy(model, scans, cfg, views)}
               if views > 1 else {})}
