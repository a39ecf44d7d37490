"""Segment synthetic jaws with a trained model, write every output, evaluate, export and reload."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from geot.config import load_config
from geot.data.sources import gather_data
from geot.data.synth import write_synthetic_dataset
from geot.engine.evaluate import evaluate_folders
from geot.engine.export import export_bundle
from geot.engine.predict import Segmenter, predict_files
from geot.errors import CheckpointError
from geot.io.mesh import read_mesh
from geot.io.scan import Scan
from geot.io.teeth3ds import find_scans, read_labels, read_scan
from tests.engine.test_train import TINY


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    write_synthetic_dataset(root / "train", n=6, seed=0, resolution=0.25)
    write_synthetic_dataset(root / "new", n=2, seed=99, resolution=0.25)
    cfg = load_config(overrides={**TINY, "semi.method": "supervised", "optim.epochs": 2, "model.offset_head": True})
    from geot.engine.train import train

    train(cfg, gather_data(cfg, root / "train", cache_dir=root / "cache"), root / "run", progress=False)
    return root


def test_predict_outputs_and_evaluate(trained, tmp_path):
    segmenter = Segmenter.load(trained / "run")
    files = find_scans(trained / "new")
    report = predict_files(segmenter, files, tmp_path / "out", formats=("json", "ply", "obj", "png"))
    assert len(report.written) == 2 and not report.failed
    for entry in files:
        truth = read_scan(entry.mesh, entry.labels)
        record = read_labels(tmp_path / "out" / f"{entry.name}.json")
        assert len(record["labels"]) == truth.num_vertices and record["jaw"] == truth.jaw
        mesh = read_mesh(tmp_path / "out" / f"{entry.name}.ply")
        np.testing.assert_array_equal(mesh.vertex_labels, record["labels"])
        assert (tmp_path / "out" / f"{entry.name}.png").stat().st_size > 1000
    again = predict_files(segmenter, files, tmp_path / "out")
    assert len(again.skipped) == 2 and not again.written  # resumable: done scans are skipped
    evaluation = evaluate_folders(tmp_path / "out", trained / "new", tmp_path / "eval")
    assert evaluation.summary["n_evaluated"] == 2
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["n_scans"] == 2


def test_ground_truth_as_prediction_scores_one(trained, tmp_path):
    evaluation = evaluate_folders(trained / "new", trained / "new")
    assert evaluation.summary["overall"]["miou"] == pytest.approx(1.0)


def test_bad_scan_does_not_stop_the_batch(trained, tmp_path):
    segmenter = Segmenter.load(trained / "run")
    bad = tmp_path / "in" / "BAD_lower.obj"
    bad.parent.mkdir()
    bad.write_text("".join(f"v {i} {i % 7} {i % 3}\n" for i in range(30)) + "v nan 0 0\n")
    files = find_scans(trained / "new") + find_scans(bad)
    report = predict_files(segmenter, files, tmp_path / "out", formats=("json",))
    assert len(report.written) == 2
    assert len(report.failed) == 1 and "BAD_lower.obj" in report.failed[0][1] and "NaN" in report.failed[0][1]


def test_outputs_never_replace_inputs(trained, tmp_path):
    segmenter = Segmenter.load(trained / "run")
    entry = find_scans(trained / "new")[0]
    before = entry.labels.read_bytes()
    report = predict_files(segmenter, [entry], entry.mesh.parent, formats=("json",))
    assert report.failed and "overwrite the input" in report.failed[0][1]
    assert entry.labels.read_bytes() == before


def test_export_bundle_round_trip(trained, tmp_path):
    bundle = export_bundle(trained / "run", tmp_path / "bundle")
    names = sorted(p.name for p in bundle.iterdir())
    assert names == ["MODEL_CARD.md", "checksums.sha256", "model.json", "model.safetensors"]
    scan = read_scan(find_scans(trained / "new")[0].mesh, labels=False)
    a = Segmenter.load(trained / "run").predict(scan)
    b = Segmenter.load(bundle).predict(scan)
    np.testing.assert_array_equal(a.fdi, b.fdi)
    again = export_bundle(trained / "run", tmp_path / "bundle2")
    assert (again / "model.safetensors").read_bytes() == (bundle / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError):
        export_bundle(trained / "run", tmp_path / "bundle")
    data = bytearray((bundle / "model.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (bundle / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        Segmenter.load(bundle)


def test_damaged_checkpoints_are_refused(trained, tmp_path):
    from geot.engine.checkpoint import load_checkpoint

    good = (trained / "run" / "checkpoints" / "best.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_checkpoint(tmp_path / "cut.pt")
    (tmp_path / "noise.pt").write_bytes(b"\x00" * 1000)
    with pytest.raises(CheckpointError):
        Segmenter.load(tmp_path / "noise.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_parallel_workers_match_serial(trained, tmp_path):
    files = find_scans(trained / "new")
    serial = predict_files(Segmenter.load(trained / "run"), files, tmp_path / "serial", formats=("json",))
    parallel = predict_files(trained / "run", files, tmp_path / "parallel", formats=("json",), workers=2)
    assert len(serial.written) == len(parallel.written) == 2
    for entry in files:
        a = read_labels(tmp_path / "serial" / f"{entry.name}.json")["labels"]
        b = read_labels(tmp_path / "parallel" / f"{entry.name}.json")["labels"]
        np.testing.assert_array_equal(a, b)
    again = predict_files(trained / "run", files, tmp_path / "parallel", formats=("json",), workers=2)
    assert len(again.skipped) == 2


def test_output_paths_stay_in_the_output_folder(trained, tmp_path):
    report = predict_files(Segmenter.load(trained / "run"), find_scans(trained / "new"), tmp_path / "o",
                           formats=("json", "ply"))
    written = [p.resolve() for p in (tmp_path / "o").rglob("*") if p.is_file()]
    assert written and all((tmp_path / "o").resolve() in p.parents for p in written)
    assert len(report.written) == 2


def test_rule_explain_and_select(trained, tmp_path):
    from typer.testing import CliRunner

    from geot.cli import app

    files = find_scans(trained / "new")
    loki = predict_files(Segmenter.load(trained / "run", rule="loki"), files, tmp_path / "o",
                         formats=("json", "explain"))
    assert len(loki.written) == 2
    maps = np.load(tmp_path / "o" / f"{files[0].name}.explain.npz")
    n = read_scan(files[0].mesh, labels=False).num_vertices
    assert set(maps.files) == {"fdi", "entropy", "margin", "saliency"}
    assert all(maps[k].shape == (n,) for k in maps.files)
    assert ((maps["entropy"] >= 0) & (maps["entropy"] <= 1 + 1e-5)).all()
    result = CliRunner().invoke(app, ["select", str(trained / "run"), str(trained / "new"), "--budget", "1",
                                      "--out", str(tmp_path / "sel.json")])
    assert result.exit_code == 0, result.output
    chosen = json.loads((tmp_path / "sel.json").read_text())
    assert len(chosen["selected"]) == 1 and set(chosen["scores"]) == {f.name for f in files}


def test_load_teacher_of_semi_supervised_run(trained, tmp_path):
    from geot.engine.checkpoint import load_checkpoint
    from geot.engine.train import train

    cfg = load_config(overrides={**TINY, "semi.method": "mean_teacher", "optim.epochs": 2})
    train(cfg, gather_data(cfg, trained / "train", cache_dir=trained / "cache"), tmp_path / "run", progress=False)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    teacher = Segmenter.load(last, device="cpu", teacher=True).model.state_dict()
    student = Segmenter.load(last, device="cpu").model.state_dict()
    assert all(torch.equal(v, state["teacher"]["module." + k]) for k, v in teacher.items())
    assert any(not torch.equal(v, student[k]) for k, v in teacher.items())  # EMA lags the student
    with pytest.raises(CheckpointError, match="no teacher"):  # a supervised run has none
        Segmenter.load(trained / "run", teacher=True)


def shuffled(scan: Scan, seed: int) -> tuple[Scan, np.ndarray]:
    """The same mesh with its vertices and faces listed in another order (as another exporter would)."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(scan.num_vertices)
    rank = np.argsort(perm)
    faces = np.roll(rank[scan.faces], 1, axis=1)[rng.permutation(len(scan.faces))]  # same winding
    return Scan(scan.vertices[perm], faces, scan.jaw, name=scan.name, patient=scan.patient), perm


