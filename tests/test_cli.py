"""Every command has help; commands of later stages say so and fail instead of pretending to work."""

from __future__ import annotations

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from partseg.cli import app

runner = CliRunner()


def _all_commands() -> list[list[str]]:
    root = get_command(app)
    out = []
    for name, cmd in root.commands.items():
        out.append([name])
        for sub in getattr(cmd, "commands", {}):
            out.append([name, sub])
    return out


def test_pipeline_sub_apps_exist() -> None:
    names = {c[0] for c in _all_commands()}
    assert {"gan", "data", "annotate", "train", "predict", "eval", "distill", "export", "serve", "demo",
            "bench"} <= names


@pytest.mark.parametrize("cmd", _all_commands(), ids=lambda c: " ".join(c))
def test_help(cmd: list[str]) -> None:
    r = runner.invoke(app, [*cmd, "--help"])
    assert r.exit_code == 0, r.output
    assert "Usage" in r.output


def test_missing_checkpoint_is_a_clear_error(tmp_path) -> None:
    r = runner.invoke(app, ["gan", "info", str(tmp_path / "nope.pt")])
    assert r.exit_code != 0
    assert "not found" in str(r.exception) or "not found" in r.output


def test_console_script_prints_one_line_errors(tmp_path) -> None:
    import subprocess
    import sys

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint")
    p = subprocess.run([sys.executable, "-m", "partseg.cli", "gan", "info", str(bad)], capture_output=True, text=True)
    assert p.returncode == 1
    assert "Traceback" not in p.stderr
    assert str(bad) in p.stderr and "unrecognised checkpoint" in p.stderr


def test_bench_lists_and_refuses_unknown():
    from typer.testing import CliRunner

    from partseg.cli import app

    res = CliRunner().invoke(app, ["bench"])
    assert res.exit_code == 0 and "feature_memory" in res.output and "report" not in res.output.split()
    res = CliRunner().invoke(app, ["bench", "nope"])
    assert res.exit_code == 1 and "unknown benchmark 'nope'" in res.output
