"""Damaged inputs never crash geot: mesh and label files, prediction files fed to evaluate, CLI arguments.

Each judge here returns the name of an accepted outcome or a description of what went wrong; the tests run
a bounded number of cases and tools/fuzz_readers.py runs many more with the same judges.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
from collections.abc import Iterator

import pytest

from geot.data.dataset import prepare
from geot.errors import GeotError, ScanError
from geot.io.teeth3ds import read_scan
from geot.testing import CliCase, PredictionCase, cli_cases, damaged_inputs, damaged_predictions

READER_OUTCOMES = ("ScanError", "read")
PREDICTION_OUTCOMES = ("scored", "failed")
CLI_OUTCOMES = ("exit 0", "exit 1", "exit 2")


class Hang(BaseException):
    """Raised by :func:`time_limit`; a BaseException, so no ``except Exception`` in geot can hide it."""


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    def timeout(signum, frame):
        raise Hang(f"took longer than {seconds} s")

    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def outcome(case) -> str:
    """'ScanError', 'read' (a usable scan, features computed) or the name of an unexpected exception."""
    try:
        with time_limit(20):
            scan = read_scan(case.mesh, case.labels if case.labels else False)
            prepare(scan)
        return "read"
    except ScanError as exc:
        assert str(case.labels if case.labels and case.labels.name in str(exc) else case.mesh) in str(exc)
        return "ScanError"
    except (Exception, Hang) as exc:  # noqa: BLE001 - what this test hunts for
        return f"{type(exc).__name__}: {exc}"[:200]


def prediction_outcome(case: PredictionCase) -> str:
    """'scored', 'failed' (one line naming the damaged file) or what went wrong; the intact one must score."""
    from geot.engine.evaluate import evaluate_folders

    try:
        with time_limit(20):
            report = evaluate_folders(case.predictions, case.ground_truth)
    except (Exception, Hang) as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"[:200]
    rows = {row["name"]: row for row in report.rows}
    if rows[case.valid]["status"] != "ok":
        return f"the intact prediction {case.valid} was not scored: {rows[case.valid]['error']}"[:200]
    status, message = rows[case.damaged]["status"], dict(report.failed).get(case.damaged, "")
    if status == "ok":
        return "scored"
    path = str(case.predictions / f"{case.damaged}.json")
    if status == "failed" and message.startswith(path) and "\n" not in message and report.scored == 1:
        return "failed"
    return f"row {status!r}, message {message!r}"[:200]


def cli_outcome(case: CliCase) -> str:
    """'exit 0/1/2' as ``geot.cli.main`` would end, or what went wrong (traceback, other code, long message)."""
    from typer.testing import CliRunner

    from geot.cli import app

    here = os.getcwd()
    try:
        os.chdir(case.cwd)
        with time_limit(60):
            result = CliRunner().invoke(app, list(case.args))
    except Hang as exc:
        return str(exc)
    finally:
        os.chdir(here)
    exc = result.exception
    if exc is None or isinstance(exc, SystemExit):
        code = result.exit_code
    elif isinstance(exc, GeotError):  # main() prints it as one red line and exits with 2
        if "\n" in str(exc) or not str(exc):
            return f"GeotError message is not one line: {str(exc)[:150]!r}"
        code = 2
    else:
        return f"{type(exc).__name__}: {exc}"[:200]
    if code not in (0, 1, 2) or "Traceback" in result.output:
        return f"exit {code} with {result.output[-150:]!r}"
    if code == 2 and not isinstance(exc, GeotError) and "error" not in result.output.lower():
        return f"exit 2 without saying why: {result.output[-150:]!r}"
    return f"exit {code}"


def tally(cases, judge, accepted: tuple[str, ...]) -> tuple[dict[str, collections.Counter], list[tuple]]:
    """Per family, how many cases ended in each accepted outcome (else 'crash'), and the crashes."""
    results: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    crashes = []
    for case in cases:
        result = judge(case)
        results[case.family][result if result in accepted else "crash"] += 1
        if result not in accepted:
            crashes.append((case.family, case, result))
    return results, crashes


@pytest.mark.slow
def test_damaged_inputs(tmp_path):
    results, crashes = tally(damaged_inputs(tmp_path, per_family=12, seed=0), outcome, READER_OUTCOMES)
    assert not crashes, crashes[:5]
    assert sum(sum(c.values()) for c in results.values()) == 7 * 12
    assert results["huge counts"]["ScanError"] == 12
    assert results["random bytes"]["read"] == 0


@pytest.mark.slow
def test_damaged_predictions_are_scored_or_reported(tmp_path):
    results, crashes = tally(damaged_predictions(tmp_path, per_family=9, seed=0), prediction_outcome,
                             PREDICTION_OUTCOMES)
    assert not crashes, crashes[:5]
    assert len(results) == 5 and all(sum(c.values()) == 9 for c in results.values())
    assert results["prediction: wrong lengths"]["failed"] == 9
    assert results["prediction: hostile JSON"]["failed"] == 9  # every hostile file in the list is unusable
    assert results["prediction: label values"]["failed"] > 0


@pytest.mark.slow
def test_cli_arguments_end_in_an_exit_code_not_a_traceback(tmp_path):
    results, crashes = tally(cli_cases(tmp_path, per_family=10, seed=0), cli_outcome, CLI_OUTCOMES)
    assert not crashes, [(family, case.args, result) for family, case, result in crashes[:5]]
    assert set(results) == {"cli: synth", "cli: check", "cli: evaluate"}
    for family, counts in results.items():
        assert sum(counts.values()) == 10
        assert counts["exit 2"] > 0, (family, counts)  # mistyped values do reach the user as errors
    assert results["cli: synth"]["exit 0"] > 0 and results["cli: check"]["exit 0"] > 0
