"""Typed configuration, loaded from YAML; unknown keys are errors, the resolved config is saved with every run."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from geot.data.augment import STRONG, WEAK, Augment
from geot.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    num_points: int = 16000           # points sampled per scan (all when the scan has fewer)
    align: bool = True                # rotate scans to the canonical jaw frame
    curvature: bool = False           # add signed curvature to the inputs
    labelled_fraction: float = Field(0.2, gt=0, le=1)  # of the training patients (neither validation nor test)
    val_fraction: float = Field(0.1, ge=0, lt=1)       # of all patients: they pick the checkpoint
    test_fraction: float = Field(0.2, ge=0, lt=1)      # of all patients: held out from every choice (data/splits.py)
    split_seed: int = 0               # draws validation and labelled patients
    test_seed: int = 0                # draws the test patients (independent of everything else)


class ModelConfig(_Strict):
    backbone: Literal["point_transformer", "dgcnn"] = "point_transformer"
    channels: list[int] = Field(default_factory=lambda: [32, 64, 128, 256])
    k: int = 16
    ratio: float = 0.25               # point_transformer: points kept per level
    sampling: Literal["random", "fps"] = "random"
    global_context: bool = True       # point_transformer: add a per-scan pooled feature at the bottleneck
    global_channels: int = 512        # dgcnn only
    dropout: float = 0.0

    def kwargs(self) -> dict[str, Any]:
        if self.backbone == "dgcnn":
            return {"channels": self.channels, "k": self.k, "global_channels": self.global_channels,
                    "dropout": self.dropout}
        return {"channels": self.channels, "k": self.k, "ratio": self.ratio, "sampling": self.sampling,
                "dropout": self.dropout, "global_context": self.global_context}


class AugmentConfig(_Strict):
    labelled: Augment = WEAK
    weak: Augment = WEAK               # the teacher's view of unlabelled scans
    strong: Augment = STRONG           # the student's view of the same points


class OptimConfig(_Strict):
    epochs: int = 40
    steps_per_epoch: int = 40
    batch_labelled: int = 2
    batch_unlabelled: int = 2
    lr: float = 2e-3
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    schedule: Literal["cosine", "constant"] = "cosine"


class SemiConfig(_Strict):
    method: Literal["supervised", "mean_teacher", "fixmatch", "geot"] = "geot"
    warmup_epochs: int = 10           # supervised only, before unlabelled scans join
    ema_decay: float = 0.99           # teacher = EMA of the student
    unsup_weight: float = 1.0
    rampup_epochs: int = 5            # sigmoid ramp-up of unsup_weight after warm-up
    threshold: float | None = None    # confidence a pseudo label needs; None: 0.9 fixmatch, 0 geot


class GeoTConfig(_Strict):
    """GeoT's noise model; ``reference_*`` switches reproduce the public code's behaviour (DEVELOPERS.md)."""

    idtm: bool = True                 # False: pseudo labels used as clean (the "without IDTM" ablation)
    soft_targets: bool = False        # True: the teacher's posteriors as targets instead of its argmax
    correction: Literal["probs", "logits"] = "probs"   # T^T p on probabilities (fix) or on logits (reference)
    instance_weight: float = 0.1      # 1 - lambda: share of the instance matrix in T_i
    class_estimate: Literal["anchor", "posterior"] = "anchor"  # class-level estimate (DEVELOPERS.md, beyond the paper)
    class_ema: float = 0.99           # EMA decay of the class-level matrix (per step)
    anchor_confidence: float = 0.5    # update a class's row only if its anchor is this confident (reference: 0)
    class_mean: Literal["class_mean", "reference_bug"] = "class_mean"
    plgr_weight: float = 0.1
    plgr_k: int = 16
    plgr_sigma: float = 1.0           # Gaussian width in units of the scan's median neighbour distance
    plgr_sigma_absolute: bool = False  # reference: sigma in unit-sphere units (weights ~1)
    clgs_weight: float = 0.1          # share of the arch prior in the class-level matrix (reference ~1e-6)
    clgs_sigma: float = 0.4           # initial width of each class's arch Gaussian, in arch positions
    sigma_softplus: bool = True       # keep sigma positive (reference: raw parameter)
    rownorm_bug: bool = False         # reference's column-by-rowsum division


class Config(_Strict):
    seed: int = 0
    device: str = "auto"
    val_every: int = 5                # epochs between validations
    tensorboard: bool = False         # also log to out/tensorboard (needs the 'tb' extra)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    semi: SemiConfig = Field(default_factory=SemiConfig)
    geot: GeoTConfig = Field(default_factory=GeoTConfig)
    modules: list[dict[str, Any]] = Field(default_factory=list)   # auxiliary modules (docs/modules.md)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read a YAML config (defaults when None), apply dotted overrides, validate everything."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read config ({exc})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: config must be a mapping of sections")
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        where = f"{path}: " if path else ""
        raise ConfigError(f"{where}invalid config - " + "; ".join(lines)) from None


def config_dict(cfg: Config) -> dict[str, Any]:
    """Plain JSON-able dict (for checkpoints and run folders)."""
    return cfg.model_dump(mode="json")


def save_config(cfg: Config, path: str | Path) -> None:
    from geot.io.atomic import atomic_write

    with atomic_write(path, "w") as f:
        yaml.safe_dump(config_dict(cfg), f, sort_keys=False)
