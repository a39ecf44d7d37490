"""Scores for one segmented scan and their means over a test set.

Two families, because the literature reports both and they disagree on what matters:

* :func:`segmentation_metrics` -- GeoT's per-scan tooth mIoU / Dice (over the tooth classes present in
  the ground truth) and vertex accuracy, which is what GeoT and most later papers report;
* :func:`challenge_metrics` -- TSA, TLA and TIR computed the way the official 3DTeethSeg'22 evaluator
  computes them, quirks included, so that numbers can be compared with the challenge leaderboard.

Everything here is plain numpy/scipy on per-vertex arrays, so it runs wherever predictions are scored.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

# Columns averaged by :func:`aggregate_rows` unless told otherwise (per-class ``iou_<k>`` columns join them).
METRIC_KEYS: tuple[str, ...] = ("miou", "dice", "accuracy", "tsa", "tla", "exp_neg_tla", "tir", "score")
GROUPS: tuple[str, ...] = ("overall", "lower", "upper")

# The evaluator's thresholds: TIR counts a match closer than half the tooth size, and a GT tooth without
# a matched prediction adds five times its (un-normalised) size to TLA.
TIR_THRESHOLD = 0.5
TLA_MISS_FACTOR = 5.0


# --------------------------------------------------------------------------------------------------
# GeoT segmentation metrics
# --------------------------------------------------------------------------------------------------

def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C + 1) counts of (ground-truth class, predicted class) from one np.bincount.

    The extra last column counts predictions outside ``0..C-1`` (e.g. an FDI code foreign to the jaw):
    they are wrong for every ground-truth class but belong to no class of their own.
    """
    pred = np.asarray(pred).reshape(-1).astype(np.int64, copy=False)
    gt = np.asarray(gt).reshape(-1).astype(np.int64, copy=False)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction has {pred.size} values but ground truth has {gt.size}")
    if gt.size and (gt.min() < 0 or gt.max() >= num_classes):
        raise ValueError(f"ground-truth classes must lie in 0..{num_classes - 1}, "
                         f"found {int(gt.min())}..{int(gt.max())}")
    pred = np.where((pred >= 0) & (pred < num_classes), pred, num_classes)
    width = num_classes + 1
    counts = np.bincount(gt * width + pred, minlength=num_classes * width)
    return counts.reshape(num_classes, width)


def segmentation_metrics(pred: np.ndarray, gt: np.ndarray, num_classes: int = 17) -> dict[str, Any]:
    """GeoT's per-scan metrics on per-vertex class indices (0 = gingiva).

    * ``miou`` / ``dice``: mean IoU / Dice over the tooth classes present in the ground truth. Gingiva is
      left out and so are classes that are only predicted (their false positives still lower the IoU of
      the true class of those vertices), as GeoT reports. NaN when the ground truth has no tooth at all,
      since the mean is then over nothing; means over scans skip it.
    * ``accuracy``: fraction of vertices labelled correctly, gingiva included (NaN for an empty scan).
    * ``per_class_iou`` / ``per_class_dice``: lists of length ``num_classes``, NaN for classes absent
      from the ground truth; ``gingiva_iou`` is class 0's entry.

    Predicted values outside ``0..num_classes-1`` count as wrong everywhere; ground-truth values there
    raise ValueError.
    """
    cm = confusion_matrix(pred, gt, num_classes)
    inter = np.diag(cm[:, :num_classes]).astype(np.float64)
    gt_count = cm.sum(axis=1).astype(np.float64)
    pred_count = cm[:, :num_classes].sum(axis=0).astype(np.float64)
    present = gt_count > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(present, inter / (gt_count + pred_count - inter), np.nan)
        dice = np.where(present, 2.0 * inter / (gt_count + pred_count), np.nan)
    teeth = present[1:]
    total = int(cm.sum())
    return {
        "miou": float(iou[1:][teeth].mean()) if teeth.any() else math.nan,
        "dice": float(dice[1:][teeth].mean()) if teeth.any() else math.nan,
        "accuracy": float(inter.sum() / total) if total else math.nan,
        "gingiva_iou": float(iou[0]),
        "per_class_iou": [float(v) for v in iou],
        "per_class_dice": [float(v) for v in dice],
    }


# --------------------------------------------------------------------------------------------------
# 3DTeethSeg'22 challenge metrics
# --------------------------------------------------------------------------------------------------

