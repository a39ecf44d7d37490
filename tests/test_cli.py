"""The command line as a user meets it: help, version, exit codes, one-line errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from geot import __version__
from geot.cli import app, main

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_help_and_version():
    result = run("--help")
    assert result.exit_code == 0
    for verb in ("synth", "check", "prepare", "train", "predict", "evaluate", "export", "demo", "doctor", "report",
                 "modules", "select"):
        assert verb in result.output
    assert run("--version").output.strip() == f"geot {__version__}"


def test_doctor_names_backend():
    out = run("doctor").output
    assert "neighbour backend" in out and "torch" in out


def test_synth_check_prepare(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOT_CACHE", str(tmp_path / "cache"))
    assert run("synth", str(tmp_path / "jaws"), "--n", "2", "--resolution", "0.2").exit_code == 0
    result = run("check", str(tmp_path / "jaws"))
    assert result.exit_code == 0 and "2 (1 lower, 1 upper)" in result.output
    assert run("prepare", str(tmp_path / "jaws")).exit_code == 0
    assert len(list((tmp_path / "cache" / "features").iterdir())) == 2
    label = next((tmp_path / "jaws").rglob("*_lower.json"))
    record = json.loads(label.read_text())
    record["labels"] = record["labels"][:-3]
    label.write_text(json.dumps(record))
    result = run("check", str(tmp_path / "jaws"))
    assert result.exit_code == 1


def user_error(monkeypatch, capsys, *args: str) -> str:
    """Run the real entry point; return its stderr after asserting exit code 2."""
    monkeypatch.setattr("sys.argv", ["geot", *args])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    return capsys.readouterr().err


def test_user_errors_are_one_line(tmp_path, monkeypatch, capsys):
    err = user_error(monkeypatch, capsys, "train", str(tmp_path), "--set", "optim.lrr=1")
    assert "optim.lrr" in err and "Traceback" not in err
    err = user_error(monkeypatch, capsys, "train", str(tmp_path), "--config", "no-such-config")
    assert "no-such-config" in err
    (tmp_path / "bad.pt").write_bytes(b"junk")
    err = user_error(monkeypatch, capsys, "predict", str(tmp_path / "bad.pt"), str(tmp_path))
    assert "bad.pt" in err and "Traceback" not in err
