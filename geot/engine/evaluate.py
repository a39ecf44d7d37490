"""Score a folder of predicted label files against a Teeth3DS ground-truth folder.

One row per ground-truth scan (GeoT's mIoU / Dice / accuracy plus the challenge's TSA / TLA / TIR), then
means overall and per jaw. A bad or missing prediction never stops the run: it is reported (one line
naming the file) and scored the way the challenge scores it, so a partial submission cannot look better
than it is. :attr:`EvaluationReport.scored` says how many predictions were usable at all.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geot import labels as fdi
from geot.errors import GeotError, ScanError
from geot.io.atomic import atomic_write
from geot.io.teeth3ds import ScanFiles, find_scans, instances_from_labels, read_labels, read_scan
from geot.metrics import aggregate_rows, challenge_metrics, challenge_score, dentition_errors, segmentation_metrics

IOU_COLUMNS = [f"iou_{k}" for k in range(fdi.NUM_CLASSES)]
ROW_COLUMNS = ["name", "jaw", "status", "n_vertices", "miou", "dice", "accuracy", "tsa", "tla",
               "exp_neg_tla", "tir", "score", "n_gt_teeth", "n_pred_teeth", "duplicated_codes", "missing_teeth",
               *IOU_COLUMNS, "error"]
# What a scan without a usable prediction scores, as the challenge counts it (TLA itself is left NaN:
# its exp(-TLA) is what enters the score, and that is 0).
_ZERO = {"miou": 0.0, "dice": 0.0, "accuracy": 0.0, "tsa": 0.0, "tla": math.nan, "exp_neg_tla": 0.0,
         "tir": 0.0, "score": 0.0}


@dataclass
class EvaluationReport:
    """What :func:`evaluate_folders` found: per-scan rows, their means, and the scans it could not score.

    ``failed`` holds ``(scan name, message naming the file)``; ``extra`` lists predictions with no
    ground-truth scan of that name (ignored).
    """

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    missing: list[str]
    failed: list[tuple[str, str]]
    extra: list[str] = field(default_factory=list)

    @property
    def scored(self) -> int:
        """How many scans were scored from a usable prediction; 0 means the run measured nothing."""
        return sum(row["status"] == "ok" for row in self.rows)


def find_predictions(pred_dir: str | Path) -> dict[str, list[Path]]:
    """Every ``<name>.json`` under ``pred_dir`` (any depth, hidden files skipped), keyed by file stem."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise ScanError(pred_dir, "prediction folder not found")
    found: dict[str, list[Path]] = {}
    for path in sorted(pred_dir.rglob("*.json")):
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(pred_dir).parts):
            found.setdefault(path.stem, []).append(path)
    return found


def evaluate_folders(pred_dir: str | Path, gt_dir: str | Path, out_dir: str | Path | None = None
                     ) -> EvaluationReport:
    """Score every labelled scan of the Teeth3DS folder ``gt_dir`` against ``pred_dir/**/<name>.json``.

    Predictions are Teeth3DS label JSONs matched to ground truth by scan name (the file stem), in any
    layout (``pred_dir/<ID>/<ID>_<jaw>.json`` or flat). Predictions without ``instances`` get one instance
    per FDI code. Ground-truth meshes are read for their vertices, which the challenge metrics need.

    * A ground-truth scan without prediction goes to ``missing`` and, as in the challenge, counts 0 for
      TSA, TIR and exp(-TLA), and 0 for mIoU, Dice and accuracy, in every mean.
    * A prediction that cannot be used (unreadable, mistyped, vertex count different from the ground-truth
      mesh, labels that are not FDI codes (outside 0-99), jaw field naming the other jaw, two files of the
      same name) goes to ``failed`` with a one-line message naming the file, and counts 0 like a missing
      one. A ground-truth mesh without label file, or one that cannot be read, also goes to ``failed`` but
      is left out of the means: nothing can be scored on it.
    * FDI codes foreign to the jaw (an upper tooth in a lower jaw) count as wrong labels, not as errors.

    Rows keep per-scan values (``tla`` is NaN where nothing was scored; NaN means "undefined", e.g. mIoU
    of a scan without teeth, and is skipped by the means). With ``out_dir``, ``summary.json`` and
    ``metrics.csv`` are written there atomically.
    """
    gt_files = find_scans(gt_dir)
    if not gt_files:
        raise ScanError(Path(gt_dir), "no mesh files found in the ground-truth folder")
    predictions = find_predictions(pred_dir)
    rows: list[dict[str, Any]] = []
    missing: list[str] = []
    failed: list[tuple[str, str]] = []
    seen: set[str] = set()
    for files in sorted(gt_files, key=lambda f: (f.name, str(f.mesh))):
        if files.name in seen:
            failed.append((files.name, f"{files.mesh}: another ground-truth scan has the same name; skipped"))
            continue
        seen.add(files.name)
        if files.labels is None:  # a mesh without labels is not ground truth: nothing to score against
            message = f"ground truth: {files.mesh}: no label file {files.name}.json beside the mesh"
            failed.append((files.name, message))
            rows.append(_unscored_row(files, "failed", message, score_zero=False))
            continue
        preds = predictions.get(files.name, [])
        if not preds:
            missing.append(files.name)
            rows.append(_unscored_row(files, "missing", "", score_zero=True))
            continue
        if len(preds) > 1:
            message = f"{len(preds)} prediction files named {files.name}.json: " + ", ".join(map(str, preds))
            failed.append((files.name, message))
            rows.append(_unscored_row(files, "failed", message, score_zero=True))
            continue
        try:
            gt = _read_ground_truth(files)
        except (GeotError, ValueError, OSError) as exc:
            failed.append((files.name, f"ground truth: {exc}"))
            rows.append(_unscored_row(files, "failed", f"ground truth: {exc}", score_zero=False))
            continue
        try:
            rows.append(_score(files.name, gt, preds[0]))
        except (GeotError, ValueError, OSError) as exc:
            message = str(exc) if str(preds[0]) in str(exc) else f"{preds[0]}: {exc}"
            failed.append((files.name, message))
            rows.append(_unscored_row(files, "failed", message, score_zero=True, jaw=gt["jaw"],
                                      n_vertices=len(gt["vertices"])))
    extra = sorted(set(predictions) - seen)
    failed = [(name, _one_line(message)) for name, message in failed]
    for row in rows:
        row["error"] = _one_line(row["error"])
    summary = summarize(rows, missing, failed, extra)
    report = EvaluationReport(rows, summary, missing, failed, extra)
    if out_dir is not None:
        write_report(report, out_dir)
    return report


