"""Reductions over groups of rows in plain torch: the points of each scan, the edges into each point.

Layers reduce over regular neighbour tables with dense ops when they can; these are for everything else
(irregular edge lists, per-scan pooling). Plain torch, so predicting needs no graph library.
"""

from __future__ import annotations

from torch import Tensor


def scatter_max(src: Tensor, index: Tensor, size: int) -> Tensor:
    """``(size, C)``: row ``i`` is the channel-wise max of the rows of ``src`` whose ``index`` is ``i``; 0 if none."""
    out = src.new_zeros(size, src.shape[1])
    return out.scatter_reduce(0, index[:, None].expand_as(src), src, "amax", include_self=False)


def scatter_sum(src: Tensor, index: Tensor, size: int) -> Tensor:
    """``(size, C)``: row ``i`` is the sum of the rows of ``src`` whose ``index`` is ``i``."""
    return src.new_zeros(size, src.shape[1]).index_add(0, index, src)


def scatter_softmax(src: Tensor, index: Tensor, size: int) -> Tensor:
    """Softmax of each channel of ``src`` over the rows that share an ``index`` (e.g. the edges into a point)."""
    top = scatter_max(src.detach(), index, size)[index]  # a shift per group keeps exp finite; softmax ignores it
    weights = (src - top).exp()
    return weights / scatter_sum(weights, index, size)[index]


def global_max_pool(x: Tensor, batch: Tensor) -> Tensor:
    """``(scans, C)``: the channel-wise max over the points of each scan of a flat batch."""
    return scatter_max(x, batch, int(batch.max()) + 1)
