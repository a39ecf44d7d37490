"""evaluate_folders on tiny Teeth3DS folders: teeth are icospheres along a line beside a gingiva sphere."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import trimesh
from rich.console import Console

from geot.engine.evaluate import EvaluationReport, evaluate_folders, format_report, print_report
from geot.errors import ScanError
from geot.io.teeth3ds import read_labels, write_labels
from tests.conftest import REAL_DATA, real_data

SPHERE_VERTS = 42  # icosphere(subdivisions=1)
CODES = {"lower": [31, 32, 33, 41, 42], "upper": [11, 12, 21]}
IDS = ["AAAA0001", "BBBB0002"]


def write_gt_scan(root: Path, scan_id: str, jaw: str) -> Path:
    """``root/<ID>/<ID>_<jaw>.obj`` and its label JSON: one gingiva sphere, then one sphere per tooth."""
    codes = CODES[jaw]
    parts = [trimesh.creation.icosphere(subdivisions=1, radius=2.0)]
    parts[0].apply_translation([6.0, -6.0, 0.0])
    for i in range(len(codes)):
        tooth = trimesh.creation.icosphere(subdivisions=1, radius=1.0)
        tooth.apply_translation([3.0 * i, 0.0, 0.0])
        parts.append(tooth)
    mesh = trimesh.util.concatenate(parts)
    labels = np.repeat([0, *codes], SPHERE_VERTS)
    folder = root / scan_id
    folder.mkdir(parents=True, exist_ok=True)
    mesh.export(folder / f"{scan_id}_{jaw}.obj")
    return write_labels(folder / f"{scan_id}_{jaw}.json", labels, jaw, scan_id)


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """A GT folder of 4 scans (2 patients x 2 jaws) and a prediction folder of exact copies.

    Predictions of the first patient are nested (``pred/<ID>/<name>.json``), the others flat.
    """
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for k, scan_id in enumerate(IDS):
        for jaw in ("lower", "upper"):
            label_file = write_gt_scan(gt, scan_id, jaw)
            target = pred / scan_id / label_file.name if k == 0 else pred / label_file.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(label_file, target)
    return gt, pred


def edit_prediction(pred: Path, name: str, **changes) -> Path:
    path = next(pred.rglob(f"{name}.json"))
    record = json.loads(path.read_text())
    record.update(changes)
    path.write_text(json.dumps(record))
    return path


def test_perfect_predictions_score_one(folders):
    gt, pred = folders
    report = evaluate_folders(pred, gt)
    assert isinstance(report, EvaluationReport)
    assert report.missing == [] and report.failed == [] and report.extra == []
    assert [r["name"] for r in report.rows] == ["AAAA0001_lower", "AAAA0001_upper", "BBBB0002_lower",
                                                "BBBB0002_upper"]
    s = report.summary
    assert (s["n_scans"], s["n_evaluated"], s["n_missing"], s["n_failed"]) == (4, 4, 0, 0)
    for group in ("overall", "lower", "upper"):
        for key in ("miou", "dice", "accuracy", "tsa", "exp_neg_tla", "tir", "score"):
            assert s[group][key] == pytest.approx(1.0), (group, key)
        assert s[group]["tla"] == pytest.approx(0.0)
    assert s["lower"]["n"] == 2 and s["upper"]["n"] == 2 and s["score"] == pytest.approx(1.0)
    lower = report.rows[0]
    assert lower["jaw"] == "lower" and lower["n_vertices"] == SPHERE_VERTS * 6
    # lower codes 31, 32, 33, 41, 42 are classes 1, 2, 3, 9, 10; the others are absent (NaN)
    present = [k for k in range(17) if not math.isnan(lower[f"iou_{k}"])]
    assert present == [0, 1, 2, 3, 9, 10]
    assert all(lower[f"iou_{k}"] == 1.0 for k in present)


def test_missing_prediction_is_reported_and_counts_zero(folders):
    gt, pred = folders
    next(pred.rglob("BBBB0002_upper.json")).unlink()
    report = evaluate_folders(pred, gt)
    assert report.missing == ["BBBB0002_upper"] and report.failed == []
    row = next(r for r in report.rows if r["name"] == "BBBB0002_upper")
    assert row["status"] == "missing" and row["jaw"] == "upper" and row["n_vertices"] == SPHERE_VERTS * 4
    s = report.summary
    assert s["n_missing"] == 1 and s["n_evaluated"] == 3
    for key in ("miou", "dice", "accuracy", "tsa", "exp_neg_tla", "tir", "score"):
        assert s["overall"][key] == pytest.approx(3 / 4), key
        assert s["upper"][key] == pytest.approx(1 / 2), key
        assert s["lower"][key] == pytest.approx(1.0), key


def test_wrong_vertex_count_fails_that_scan_only(folders):
    gt, pred = folders
    bad = next(pred.rglob("AAAA0001_lower.json"))
    record = json.loads(bad.read_text())
    edit_prediction(pred, "AAAA0001_lower", labels=record["labels"][:-5], instances=record["instances"][:-5])
    report = evaluate_folders(pred, gt)
    assert report.missing == []
    assert len(report.failed) == 1
    name, message = report.failed[0]
    assert name == "AAAA0001_lower"
    assert str(bad) in message and "247 labels" in message and "252 vertices" in message
    ok = [r for r in report.rows if r["status"] == "ok"]
    assert len(ok) == 3 and all(r["miou"] == 1.0 and r["tir"] == 1.0 for r in ok)
    s = report.summary
    assert s["n_failed"] == 1 and s["n_evaluated"] == 3
    assert s["overall"]["miou"] == pytest.approx(3 / 4)  # the failed scan counts 0, like a missing one
    assert s["lower"]["score"] == pytest.approx(1 / 2)
    assert s["failed"] == [{"name": "AAAA0001_lower", "error": message}]


def test_unreadable_prediction_and_wrong_jaw_fail_with_file_named(folders):
    gt, pred = folders
    broken = next(pred.rglob("AAAA0001_upper.json"))
    broken.write_text("{not json")
    wrong_jaw = edit_prediction(pred, "BBBB0002_lower", jaw="upper")
    report = evaluate_folders(pred, gt)
    failed = dict(report.failed)
    assert set(failed) == {"AAAA0001_upper", "BBBB0002_lower"}
    assert str(broken) in failed["AAAA0001_upper"] and "JSON" in failed["AAAA0001_upper"]
    assert str(wrong_jaw) in failed["BBBB0002_lower"] and "upper jaw" in failed["BBBB0002_lower"]
    assert report.summary["n_evaluated"] == 2


def test_ground_truth_without_labels_fails_but_is_left_out_of_the_means(folders):
    gt, pred = folders
    (gt / "AAAA0001" / "AAAA0001_upper.json").unlink()
    report = evaluate_folders(pred, gt)
    assert [name for name, _ in report.failed] == ["AAAA0001_upper"]
    assert "no label file" in report.failed[0][1] and report.missing == []
    s = report.summary
    assert s["n_scans"] == 4 and s["n_evaluated"] == 3
    assert s["overall"]["miou"] == 1.0 and s["overall"]["score"] == pytest.approx(1.0)
    assert s["upper"]["n"] == 2 and s["upper"]["tsa"] == 1.0  # the NaN row is skipped, not counted 0


def test_swapped_teeth_lower_tir_and_miou_but_not_tsa(folders):
    gt, pred = folders
    labels = np.array(read_labels(next(pred.rglob("BBBB0002_lower.json")))["labels"])
    swapped = labels.copy()
    swapped[labels == 31], swapped[labels == 41] = 41, 31
    edit_prediction(pred, "BBBB0002_lower", labels=swapped.tolist())
    report = evaluate_folders(pred, gt)
    row = next(r for r in report.rows if r["name"] == "BBBB0002_lower")
    assert row["status"] == "ok"
    assert row["tsa"] == 1.0 and row["tla"] == pytest.approx(0.0)
    assert row["tir"] == pytest.approx(3 / 5)
    assert row["miou"] == pytest.approx(3 / 5)  # classes 1 (31) and 9 (41) have IoU 0, three others 1
    assert row["iou_1"] == 0.0 and row["iou_9"] == 0.0
    assert row["accuracy"] == pytest.approx(4 / 6)
    assert row["score"] == pytest.approx((1 + 1 + 3 / 5) / 3)


def test_foreign_fdi_code_counts_as_wrong_not_as_failure(folders):
    gt, pred = folders
    labels = np.array(read_labels(next(pred.rglob("AAAA0001_lower.json")))["labels"])
    labels[labels == 33] = 13  # an upper-jaw code in a lower jaw
    edit_prediction(pred, "AAAA0001_lower", labels=labels.tolist())
    report = evaluate_folders(pred, gt)
    assert report.failed == []
    row = report.rows[0]
    assert row["iou_3"] == 0.0 and row["miou"] == pytest.approx(4 / 5)
    assert row["tir"] == pytest.approx(4 / 5) and row["tsa"] == 1.0


def test_predictions_without_instances_get_one_per_code(folders):
    gt, pred = folders
    path = next(pred.rglob("AAAA0001_upper.json"))
    record = json.loads(path.read_text())
    del record["instances"]
    path.write_text(json.dumps(record))
    report = evaluate_folders(pred, gt)
    row = next(r for r in report.rows if r["name"] == "AAAA0001_upper")
    assert row["status"] == "ok" and row["tir"] == 1.0 and row["n_pred_teeth"] == 3


def test_extra_predictions_are_listed_and_ignored(folders):
    gt, pred = folders
    shutil.copy(next(pred.rglob("AAAA0001_lower.json")), pred / "ZZZZ9999_lower.json")
    report = evaluate_folders(pred, gt)
    assert report.extra == ["ZZZZ9999_lower"] and report.summary["n_scans"] == 4
    assert report.summary["extra_predictions"] == ["ZZZZ9999_lower"]


def test_out_dir_gets_summary_json_and_metrics_csv(folders, tmp_path):
    gt, pred = folders
    next(pred.rglob("AAAA0001_upper.json")).unlink()
    out = tmp_path / "eval"
    report = evaluate_folders(pred, gt, out_dir=out)

    def no_nan(token):
        raise AssertionError(f"summary.json holds {token}")

    summary = json.loads((out / "summary.json").read_text(), parse_constant=no_nan)
    assert summary["n_scans"] == 4 and summary["missing"] == ["AAAA0001_upper"]
    assert summary["overall"]["miou"] == pytest.approx(3 / 4)
    assert summary["score"] == pytest.approx(report.summary["score"])
    assert summary["upper"]["tla"] == pytest.approx(0.0)  # TLA mean over scored scans only

    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == [r["name"] for r in report.rows]
    assert {"jaw", "status", "miou", "dice", "accuracy", "tsa", "tla", "exp_neg_tla", "tir",
            "iou_0", "iou_16"} <= set(rows[0])
    by_name = {r["name"]: r for r in rows}
    assert float(by_name["AAAA0001_lower"]["miou"]) == 1.0
    assert by_name["AAAA0001_lower"]["iou_16"] == ""  # NaN: class 16 (48) absent from the GT
    assert by_name["AAAA0001_upper"]["status"] == "missing"
    assert float(by_name["AAAA0001_upper"]["tsa"]) == 0.0
    assert not list(out.glob(".*.tmp"))  # atomic writes left no temporary file


def test_format_report_shows_per_jaw_and_overall(folders):
    gt, pred = folders
    next(pred.rglob("BBBB0002_upper.json")).unlink()
    report = evaluate_folders(pred, gt)
    table = format_report(report)
    assert table.row_count == 3
    console = Console(file=io.StringIO(), width=150, color_system=None)
    print_report(report, console)
    text = console.file.getvalue()
    assert "overall" in text and "0.7500" in text and "0.5000" in text and "1 missing" in text


def test_empty_ground_truth_folder_raises(tmp_path):
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    with pytest.raises(Exception, match="no mesh files"):
        evaluate_folders(tmp_path / "pred", tmp_path / "gt")


@real_data
@pytest.mark.real_data
def test_real_scans_against_themselves_and_a_shifted_labelling(tmp_path):
    """Two real patients: an exact copy scores 1; labels of one tooth moved to gingiva lose exactly it."""
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    for patient in sorted(p for p in REAL_DATA.iterdir() if p.is_dir())[:2]:
        shutil.copytree(patient, gt / patient.name)  # a temporary copy, outside the project
        for label_file in patient.glob("*.json"):
            shutil.copy(label_file, pred / label_file.name)
    report = evaluate_folders(pred, gt)
    assert report.failed == [] and report.missing == [] and report.summary["n_scans"] >= 2
    for key in ("miou", "dice", "accuracy", "tsa", "exp_neg_tla", "tir"):
        assert report.summary["overall"][key] == pytest.approx(1.0), key

    first = report.rows[0]["name"]
    record = read_labels(pred / f"{first}.json")
    labels, instances = record["labels"], record["instances"]
    tooth = np.unique(labels[labels > 0])[0]
    n_teeth = len(np.unique(instances[instances > 0]))
    edit_prediction(pred, first, labels=np.where(labels == tooth, 0, labels).tolist(),
                    instances=np.where(labels == tooth, 0, instances).tolist())
    row = evaluate_folders(pred, gt).rows[0]
    assert row["tir"] == 1.0 and row["tla"] > 0
    assert row["tsa"] == pytest.approx(1 - (labels == tooth).sum() / len(labels))
    assert row["miou"] == pytest.approx((n_teeth - 1) / n_teeth)


@pytest.mark.parametrize("bad_code", [100, 4100, -3, 2**63 - 1])
@pytest.mark.parametrize("with_instances", [True, False])
def test_labels_that_are_not_fdi_codes_fail_that_file_only(folders, bad_code, with_instances):
    gt, pred = folders
    path = next(pred.rglob("AAAA0001_lower.json"))
    record = json.loads(path.read_text())
    record["labels"][7] = bad_code
    if not with_instances:
        del record["instances"]
    path.write_text(json.dumps(record))
    report = evaluate_folders(pred, gt)
    (name, message), = report.failed
    assert name == "AAAA0001_lower"
    assert message.startswith(str(path)) and str(bad_code) in message and "not an FDI code" in message
    assert report.scored == 3 and report.summary["n_evaluated"] == 3
    assert [r["status"] for r in report.rows] == ["failed", "ok", "ok", "ok"]


@pytest.mark.parametrize("content", [
    '{"jaw": "lower", "labels": [' + "1" * 5000 + "]}",                # an integer Python refuses to parse
    '{"jaw": "lower", "labels": [' + str(10**30) + "]}",              # beyond 64 bits
    "[" * 100_000 + "]" * 100_000,                                      # nested past the recursion limit
    '{"jaw": "lower", "labels": "31"}',
    '{"jaw": 7, "labels": []}',
    "\ud800".encode("utf-8", "surrogatepass").decode("latin-1"),       # not UTF-8 once written as latin-1
])
def test_any_unreadable_prediction_is_one_reported_line(folders, content):
    gt, pred = folders
    path = next(pred.rglob("BBBB0002_upper.json"))
    path.write_text(content, encoding="latin-1")
    report = evaluate_folders(pred, gt)
    (name, message), = report.failed
    assert name == "BBBB0002_upper" and message.startswith(f"{path}: ") and "\n" not in message
    assert len(message) < 400 and report.scored == 3


def test_scored_counts_usable_predictions_and_is_zero_when_none_is(folders):
    gt, pred = folders
    assert evaluate_folders(pred, gt).scored == 4
    for path in pred.rglob("*.json"):
        path.write_text("[]")
    report = evaluate_folders(pred, gt)
    assert report.scored == 0 and len(report.failed) == 4 and report.summary["n_evaluated"] == 0
    empty = pred.parent / "empty"
    empty.mkdir()
    report = evaluate_folders(empty, gt)
    assert report.scored == 0 and len(report.missing) == 4 and report.failed == []


def test_results_that_cannot_be_written_are_a_clear_error(folders, tmp_path):
    gt, pred = folders
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ScanError, match="cannot write the evaluation results") as info:
        evaluate_folders(pred, gt, out_dir=blocker)
    assert str(blocker) in str(info.value)


def test_null_labels_are_a_reported_failure(folders):
    gt, pred = folders
    path = edit_prediction(pred, "AAAA0001_upper", labels=None)
    report = evaluate_folders(pred, gt)
    assert report.failed == [("AAAA0001_upper", f"{path}: 'labels' is null, not a list of FDI codes")]
    assert report.scored == 3
