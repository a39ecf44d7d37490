"""The reference mode (configs/variants/geot-reference.yaml): its loss by hand, its pseudo-label schedule, a run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from geot.config import load_config, read_variant
from geot.data.sources import gather_data
from geot.data.synth import write_synthetic_dataset
from geot.engine.checkpoint import load_checkpoint
from geot.engine.train import train
from geot.method import build_method

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = read_variant(ROOT / "configs" / "variants" / "geot-reference.yaml")
ARCH = np.array([0, 8, 7, 6, 5, 4, 3, 2, 1, 9, 10, 11, 12, 13, 14, 15, 16], dtype=float)  # spec 2.2, LABEL_PROJ


def reference_method(base: str = "cpu-small", **overrides):
    return build_method(load_config(ROOT / "configs" / f"{base}.yaml", {**REFERENCE, **overrides}))


# --- the reference's formulas in plain numpy (geot_spec.md 1.6, 5, 6, 7) ---------------------------------------

def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def focal(z, y):
    """Sigmoid Poly-1 focal loss, mean over points and classes: a_t BCE (1 - p_t)^2 + (1 - p_t)^3."""
    onehot = np.eye(z.shape[1])[y] == 1
    s = 1 / (1 + np.exp(-z))
    pt = np.where(onehot, s, 1 - s)
    at = np.where(onehot, 0.25, 0.75)
    return (at * -np.log(pt) * (1 - pt) ** 2 + (1 - pt) ** 3).mean()


def buggy_rownorm(m):
    return m / m.sum(1)[None, :]  # X / X.sum(1): column j divided by row j's sum


def arch_prior(sigma):
    g = np.exp(-((ARCH[None, :] - ARCH[:, None]) ** 2) / (2 * sigma**2)) / (sigma * np.sqrt(2 * np.pi))
    g[0], g[:, 0] = 0, 0
    g[0, 0] = 1
    return buggy_rownorm(g)


def plgr(t, y, pos, k, sigma=1.0):
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    out = []
    for i in range(len(pos)):
        nb = [j for j in np.argsort(d[i]) if j != i][:k]
        w = np.array([(y[i] == y[j]) * np.exp(-d[i, j] ** 2 / (2 * sigma**2)) for j in nb])
        diff = np.array([((t[i] - t[j]) ** 2).sum() for j in nb])
        out.append((w * diff).sum() / (w.sum() + 1e-3))
    return np.mean(out)


def test_reference_loss_equals_the_hand_computed_value():
    method = reference_method(**{"geot.plgr_k": 3})  # the variant's k = 32 needs more than this batch's 8 points
    c, rng = 17, np.random.default_rng(0)
    t0 = softmax(rng.normal(size=(c, c)) + 4 * np.eye(c))  # a class-level matrix the EMA had reached
    method.state.transition.copy_(torch.tensor(t0, dtype=torch.float32))
    as_torch = {"dtype": torch.float32}

    z_lab, y_lab = rng.normal(size=(6, c)) * 2, np.array([0, 2, 5, 2, 1, 0])
    sup = method.labelled_loss(torch.tensor(z_lab, **as_torch), torch.tensor(y_lab))
    np.testing.assert_allclose(sup.item(), focal(z_lab, y_lab), rtol=1e-5)

    labels = np.array([3, 3, 3, 4, 4, 3, 4, 3])  # few classes, so neighbours share pseudo labels (PLGR)
    z, q = rng.normal(size=(8, c)) * 2, softmax(rng.normal(size=(8, c)) + 4 * np.eye(c)[labels])
    pos = rng.uniform(size=(8, 3))
    probs_weak = torch.tensor(q, **as_torch)
    loss, logs = method(torch.tensor(z, **as_torch), probs_weak, method.targets(probs_weak),
                        torch.tensor(pos, **as_torch), torch.zeros(8, dtype=torch.long))

    # class-mean conditioning: the bug's one row (posteriors indexed by label value), EMA 0.999 from the identity
    m = 0.999 * np.eye(c) + 0.001 * softmax(z_lab)[y_lab].mean(0)[None]
    t_class = buggy_rownorm((1 - 1e-6) * t0 + 1e-6 * arch_prior(0.4))
    w_p, w_m = method.head.weight_p.detach().double().numpy(), method.head.weight_m.detach().double().numpy()
    h = np.einsum("pi,koi->pko", softmax(z), w_p) + np.einsum("ki,koi->ko", m, w_m)
    h = np.clip(h, 1e-5, 1 - 1e-5)
    t_ins = h / h.sum(-1, keepdims=True)
    t = 0.9 * t_class + 0.1 * t_ins
    t = t / t.sum(-1, keepdims=True)
    y = q.argmax(1)
    assert (y == labels).all()
    pseudo = focal(np.einsum("pa,pab->pb", z, t), y)
    reg = 0.1 * plgr(t_ins, y, pos, k=3)
    assert reg > 1e-4 * pseudo  # the batch is small enough for PLGR to show
    terms = method.loss_terms()
    np.testing.assert_allclose(terms["pseudo"].item(), pseudo, rtol=1e-5)
    np.testing.assert_allclose(terms["plgr"].item(), reg, rtol=1e-4)
    np.testing.assert_allclose(loss.item(), pseudo + reg, rtol=1e-5)


def test_reference_pseudo_labels_come_from_the_frozen_student_then_the_student():
    small = reference_method("cpu-small", **{"optim.epochs": 60})  # 15 of warm-up: 1/6 of 45 -> 8 frozen epochs
    assert not small.needs_teacher and small.needs_frozen_student
    assert [small.pseudo_label_source(e) for e in range(15, 25)] == ["frozen"] * 8 + ["student"] * 2
    full = reference_method("gpu-full")  # 200 epochs, 40 of warm-up: 27 of 160
    assert full.pseudo_label_source(66) == "frozen" and full.pseudo_label_source(67) == "student"
    default = build_method(load_config(ROOT / "configs" / "cpu-small.yaml"))
    assert default.needs_teacher and not default.needs_frozen_student
    assert {default.pseudo_label_source(e) for e in range(15, 60)} == {"teacher"}


def test_a_time_budget_moves_the_switch_to_student_labels_as_a_resumed_run_places_it():
    method = reference_method("cpu-small")                      # built before the budget: 120 epochs, switch 33
    assert method.student_from_epoch == 15 + round(105 / 6)
    settled = load_config(ROOT / "configs" / "cpu-small.yaml", {**REFERENCE, "optim.epochs": 41})
    method.epochs_changed(settled)                               # the budget settled on 41 epochs
    assert method.student_from_epoch == build_method(settled).student_from_epoch == 15 + round(26 / 6)


def test_reference_mode_trains_with_the_warm_up_student_frozen(tmp_path):
    write_synthetic_dataset(tmp_path / "jaws", n=8, seed=0, resolution=0.25)
    tiny = {"data.num_points": 256, "data.labelled_fraction": 0.5, "data.val_fraction": 0.25,
            "data.test_fraction": 0.0, "model.args": {"channels": [16, 32], "k": 8}, "optim.steps_per_epoch": 2,
            "optim.epochs": 4, "semi.warmup_epochs": 1, "geot.plgr_k": 4, "geot.frozen_share": 0.34,
            "val_every": 4, "device": "cpu"}
    cfg = load_config(None, {**REFERENCE, **tiny})
    data = gather_data(cfg, tmp_path / "jaws", cache_dir=tmp_path / "cache")
    train(cfg, data, tmp_path / "warm-up", progress=False, stop_after_epoch=1)
    train(cfg, data, tmp_path / "run", progress=False)
    warm = load_checkpoint(tmp_path / "warm-up" / "checkpoints" / "last.pt")
    run = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert run["teacher"] is None  # no EMA teacher
    for key, value in warm["model"].items():  # the frozen teacher is the student as warm-up ended
        assert torch.equal(run["frozen"][key], value), key
    assert any(not torch.equal(run["model"][k], v) for k, v in warm["model"].items())  # the student went on
    # its last pseudo labels were the student's own: the diagnosis inspects the student (there is no teacher)
    from geot.analysis.diagnosis import diagnose

    report = diagnose(tmp_path / "run", tmp_path / "jaws", decoded=False)
    assert report["pseudo_labels_by"] == "student" and 0 <= report["pseudo_label_accuracy"] <= 1


def test_the_trainer_tells_the_method_when_a_budget_settles_the_epochs(tmp_path, monkeypatch):
    from geot.engine import train as training

    write_synthetic_dataset(tmp_path / "jaws", n=6, seed=0, resolution=0.25)
    tiny = {"data.num_points": 256, "data.labelled_fraction": 0.5, "data.val_fraction": 0.2,
            "data.test_fraction": 0.0, "model.args": {"channels": [16, 32], "k": 8}, "optim.steps_per_epoch": 1,
            "optim.epochs": 60, "optim.minutes": 5, "semi.warmup_epochs": 1, "geot.plgr_k": 4, "val_every": 1,
            "device": "cpu"}
    monkeypatch.setattr(training, "epochs_for_budget", lambda *args, **kwargs: 7)  # the budget buys 7 epochs
    cfg = load_config(None, {**REFERENCE, **tiny})
    trainer = training.Trainer(cfg, gather_data(cfg, tmp_path / "jaws", cache_dir=tmp_path / "cache"),
                               tmp_path / "run", progress=False)
    assert trainer.state.method.student_from_epoch == 1 + round(59 / 6)   # from the config's 60 epochs
    trainer.fit()
    resumed = build_method(load_config(tmp_path / "run" / "config.yaml"))
    assert resumed.student_from_epoch == trainer.state.method.student_from_epoch == 1 + round(6 / 6)
