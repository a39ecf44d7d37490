"""Pseudo-label diagnosis: the class-level diagonals, multi-view teacher accuracy, log columns."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from geot.analysis.diagnosis import class_level_diagonals, gradient_norm_medians, logged_column, multi_view_accuracy


def test_resumed_run_time_sums_every_logged_epoch(tmp_path):
    # A run interrupted after epoch 2 and resumed logs epochs 3-4 in the same file; its wall time is all four.
    log = tmp_path / "log.csv"
    log.write_text("epoch,loss,seconds,val_miou\n1,2.0,10.5,\n2,1.5,11.0,0.3\n3,1.2,9.5,\n4,1.0,12.0,0.4\n")
    assert sum(logged_column(log, "seconds")) == pytest.approx(43.0)
    assert logged_column(log, "val_miou") == [0.3, 0.4]          # epochs without validation are skipped


def test_gradient_norm_medians_read_only_logged_epochs(tmp_path):
    # log_grad_norms writes grad/<term> on each epoch's first step; supervised warm-up epochs have no pseudo term.
    log = tmp_path / "log.csv"
    log.write_text("epoch,loss,grad/sup,grad/pseudo,grad/plgr\n1,2.0,4.0,,\n2,1.5,3.0,1.0,0.0\n"
                   "3,1.2,2.0,3.0,0.0\n4,1.0,1.0,2.0,0.5\n")
    assert gradient_norm_medians(log) == {"sup": 2.5, "pseudo": 2.0, "plgr": 0.0}
    (tmp_path / "plain.csv").write_text("epoch,loss\n1,2.0\n")
    assert gradient_norm_medians(tmp_path / "plain.csv") == {}


def test_class_level_diagonals_measured_and_estimated():
    import numpy as np

    # Scan 1: two sure points per class, then one torn point truly class 1 that the teacher labels 0.
    probs = np.array([[0.99, 0.01], [0.98, 0.02], [0.01, 0.99], [0.02, 0.98], [0.6, 0.4]])
    truth = np.array([0, 0, 1, 1, 1])
    probs, truth = np.repeat(probs, 10, 0), np.repeat(truth, 10)  # 10x: enough belief mass
    confusion = np.zeros((2, 2), dtype=np.int64)
    np.add.at(confusion, (truth, probs.argmax(1)), 1)
    out = class_level_diagonals([probs], confusion)
    assert out["measured"] == (1.0 + 2 / 3) / 2                   # class 1: 2 of 3 labels right
    assert out["anchor estimate"] == pytest.approx(0.99)         # the sure points: no noise seen
    joint = np.array([[0.99 + 0.98 + 0.6, 0.03], [0.01 + 0.02 + 0.4, 0.99 + 0.98]])
    expected = (joint[0, 0] / joint[0].sum() + joint[1, 1] / joint[1].sum()) / 2
    assert out["posterior estimate"] == pytest.approx(expected)  # below the anchors' diagonal
    assert out["posterior estimate"] < out["anchor estimate"]


def test_multi_view_accuracy_averages_views_of_the_same_points():
    import torch

    from geot.config import load_config
    from geot.data.dataset import ScanDataset, prepare
    from geot.data.synth import synth_jaw

    cfg = load_config(overrides={"data.num_points": 512})
    scans = [prepare(synth_jaw(jaw, 5, resolution=0.25)) for jaw in ("lower", "upper")]
    truth = ScanDataset(scans, 512, use_curvature=False, seed=cfg.seed)
    calls = []

    def teacher(x, pos, batch):
        """Knows the right labels in sample order (so it needs the same points in every view) plus noise
        that changes with each view's augmentation; the mean of views cancels the noise."""
        scan = len(calls) // 8
        calls.append(pos)
        right = torch.nn.functional.one_hot(truth.sample(scan, (0, scan)).y, 17).float()
        return SimpleNamespace(logits=right + 2.0 * torch.sin(1e4 * pos.sum(1, keepdim=True) + torch.arange(17.0)))

    out = multi_view_accuracy(teacher, scans, cfg, views=8)
    assert list(out) == ["1 view", "2 views", "4 views", "8 views"]
    assert out["1 view"] < out["2 views"] < out["4 views"] < out["8 views"] <= 1.0
    assert not torch.equal(calls[0], calls[1])  # each view is augmented afresh
