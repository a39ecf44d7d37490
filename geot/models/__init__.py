"""Segmentation backbones, chosen by name in the config."""

from __future__ import annotations

from typing import Any

from torch import nn

from geot.models.dgcnn import DGCNN
from geot.models.point_transformer import PointTransformerSeg

BACKBONES: dict[str, type[nn.Module]] = {"point_transformer": PointTransformerSeg, "dgcnn": DGCNN}


def build_model(name: str, in_channels: int, num_classes: int, **kwargs: Any) -> nn.Module:
    """Instantiate a backbone by name; unknown names list the choices."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose from {sorted(BACKBONES)}")
    return BACKBONES[name](in_channels=in_channels, num_classes=num_classes, **kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
