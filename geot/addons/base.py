"""Extension points of geot, their registry, and what a training step tells the modules.

Five kinds of module, each a small interface:

* ``LossTerm``: an extra loss on a training step (``forward(ctx) -> (loss, logs)``).
* ``TargetTransform``: rewrites the soft pseudo-label targets before the method's objective sees them.
* ``PredictionRule``: turns per-vertex posteriors into labels at prediction time (default argmax).
* ``ScanSelector``: ranks unlabelled scans for annotation.
* ``Explainer``: per-vertex maps (uncertainty, saliency) for a segmented scan.

Modules keep their state (per-point memories, running statistics) in ``state_dict`` so it travels in
checkpoints, and may refresh it in ``on_epoch_end``. A ``Schedule`` scales a module's weight by epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from geot.errors import ConfigError


class Schedule(BaseModel):
    """Weight multiplier by epoch: 0 before ``start``, a linear ramp over ``ramp`` epochs, 0 from ``stop``.

    ``follow_ramp`` also multiplies by the semi-supervised ramp-up of the method's unsupervised loss;
    by default loss terms on unlabelled predictions follow it, so they grow with the pseudo-label loss
    instead of hitting a barely trained student at full weight.
    """

    model_config = ConfigDict(extra="forbid")
    start: int = 0
    ramp: int = 0
    stop: int | None = None
    follow_ramp: bool | None = None  # None: the module's default (``LossTerm.on_unlabelled``)

    def __call__(self, epoch: float) -> float:
        if epoch < self.start or (self.stop is not None and epoch >= self.stop):
            return 0.0
        if self.ramp <= 0:
            return 1.0
        return min(1.0, (epoch - self.start + 1) / self.ramp)


@dataclass
class StepContext:
    """What one training step knows, for the modules to read (fields are None when not available).

    Unlabelled fields cover the unlabelled points of the step, in batch order; ``point_index`` holds the
    (dataset scan index, vertex index) of each, a stable identity across epochs, sampling and views.

    ``*_anchor`` fields come from a frozen copy of the student taken when unlabelled scans join training
    (the supervised-only model); the trainer computes them only when a module sets the class attribute
    ``needs_anchor = True``. Target transforms that filter pseudo labels multiply their per-point weights
    into ``target_weight`` (``weigh``); the method's objective averages its per-point loss with them.
    """

    epoch: int
    step: int
    epochs: int
    logits_lab: Tensor | None = None       # (P_l, C) student, labelled scans
    labels: Tensor | None = None           # (P_l,)
    feats_lab: Tensor | None = None
    logits: Tensor | None = None           # (P_u, C) student, strong view of unlabelled scans
    feats: Tensor | None = None
    probs_teacher: Tensor | None = None    # (P_u, C) pseudo-label source, weak view
    point_index: Tensor | None = None      # (P_u, 2) long: scan, vertex
    pos: Tensor | None = None              # (P_u, 3) un-augmented canonical positions
    batch: Tensor | None = None            # (P_u,) scan of each point within the step
    head: nn.Module | None = None          # the classifier, for modules that score features
    feats_teacher: Tensor | None = None    # (P_u, D) features of the pseudo-label source, weak view
    logits_anchor: Tensor | None = None    # (P_u, C) frozen anchor, strong view (``needs_anchor``)
    feats_anchor: Tensor | None = None     # (P_u, D)
    feats_anchor_lab: Tensor | None = None  # (P_l, D) frozen anchor, labelled scans
    target_weight: Tensor | None = None    # (P_u,) weight of each point in the unsupervised objective
    ramp: float = 1.0                      # ramp-up factor of the unsupervised loss this step, in [0, 1]
    extras: dict[str, Any] = field(default_factory=dict)

    def weigh(self, weight: Tensor) -> None:
        """Multiply per-point weights (0 drops a pseudo label) into ``target_weight``."""
        weight = weight.detach().float()
        self.target_weight = weight if self.target_weight is None else self.target_weight * weight


class Addon(nn.Module):
    """Base of every module: a name, a weight, a schedule, state that checkpoints with the run."""

    kind: ClassVar[str] = "addon"
    name: ClassVar[str] = "addon"

    def __init__(self, weight: float = 1.0, schedule: Schedule | None = None) -> None:
        super().__init__()
        self.weight = weight
        self.schedule = schedule or Schedule()

    def scale(self, epoch: float) -> float:
        return self.weight * self.schedule(epoch)

    def on_epoch_end(self, epoch: int) -> None:
        """Refresh epoch-level state (prototypes, memories); most modules need nothing."""


class LossTerm(Addon):
    kind = "loss"
    on_unlabelled: ClassVar[bool] = False  # acts on unlabelled predictions: follows the ramp-up by default

    def follows_ramp(self) -> bool:
        return self.on_unlabelled if self.schedule.follow_ramp is None else self.schedule.follow_ramp

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        raise NotImplementedError


class TargetTransform(Addon):
    kind = "target"

    def forward(self, ctx: StepContext, targets: Tensor) -> Tensor:
        """(P_u, C) soft targets -> (P_u, C) soft targets, rows summing to 1 (no gradient)."""
        raise NotImplementedError


class PredictionRule(Addon):
    kind = "rule"

    def forward(self, probs: Tensor) -> Tensor:
        """(V, C) posteriors -> (V,) class indices."""
        raise NotImplementedError


class ScanSelector(Addon):
    kind = "selector"

    def forward(self, probs: list[Tensor], features: list[Tensor] | None = None) -> Tensor:
        """Per-scan posteriors (V_i, C) -> a score per scan; higher = annotate first."""
        raise NotImplementedError


class Explainer(Addon):
    kind = "explainer"

    def forward(self, model: nn.Module, x: Tensor, pos: Tensor, batch: Tensor) -> dict[str, Tensor]:
        """Per-point maps, name -> (P,) tensor."""
        raise NotImplementedError


REGISTRY: dict[str, type[Addon]] = {}


def register(cls: type[Addon]) -> type[Addon]:
    """Class decorator: make a module available by its ``name``."""
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        raise ValueError(f"two modules are named {cls.name!r}")
    REGISTRY[cls.name] = cls
    return cls


def _load_all() -> None:
    import geot.addons.library  # noqa: F401  (registers the shipped modules)


def build(spec: dict[str, Any], **context: Any) -> Addon:
    """One module from ``{name, weight?, schedule?, args?}``; ``context`` offers shared values by name."""
    _load_all()
    spec = dict(spec)
    name = spec.pop("name", None)
    if name not in REGISTRY:
        raise ConfigError(f"unknown module {name!r}; available: {sorted(REGISTRY)}")
    weight = spec.pop("weight", None)  # None: the module's own default weight
    schedule = Schedule.model_validate(spec.pop("schedule", {}))
    args = dict(spec.pop("args", {}))
    if spec:
        raise ConfigError(f"module {name!r}: unknown keys {sorted(spec)} (use name, weight, schedule, args)")
    cls = REGISTRY[name]
    wanted = getattr(cls, "context", ())
    if weight is not None:
        args["weight"] = float(weight)
    try:
        return cls(schedule=schedule, **{k: context[k] for k in wanted if k in context}, **args)
    except TypeError as exc:
        raise ConfigError(f"module {name!r}: {exc}") from None


class Addons(nn.Module):
    """The modules of a run, grouped by kind; one state_dict for the checkpoint."""

    def __init__(self, modules: list[Addon]) -> None:
        super().__init__()
        self.all = nn.ModuleList(modules)

    def of(self, kind: str) -> list[Addon]:
        return [m for m in self.all if m.kind == kind]

    def loss(self, ctx: StepContext) -> tuple[Tensor | None, dict[str, float]]:
        total, logs = None, {}
        for term in self.of("loss"):
            w = term.scale(ctx.epoch + ctx.step / 1e9) * (ctx.ramp if term.follows_ramp() else 1.0)
            if w == 0:
                continue
            value, term_logs = term(ctx)
            total = w * value if total is None else total + w * value
            logs.update({f"{term.name}/{k}": v for k, v in term_logs.items()})
        return total, logs

    def targets(self, ctx: StepContext, targets: Tensor) -> Tensor:
        for transform in self.of("target"):
            if transform.scale(ctx.epoch) > 0:
                targets = transform(ctx, targets)
        return targets

    def on_epoch_end(self, epoch: int) -> None:
        for module in self.all:
            module.on_epoch_end(epoch)


def build_addons(specs: list[dict[str, Any]], **context: Any) -> Addons:
    """All modules of a config's ``modules`` list."""
    return Addons([build(spec, **context) for spec in specs])


