"""State that modules keep across steps and checkpoints: per-point memories and running class statistics.

Buffers that start empty take their size from the data on first use, and from the checkpoint on load, so
a resumed run restores them exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class PointMemory(nn.Module):
    """A (C,)-vector per point, addressed by (scan, vertex); grows as new points appear; checkpointed.

    Kept as a dense table over the scans of the run: ``num_scans`` x ``max_vertices`` rows, allocated on
    first use (fp32; about 0.6 GB for 1,000 scans of 8k vertices and a jaw's classes per vertex).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.register_buffer("table", torch.zeros(0, 0, dim))
        self.register_buffer("seen", torch.zeros(0, 0, dtype=torch.bool))

    def _grow(self, index: Tensor) -> None:
        scans, verts = int(index[:, 0].max()) + 1, int(index[:, 1].max()) + 1
        if scans <= self.table.shape[0] and verts <= self.table.shape[1]:
            return
        s, v = max(scans, self.table.shape[0]), max(verts, self.table.shape[1])
        table = torch.zeros(s, v, self.dim, dtype=self.table.dtype, device=self.table.device)
        seen = torch.zeros(s, v, dtype=torch.bool, device=self.table.device)
        table[: self.table.shape[0], : self.table.shape[1]] = self.table
        seen[: self.seen.shape[0], : self.seen.shape[1]] = self.seen
        self.table, self.seen = table, seen

    def get(self, index: Tensor, default: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Stored vectors and a mask of which points were stored before (others get ``default`` or 0)."""
        self._grow(index)
        values = self.table[index[:, 0], index[:, 1]]
        seen = self.seen[index[:, 0], index[:, 1]]
        if default is not None:
            values = torch.where(seen[:, None], values, default)
        return values, seen

    def set(self, index: Tensor, values: Tensor) -> None:
        self._grow(index)
        self.table[index[:, 0], index[:, 1]] = values.detach().to(self.table.dtype)
        self.seen[index[:, 0], index[:, 1]] = True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # sizes come from the checkpoint
        self.table = torch.empty_like(state_dict[prefix + "table"])
        self.seen = torch.empty_like(state_dict[prefix + "seen"])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class ResizableState(nn.Module):
    """Mixin: buffers that start empty and take their size from data take it from a checkpoint on load."""

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name, buf in list(self._buffers.items()):
            key = prefix + name
            if buf is not None and key in state_dict and state_dict[key].shape != buf.shape:
                self._buffers[name] = torch.empty_like(state_dict[key], device=buf.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class ClassMeans(ResizableState):
    """Running (EMA) class means of features, sized on first use; ``seen`` marks classes with a mean."""

    def __init__(self, num_classes: int, momentum: float = 0.9) -> None:
        super().__init__()
        self.num_classes, self.momentum = num_classes, momentum
        self.register_buffer("means", torch.zeros(num_classes, 0))
        self.register_buffer("seen", torch.zeros(num_classes, dtype=torch.bool))

    @torch.no_grad()
    def update(self, feats: Tensor, labels: Tensor) -> None:
        if feats is None or len(feats) == 0:
            return
        feats = feats.detach().float()
        if self.means.shape[1] != feats.shape[1]:
            self.means = torch.zeros(self.num_classes, feats.shape[1], device=feats.device)
            self.seen = torch.zeros(self.num_classes, dtype=torch.bool, device=feats.device)
        sums = torch.zeros_like(self.means).index_add_(0, labels, feats)
        counts = torch.bincount(labels, minlength=self.num_classes).to(feats)
        present = counts > 0
        batch = sums[present] / counts[present, None]
        old = self.means[present]
        blend = torch.where(self.seen[present, None], self.momentum * old + (1 - self.momentum) * batch, batch)
        self.means[present] = blend
        self.seen |= present