@pytest.mark.parametrize("decode", ["none", "full"])
def test_the_same_geometry_in_any_vertex_order_gives_the_same_labels(trained, decode):
    segmenter = Segmenter.load(trained / "run", decode=decode)
    scan = read_scan(find_scans(trained / "new")[0].mesh, labels=False)
    a = segmenter.predict(scan)
    for seed in (0, 1):
        other, perm = shuffled(scan, seed)
        b = segmenter.predict(other)
        np.testing.assert_array_equal(b.fdi, a.fdi[perm])
        np.testing.assert_array_equal(b.instances, a.instances[perm])


def test_instances_and_the_teeth_table_agree_with_the_labels(trained, tmp_path):
    files = find_scans(trained / "new")
    report = predict_files(Segmenter.load(trained / "run"), files, tmp_path / "o", formats=("json", "teeth"))
    assert len(report.written) == 2
    for entry in files:
        record = json.loads((tmp_path / "o" / f"{entry.name}.json").read_text())
        labels, instances = np.array(record["labels"]), np.array(record["instances"])
        assert ((labels == 0) == (instances == 0)).all()
        codes = {k: set(labels[instances == k]) for k in set(instances.tolist()) - {0}}
        assert all(len(c) == 1 for c in codes.values())                          # one code per instance
        assert len({c.pop() for c in codes.values()}) == len(codes)              # and no code twice
        block = record["geot"]
        assert block["decoder"] == "full" and len(block["confidence"]) == len(labels)
        assert sorted(t["instance"] for t in block["teeth"]) == sorted(codes)
        for tooth in block["teeth"]:
            assert tooth["vertices"] == int((instances == tooth["instance"]).sum())
            assert (tmp_path / "o" / f"{entry.name}_teeth" / f"{tooth['fdi']}.ply").is_file()
            assert (tmp_path / "o" / f"{entry.name}_teeth" / f"{tooth['fdi']}.stl").is_file()
        rows = (tmp_path / "o" / f"{entry.name}_teeth" / "teeth.csv").read_text().splitlines()
        assert len(rows) == 1 + len(block["teeth"])


