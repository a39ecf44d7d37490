"""Model bundles: weights as safetensors plus a model card, loadable without running any code."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from geot import __version__
from geot import labels as fdi
from geot.config import Config
from geot.engine.checkpoint import load_checkpoint
from geot.errors import CheckpointError
from geot.io.atomic import atomic_write

BUNDLE_FORMAT = "geot.bundle"


def export_bundle(run: str | Path, out: str | Path, checkpoint: str = "best", overwrite: bool = False) -> Path:
    """Write ``out/{model.safetensors, model.json, MODEL_CARD.md, checksums.sha256}`` from a training run."""
    run, out = Path(run), Path(out)
    ckpt_path = run if run.is_file() else run / "checkpoints" / f"{checkpoint}.pt"
    state = load_checkpoint(ckpt_path)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: exists and is not empty; pass --overwrite to replace the bundle")
    out.mkdir(parents=True, exist_ok=True)
    cfg = Config.model_validate(state["config"])
    split = _read_json(run / "split.json") if run.is_dir() else {}
    card: dict[str, Any] = {
        "format": BUNDLE_FORMAT, "version": 1, "geot_version": __version__, "torch_version": torch.__version__,
        "config": state["config"], "epoch": state["epoch"] + 1, "num_parameters": state.get("num_parameters"),
        "metrics": state.get("metrics", {}),
        "labels": {jaw: {str(c): int(code) for c, code in enumerate(fdi.fdi_codes(jaw))} for jaw in fdi.JAWS},
        "palette": fdi.PALETTE.tolist(),
        "training_data": {part: len(names) for part, names in split.items()},
        "priors": state.get("priors") or {},  # the dentition decoder's arch priors per jaw
    }
    meta = json.dumps(card, sort_keys=True)
    weights = {k: v.contiguous() for k, v in state["model"].items()}
    tmp = out / ".model.safetensors.tmp"
    save_file(weights, str(tmp), metadata={"geot": meta})  # one metadata key: deterministic bytes
    tmp.replace(out / "model.safetensors")
    with atomic_write(out / "model.json", "w") as f:
        f.write(json.dumps(card, sort_keys=True, indent=1))
    with atomic_write(out / "MODEL_CARD.md", "w") as f:
        f.write(_model_card(card, cfg))
    sums = "".join(f"{hashlib.sha256((out / n).read_bytes()).hexdigest()}  {n}\n"
                   for n in ("model.safetensors", "model.json", "MODEL_CARD.md"))
    with atomic_write(out / "checksums.sha256", "w") as f:
        f.write(sums)
    return out


def load_bundle(path: str | Path) -> tuple[dict[str, torch.Tensor], Config, dict[str, Any]]:
    """Weights, config and decoder priors (per jaw, empty for bundles from before the decoder) of a bundle,
    after checking its checksums."""
    path = Path(path)
    sums = path / "checksums.sha256"
    if sums.is_file():
        for line in sums.read_text().splitlines():
            digest, name = line.split(maxsplit=1)
            target = path / name.strip()
            if not target.is_file() or hashlib.sha256(target.read_bytes()).hexdigest() != digest:
                raise CheckpointError(target, "checksum mismatch: the bundle is corrupted or incomplete")
    try:
        card = json.loads((path / "model.json").read_text())
        weights = load_file(str(path / "model.safetensors"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(path, f"unreadable model bundle ({exc})") from None
    if card.get("format") != BUNDLE_FORMAT:
        raise CheckpointError(path, "not a geot model bundle")
    return weights, Config.model_validate(card["config"]), card.get("priors") or {}


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _model_card(card: dict[str, Any], cfg: Config) -> str:
    metrics = card["metrics"]
    rows = "\n".join(f"| {k.removeprefix('val_')} | {v:.4f} |" for k, v in sorted(metrics.items())) or "| - | - |"
    data = ", ".join(f"{v} {k}" for k, v in card["training_data"].items()) or "unknown"
    return f"""# geot model card

- **Task**: per-vertex tooth segmentation of one jaw of an intra-oral scan, 17 classes per jaw
  (gingiva + 16 teeth, FDI numbering; the class -> FDI map is in `model.json`).
- **Method**: `{cfg.semi.method}`, backbone `{cfg.model.name}` ({card['num_parameters']} parameters),
  {cfg.data.num_points} points per scan, trained {card['epoch']} epochs.
- **Training data**: {data} scans (patient-grouped split).
- **Intended use**: research and software development on intra-oral scans. Not a medical device; check
  every prediction before any clinical use.
- **Inputs**: OBJ/PLY/STL mesh or point cloud of one jaw, any frame (geot aligns it), jaw known.
- **Limitations**: trained on the data above only; deciduous teeth, implants and heavy artefacts are
  outside the label set.

## Validation metrics (held-out patients)

| metric | value |
|---|---|
{rows}

Produced by geot {card['geot_version']} with torch {card['torch_version']}.
"""
