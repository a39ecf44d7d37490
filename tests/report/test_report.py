"""geot report without a browser: what the page says about each scan, its embedded figures, its safety."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from plotly.offline import get_plotlyjs

from geot import labels as fdi
from geot.errors import ScanError
from geot.io.mesh import read_mesh
from geot.report import read_prediction, write_report
from geot.report.figure import QUANTUM
from tests.conftest import REAL_DATA, real_data
from tests.report.conftest import geot_block, write_prediction


class Page(HTMLParser):
    """Table rows (cell texts and attributes), every tag attribute, and the embedded figure JSONs."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.rows: list[dict] = []
        self.attributes: list[tuple[str, str, str]] = []
        self.figures: dict[str, dict] = {}
        self._cell: list[str] | None = None
        self._figure: str | None = None
        self._in_body = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.attributes += [(tag, k, v or "") for k, v in attrs.items()]
        if tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.rows.append({"attrs": attrs, "cells": []})
        elif tag == "td" and self._in_body:
            self._cell = []
            self.rows[-1]["sort"] = [*self.rows[-1].get("sort", []), attrs.get("data-sort")]
        elif tag == "script" and attrs.get("type") == "application/json":
            self._figure = attrs["id"]

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.rows[-1]["cells"].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tbody":
            self._in_body = False
        elif tag == "script":
            self._figure = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._figure is not None:
            self.figures[self._figure] = json.loads(data)

    def row(self, name: str) -> dict:
        return next(r for r in self.rows if r["cells"][0] == name)


def decode(array) -> np.ndarray:
    """A plotly typed array (``{"dtype", "bdata"}``) or a plain list, as numpy."""
    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=np.dtype(array["dtype"]))
    return np.asarray(array)


@pytest.fixture()
def folder(tmp_path, scans) -> Path:
    """Three predictions: with confidence and an uncertain jaw, without the geot block, and with warnings."""
    pred = tmp_path / "pred"
    pred.mkdir()
    rng = np.random.default_rng(0)
    first, second, third = scans
    confidence = rng.uniform(0.5, 1.0, len(first.labels))
    write_prediction(pred, first, confidence=confidence)
    path = pred / f"{first.name}.json"
    record = json.loads(path.read_text())
    record["geot"].update(jaw_source="detected", jaw_confidence=0.55, frame_confidence=0.4)
    path.write_text(json.dumps(record))
    write_prediction(pred, second, block=False)  # a JSON from before the predictor wrote its block
    write_prediction(pred, third, block=geot_block(third, None, warnings=["scan looks cut off"]))
    return pred


def test_every_scan_gets_a_row_with_its_facts(folder, scans):
    out = write_report(folder)
    assert out == folder / "report.html"
    page = Page(out.read_text())
    assert sorted(r["cells"][0] for r in page.rows) == sorted(s.name for s in scans)
    for scan in scans:
        row = page.row(scan.name)
        teeth = set(np.unique(scan.labels[scan.labels > 0]).tolist())
        expected = {c for c in fdi.fdi_codes(scan.jaw)[1:].tolist() if c % 10 != 8}
        missing = sorted(expected - teeth)
        assert row["cells"][1] == scan.jaw
        assert row["cells"][2] == str(len(teeth))
        assert row["cells"][3] == (", ".join(map(str, missing)) or "none")
        assert "data-figure" in row["attrs"]
    first, second, third = (page.row(s.name) for s in scans)
    record = json.loads((folder / f"{scans[0].name}.json").read_text())
    assert first["cells"][4] == f"{np.mean(record['geot']['confidence']):.3f}"
    assert "uncertain jaw (detected, 0.55)" in first["cells"][5] and "uncertain frame (0.40)" in first["cells"][5]
    assert second["cells"][4] == "unknown" and second["cells"][5] == ""
    assert third["cells"][4] == "unknown" and third["cells"][5] == "scan looks cut off"
    assert "flagged" in first["attrs"]["class"] and "flagged" not in second["attrs"]["class"]


