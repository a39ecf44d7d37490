"""The ``geot`` command: verbs that follow the pipeline (synth, check, train, predict, evaluate, export)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from geot import __version__
from geot.errors import GeotError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Segment teeth in intra-oral scans; learn from few labelled scans (GeoT).")
console = Console()
err = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        console.print(f"geot {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool | None, typer.Option("--version", callback=_version, is_eager=True,
                                                          help="Print the version and exit.")] = None) -> None:
    pass


@app.command()
def doctor() -> None:
    """Print versions, device and the active neighbour backend."""
    from geot.doctor import environment

    table = Table(show_header=False, box=None)
    for key, value in environment().items():
        table.add_row(f"[bold]{key}[/]", value)
    console.print(table)


@app.command()
def synth(out: Annotated[Path, typer.Argument(help="Folder to write <ID>/<ID>_<jaw>.obj + .json into.")],
          n: Annotated[int, typer.Option(help="Number of jaws (alternating lower/upper).")] = 20,
          seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
          resolution: Annotated[float, typer.Option(help="1.0 gives ~8k vertices per jaw.")] = 1.0) -> None:
    """Generate synthetic Teeth3DS-style jaws (labelled)."""
    from geot.data.synth import write_synthetic_dataset

    paths = write_synthetic_dataset(out, n=n, seed=seed, resolution=resolution)
    console.print(f"wrote {len(paths)} synthetic jaws to {out}")


@app.command()
def check(folder: Annotated[Path, typer.Argument(help="Folder of scans (Teeth3DS layout or loose meshes).")],
          labels: Annotated[Path | None, typer.Option(help="Parallel folder holding the label JSONs.")] = None,
          ) -> None:
    """Read every scan of a folder and report all problems at once (exit 1 if any)."""
    from geot.io.check import check_folder

    report = check_folder(folder, labels)
    scans = report.scans
    if scans:
        vertices = sorted(s["vertices"] for s in scans)
        jaws = {j: sum(s["jaw"] == j for s in scans) for j in ("lower", "upper")}
        table = Table(title=f"{folder}", show_header=False)
        table.add_row("scans", f"{len(scans)} ({jaws['lower']} lower, {jaws['upper']} upper), "
                      f"{len({s['patient'] for s in scans})} patients, {sum(s['labelled'] for s in scans)} labelled")
        table.add_row("vertices", f"min {vertices[0]}, median {vertices[len(vertices) // 2]}, max {vertices[-1]}")
        total = sum(report.fdi_histogram.values())
        if total:
            hist = ", ".join(f"{code}: {100 * count / total:.1f}%"
                             for code, count in sorted(report.fdi_histogram.items()))
            table.add_row("labels (FDI: % of vertices)", hist)
        console.print(table)
    for path, problem in report.problems:
        err.print(f"[red]problem[/] {path}: {problem}", highlight=False, soft_wrap=True)
    if not report.ok:
        err.print(f"{len(report.problems)} problem(s) found")
        raise typer.Exit(1)
    console.print("[green]all scans readable[/]")


@app.command()
def prepare(folder: Annotated[Path, typer.Argument(help="Folder of scans.")],
            config: Annotated[str | None, typer.Option(help="Config whose feature settings to use.")] = None,
            ) -> None:
    """Compute and cache the features of every scan once (training then starts at full speed)."""
    import time

    from geot.config import load_config
    from geot.data.dataset import default_cache_dir, load_prepared
    from geot.io.teeth3ds import find_scans

    cfg = load_config(_resolve_config(config))
    files = find_scans(folder)
    t0, failed = time.time(), []
    for entry in files:
        try:
            load_prepared(entry, cfg.data.align, cfg.data.curvature, labelled=entry.labels is not None)
        except GeotError as exc:
            failed.append(str(exc))
    console.print(f"prepared {len(files) - len(failed)} scan(s) in {time.time() - t0:.1f} s "
                  f"(cache: {default_cache_dir()})")
    for problem in failed:
        err.print(f"[red]problem[/] {problem}", highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)


def _resolve_config(config: str | None) -> Path | None:
    """A YAML path, or the name of a shipped config (``cpu-small`` -> configs/cpu-small.yaml)."""
    if config is None:
        return None
    path = Path(config)
    if path.is_file():
        return path
    for root in (Path.cwd() / "configs", Path(__file__).resolve().parent.parent / "configs"):
        candidate = root / f"{config.removesuffix('.yaml')}.yaml"
        if candidate.is_file():
            return candidate
    shipped = sorted(p.stem for p in (Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))
    raise GeotError(f"{config}: no such config file (shipped configs: {', '.join(shipped)})")


def _without_option(argv: list[str], name: str) -> list[str]:
    """``argv`` without ``name value`` / ``name=value``."""
    out, skip = [], False
    for arg in argv:
        if skip or arg.startswith(f"{name}="):
            skip = False
            continue
        if arg == name:
            skip = True
            continue
        out.append(arg)
    return out


@app.command()
def train(
    data: Annotated[Path | None, typer.Argument(help="Folder of scans to split by patient.")] = None,
    out: Annotated[Path, typer.Option(help="Run folder (checkpoints, log, config).")] = Path("runs/geot"),
    config: Annotated[str | None, typer.Option(help="YAML config path or shipped name (cpu-small, ...).")] = None,
    labeled_fraction: Annotated[float | None, typer.Option(help="Fraction of training patients with labels.")] = None,
    method: Annotated[str | None, typer.Option(help="supervised | mean_teacher | fixmatch | geot")] = None,
    labeled: Annotated[Path | None, typer.Option(help="Folder of labelled scans (instead of DATA).")] = None,
    unlabeled: Annotated[Path | None, typer.Option(help="Folder of unlabelled scans.")] = None,
    val: Annotated[Path | None, typer.Option(help="Folder of validation scans (they pick the checkpoint).")] = None,
    test: Annotated[Path | None, typer.Option(help="Folder of test scans: recorded in split.json, never read.")] = None,
    split: Annotated[Path | None, typer.Option(help="split.json naming the labelled, unlabelled, val and test "
                                                    "scans of DATA (instead of drawing them).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Override optim.epochs.")] = None,
    minutes: Annotated[float | None, typer.Option(help="Wall-clock budget: the epochs are fixed to fit it "
                                                       "(optim.minutes).")] = None,
    seed: Annotated[int | None, typer.Option(help="Override the seed.")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda | cuda:N")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config key: --set optim.lr=1e-3")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Start over in an --out that holds a run.")] = False,
    nproc: Annotated[int, typer.Option(help="Data-parallel processes on this machine (torchrun).")] = 1,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Train a segmenter (supervised or semi-supervised) on folders of scans."""
    import os

    if nproc > 1 and "WORLD_SIZE" not in os.environ:  # relaunch this command under torchrun
        import subprocess

        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "geot", *_without_option(sys.argv[1:], "--nproc")]
        raise typer.Exit(subprocess.call(cmd))
    from geot import distributed
    from geot.config import load_config, parse_overrides
    from geot.data.sources import gather_data
    from geot.engine.train import train as run_training

    overrides = parse_overrides(set_ or [])
    for key, value in (("data.labelled_fraction", labeled_fraction), ("semi.method", method),
                       ("optim.epochs", epochs), ("optim.minutes", minutes), ("seed", seed), ("device", device)):
        if value is not None:
            overrides[key] = value
    if resume:
        if not (out / "config.yaml").is_file():
            raise GeotError(f"{out}: nothing to resume (no config.yaml)")
        cfg = load_config(out / "config.yaml")
    else:
        cfg = load_config(_resolve_config(config), overrides)
    run_data = gather_data(cfg, data, labeled, unlabeled, val, test=test, split_file=split)
    if distributed.is_main():
        console.print(f"{cfg.semi.method}: {len(run_data.labelled)} labelled, {len(run_data.unlabelled)} "
                      f"unlabelled, {len(run_data.val)} validation scans ({len(run_data.split.test)} test scans "
                      f"held out) -> {out}")
    result = run_training(cfg, run_data, out, resume=resume, progress=progress and sys.stderr.isatty(),
                          overwrite=overwrite)
    if distributed.is_main():
        console.print(f"best validation tooth mIoU {result['best_val_miou']:.4f}; checkpoints in {out / 'checkpoints'}")
    distributed.cleanup()


