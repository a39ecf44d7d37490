"""Damaged inputs for robustness tests: mesh and label files, prediction files, command-line arguments.

``damaged_inputs`` must end in a clear ScanError or a usable scan, ``damaged_predictions`` in a scored row
or a reported failure of ``evaluate_folders``, ``cli_cases`` in exit code 0, 1 or 2 without a traceback.
Used by tests/io/test_fuzz.py (a bounded number of cases in CI, with the judges) and tools/fuzz_readers.py
(many more, with a summary table for docs/reliability.md).
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


@dataclass(frozen=True)
class PredictionCase:
    """A prediction folder holding one damaged ``<damaged>.json`` and a valid prediction of another scan."""

    family: str
    predictions: Path
    ground_truth: Path
    damaged: str
    valid: str


_HOSTILE_CODES = [100, 4100, -1, -(2**63), 2**63 - 1, 2**63, 10**30, 13, 55, 48]


def _ground_truth(root: Path, rng: np.random.Generator) -> tuple[Path, dict[str, dict]]:
    """``root/gt``: one synthetic patient, both jaws, in the Teeth3DS layout; returns the label records."""
    import trimesh

    records = {}
    for jaw in ("lower", "upper"):
        scan = synth_jaw(jaw, int(rng.integers(1 << 30)), resolution=0.1)  # type: ignore[arg-type]
        folder = root / "gt" / "F0001"
        folder.mkdir(parents=True, exist_ok=True)
        trimesh.Trimesh(scan.vertices, scan.faces, process=False).export(folder / f"F0001_{jaw}.obj")
        records[f"F0001_{jaw}"] = {"id_patient": "F0001", "jaw": jaw, "labels": scan.labels.tolist(),
                                   "instances": instances_from_labels(scan.labels).tolist()}
        (folder / f"F0001_{jaw}.json").write_text(json.dumps(records[f"F0001_{jaw}"]))
    return root / "gt", records


def damaged_predictions(root: Path, per_family: int, seed: int = 0) -> Iterator[PredictionCase]:
    """Yield ``per_family`` prediction folders of each family of damage, written under ``root``.

    Each sits next to the same valid ground truth (``root/gt``) and also holds an intact prediction of
    the other jaw, which must be scored whatever happens to the damaged one.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    gt, records = _ground_truth(root, rng)
    n = 0

    def case(family: str, data: bytes, name: str = "F0001_lower") -> PredictionCase:
        nonlocal n
        n += 1
        folder = root / f"pred{n:05d}"
        folder.mkdir()
        (folder / f"{name}.json").write_bytes(data)
        valid = "F0001_upper" if name == "F0001_lower" else "F0001_lower"
        (folder / f"{valid}.json").write_text(json.dumps(records[valid]))
        return PredictionCase(family, folder, gt, name, valid)

    for i in range(per_family):
        name = ["F0001_lower", "F0001_upper"][i % 2]
        good = records[name]
        text = json.dumps(good).encode()

        record = dict(good)
        key = ["labels", "instances", "jaw", "id_patient", None][i % 5]
        if key is None:
            yield case("prediction: wrong JSON types", json.dumps(_json_value(rng)).encode(), name)
        else:
            record[key] = _json_value(rng)
            yield case("prediction: wrong JSON types", json.dumps(record).encode(), name)

        labels = list(good["labels"])
        for pos in rng.integers(0, len(labels), size=int(rng.integers(1, 4))):
            labels[pos] = int(rng.choice(np.array(_HOSTILE_CODES, dtype=object)))
        record = {**good, "labels": labels}
        if i % 3 == 0:
            del record["instances"]
        elif i % 3 == 1:
            record["instances"] = [int(x) for x in rng.integers(-3, 1 << 40, size=len(labels))]
        yield case("prediction: label values", json.dumps(record).encode(), name)

        cut = int(rng.integers(1, 50)) * (1 if i % 2 else -1)
        record = {**good, "labels": good["labels"][:cut] if cut < 0 else good["labels"] + [0] * cut}
        if i % 4 == 0:
            record["instances"] = good["instances"][:-1]
        yield case("prediction: wrong lengths", json.dumps(record).encode(), name)

        if i % 2:
            data = text[: int(rng.integers(0, len(text)))]
        else:
            flipped = bytearray(text)
            for pos in rng.integers(0, len(flipped), size=int(rng.integers(1, 20))):
                flipped[pos] = int(rng.integers(256))
            data = bytes(flipped)
        yield case("prediction: damaged bytes", data, name)

        hostile = [
            b"[" * 200_000 + b"]" * 200_000,
            b'{"labels": [' + b"9" * 5000 + b"]}",
            b'{"jaw": "lower", "labels": [NaN, Infinity, -Infinity]}',
            b"\xef\xbb\xbf" + text,                                    # a byte-order mark
            text.replace(b'"lower"', b'"\xff\xfe"').replace(b'"upper"', b'"\xff\xfe"'),
            b"",
            b"null",
            text[:-1] + b', "labels": []}',                            # the key twice: the last one wins
            json.dumps({**good, "jaw": "upper" if good["jaw"] == "lower" else "lower"}).encode(),
        ]
        yield case("prediction: hostile JSON", hostile[i % len(hostile)], name)


