"""Segment new scans of any size and write Teeth3DS JSON, a coloured mesh and a picture per scan."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from geot import labels as fdi
from geot.config import Config
from geot.data.dataset import prepare
from geot.engine.inference import resolve_device, segment
from geot.errors import CheckpointError, GeotError, ScanError
from geot.io.mesh import write_labelled_mesh
from geot.io.scan import Scan
from geot.io.teeth3ds import ScanFiles, instances_from_labels, read_scan, write_labels
from geot.models import build_model
from geot.modules import build_module


@dataclass(frozen=True)
class Prediction:
    """Per-vertex result for one scan."""

    classes: np.ndarray   # (V,) class indices
    fdi: np.ndarray       # (V,) FDI codes
    probs: np.ndarray     # (V, C)


class Segmenter:
    """A trained model with the settings it was trained with; loads checkpoints and exported bundles."""

    def __init__(self, model: nn.Module, cfg: Config, device: torch.device, source: Path | None = None,
                 rule: str | None = None) -> None:
        self.model, self.cfg, self.device = model.to(device).eval(), cfg, device
        self.source = source  # where it was loaded from (parallel workers reload it)
        self.rule_name = rule
        self.rule = build_module({"name": rule}).to(device) if rule else None  # default: argmax

    @classmethod
    def load(cls, path: str | Path, device: str = "auto", rule: str | None = None,
             teacher: bool = False) -> Segmenter:
        """From a run folder (best checkpoint), a ``.pt`` checkpoint or an exported bundle folder.

        ``teacher=True`` takes the EMA teacher of a semi-supervised checkpoint instead of the student:
        the teacher is what made the pseudo labels, so it is the model to inspect when diagnosing them.
        """
        from geot.engine.export import load_bundle

        path = Path(path)
        dev = resolve_device(device)
        if path.is_dir() and (path / "model.safetensors").is_file():
            if teacher:
                raise CheckpointError(path, "an exported bundle holds only the final model, not the teacher")
            weights, cfg = load_bundle(path)
        else:
            from geot.engine.checkpoint import load_checkpoint

            ckpt = path / "checkpoints" / "best.pt" if path.is_dir() else path
            if path.is_dir() and not ckpt.is_file():
                raise CheckpointError(path, "neither a model bundle (model.safetensors) "
                                            "nor a run folder (checkpoints/best.pt)")
            state = load_checkpoint(ckpt)
            if "model" not in state or "config" not in state:
                raise CheckpointError(ckpt, "checkpoint holds no model weights or config")
            weights, cfg = state["model"], Config.model_validate(state["config"])
            if teacher:
                if not state.get("teacher"):
                    raise CheckpointError(ckpt, "checkpoint holds no teacher (only mean_teacher and geot "
                                                "runs train one)")
                weights = {k.removeprefix("module."): v for k, v in state["teacher"].items()
                           if k.startswith("module.")}  # AveragedModel wraps the network as .module
        model = build_model(cfg)
        try:
            model.load_state_dict(weights)
        except RuntimeError as exc:
            first_line = str(exc).splitlines()[0]
            raise CheckpointError(path, f"weights do not fit the configured model ({first_line})") from None
        return cls(model, cfg, dev, path, rule)

    def predict(self, scan: Scan) -> Prediction:
        """Segment every vertex of ``scan`` (its jaw must be known)."""
        prepared = prepare(scan, self.cfg.data.align, self.cfg.data.curvature)
        probs = segment(self.model, prepared, self.cfg.data.num_points, self.cfg.data.curvature, self.device,
                        seed=self.cfg.seed)
        if self.rule is None:
            classes = probs.argmax(axis=1)
        else:
            with torch.no_grad():
                classes = self.rule(torch.from_numpy(probs).to(self.device)).cpu().numpy()
        return Prediction(classes, fdi.class_to_fdi(classes, scan.jaw), probs)

    def explain(self, scan: Scan, explainers: Sequence[str] = ("uncertainty", "normgrad")) -> dict[str, np.ndarray]:
        """Per-vertex maps (entropy, margin, saliency, ...) of the given explainer modules."""
        from geot import ops
        from geot.data.augment import NONE
        from geot.data.dataset import ScanDataset

        prepared = prepare(scan, self.cfg.data.align, self.cfg.data.curvature)
        data = ScanDataset([prepared], self.cfg.data.num_points, NONE, seed=self.cfg.seed,
                           use_curvature=self.cfg.data.curvature)[0].to(self.device)
        batch = torch.zeros(len(data.pos), dtype=torch.long, device=self.device)
        maps: dict[str, torch.Tensor] = {}
        for name in explainers:
            maps.update(build_module({"name": name})(self.model, data.x, data.pos, batch))
        stacked = torch.stack([m.float() for m in maps.values()], dim=1)
        everywhere = ops.interpolate(stacked.detach(), data.pos, torch.from_numpy(prepared.pos).to(self.device), k=3)
        return {name: everywhere[:, i].cpu().numpy() for i, name in enumerate(maps)}


@dataclass
class PredictReport:
    """What a folder run did, scan by scan."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    def add(self, status: str, mesh: Path, message: str = "") -> None:
        if status == "failed":
            self.failed.append((mesh, message))
        else:
            getattr(self, status).append(mesh)