def test_figures_hold_every_face_in_palette_colours_in_the_unit_sphere(folder, scans):
    page = Page(write_report(folder).read_text())
    for scan in scans:
        index = page.row(scan.name)["attrs"]["data-figure"]
        traces = page.figures[f"figure-{index}"]["data"]
        assert all(t["type"] == "mesh3d" for t in traces)
        assert sum(len(decode(t["i"])) for t in traces) == len(scan.faces)
        classes = fdi.fdi_to_class(scan.labels, scan.jaw)
        shown = {t["name"].split(" (")[0] for t in traces}
        assert shown == {fdi.class_names(scan.jaw)[k] for k in np.unique(classes)}
        names = fdi.class_names(scan.jaw)
        for trace in traces:
            k = names.index(trace["name"].split(" (")[0])
            assert trace["hovertemplate"].startswith(f"<b>{names[k]}</b>")  # e.g. '36 first molar' on hover
            assert ("confidence %{customdata}%" in trace["hovertemplate"]) == (scan is scans[0])
            assert trace["color"] == f"rgb{tuple(int(x) for x in fdi.PALETTE[k])}"
            xyz = np.stack([decode(trace[a]).astype(np.float64) * QUANTUM for a in "xyz"], axis=1)
            assert np.linalg.norm(xyz, axis=1).max() <= 1.0 + 1e-3
            n = len(xyz)
            assert all(decode(trace[a]).max() < n for a in "ijk")
    first = page.figures[f"figure-{page.row(scans[0].name)['attrs']['data-figure']}"]["data"]
    confidence = np.asarray(json.loads((folder / f"{scans[0].name}.json").read_text())["geot"]["confidence"])
    percent = np.concatenate([decode(t["customdata"]) for t in first])
    assert percent.min() >= 50 and percent.max() <= 100  # the fixture drew confidences in [0.5, 1]
    assert len(percent) >= len(confidence)  # vertices on a tooth border appear in both traces
    unknown = page.figures[f"figure-{page.row(scans[1].name)['attrs']['data-figure']}"]["data"]
    assert all("customdata" not in t for t in unknown)