def point_keys(index: Tensor) -> Tensor:
    """(P, 2) scan/vertex pairs -> one int64 key per point."""
    return index[:, 0] * (1 << 32) + index[:, 1]


class PointMemory(nn.Module):
    """A (C,)-vector per point, addressed by (scan, vertex); grows as new points appear; checkpointed.

    Kept as a dense table over the scans of the run: ``num_scans`` x ``max_vertices`` rows, allocated on
    first use (fp32; about 0.6 GB for 1,000 scans of 8k vertices and 17 classes).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.register_buffer("table", torch.zeros(0, 0, dim))
        self.register_buffer("seen", torch.zeros(0, 0, dtype=torch.bool))

    def _grow(self, index: Tensor) -> None:
        scans, verts = int(index[:, 0].max()) + 1, int(index[:, 1].max()) + 1
        if scans <= self.table.shape[0] and verts <= self.table.shape[1]:
            return
        s, v = max(scans, self.table.shape[0]), max(verts, self.table.shape[1])
        table = torch.zeros(s, v, self.dim, dtype=self.table.dtype, device=self.table.device)
        seen = torch.zeros(s, v, dtype=torch.bool, device=self.table.device)
        table[: self.table.shape[0], : self.table.shape[1]] = self.table
        seen[: self.seen.shape[0], : self.seen.shape[1]] = self.seen
        self.table, self.seen = table, seen

    def get(self, index: Tensor, default: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Stored vectors and a mask of which points were stored before (others get ``default`` or 0)."""
        self._grow(index)
        values = self.table[index[:, 0], index[:, 1]]
        seen = self.seen[index[:, 0], index[:, 1]]
        if default is not None:
            values = torch.where(seen[:, None], values, default)
        return values, seen

    def set(self, index: Tensor, values: Tensor) -> None:
        self._grow(index)
        self.table[index[:, 0], index[:, 1]] = values.detach().to(self.table.dtype)
        self.seen[index[:, 0], index[:, 1]] = True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # sizes come from the checkpoint
        self.table = torch.empty_like(state_dict[prefix + "table"])
        self.seen = torch.empty_like(state_dict[prefix + "seen"])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


