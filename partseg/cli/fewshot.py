"""`partseg train` and `partseg predict`: the few-shot head, and segmenting with it or a UNet."""

from __future__ import annotations

from pathlib import Path

import typer

from partseg.cli.common import (
    GAN_HELP,
    LAYERS_HELP,
    MEMORY_HELP,
    Z_DIM_HELP,
    app,
    check_head_layers,
    check_memory,
    fail,
    load_gan,
    report_failed,
)
from partseg.gan.checkpoints import DEFAULT_GAN


@app.command("train")
def train_head(
    shots: Path = typer.Option(..., "--shots", help="Annotated generated samples (data-set layout + latents)."),
    gan: str = typer.Option(DEFAULT_GAN, "--gan", help="The generator the shots were sampled from. " + GAN_HELP),
    layers: str = typer.Option(None, "--layers", help="py: generators (required): submodules to read features "
                               "from, e.g. main.2,main.5 (names as in module.named_modules())."),
    z_dim: int = typer.Option(None, "--z-dim", help=Z_DIM_HELP),
    head: str = typer.Option(None, "--head", help="mlp (per-pixel MLP, the default: the measured best, BENCHMARKS.md "
                             "\"few-shot recipes\") | cnn (the paper's dilated CNN)."),
    out: Path = typer.Option(..., "--out", help="Head file to write (.safetensors)."),
    steps: int = typer.Option(0, "--steps", help="Optimiser steps (0: 2000 for mlp, 600 for cnn)."),
    class_weights: str = typer.Option(None, "--class-weights", help="Loss weight per class from its pixel "
                                      "count in the shots: inverse (default) | sqrt | none (small parts have few "
                                      "pixels)."),
    focal_gamma: float = typer.Option(None, "--focal-gamma", help="Focal loss exponent: 0 is cross-entropy (default "
                                      "for cnn); 2 (default for mlp) down-weights pixels the head already gets "
                                      "right (BENCHMARKS.md \"few-shot recipes, round 4\")."),
    ensemble: int = typer.Option(1, "--ensemble", help="Train N heads from different seeds and average them."),
    size: int = typer.Option(0, "--size", help="Feature map size in pixels (0: the generator's image size; "
                             "the paper uses 512 for a 1024 px generator)."),
    memory: str = typer.Option("auto", "--memory", help=MEMORY_HELP),
    ckpt_every: int = typer.Option(100, "--ckpt-every", help="Steps between checkpoints (OUT.ckpt.pt, removed "
                                   "when done); a re-run resumes from it."),
    invert_steps: int = typer.Option(300, "--invert-steps", help="GAN inversion steps for annotated images without "
                                     "a recorded latent (real images)."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("cpu", "--device"),
) -> None:
    """Train a few-shot CNN/MLP head on annotated generated images (re-run to resume)."""
    from partseg.fewshot.invert import InversionConfig, estimate_inversion_seconds
    from partseg.fewshot.learner import FewShotConfig, load_shots, shots_to_invert
    from partseg.fewshot.learner import train_head as fit

    if ckpt_every < 1:
        fail(f"--ckpt-every must be >= 1, got {ckpt_every}")
    check_memory(memory)
    if gan.startswith("py:") and not layers:
        fail("--gan py:... needs --layers: the submodules whose outputs are the features (e.g. main.2,main.5)")
    G = load_gan(gan, device, layers, z_dim)
    n_inv = shots_to_invert(shots)
    inv = InversionConfig(steps=invert_steps)
    if n_inv and G.can_invert:  # real images, or samples without kept latents: inversion is slow, so say so first
        minutes = estimate_inversion_seconds(G, n_inv, inv) / 60
        typer.secho(f"note: {n_inv} annotated image(s) in {shots} have no recorded latent (no samples.json entry "
                    f"with an index into latents.safetensors): inverting them into the GAN first, "
                    f"{inv.steps} steps, roughly {minutes:.1f} min on {device}", err=True, fg=typer.colors.YELLOW)
    sh = load_shots(shots, G, inv, progress=True)
    ckpt = out.with_name(out.name + ".ckpt.pt")
    if ckpt.exists():
        typer.echo(f"resuming head training from {ckpt}")
    if size < 0:
        fail(f"--size must be >= 0 (0: the generator's resolution), got {size}")
    try:
        given = {k: v for k, v in (("head", head), ("class_weights", class_weights), ("focal_gamma", focal_gamma))
                 if v is not None}
        cfg = FewShotConfig(steps=steps, ensemble=ensemble, seed=seed, size=size, **given,
                            layers=",".join(G.source(None).layers) if layers else "paper")
    except ValueError as e:
        field = str(e).split(" ")[0]  # the config's messages start with the field's name
        fail(f"{ {'class_weights': '--class-weights', 'focal_gamma': '--focal-gamma'}.get(field, field)}: {e}")
    try:
        h = fit(G, sh, cfg, checkpoint=ckpt, ckpt_every=ckpt_every, memory=memory)
    except ValueError as e:
        if "--memory" not in str(e):  # the budget is too small for this run: say so in one line
            raise
        fail(str(e))
    h.meta["gan_source"] = gan
    h.save(out)
    ckpt.unlink(missing_ok=True)
    typer.echo(f"trained a {cfg.head} head on {len(sh.names)} shots in {h.meta['train_seconds']} s -> {out}")


@app.command("predict")
def predict(
    images: list[Path] = typer.Argument(..., help="Image files or folders."),
    out: Path = typer.Option(..., "--out", help="Output folder: labels/, overlays/ (+ reconstructions/)."),
    unet: Path = typer.Option(None, "--unet", help="Fast mode: a distilled UNet (.safetensors or run folder), an "
                              ".onnx file or a TensorRT engine."),
    head: Path = typer.Option(None, "--head", help="Inversion and head modes: a head file from `partseg train`."),
    gan: str = typer.Option(DEFAULT_GAN, "--gan", help="Inversion and head modes: the head's generator. "
                            + GAN_HELP),
    layers: str = typer.Option(None, "--layers", help=LAYERS_HELP),
    z_dim: int = typer.Option(None, "--z-dim", help=Z_DIM_HELP),
    mode: str = typer.Option("auto", "--mode", help="unet | inversion | head (generated samples with their latents: "
                             "a folder from `annotate export` or `gan sample`; any generator) | auto (unet when "
                             "--unet is given)."),
    size: str = typer.Option("model", "--size", help="Fast mode: 'model' resizes to the UNet's training size and "
                             "back, 'native' runs at each image's size (padded to the stride), or a number."),
    backend: str = typer.Option("auto", "--backend", help="Fast mode: auto | torch | onnxruntime | tensorrt."),
    steps: int = typer.Option(300, "--steps", help="Inversion steps per image."),
    batch: int = typer.Option(8, "--batch", help="Images processed together."),
    memory: str = typer.Option("auto", "--memory", help="Inversion and head modes: " + MEMORY_HELP),
    device: str = typer.Option(None, "--device", help="Default: cuda when present, else cpu."),
) -> None:
    """Segment images with a distilled UNet (fast, any size) or through GAN inversion + head (accurate, slow)."""
    from partseg.data.predictions import list_image_files

    if mode == "auto":
        mode = "unet" if unet is not None else "inversion"
    if mode not in ("unet", "inversion", "head"):
        fail(f"--mode must be unet, inversion, head or auto, not {mode!r}")
    if mode == "head":
        from partseg.fewshot.learner import FewShotHead
        from partseg.fewshot.segment import predict_samples

        if head is None:
            fail("--mode head needs --head HEAD (and --gan, the head's generator)")
        if len(images) != 1 or not images[0].is_dir():
            fail("--mode head takes one folder of generated samples with their latents (samples.json)")
        G = load_gan(gan, device or "cpu", z_dim=z_dim)
        h = FewShotHead.load(head, G)
        h.memory = check_memory(memory)
        check_head_layers(h, layers)
        res = predict_samples(images[0], G, h, out, batch=batch)
        typer.echo(f"segmented {len(res.done)} generated samples with the head -> {out} (labels/, overlays/, "
                   f"predictions.json)")
        return
    files = list_image_files(images)
    if mode == "unet":
        if unet is None:
            fail("--mode unet needs --unet MODEL (a distilled UNet, an ONNX file or a TensorRT engine)")
        from partseg.runtime.files import predict_files_unet
        from partseg.runtime.segmenter import Segmenter

        input_size: int | str | None = {"model": "model", "native": None}.get(size, size)
        if isinstance(input_size, str) and input_size != "model":
            if not input_size.isdigit() or int(input_size) < 1:
                fail(f"--size must be 'model', 'native' or a positive number, not {size!r}")
            input_size = int(input_size)
        seg = Segmenter.load(unet, backend=backend, device=device, input_size=input_size)
        res = predict_files_unet(files, seg, out, batch=batch)
        typer.echo(f"segmented {len(res.done)} images with {seg.backend.name} -> {out} (labels/, overlays/, "
                   f"predictions.json)")
        report_failed(res.failed, len(files))
        return
    if head is None:
        fail("--mode inversion needs --head HEAD (and --gan CKPT); for the fast mode pass --unet MODEL")
    from partseg.fewshot.invert import InversionConfig
    from partseg.fewshot.learner import FewShotHead
    from partseg.fewshot.segment import predict_files

    G = load_gan(gan, device or "cpu", z_dim=z_dim)
    G.inversion_generator()  # a generator without inversion: refused here with what to do instead
    h = FewShotHead.load(head, G)
    h.memory = check_memory(memory)
    check_head_layers(h, layers)
    res = predict_files(files, G, h, out, InversionConfig(steps=steps), batch=batch)
    typer.echo(f"segmented {len(res.done)} images -> {out} (labels/, overlays/, reconstructions/, "
               f"predictions.json)")
    report_failed(res.failed, len(files))
