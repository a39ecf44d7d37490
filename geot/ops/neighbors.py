"""Neighbour operations on flat-batched clouds (PyG layout: points of all scans stacked, ``batch`` ids).

torch-cluster does the work when it is installed; a pure-torch fallback (chunked ``cdist`` + ``topk``)
gives the same results more slowly. ``GEOT_NEIGHBORS=torch`` forces the fallback; ``GEOT_DENSE=0`` turns off
the dense neighbour tables (see :func:`dense_neighbours`). Every other module
goes through these functions, so a change of library is a change here only.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor

try:  # compiled extension; optional
    import torch_cluster as _tc
except ImportError:  # pragma: no cover - depends on the install
    _tc = None

_CHUNK = 2048  # query rows per cdist block: bounds the fallback's memory to chunk x points
_F = TypeVar("_F", bound=Callable)


def _profiled(label: str) -> Callable[[_F], _F]:
    """Name the op in torch.profiler traces (tools/benchmark.py adds up time per label)."""

    def wrap(fn: _F) -> _F:
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            with torch.profiler.record_function(label):
                return fn(*args, **kwargs)

        return inner  # type: ignore[return-value]

    return wrap


def backend() -> str:
    """Which implementation is active: 'torch-cluster' or 'torch'."""
    if _tc is None or os.environ.get("GEOT_NEIGHBORS", "").lower() == "torch":
        return "torch"
    return "torch-cluster"


def _segments(batch: Tensor | None, n: int, scans: int = 1) -> list[tuple[int, int]]:
    """(start, end) of each of ``scans`` scans in a sorted batch vector."""
    if batch is None:
        return [(0, n)]
    counts = torch.bincount(batch, minlength=scans)
    ends = torch.cumsum(counts, 0).tolist()
    starts = [0, *ends[:-1]]
    return list(zip(starts, ends, strict=True))


@_profiled("geot.neighbours")
def knn(x: Tensor, y: Tensor, k: int, batch_x: Tensor | None = None, batch_y: Tensor | None = None) -> Tensor:
    """For each point of ``y``, its ``k`` nearest points of ``x`` in the same scan.

    Returns ``[2, E]``: row 0 indexes ``y`` (the query), row 1 indexes ``x`` (the neighbour), nearest first.
    A scan with fewer than ``k`` points in ``x`` yields all of them.
    """
    if backend() == "torch-cluster":
        return _tc.knn(x, y, k, batch_x, batch_y, num_workers=torch.get_num_threads())
    rows, cols = [], []
    scans = 1 + max((int(b.max()) for b in (batch_x, batch_y) if b is not None and len(b)), default=0)
    for (xs, xe), (ys, ye) in zip(_segments(batch_x, len(x), scans), _segments(batch_y, len(y), scans),
                                  strict=True):
        kk = min(k, xe - xs)
        if kk == 0 or ye == ys:
            continue
        for start in range(ys, ye, _CHUNK):
            stop = min(start + _CHUNK, ye)
            d = torch.cdist(y[start:stop], x[xs:xe])
            idx = d.topk(kk, dim=1, largest=False).indices
            rows.append(torch.arange(start, stop, device=x.device).repeat_interleave(kk))
            cols.append((idx + xs).reshape(-1))
    if not rows:
        return torch.empty(2, 0, dtype=torch.long, device=x.device)
    return torch.stack([torch.cat(rows), torch.cat(cols)])


@_profiled("geot.neighbours")
def knn_graph(pos: Tensor, k: int, batch: Tensor | None = None, loop: bool = False,
              centres: Tensor | None = None) -> Tensor:
    """k-nearest-neighbour graph in PyG's ``source_to_target`` layout: ``edge_index[1]`` is the centre.

    ``centres`` (sorted indices): only these points' neighbourhoods, among all points, for a loss that reads a
    random subset of them.
    """
    if centres is None and backend() == "torch-cluster":
        return _tc.knn_graph(pos, k, batch, loop=loop, num_workers=torch.get_num_threads())
    ids = torch.arange(len(pos), device=pos.device) if centres is None else centres
    q, nb = knn(pos, pos[ids], k + (0 if loop else 1), batch, None if batch is None else batch[ids])
    q = ids[q]
    if not loop:
        keep = q != nb
        q, nb = q[keep], nb[keep]
        # a point with a duplicate coordinate may lose a neighbour other than itself: keep k per centre
        counts = torch.bincount(q, minlength=len(pos))
        if (counts > k).any():
            rank = torch.arange(len(q), device=q.device) - (torch.cumsum(counts, 0) - counts)[q]
            q, nb = q[rank < k], nb[rank < k]
    return torch.stack([nb, q])


@_profiled("geot.sampling")
def fps(pos: Tensor, ratio: float, batch: Tensor | None = None) -> Tensor:
    """Farthest point sampling: indices of ``ceil(ratio * n)`` well-spread points per scan."""
    if backend() == "torch-cluster":
        return _tc.fps(pos, batch, ratio=ratio, random_start=False)
    out = []
    for s, e in _segments(batch, len(pos)):
        m = max(1, int(torch.ceil(torch.tensor(ratio * (e - s))).item()))
        p = pos[s:e]
        chosen = torch.zeros(m, dtype=torch.long, device=pos.device)
        dist = torch.full((e - s,), float("inf"), device=pos.device)
        for t in range(1, m):
            dist = torch.minimum(dist, ((p - p[chosen[t - 1]]) ** 2).sum(-1))
            chosen[t] = dist.argmax()
        out.append(chosen + s)
    return torch.cat(out)


@_profiled("geot.sampling")
def prefix_sample(batch: Tensor, ratio: float) -> Tensor:
    """The first ``ceil(ratio * n)`` points of every scan.

    Data loaders shuffle the points of each scan, so a prefix is a uniform random subsample, and the
    prefixes of successive ratios nest: a cheap, deterministic alternative to FPS on CPU.
    """
    counts = torch.bincount(batch)
    keep = torch.ceil(counts.to(torch.float64) * ratio).clamp(min=1).long()
    starts = torch.cumsum(counts, 0) - counts
    offsets = torch.arange(int(keep.sum()), device=batch.device) - torch.repeat_interleave(
        torch.cumsum(keep, 0) - keep, keep)
    return torch.repeat_interleave(starts, keep) + offsets


def dense_neighbours(query: Tensor, neighbour: Tensor, num_queries: int, k: int) -> Tensor | None:
    """The ``(num_queries, k)`` neighbour table of a kNN edge list, or None when it is not regular.

    kNN results list exactly ``k`` neighbours per query, grouped by query in order, unless a scan has
    fewer than ``k`` points. A regular list lets layers reduce over neighbours with ``reshape`` + dense
    ops, which on CPU run several times faster than ``scatter`` over the edge list. ``GEOT_DENSE=0`` always
    answers None, so layers take their scatter path (the training benchmark measures what dense tables gain).
    """
    if len(query) != num_queries * k or os.environ.get("GEOT_DENSE", "1") == "0":
        return None
    expected = torch.arange(num_queries, device=query.device).repeat_interleave(k)
    return neighbour.view(num_queries, k) if torch.equal(query, expected) else None


def interpolate(x: Tensor, pos_x: Tensor, pos_y: Tensor, batch_x: Tensor | None = None,
                batch_y: Tensor | None = None, k: int = 3, eps: float = 1e-8) -> Tensor:
    """Features at ``pos_y`` as the inverse-distance-weighted mean of the ``k`` nearest ``x`` (same scan)."""
    q, nb = knn(pos_x, pos_y, k, batch_x, batch_y)
    table = dense_neighbours(q, nb, len(pos_y), k)
    if table is not None:
        w = 1.0 / ((pos_x[table] - pos_y[:, None, :]).norm(dim=-1) + eps)
        return (x[table] * w[..., None].to(x.dtype)).sum(1) / w.sum(1).clamp(min=eps)[:, None].to(x.dtype)
    w = 1.0 / ((pos_x[nb] - pos_y[q]).norm(dim=-1) + eps)
    out = torch.zeros(len(pos_y), x.shape[1], dtype=x.dtype, device=x.device)
    norm = torch.zeros(len(pos_y), dtype=x.dtype, device=x.device)
    out.index_add_(0, q, x[nb] * w[:, None].to(x.dtype))
    norm.index_add_(0, q, w.to(x.dtype))
    return out / norm.clamp(min=eps)[:, None]
