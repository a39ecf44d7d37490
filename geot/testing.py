"""Damaged inputs for robustness tests: every case must end in a clear ScanError or a usable scan.

Used by tests/io/test_fuzz.py (a bounded number of cases in CI) and tools/fuzz_readers.py (many more,
with a summary table for docs/reliability.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geot.data.synth import synth_jaw
from geot.io.teeth3ds import instances_from_labels


@dataclass(frozen=True)
class Case:
    """One damaged input: a mesh file (and maybe a label file) to read."""

    family: str
    mesh: Path
    labels: Path | None = None


def _valid_files(root: Path, rng: np.random.Generator) -> dict[str, bytes]:
    import trimesh

    scan = synth_jaw("lower", int(rng.integers(1 << 30)), resolution=0.1)
    mesh = trimesh.Trimesh(scan.vertices, scan.faces, process=False)
    record = {"id_patient": "F", "jaw": "lower", "labels": scan.labels.tolist(),
              "instances": instances_from_labels(scan.labels).tolist()}
    return {".obj": mesh.export(file_type="obj").encode(), ".ply": mesh.export(file_type="ply"),
            ".ply-ascii": mesh.export(file_type="ply", encoding="ascii"), ".stl": mesh.export(file_type="stl"),
            ".json": json.dumps(record).encode()}


def _json_value(rng: np.random.Generator, depth: int = 0):
    kind = rng.integers(8 if depth < 2 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return bool(rng.integers(2))
    if kind == 2:
        return int(rng.integers(-10**12, 10**12))
    if kind == 3:
        return float(rng.choice([np.nan, np.inf, -1.5, 0.0, 1e308]))
    if kind == 4:
        return "".join(chr(int(c)) for c in rng.integers(32, 0x2FF, size=rng.integers(0, 8)))
    if kind == 5:
        return [_json_value(rng, depth + 1) for _ in range(rng.integers(0, 4))]
    if kind == 6:
        return {str(k): _json_value(rng, depth + 1) for k in range(rng.integers(0, 3))}
    return [int(x) for x in rng.integers(-5, 60, size=rng.integers(0, 50))]


def damaged_inputs(root: Path, per_family: int, seed: int = 0) -> Iterator[Case]:
    """Yield ``per_family`` cases of each family of damage, written under ``root``."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    valid = _valid_files(root, rng)
    n = 0

    def write(name: str, data: bytes) -> Path:
        nonlocal n
        n += 1
        path = root / f"{n:05d}_{name}"
        path.write_bytes(data)
        return path

    for i in range(per_family):
        suffix = [".obj", ".ply", ".stl"][i % 3]
        yield Case("random bytes", write(f"rand_lower{suffix}", rng.bytes(int(rng.integers(0, 4096)))))
        key = [".obj", ".ply", ".ply-ascii", ".stl"][i % 4]
        data = valid[key]
        cut = int(rng.integers(0, len(data)))
        yield Case("truncated mesh", write(f"cut_lower{key.split('-')[0]}", data[:cut]))
        flipped = bytearray(data)
        for pos in rng.integers(0, len(flipped), size=int(rng.integers(1, 20))):
            flipped[pos] = int(rng.integers(256))
        yield Case("corrupted bytes", write(f"flip_lower{key.split('-')[0]}", bytes(flipped)))
        mesh = write("ok_lower.obj", valid[".obj"])
        record = json.loads(valid[".json"])
        field = ["labels", "instances", "jaw", "id_patient", None][i % 5]
        if field is None:
            record = _json_value(rng)
        else:
            record[field] = _json_value(rng)
        yield Case("wrong JSON types", mesh, write("ok_lower.json", json.dumps(record).encode()))
        yield Case("truncated JSON", mesh, write("cut_lower.json", valid[".json"][: int(rng.integers(0, 200))]))
        count = int(rng.choice([10**6, 10**9, 10**12, 2**31 - 1, 2**63 - 1]))
        header = (f"ply\nformat binary_little_endian 1.0\nelement vertex {count}\nproperty float x\n"
                  f"property float y\nproperty float z\nelement face {count}\n"
                  "property list uchar int vertex_indices\nend_header\n").encode()
        yield Case("huge counts", write("huge_lower.ply", header + rng.bytes(64)))
        v = rng.normal(size=(int(rng.integers(1, 200)), 3)) * 10
        choice = i % 4
        if choice == 0:
            v[rng.integers(0, len(v), size=max(1, len(v) // 10))] = rng.choice([np.nan, np.inf, -np.inf])
        elif choice == 1:
            v = np.repeat(v[:1], len(v), axis=0)  # every vertex duplicated
        elif choice == 2:
            v = v[:1]  # a single point
        faces = rng.integers(0, len(v), size=(len(v), 3))
        if choice == 3:
            faces[:, 1] = faces[:, 0]  # degenerate faces
        lines = [f"v {x} {y} {z}" for x, y, z in v] + [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
        yield Case("degenerate geometry", write("geo_lower.obj", "\n".join(lines).encode()))
