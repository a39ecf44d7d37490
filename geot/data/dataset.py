"""Prepared scans (features computed once, cached) and the torch Dataset that samples and augments them."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from geot import labels as fdi
from geot.data.augment import NONE, Augment
from geot.data.features import point_features
from geot.io.atomic import atomic_write
from geot.io.scan import Scan
from geot.io.teeth3ds import ScanFiles, read_scan

if TYPE_CHECKING:
    from torch_geometric.data import Data

_CACHE_VERSION = "3"  # 2: winding-proof frames (normals may flip), frame confidence and warnings;
# 3: OBJ vertices that no face uses are kept (geot.io.plain), where trimesh dropped them


@dataclass(frozen=True, eq=False)
class PreparedScan:
    """A scan in the canonical frame, ready for sampling: what the network needs and nothing else."""

    name: str
    patient: str
    jaw: int                      # 0 lower, 1 upper
    pos: np.ndarray               # (V, 3) float32
    normal: np.ndarray            # (V, 3) float32
    curvature: np.ndarray | None  # (V,) float32
    y: np.ndarray | None          # (V,) class indices, None when unlabelled
    frame_confidence: float = 1.0  # how sure the canonical frame is (geot.data.features.Frame)
    warnings: tuple[str, ...] = ()  # what the frame noticed (faces wound inward, orientation uncertain)

    @property
    def num_vertices(self) -> int:
        return len(self.pos)

    def without_labels(self) -> PreparedScan:
        return PreparedScan(self.name, self.patient, self.jaw, self.pos, self.normal, self.curvature, None,
                            self.frame_confidence, self.warnings)


def prepare(scan: Scan, align: bool = True, curvature: bool = False) -> PreparedScan:
    """Compute the canonical features of a scan (its jaw must be known)."""
    if scan.jaw is None:
        from geot.errors import ScanError

        raise ScanError(scan.path or scan.name, "jaw unknown: name the file <ID>_lower/<ID>_upper or pass the jaw")
    feats = point_features(scan, align=align, curvature=curvature)
    y = scan.classes() if scan.labels is not None else None
    return PreparedScan(scan.name, scan.patient, fdi.JAWS.index(scan.jaw), feats.pos, feats.normal,
                        feats.curvature, y, float(feats.frame.confidence), tuple(feats.frame.warnings))


def default_cache_dir() -> Path:
    """Feature cache: ``$GEOT_CACHE`` or ``~/.cache/geot`` (never inside the input folders)."""
    root = os.environ.get("GEOT_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "geot"
    return Path(root) / "features"


def load_prepared(files: ScanFiles, align: bool = True, curvature: bool = False, labelled: bool = True,
                  cache_dir: Path | None = None) -> PreparedScan:
    """Read and prepare one scan, reusing cached features keyed by file contents and settings."""
    label_file = files.labels if labelled else None
    digest = hashlib.sha1(f"{_CACHE_VERSION}|{align}|{curvature}|{files.name}|{files.patient}".encode())
    for path in (files.mesh, label_file):
        if path is not None:
            digest.update(Path(path).read_bytes())
    cache = (cache_dir or default_cache_dir()) / f"{digest.hexdigest()}.npz"
    if cache.is_file():
        try:
            with np.load(cache) as z:
                return PreparedScan(str(z["name"]), str(z["patient"]), int(z["jaw"]), z["pos"], z["normal"],
                                    z["curvature"] if curvature else None, z["y"] if z["y"].size else None,
                                    float(z["frame_confidence"]), tuple(str(w) for w in z["warnings"]))
        except (OSError, ValueError, KeyError):
            pass  # unreadable cache entry: recompute below and overwrite it
    scan = read_scan(files.mesh, label_file if label_file else False, files.jaw)
    if scan.jaw is None:  # nothing names it: the scan's shape says (or a ScanError asks for a name)
        from geot.data.jaw import settle_jaw

        scan = dataclasses.replace(scan, jaw=settle_jaw(scan.vertices, scan.faces, None, None, files.mesh).jaw)
    prepared = prepare(scan, align, curvature)
    buffer = io.BytesIO()
    np.savez(buffer, name=prepared.name, patient=prepared.patient, jaw=prepared.jaw, pos=prepared.pos,
             normal=prepared.normal, curvature=prepared.curvature if curvature else np.zeros(0, np.float32),
             y=prepared.y if prepared.y is not None else np.zeros(0, np.int64),
             frame_confidence=prepared.frame_confidence, warnings=np.array(prepared.warnings, dtype=str))
    try:
        with atomic_write(cache) as f:
            f.write(buffer.getvalue())
    except OSError:
        pass  # a read-only cache only costs time
    return prepared


def item_generator(seed: int, epoch: int, draw: int) -> torch.Generator:
    """A generator that depends only on (seed, epoch, draw): the same samples in any worker, after resume."""
    state = np.random.SeedSequence([seed, epoch, draw]).generate_state(2, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


def point_inputs(pos: torch.Tensor, normal: torch.Tensor, curvature: torch.Tensor | None, jaw: int) -> torch.Tensor:
    """Per-point input features: xyz, normal, [curvature], jaw flag."""
    parts = [pos, normal]
    if curvature is not None:
        parts.append(curvature[:, None])
    parts.append(torch.full((len(pos), 1), float(jaw), dtype=pos.dtype))
    return torch.cat(parts, dim=1)


def num_input_features(curvature: bool) -> int:
    return 3 + 3 + int(curvature) + 1


class ScanDataset(torch.utils.data.Dataset):
    """Samples ``num_points`` vertices of a scan (all when it has fewer) in random order, then augments.

    Each item is a PyG ``Data`` with ``pos``, ``x`` (inputs), ``vertex`` (index of each sampled point in
    the scan, a stable identity for per-point memories), ``scan`` (dataset index), ``jaw`` and, when
    labelled, ``y``. With ``strong`` set, the item also carries a second view of the *same* points,
    ``pos_strong``/``x_strong``, and the un-augmented ``raw_pos``: the teacher-student pair.
    """

    def __init__(self, scans: Sequence[PreparedScan], num_points: int = 16000, augment: Augment = NONE,
                 strong: Augment | None = None, seed: int = 0, use_curvature: bool = False) -> None:
        self.scans = list(scans)
        self.num_points = num_points
        self.augment = augment
        self.strong = strong
        self.seed = seed
        self.use_curvature = use_curvature
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.scans)

    def __getitem__(self, index: int) -> Data:
        return self.sample(index, (self.epoch, index))

    def sample(self, index: int, key: tuple[int, int]) -> Data:
        """Scan ``index`` sampled and augmented with randomness fixed by ``key`` (e.g. (epoch, draw))."""
        from torch_geometric.data import Data  # here, not at the top: predicting needs no PyG (seconds to import)

        scan = self.scans[index]
        g = item_generator(self.seed, *key)
        n = scan.num_vertices if self.num_points <= 0 else min(self.num_points, scan.num_vertices)
        vertex = torch.randperm(scan.num_vertices, generator=g)[:n]
        pos = torch.from_numpy(scan.pos)[vertex]
        normal = torch.from_numpy(scan.normal)[vertex]
        curv = torch.from_numpy(scan.curvature)[vertex] if self.use_curvature and scan.curvature is not None else None
        if self.use_curvature and curv is None:
            raise ValueError(f"{scan.name}: prepared without curvature but the model uses it")
        data = Data(vertex=vertex, scan=torch.tensor([index]), jaw=torch.tensor([scan.jaw]))
        data.pos, n_aug = self.augment(pos, normal, g)
        data.x = point_inputs(data.pos, n_aug, curv, scan.jaw)
        if self.strong is not None:
            data.raw_pos = pos
            data.pos_strong, n_strong = self.strong(pos, normal, g)
            data.x_strong = point_inputs(data.pos_strong, n_strong, curv, scan.jaw)
        if scan.y is not None:
            data.y = torch.from_numpy(scan.y)[vertex]
        return data
