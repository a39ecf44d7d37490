"""DGCNN-style backbone: EdgeConv layers over kNN graphs and a per-scan global feature, per-point features out.

The lighter backbone. The first graph is built in 3D; with ``dynamic`` the later ones are rebuilt in
feature space, as in the original DGCNN (slower on CPU).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from geot import ops
from geot.models.common import mlp
from geot.models.layers import EdgeConv
from geot.models.registry import BACKBONES


class DGCNNSettings(BaseModel):
    """Arguments of the DGCNN backbone (``model.args``)."""

    model_config = ConfigDict(extra="forbid")
    channels: list[int] = [64, 64, 128]   # width of each EdgeConv layer
    global_channels: int = 512            # the per-scan feature
    k: int = 16                           # neighbours per point
    dynamic: bool = False                 # rebuild later graphs in feature space (slower on CPU)


@BACKBONES.register
class DGCNN(nn.Module):
    """EdgeConv x len(channels), concatenated, lifted to ``global_channels``, max-pooled per scan."""

    name = "dgcnn"
    Settings = DGCNNSettings

    def __init__(self, in_channels: int, channels: Sequence[int] = (64, 64, 128), global_channels: int = 512,
                 k: int = 16, dynamic: bool = False) -> None:
        super().__init__()
        self.k, self.dynamic = k, dynamic
        dims = [in_channels, *channels]
        self.convs = nn.ModuleList(EdgeConv(mlp([2 * a, b, b]))
                                   for a, b in zip(dims[:-1], dims[1:], strict=True))
        self.lift = mlp([sum(channels), global_channels])
        self.fuse = mlp([sum(channels) + global_channels, 256])
        self.out_channels = 256

    def forward(self, x: Tensor, pos: Tensor, batch: Tensor) -> Tensor:
        """Per-point features (``out_channels`` each)."""
        edge_index = ops.knn_graph(pos, self.k, batch)
        outs = []
        for i, conv in enumerate(self.convs):
            if self.dynamic and i > 0:
                edge_index = ops.knn_graph(x, self.k, batch)
            table = ops.dense_neighbours(edge_index[1], edge_index[0], len(x), self.k)
            x = conv(x, edge_index, table)
            outs.append(x)
        local = torch.cat(outs, dim=1)
        glob = ops.global_max_pool(self.lift(local), batch)[batch]
        return self.fuse(torch.cat([local, glob], dim=1))

