"""Segment one prepared scan: sample, forward, and carry the posteriors to every vertex."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from geot import ops
from geot.data.augment import NONE
from geot.data.dataset import PreparedScan, ScanDataset


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@torch.no_grad()
def segment(model: nn.Module, scan: PreparedScan, num_points: int, use_curvature: bool = False,
            device: torch.device | str = "cpu", seed: int = 0) -> np.ndarray:
    """(V, C) class posteriors for every vertex of ``scan``.

    Scans with at most ``num_points`` vertices are segmented whole; larger ones are sampled once
    (seeded, so repeatable) and each vertex takes the inverse-distance mean of its 3 nearest samples.
    """
    data = ScanDataset([scan], num_points, NONE, seed=seed, use_curvature=use_curvature)[0].to(device)
    batch = torch.zeros(len(data.pos), dtype=torch.long, device=device)
    was_training = model.training
    model.eval()
    logits = model(data.x, data.pos, batch).logits
    model.train(was_training)
    probs = torch.softmax(logits.float(), dim=1)
    if len(data.vertex) == scan.num_vertices:
        out = torch.empty_like(probs)
        out[data.vertex] = probs
    else:
        everywhere = torch.from_numpy(scan.pos).to(device)
        out = ops.interpolate(probs, data.pos, everywhere, k=3)
    return out.cpu().numpy()
