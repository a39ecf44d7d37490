"""A segmentor: a registered backbone's per-point features and the heads that read them."""

from __future__ import annotations

from typing import Any, NamedTuple

from torch import Tensor, nn

from geot.models.common import SegHead, mlp


class Outputs(NamedTuple):
    """What the network says about each point (read the fields by name: more heads may come)."""

    logits: Tensor                  # (P, C) class scores
    feats: Tensor                   # (P, D) the features the heads read (modules use them too)
    offsets: Tensor | None = None   # (P, 3) vector to the centroid of the point's tooth (offset head)


class Segmentor(nn.Module):
    """Backbone features -> class logits and, with ``offset_head``, each point's offset to its tooth's centroid.

    The offset head is what lets the decoder tell touching teeth apart: points shifted by their offsets
    gather around one centre per tooth.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, dropout: float = 0.0, offset_head: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = SegHead(backbone.out_channels, num_classes, dropout)
        c = backbone.out_channels
        self.offset_head = nn.Sequential(mlp([c, c]), nn.Linear(c, 3)) if offset_head else None
        self.feat_dim: int = c
        self._register_load_state_dict_pre_hook(_upgrade_keys)

    def forward(self, x: Tensor, pos: Tensor, batch: Tensor) -> Outputs:
        feats = self.backbone(x, pos, batch)
        offsets = self.offset_head(feats) if self.offset_head is not None else None
        return Outputs(self.head(feats), feats, offsets)


def _upgrade_keys(state_dict: dict[str, Any], prefix: str, *_: Any) -> None:
    """Checkpoints from before the segmentor kept the backbone's weights at the top level: nest them."""
    own = [k for k in state_dict if k.startswith(prefix)]
    if any(k.startswith(prefix + "backbone.") for k in own):
        return
    for key in own:
        rest = key[len(prefix):]
        if not rest.startswith(("head.", "offset_head.")) and rest != "n_averaged":
            state_dict[prefix + "backbone." + rest] = state_dict.pop(key)
