"""`partseg data synth`: the built-in procedural data set."""

from __future__ import annotations

from pathlib import Path

import typer

from partseg.cli.common import data_app, fail


@data_app.command("synth")
def data_synth(
    out: Path = typer.Option(..., "--out", help="Output folder: labels.json, images/, masks/."),
    n: int = typer.Option(1000, "--n", help="Number of images."),
    size: int = typer.Option(64, "--size", help="Image size in pixels (>= 32)."),
    seed: int = typer.Option(0, "--seed", help="Image i is the face of seed SEED+i (file faces_{SEED+i:07d}.png)."),
    workers: int = typer.Option(2, "--workers", help="Render processes."),
    mode: str = typer.Option("wild", "--mode", help="wild (unaligned, cluttered) | aligned (FFHQ-style portraits)."),
) -> None:
    """Render the procedural part-annotated face data set (images + exact part masks)."""
    from partseg.data.dataset import time_synth
    from partseg.data.faces import MODES

    if mode not in MODES:
        fail(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")

    path, seconds = time_synth(out, n, size=size, seed=seed, workers=workers, mode=mode)
    rate = n / seconds * 60 if seconds > 0 else float("inf")
    typer.echo(f"wrote {n} images and masks ({size} px, {mode}) to {path} in {seconds:.1f} s "
               f"({rate:,.0f} images/minute, {workers} worker{'s' if workers != 1 else ''})")