def _one_line(message: str) -> str:
    """Messages quoting a parser may span lines; a report shows one line per problem."""
    return " ".join(message.split())


def _read_ground_truth(files: ScanFiles) -> dict[str, Any]:
    scan = read_scan(files.mesh, files.labels)
    assert scan.labels is not None
    instances = scan.instances if scan.instances is not None else instances_from_labels(scan.labels)
    return {"vertices": scan.vertices, "labels": scan.labels, "instances": instances, "jaw": scan.jaw}


def _score(name: str, gt: dict[str, Any], pred_path: Path) -> dict[str, Any]:
    """One scored row; raises ScanError naming ``pred_path`` when the prediction cannot be used."""
    record = read_labels(pred_path)
    n = len(gt["vertices"])
    labels, instances = record["labels"], record["instances"]
    if labels is None:
        raise ScanError(pred_path, "'labels' is null, not a list of FDI codes")
    if len(labels) != n:
        raise ScanError(pred_path, f"{len(labels)} labels but the ground-truth mesh of {name} "
                                   f"has {n} vertices")
    if instances is not None and len(instances) != n:
        raise ScanError(pred_path, f"{len(instances)} instances but the ground-truth mesh of {name} "
                                   f"has {n} vertices")
    outside = labels[(labels < 0) | (labels > 99)]
    if outside.size:
        raise ScanError(pred_path, f"labels hold {int(outside[0])}, which is not an FDI code (0-99)")
    jaw = gt["jaw"]
    if jaw is not None and record["jaw"] is not None and record["jaw"] != jaw:
        raise ScanError(pred_path, f"prediction is for the {record['jaw']} jaw but {name} is a {jaw} jaw")
    if instances is None:
        instances = instances_from_labels(labels)
    # Class indices for mIoU; codes foreign to the jaw become -1, which counts as wrong everywhere.
    class_jaw = jaw or record["jaw"] or fdi.jaw_of_fdi(gt["labels"]) or "lower"
    table = np.full(100, -1, dtype=np.int64)
    table[fdi.fdi_codes(class_jaw)] = np.arange(fdi.NUM_CLASSES)
    seg = segmentation_metrics(table[labels], fdi.fdi_to_class(gt["labels"], class_jaw), fdi.NUM_CLASSES)
    ch = challenge_metrics(gt["vertices"], gt["labels"], gt["instances"], labels, instances)
    row: dict[str, Any] = {"name": name, "jaw": jaw, "status": "ok", "n_vertices": n,
                           "miou": seg["miou"], "dice": seg["dice"], "accuracy": seg["accuracy"],
                           "tsa": ch["tsa"], "tla": ch["tla"], "exp_neg_tla": ch["exp_neg_tla"],
                           "tir": ch["tir"], "score": challenge_score(ch["tsa"], ch["tla"], ch["tir"]),
                           "n_gt_teeth": ch["n_gt_teeth"], "n_pred_teeth": ch["n_pred_teeth"],
                           **dentition_errors(gt["labels"], gt["instances"], labels)}
    row.update(zip(IOU_COLUMNS, seg["per_class_iou"], strict=True))
    row["error"] = ""
    return row


