"""Training: a supervised warm-up on labelled scans, then the method's teacher-student learning on unlabelled ones.

Read in one sitting: :class:`Trainer` builds everything (or restores it), then each epoch is ``train_step``
for every step and ``end_of_epoch`` (reduce across processes, validate, save). Each step draws
``batch_labelled`` labelled scans (the method's labelled loss) and, once warm-up is over, ``batch_unlabelled``
unlabelled scans seen twice: the pseudo-label source's weak view makes pseudo labels, the student's strong view
learns from them through the method. Every random draw is keyed by (seed, epoch, draw), and everything a
checkpoint holds lives in one :class:`TrainState`, so ``resume`` continues exactly where a run stopped.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch_geometric.data import Batch, Data

from geot import __version__
from geot import distributed as dist
from geot.config import Config, OptimConfig, config_dict, save_config
from geot.data.dataset import PreparedScan, ScanDataset
from geot.data.sources import TrainData
from geot.engine.checkpoint import load_checkpoint, save_checkpoint
from geot.engine.inference import resolve_device, segment
from geot.errors import GeotError
from geot.io.atomic import atomic_write
from geot.labels import JAWS, NUM_CLASSES
from geot.method import Method, build_method
from geot.method.losses import offset_loss, soft_dice
from geot.metrics import segmentation_metrics
from geot.models import Outputs, Segmentor, build_model, count_parameters
from geot.modules import FrozenPart, LabelledPart, ModuleSet, StepContext, UnlabelledPart, build_modules

UNSETTLED = 10**6  # epochs of a time-budgeted run before its budget is settled


def draws(n: int, count: int, seed: int, epoch: int, stream: int) -> list[int]:
    """``count`` dataset indices: shuffled passes over ``range(n)``, fixed by (seed, epoch, stream)."""
    if n == 0:
        return []
    g = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1)[0]))
    passes = [torch.randperm(n, generator=g) for _ in range(math.ceil(count / n))]
    return torch.cat(passes)[:count].tolist()


def rampup(progress: float, length: float) -> float:
    """Sigmoid ramp-up exp(-5 (1 - t)^2) over ``length`` epochs (Laine & Aila 2017)."""
    if length <= 0:
        return 1.0
    t = min(max(progress / length, 0.0), 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)


def validate(model: torch.nn.Module, scans: list[PreparedScan], cfg: Config, device: torch.device) -> dict[str, float]:
    """Mean tooth mIoU, Dice and accuracy over whole validation scans."""
    rows = []
    for scan in scans:
        probs = segment(model, scan, cfg.data.num_points, cfg.data.curvature, device, seed=cfg.seed).probs
        rows.append(segmentation_metrics(probs.argmax(1), scan.y, NUM_CLASSES))
    return {key: float(np.nanmean([r[key] for r in rows])) for key in ("miou", "dice", "accuracy")}


def arch_priors(scans: list[PreparedScan]) -> dict[str, Any]:
    """The decoder's priors (where each tooth stands, its size, the spacing of neighbours) per jaw, from the
    labelled training scans only; they travel in checkpoints and bundles."""
    from geot.decode import estimate_priors

    priors = {}
    for jaw_index, jaw in enumerate(JAWS):
        mine = [(s.pos, s.y) for s in scans if s.jaw == jaw_index and s.y is not None]
        if mine:
            priors[jaw] = estimate_priors(mine).to_dict()
    return priors


def gradient_norms(parts: dict[str, torch.Tensor], model: nn.Module) -> dict[str, float]:
    """``grad/<term>``: the norm of each loss term's gradient on the network's parameters (a term that cannot
    reach them shows 0), to see which terms actually steer the network."""
    params = [p for p in model.parameters() if p.requires_grad]
    norms = {}
    for name, term in parts.items():
        if not term.requires_grad:
            norms[f"grad/{name}"] = 0.0
            continue
        grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
        norms[f"grad/{name}"] = float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None)
                                                 or torch.tensor(0.0)))
    return norms


def epochs_for_budget(epoch: int, epoch_seconds: list[float], val_seconds: list[float], spent_seconds: float,
                      budget_seconds: float, val_every: int, phase: int = 0, recent: int = 10) -> int | None:
    """How many epochs fit a time budget, seen after epoch ``epoch`` (0-based) with ``spent_seconds`` gone: those
    done, plus what the time left buys at the pace of the last ``recent`` epochs from ``phase`` on (validation
    at its share). At least one more epoch, so the run ends on a validated epoch; None until three epochs of
    the phase are known.
    """
    seconds = epoch_seconds[phase:]
    if len(seconds) < 3:
        return None
    per_epoch = float(np.median(seconds[-recent:])) + (float(np.mean(val_seconds)) / val_every if val_seconds else 0.0)
    return max(epoch + 2, epoch + 1 + int((budget_seconds - spent_seconds) / per_epoch))


def learning_rate_factor(opt: OptimConfig) -> Callable[[int], float]:
    """The learning rate of step ``s`` as a share of ``opt.lr``: linear warm-up, then cosine decay to 0 (or flat).

    The length is read at every step, so a time budget (``optim.minutes``) that fixes ``opt.epochs`` during
    training stretches or shortens the rest of the schedule.
    """
    warm = opt.warmup_steps

    def factor(s: int) -> float:
        total = opt.epochs * opt.steps_per_epoch
        if s < warm:
            return (s + 1) / warm
        if opt.schedule == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * min(s - warm, total - warm) / max(total - warm, 1)))

    return factor


@dataclass
class TrainState:
    """Everything a checkpoint holds; ``state_dict``/``load_state_dict`` are the only way in and out of one."""

    cfg: Config
    model: Segmentor
    method: Method
    modules: ModuleSet
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    teacher: AveragedModel | None = None   # EMA of the student, for methods that need one
    frozen: nn.Module | None = None        # the student as unlabelled scans joined, for modules that ask
    epoch: int = -1                        # the last finished epoch
    best: float = -1.0                     # best validation mIoU so far
    metrics: dict[str, float] = field(default_factory=dict)  # validation numbers of the last epoch
    priors: dict[str, Any] = field(default_factory=dict)    # the decoder's arch priors per jaw (labelled scans)
    budget_epochs: int | None = None       # epochs a time budget (optim.minutes) settled on, once it has

    def state_dict(self) -> dict[str, Any]:
        return {"format_kind": "train", "geot_version": __version__, "epoch": self.epoch, "best_miou": self.best,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "rng": torch.get_rng_state(),
                "config": config_dict(self.cfg),
                "teacher": self.teacher.state_dict() if self.teacher is not None else None,
                "method": self.method.state_dict(), "modules": self.modules.state_dict(),
                "frozen": self.frozen.state_dict() if self.frozen is not None else None,
                "num_parameters": count_parameters(self.model), "metrics": dict(self.metrics),
                "priors": self.priors, "budget_epochs": self.budget_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a checkpoint (also those written before methods and modules had these names)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.teacher is not None:
            self.teacher.load_state_dict(state["teacher"])
        self.method.load_state_dict(state.get("method", state.get("objective")) or {})
        self.modules.load_state_dict(state.get("modules", state.get("addons")) or {})
        frozen = state.get("frozen", state.get("anchor"))
        if frozen is not None:
            self.frozen = _frozen(self.model)
            self.frozen.load_state_dict(frozen)
        torch.set_rng_state(state["rng"])
        self.epoch, self.best = state["epoch"], state["best_miou"]
        self.metrics = dict(state.get("metrics") or {})
        self.priors = dict(state.get("priors") or self.priors)
        self.budget_epochs = state.get("budget_epochs")
        if self.budget_epochs is not None:
            self.cfg.optim.epochs = self.budget_epochs


class Trainer:
    """One training run: ``Trainer(...).fit()``. Subclasses may override a stage (e.g. ``train_step``)."""

    def __init__(self, cfg: Config, data: TrainData, out: Path, resume: bool = False, overwrite: bool = False,
                 progress: bool = True) -> None:
        self.cfg, self.data, self.out, self.progress = cfg, data, Path(out), progress
        ckpt_dir = self.out / "checkpoints"
        if not resume and not overwrite and (ckpt_dir / "last.pt").exists():
            raise GeotError(f"{out}: holds a run already; pass --resume to continue it or --overwrite to start over")
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        self.ckpt_dir = ckpt_dir
        device = resolve_device(cfg.device)
        self.rank, self.world = dist.setup(device)
        self.device = dist.local_device(device)
        torch.manual_seed(cfg.seed)
        opt = cfg.optim
        if opt.batch_labelled % self.world or opt.batch_unlabelled % self.world:
            raise GeotError(f"batch sizes ({opt.batch_labelled}, {opt.batch_unlabelled}) "
                            f"must divide among {self.world} processes")
        self.state = self._build()
        self.net = DistributedDataParallel(self.state.model) if self.world > 1 else self.state.model
        self.labelled = ScanDataset(data.labelled, cfg.data.num_points, cfg.augment.labelled, seed=cfg.seed,
                                    use_curvature=cfg.data.curvature)
        self.unlabelled = ScanDataset(data.unlabelled, cfg.data.num_points, cfg.augment.weak,
                                      strong=cfg.augment.strong, seed=cfg.seed + 1, use_curvature=cfg.data.curvature)
        self.semi_possible = self.state.method.learns_from_unlabelled and len(self.unlabelled) > 0

        resume = resume and (ckpt_dir / "last.pt").exists()  # killed before the first checkpoint: start over
        for stale in ckpt_dir.glob(".*.tmp"):  # half-written files of a killed run
            stale.unlink(missing_ok=True)
        if resume:
            self.state.load_state_dict(load_checkpoint(ckpt_dir / "last.pt", map_location=self.device))
        elif dist.is_main():
            save_config(cfg, self.out / "config.yaml")
            with atomic_write(self.out / "split.json", "w") as f:
                json.dump(data.split.model_dump(), f, indent=1)
        if cfg.optim.minutes and self.state.budget_epochs is None:
            cfg.optim.epochs = UNSETTLED  # until the budget is settled: no end, a flat learning rate
        self.log = _CsvLog(self.out / "log.csv", self.state.epoch + 1,
                           self.out / "tensorboard" if cfg.tensorboard else None) if dist.is_main() else None
        # what epochs cost so far (a resumed run reads its log), for a time budget
        rows = self.log.rows if self.log is not None else []
        self.epoch_seconds = [float(r["seconds"]) for r in rows if r.get("seconds")]
        self.val_seconds: list[float] = []

    def _build(self) -> TrainState:
        """Network, method, modules, teacher and optimiser, in an order fixed for reproducibility."""
        cfg, opt, device = self.cfg, self.cfg.optim, self.device
        model = build_model(cfg).to(device)
        method = build_method(cfg).to(device)
        modules = build_modules(cfg.modules, num_classes=NUM_CLASSES, feat_dim=model.feat_dim).to(device)  # optional
        teacher = None
        if method.needs_teacher:
            teacher = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.semi.ema_decay), use_buffers=True)
        decay = [p for p in model.parameters() if p.ndim > 1]
        no_decay = [p for p in model.parameters() if p.ndim <= 1]
        extra = [p for m in (method, modules) for p in m.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": opt.weight_decay},
                                       {"params": no_decay + extra, "weight_decay": 0.0}], lr=opt.lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate_factor(opt))
        return TrainState(cfg, model, method, modules, optimizer, scheduler, teacher,
                          priors=arch_priors(self.data.labelled))

    def fit(self, stop_after_epoch: int | None = None) -> dict[str, Any]:
        """Train from the state's next epoch to the last (or to ``stop_after_epoch``)."""
        epoch = self.state.epoch + 1
        self.fit_started = time.time() - sum(self.epoch_seconds)  # a resumed run counts its logged time
        while epoch < self.cfg.optim.epochs:  # a time budget may move the end while training
            t0, c0 = time.time(), time.process_time()
            means = self.run_epoch(epoch)
            self.end_of_epoch(epoch, means, t0, c0)
            if self._settle_budget(epoch) and dist.is_main():  # last.pt was saved with the former end
                save_checkpoint(self.ckpt_dir / "last.pt", self.state.state_dict())
            if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
                break
            epoch += 1
        return {"best_val_miou": self.state.best, "epochs": self.cfg.optim.epochs, "out": str(self.out),
                "parameters": count_parameters(self.state.model)}

    def _settle_budget(self, epoch: int) -> bool:
        """With ``optim.minutes``, fix the number of epochs once the cost of an epoch is known, and correct it at
        every validation after, from the recent pace: epochs slowed by 10-20% over an hour on the 2-core
        machine, which made 60-minute budgets run 62-68 minutes when the number was fixed once.

        The cost is read where training will spend most of its time: after warm-up when unlabelled scans
        join (a teacher-student epoch costs about twice a supervised one), over at least three epochs and
        with validation counted at its share. The first process decides; the number is saved in
        config.yaml and the checkpoint, so a resumed run keeps it. The time spent is the wall clock since
        training began (saving and logging included). True when the number changed.
        """
        opt, cfg = self.cfg.optim, self.cfg
        settled = self.state.budget_epochs is not None
        if not opt.minutes or (settled and ((epoch + 1) % cfg.val_every or epoch + 1 >= opt.epochs)):
            return False
        epochs = 0
        phase = cfg.semi.warmup_epochs if self.semi_possible and cfg.semi.warmup_epochs < opt.epochs else 0
        if dist.is_main() and (self.val_seconds or not self.data.val):
            epochs = epochs_for_budget(epoch, self.epoch_seconds, self.val_seconds, time.time() - self.fit_started,
                                       opt.minutes * 60, cfg.val_every, phase) or 0
        if dist.active():  # every process takes the first one's decision (0: not yet)
            epochs = int(dist.all_reduce_sum(torch.tensor([epochs], dtype=torch.float64)).item())
        if not epochs or epochs == opt.epochs:
            return False
        opt.epochs = self.state.budget_epochs = epochs
        self.state.method.epochs_changed(cfg)
        if dist.is_main():
            save_config(cfg, self.out / "config.yaml")
            _print_row({"time_budget_minutes": opt.minutes, "epochs": epochs})
        return True

    def run_epoch(self, epoch: int) -> dict[str, float]:
        """Every step of one epoch; returns each logged number's mean over the steps that logged it."""
        cfg, opt, state = self.cfg, self.cfg.optim, self.state
        state.model.train()
        semi_on = self.semi_possible and epoch >= cfg.semi.warmup_epochs
        wants_frozen = state.modules.needs_frozen_student or state.method.needs_frozen_student
        if wants_frozen and semi_on and state.frozen is None:
            state.frozen = _frozen(state.model)
        lab_ids = draws(len(self.labelled), opt.steps_per_epoch * opt.batch_labelled, cfg.seed, epoch, 0)
        unl_ids = draws(len(self.unlabelled), opt.steps_per_epoch * opt.batch_unlabelled, cfg.seed, epoch, 1)
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        bar = _progress(self.progress and dist.is_main(), opt.steps_per_epoch, f"epoch {epoch + 1}/{opt.epochs}")
        for step in range(opt.steps_per_epoch):
            # this process's share of the step's scans; sample keys are global, so any split sees the same data
            b = opt.batch_labelled
            lab = [self.labelled.sample(i, (epoch, step * b + j))
                   for j, i in enumerate(lab_ids[step * b:(step + 1) * b])][self.rank::self.world]
            b = opt.batch_unlabelled
            unl = [self.unlabelled.sample(i, (epoch, step * b + j))
                   for j, i in enumerate(unl_ids[step * b:(step + 1) * b])][self.rank::self.world] if semi_on else []
            logs = self.train_step(epoch, step, lab, unl)
            for key, value in logs.items():
                sums[key] = sums.get(key, 0.0) + value
                counts[key] = counts.get(key, 0) + 1
            bar.advance(logs)
        bar.close()
        state.modules.on_epoch_end(epoch)
        return {key: value / counts[key] for key, value in sums.items()}

    def train_step(self, epoch: int, step: int, lab: list[Data], unl: list[Data]) -> dict[str, float]:
        """One optimiser step on labelled scans ``lab`` and (after warm-up) unlabelled scans ``unl``."""
        cfg, state, device = self.cfg, self.state, self.device
        method, modules = state.method, state.modules
        # one student pass over the labelled scans and the strong views of the unlabelled ones
        views = [Data(x=d.x, pos=d.pos) for d in lab] + [Data(x=d.x_strong, pos=d.pos_strong) for d in unl]
        if state.modules.needs_weak_student:  # a module compares the student's two views
            views += [Data(x=d.x, pos=d.pos) for d in unl]
        student = Batch.from_data_list(views).to(device)
        unl_batch = Batch.from_data_list(unl).to(device) if unl else None
        with self.autocast():
            out = self.net(student.x, student.pos, student.batch)
        out = Outputs(*(t.float() if t is not None else None for t in out))  # losses in float32
        logits, feats = out.logits, out.feats
        n_lab = sum(len(d.pos) for d in lab)
        y = torch.cat([d.y for d in lab]).to(device)
        loss = method.labelled_loss(logits[:n_lab], y)
        logs = {"sup": loss.item()}
        parts = {"sup": loss}  # each term as it enters the loss, for gradient diagnostics
        for name, weight, term in self._labelled_terms(out, student, y, n_lab):
            loss = loss + weight * term
            logs[name] = term.item()
            parts[name] = weight * term
        ctx = StepContext(epoch, step, cfg.optim.epochs, state.model.head,
                          LabelledPart(logits[:n_lab], y, feats[:n_lab]))
        if unl_batch is not None:
            unsup, unsup_logs = self._unlabelled_loss(ctx, unl_batch, student, logits, feats, n_lab)
            ctx.ramp = rampup(epoch - cfg.semi.warmup_epochs + step / cfg.optim.steps_per_epoch,
                              cfg.semi.rampup_epochs)
            weight = cfg.semi.unsup_weight * ctx.ramp
            loss = loss + weight * unsup
            logs.update(unsup_logs, unsup_weight=weight)
            parts.update({k: weight * v for k, v in (method.loss_terms() or {"unsup": unsup}).items()})
        extra_loss, extra_logs = modules.loss(ctx)
        if extra_loss is not None:
            loss = loss + extra_loss
            logs.update(extra_logs)
            parts["modules"] = extra_loss
        if cfg.log_grad_norms and step == 0:
            logs.update(gradient_norms(parts, state.model))
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for module in (method, modules):
            dist.average_gradients(module.parameters())
        if cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(state.model.parameters(), cfg.optim.grad_clip)
        state.optimizer.step()
        state.scheduler.step()
        if state.teacher is not None:
            state.teacher.update_parameters(state.model)
        logs["loss"] = loss.item()
        return logs

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for forward passes when ``optim.autocast`` asks for it (a no-op otherwise)."""
        enabled = self.cfg.optim.autocast == "bf16"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def _labelled_terms(self, out: Outputs, student: Batch, y: torch.Tensor, n_lab: int
                        ) -> list[tuple[str, float, torch.Tensor]]:
        """(name, weight, value) of the configured loss terms on labelled points besides the method's."""
        cfg, terms = self.cfg.loss, []
        if cfg.dice_weight > 0:
            terms.append(("dice", cfg.dice_weight, soft_dice(out.logits[:n_lab], y, student.batch[:n_lab])))
        if out.offsets is not None and cfg.offset_weight > 0:
            terms.append(("offset", cfg.offset_weight,
                          offset_loss(out.offsets[:n_lab], student.pos[:n_lab], y, student.batch[:n_lab])))
        return terms

    def _unlabelled_loss(self, ctx: StepContext, unl: Batch, student: Batch, logits: torch.Tensor,
                         feats: torch.Tensor, n_lab: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Pseudo labels from the weak view, the method's loss on the strong view; fills the step context."""
        state = self.state
        with torch.no_grad():
            kind = state.method.pseudo_label_source(ctx.epoch)
            source = {"teacher": state.teacher.module if state.teacher is not None else None,
                      "frozen": state.frozen, "student": state.model}[kind]
            if source is None:
                raise GeotError(f"method {state.method.name!r} asks for pseudo labels from a {kind} it does not keep")
            with self.autocast():
                weak = source(unl.x, unl.pos, unl.batch)
            weak = Outputs(*(t.float() if t is not None else None for t in weak))
            probs_weak = torch.softmax(weak.logits, dim=1)
        n_unl = len(unl.pos)
        ctx.unl = UnlabelledPart(logits[n_lab:n_lab + n_unl], feats[n_lab:n_lab + n_unl], probs_weak, weak.feats,
                                 torch.stack([unl.scan[unl.batch], unl.vertex], dim=1), unl.raw_pos, unl.batch,
                                 logits[n_lab + n_unl:] if state.modules.needs_weak_student else None)
        if state.frozen is not None and state.modules.needs_frozen_student:  # the modules' view of it
            with torch.no_grad():
                frozen = state.frozen(student.x, student.pos, student.batch)
            ctx.frozen = FrozenPart(frozen.logits[n_lab:n_lab + n_unl], frozen.feats[n_lab:n_lab + n_unl],
                                    frozen.feats[:n_lab])
        with torch.no_grad():
            targets = state.method.targets(probs_weak)
            if self.cfg.semi.decode_pseudo_labels:
                targets = self._decoded(unl, probs_weak, weak.offsets, targets)
            targets = state.modules.targets(ctx, targets)
        return state.method(ctx.unl.logits, probs_weak, targets, unl.raw_pos, unl.batch, weight=ctx.target_weight)

    def _decoded(self, unl: Batch, probs: torch.Tensor, offsets: torch.Tensor | None,
                 targets: torch.Tensor) -> torch.Tensor:
        """One-hot pseudo labels after the dentition decoder, scan by scan (a kNN graph over the sampled points)."""
        from geot.decode import ArchPriors, DecodeOptions, decode

        if not hasattr(self, "_priors"):
            self._priors = {jaw: ArchPriors.from_dict(p) for jaw, p in self.state.priors.items()}
        out = targets.clone()
        for i in range(int(unl.batch.max()) + 1):
            mine = unl.batch == i
            jaw = JAWS[int(unl.jaw[i])]
            dentition = decode(probs[mine].double().cpu().numpy(), unl.pos[mine].cpu().numpy(), jaw,
                               offsets=offsets[mine].cpu().numpy() if offsets is not None else None,
                               priors=self._priors.get(jaw),
                               options=DecodeOptions(stage="full" if offsets is not None else "graphcut"))
            classes = torch.from_numpy(dentition.classes).to(targets.device)
            out[mine] = torch.nn.functional.one_hot(classes, targets.shape[1]).to(targets.dtype)
        return out

    def end_of_epoch(self, epoch: int, means: dict[str, float], t0: float, c0: float) -> None:
        """Mean logs over processes; on the first process: validate, checkpoint (last, and best by validation), log."""
        cfg, state = self.cfg, self.state
        state.epoch = epoch
        if dist.active():  # log the mean over processes
            totals = dist.all_reduce_sum(torch.tensor(list(means.values()), dtype=torch.float64)) / self.world
            means = dict(zip(means, totals.tolist(), strict=True))
        row: dict[str, Any] = {"epoch": epoch + 1, "lr": state.scheduler.get_last_lr()[0], **means}
        self.epoch_seconds.append(time.time() - t0)
        if not dist.is_main():  # validation, checkpoints and logs are the first process's job
            dist.barrier()
            return
        last_epoch = epoch + 1 == cfg.optim.epochs
        if self.data.val and ((epoch + 1) % cfg.val_every == 0 or last_epoch):
            t_val = time.time()
            row.update({f"val_{k}": v for k, v in validate(state.model, self.data.val, cfg, self.device).items()})
            self.val_seconds.append(time.time() - t_val)
        row["seconds"] = time.time() - t0
        row["cpu_seconds"] = time.process_time() - c0  # this process's CPU time: unaffected by other load
        improved = "val_miou" in row and row["val_miou"] > state.best
        state.best = max(state.best, row.get("val_miou", state.best))
        state.metrics = {k: v for k, v in row.items() if k.startswith("val_")}
        checkpoint = state.state_dict()
        save_checkpoint(self.ckpt_dir / "last.pt", checkpoint)
        if improved or (not self.data.val and last_epoch):  # for predicting: no optimizer state (2/3 of the file)
            save_checkpoint(self.ckpt_dir / "best.pt",
                            {k: v for k, v in checkpoint.items() if k not in ("optimizer", "scheduler", "rng")})
        if cfg.snapshot_every and (epoch + 1) % cfg.snapshot_every == 0:  # for accuracy-over-time curves
            save_checkpoint(self.ckpt_dir / "snapshots" / f"epoch{epoch + 1:04d}.pt",
                            {k: checkpoint[k] for k in ("format_kind", "geot_version", "epoch", "model", "config",
                                                        "num_parameters", "metrics", "priors")})
        assert self.log is not None
        self.log.write(row)
        _print_row(row)
        dist.barrier()


def train(cfg: Config, data: TrainData, out: Path, resume: bool = False, progress: bool = True,
          stop_after_epoch: int | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Train ``cfg.semi.method`` and write ``out/{config.yaml, split.json, log.csv, checkpoints/}``.

    An existing run in ``out`` is continued with ``resume`` and replaced only with ``overwrite``.
    """
    return Trainer(cfg, data, out, resume=resume, overwrite=overwrite, progress=progress).fit(stop_after_epoch)


def _frozen(model: torch.nn.Module) -> torch.nn.Module:
    """An eval-mode copy of ``model`` without gradients."""
    return copy.deepcopy(model).eval().requires_grad_(False)


class _CsvLog:
    """Per-epoch numbers in a CSV (and TensorBoard if asked); on resume, rows of redone epochs are dropped."""

    def __init__(self, path: Path, keep_epochs_below: int, tensorboard: Path | None = None) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []
        if keep_epochs_below > 0 and path.is_file():
            with open(path, newline="") as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= keep_epochs_below]
        self.board = None
        if tensorboard is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise GeotError("tensorboard logging needs the 'tb' extra: pip install 'geot[tb]'") from exc
            self.board = SummaryWriter(str(tensorboard))

    def write(self, row: dict[str, Any]) -> None:
        if self.board is not None:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, float):
                    self.board.add_scalar(key, value, row["epoch"])
            self.board.flush()
        self.rows.append(row)
        fields = list(dict.fromkeys(k for r in self.rows for k in r))
        with atomic_write(self.path, "w") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(self.rows)


def _print_row(row: dict[str, Any]) -> None:
    from rich.console import Console

    parts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()]
    Console(stderr=True).print(" ".join(parts), highlight=False, soft_wrap=True)


class _progress:
    """A rich progress bar showing running loss terms, or nothing when disabled."""

    def __init__(self, enabled: bool, total: int, title: str) -> None:
        self.bar = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), TextColumn("{task.fields[losses]}"), transient=True)
            self.task = self.bar.add_task(title, total=total, losses="")
            self.bar.start()

    def advance(self, logs: dict[str, float]) -> None:
        if self.bar is not None:
            text = " ".join(f"{k}={v:.3f}" for k, v in logs.items() if k != "unsup_weight")
            self.bar.update(self.task, advance=1, losses=text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
