"""Segment new scans of any size and write Teeth3DS JSON, a coloured mesh and a picture per scan."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from geot import labels as fdi
from geot.config import Config
from geot.data.dataset import PreparedScan, prepare
from geot.data.jaw import JawReading, settle_jaw
from geot.engine.inference import Posteriors, resolve_device, segment
from geot.errors import CheckpointError, GeotError, ScanError
from geot.io.atomic import atomic_write
from geot.io.mesh import write_labelled_mesh
from geot.io.scan import Scan
from geot.io.teeth3ds import ScanFiles, instances_from_labels, read_scan, write_labels
from geot.models import build_model
from geot.modules import build_module

DECODE_STAGES = ("none", "argmax", "graphcut", "full")  # none: one sample, interpolated, argmax (geot <= 0.1)


@dataclass(frozen=True)
class Prediction:
    """The result for one scan, per vertex in the scan's own vertex order, and per tooth."""

    classes: np.ndarray                 # (V,) class indices
    fdi: np.ndarray                     # (V,) FDI codes
    probs: np.ndarray                   # (V, C) the network's posteriors
    instances: np.ndarray               # (V,) 0 gingiva, 1..K one per tooth
    teeth: list[dict[str, Any]]         # per tooth: fdi, instance, vertices, centroid (scan units), confidence
    warnings: list[str] = field(default_factory=list)
    decoded: str = "none"               # the decoder stage that produced the labels
    jaw_source: str | None = None       # name | header | json | argument | detected
    jaw_confidence: float | None = None  # for a detected jaw
    frame_confidence: float | None = None  # how sure the canonical frame is (1: certain)

    def record(self, source: Path | None) -> dict[str, Any]:
        """The ``"geot"`` block of the prediction JSON (what ``geot report`` shows)."""
        return {"source": str(source) if source else None, "decoder": self.decoded, "jaw_source": self.jaw_source,
                "jaw_confidence": self.jaw_confidence, "frame_confidence": self.frame_confidence,
                "warnings": self.warnings, "teeth": self.teeth,
                "confidence": np.round(self.confidence.astype(np.float64), 3).tolist()}

    @property
    def confidence(self) -> np.ndarray:
        """(V,) the network's posterior of each vertex's final class."""
        return np.take_along_axis(self.probs, self.classes[:, None], axis=1)[:, 0]