def _instances(vertices: np.ndarray, instances: np.ndarray, labels: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per non-zero instance: id, label count, majority label, centroid (K, 3) and size (K, 3).

    Size is the evaluator's ``sqrt(sum((c - P)^2, axis=0))``: a 3-vector that grows with the square root
    of the vertex count, not a standard deviation.
    """
    tooth = instances != 0
    ids, inverse = np.unique(instances[tooth], return_inverse=True)
    k = len(ids)
    if k == 0:
        empty = np.zeros((0, 3))
        return ids, np.zeros(0, np.int64), np.zeros(0, np.int64), empty, empty
    pts = vertices[tooth]
    count = np.bincount(inverse, minlength=k).astype(np.float64)
    centroid = np.stack([np.bincount(inverse, pts[:, d], k) for d in range(3)], axis=1) / count[:, None]
    dev2 = (pts - centroid[inverse]) ** 2
    size = np.sqrt(np.stack([np.bincount(inverse, dev2[:, d], k) for d in range(3)], axis=1))
    # Distinct (instance, label) pairs: how many labels each instance carries and its most frequent one.
    lab = labels[tooth]
    lo, span = int(lab.min()), int(lab.max()) - int(lab.min()) + 1
    if span * k < 2**62:  # one int64 key per pair: far faster than np.unique(axis=1)
        keys, pair_count = np.unique(inverse * span + (lab - lo), return_counts=True)
        pairs = np.stack([keys // span, keys % span + lo])
    else:
        pairs, pair_count = np.unique(np.stack([inverse, lab]), axis=1, return_counts=True)
    n_labels = np.bincount(pairs[0], minlength=k)
    order = np.lexsort((-pair_count, pairs[0]))  # by instance, most frequent label first
    first = order[np.r_[0, np.flatnonzero(np.diff(pairs[0, order])) + 1]]
    label = pairs[1, first]
    return ids, n_labels, label, centroid, size


def challenge_metrics(vertices: np.ndarray, gt_fdi: np.ndarray, gt_instances: np.ndarray,
                      pred_fdi: np.ndarray, pred_instances: np.ndarray) -> dict[str, float]:
    """TSA, TLA, exp(-TLA) and TIR of one jaw, as the official 3DTeethSeg'22 evaluator computes them.

    Bug-compatible on purpose, so scores compare with the leaderboard:

    1. A predicted instance that carries more than one FDI label is zeroed (becomes gingiva) first.
    2. GT teeth (instance != 0) get a centroid ``c`` and a size ``s = sqrt(sum((c - P)^2, axis=0))``;
       they are matched one-to-one to the remaining predicted instances by Hungarian assignment on the
       centroid distances.
    3. ``tla`` = mean over GT teeth of ``||(c_gt - c_pred) / s_gt||`` (element-wise division); a GT tooth
       left unmatched adds ``5 * ||s_gt||``, *not* normalised, as the evaluator's code does.
    4. ``tsa`` = micro-averaged F1 of the binary tooth-vs-gingiva vertex labels (``instances != 0``).
       Micro-F1 over both classes equals the fraction of vertices on the right side of that split.
    5. ``tir`` = fraction of *matched* pairs with normalised distance < 0.5 and equal FDI label.

    Edge cases, where the evaluator crashes or divides by zero: with GT teeth but no predicted tooth,
    every GT tooth takes the miss penalty and ``tir`` is 0 (the evaluator's fallback for an empty
    matching). With no GT tooth, ``tla``, ``exp_neg_tla`` and ``tir`` are NaN (undefined; means over scans
    skip them) while ``tsa`` is still computed. A GT tooth whose vertices share a coordinate has a zero
    size component and yields an infinite (or NaN) distance, as in the evaluator.

    A GT instance carrying several labels takes its most frequent one (the evaluator asserts it has one).
    Also returns ``n_gt_teeth``, ``n_pred_teeth`` (after zeroing) and ``n_matched`` for diagnosis.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    gt_fdi, gt_inst, pred_fdi, pred_inst = (np.asarray(a, dtype=np.int64).reshape(-1).copy()
                                            for a in (gt_fdi, gt_instances, pred_fdi, pred_instances))
    n = len(vertices)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices have shape {vertices.shape}, expected (V, 3)")
    for name, arr in (("gt_fdi", gt_fdi), ("gt_instances", gt_inst), ("pred_fdi", pred_fdi),
                      ("pred_instances", pred_inst)):
        if len(arr) != n:
            raise ValueError(f"{name} has {len(arr)} values for {n} vertices")

    # 1. zero out predicted instances that carry several labels (both their labels and instance ids).
    p_ids, p_nlab, p_label, p_cent, _ = _instances(vertices, pred_inst, pred_fdi)
    ambiguous = p_ids[p_nlab > 1]
    if len(ambiguous):
        drop = np.isin(pred_inst, ambiguous)
        pred_fdi[drop] = 0
        pred_inst[drop] = 0
        keep = p_nlab == 1
        p_ids, p_label, p_cent = p_ids[keep], p_label[keep], p_cent[keep]

    # 4. TSA: micro-F1 over {gingiva, tooth} == share of vertices on the right side.
    tsa = float(np.mean((gt_inst != 0) == (pred_inst != 0))) if n else math.nan

    g_ids, _, g_label, g_cent, g_size = _instances(vertices, gt_inst, gt_fdi)
    out = {"tsa": tsa, "tla": math.nan, "exp_neg_tla": math.nan, "tir": math.nan,
           "n_gt_teeth": int(len(g_ids)), "n_pred_teeth": int(len(p_ids)), "n_matched": 0}
    if len(g_ids) == 0:
        return out

    # 2. Hungarian matching of GT to predicted centroids.
    rows = cols = np.zeros(0, dtype=np.int64)
    if len(p_ids):
        rows, cols = linear_sum_assignment(cdist(g_cent, p_cent))
    with np.errstate(divide="ignore", invalid="ignore"):
        dist = np.linalg.norm((g_cent[rows] - p_cent[cols]) / g_size[rows], axis=1)
    unmatched = np.ones(len(g_ids), dtype=bool)
    unmatched[rows] = False
    # 3. TLA with the un-normalised miss penalty; 5. TIR over matched pairs.
    tla = (dist.sum() + TLA_MISS_FACTOR * np.linalg.norm(g_size[unmatched], axis=1).sum()) / len(g_ids)
    hits = (dist < TIR_THRESHOLD) & (g_label[rows] == p_label[cols])
    out.update(tla=float(tla), exp_neg_tla=math.exp(-tla), n_matched=int(len(rows)),
               tir=float(hits.mean()) if len(rows) else 0.0)
    return out


def dentition_errors(gt_fdi: np.ndarray, gt_instances: np.ndarray, pred_fdi: np.ndarray) -> dict[str, int]:
    """The mistakes a dentist sees first, counted over the true teeth of one jaw.

    Each true tooth is read as the code most of its vertices got. ``duplicated_codes``: predicted codes that are
    the reading of two or more true teeth (one code on two teeth); ``missing_teeth``: true teeth read as
    gingiva (no tooth found there).
    """
    gt_fdi, gt_inst, pred_fdi = (np.asarray(a, dtype=np.int64).reshape(-1) for a in (gt_fdi, gt_instances, pred_fdi))
    readings = []
    for tooth in np.unique(gt_inst[gt_inst != 0]):
        codes, counts = np.unique(pred_fdi[gt_inst == tooth], return_counts=True)
        readings.append(int(codes[np.argmax(counts)]))
    readings_arr = np.array(readings, dtype=np.int64)
    codes, counts = np.unique(readings_arr[readings_arr != 0], return_counts=True)
    return {"duplicated_codes": int((counts > 1).sum()), "missing_teeth": int((readings_arr == 0).sum())}


def challenge_score(tsa: float, tla: float, tir: float) -> float:
    """The challenge's final score ``(TSA + exp(-TLA) + TIR) / 3`` for one scan.

    Over a test set the challenge averages TSA, exp(-TLA) and TIR separately and then takes the mean of
    the three means; :func:`aggregate_rows` does that from the ``exp_neg_tla`` column.
    """
    return (tsa + math.exp(-tla) + tir) / 3.0


# --------------------------------------------------------------------------------------------------
# Means over scans
# --------------------------------------------------------------------------------------------------

def nanmean(values: Iterable[Any]) -> float:
    """Mean of ``values``, skipping NaN and None; NaN when nothing is left.

    Written out rather than np.nanmean so that an all-NaN column gives NaN without a RuntimeWarning.
    """
    kept = [x for x in (float(v) for v in values if v is not None) if not math.isnan(x)]
    return float(np.mean(kept)) if kept else math.nan


def aggregate_rows(rows: Sequence[Mapping[str, Any]], keys: Sequence[str] | None = None,
                   group_key: str = "jaw") -> dict[str, dict[str, float]]:
    """Mean of each metric column over all rows and per jaw, ignoring NaN.

    Returns ``{"overall": {...}, "lower": {...}, "upper": {...}}``; each holds ``n`` (rows in the group)
    and one mean per key. ``keys`` defaults to :data:`METRIC_KEYS` plus every ``iou_<k>`` column. When
    ``tsa``, ``exp_neg_tla`` and ``tir`` are among them, ``score`` is recomputed from their means, the
    challenge's way, rather than averaged per scan. Rows whose jaw is neither lower nor upper count in
    ``overall`` only.
    """
    if keys is None:
        iou_cols = sorted({k for r in rows for k in r if k.startswith("iou_")}, key=lambda k: int(k[4:]))
        keys = [*METRIC_KEYS, *iou_cols]
    out: dict[str, dict[str, float]] = {}
    for group in GROUPS:
        members = [r for r in rows if group == "overall" or r.get(group_key) == group]
        stats: dict[str, float] = {"n": len(members)}
        for key in keys:
            stats[key] = nanmean(r.get(key) for r in members)
        if all(k in stats for k in ("tsa", "exp_neg_tla", "tir")):
            stats["score"] = (stats["tsa"] + stats["exp_neg_tla"] + stats["tir"]) / 3.0
        out[group] = stats
    return out
