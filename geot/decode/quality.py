"""How well predicted tooth instances match true ones: split, merged, matched and missed teeth."""

from __future__ import annotations

import numpy as np


def instance_quality(pred_instances: np.ndarray, true_instances: np.ndarray, share: float = 0.2
                     ) -> dict[str, int]:
    """Counts comparing predicted and true tooth instances of one scan (0 is gingiva in both).

    With ``overlap(t, p)`` the vertices of true tooth ``t`` in predicted instance ``p``:

    * ``matched``: true teeth with a predicted instance of IoU > 0.5 with them (one at most, as
      IoU > 0.5 pairs are one-to-one);
    * ``split``: true teeth of which two or more predicted instances each hold >= ``share`` of the tooth;
    * ``merged``: true teeth that share a predicted instance with another true tooth, the instance
      holding >= ``share`` of each;
    * ``missed``: true teeth of which no predicted instance holds >= ``share`` (mostly called gingiva);
    * ``spurious``: predicted instances with less than ``share`` of their vertices in any one true tooth;
    * ``true_teeth`` and ``pred_instances``: how many of each.

    A tooth can be both split and merged (its halves joined to its neighbours).
    """
    pred = np.asarray(pred_instances, dtype=np.int64).reshape(-1)
    true = np.asarray(true_instances, dtype=np.int64).reshape(-1)
    if pred.shape != true.shape:
        raise ValueError(f"{len(pred)} predicted instance ids for {len(true)} true ones")
    t_ids, t_idx = np.unique(true, return_inverse=True)
    p_ids, p_idx = np.unique(pred, return_inverse=True)
    overlap = np.zeros((len(t_ids), len(p_ids)), dtype=np.int64)
    np.add.at(overlap, (t_idx, p_idx), 1)
    overlap = overlap[t_ids != 0][:, p_ids != 0]          # teeth x instances
    t_size = np.bincount(t_idx)[t_ids != 0].astype(np.float64)
    p_size = np.bincount(p_idx)[p_ids != 0].astype(np.float64)
    iou = overlap / (t_size[:, None] + p_size[None, :] - overlap)
    of_tooth = overlap / t_size[:, None]       # share of the tooth
    of_inst = overlap / p_size[None, :]        # share of the instance
    holds = of_tooth >= share
    merging = holds.sum(axis=0) >= 2                                                # instances over 2+ teeth
    return {
        "true_teeth": len(t_size),
        "pred_instances": len(p_size),
        "matched": int((iou > 0.5).any(axis=1).sum()),
        "split": int((holds.sum(axis=1) >= 2).sum()),
        "merged": int((holds & merging[None, :]).any(axis=1).sum()),
        "missed": int((~holds.any(axis=1)).sum()),
        "spurious": int((of_inst < share).all(axis=0).sum()),
    }
