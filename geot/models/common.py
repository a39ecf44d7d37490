"""Building blocks shared by the backbones."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def mlp(channels: Sequence[int], last_act: bool = True) -> nn.Sequential:
    """Linear -> LayerNorm -> GELU stack (per point, so no statistic mixes scans or batches)."""
    layers: list[nn.Module] = []
    for i, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:], strict=True)):
        layers.append(nn.Linear(c_in, c_out))
        if i < len(channels) - 2 or last_act:
            layers += [nn.LayerNorm(c_out), nn.GELU()]
    return nn.Sequential(*layers)


class SegHead(nn.Module):
    """Per-point classifier on backbone features."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_channels, in_channels), nn.LayerNorm(in_channels), nn.GELU(),
                                 nn.Dropout(dropout), nn.Linear(in_channels, num_classes))

    def forward(self, x):  # noqa: D102
        return self.net(x)
