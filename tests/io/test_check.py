import json

import numpy as np

from geot.io.check import check_folder
from geot.io.teeth3ds import write_labels
from tests.conftest import REAL_DATA, real_data, write_obj


def test_check_reports_every_problem(tmp_path, sphere_scan):
    for pid in ("A1", "B2", "C3"):
        write_obj(tmp_path / pid / f"{pid}_lower.obj", sphere_scan.vertices, sphere_scan.faces)
        write_labels(tmp_path / pid / f"{pid}_lower.json", sphere_scan.labels, "lower", pid)
    bad = json.loads((tmp_path / "B2" / "B2_lower.json").read_text())
    bad["labels"] = bad["labels"][:5]
    (tmp_path / "B2" / "B2_lower.json").write_text(json.dumps(bad))
    (tmp_path / "C3" / "C3_lower.obj").write_text("")
    report = check_folder(tmp_path)
    assert not report.ok
    assert [s["name"] for s in report.scans] == ["A1_lower"]
    assert {p.name for p, _ in report.problems} == {"B2_lower.json", "C3_lower.obj"}
    assert report.fdi_histogram[0] == int((sphere_scan.labels == 0).sum())


def test_empty_folder(tmp_path):
    report = check_folder(tmp_path)
    assert not report.ok and "no .obj" in report.problems[0][1]


@real_data
def test_real_folder_reads_cleanly():
    report = check_folder(REAL_DATA)
    assert report.ok, report.problems[:3]
    assert len(report.scans) == 108
    assert {s["jaw"] for s in report.scans} == {"lower", "upper"}
    assert np.median([s["vertices"] for s in report.scans]) > 8000
