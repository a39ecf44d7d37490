"""Typed configuration, loaded from YAML; unknown keys are errors, the resolved config is saved with every run."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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
    """A registered backbone (``name``) built with ``args``, and the heads that read its features."""

    name: str = "point_transformer"   # geot.models.BACKBONES
    args: dict[str, Any] = Field(default_factory=dict)  # the backbone's own settings (its ``Settings`` class)
    dropout: float = 0.0              # before the class head's last layer
    offset_head: bool = False         # also predict each point's offset to its tooth's centroid (for instances)

    @model_validator(mode="before")
    @classmethod
    def _flat_keys(cls, raw: Any) -> Any:
        """Configs from before the registry kept the backbone's settings beside ``backbone``: move them."""
        if not isinstance(raw, dict):
            return raw
        raw = dict(raw)
        if "backbone" in raw:
            raw.setdefault("name", raw.pop("backbone"))
        moved = {k: raw.pop(k) for k in list(raw) if k not in cls.model_fields}
        if moved:
            raw["args"] = {**(raw.get("args") or {}), **moved}  # a flat override beats the file's args
        return raw

    @model_validator(mode="after")
    def _backbone_args(self) -> ModelConfig:
        from geot.models import BACKBONES

        settings = BACKBONES.get_class(self.name).Settings
        try:
            self.args = settings.model_validate(self.args).model_dump(mode="json")
        except ValidationError as exc:
            raise ValueError(_messages(exc, f"model.args ({self.name})")) from None
        return self


class LossConfig(_Strict):
    """Terms of the loss on labelled scans besides the method's own (cross-entropy by default)."""

    dice_weight: float = 0.0          # soft Dice over the classes of each scan: small and rare teeth count
    offset_weight: float = 10.0       # L1 of offsets to tooth centroids (with model.offset_head); offsets are in
                                      # unit-sphere units, about 0.05 per tooth radius, so 10 puts the term near CE


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
    warmup_steps: int = 0             # linear learning-rate warm-up before the schedule
    minutes: float | None = None      # wall-clock budget: epochs fit to their cost, corrected at each validation
    autocast: Literal["none", "bf16"] = "none"  # bf16: forward passes in bfloat16 where safe (faster on CPUs with
                                      # AVX-512 BF16 or AMX; weights and optimiser stay float32)


class SemiConfig(_Strict):
    """What every semi-supervised method shares; a method's own settings live in its section (e.g. ``geot:``)."""

    method: str = "geot"              # geot.method.METHODS
    warmup_epochs: int = 10           # supervised only, before unlabelled scans join
    ema_decay: float = 0.99           # teacher = EMA of the student (methods that keep a teacher)
    unsup_weight: float = 1.0
    rampup_epochs: int = 5            # sigmoid ramp-up of unsup_weight after warm-up
    threshold: float | None = None    # confidence a pseudo label needs; None: the method's default
    decode_pseudo_labels: bool = False  # pseudo labels through the dentition decoder (each code once, in arch order)

    @field_validator("method")
    @classmethod
    def _registered(cls, name: str) -> str:
        from geot.method import METHODS

        METHODS.get_class(name)  # unknown methods list the registered ones
        return name


class Config(_Strict):
    """Every setting of a run. Besides the sections below, each registered method may have a section of its
    own named after it (``geot:``), validated by the method's ``Settings``; absent sections take defaults."""

    model_config = ConfigDict(extra="allow")

    seed: int = 0
    device: str = "auto"
    val_every: int = Field(5, ge=1)   # epochs between validations
    snapshot_every: int = 0           # epochs between weight snapshots (checkpoints/snapshots/), 0: none
    log_grad_norms: bool = False      # log each loss term's gradient norm on the network (first step of epochs)
    tensorboard: bool = False         # also log to out/tensorboard (needs the 'tb' extra)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    semi: SemiConfig = Field(default_factory=SemiConfig)
    modules: list[dict[str, Any]] = Field(default_factory=list)   # auxiliary modules (docs/modules.md)

    @model_validator(mode="after")
    def _method_sections(self) -> Config:
        from geot.method import METHODS

        extra = self.__pydantic_extra__ if self.__pydantic_extra__ is not None else {}
        sections = {name: cls.Settings for name, cls in METHODS.items() if cls.Settings is not None}
        unknown = sorted(set(extra) - set(sections))
        if unknown:
            raise ValueError(f"unknown section(s) {unknown}; method sections: {sorted(sections)}")
        for name, settings in sections.items():
            try:
                extra[name] = settings.model_validate(extra.get(name) or {})
            except ValidationError as exc:
                raise ValueError(_messages(exc, name)) from None
        return self

    def section(self, method: str) -> BaseModel | None:
        """The settings section of a registered method (None for methods without settings)."""
        return (self.__pydantic_extra__ or {}).get(method)


def _messages(exc: ValidationError, where: str) -> str:
    return "; ".join(f"{where}.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs as dotted config overrides; values are YAML (numbers, lists, true; words stay words)."""
    out: dict[str, Any] = {}
    for item in pairs:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key.strip()}: cannot read value {value!r} ({exc.problem})") from None
    return out


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


def read_variant(path: str | Path) -> dict[str, Any]:
    """A partial config (a variant such as an ablation) as dotted overrides to lay over a full config."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read config variant ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config variant must be a mapping of sections")

    def flat(node: dict[str, Any], prefix: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in node.items():
            if isinstance(value, dict) and value and key != "args":
                out.update(flat(value, f"{prefix}{key}."))
            else:
                out[f"{prefix}{key}"] = value
        return out

    return flat(raw, "")
