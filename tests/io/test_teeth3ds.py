import json

import numpy as np
import pytest

from geot.errors import ScanError
from geot.io.teeth3ds import find_scans, instances_from_labels, parse_name, read_labels, read_scan, write_labels
from tests.conftest import write_obj


def write_pair(root, scan, name="P001_lower", labels=None, jaw="lower", patient="P001", instances=None):
    obj = write_obj(root / patient / f"{name}.obj", scan.vertices, scan.faces)
    record = {"id_patient": patient, "jaw": jaw,
              "labels": (scan.labels if labels is None else labels).tolist()
              if not isinstance(labels, list) else labels}
    record["instances"] = instances if instances is not None else instances_from_labels(scan.labels).tolist()
    (root / patient / f"{name}.json").write_text(json.dumps(record))
    return obj


def test_pair_round_trip(tmp_path, sphere_scan):
    obj = write_pair(tmp_path, sphere_scan)
    scan = read_scan(obj)
    assert (scan.name, scan.patient, scan.jaw) == ("P001_lower", "P001", "lower")
    np.testing.assert_allclose(scan.vertices, sphere_scan.vertices, atol=1e-6)
    np.testing.assert_array_equal(scan.labels, sphere_scan.labels)
    np.testing.assert_array_equal(scan.classes()[scan.labels == 31], 1)
    write_labels(tmp_path / "again.json", scan.labels, "lower", "P001")
    again = read_labels(tmp_path / "again.json")
    np.testing.assert_array_equal(again["labels"], scan.labels)
    np.testing.assert_array_equal(again["instances"], instances_from_labels(scan.labels))
    assert again["jaw"] == "lower" and again["patient"] == "P001"


def test_instances_from_labels():
    np.testing.assert_array_equal(instances_from_labels(np.array([0, 36, 31, 36, 0, 41])), [0, 2, 1, 2, 0, 3])


def test_find_scans_pairs_and_unlabelled(tmp_path, sphere_scan):
    write_pair(tmp_path, sphere_scan)
    write_obj(tmp_path / "loose" / "Q9_upper.obj", sphere_scan.vertices, sphere_scan.faces)
    found = find_scans(tmp_path)
    assert [(f.name, f.patient, f.jaw, f.labels is not None) for f in found] == [
        ("P001_lower", "P001", "lower", True), ("Q9_upper", "Q9", "upper", False)]
    unlabelled = read_scan(found[1].mesh)
    assert unlabelled.labels is None and unlabelled.jaw == "upper"


def test_parallel_label_tree(tmp_path, sphere_scan):
    write_obj(tmp_path / "scans" / "P001" / "P001_lower.obj", sphere_scan.vertices, sphere_scan.faces)
    write_labels(tmp_path / "gt" / "P001" / "P001_lower.json", sphere_scan.labels, "lower", "P001")
    (entry,) = find_scans(tmp_path / "scans", labels_root=tmp_path / "gt")
    assert entry.labels == tmp_path / "gt" / "P001" / "P001_lower.json"


@pytest.mark.parametrize("stem, patient, jaw", [
    ("01A6GW4A_lower", "01A6GW4A", "lower"),
    ("IOS007_upper", "IOS007", "upper"),
    ("lower", "lower", "lower"),
    ("lower_scan", "scan", "lower"),
    ("P1_lower_jaw", "P1", "lower"),
    ("Maxilla-P7", "P7", "upper"),
    ("scan.UPPER", "scan", "upper"),
    ("P2 mandibular scan", "P2 scan", "lower"),
    ("maxillary_P3_v2", "P3_v2", "upper"),
    ("P4_Mandible", "P4", "lower"),
    ("P5Lower", "P5", "lower"),
    ("P6__upper-arch__final", "P6_final", "upper"),
    ("lowercase_3", "lowercase_3", None),
    ("uppers", "uppers", None),
    ("supper_P1", "supper_P1", None),
    ("upper_lower_compare", "upper_lower_compare", None),
    ("maxilla_vs_mandible", "maxilla_vs_mandible", None),
    ("scan_0042", "scan_0042", None),
])
def test_jaw_word_anywhere_in_the_name(stem, patient, jaw):
    assert parse_name(stem) == (patient, jaw)


