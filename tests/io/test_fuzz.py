"""Damaged files of every family end in a clear ScanError (or a usable scan), never a crash or a hang."""

from __future__ import annotations

import collections
import signal

import pytest

from geot.data.dataset import prepare
from geot.errors import ScanError
from geot.io.teeth3ds import read_scan
from geot.testing import damaged_inputs


def outcome(case) -> str:
    """'ScanError', 'read' (a usable scan, features computed) or the name of an unexpected exception."""

    def timeout(signum, frame):
        raise TimeoutError("took longer than 20 s")

    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(20)
    try:
        scan = read_scan(case.mesh, case.labels if case.labels else False)
        prepare(scan)
        return "read"
    except ScanError as exc:
        assert str(case.labels if case.labels and case.labels.name in str(exc) else case.mesh) in str(exc)
        return "ScanError"
    except Exception as exc:  # noqa: BLE001 - what this test hunts for
        return f"{type(exc).__name__}: {exc}"[:200]
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.mark.slow
def test_damaged_inputs(tmp_path):
    results = collections.defaultdict(collections.Counter)
    failures = []
    for case in damaged_inputs(tmp_path, per_family=12, seed=0):
        result = outcome(case)
        results[case.family][result if result in ("read", "ScanError") else "crash"] += 1
        if result not in ("read", "ScanError"):
            failures.append((case.family, case.mesh.name, result))
    assert not failures, failures[:5]
    assert sum(sum(c.values()) for c in results.values()) == 7 * 12
    assert results["huge counts"]["ScanError"] == 12
    assert results["random bytes"]["read"] == 0
