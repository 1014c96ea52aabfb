"""`partseg serve ...`: package a model for BentoML and run the HTTP service."""

from __future__ import annotations

from pathlib import Path

import typer

from partseg.cli.common import fail, serve_app


@serve_app.command("package")
def serve_package(
    artefacts: list[Path] = typer.Argument(..., help="UNet .safetensors (or run folder), .onnx file and/or TensorRT "
                                                     "engine of one model; the service picks the best that loads."),
    name: str = typer.Option("partseg-segmenter", "--name", help="Model name in the store (PARTSEG_MODEL)."),
    gan: str = typer.Option(None, "--gan", help="Generator for the inversion mode: file, run folder or builtin:NAME."),
    head: Path = typer.Option(None, "--head", help="Few-shot head for the inversion mode (trained on --gan)."),
) -> None:
    """Save a segmenter (artefacts + labels, optionally generator + head) into BentoML's model store."""
    import os

    from partseg.serve import package_model

    if (gan is None) != (head is None):
        fail("the inversion mode needs both --gan and --head")
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    tag = package_model(artefacts, name, gan=gan, head=head)
    home = os.environ.get("BENTOML_HOME", str(Path.home() / "bentoml"))
    typer.echo(f"saved {tag} to the model store in {home}; serve it with `partseg serve start"
               f"{'' if name == 'partseg-segmenter' else f' --model {name}'}`")


@serve_app.command("start")
def serve_start(
    port: int = typer.Option(3000, "--port", help="HTTP port."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
    model: str = typer.Option(None, "--model", help="Model-store tag (default: PARTSEG_MODEL or partseg-segmenter)."),
    max_batch_size: int = typer.Option(None, "--max-batch-size", help="Adaptive batching limit; 1 turns it off."),
    max_latency_ms: int = typer.Option(None, "--max-latency-ms", help="Longest a request may queue (then 503)."),
    inversion: bool = typer.Option(None, "--inversion/--no-inversion", help="Enable the predict_inversion endpoint."),
    config: Path = typer.Option(None, "--config", help="TOML file of settings (PARTSEG_SERVE_CONFIG)."),
) -> None:
    """Start the HTTP service locally (runs `bentoml serve partseg.serve.service:Segmenter`; Ctrl-C stops it)."""
    import os
    import signal
    import subprocess
    import sys

    env = dict(os.environ)
    env.setdefault("BENTOML_DO_NOT_TRACK", "true")
    for key, value in (("MODEL", model), ("MAX_BATCH_SIZE", max_batch_size), ("MAX_LATENCY_MS", max_latency_ms),
                       ("INVERSION", None if inversion is None else str(inversion).lower())):
        if value is not None:
            env[f"PARTSEG_{key}"] = str(value)
    if config is not None:
        env["PARTSEG_SERVE_CONFIG"] = str(config.resolve())
    from partseg.serve import ServeConfig

    cfg = ServeConfig.from_env(env)  # settings errors here, before BentoML starts
    os.environ["BENTOML_DO_NOT_TRACK"] = env["BENTOML_DO_NOT_TRACK"]
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        bentoml.models.get(cfg.model_tag)
    except NotFound:
        fail(f"model {cfg.model_tag} is not in the model store ({os.environ.get('BENTOML_HOME', '~/bentoml')}); "
              f"save one with `partseg serve package`")
    cmd = [sys.executable, "-m", "bentoml", "serve", "partseg.serve.service:Segmenter", "--host", host,
           "--port", str(port)]
    typer.echo(f"serving {cfg.model_tag} at http://{host}:{port} (batching "
               f"{'up to ' + str(cfg.max_batch_size) if cfg.batching else 'off'}); Ctrl-C stops it")
    proc = subprocess.Popen(cmd, env=env)
    signal.signal(signal.SIGTERM, lambda *_: proc.send_signal(signal.SIGTERM))
    while True:
        try:
            raise typer.Exit(proc.wait())
        except KeyboardInterrupt:  # the terminal sent SIGINT to bentoml too; wait for it to stop
            continue
