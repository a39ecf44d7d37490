"""Graph layers over kNN neighbourhoods in plain torch: vector attention and edge convolution.

They have the parameters, state-dict keys and formulas of PyG's ``PointTransformerConv`` and ``EdgeConv``
(so checkpoints trained with those load unchanged; tests compare the two), without importing PyG, whose
import alone took longer than segmenting a scan. Each reduces over neighbours in one of two ways: dense
ops over a regular ``(N, k)`` neighbour table (several times faster on CPU), or scatters over the edge
list when the graph is not regular (a scan with fewer than ``k`` points). Edge lists use PyG's
``source_to_target`` layout: ``edge_index[1]`` is the centre, ``edge_index[0]`` its neighbour.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from geot import ops


class VectorAttention(nn.Module):
    """Point Transformer vector self-attention: a softmax per channel over each point's neighbours and itself.

    ``out_i = sum_j softmax_j(attn_nn(lin_dst(x_i) - lin_src(x_j) + d_ij)) * (lin(x_j) + d_ij)`` with the
    relative-position encoding ``d_ij = pos_nn(pos_i - pos_j)``.
    """

    def __init__(self, in_channels: int, out_channels: int, pos_nn: nn.Module,
                 attn_nn: nn.Module | None = None) -> None:
        super().__init__()
        self.pos_nn = pos_nn
        self.attn_nn = attn_nn
        self.lin = nn.Linear(in_channels, out_channels, bias=False)
        self.lin_src = nn.Linear(in_channels, out_channels, bias=False)
        self.lin_dst = nn.Linear(in_channels, out_channels, bias=False)

    def forward(self, x: Tensor, pos: Tensor, edge_index: Tensor, table: Tensor | None = None) -> Tensor:
        """``table``: the same graph as a regular ``(N, k)`` neighbour table, when it is one (faster)."""
        values, keys, queries = self.lin(x), self.lin_src(x), self.lin_dst(x)
        if table is not None:
            table = torch.cat([table, torch.arange(len(x), device=x.device)[:, None]], dim=1)  # + self loop
            delta = self.pos_nn(pos[:, None, :] - pos[table])                                   # (N, k+1, C)
            alpha = self._attend(queries[:, None, :] - keys[table] + delta)
            return (torch.softmax(alpha, dim=1) * (values[table] + delta)).sum(dim=1)
        nb, centre = edge_index
        loops = torch.arange(len(x), device=x.device)
        other = nb != centre  # every point attends to itself exactly once
        nb, centre = torch.cat([nb[other], loops]), torch.cat([centre[other], loops])
        delta = self.pos_nn(pos[centre] - pos[nb])
        alpha = ops.scatter_softmax(self._attend(queries[centre] - keys[nb] + delta), centre, len(x))
        return ops.scatter_sum(alpha * (values[nb] + delta), centre, len(x))

    def _attend(self, alpha: Tensor) -> Tensor:
        return alpha if self.attn_nn is None else self.attn_nn(alpha)


class EdgeConv(nn.Module):
    """DGCNN edge convolution: ``out_i = max_j nn([x_i, x_j - x_i])`` over the neighbours of each point."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.nn = net  # PyG's attribute name: checkpoints hold ``convs.<i>.nn.*``

    def forward(self, x: Tensor, edge_index: Tensor, table: Tensor | None = None) -> Tensor:
        """``table``: the same graph as a regular ``(N, k)`` neighbour table, when it is one (faster)."""
        if table is not None:
            centre = x[:, None, :].expand(-1, table.shape[1], -1)
            return self.nn(torch.cat([centre, x[table] - centre], dim=-1)).max(dim=1).values
        nb, centre = edge_index
        return ops.scatter_max(self.nn(torch.cat([x[centre], x[nb] - x[centre]], dim=1)), centre, len(x))
