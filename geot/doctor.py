"""Environment report: versions, device and which neighbour backend is active (for bug reports)."""

from __future__ import annotations

import importlib
import platform

import torch

from geot import __version__, ops
from geot.data.dataset import default_cache_dir


def _version(module: str) -> str:
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # open3d fails with OSError when a system library is missing
        return f"not available ({type(exc).__name__})"
    return str(getattr(mod, "__version__", "installed"))


def environment() -> dict[str, str]:
    """What geot runs on, as name -> value strings."""
    if torch.cuda.is_available():
        device = f"cuda ({torch.cuda.get_device_name(0)}, {torch.cuda.device_count()} device(s))"
    else:
        device = "cpu"
    return {
        "geot": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch-geometric": _version("torch_geometric"),
        "torch-cluster": _version("torch_cluster"),
        "trimesh": _version("trimesh"),
        "numpy": _version("numpy"),
        "open3d": _version("open3d"),
        "device": device,
        "cpu threads": str(torch.get_num_threads()),
        "neighbour backend": ops.backend(),
        "feature cache": str(default_cache_dir()),
    }