def test_loose_names_give_the_jaw_when_reading(tmp_path, sphere_scan):
    for name, jaw in (("lower", "lower"), ("Maxilla-P7", "upper"), ("lowercase_3", None)):
        path = write_obj(tmp_path / f"{name}.obj", sphere_scan.vertices, sphere_scan.faces)
        assert read_scan(path, labels=False).jaw == jaw
    (entry,) = find_scans(tmp_path / "Maxilla-P7.obj")
    assert (entry.patient, entry.jaw) == ("P7", "upper")


def test_jaw_from_obj_header(tmp_path, sphere_scan):
    path = write_obj(tmp_path / "scan.obj", sphere_scan.vertices, sphere_scan.faces, header="# lower")
    assert read_scan(path).jaw == "lower"


@pytest.mark.parametrize("mutate, message", [
    (lambda r, s: r.update(labels=r["labels"][:-1]), "labels for"),
    (lambda r, s: r.update(labels=[55] + r["labels"][1:]), r"unknown FDI codes \[55\]"),
    (lambda r, s: r.update(jaw="upper"), "mismatched jaw"),
    (lambda r, s: r.update(labels=[11 if v else 0 for v in r["labels"]]), "mismatched jaw|teeth of the upper"),
    (lambda r, s: r.update(labels="not a list"), "must be a list"),
    (lambda r, s: r.update(labels=[1.5] * len(r["labels"])), "integers only"),
    (lambda r, s: r.pop("labels"), "no 'labels'"),
    (lambda r, s: r.update(jaw="middle"), "jaw must be"),
    (lambda r, s: r.update(instances=[0, 1]), "instances for"),
])
def test_bad_label_files_name_file_and_problem(tmp_path, sphere_scan, mutate, message):
    obj = write_pair(tmp_path, sphere_scan)
    label_file = obj.with_suffix(".json")
    record = json.loads(label_file.read_text())
    mutate(record, sphere_scan)
    label_file.write_text(json.dumps(record))
    before = label_file.read_bytes()
    with pytest.raises(ScanError, match=message) as info:
        read_scan(obj)
    assert info.value.path in (label_file, obj)
    assert str(info.value.path) in str(info.value)
    assert label_file.read_bytes() == before  # inputs are never modified


def test_unreadable_json(tmp_path, sphere_scan):
    obj = write_pair(tmp_path, sphere_scan)
    obj.with_suffix(".json").write_text("{not json")
    with pytest.raises(ScanError, match="cannot read label JSON") as info:
        read_scan(obj)
    assert info.value.path == obj.with_suffix(".json")


@pytest.mark.parametrize("vertices, message", [
    (np.zeros((0, 3)), "empty"),
    (np.vstack([np.random.default_rng(0).normal(size=(20, 3)), [[np.inf, 0, 0]]]), "NaN or infinite"),
    (np.vstack([np.random.default_rng(0).normal(size=(20, 3)), [[np.nan, 0, 0]]]), "NaN or infinite"),
    (np.zeros((30, 3)), "coincide"),
    (np.ones((1, 3)), "too few"),
])
def test_bad_geometry(tmp_path, vertices, message):
    path = write_obj(tmp_path / "X_lower.obj", vertices, None)
    if len(vertices) == 0:
        path.write_text("# nothing\n")
    with pytest.raises(ScanError, match=message) as info:
        read_scan(path)
    assert info.value.path == path


def test_faces_out_of_range(tmp_path, sphere_scan):
    path = write_obj(tmp_path / "X_lower.obj", sphere_scan.vertices[:10], None)
    path.write_text(path.read_text() + "f 1 2 3\nf 1 2 50\n")
    with pytest.raises(ScanError, match="faces index|cannot read") as info:
        read_scan(path)
    assert info.value.path == path
