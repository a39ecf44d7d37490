"""What predicting imports: neither PyG nor torch's compiler stack, which took seconds of every ``geot predict``,
nor trimesh or matplotlib (a third and half a second) for the default outputs of a plain OBJ.

``geot predict`` also sets OpenMP's idle threads to sleep (``OMP_WAIT_POLICY=PASSIVE``) before torch loads.

Each check runs in a fresh interpreter, since this test session has long imported both. Timings belong to
``tools/benchmark.py startup``, not here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import geot

HEAVY = ("torch_geometric", "torch._dynamo",  # PyG imports torch._dynamo; nothing geot predicts with needs it
         "trimesh", "matplotlib")  # general mesh reading and pictures: only for the files and outputs that need them
REPORT_HEAVY = f"import sys\nheavy = [m for m in {HEAVY!r} if m in sys.modules]\nassert not heavy, heavy\n"
ENV = {**{k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"},
       "PYTHONPATH": str(Path(geot.__file__).parents[1]), "OMP_NUM_THREADS": "1"}  # this checkout's geot


def run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-c", code, *args], env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_importing_the_predictor_loads_no_pyg():
    run_python("import geot.engine.predict\n" + REPORT_HEAVY)


def test_geot_predict_loads_no_pyg(tmp_path):
    """The whole command on one scan with its default outputs (config, checkpoint, model, features, forward,
    decoder, JSON and PLY out); it also lets OpenMP's idle threads sleep."""
    from geot.config import config_dict, load_config
    from geot.data.synth import write_synthetic_dataset
    from geot.engine.checkpoint import save_checkpoint
    from geot.models import build_model

    cfg = load_config(overrides={"data.num_points": 256, "model.args": {"channels": [16, 32], "k": 8}})
    save_checkpoint(tmp_path / "model.pt", {"model": build_model(cfg).state_dict(), "config": config_dict(cfg)})
    (mesh,) = [p for p in write_synthetic_dataset(tmp_path / "scans", n=1, resolution=0.25) if p.suffix == ".obj"]
    code = ("import sys\n"
            "from geot.cli import main\n"
            "assert 'torch' not in sys.modules  # it loads in the command, after OMP_WAIT_POLICY is set\n"
            "sys.argv = ['geot', 'predict', *sys.argv[1:]]\n"
            "try:\n"
            "    main()\n"
            "finally:\n" + "".join(f"    {line}\n" for line in REPORT_HEAVY.splitlines()) +
            "    import os\n"
            "    assert os.environ.get('OMP_WAIT_POLICY') == 'PASSIVE', os.environ.get('OMP_WAIT_POLICY')\n")
    run_python(code, str(tmp_path / "model.pt"), str(mesh), "--out", str(tmp_path / "out"), "--device", "cpu")
    labels = json.loads((tmp_path / "out" / f"{mesh.stem}.json").read_text())["labels"]
    assert len(labels) == sum(line.startswith("v ") for line in mesh.read_text().splitlines())
    assert (tmp_path / "out" / f"{mesh.stem}.ply").stat().st_size > 0
