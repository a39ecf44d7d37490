"""Training killed with SIGKILL at random moments and resumed ends with the weights of an uninterrupted run."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from geot.engine.checkpoint import load_checkpoint
from tests.engine.test_train import read_log

ARGS = ["--set", "data.num_points=256", "--set", "data.labelled_fraction=0.5",
        "--set", "model.args.channels=[16,32]",
        "--set", "model.args.k=8", "--set", "optim.steps_per_epoch=4", "--set", "optim.epochs=5",
        "--set", "semi.warmup_epochs=1", "--set", "semi.rampup_epochs=1", "--set", "geot.plgr_k=4",
        "--set", "val_every=2", "--method", "geot", "--no-progress",
        "--set", "device=cpu"]  # bitwise equality is a CPU property: CUDA's atomic adds sum in varying order


def logged_epochs(run) -> int:
    return len(read_log(run)) if (run / "log.csv").is_file() else 0


@pytest.mark.slow
def test_sigkill_then_resume(tmp_path):
    from geot.data.synth import write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "jaws", n=8, seed=0, resolution=0.25)
    env = {**os.environ, "GEOT_CACHE": str(tmp_path / "cache")}

    def command(out, *extra):
        return [sys.executable, "-m", "geot", "train", str(tmp_path / "jaws"), "--out", str(out), *ARGS, *extra]

    subprocess.run(command(tmp_path / "straight"), env=env, check=True, capture_output=True, timeout=600)
    rng = random.Random(0)
    out = tmp_path / "killed"
    kills = 0
    proc = subprocess.Popen(command(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for epoch in (1, 2, 3):  # once this many epochs are logged, kill within 0.4 s; resume; repeat
        # (paced by the run's own progress, not by a clock: a busy machine must not let the run finish first)
        while proc.poll() is None and logged_epochs(out) < epoch:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.4))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
        proc = subprocess.Popen(command(out, "--resume"), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    assert proc.wait(timeout=600) == 0
    assert kills >= 1
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(out / "checkpoints" / "last.pt")
    assert a["epoch"] == b["epoch"] == 4
    for part in ("model", "teacher", "method"):
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), (part, key)
    assert not list((out / "checkpoints").glob("*.tmp"))
