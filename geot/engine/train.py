"""Training: supervised warm-up on labelled scans, then teacher-student learning on unlabelled ones.

Read top to bottom: build everything, maybe resume, then the epoch loop. Each step draws
``batch_labelled`` labelled scans (supervised loss) and, once warm-up is over, ``batch_unlabelled``
unlabelled scans seen twice: the teacher's weak view makes pseudo labels, the student's strong view
learns from them through the method's objective. Every random draw is keyed by (seed, epoch, draw),
and model, optimiser, teacher, objective state and RNG are checkpointed each epoch, so ``resume``
continues exactly where an interrupted run stopped.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch_geometric.data import Batch, Data

from geot import __version__
from geot import distributed as dist
from geot.config import Config, config_dict, save_config
from geot.data.dataset import PreparedScan, ScanDataset, num_input_features
from geot.data.sources import TrainData
from geot.engine.checkpoint import load_checkpoint, save_checkpoint
from geot.engine.inference import resolve_device, segment
from geot.errors import GeotError
from geot.io.atomic import atomic_write
from geot.labels import NUM_CLASSES
from geot.method.objectives import GeoTObjective, build_objective
from geot.metrics import segmentation_metrics
from geot.models import build_model, count_parameters
from geot.modules import FrozenPart, LabelledPart, StepContext, UnlabelledPart, build_modules


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
        probs = segment(model, scan, cfg.data.num_points, cfg.data.curvature, device, seed=cfg.seed)
        rows.append(segmentation_metrics(probs.argmax(1), scan.y, NUM_CLASSES))
    return {key: float(np.nanmean([r[key] for r in rows])) for key in ("miou", "dice", "accuracy")}


def train(cfg: Config, data: TrainData, out: Path, resume: bool = False, progress: bool = True,
          stop_after_epoch: int | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Train ``cfg.semi.method`` and write ``out/{config.yaml, split.json, log.csv, checkpoints/}``.

    An existing run in ``out`` is continued with ``resume`` and replaced only with ``overwrite``.
    """
    out = Path(out)
    ckpt_dir = out / "checkpoints"
    if not resume and not overwrite and (ckpt_dir / "last.pt").exists():
        raise GeotError(f"{out}: holds a run already; pass --resume to continue it or --overwrite to start over")
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    rank, world = dist.setup(device)
    device = dist.local_device(device)
    torch.manual_seed(cfg.seed)
    opt, semi = cfg.optim, cfg.semi
    if opt.batch_labelled % world or opt.batch_unlabelled % world:
        raise GeotError(f"batch sizes ({opt.batch_labelled}, {opt.batch_unlabelled}) "
                        f"must divide among {world} processes")

    # --- model, teacher, objective, optimiser --------------------------------------------------
    model = build_model(cfg.model.backbone, num_input_features(cfg.data.curvature), NUM_CLASSES,
                        **cfg.model.kwargs()).to(device)
    objective = build_objective(semi, cfg.geot)
    objective = objective.to(device) if objective is not None else None
    # optional modules (docs/modules.md)
    addons = build_modules(cfg.modules, num_classes=NUM_CLASSES, feat_dim=model.out_channels).to(device)
    weak_student = addons.needs_weak_student
    needs_anchor = addons.needs_frozen_student
    anchor = None  # the frozen student: a copy taken when unlabelled scans join, for modules that ask
    net = DistributedDataParallel(model) if world > 1 else model  # the student, gradients averaged
    teacher = None
    if semi.method in ("mean_teacher", "geot"):
        teacher = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(semi.ema_decay), use_buffers=True)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    extra = [p for m in (objective, addons) if m is not None for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": opt.weight_decay},
                                   {"params": no_decay + extra, "weight_decay": 0.0}], lr=opt.lr)
    total = opt.epochs * opt.steps_per_epoch
    schedule = (lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total))) if opt.schedule == "cosine" \
        else (lambda s: 1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    labelled = ScanDataset(data.labelled, cfg.data.num_points, cfg.augment.labelled, seed=cfg.seed,
                           use_curvature=cfg.data.curvature)
    unlabelled = ScanDataset(data.unlabelled, cfg.data.num_points, cfg.augment.weak, strong=cfg.augment.strong,
                             seed=cfg.seed + 1, use_curvature=cfg.data.curvature)
    semi_possible = objective is not None and len(unlabelled) > 0

    # --- run folder, resume ----------------------------------------------------------------------
    start_epoch, best = 0, -1.0
    resume = resume and (ckpt_dir / "last.pt").exists()  # killed before the first checkpoint: start over
    for stale in ckpt_dir.glob(".*.tmp"):  # half-written files of a killed run
        stale.unlink(missing_ok=True)
    if resume:
        state = load_checkpoint(ckpt_dir / "last.pt", map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if teacher is not None:
            teacher.load_state_dict(state["teacher"])
        if objective is not None:
            objective.load_state_dict(state["objective"])
        addons.load_state_dict(state.get("addons") or {})
        if state.get("anchor") is not None:
            anchor = _frozen(model)
            anchor.load_state_dict(state["anchor"])
        torch.set_rng_state(state["rng"])
        start_epoch, best = state["epoch"] + 1, state["best_miou"]
    elif dist.is_main():
        save_config(cfg, out / "config.yaml")
        with atomic_write(out / "split.json", "w") as f:
            json.dump(data.split.model_dump(), f, indent=1)
    log = _CsvLog(out / "log.csv", start_epoch, out / "tensorboard" if cfg.tensorboard else None) \
        if dist.is_main() else None
    n_params = count_parameters(model)

    # --- the loop ----------------------------------------------------------------------------------
    for epoch in range(start_epoch, opt.epochs):
        t0 = time.time()
        model.train()
        semi_on = semi_possible and epoch >= semi.warmup_epochs
        if needs_anchor and semi_on and anchor is None:
            anchor = _frozen(model)
        lab_ids = draws(len(labelled), opt.steps_per_epoch * opt.batch_labelled, cfg.seed, epoch, 0)
        unl_ids = draws(len(unlabelled), opt.steps_per_epoch * opt.batch_unlabelled, cfg.seed, epoch, 1)
        sums: dict[str, float] = {}
        bar = _progress(progress and dist.is_main(), opt.steps_per_epoch, f"epoch {epoch + 1}/{opt.epochs}")
        for step in range(opt.steps_per_epoch):
            # this process's share of the step's scans; sample keys are global, so any split sees the same data
            b = opt.batch_labelled
            lab = [labelled.sample(i, (epoch, step * b + j)) for j, i in enumerate(lab_ids[step * b:(step + 1) * b])]
            lab = lab[rank::world]
            b = opt.batch_unlabelled
            unl = [unlabelled.sample(i, (epoch, step * b + j))
                   for j, i in enumerate(unl_ids[step * b:(step + 1) * b])][rank::world] if semi_on else []
            # one student pass over the labelled scans and the strong views of the unlabelled ones
            views = [Data(x=d.x, pos=d.pos) for d in lab] + [Data(x=d.x_strong, pos=d.pos_strong) for d in unl]
            if weak_student:  # a module compares the student's two views
                views += [Data(x=d.x, pos=d.pos) for d in unl]
            student = Batch.from_data_list(views).to(device)
            unl = Batch.from_data_list(unl).to(device) if unl else None
            logits, feats = net(student.x, student.pos, student.batch)
            n_lab = sum(len(d.pos) for d in lab)
            y = torch.cat([d.y for d in lab]).to(device)
            loss = F.cross_entropy(logits[:n_lab], y)
            logs = {"sup": loss.item()}
            if isinstance(objective, GeoTObjective):
                objective.observe_labelled(logits[:n_lab], y)
            ctx = StepContext(epoch, step, opt.epochs, head=model.head,
                              lab=LabelledPart(logits[:n_lab], y, feats[:n_lab]))
            if unl is not None:
                with torch.no_grad():
                    source = teacher.module if teacher is not None else model
                    logits_weak, feats_teacher = source(unl.x, unl.pos, unl.batch)
                    probs_weak = torch.softmax(logits_weak, dim=1)
                n_unl = len(unl.pos)
                ctx.unl = UnlabelledPart(
                    logits[n_lab:n_lab + n_unl], feats[n_lab:n_lab + n_unl], probs_weak, feats_teacher,
                    point_index=torch.stack([unl.scan[unl.batch], unl.vertex], dim=1), pos=unl.raw_pos,
                    batch=unl.batch, logits_weak=logits[n_lab + n_unl:] if weak_student else None)
                if anchor is not None:
                    with torch.no_grad():
                        anchor_logits, anchor_feats = anchor(student.x, student.pos, student.batch)
                    ctx.frozen = FrozenPart(anchor_logits[n_lab:n_lab + n_unl], anchor_feats[n_lab:n_lab + n_unl],
                                            anchor_feats[:n_lab])
                with torch.no_grad():
                    targets = addons.targets(ctx, objective.targets(probs_weak))
                unsup, unsup_logs = objective(ctx.unl.logits, probs_weak, targets, unl.raw_pos, unl.batch,
                                              weight=ctx.target_weight)
                ctx.ramp = rampup(epoch - semi.warmup_epochs + step / opt.steps_per_epoch, semi.rampup_epochs)
                weight = semi.unsup_weight * ctx.ramp
                loss = loss + weight * unsup
                logs.update(unsup_logs, unsup_weight=weight)
            extra_loss, extra_logs = addons.loss(ctx)
            if extra_loss is not None:
                loss = loss + extra_loss
                logs.update(extra_logs)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for module in (objective, addons):
                if module is not None:
                    dist.average_gradients(module.parameters())
            if opt.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), opt.grad_clip)
            optimizer.step()
            scheduler.step()
            if teacher is not None:
                teacher.update_parameters(model)
            logs["loss"] = loss.item()
            for key, value in logs.items():
                sums[key] = sums.get(key, 0.0) + value
            bar.advance(logs)
        bar.close()
        addons.on_epoch_end(epoch)

        if dist.active():  # log the mean over processes
            totals = dist.all_reduce_sum(torch.tensor(list(sums.values()), dtype=torch.float64)) / world
            sums = dict(zip(sums, totals.tolist(), strict=True))
        row: dict[str, Any] = {"epoch": epoch + 1, "lr": scheduler.get_last_lr()[0],
                               **{k: v / opt.steps_per_epoch for k, v in sums.items()}}
        last_epoch = epoch + 1 == opt.epochs
        if not dist.is_main():  # validation, checkpoints and logs are the first process's job
            dist.barrier()
            if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
                break
            continue
        if data.val and ((epoch + 1) % cfg.val_every == 0 or last_epoch):
            row.update({f"val_{k}": v for k, v in validate(model, data.val, cfg, device).items()})
        row["seconds"] = time.time() - t0
        improved = "val_miou" in row and row["val_miou"] > best
        best = max(best, row.get("val_miou", best))
        state = {"format_kind": "train", "geot_version": __version__, "epoch": epoch, "best_miou": best,
                 "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(), "config": config_dict(cfg),
                 "teacher": teacher.state_dict() if teacher is not None else None,
                 "objective": objective.state_dict() if objective is not None else None,
                 "addons": addons.state_dict(), "anchor": anchor.state_dict() if anchor is not None else None,
                 "num_parameters": n_params, "metrics": {k: v for k, v in row.items() if k.startswith("val_")}}
        save_checkpoint(ckpt_dir / "last.pt", state)
        if improved or (not data.val and last_epoch):
            save_checkpoint(ckpt_dir / "best.pt", state)
        log.write(row)
        _print_row(row)
        dist.barrier()
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
            break
    return {"best_val_miou": best, "epochs": opt.epochs, "out": str(out), "parameters": n_params}


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
