"""The benchmark report: tables and plot are computed from the result rows, never typed in."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
# rows without an epochs override train for the config's own epochs
EPOCHS = int(yaml.safe_load((ROOT / "configs" / "cpu-small.yaml").read_text())["optim"]["epochs"])


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmark", ROOT / "tools" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def row(method, fraction, seed, miou, epochs=None):
    return {"method": method, "fraction": fraction, "seed": seed, "config": "cpu-small.yaml", "labelled": 18,
            "overrides": {} if epochs is None else {"optim.epochs": epochs}, "miou": miou, "dice": miou,
            "accuracy": miou, "tsa": miou, "exp_neg_tla": miou, "tir": miou, "minutes": 30.0}


def test_accuracy_table_groups_seeds_and_reads_epochs(bench):
    rows = [row("supervised", 0.2, 0, 0.5), row("supervised", 0.2, 1, 0.7),
            row("supervised+long", 0.2, 0, 0.8, epochs=180), row("geot", 0.2, 0, 0.6)]
    lines = bench.accuracy_table(rows)
    sup = next(line for line in lines if line.startswith("| supervised |"))
    cells = [c.strip() for c in sup.split("|")[1:-1]]
    assert cells[3] == str(EPOCHS) and cells[4] == "2"          # the config's epochs; two seeds grouped
    assert cells[5] == "0.600 ± 0.141"                   # mean ± sample standard deviation of 0.5 and 0.7
    long = next(line for line in lines if line.startswith("| supervised+long |"))
    assert "| 180 | 1 | 0.800 |" in long
    assert lines.index(sup) < next(i for i, line in enumerate(lines) if line.startswith("| geot |"))


def test_plot_writes_png(bench, tmp_path):
    rows = [row("supervised", 0.2, 0, 0.6), row("supervised", 1.0, 0, 0.62), row("geot", 0.2, 0, 0.61),
            row("supervised+long", 1.0, 0, 0.7, epochs=180)]
    bench.plot_accuracy(rows, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_series_split_by_training_length_and_share_the_supervised_100_point(bench):
    module_row = row("geot+pskd", 0.2, 0, 0.9)
    module_row["overrides"] = {"modules": [{"name": "pskd"}]}
    rows = [row("supervised", 0.2, 0, 0.6), row("supervised", 1.0, 0, 0.62), row("geot", 0.2, 0, 0.61),
            row("geot", 0.2, 1, 0.63), row("geot-no-plgr", 0.2, 0, 0.5), module_row,
            row("geot+long", 0.2, 0, 0.75, epochs=180), row("supervised+long", 1.0, 0, 0.72, epochs=180),
            row("supervised+longer", 1.0, 0, 0.79, epochs=360)]
    series = bench.accuracy_series(rows)
    assert set(series) == {("supervised", EPOCHS), ("geot", EPOCHS), ("geot", 180), ("supervised", 180),
                           ("supervised", 360)}
    assert series[("geot", EPOCHS)] == {0.2: [0.61, 0.63], 1.0: [0.62]}  # seeds grouped; 100% is supervised
    assert series[("geot", 180)] == {0.2: [0.75], 1.0: [0.72]}         # ... and 180 ep for the 180-ep line
    assert bench.target_reference(rows) == (360, pytest.approx(0.79))  # the longest-trained reference
    assert bench.target_reference(rows[:1]) is None


def test_gpu_rows_stay_out_of_the_cpu_small_plot_and_say_their_hardware(bench):
    gpu = row("geot", 0.2, 0, 0.9) | {"config": "gpu-full.yaml", "hardware": "NVIDIA H200 GPU, 16-core CPU, torch 2"}
    rows = [row("supervised", 0.2, 0, 0.6), gpu]
    assert bench.accuracy_series(rows) == {("supervised", EPOCHS): {0.2: [0.6]}}
    line = next(line for line in bench.accuracy_table(rows) if "gpu-full.yaml" in line)
    assert line.rstrip().endswith("| 30, H200 GPU |")
    assert bench.short_hardware("2-core x86_64 CPU, torch 2.13.0+cpu, 2 threads") == "2-core CPU"


def test_training_table_keeps_the_latest_record_per_machine(bench):
    def record(hardware, step, gpu_mb=None):
        share = dict.fromkeys(("data", "neighbour search", "sampling", "forward (layers)", "backward + step"), 0.2)
        rows = [{"config": "gpu-full", "points": 16000, "parameters": 3.3e6, "variant": variant,
                 "median_step_s": step * factor, "scans_per_s": 2 / (step * factor), "peak_rss_mb": 900,
                 "peak_gpu_mb": gpu_mb, "share": share} for variant, factor in (("torch", 1), ("baseline", 2))]
        return {"hardware": hardware, "rows": rows}

    runs = [record("2-core x86_64 CPU", 9.0), record("NVIDIA H200 GPU, 16-core CPU", 0.5, 2048.0),
            record("2-core x86_64 CPU", 3.0)]
    lines = bench.training_table(runs)[2:]
    assert len(lines) == 4                                        # the older CPU record is replaced
    cpu = next(line for line in lines if line.startswith("| 2-core CPU |") and "| torch |" in line)
    assert "| 3.000 (2.00x) |" in cpu and "| - |" in cpu          # baseline ratio; no GPU memory on a CPU
    assert any(line.startswith("| H200 GPU |") and "| 2048 |" in line for line in lines)


def test_put_row_replaces_a_rerun_and_keeps_the_rest(bench, tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "RESULTS", tmp_path)
    bench.put_row("accuracy", {"name": "a", "miou": 0.1}, key="name")
    bench.put_row("accuracy", {"name": "b", "miou": 0.2}, key="name")
    bench.put_row("accuracy", {"name": "a", "miou": 0.3}, key="name")
    assert bench.load_rows("accuracy") == [{"name": "b", "miou": 0.2}, {"name": "a", "miou": 0.3}]


def test_inference_table_keeps_the_latest_run_per_machine_and_device(bench):
    def run(hardware, median, device=None):
        rows = [{"set": "real (8.2k vertices)", "scans": 10, "vertices": 8217, "median_s": median, "min_s": median,
                 "peak_mb": 500.0, "model_load_s": 3.0}]
        return {"hardware": hardware, "rows": rows} | ({"device": device} if device else {})

    gpu = "NVIDIA H200 GPU, 16-core CPU, torch 2"
    lines = bench.inference_table([run("2-core x86_64 CPU", 0.5), run("2-core x86_64 CPU", 0.14),
                                   run(gpu, 0.3, "cpu"), run(gpu, 0.05, "cuda")])[2:]
    assert lines == ["| 2-core CPU | real (8.2k vertices) (10) | 8,217 | 0.14 | 0.14 | 500 | 3.0 |",
                     "| H200 GPU | real (8.2k vertices) (10) | 8,217 | 0.30 | 0.30 | 500 | 3.0 |",
                     "| H200 GPU (model on the GPU) | real (8.2k vertices) (10) | 8,217 | 0.05 | 0.05 | 500 | 3.0 |"]


def test_new_protocol_tables_render_their_rows(bench):
    lever = {"name": "dice", "run": "x", "method": "supervised", "fraction": 1.0, "steps": 2400,
             "overrides": {"semi.method": "supervised", "loss.dice_weight": 1.0, "optim.epochs": 120},
             "curve": {"10": {"val_miou": 0.4, "cpu_minutes": 5, "wall_minutes": 9},
                       "120": {"val_miou": 0.7, "cpu_minutes": 50, "wall_minutes": 80}},
             "final_val_miou": 0.7, "best_val_miou": 0.72}
    line = bench.levers_table([lever])[2]
    assert "`loss.dice_weight=1.0`" in line and "| 0.700 | 0.720 | 50 | 80 |" in line and "optim.epochs" not in line
    stage = {"run": "runs/bench/r", "stage": "full", "miou": 0.8, "dice": 0.85, "tsa": 0.95, "exp_neg_tla": 0.9,
             "tir": 0.97, "jaws_with_duplicated_code": 1, "jaws_with_missing_tooth": 2, "test_scans": 20,
             "instances": {"split": 3, "merged": 4, "true_teeth": 270}, "median_s_per_scan": 0.5,
             "s_large_mesh": {"100003": 2.5}}
    rows = bench.decoding_table([stage, stage | {"stage": "none", "miou": 0.6}])[2:]
    assert rows[0].startswith("| r | argmax of one sample") and "| 0.600 |" in rows[0]
    assert "+ instances and numbering | 0.800" in rows[1] and "| 1 of 20 | 2 | 3 / 4 of 270 |" in rows[1]
    assert "2.50 (100k)" in rows[1]
    curve = {"run": "r", "decode": "full", "method": "supervised", "fraction": 1.0, "seed": 0,
             "points": [{"epoch": 10, "wall_minutes": 12.4, "miou": 0.5, "dice": 0.6, "tsa": 0.9,
                         "exp_neg_tla": 0.8, "tir": 0.9}]}
    assert bench.curves_table([curve])[2] == "| r | full | 10 | 12 | 0.500 | 0.600 | 0.900 | 0.800 | 0.900 |"


def test_startup_table_shows_the_last_sitting_per_environment(bench):
    def sitting(env, after_wall):
        rows = [{"tree": "before", "heavy_imports": ["torch_geometric", "torch._dynamo"], "predict_wall_s": 6.0,
                 "predict_cpu_s": 5.5, "import_wall_s": 4.7, "import_cpu_s": 4.6,
                 "samples": {"predict_wall_s": [6.0, 5.4, 7.0]}},
                {"tree": "after", "heavy_imports": [], "predict_wall_s": after_wall, "predict_cpu_s": 3.4,
                 "import_wall_s": 2.7, "import_cpu_s": 2.5, "samples": {"predict_wall_s": [after_wall, 3.5]}},
                {"tree": "import torch (floor)", "heavy_imports": None, "import_wall_s": 1.8, "import_cpu_s": 1.6,
                 "samples": {}}]
        return {"hardware": "2-core x86_64 CPU, torch 2.13.0+cpu, 2 threads", "env": env, "rows": rows,
                "load_average": [4.2, 4.4], "model": "runs/x", "model_kind": "run folder",
                "heavy_checked": ["torch_geometric", "torch._dynamo", "trimesh", "matplotlib"]}

    old = sitting({"OMP_WAIT_POLICY": "PASSIVE"}, 4.0)
    del old["model_kind"], old["heavy_checked"]  # written before these were recorded
    bundle = sitting({}, 3.1) | {"model": "runs/x-export", "model_kind": "bundle"}
    lines = bench.startup_table([sitting({}, 9.0), sitting({"OMP_NUM_THREADS": "1"}, 3.9), sitting({}, 3.7), bundle,
                                 old])
    assert len(lines) == 2 + 12  # three environments and two models, the later default sitting replacing the first
    before, after, floor = lines[2:5]
    assert ("| defaults | run folder | before | 6.00 | 5.40 | 5.50 | 4.70 | 4.60 | torch_geometric, torch._dynamo "
            "| 4.2-4.4") in before
    assert "| after | 3.70 | 3.50 | 3.40 | 2.70 | 2.50 | none |" in after
    assert "| import torch (floor) | - | - | - | 1.80 | 1.60 | - |" in floor
    assert "| OMP_NUM_THREADS=1 | run folder | after | 3.90 |" in lines[6]
    assert "| defaults | bundle | after | 3.10 |" in lines[9]
    assert "| none (PyG, dynamo checked) |" in lines[12]  # an old sitting did not look for trimesh


def test_curve_summary_pools_seeds_of_one_recipe_only(bench):
    def curve(run, seed, points, fraction=0.2):
        return {"run": run, "decode": "full", "seed": seed, "fraction": fraction,
                "points": [{"epoch": 10 * i, "wall_minutes": m, "miou": v} for i, (m, v) in enumerate(points, 1)]}

    records = [curve("geot+60min-f0.2-s0-cpu-small", 0, [(4, 0.80), (19, 0.85), (58, 0.90)]),
               curve("geot+60min-f0.2-s1-cpu-small", 1, [(6, 0.70), (21, 0.86), (61, 0.92)]),
               curve("geot-posterior+60min-f0.2-s0-cpu-small", 0, [(4, 0.5), (25, 0.6)]),
               curve("supervised+60min-f1-s0-cpu-small", 0, [(3, 0.82)], fraction=1.0)]
    assert bench.seeds_pooled("geot+60min-f0.2-s12-cpu-small") == "geot+60min-f0.2-cpu-small"
    lines = bench.curves_summary(records)
    assert [line.split("|")[1].strip() for line in lines[2:]] == [
        "supervised+60min-f1-cpu-small", "geot+60min-f0.2-cpu-small", "geot-posterior+60min-f0.2-cpu-small"]
    geot = [c.strip() for c in lines[3].split("|")[1:-1]]
    assert geot[2] == "0, 1"
    assert geot[3] == "-"                      # 5 min: seed 1 had no snapshot yet
    assert geot[5] == "0.775 ± 0.106"          # 20 min: 0.85 (at 19) and 0.70 (at 6; its 21-minute one is later)
    assert geot[8] == "0.880 ± 0.028"          # 60 min: 0.90 (at 58) and 0.86 (at 21)
    posterior = [c.strip() for c in lines[4].split("|")[1:-1]]
    assert posterior[2] == "0" and posterior[6] == "0.600"
    assert posterior[7] == posterior[8] == "-"  # it ended at 25 minutes: not read at 45 or 60


def test_time_budget_rows_show_the_epochs_they_settled_and_their_threads(bench):
    budget = row("supervised+60min", 1.0, 0, 0.8) | {"epochs": 412, "threads": 1}
    budget["overrides"] = {"optim.minutes": 60}
    line = next(line for line in bench.accuracy_table([budget]) if line.startswith("| supervised+60min |"))
    cells = [c.strip() for c in line.split("|")[1:-1]]
    assert cells[3] == "412 (60 min budget)" and cells[-1] == "30, 1 thread"
    assert bench.row_epochs(row("supervised", 1.0, 0, 0.8, epochs=180)) == 180


def test_result_rows_name_runs_relative_to_the_checkout_however_they_were_given(bench, monkeypatch):
    monkeypatch.chdir(ROOT)
    run = Path("runs") / "bench" / "some-run"
    assert bench.repo_path(run) == bench.repo_path(ROOT / run) == str(run)
    assert bench.repo_path(Path("/elsewhere/run")) == "/elsewhere/run"


def test_geot_settings_table_compares_with_default_and_supervised_and_joins_diagnoses(bench):
    def named(method, seed, miou):
        return row(method, 0.2, seed, miou) | {"name": f"{method}-f0.2-s{seed}-cpu-small"}

    rows = [named("geot+60min", 0, 0.89), named("geot+60min", 1, 0.91),
            named("supervised+60min", 0, 0.86), named("supervised+60min", 1, 0.88),
            named("geot-posterior+60min", 0, 0.92), named("supervised+60min", 2, 0.87) | {"fraction": 1.0}]
    diagnoses = [{"run": "runs/bench/geot+60min-f0.2-s0-cpu-small", "pseudo_label_accuracy": 0.8,
                  "pseudo_label_accuracy_decoded": 0.7, "class_level_diagonal": {
                      "measured": 0.7, "anchor estimate": 0.9, "posterior estimate": 0.75},
                  "idtm_diagonal_mass_first_semi_epoch": 0.98, "idtm_diagonal_mass_last_epoch": 0.99},
                 {"run": "runs/bench/geot+60min-f0.2-s1-cpu-small", "pseudo_label_accuracy": 0.9,
                  "idtm_diagonal_mass_first_semi_epoch": 0.96, "idtm_diagonal_mass_last_epoch": 0.97},
                 {"run": "runs/bench/mean_teacher-f0.2-s0-cpu-small", "pseudo_label_accuracy": 0.1}]
    def curve(run, decode, *points):
        return {"run": f"runs/bench/{run}", "decode": decode,
                "points": [{"epoch": epoch, "miou": miou} for epoch, miou in points]}

    curves = [curve("geot+60min-f0.2-s0-cpu-small", "full", (60, 0.5), (100, 0.88)),
              curve("geot+60min-f0.2-s1-cpu-small", "full", (100, 0.90), (120, 0.1)),
              curve("geot-posterior+60min-f0.2-s0-cpu-small", "full", (100, 0.86)),
              curve("geot-posterior+60min-f0.2-s0-cpu-small", "argmax", (100, 0.1))]
    lines = bench.geot_settings_table(rows, diagnoses, curves)
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["geot+60min", "geot-posterior+60min"]
    geot = [c.strip() for c in lines[2].split("|")[1:-1]]
    # 0.90 - 0.87 = +0.03; both rows' sample sd are 0.0141: +2.1 sd; paired: seed 0 +0.03, seed 1 +0.03
    assert geot[4:11] == ["0.900 ± 0.014", "-", "-", "+0.030 (+2.1 sd)", "+0.030 ± 0.000 (2)",
                          "0.890 ± 0.014 (2)", "2"]
    assert geot[11] == "-"                               # seed 1 has no decoded accuracy: seeds are not mixed
    assert geot[13] == "0.970 -> 0.980"                  # mean of both seeds' diagonals
    posterior = [c.strip() for c in lines[3].split("|")[1:-1]]
    # one seed: no sd; paired with seed 0 only (0.92 - 0.89, 0.92 - 0.86); the snapshot of the whole pipeline
    # at epoch 100 only; not diagnosed
    assert posterior[5:11] == ["+0.020", "+0.030 (1)", "+0.050", "+0.060 (1)", "0.860 (1), -0.030", "0"]
    assert posterior[11] == posterior[12] == posterior[13] == "-"
    assert bench.geot_settings_table(rows, diagnoses)[3].split("|")[10].strip() == "-"  # no curves: no snapshot


def test_paired_differences_match_seeds_and_leave_out_the_spread_they_share(bench):
    def seeded(seed, miou):
        return {"seed": seed, "miou": miou}

    base = [seeded(0, 0.80), seeded(1, 0.90), seeded(2, 0.85)]
    shifted = [seeded(2, 0.86), seeded(0, 0.81), seeded(1, 0.91)]  # each seed +0.01, listed in another order
    assert bench.paired(shifted, base) == "+0.010 ± 0.000 (3)"
    assert bench.versus(shifted, base).startswith("+0.010 (+0.2 sd)")  # unpaired: the seed spread hides it
    assert bench.paired([seeded(5, 0.9)], base) == "-"                 # no seed in common
    assert bench.paired(base, base) == "-"


def test_method_step_table_shows_each_variants_cost_against_its_supervised_step(bench):
    record = {"hardware": "2-core x86_64 CPU, torch 2.13.0+cpu, 1 threads", "threads": 1, "config": "cpu-small.yaml",
              "date": "2026-12-03", "rows": [{"variant": "geot", "supervised_cpu_s": 0.5, "semi_cpu_s": 1.6},
                                              {"variant": "geot-plgr1024", "supervised_cpu_s": 0.5, "semi_cpu_s": 1.2}]}
    later = record | {"rows": [{"variant": "geot-soft", "supervised_cpu_s": 0.4, "semi_cpu_s": 2.0}]}
    lines = bench.method_step_table([record, later])
    assert len(lines) == 5
    assert lines[2].endswith("| geot | 0.50 | 1.60 | 3.2x |") and lines[3].endswith("| 1.20 | 2.4x |")
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["1 (2026-12-03)"] * 2 + ["2 (2026-12-03)"]


def test_the_time_to_accuracy_plot_keeps_the_plain_recipes_and_leaves_variants_to_the_settings_table(bench):
    runs = ["supervised+60min-f1-s0-cpu-small", "geot+60min-f0.2-s1-cpu-small", "geot-no-plgr+60min-f0.2-s0-cpu-small",
            "geot-reference+60min-f0.2-s0-cpu-small", "geot-f0.2-s0-cpu-small", "mean_teacher-f0.2-s0-cpu-small",
            "geot-focal-f0.2-s0-cpu-small"]
    kept = bench.headline_curves([{"run": f"runs/bench/{run}"} for run in runs])
    assert [Path(r["run"]).name for r in kept] == [runs[0], runs[1], runs[4]]


def test_curve_scores_the_equal_epoch_snapshot_whatever_the_stride(bench):
    snapshots = [Path(f"epoch{e:04d}.pt") for e in range(20, 161, 20)]  # 20 ... 160

    def epochs(chosen):
        return [bench.snapshot_epoch(s) for s in chosen]

    assert epochs(bench.chosen_snapshots(snapshots, 2)) == [40, 80, 120, 160]          # counted from the last
    assert epochs(bench.chosen_snapshots(snapshots, 2, [100])) == [40, 80, 100, 120, 160]
    assert epochs(bench.chosen_snapshots(snapshots, 1, [100])) == list(range(20, 161, 20))
    assert epochs(bench.chosen_snapshots(snapshots[:4], 3, [100])) == [20, 80]        # no epoch-100 snapshot yet
