"""The `partseg` command line: a thin layer over the library (every command calls one library function)."""

from __future__ import annotations

import importlib

import typer

from partseg.cli.common import app

# One module per command group, imported in pipeline order (the order `partseg --help` lists them in).
for _group in ("gan", "data", "annotate", "fewshot", "distill", "export", "serve", "evaluate", "demo"):
    importlib.import_module(f"partseg.cli.{_group}")

__all__ = ["app", "main"]


def main() -> None:
    """Console entry point: expected user errors print one clear line, not a traceback."""
    from partseg.gan.state import CheckpointFormatError

    try:
        app()
    except (FileNotFoundError, NotADirectoryError, PermissionError, CheckpointFormatError, ValueError,
            FloatingPointError) as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise SystemExit(1) from None