@app.command()
def predict(
    model: Annotated[Path, typer.Argument(help="Run folder, checkpoint (.pt) or exported bundle folder.")],
    inputs: Annotated[list[Path], typer.Argument(help="Scan files or folders.")],
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("predictions"),
    format_: Annotated[list[str] | None, typer.Option(
        "--format", help="json, ply, obj, png, teeth (one mesh per tooth), html (one report page), explain; "
                         "repeat for several [default: json ply; png and html draw, which costs a second].")] = None,
    jaw: Annotated[str | None, typer.Option(help="lower | upper, for files whose name does not say.")] = None,
    decode: Annotated[str, typer.Option(help="Decoder stage: full (instances numbered along the arch), graphcut, "
                                             "argmax, none (one sample, argmax: geot 0.1).")] = "full",
    mirrored: Annotated[bool, typer.Option(help="The scans are left-right mirror images (side codes swap).")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace existing outputs (default: skip those scans).")] = False,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    workers: Annotated[int, typer.Option(help="Parallel worker processes (CPU).")] = 1,
    rule: Annotated[str | None, typer.Option(help="Prediction rule module instead of the decoder, e.g. loki.")] = None,
    explain: Annotated[bool, typer.Option(help="Also write <name>.explain.npz: entropy, margin, saliency.")] = False,
) -> None:
    """Segment scans; write Teeth3DS JSON (labels, instances, teeth table) and a coloured PLY per scan."""
    from rich.progress import track

    # before torch loads OpenMP: idle worker threads sleep instead of spinning, which on a shared machine
    # made the forward passes of one scan take several times longer (docs/benchmarks.md, start-up)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from geot.engine.predict import Segmenter, predict_files
    from geot.io.teeth3ds import find_scans
    from geot.labels import check_jaw

    try:
        named_jaw = check_jaw(jaw) if jaw else None
    except ValueError as exc:
        raise GeotError(f"--jaw: {exc}") from None
    segmenter = Segmenter.load(model, device, rule, decode=decode)
    files = [f for path in inputs for f in find_scans(path)]
    if not files:
        raise GeotError("no scans found in the given inputs")
    done = track(range(len(files)), description="segmenting", console=err, disable=not sys.stderr.isatty())
    steps = iter(done)
    formats = list(format_ or ("json", "ply")) + (["explain"] if explain else [])
    report = predict_files(segmenter, files, out, formats, named_jaw, overwrite,
                           on_scan=lambda _: next(steps, None), workers=workers, mirrored=mirrored)
    console.print(f"segmented {len(report.written)} scan(s) into {out}"
                  + (f"; skipped {len(report.skipped)} already done" if report.skipped else "")
                  + (f"; report: {report.page}" if report.page else ""))
    for _path, problem in report.failed:
        err.print(f"[red]failed[/] {problem}", highlight=False, soft_wrap=True)
    if report.failed:
        raise typer.Exit(1)


@app.command()
def select(
    model: Annotated[Path, typer.Argument(help="Run folder, checkpoint or bundle.")],
    data: Annotated[Path, typer.Argument(help="Folder of unlabelled scans to choose from.")],
    budget: Annotated[int, typer.Option(help="How many scans to propose.")] = 5,
    round_: Annotated[int, typer.Option("--round", help="Annotation round (early: confident, later: unsure).")] = 0,
    out: Annotated[Path | None, typer.Option(help="Write the ranking as JSON here.")] = None,
) -> None:
    """Rank unlabelled scans for annotation (adaptive margin; rare teeth first)."""
    from geot.engine.predict import Segmenter
    from geot.engine.select import rank_scans
    from geot.io.teeth3ds import find_scans

    ranking = rank_scans(Segmenter.load(model), find_scans(data), round_,
                         on_skip=lambda problem: err.print(f"[red]skipped[/] {problem}", highlight=False,
                                                           soft_wrap=True))
    if not ranking.scores:
        raise GeotError(f"{data}: no readable scans to rank")
    table = Table("rank", "scan", "score")
    for i, (name, score) in enumerate(ranking.scores[:budget], 1):
        table.add_row(str(i), name, f"{score:.3f}")
    console.print(table)
    if out is not None:
        ranking.write(out, budget)


@app.command()
def evaluate(
    predictions: Annotated[Path, typer.Argument(help="Folder of predicted Teeth3DS JSONs.")],
    ground_truth: Annotated[Path, typer.Argument(help="Folder of labelled scans.")],
    out: Annotated[Path | None, typer.Option(help="Where to write summary.json and metrics.csv.")] = None,
) -> None:
    """Tooth mIoU/Dice/accuracy and the 3DTeethSeg'22 metrics (TSA, TLA, TIR) against ground truth."""
    from geot.engine.evaluate import evaluate_folders, format_report

    report = evaluate_folders(predictions, ground_truth, out or predictions)
    console.print(format_report(report))
    for name in report.missing:
        err.print(f"[yellow]missing prediction[/] {name} (counted as 0)", highlight=False)
    for name, problem in report.failed:
        err.print(f"[red]failed[/] {name}: {problem}", highlight=False, soft_wrap=True)
    console.print(f"wrote {(out or predictions) / 'summary.json'} and metrics.csv")
    if not report.scored:
        raise GeotError(f"{predictions}: no scan was scored (no usable prediction matches a labelled scan "
                        f"of {ground_truth})")


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="Run folder or checkpoint.")],
    out: Annotated[Path, typer.Option(help="Bundle folder to write.")] = Path("geot-model"),
    checkpoint: Annotated[str, typer.Option(help="best | last")] = "best",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing bundle.")] = False,
) -> None:
    """Export weights (safetensors) and a model card into a self-contained bundle."""
    from geot.engine.export import export_bundle

    try:
        path = export_bundle(run, out, checkpoint, overwrite)
    except FileExistsError as exc:
        raise GeotError(str(exc)) from None
    console.print(f"wrote model bundle {path}")