class Segmenter:
    """A trained model with the settings it was trained with; loads checkpoints and exported bundles.

    ``decode`` is the stage of the dentition decoder predictions go through (:mod:`geot.decode`): ``full``
    (graph cut, tooth instances, numbering along the arch), ``graphcut``, ``argmax`` (full-resolution argmax) or
    ``none`` (one sample, interpolated, argmax: what geot did before the decoder).
    """

    def __init__(self, model: nn.Module, cfg: Config, device: torch.device, source: Path | None = None,
                 rule: str | None = None, priors: dict[str, Any] | None = None, decode: str = "full") -> None:
        if decode not in DECODE_STAGES:
            raise GeotError(f"unknown decoder stage {decode!r}; choose from {', '.join(DECODE_STAGES)}")
        self.model, self.cfg, self.device = model.to(device).eval(), cfg, device
        self.source = source  # where it was loaded from (parallel workers reload it)
        self.rule_name = rule
        self.rule = build_module({"name": rule}).to(device) if rule else None  # default: argmax
        self.priors, self.decode = dict(priors or {}), decode  # priors: ArchPriors per jaw
        self.views = 1  # test-time views rotated about the occlusal axis (off: it did not pay, docs/benchmarks.md)
        self.notes: list[str] = []  # what loading found wrong with the model, repeated in every prediction

    @classmethod
    def load(cls, path: str | Path, device: str = "auto", rule: str | None = None,
             teacher: bool = False, decode: str = "full") -> Segmenter:
        """From a run folder (best checkpoint), a ``.pt`` checkpoint or an exported bundle folder.

        ``teacher=True`` takes the EMA teacher of a semi-supervised checkpoint instead of the student:
        the teacher is what made the pseudo labels, so it is the model to inspect when diagnosing them.
        """
        from geot.decode import ArchPriors
        from geot.engine.export import load_bundle

        path = Path(path)
        dev = resolve_device(device)
        if path.is_dir() and (path / "model.safetensors").is_file():
            if teacher:
                raise CheckpointError(path, "an exported bundle holds only the final model, not the teacher")
            weights, cfg, priors = load_bundle(path)
        else:
            from geot.engine.checkpoint import load_checkpoint

            ckpt = path / "checkpoints" / "best.pt" if path.is_dir() else path
            if path.is_dir() and not ckpt.is_file():
                raise CheckpointError(path, "neither a model bundle (model.safetensors) "
                                            "nor a run folder (checkpoints/best.pt)")
            state = load_checkpoint(ckpt)
            if "model" not in state or "config" not in state:
                raise CheckpointError(ckpt, "checkpoint holds no model weights or config")
            weights, cfg, priors = state["model"], Config.model_validate(state["config"]), state.get("priors")
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
        segmenter = cls(model, cfg, dev, path, rule, None, decode)
        for jaw, record in (priors or {}).items():
            try:
                segmenter.priors[jaw] = ArchPriors.from_dict(record)
            except (ValueError, TypeError, KeyError) as exc:  # written by another geot version
                segmenter.notes.append(f"the model's {jaw}-jaw arch priors are unreadable ({exc}); "
                                       "numbering without them")
        return segmenter

    def posteriors(self, scan: Scan, passes: int | None = None) -> tuple[PreparedScan, Posteriors]:
        """The scan's canonical features and the network's posteriors (and offsets) for every vertex."""
        prepared = prepare(scan, self.cfg.data.align, self.cfg.data.curvature)
        return prepared, segment(self.model, prepared, self.cfg.data.num_points, self.cfg.data.curvature,
                                 self.device, seed=self.cfg.seed, passes=passes, views=self.views)

    def predict(self, scan: Scan, mirrored: bool = False, jaw: JawReading | None = None) -> Prediction:
        """Segment every vertex of ``scan`` (its jaw must be known) and decode the dentition.

        The scan is processed in a canonical vertex order, so the result depends on its geometry, not on the
        order its file lists vertices and faces. ``mirrored`` says the source is a left-right mirror image:
        side codes then follow the mirror (classes 1-8 on +x of the canonical frame).
        """
        from geot.decode import DecodeOptions, decode

        canon, order = scan.in_canonical_order()
        stage = self.decode
        prepared, post = self.posteriors(canon, passes=1 if stage == "none" else None)
        warnings = [*self.notes, *prepared.warnings, *([jaw.warning] if jaw is not None and jaw.warning else [])]
        probs = post.probs
        if self.rule is not None:  # a prediction rule replaces the argmax; the decoder is not run
            with torch.no_grad():
                classes = self.rule(torch.from_numpy(probs).to(self.device)).cpu().numpy()
            instances, stage = instances_from_labels(classes), "none"
        elif stage == "none":
            classes = probs.argmax(axis=1)
            instances = instances_from_labels(classes)
        else:
            if stage == "full" and post.offsets is None:
                warnings.append("the model has no offset head (trained before geot 0.2): teeth numbered from "
                                "the graph cut's labels, without instances")
                stage = "graphcut"
            priors = self.priors.get(canon.jaw)
            if priors is None and stage == "full":
                warnings.append(f"the model carries no arch priors for the {canon.jaw} jaw: numbering from the "
                                "posteriors alone")
            dentition = decode(probs, prepared.pos, canon.jaw, canon.faces, prepared.normal, post.offsets,
                               priors, DecodeOptions(stage=stage, mirrored=mirrored))
            classes, instances = dentition.classes, dentition.instances
        back = np.empty_like(order)
        back[order] = np.arange(len(order))
        classes, instances, probs = classes[back], instances[back], probs[back]
        codes = fdi.class_to_fdi(classes, scan.jaw)
        return Prediction(classes, codes, probs, instances,
                          tooth_table(scan.vertices, codes, instances, probs, classes), warnings, stage,
                          jaw.source if jaw else None, jaw.confidence if jaw else None, prepared.frame_confidence)

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


def tooth_table(vertices: np.ndarray, codes: np.ndarray, instances: np.ndarray, probs: np.ndarray,
                classes: np.ndarray) -> list[dict[str, Any]]:
    """One row per tooth instance: FDI code, vertex count, centroid in the scan's units, mean confidence."""
    rows = []
    conf = np.take_along_axis(probs, classes[:, None], axis=1)[:, 0]
    for k in range(1, int(instances.max(initial=0)) + 1):
        members = instances == k
        if members.any():
            rows.append({"fdi": int(codes[members][0]), "instance": k, "vertices": int(members.sum()),
                         "centroid": [round(float(c), 3) for c in vertices[members].mean(axis=0)],
                         "confidence": round(float(conf[members].mean()), 4)})
    return rows


