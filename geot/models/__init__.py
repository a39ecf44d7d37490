"""Segmentation networks: a registered backbone plus heads, built from a config by :func:`build_model`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from geot.models.registry import BACKBONES
from geot.models.segmentor import Outputs, Segmentor

if TYPE_CHECKING:
    from geot.config import Config

__all__ = ["BACKBONES", "Outputs", "Segmentor", "build_model", "count_parameters"]


def build_model(cfg: Config) -> Segmentor:
    """The network a config describes: inputs from the data settings, classes from the label scheme."""
    from geot.data.dataset import num_input_features
    from geot.labels import NUM_CLASSES

    backbone = BACKBONES.get_class(cfg.model.name)(in_channels=num_input_features(cfg.data.curvature),
                                                   **cfg.model.args)
    return Segmentor(backbone, NUM_CLASSES, cfg.model.dropout, cfg.model.offset_head)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