def test_geometry_is_faithful_to_the_mesh_up_to_the_canonical_frame(folder, scans):
    """Every triangle is shown with the mesh's edge lengths, all scaled by one factor (a rigid frame)."""
    page = Page(write_report(folder).read_text())
    scan = scans[0]
    traces = page.figures[f"figure-{page.row(scan.name)['attrs']['data-figure']}"]["data"]

    def edges(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
        corners = vertices[faces]
        return np.sort(np.linalg.norm(corners - np.roll(corners, 1, axis=1), axis=2).ravel())

    shown = np.concatenate([
        edges(np.stack([decode(t[a]).astype(np.float64) * QUANTUM for a in "xyz"], axis=1),
              np.stack([decode(t[a]).astype(np.int64) for a in "ijk"], axis=1)) for t in traces])
    mesh = read_mesh(folder / f"{scan.name}.ply")
    truth = edges(mesh.vertices, mesh.faces)
    ratio = np.sort(shown)[len(truth) // 10:] / truth[len(truth) // 10:]  # skip the shortest: quantisation
    assert len(shown) == len(truth) and ratio.std() / ratio.mean() < 0.01


def test_unusable_files_are_rows_with_their_problem_never_a_crash(tmp_path, scans):
    pred = tmp_path / "pred"
    pred.mkdir()
    write_prediction(pred, scans[0])
    (pred / "broken_lower.json").write_text('{"jaw": "lower", "labels": [31, 3')
    short = write_prediction(pred, scans[1])
    record = json.loads(short.read_text())
    record["labels"] = record["labels"][:-4]
    record["instances"] = record["instances"][:-4]
    short.write_text(json.dumps(record))
    write_prediction(pred, scans[2], ply=False, block=geot_block(scans[2], None, source=str(tmp_path / "gone.obj")))
    mixed = pred / "mixed.json"
    mixed.write_text(json.dumps({"labels": [0, 11, 31]}))
    (pred / "null_upper.json").write_text(json.dumps({"jaw": "upper", "labels": None}))
    bad_block = write_prediction(pred, scans[0], block={"jaw_confidence": "very", "confidence": [2.0]})
    bad_block.rename(pred / "renamed_lower.json")
    (pred / f"{scans[0].name}.ply").rename(pred / "renamed_lower.ply")
    write_prediction(pred, scans[0])
    (pred / "summary.json").write_text(json.dumps({"n_scans": 3, "overall": {}}))  # geot evaluate's output
    page = Page(write_report(pred).read_text())
    assert sorted(r["cells"][0] for r in page.rows) == sorted(
        ["broken_lower", "mixed", "null_upper", "renamed_lower", scans[0].name, scans[1].name, scans[2].name])
    problems = {r["cells"][0]: r["cells"][5] for r in page.rows}
    assert "cannot read prediction JSON" in problems["broken_lower"] and "broken_lower.json" in problems["broken_lower"]
    assert page.row("broken_lower")["cells"][1:5] == ["?", "?", "?", "unknown"]
    assert f"has {len(scans[1].labels)} vertices for {len(scans[1].labels) - 4} labels" in problems[scans[1].name]
    assert "no 3D view" in problems[scans[2].name]
    assert "mix teeth of the upper and the lower jaw" in problems["mixed"]
    assert "'labels' is null" in problems["null_upper"]
    assert "'geot' block ignored (jaw_confidence:" in problems["renamed_lower"]
    assert problems[scans[0].name] == ""
    viewable = {r["cells"][0] for r in page.rows if "data-figure" in r["attrs"]}
    assert viewable == {scans[0].name, "renamed_lower"}
    assert len(page.figures) == 2


def test_geometry_comes_from_the_source_mesh_without_a_ply(tmp_path, scans):
    import trimesh

    scan = scans[1]
    source = tmp_path / "inputs" / f"{scan.name}.obj"
    source.parent.mkdir()
    trimesh.Trimesh(scan.vertices, scan.faces, process=False).export(source)
    pred = tmp_path / "pred"
    write_prediction(pred, scan, ply=False, block=geot_block(scan, None, source="../inputs/" + source.name))
    read = read_prediction(pred / f"{scan.name}.json")
    assert read is not None and read.problems == [] and read.geometry is not None
    np.testing.assert_allclose(read.geometry.vertices, scan.vertices, atol=1e-6)
    assert len(Page(write_report(pred).read_text()).figures) == 1


def test_page_is_self_contained_with_one_plotly_copy(folder):
    text = write_report(folder, folder.parent / "out" / "page.html").read_text()
    assert text.count(get_plotlyjs()[:2000]) == 1
    page = Page(text)
    linked = [(tag, k, v) for tag, k, v in page.attributes if re.search(r"(https?:)?//", v) and k != "content"]
    assert linked == []  # no src/href/... pointing anywhere
    csp = next(v for tag, k, v in page.attributes if tag == "meta" and k == "content" and "default-src" in v)
    assert "default-src 'none'" in csp and "http" not in csp
    assert not re.search(r"<(link|iframe|object|embed|base)\b", text)


def test_hostile_names_and_warnings_are_shown_as_text(tmp_path, scans):
    pred = tmp_path / "pred"
    pred.mkdir()
    scan = scans[0]
    evil = '<img src=x onerror=alert(1)>_lower'
    path = write_prediction(pred, scan, block=geot_block(scan, None, warnings=["</script><script>alert(2)</script>"]))
    path.rename(pred / f"{evil}.json")
    (pred / f"{scan.name}.ply").rename(pred / f"{evil}.ply")
    text = write_report(pred).read_text()
    assert "<img src=x" not in text and "<script>alert(2)" not in text
    page = Page(text)
    assert page.rows[0]["cells"][0] == evil
    assert page.rows[0]["cells"][5] == "</script><script>alert(2)</script>"
    assert len(page.figures) == 1


def test_inputs_are_kept_and_the_write_is_atomic(folder):
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    out = write_report(folder)
    write_report(folder)  # a second run replaces the report in one step
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p != out}
    assert after == before
    assert not list(folder.glob(".*.tmp"))


def test_a_folder_without_predictions_is_a_clear_error(tmp_path):
    with pytest.raises(ScanError, match="prediction folder not found"):
        write_report(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "summary.json").write_text("{}")
    with pytest.raises(ScanError, match="no prediction JSONs"):
        write_report(tmp_path / "empty")


def test_page_size_grows_by_a_quarter_megabyte_per_8k_vertex_scan(tmp_path):
    from tests.report.conftest import synthetic_scan

    pred = tmp_path / "pred"
    scan = synthetic_scan("lower", 7, resolution=1.0)
    write_prediction(pred, scan, confidence=np.full(len(scan.labels), 0.9))
    one = write_report(pred).stat().st_size
    base = len(get_plotlyjs())
    assert 7_000 < len(scan.vertices) < 10_000
    assert one - base < 300_000, one - base


def test_cli_writes_the_page_and_names_a_bad_folder_in_one_line(folder, tmp_path, monkeypatch, capsys):
    from typer.testing import CliRunner

    from geot.cli import app, main

    out = tmp_path / "site" / "index.html"
    result = CliRunner().invoke(app, ["report", str(folder), "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0 and str(out) in " ".join(result.output.split())
    assert len(Page(out.read_text()).rows) == 3
    monkeypatch.setattr("sys.argv", ["geot", "report", str(tmp_path / "nowhere")])
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err
    assert info.value.code == 2 and "nowhere" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_damaged_prediction_files_become_rows_never_exceptions(tmp_path):
    from geot.testing import damaged_predictions

    for case in damaged_predictions(tmp_path, per_family=4, seed=3):
        scan = read_prediction(case.predictions / f"{case.damaged}.json")
        if scan is not None:  # None: a JSON object that is no prediction at all
            assert scan.problems and all("\n" not in p for p in scan.problems)  # at least: no mesh beside it
        page = Page(write_report(case.predictions).read_text())
        assert {r["cells"][0] for r in page.rows} <= {case.damaged, case.valid}
        assert case.valid in {r["cells"][0] for r in page.rows}


@real_data
@pytest.mark.real_data
def test_real_jaws_get_a_row_and_a_complete_view_each(tmp_path):
    from geot.io.mesh import write_labelled_mesh
    from geot.io.teeth3ds import find_scans, read_scan, write_labels

    pred = tmp_path / "pred"
    real = [read_scan(f.mesh, f.labels) for f in find_scans(REAL_DATA)[:2]]
    for scan in real:
        write_labels(pred / f"{scan.name}.json", scan.labels, scan.jaw, scan.patient)
        write_labelled_mesh(pred / f"{scan.name}.ply", scan.vertices, scan.faces, scan.labels, scan.jaw)
    page = Page(write_report(pred).read_text())
    for scan in real:
        row = page.row(scan.name)
        assert row["cells"][1:3] == [scan.jaw, str(len(np.unique(scan.labels[scan.labels > 0])))]
        traces = page.figures[f"figure-{row['attrs']['data-figure']}"]["data"]
        assert sum(len(decode(t["i"])) for t in traces) == len(scan.faces)
        assert len(traces) == len(np.unique(scan.labels))


@pytest.mark.parametrize("vertices", [np.zeros((1, 3)), np.ones((5, 3)), np.eye(3)[[0, 1, 2, 0]] * [1, 1, 0],
                                      np.arange(12.0).reshape(4, 3)])
def test_degenerate_geometry_still_gets_a_finite_view(tmp_path, vertices):
    import trimesh

    faces = np.array([[0, 1, 2], [1, 2, 3]])[: max(0, len(vertices) - 2)] if len(vertices) > 2 else None
    (tmp_path / "odd_lower.json").write_text(json.dumps({"jaw": "lower", "labels": [0] * (len(vertices) - 1) + [31]}))
    mesh = trimesh.Trimesh(vertices, faces if faces is not None else np.zeros((0, 3), int), process=False)
    (tmp_path / "odd_lower.ply").write_bytes(mesh.export(file_type="ply"))
    page = Page(write_report(tmp_path).read_text())
    traces = page.figures["figure-0"]["data"]
    shown = np.concatenate([decode(t[a]) for t in traces for a in "xyz"]).astype(np.float64) * QUANTUM
    assert np.isfinite(shown).all() and np.abs(shown).max() <= 1.0 + 1e-3
