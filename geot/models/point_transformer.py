"""Point Transformer U-Net: vector attention over kNN graphs at several resolutions.

Encoder levels keep ``ratio`` of the previous level's points (a prefix of the shuffled points by
default, farthest point sampling on request); transition-down max-pools each kept point's kNN in
the finer level; the decoder interpolates coarse features back (3-NN) and adds the skip connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from geot import ops
from geot.models.common import mlp
from geot.models.layers import VectorAttention
from geot.models.registry import BACKBONES


class TransformerBlock(nn.Module):
    """Pre-projection, vector self-attention over the kNN graph, post-projection, residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.lin_in = nn.Linear(channels, channels)
        self.attn = VectorAttention(channels, channels, pos_nn=mlp([3, channels], last_act=False),
                                    attn_nn=mlp([channels, channels], last_act=False))
        self.lin_out = nn.Linear(channels, channels)
        self.norm1, self.norm2 = nn.LayerNorm(channels), nn.LayerNorm(channels)
        self.act = nn.GELU()

    def forward(self, x: Tensor, pos: Tensor, edge_index: Tensor, table: Tensor | None = None) -> Tensor:
        """``table``: the same graph as a regular ``(N, k)`` neighbour table, when it is one (faster)."""
        h = self.lin_in(x)
        h = self.attn(h, pos, edge_index, table)
        h = self.act(self.norm1(h))
        return self.act(x + self.norm2(self.lin_out(h)))


class TransitionDown(nn.Module):
    """Keep a subset of points; each gathers its kNN in the finer level (relative xyz + features), max-pooled."""

    def __init__(self, c_in: int, c_out: int, ratio: float, k: int, sampling: str) -> None:
        super().__init__()
        self.ratio, self.k, self.sampling = ratio, k, sampling
        self.mlp = mlp([c_in + 3, c_out])

    def forward(self, x: Tensor, pos: Tensor, batch: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if self.sampling == "fps":
            idx = ops.fps(pos, self.ratio, batch)
        else:
            idx = ops.prefix_sample(batch, self.ratio)
        sub_pos, sub_batch = pos[idx], batch[idx]
        q, nb = ops.knn(pos, sub_pos, self.k, batch, sub_batch)
        table = ops.dense_neighbours(q, nb, len(idx), self.k)
        if table is not None:  # the same max-pool as below, as a dense reduction
            msg = self.mlp(torch.cat([x[table], pos[table] - sub_pos[:, None, :]], dim=2))
            return msg.max(dim=1).values, sub_pos, sub_batch
        msg = self.mlp(torch.cat([x[nb], pos[nb] - sub_pos[q]], dim=1))
        return ops.scatter_max(msg, q, len(idx)), sub_pos, sub_batch


class TransitionUp(nn.Module):
    """Interpolate coarse features onto the finer points and add the finer level's skip features."""

    def __init__(self, c_coarse: int, c_fine: int) -> None:
        super().__init__()
        self.coarse = mlp([c_coarse, c_fine])
        self.fine = mlp([c_fine, c_fine])

    def forward(self, x_coarse: Tensor, pos_coarse: Tensor, batch_coarse: Tensor, x_fine: Tensor, pos_fine: Tensor,
                batch_fine: Tensor) -> Tensor:
        up = ops.interpolate(self.coarse(x_coarse), pos_coarse, pos_fine, batch_coarse, batch_fine, k=3)
        return up + self.fine(x_fine)


class PointTransformerSettings(BaseModel):
    """Arguments of the Point Transformer U-Net (``model.args``)."""

    model_config = ConfigDict(extra="forbid")
    channels: list[int] = [32, 64, 128, 256]   # width of each level
    k: int = 16                                # neighbours per point
    ratio: float = 0.25                        # points kept per level
    sampling: Literal["random", "fps"] = "random"
    global_context: bool = True                # add a per-scan pooled feature at the bottleneck


@BACKBONES.register
class PointTransformer(nn.Module):
    """U-Net of Point Transformer blocks; ``channels[i]`` is the width at level i; per-point features out."""

    name = "point_transformer"
    Settings = PointTransformerSettings

    def __init__(self, in_channels: int, channels: Sequence[int] = (32, 64, 128, 256), k: int = 16,
                 ratio: float = 0.25, sampling: str = "random", global_context: bool = True) -> None:
        super().__init__()
        if sampling not in ("random", "fps"):
            raise ValueError(f"sampling must be 'random' or 'fps', not {sampling!r}")
        self.k = k
        self.stem = mlp([in_channels, channels[0]])
        self.enc = nn.ModuleList([TransformerBlock(channels[0])])
        self.down = nn.ModuleList()
        for c_prev, c in zip(channels[:-1], channels[1:], strict=False):
            self.down.append(TransitionDown(c_prev, c, ratio, k, sampling))
            self.enc.append(TransformerBlock(c))
        # the whole arch in one vector: which tooth a point is depends on where it sits in the full arch
        self.context = mlp([channels[-1], channels[-1]]) if global_context else None
        self.up = nn.ModuleList(TransitionUp(c, c_prev) for c_prev, c in zip(channels[:-1], channels[1:], strict=False))
        self.dec = nn.ModuleList(TransformerBlock(c) for c in channels[:-1])
        self.out_channels = channels[0]

    def forward(self, x: Tensor, pos: Tensor, batch: Tensor) -> Tensor:
        """Per-point features (``out_channels`` each)."""
        x = self.stem(x)
        levels = []
        for i, block in enumerate(self.enc):
            if i > 0:
                x, pos, batch = self.down[i - 1](x, pos, batch)
            edge_index = ops.knn_graph(pos, self.k, batch)
            table = ops.dense_neighbours(edge_index[1], edge_index[0], len(pos), self.k)  # shared with the decoder
            x = block(x, pos, edge_index, table)
            levels.append((x, pos, batch, edge_index, table))
        if self.context is not None:
            x = x + self.context(ops.global_max_pool(x, batch))[batch]
        for i in reversed(range(len(self.dec))):
            x_f, pos_f, batch_f, edge_f, table_f = levels[i]
            x = self.up[i](x, pos, batch, x_f, pos_f, batch_f)
            x = self.dec[i](x, pos_f, edge_f, table_f)
            pos, batch = pos_f, batch_f
        return x