def _unscored_row(files: ScanFiles, status: str, error: str, score_zero: bool, jaw: str | None = None,
                  n_vertices: int | None = None) -> dict[str, Any]:
    """A row for a scan without a usable prediction: zeros (challenge rule) or NaN (bad ground truth)."""
    if jaw is None or n_vertices is None:
        jaw, n_vertices = files.jaw, None
        if files.labels is not None:
            try:  # the label file is small; it tells the jaw and the vertex count without the mesh
                record = read_labels(files.labels)
                jaw = jaw or record["jaw"]
                n_vertices = len(record["labels"])
            except ScanError:
                pass
    metrics = dict(_ZERO) if score_zero else dict.fromkeys(_ZERO, math.nan)
    return {"name": files.name, "jaw": jaw, "status": status, "n_vertices": n_vertices, **metrics,
            "n_gt_teeth": None, "n_pred_teeth": None, **dict.fromkeys(IOU_COLUMNS, math.nan), "error": error}


def summarize(rows: list[dict[str, Any]], missing: list[str], failed: list[tuple[str, str]],
              extra: list[str] | None = None) -> dict[str, Any]:
    """Counts, overall and per-jaw means (NaN skipped) and the challenge score of the overall means."""
    groups = aggregate_rows(rows)
    return {
        "n_scans": len(rows),
        "n_evaluated": sum(r["status"] == "ok" for r in rows),
        "n_missing": len(missing),
        "n_failed": len(failed),
        "jaws_with_duplicated_code": sum(r.get("duplicated_codes", 0) > 0 for r in rows if r["status"] == "ok"),
        "jaws_with_missing_tooth": sum(r.get("missing_teeth", 0) > 0 for r in rows if r["status"] == "ok"),
        "score": groups["overall"]["score"],
        **groups,
        "missing": list(missing),
        "failed": [{"name": name, "error": error} for name, error in failed],
        "extra_predictions": list(extra or []),
    }


def _json_safe(value: Any) -> Any:
    """NaN and infinities become null, so summary.json is strict JSON."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _csv_cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return format(value, ".10g")
    return str(value)


def write_report(report: EvaluationReport, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``summary.json`` and ``metrics.csv`` (one row per scan; empty cell = NaN) atomically."""
    out_dir = Path(out_dir)
    summary_path, csv_path = out_dir / "summary.json", out_dir / "metrics.csv"
    try:
        with atomic_write(summary_path, "w") as f:
            json.dump(_json_safe(report.summary), f, indent=2, allow_nan=False)
            f.write("\n")
        with atomic_write(csv_path, "w") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(ROW_COLUMNS)
            for row in report.rows:
                writer.writerow([_csv_cell(row.get(col)) for col in ROW_COLUMNS])
    except OSError as exc:  # e.g. --out names a file, or a folder without write permission
        raise ScanError(out_dir, f"cannot write the evaluation results ({exc.strerror or exc})") from None
    return summary_path, csv_path


def format_report(report: EvaluationReport) -> Any:
    """A rich Table of the per-jaw and overall means (mIoU, Dice, accuracy, TSA, exp(-TLA), TIR, score)."""
    from rich import box
    from rich.table import Table  # imported here: only the CLI draws tables

    s = report.summary
    caption = (f"{s['n_evaluated']} of {s['n_scans']} scans scored; {s['jaws_with_duplicated_code']} with one code "
               f"on two teeth, {s['jaws_with_missing_tooth']} with a tooth not found")
    if report.missing or report.failed:
        caption += f"; {len(report.missing)} missing and {len(report.failed)} failed count as 0"
    table = Table(title="Evaluation", caption=caption, box=box.SIMPLE_HEAD, collapse_padding=True)
    table.add_column("jaw", no_wrap=True)
    table.add_column("scans", justify="right", no_wrap=True)
    columns = [("mIoU", "miou"), ("Dice", "dice"), ("Acc", "accuracy"), ("TSA", "tsa"),
               ("exp(-TLA)", "exp_neg_tla"), ("TIR", "tir"), ("Score", "score")]
    for title, _ in columns:
        table.add_column(title, justify="right", no_wrap=True)
    for group in ("lower", "upper", "overall"):
        stats = s[group]
        cells = ["-" if math.isnan(stats[key]) else f"{stats[key]:.4f}" for _, key in columns]
        table.add_row(group, str(stats["n"]), *cells, style="bold" if group == "overall" else None)
    return table


def print_report(report: EvaluationReport, console: Any = None) -> None:
    """Print the table, then one line per failed scan (the CLI's view of a report)."""
    from rich.console import Console
    from rich.markup import escape

    console = console or Console()
    console.print(format_report(report))
    for name, error in report.failed:
        console.print(f"[red]failed[/red] {escape(name)}: {escape(error)}", highlight=False)
    if report.extra:
        names = ", ".join(report.extra[:10]) + (" ..." if len(report.extra) > 10 else "")
        console.print(f"{len(report.extra)} prediction(s) without ground truth ignored: {escape(names)}",
                      highlight=False)