@app.command()
def demo(out: Annotated[Path, typer.Option(help="Folder for everything the demo makes.")] = Path("runs/demo"),
         minutes: Annotated[float, typer.Option(help="Rough training budget.")] = 3.0) -> None:
    """The whole story on synthetic jaws: generate, check, train with 20% labels, segment, export, evaluate."""
    from geot.demo import run_demo

    run_demo(out, minutes, console)


@app.command("modules")
def list_modules() -> None:
    """List the auxiliary modules by kind: the names a config's ``modules:`` list and --rule accept."""
    import inspect

    from rich.table import Column
    from rich.text import Text

    from geot.modules import KINDS, MODULES

    def summary(cls: type) -> Text:  # first line of the docstring, shown as written (no markup)
        return Text(inspect.getdoc(cls).splitlines()[0])

    for kind, interface in KINDS.items():
        table = Table(Column("name", no_wrap=True), "what it does", title=Text(f"{kind}: ") + summary(interface),
                      title_justify="left")
        for name in sorted(n for n, cls in MODULES.items() if cls.kind == kind):
            table.add_row(name, summary(MODULES[name]))
        console.print(table)


@app.command()
def report(
    predictions: Annotated[Path, typer.Argument(help="Folder written by geot predict (<name>.json + .ply).")],
    out: Annotated[Path | None, typer.Option(help="HTML file to write [default: PREDICTIONS/report.html].")] = None,
) -> None:
    """One offline HTML page: a sortable table of the scans and a 3D view of each (open it in a browser)."""
    from geot.report import write_report

    path = write_report(predictions, out)
    console.print(f"wrote {path}")


def main() -> None:
    """Entry point: user errors become one red line and exit code 2, not a traceback."""
    try:
        app()
    except GeotError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
