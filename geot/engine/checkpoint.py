"""Checkpoints that load without running code and cannot be half-read.

The state (tensors and JSON-like values only, so ``torch.load(weights_only=True)`` reads it) is
serialised, hashed, and stored inside an envelope with its SHA-256; loading checks the hash first.
Files are replaced atomically.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import torch

from geot.errors import CheckpointError
from geot.io.atomic import atomic_write

FORMAT = "geot.checkpoint"
VERSION = 1


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically inside a checksummed envelope."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    blob = buffer.getvalue()
    envelope = {"format": FORMAT, "version": VERSION, "sha256": hashlib.sha256(blob).hexdigest(),
                "payload": torch.frombuffer(bytearray(blob), dtype=torch.uint8)}
    out = io.BytesIO()
    torch.save(envelope, out)
    with atomic_write(path) as f:
        f.write(out.getvalue())
    return Path(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint``; any damage raises CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "checkpoint not found")
    try:
        envelope = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, random bytes, pickled code: all unreadable
        raise CheckpointError(path, f"unreadable checkpoint, truncated or corrupted ({type(exc).__name__})") from None
    if not isinstance(envelope, dict) or envelope.get("format") != FORMAT:
        raise CheckpointError(path, "not a geot checkpoint")
    if envelope.get("version") != VERSION:
        raise CheckpointError(path, f"checkpoint format version {envelope.get('version')} is not supported")
    blob = envelope["payload"].numpy().tobytes()
    if hashlib.sha256(blob).hexdigest() != envelope.get("sha256"):
        raise CheckpointError(path, "checksum mismatch: the checkpoint is corrupted")
    try:
        return torch.load(io.BytesIO(blob), map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(path, f"checkpoint payload unreadable ({type(exc).__name__}: {exc})") from None
