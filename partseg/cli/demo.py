"""`partseg demo` and `partseg bench`: the pipeline end to end, and the benchmarks."""

from __future__ import annotations

from pathlib import Path

import typer

from partseg.cli.common import app, fail
from partseg.gan.checkpoints import DEFAULT_GAN


@app.command("bench", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench(
    ctx: typer.Context,
    name: str = typer.Argument(None, help="Benchmark to run (file name in benchmarks/ without .py); none: list."),
) -> None:
    """List or run the benchmarks in benchmarks/ (extra arguments go to the benchmark); results go to BENCHMARKS.md."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2] / "benchmarks"
    if not root.is_dir():
        fail(f"no benchmarks/ folder next to the package ({root}): benchmarks run from a source checkout")
    # a benchmark is a script; modules without a __main__ block (report writers, shared helpers) are not listed
    scripts = {p.stem: p for p in sorted(root.glob("*.py")) if '__name__ == "__main__"' in p.read_text()}
    if name is None:
        for stem, p in scripts.items():
            doc = p.read_text().split('"""')[1].strip().splitlines()[0] if '"""' in p.read_text() else ""
            typer.echo(f"{stem:20s} {doc}")
        return
    if name not in scripts:
        fail(f"unknown benchmark {name!r}; available: {', '.join(scripts)}")
    raise typer.Exit(subprocess.call([sys.executable, str(scripts[name]), *ctx.args]))


@app.command("demo")
def demo(
    out: Path = typer.Option(Path("partseg-demo"), "--out", help="Output folder."),
    gan: str = typer.Option(DEFAULT_GAN, "--gan", help="Generator to use."),
) -> None:
    """Run the whole pipeline on the built-in default: generator, shots, head, UNet, ONNX, scores and pictures."""
    from partseg.demo import run_demo

    run_demo(out, gan)