def test_scans_of_the_same_stem_get_distinct_outputs(trained, tmp_path):
    import trimesh

    from geot.engine.predict import output_names

    entry = find_scans(trained / "new")[0]
    scan = read_scan(entry.mesh, labels=False)
    folder = tmp_path / "in"
    folder.mkdir()
    mesh = trimesh.Trimesh(scan.vertices, scan.faces, process=False)
    for suffix in ("obj", "stl"):
        mesh.export(folder / f"scan_lower.{suffix}")
    (folder / "sub").mkdir()
    mesh.export(folder / "sub" / "scan_lower.obj")
    files = find_scans(folder)
    names = output_names(files)
    assert len(set(names)) == 3 and all("scan_lower" in n for n in names)
    report = predict_files(Segmenter.load(trained / "run"), files, tmp_path / "o", formats=("json",))
    assert len(report.written) == 3 and not report.skipped
    assert len(list((tmp_path / "o").glob("*.json"))) == 3


def test_a_model_without_offset_head_decodes_without_instances_and_says_so(trained, tmp_path):
    from geot.engine.train import train

    cfg = load_config(overrides={**TINY, "semi.method": "supervised", "optim.epochs": 1})
    train(cfg, gather_data(cfg, trained / "train", cache_dir=trained / "cache"), tmp_path / "run", progress=False)
    scan = read_scan(find_scans(trained / "new")[0].mesh, labels=False)
    result = Segmenter.load(tmp_path / "run").predict(scan)
    assert result.decoded == "graphcut" and any("offset head" in w for w in result.warnings)


def test_unreadable_priors_are_a_warning_not_a_crash(trained, tmp_path):
    from geot.engine.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(trained / "run" / "checkpoints" / "best.pt")
    assert set(state["priors"]) <= {"lower", "upper"} and state["priors"]  # the labelled scans' priors travel
    state["priors"] = {"lower": {"written_by": "another version"}}
    save_checkpoint(tmp_path / "odd.pt", state)
    segmenter = Segmenter.load(tmp_path / "odd.pt")
    scan = read_scan(next(f.mesh for f in find_scans(trained / "new") if f.jaw == "lower"), labels=False)
    result = segmenter.predict(scan)
    assert any("arch priors are unreadable" in w for w in result.warnings) and result.decoded == "full"
