"""Training end to end on tiny synthetic jaws: learning happens, resume is exact, outputs round-trip."""

from __future__ import annotations

import csv
import time

import numpy as np
import pytest
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from geot.config import load_config
from geot.data.sources import gather_data
from geot.data.synth import write_synthetic_dataset
from geot.engine.checkpoint import load_checkpoint
from geot.engine.train import draws, epochs_for_budget, rampup, train
from geot.errors import GeotError

TINY = {"data.num_points": 256, "data.labelled_fraction": 0.5, "data.val_fraction": 0.25, "data.test_fraction": 0.0,
        "model.args": {"channels": [16, 32], "k": 8}, "optim.steps_per_epoch": 3, "optim.epochs": 4,
        "optim.lr": 0.01, "semi.warmup_epochs": 1, "semi.rampup_epochs": 1, "geot.plgr_k": 4, "val_every": 2}


@pytest.fixture(scope="module")
def jaws(tmp_path_factory):
    root = tmp_path_factory.mktemp("jaws")
    write_synthetic_dataset(root, n=8, seed=0, resolution=0.25)
    return root


def read_log(run):
    with open(run / "log.csv") as f:
        return list(csv.DictReader(f))


def test_supervised_loss_decreases(jaws, tmp_path):
    cfg = load_config(overrides={**TINY, "semi.method": "supervised", "optim.epochs": 8})
    data = gather_data(cfg, jaws, cache_dir=tmp_path / "cache")
    assert data.labelled and data.val and not set(data.split.labelled) & set(data.split.val)
    result = train(cfg, data, tmp_path / "run", progress=False)
    rows = read_log(tmp_path / "run")
    assert len(rows) == 8
    assert float(rows[-1]["sup"]) < 0.8 * float(rows[0]["sup"])
    assert 0 <= result["best_val_miou"] <= 1
    for name in ("config.yaml", "split.json", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (tmp_path / "run" / name).is_file()
    before = (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(GeotError, match="--resume"):
        train(cfg, data, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes() == before


MODULES = [{"name": "elr", "weight": 1.0}, {"name": "pskd"}, {"name": "dual_view_kl"},
           {"name": "lego_entropy", "weight": 0.5, "schedule": {"start": 2}}]


# frozen anchor (cr_kd, rcal), per-point target weights (lbl2vec), module-owned parameters (loss_predictor)
ANCHORED = [{"name": "elr", "weight": 1.0}, {"name": "cr_kd"}, {"name": "rcal"}, {"name": "lbl2vec"},
            {"name": "loss_predictor"}]


@pytest.mark.parametrize("method, modules", [("geot", []), ("mean_teacher", []), ("fixmatch", []),
                                             ("geot", MODULES), ("fixmatch", ANCHORED)])
def test_resume_equals_uninterrupted(jaws, tmp_path, method, modules):
    # on the CPU: a GPU's atomic adds (index_add_, scatter) sum in varying order, so two GPU runs, resumed
    # or not, agree only to rounding, which training then amplifies
    cfg = load_config(overrides={**TINY, "semi.method": method, "modules": modules, "device": "cpu"})
    data = gather_data(cfg, jaws, cache_dir=tmp_path / "cache")
    assert data.unlabelled and all(s.y is None for s in data.unlabelled)  # unlabelled labels never read
    train(cfg, data, tmp_path / "straight", progress=False)
    train(cfg, data, tmp_path / "split", progress=False, stop_after_epoch=2)
    assert load_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")["epoch"] == 1
    train(cfg, data, tmp_path / "split", progress=False, resume=True)
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")
    for part in ("model", "teacher", "method", "modules", "frozen"):
        if a[part] is None:
            continue
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), (part, key)
    rows_a, rows_b = read_log(tmp_path / "straight"), read_log(tmp_path / "split")
    assert [r["epoch"] for r in rows_b] == [r["epoch"] for r in rows_a]
    assert "unsup_weight" in rows_a[-1]  # the semi-supervised part ran
    if modules:
        assert "elr/agreement" in rows_a[-1] and a["modules"]["all.0.memory.seen"].any()
    assert (a["frozen"] is not None) == any(m["name"] in ("cr_kd", "rcal") for m in modules)


def test_draws_cover_and_repeat():
    a = draws(5, 12, seed=0, epoch=3, stream=0)
    assert len(a) == 12 and sorted(a[:5]) == list(range(5)) and sorted(a[5:10]) == list(range(5))
    assert a == draws(5, 12, seed=0, epoch=3, stream=0)
    assert a != draws(5, 12, seed=0, epoch=4, stream=0)


def test_rampup_shape():
    assert rampup(0, 5) == pytest.approx(np.exp(-5))
    assert rampup(5, 5) == 1.0 and rampup(10, 5) == 1.0
    assert rampup(1, 5) < rampup(2, 5) < rampup(4, 5)


def test_ema_teacher_math():
    student = torch.nn.Linear(3, 2)
    teacher = AveragedModel(student, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    teacher.update_parameters(student)  # first update copies
    before = teacher.module.weight.detach().clone()
    with torch.no_grad():
        student.weight.add_(1.0)
    teacher.update_parameters(student)
    torch.testing.assert_close(teacher.module.weight, 0.9 * before + 0.1 * student.weight)


def test_checkpoint_choice_reads_only_validation_jaws(tmp_path, monkeypatch):
    """Test scans are named in split.json but never read: corrupting them changes nothing, and the
    checkpoint is chosen on exactly the validation scans."""
    import json

    import geot.engine.train as training

    root = tmp_path / "jaws"
    write_synthetic_dataset(root, n=10, seed=1, resolution=0.25)
    cfg = load_config(overrides={**TINY, "semi.method": "supervised", "data.test_fraction": 0.2})
    split = gather_data(cfg, root, cache_dir=tmp_path / "cache").split
    assert split.test and not split.overlap()
    for name in split.test:  # a test scan that training opened would now raise
        for path in root.rglob(f"{name}.*"):
            path.write_bytes(b"\x00 not a scan")
    data = gather_data(cfg, root, cache_dir=tmp_path / "cache2")
    assert data.split == split
    seen: list[list[str]] = []
    real_validate = training.validate
    monkeypatch.setattr(training, "validate", lambda model, scans, *a: seen.append([s.name for s in scans])
                        or real_validate(model, scans, *a))
    train(cfg, data, tmp_path / "run", progress=False)
    assert seen and all(names == split.val for names in seen)
    recorded = json.loads((tmp_path / "run" / "split.json").read_text())
    assert recorded["test"] == split.test and recorded["val"] == split.val


def test_decoded_pseudo_labels_change_what_the_student_learns(jaws, tmp_path):
    """semi.decode_pseudo_labels runs the teacher's posteriors through the dentition decoder: the run trains
    and its pseudo-label loss differs from the same run on raw argmax pseudo labels."""
    base = {**TINY, "semi.method": "geot", "model.offset_head": True, "optim.epochs": 3}
    losses = {}
    for switch in (False, True):
        cfg = load_config(overrides={**base, "semi.decode_pseudo_labels": switch})
        train(cfg, gather_data(cfg, jaws, cache_dir=tmp_path / "cache"), tmp_path / f"run{switch}", progress=False)
        rows = read_log(tmp_path / f"run{switch}")
        losses[switch] = [float(r["pseudo"]) for r in rows if r.get("pseudo")]
    assert losses[True] and all(np.isfinite(losses[True]))
    assert losses[True] != losses[False]


def test_bf16_autocast_trains(jaws, tmp_path):
    cfg = load_config(overrides={**TINY, "semi.method": "geot", "optim.epochs": 6, "optim.autocast": "bf16",
                                 "device": "cpu"})
    train(cfg, gather_data(cfg, jaws, cache_dir=tmp_path / "cache"), tmp_path / "run", progress=False)
    rows = read_log(tmp_path / "run")
    assert float(rows[-1]["sup"]) < 0.85 * float(rows[0]["sup"]) and np.isfinite(float(rows[-1]["pseudo"]))
    weights = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["model"]
    assert all(v.dtype == torch.float32 for v in weights.values() if v.is_floating_point())


def test_a_time_budget_fixes_the_epochs_once_their_cost_is_known(jaws, tmp_path):
    import yaml

    cfg = load_config(overrides={**TINY, "semi.method": "supervised", "optim.epochs": 5, "optim.minutes": 0.15,
                                 "val_every": 1, "device": "cpu"})
    t0 = time.time()
    train(cfg, gather_data(cfg, jaws, cache_dir=tmp_path / "cache"), tmp_path / "run", progress=False)
    rows = read_log(tmp_path / "run")
    settled = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["optim"]["epochs"]
    assert settled == len(rows) >= 4                            # trained as many epochs as it settled on
    assert time.time() - t0 < 0.15 * 60 * 3                     # and stopped near the budget, not at 10**6
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert state["budget_epochs"] == settled and state["config"]["optim"]["epochs"] == settled
    assert float(rows[-1]["lr"]) == pytest.approx(0.0, abs=1e-9)  # the cosine schedule ended with the run


def test_a_budget_follows_the_recent_pace_and_always_ends_on_a_later_epoch():
    steady = [10.0] * 10
    assert epochs_for_budget(9, steady, [], 100, 600, val_every=5) == 60    # 100 s spent, 500 s buy 50 more
    assert epochs_for_budget(9, steady, [], 150, 600, val_every=5) == 55    # saving and logging count as spent
    slowing = [10.0] * 10 + [20.0] * 10                                     # 300 s spent at 20 s an epoch now
    assert epochs_for_budget(19, slowing, [], 300, 600, val_every=5) == 35  # not 50, as the first pace would say
    assert epochs_for_budget(19, slowing, [40.0, 40.0], 380, 600, val_every=5) == 27  # validation at its share
    assert epochs_for_budget(59, steady * 6, [], 600, 300, val_every=5) == 61  # over budget: one more, no less
    assert epochs_for_budget(1, [10.0, 10.0], [], 20, 600, val_every=5) is None  # too few epochs for a pace
    assert epochs_for_budget(12, [5.0] * 10 + [30.0] * 3, [], 140, 900, val_every=5, phase=10) == 38  # after warm-up
