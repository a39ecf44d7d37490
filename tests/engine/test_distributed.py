"""Two CPU processes (gloo) train exactly like one process: same data, synchronised gradients."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from geot.engine.checkpoint import load_checkpoint


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    from geot.data.synth import write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "jaws", n=8, seed=0, resolution=0.25)
    common = ["--set", "data.num_points=256", "--set", "data.labelled_fraction=0.5",
              "--set", "model.args.channels=[16,32]",
              "--set", "model.args.k=8", "--set", "optim.steps_per_epoch=3", "--set", "optim.epochs=3",
              "--set", "semi.warmup_epochs=1", "--set", "semi.rampup_epochs=1", "--set", "geot.plgr_k=4",
              "--set", "val_every=3", "--set", "device=cpu", "--method", "geot", "--no-progress",
              # all 4 patients train: with 2 labelled and 2 unlabelled scans in each step's batch the two runs
              # agree to 1e-4; a test patient less leaves one scan per process and rounding grows to 1.4e-4
              "--set", "data.test_fraction=0"]
    env = {**os.environ, "GEOT_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    for name, extra in (("one", []), ("two", ["--nproc", "2"])):
        cmd = [sys.executable, "-m", "geot", "train", str(tmp_path / "jaws"), "--out", str(tmp_path / name),
               *common, *extra]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    one = load_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")
    two = load_checkpoint(tmp_path / "two" / "checkpoints" / "last.pt")
    for part in ("model", "teacher", "method"):
        for key, value in one[part].items():
            if value.is_floating_point():
                torch.testing.assert_close(two[part][key], value, atol=1e-4, rtol=1e-3, msg=f"{part}.{key}")


def test_more_processes_than_gpus_is_a_clear_error(monkeypatch):
    from geot import distributed
    from geot.errors import GeotError

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert distributed.local_device(torch.device("cuda")) == torch.device("cuda", 0)
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(GeotError, match="2 processes on a machine with 1 GPU"):
        distributed.local_device(torch.device("cuda"))
    assert distributed.local_device(torch.device("cpu")) == torch.device("cpu")