@dataclass(frozen=True)
class CliCase:
    """Arguments for ``geot`` (without the program name), to run in ``cwd``."""

    family: str
    args: tuple[str, ...]
    cwd: Path


_INTS = ["0", "-1", "-7", "2.5", "abc", "", "1e3", "0x10", " 2", "nan", "--n"]  # none asks for many jaws
_FLOATS = ["0.05", "0.02", "0", "-0.1", "nan", "inf", "-inf", "abc", "", "1e-9", "1e400", "1e9", "5e-324",
           "0,05"]


def cli_cases(root: Path, per_family: int, seed: int = 0) -> Iterator[CliCase]:
    """Yield ``per_family`` argument lists of each of ``geot synth``, ``geot check`` and ``geot evaluate``.

    Options are left out, given a valid value or a mistyped one; now and then an unknown option, a stray
    argument or ``--help`` joins. Valid values keep each run small (at most 2 jaws of a few hundred vertices).
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    jaws, predictions, cwd = root / "jaws", root / "predictions", root / "cwd"
    _ground_truth(root, rng)
    (root / "gt").rename(jaws)
    predictions.mkdir(exist_ok=True)
    for label_file in jaws.rglob("*.json"):
        (predictions / label_file.name).write_bytes(label_file.read_bytes())
    (root / "empty").mkdir(exist_ok=True)
    (root / "junk").mkdir(exist_ok=True)
    (root / "junk" / "scan_lower.obj").write_bytes(rng.bytes(300))
    (root / "junk" / "notes.json").write_text("{")
    (root / "file.txt").write_text("not a folder")
    cwd.mkdir(exist_ok=True)
    folders = [str(jaws), str(predictions), str(root / "empty"), str(root / "junk"), str(root / "file.txt"),
               str(root / "missing"), "", ".", str(jaws / "F0001" / "F0001_lower.obj")]
    n = 0

    def pick(values: list[str]) -> str:
        return str(values[int(rng.integers(len(values)))])

    def extras() -> list[str]:
        roll = rng.random()
        if roll < 0.05:
            return ["--help"]
        if roll < 0.12:
            return [pick(["--bogus", "--n", "-x", "--out=", "stray", "--"])]
        return []

    def option(name: str, values: list[str]) -> list[str]:
        roll = rng.random()
        if roll < 0.3:
            return []
        return [f"{name}={pick(values)}"] if roll < 0.4 else [name, pick(values)]

    for _ in range(per_family):
        n += 1
        out = pick([str(root / f"synth{n:05d}"), str(root / "file.txt"), str(root / "synth-again"), ""])
        args = ["synth", out, *option("--n", ["1", "2"] * 3 + _INTS),
                *option("--seed", ["0", "3"] * 3 + _INTS + ["99999999999999999999999"]),
                *option("--resolution", ["0.05"] * 6 + _FLOATS)]
        if "--resolution" not in " ".join(args):
            args += ["--resolution", "0.05"]  # keep the default (8k-vertex jaws) out of the run time
        yield CliCase("cli: synth", tuple(args + extras()), cwd)

        args = ["check", pick(folders), *option("--labels", folders)]
        yield CliCase("cli: check", tuple(args + extras()), cwd)

        args = ["evaluate", pick(folders), pick(folders),
                *option("--out", [str(root / f"eval{n:05d}"), str(root / "file.txt"), "", str(predictions)])]
        yield CliCase("cli: evaluate", tuple(args + extras()), cwd)
