"""A new method and a new backbone are one class each: registered, they train without touching geot."""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from geot.config import load_config
from geot.data.sources import gather_data
from geot.data.synth import write_synthetic_dataset
from geot.engine.predict import Segmenter
from geot.engine.train import train
from geot.method import METHODS, Method
from geot.models import BACKBONES
from tests.engine.test_train import TINY, read_log


class EntropySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    temperature: float = 1.0


class EntropyMinimisation(Method):
    """Grandvalet & Bengio (NeurIPS 2004): the student's predictions on unlabelled points should be confident."""

    name = "entropy_min"
    Settings = EntropySettings

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = temperature

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.section("entropy_min").temperature)

    def forward(self, logits: Tensor, probs_weak: Tensor, targets: Tensor, raw_pos: Tensor, batch: Tensor,
                weight: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        p = torch.softmax(logits / self.temperature, dim=1)
        loss = -(p * torch.log(p.clamp(min=1e-12))).sum(1).mean()
        return loss, {"entropy": loss.item()}


class PointMLPSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    width: int = 16


class PointMLP(nn.Module):
    """Per-point MLP on the inputs (no neighbours): the smallest possible backbone."""

    name = "point_mlp"
    Settings = PointMLPSettings

    def __init__(self, in_channels: int, width: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_channels, width), nn.GELU(), nn.Linear(width, width))
        self.out_channels = width

    def forward(self, x: Tensor, pos: Tensor, batch: Tensor) -> Tensor:
        return self.net(x)


def test_a_registered_method_and_backbone_train_and_predict(tmp_path, monkeypatch):
    monkeypatch.setitem(METHODS._items, "entropy_min", EntropyMinimisation)
    monkeypatch.setitem(BACKBONES._items, "point_mlp", PointMLP)
    write_synthetic_dataset(tmp_path / "jaws", n=8, seed=0, resolution=0.25)
    overrides = {**TINY, "semi.method": "entropy_min", "entropy_min.temperature": 2.0,
                 "model.name": "point_mlp", "model.args": {"width": 24}}
    cfg = load_config(overrides=overrides)
    assert cfg.section("entropy_min").temperature == 2.0 and cfg.model.args == {"width": 24}
    train(cfg, gather_data(cfg, tmp_path / "jaws", cache_dir=tmp_path / "cache"), tmp_path / "run", progress=False)
    rows = read_log(tmp_path / "run")
    assert float(rows[-1]["entropy"]) > 0 and "unsup_weight" in rows[-1]  # the method's unlabelled loss ran
    segmenter = Segmenter.load(tmp_path / "run")                           # the saved config rebuilds it
    assert isinstance(segmenter.model.backbone, PointMLP) and segmenter.model.feat_dim == 24