@dataclass
class PredictReport:
    """What a folder run did, scan by scan."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    page: Path | None = None  # report.html, when asked for

    def add(self, status: str, mesh: Path, message: str = "") -> None:
        if status == "failed":
            self.failed.append((mesh, message))
        else:
            getattr(self, status).append(mesh)


OUTPUT_FORMATS = ("json", "ply", "obj", "png", "teeth", "explain", "html")
_SUFFIX = {"explain": ".explain.npz", "teeth": "_teeth"}  # else ".<format>"


def output_names(files: Sequence[ScanFiles]) -> list[str]:
    """A distinct output name per scan: its file stem, unless another scan of the run has the same stem.

    Then the name adds the file's extension (``scan.obj`` and ``scan.stl`` -> ``scan.obj``, ``scan.stl``), and
    failing that its folder (``a/scan.obj``, ``b/scan.obj`` -> ``a-scan``, ``b-scan``), and failing that a
    counter, so two scans never write to the same files and no scan is skipped as "already done".
    """
    stems = [f.mesh.stem for f in files]
    names = []
    for entry, stem in zip(files, stems, strict=True):
        if stems.count(stem) == 1:
            names.append(stem)
        elif sum(f.mesh.stem == stem and f.mesh.suffix.lower() == entry.mesh.suffix.lower() for f in files) == 1:
            names.append(f"{stem}{entry.mesh.suffix.lower()}")
        else:
            names.append(f"{entry.mesh.parent.name}-{stem}")
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            names[i] = f"{name}-{seen[name]}"
    return names


def predict_files(segmenter: Segmenter | str | Path, files: Sequence[ScanFiles], out_dir: str | Path,
                  formats: Sequence[str] = ("json", "ply"), jaw: fdi.Jaw | None = None,
                  overwrite: bool = False, on_scan: Callable[[Path], None] | None = None,
                  workers: int = 1, mirrored: bool = False) -> PredictReport:
    """Segment each scan and write ``out_dir/<name>.{json,ply,...}``; a bad scan is reported, not fatal.

    Names follow :func:`output_names`. Existing outputs are kept (the scan is skipped) unless ``overwrite``,
    so an interrupted folder run resumes where it stopped. An output never replaces an input file. ``html``
    writes one ``report.html`` for the folder at the end. With ``workers > 1`` scans are spread over that many
    processes, each holding the model and one scan at a time (``segmenter`` may then be the model's path, so
    workers load it themselves).
    """
    unknown = set(formats) - set(OUTPUT_FORMATS)
    if unknown:
        raise GeotError(f"unknown output format(s) {sorted(unknown)}; choose from {list(OUTPUT_FORMATS)}")
    out_dir = Path(out_dir)
    per_scan = tuple(f for f in formats if f != "html") or ("json",)  # the page reads the JSON files
    if "html" in formats and "ply" not in per_scan:
        per_scan += ("ply",)  # and the meshes
    jobs = [(entry, name, out_dir, per_scan, jaw, overwrite, mirrored)
            for entry, name in zip(files, output_names(files), strict=True)]
    report = PredictReport()
    if workers > 1:
        import multiprocessing

        model = segmenter if isinstance(segmenter, (str, Path)) else segmenter.source
        rule = None if isinstance(segmenter, (str, Path)) else segmenter.rule_name
        stage = "full" if isinstance(segmenter, (str, Path)) else segmenter.decode
        if model is None:
            raise GeotError("parallel prediction needs the model's path")
        threads = max(1, torch.get_num_threads() // workers)
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(workers, initializer=_init_worker, initargs=(str(model), threads, rule, stage)) as pool:
            for status, mesh, message in pool.imap_unordered(_worker_job, jobs, chunksize=1):
                report.add(status, mesh, message)
                if on_scan is not None:
                    on_scan(mesh)
    else:
        if isinstance(segmenter, (str, Path)):
            segmenter = Segmenter.load(segmenter)
        for job in jobs:
            report.add(*predict_one(segmenter, *job))
            if on_scan is not None:
                on_scan(job[0].mesh)
    if "html" in formats and (report.written or report.skipped):
        from geot.report import write_report

        report.page = write_report(out_dir, out_dir / "report.html")
    return report


def predict_one(segmenter: Segmenter, entry: ScanFiles, name: str, out_dir: Path, formats: Sequence[str],
                jaw: fdi.Jaw | None, overwrite: bool, mirrored: bool = False) -> tuple[str, Path, str]:
    """Segment one scan: ('written' | 'skipped' | 'failed', mesh path, problem)."""
    targets = {f: out_dir / f"{name}{_SUFFIX.get(f, '.' + f)}" for f in formats}
    inputs = {entry.mesh.resolve(), *([entry.labels.resolve()] if entry.labels else [])}
    try:
        if any(t.resolve() in inputs for t in targets.values()):
            raise ScanError(entry.mesh, f"output in {out_dir} would overwrite the input; choose another --out")
        if not overwrite and all(t.exists() for t in targets.values()):
            return "skipped", entry.mesh, ""
        scan = read_scan(entry.mesh, labels=False, jaw=jaw or entry.jaw)
        source = "argument" if jaw else "name" if entry.jaw else "header" if scan.jaw else None
        reading = settle_jaw(scan.vertices, scan.faces, scan.jaw, source, entry.mesh)
        scan = dataclasses.replace(scan, jaw=reading.jaw)
        write_outputs(scan, segmenter.predict(scan, mirrored, reading), targets, segmenter)
        return "written", entry.mesh, ""
    except GeotError as exc:
        return "failed", entry.mesh, str(exc)
    except (OSError, ValueError, RuntimeError, MemoryError) as exc:  # keep going past one bad scan
        return "failed", entry.mesh, f"{entry.mesh}: {type(exc).__name__}: {exc}"


_WORKER: Segmenter | None = None


def _init_worker(model: str, threads: int, rule: str | None = None, decode: str = "full") -> None:
    global _WORKER
    torch.set_num_threads(threads)
    _WORKER = Segmenter.load(model, "cpu", rule, decode=decode)


def _worker_job(job: tuple) -> tuple[str, Path, str]:
    assert _WORKER is not None
    return predict_one(_WORKER, *job)


def write_outputs(scan: Scan, result: Prediction, targets: dict[str, Path],
                  segmenter: Segmenter | None = None) -> None:
    """Write the requested files for one segmented scan (each atomically).

    ``json``: Teeth3DS labels and instances plus a ``"geot"`` block (teeth table, per-vertex confidence,
    warnings); ``ply``/``obj``: the mesh coloured by tooth; ``png``: a picture; ``teeth``: a folder
    ``<name>_teeth/`` with one mesh per tooth (STL and PLY, named by FDI code) and ``teeth.csv``;
    ``explain``: an NPZ of per-vertex maps (entropy, margin, saliency) plus the FDI labels.
    """
    for kind, target in targets.items():
        if kind == "explain":
            import io

            maps = segmenter.explain(scan) if segmenter is not None else {}
            buffer = io.BytesIO()
            np.savez_compressed(buffer, fdi=result.fdi, **{k: v.astype(np.float32) for k, v in maps.items()})
            with atomic_write(target) as f:
                f.write(buffer.getvalue())
        elif kind == "json":
            write_labels(target, result.fdi, scan.jaw, scan.patient, result.instances,
                         extra={"geot": result.record(scan.path)})
        elif kind in ("ply", "obj"):
            write_labelled_mesh(target, scan.vertices, scan.faces, result.fdi, scan.jaw)
        elif kind == "png":
            from geot.render import render_scan

            render_scan(target, scan.vertices, scan.faces, result.classes, title=scan.name, jaw=scan.jaw)
        elif kind == "teeth":
            write_teeth(target, scan, result)


def write_teeth(folder: Path, scan: Scan, result: Prediction) -> None:
    """One mesh per tooth for CAD work: ``<fdi>.stl`` (faces whose three vertices belong to the tooth) and
    ``<fdi>.ply`` (with the tooth's own vertex numbering), plus ``teeth.csv``; a point cloud gets PLY only."""
    import csv
    import io

    import trimesh

    folder.mkdir(parents=True, exist_ok=True)
    for tooth in result.teeth:
        members = result.instances == tooth["instance"]
        index = np.full(len(members), -1)
        index[members] = np.arange(int(members.sum()))
        faces = None
        if scan.faces is not None and len(scan.faces):
            inside = members[scan.faces].all(axis=1)
            faces = index[scan.faces[inside]]
        vertices = scan.vertices[members]
        mesh = trimesh.Trimesh(vertices, faces if faces is not None else np.zeros((0, 3), np.int64), process=False)
        with atomic_write(folder / f"{tooth['fdi']}.ply") as f:
            f.write(mesh.export(file_type="ply", encoding="binary"))
        if faces is not None and len(faces):
            with atomic_write(folder / f"{tooth['fdi']}.stl") as f:
                f.write(mesh.export(file_type="stl"))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["fdi", "instance", "vertices", "centroid_x", "centroid_y", "centroid_z", "confidence"])
    for tooth in result.teeth:
        writer.writerow([tooth["fdi"], tooth["instance"], tooth["vertices"], *tooth["centroid"], tooth["confidence"]])
    with atomic_write(folder / "teeth.csv", "w") as f:
        f.write(buffer.getvalue())