OUTPUT_FORMATS = ("json", "ply", "obj", "png", "explain")
_SUFFIX = {"explain": "explain.npz"}


def predict_files(segmenter: Segmenter | str | Path, files: Sequence[ScanFiles], out_dir: str | Path,
                  formats: Sequence[str] = ("json", "ply", "png"), jaw: fdi.Jaw | None = None,
                  overwrite: bool = False, on_scan: Callable[[Path], None] | None = None,
                  workers: int = 1) -> PredictReport:
    """Segment each scan and write ``out_dir/<name>.{json,ply,obj,png}``; a bad scan is reported, not fatal.

    Existing outputs are kept (the scan is skipped) unless ``overwrite``, so an interrupted folder run
    resumes where it stopped. An output never replaces an input file. With ``workers > 1`` scans are
    spread over that many processes, each holding the model and one scan at a time (``segmenter`` may then
    be the model's path, so workers load it themselves).
    """
    unknown = set(formats) - set(OUTPUT_FORMATS)
    if unknown:
        raise GeotError(f"unknown output format(s) {sorted(unknown)}; choose from {list(OUTPUT_FORMATS)}")
    jobs = [(entry, Path(out_dir), tuple(formats), jaw, overwrite) for entry in files]
    report = PredictReport()
    if workers > 1:
        import multiprocessing

        model = segmenter if isinstance(segmenter, (str, Path)) else segmenter.source
        rule = None if isinstance(segmenter, (str, Path)) else segmenter.rule_name
        if model is None:
            raise GeotError("parallel prediction needs the model's path")
        threads = max(1, torch.get_num_threads() // workers)
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(workers, initializer=_init_worker, initargs=(str(model), threads, rule)) as pool:
            results = pool.imap_unordered(_worker_job, jobs, chunksize=1)
            for status, mesh, message in results:
                report.add(status, mesh, message)
                if on_scan is not None:
                    on_scan(mesh)
        return report
    if isinstance(segmenter, (str, Path)):
        segmenter = Segmenter.load(segmenter)
    for job in jobs:
        report.add(*predict_one(segmenter, *job))
        if on_scan is not None:
            on_scan(job[0].mesh)
    return report


def predict_one(segmenter: Segmenter, entry: ScanFiles, out_dir: Path, formats: Sequence[str],
                jaw: fdi.Jaw | None, overwrite: bool) -> tuple[str, Path, str]:
    """Segment one scan: ('written' | 'skipped' | 'failed', mesh path, problem)."""
    targets = {f: out_dir / f"{entry.name}.{_SUFFIX.get(f, f)}" for f in formats}
    inputs = {entry.mesh.resolve(), *([entry.labels.resolve()] if entry.labels else [])}
    try:
        if any(t.resolve() in inputs for t in targets.values()):
            raise ScanError(entry.mesh, f"output in {out_dir} would overwrite the input; choose another --out")
        if not overwrite and all(t.exists() for t in targets.values()):
            return "skipped", entry.mesh, ""
        scan = read_scan(entry.mesh, labels=False, jaw=jaw or entry.jaw)
        if scan.jaw is None:
            raise ScanError(entry.mesh, "jaw unknown: name the file <ID>_lower/<ID>_upper or pass --jaw")
        write_outputs(scan, segmenter.predict(scan), targets, segmenter)
        return "written", entry.mesh, ""
    except GeotError as exc:
        return "failed", entry.mesh, str(exc)
    except (OSError, ValueError, RuntimeError, MemoryError) as exc:  # keep going past one bad scan
        return "failed", entry.mesh, f"{entry.mesh}: {type(exc).__name__}: {exc}"


_WORKER: Segmenter | None = None


def _init_worker(model: str, threads: int, rule: str | None = None) -> None:
    global _WORKER
    torch.set_num_threads(threads)
    _WORKER = Segmenter.load(model, "cpu", rule)


def _worker_job(job: tuple) -> tuple[str, Path, str]:
    assert _WORKER is not None
    return predict_one(_WORKER, *job)


def write_outputs(scan: Scan, result: Prediction, targets: dict[str, Path],
                  segmenter: Segmenter | None = None) -> None:
    """Write the requested files for one segmented scan (each atomically).

    ``explain`` writes ``<name>.explain`` as an NPZ of per-vertex maps (entropy, margin, saliency) plus
    the predicted FDI labels, for viewers and QA scripts.
    """
    for kind, target in targets.items():
        if kind == "explain":
            import io

            from geot.io.atomic import atomic_write

            maps = segmenter.explain(scan) if segmenter is not None else {}
            buffer = io.BytesIO()
            np.savez_compressed(buffer, fdi=result.fdi, **{k: v.astype(np.float32) for k, v in maps.items()})
            with atomic_write(target) as f:
                f.write(buffer.getvalue())
            continue
        if kind == "json":
            write_labels(target, result.fdi, scan.jaw, scan.patient, instances_from_labels(result.fdi))
        elif kind in ("ply", "obj"):
            write_labelled_mesh(target, scan.vertices, scan.faces, result.fdi, scan.jaw)
        elif kind == "png":
            from geot.render import render_scan

            render_scan(target, scan.vertices, scan.faces, result.classes, title=scan.name, jaw=scan.jaw)
