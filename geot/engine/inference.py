"""Segment one prepared scan: the network's posteriors (and offsets) for every vertex.

The network was trained on ``num_points`` random vertices of a scan. A scan with more vertices is covered
by several such samples, disjoint where possible, so that every vertex gets a posterior from the network
itself; where samples overlap the posteriors are averaged. Interpolation from the nearest covered vertices
is left for meshes too large to cover in ``MAX_PASSES`` samples (and for ``passes=1``, the old way).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from geot import ops
from geot.data.dataset import PreparedScan, item_generator, point_inputs
from geot.errors import GeotError

MAX_PASSES = 8  # forward passes per scan before the rest is interpolated (32k vertices at 4096 points)


@dataclass(frozen=True)
class Posteriors:
    """What the network says about every vertex of a scan."""

    probs: np.ndarray                  # (V, C) class posteriors
    offsets: np.ndarray | None         # (V, 3) vector to the tooth centroid, canonical frame (offset head)
    covered: float                     # share of vertices the network saw itself (the rest interpolated)


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when present, else the CPU; a device this machine cannot use is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise GeotError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise GeotError(f"device {name!r} asked for, but this torch ({torch.__version__}) sees no CUDA GPU; "
                            "use --device cpu, or install a CUDA build of torch (README: Installing on a GPU)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise GeotError(f"device {name!r}: this machine has {torch.cuda.device_count()} GPU(s)")
    elif device.type != "cpu":
        raise GeotError(f"device {name!r} is not supported; use auto, cpu, cuda or cuda:N")
    return device


def _rotation_z(degrees: float) -> torch.Tensor:
    a = math.radians(degrees)
    return torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])


def tta_angles(views: int, spread: float = 10.0) -> list[float]:
    """Rotations about the occlusal axis for ``views`` test-time views: 0, then +-spread/k, ... (degrees)."""
    return [0.0] + [s * spread * math.ceil(i / 2) / math.ceil((views - 1) / 2)
                    for i, s in zip(range(1, views), [1, -1] * views, strict=False)]


@torch.no_grad()
def segment(model: nn.Module, scan: PreparedScan, num_points: int, use_curvature: bool = False,
            device: torch.device | str = "cpu", seed: int = 0, passes: int | None = None,
            views: int = 1) -> Posteriors:
    """Posteriors for every vertex of ``scan``.

    ``passes=None`` covers the scan: ``ceil(V / num_points)`` samples (at most ``MAX_PASSES``) of one seeded
    shuffle, so each vertex is seen at least once; ``passes=1`` is one sample plus interpolation. ``views > 1``
    adds test-time views rotated about the occlusal axis (their outputs are rotated back and averaged).
    """
    v = scan.num_vertices
    n = v if num_points <= 0 else min(num_points, v)
    wanted = math.ceil(v / n) if passes is None else passes
    order = torch.randperm(v, generator=item_generator(seed, 0, 0))  # pass 0 is the sample training would draw
    pos, normal = torch.from_numpy(scan.pos), torch.from_numpy(scan.normal)
    curv = torch.from_numpy(scan.curvature) if use_curvature and scan.curvature is not None else None
    if use_curvature and curv is None:
        raise ValueError(f"{scan.name}: prepared without curvature but the model uses it")
    was_training = model.training
    model.eval()
    probs_sum = offsets_sum = None
    seen = torch.zeros(v, dtype=torch.float32)
    for p in range(min(wanted, MAX_PASSES)):
        idx = order[(p * n + torch.arange(n)) % v]
        for angle in tta_angles(views):
            rot = _rotation_z(angle)
            p_pos, p_normal = pos[idx] @ rot.T, normal[idx] @ rot.T
            x = point_inputs(p_pos, p_normal, curv[idx] if curv is not None else None, scan.jaw)
            batch = torch.zeros(n, dtype=torch.long, device=device)
            out = model(x.to(device), p_pos.to(device), batch)
            probs = torch.softmax(out.logits.float(), dim=1).cpu()
            probs_sum = torch.zeros(v, probs.shape[1]) if probs_sum is None else probs_sum
            probs_sum.index_add_(0, idx, probs)
            if out.offsets is not None:
                offsets_sum = torch.zeros(v, 3) if offsets_sum is None else offsets_sum
                offsets_sum.index_add_(0, idx, out.offsets.float().cpu() @ rot)  # back to the unrotated frame
            seen.index_add_(0, idx, torch.ones(n))
    model.train(was_training)
    covered = seen > 0
    probs = probs_sum / seen.clamp(min=1)[:, None]
    offsets = offsets_sum / seen.clamp(min=1)[:, None] if offsets_sum is not None else None
    if not covered.all():  # too large to cover: the rest from the 3 nearest covered vertices
        rest = ~covered
        probs[rest] = ops.interpolate(probs[covered], pos[covered], pos[rest], k=3)
        if offsets is not None:
            offsets[rest] = ops.interpolate(offsets[covered], pos[covered], pos[rest], k=3)
    return Posteriors(probs.numpy(), offsets.numpy() if offsets is not None else None,
                      float(covered.float().mean()))
