"""The `partseg` command line: a thin layer over the library (every command calls one library function)."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Few-shot semantic part segmentation from a GAN's activations.")
gan_app = typer.Typer(no_args_is_help=True, help="Train, sample, inspect and convert StyleGAN2 generators.")
data_app = typer.Typer(no_args_is_help=True, help="The built-in procedural data set (images + exact part masks).")
annotate_app = typer.Typer(no_args_is_help=True, help="Annotation kits out, annotations in, browser labeller.")
export_app = typer.Typer(no_args_is_help=True, help="Export a distilled UNet to ONNX or TensorRT.")
serve_app = typer.Typer(no_args_is_help=True, help="Package and serve a segmenter with BentoML.")
app.add_typer(gan_app, name="gan")
app.add_typer(data_app, name="data")
app.add_typer(annotate_app, name="annotate")
app.add_typer(export_app, name="export")
app.add_typer(serve_app, name="serve")


def _fail(msg: str, code: int = 1) -> NoReturn:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


GAN_HELP = "Generator: file, run folder, builtin:NAME, or py:module:callable (your own nn.Module z -> image)."
LAYERS_HELP = "py: generators: submodules to read features from, e.g. main.2,main.5 (default: the head's)."
Z_DIM_HELP = "py: generators: latent size (default: the first layer's input channels/features)."


def _layer_list(layers: str | None) -> list[str] | None:
    return [n.strip() for n in layers.split(",") if n.strip()] if layers else None


def _load_gan(gan: str, device: str, layers: str | None = None, z_dim: int | None = None):
    """Any generator through the few-shot interface (partseg.gan.interface); errors name the option."""
    from .gan.interface import load_fewshot_gan

    return load_fewshot_gan(gan, device=device, layers=_layer_list(layers), z_dim=z_dim)


def _check_head_layers(h, layers: str | None) -> None:
    """--layers given with a head must be the head's (its weights fit those features only)."""
    if layers and _layer_list(layers) != list(h.meta["layers"]):
        _fail(f"--layers {layers} differs from the layers the head was trained on ({','.join(h.meta['layers'])}); "
              f"leave --layers out to use the head's")


# ---------------------------------------------------------------------------------------------------- gan


def _channel_table(text: str) -> dict[int, int]:
    """'4:128,8:128,...' -> {4: 128, 8: 128, ...}, with a clear error for anything else."""
    try:
        pairs = [item.split(":") for item in text.split(",") if item.strip()]
        return {int(r): int(c) for r, c in pairs}
    except ValueError:
        _fail(f"--channels: expected RES:CHANNELS pairs separated by commas (e.g. 4:128,8:128), got {text!r}")


@gan_app.command("train")
def gan_train(
    data: Path = typer.Argument(..., help="Folder of training images (any size; centre-cropped and resized)."),
    out: Path = typer.Option(..., "--out", help="Run folder: checkpoints, sample grids, log. Re-run to resume."),
    resolution: int = typer.Option(64, "--resolution", help="Output resolution (power of two, 32-1024)."),
    kimg: float = typer.Option(1000.0, "--kimg", help="Training length in thousands of real images."),
    batch: int = typer.Option(0, "--batch", help="Total batch over all processes (0: min(4096/res, 32))."),
    lr: float = typer.Option(0.0025, "--lr", help="Adam learning rate of G and D."),
    r1_gamma: float = typer.Option(-1.0, "--r1-gamma", help="R1 weight (negative: 0.0002 res^2 / batch)."),
    pl_weight: float = typer.Option(2.0, "--pl-weight", help="Path-length regularisation weight (0: off)."),
    mixing: float = typer.Option(0.9, "--mixing", help="Style-mixing probability."),
    channel_base: int = typer.Option(16384, "--channel-base", help="Channels at res r: min(base / r, max)."),
    channel_max: int = typer.Option(512, "--channel-max"),
    channels: str = typer.Option(None, "--channels", help="Explicit table, e.g. 4:128,8:128,16:128,32:64,64:32,128:32 "
                                 "(overrides --channel-base/--channel-max)."),
    amp: str = typer.Option("auto", "--amp", help="bf16 autocast: auto (CUDA, or a CPU with bf16 units) | bf16 | off."),
    z_dim: int = typer.Option(512, "--z-dim"),
    w_dim: int = typer.Option(512, "--w-dim"),
    n_mlp: int = typer.Option(2, "--n-mlp", help="Mapping network depth (stylegan2-ada: 2, StyleGAN2: 8)."),
    mirror: bool = typer.Option(True, "--mirror/--no-mirror", help="Add horizontally flipped copies."),
    ckpt_kimg: float = typer.Option(10.0, "--ckpt-kimg", help="Checkpoint and sample-grid interval (kimg)."),
    workers: int = typer.Option(2, "--workers", help="DataLoader worker processes."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option(None, "--device", help="Default: cuda (LOCAL_RANK under torchrun) if present."),
) -> None:
    """Train a StyleGAN2 on a folder of images; re-running the command resumes from --out.

    Multi-GPU: `torchrun --nproc_per_node N -m partseg.cli gan train ...` (gradients averaged across processes).
    """
    from .distributed import init_distributed_from_env
    from .gan.train import TrainConfig, train

    cfg = TrainConfig(data=str(data), resolution=resolution, kimg=kimg, batch=batch, lr=lr, r1_gamma=r1_gamma,
                      pl_weight=pl_weight, mixing=mixing, channel_base=channel_base, channel_max=channel_max,
                      z_dim=z_dim, w_dim=w_dim, n_mlp=n_mlp, mirror=mirror, ckpt_kimg=ckpt_kimg, workers=workers,
                      seed=seed, amp=amp, channels=_channel_table(channels) if channels else None)
    init_distributed_from_env(device)
    res = train(cfg, out, device=device)
    if res["rank"] != 0:
        return
    if res["stopped_early"]:
        typer.echo(f"stopped at step {res['step']} of {res['total_steps']}; checkpoint written to {out}. "
                   f"Run the same command to resume.")
    else:
        typer.echo(f"done: {res['step']} steps; generator at {out / 'generator.safetensors'}")


@gan_app.command("sample")
def gan_sample(
    ckpt: str = typer.Argument(..., help="Generator: file, run folder or builtin:NAME."),
    n: int = typer.Option(16, "-n", help="Number of images."),
    seed: int = typer.Option(0, "--seed", help="Sample i uses seed SEED+i for its latent and noise."),
    truncation: float = typer.Option(1.0, "--truncation", help="Truncation psi (1 = none)."),
    noise_mode: str = typer.Option("const", "--noise-mode", help="const | random | none."),
    batch: int = typer.Option(16, "--batch"),
    device: str = typer.Option("cpu", "--device"),
    out: Path = typer.Option(..., "--out", help="Output folder for PNGs, latents.safetensors, samples.json."),
) -> None:
    """Generate images plus the exact latents needed to regenerate each one."""
    from .gan import load_generator
    from .gan.sampling import image_grid, sample, save_png, save_samples

    G = load_generator(ckpt, device=device)
    s = sample(G, n, seed=seed, truncation=truncation, noise_mode=noise_mode, batch=batch, progress=True)
    files = save_samples(s, out, generator=str(ckpt))
    save_png(image_grid(s.images), out / "grid.png")
    typer.echo(f"wrote {len(files)} images, latents and grid.png to {out}")


@gan_app.command("info")
def gan_info(ckpt: str = typer.Argument(..., help="Generator: file, run folder or builtin:NAME.")) -> None:
    """Print a generator's architecture as read from its checkpoint."""
    from .gan import load_generator

    G = load_generator(ckpt)
    n_params = sum(p.numel() for p in G.parameters())
    typer.echo(f"resolution {G.resolution}, z_dim {G.z_dim}, w_dim {G.w_dim}, n_mlp {G.cfg.n_mlp}, "
               f"num_ws {G.num_ws}, {n_params / 1e6:.2f} M parameters")
    typer.echo("channels " + ", ".join(f"{r}: {c}" for r, c in G.cfg.channels.items()))
    typer.echo("layers " + " ".join(G.synthesis.layer_names))


@gan_app.command("convert")
def gan_convert(
    src: Path = typer.Argument(..., help="rosinality .pt or NVIDIA stylegan2-ada .pkl (never executes code)."),
    out: Path = typer.Option(..., "--out", help="Destination .safetensors."),
    fp16: bool = typer.Option(False, "--fp16", help="Store weights as float16."),
) -> None:
    """Convert a third-party generator checkpoint into partseg's safetensors format."""
    import torch

    from .gan import load_generator, save_generator

    if out.suffix != ".safetensors":
        _fail(f"--out must name a .safetensors file, got {out}")
    G = load_generator(src)
    dtype = torch.float16 if fp16 else torch.float32
    path = save_generator(G, out, dtype=dtype, extra={"converted_from": src.name})
    n_params = sum(p.numel() for p in G.parameters())
    typer.echo(f"converted {src} -> {path}: {G.resolution} px, z_dim {G.z_dim}, w_dim {G.w_dim}, n_mlp "
               f"{G.cfg.n_mlp}, {n_params / 1e6:.2f} M parameters, {str(dtype).removeprefix('torch.')}")


# ---------------------------------------------------------------------------------------------------- later stages


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
    from .dataset import time_synth
    from .faces_aligned import MODES

    if mode not in MODES:
        _fail(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")

    path, seconds = time_synth(out, n, size=size, seed=seed, workers=workers, mode=mode)
    rate = n / seconds * 60 if seconds > 0 else float("inf")
    typer.echo(f"wrote {n} images and masks ({size} px, {mode}) to {path} in {seconds:.1f} s "
               f"({rate:,.0f} images/minute, {workers} worker{'s' if workers != 1 else ''})")


@annotate_app.command("export")
def annotate_export(
    gan: str = typer.Option("builtin:faces64", "--gan", help=GAN_HELP),
    layers: str = typer.Option(None, "--layers", help="py: generators: checked to exist (train reads them)."),
    z_dim: int = typer.Option(None, "--z-dim", help=Z_DIM_HELP),
    n: int = typer.Option(20, "-n", help="Number of images to annotate."),
    seed: int = typer.Option(0, "--seed", help="Image i is sample SEED+i (file images/seed{SEED+i:06d}.png)."),
    labels: Path = typer.Option(None, "--labels", help="labels.json of the classes (default: the built-in faces)."),
    truncation: float = typer.Option(1.0, "--truncation", help="Truncation psi (1 = none)."),
    noise_mode: str = typer.Option("const", "--noise-mode", help="const | random | none."),
    device: str = typer.Option("cpu", "--device"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out."),
    out: Path = typer.Option(..., "--out", help="Kit folder: images/, latents, README.md, label configs."),
) -> None:
    """Write an annotation kit of generated images (with their latents and the annotators' label configs)."""
    from .annotations import AnnotationError, export_kit
    from .labels import FACES, Labels

    if layers:  # unknown layers, non-4-D or non-square maps: refused now, not at `partseg train`
        _load_gan(gan, device, layers, z_dim).source(_layer_list(layers))
    try:
        path = export_kit(gan, n, seed, Labels.load(labels) if labels is not None else FACES, out,
                          truncation=truncation, noise_mode=noise_mode, device=device, overwrite=overwrite,
                          z_dim=z_dim)
    except AnnotationError as e:
        _fail(str(e))
    typer.echo(f"wrote an annotation kit of {n} images to {path}; annotators start with {path / 'README.md'}")


@annotate_app.command("import")
def annotate_import(
    src: Path = typer.Argument(..., help="Annotations: a folder or file, as the format expects."),
    fmt: str = typer.Option(..., "--format", help="png | labelme | cvat | coco | celebamask-hq."),
    labels: Path = typer.Option(None, "--labels", help="labels.json (default: the kit's, else the built-in faces)."),
    kit: Path = typer.Option(None, "--kit", help="The kit the images came from: images and latents are taken there."),
    images: Path = typer.Option(None, "--images", help="Folder of the images (without --kit, or real images)."),
    unlabelled: str = typer.Option("background", "--unlabelled", help="Pixels no shape covers: background | ignore."),
    overlap: str = typer.Option("z-order", "--overlap", help="z-order (later shape wins) | error."),
    allow_real: bool = typer.Option(False, "--allow-real", help="Accept images that are not in the kit (no latent)."),
    skip_empty: bool = typer.Option(False, "--skip-empty", help="Leave out images with nothing labelled."),
    mapping: Path = typer.Option(None, "--mapping", help="celebamask-hq: JSON {part: class name or null}."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out."),
    out: Path = typer.Option(..., "--out", help="Output data set: labels.json, images/, masks/ (+ latents)."),
) -> None:
    """Import annotations (png, labelme, cvat, coco, celebamask-hq) into one data set with the kit's latents."""
    import json
    import warnings

    from .annotations import AnnotationError, import_annotations

    try:
        part_map = json.loads(mapping.read_text()) if mapping is not None else None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        _fail(f"{mapping}: not valid JSON ({e}); expected {{\"CelebAMask-HQ part\": \"class name\" or null}}")
    if part_map is not None and not isinstance(part_map, dict):
        _fail(f"{mapping}: expected a JSON object {{\"CelebAMask-HQ part\": \"class name\" or null}}, got "
              f"{type(part_map).__name__}")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            path = import_annotations(src, fmt, labels, out, kit, images=images, unlabelled=unlabelled,
                                      overlap=overlap, allow_real=allow_real, skip_empty=skip_empty,
                                      mapping=part_map, overwrite=overwrite)
    except AnnotationError as e:
        _fail(f"{mapping}: {e}" if mapping is not None and str(e).startswith("CelebAMask-HQ mapping") else str(e))
    for w in caught:
        typer.secho(f"warning: {w.message}", fg=typer.colors.YELLOW, err=True)
    n_masks = len(list((path / "masks").glob("*.png")))
    index = path / "samples.json"
    real = sum(bool(s.get("real")) for s in json.loads(index.read_text())["samples"]) if index.exists() else None
    detail = "" if real is None else f" ({n_masks - real} generated with their latents, {real} real)"
    typer.echo(f"imported {n_masks} annotated images{detail} to {path}")


@annotate_app.command("ui")
def annotate_ui(
    kit: Path = typer.Argument(..., help="Annotation kit: labels.json and images/; masks go to masks/NAME.png."),
    port: int = typer.Option(8765, "--port", help="Port on 127.0.0.1 (0: any free port)."),
    head: Path = typer.Option(None, "--head", help="Head file from `partseg train`: enables the suggest button."),
    gan: str = typer.Option(None, "--gan", help="The head's generator (default: the kit's samples.json's)."),
    layers: str = typer.Option(None, "--layers", help=LAYERS_HELP),
    z_dim: int = typer.Option(None, "--z-dim", help=Z_DIM_HELP),
    verbose: bool = typer.Option(False, "--verbose", help="Log every request."),
) -> None:
    """Browser labeller for an annotation kit: paint masks, saved to the kit on every change. Ctrl-C stops it."""
    from .labeller import run_labeller

    if gan is not None and head is None:
        _fail("--gan is only used with --head (the suggest button)")
    if gan is not None and gan.startswith("py:"):
        from .fewshot import FewShotHead

        G = _load_gan(gan, "cpu", z_dim=z_dim)
        _check_head_layers(FewShotHead.load(head, G), layers)
        gan = G
    elif layers or z_dim:
        _fail("--layers and --z-dim apply with --gan py:module:callable")

    def ready(url: str) -> None:
        typer.echo(f"labeller for {kit} at {url}  (Ctrl-C to stop)")

    try:
        run_labeller(kit, port=port, head=head, gan=gan, verbose=verbose, on_ready=ready)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    except OSError as e:
        _fail(f"cannot serve on 127.0.0.1:{port}: {e}")
    typer.echo("stopped")


@app.command("train")
def train_head(
    shots: Path = typer.Option(..., "--shots", help="Annotated generated samples (data-set layout + latents)."),
    gan: str = typer.Option("builtin:faces64", "--gan", help="The generator the shots were sampled from. " + GAN_HELP),
    layers: str = typer.Option(None, "--layers", help="py: generators (required): submodules to read features "
                               "from, e.g. main.2,main.5 (names as in module.named_modules())."),
    z_dim: int = typer.Option(None, "--z-dim", help=Z_DIM_HELP),
    head: str = typer.Option("cnn", "--head", help="cnn (the paper's dilated CNN) | mlp (per-pixel MLP)."),
    out: Path = typer.Option(..., "--out", help="Head file to write (.safetensors)."),
    steps: int = typer.Option(0, "--steps", help="Optimiser steps (0: 600 for cnn, 1000 for mlp)."),
    ensemble: int = typer.Option(1, "--ensemble", help="Train N heads from different seeds and average them."),
    ckpt_every: int = typer.Option(100, "--ckpt-every", help="Steps between checkpoints (OUT.ckpt.pt, removed "
                                   "when done); a re-run resumes from it."),
    invert_steps: int = typer.Option(300, "--invert-steps", help="GAN inversion steps for annotated images without "
                                     "a recorded latent (real images)."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("cpu", "--device"),
) -> None:
    """Train a few-shot CNN/MLP head on annotated generated images (re-run to resume)."""
    from .fewshot import FewShotConfig, load_shots, shots_to_invert
    from .fewshot import train_head as fit
    from .invert import InversionConfig, estimate_inversion_seconds

    if ckpt_every < 1:
        _fail(f"--ckpt-every must be >= 1, got {ckpt_every}")
    if gan.startswith("py:") and not layers:
        _fail("--gan py:... needs --layers: the submodules whose outputs are the features (e.g. main.2,main.5)")
    G = _load_gan(gan, device, layers, z_dim)
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
    cfg = FewShotConfig(head=head, steps=steps, ensemble=ensemble, seed=seed, layers=",".join(G.source(None).layers)
                        if layers else "paper")
    h = fit(G, sh, cfg, checkpoint=ckpt, ckpt_every=ckpt_every)
    h.meta["gan_source"] = gan
    h.save(out)
    ckpt.unlink(missing_ok=True)
    typer.echo(f"trained a {head} head on {len(sh.names)} shots in {h.meta['train_seconds']} s -> {out}")


@app.command("predict")
def predict(
    images: list[Path] = typer.Argument(..., help="Image files or folders."),
    out: Path = typer.Option(..., "--out", help="Output folder: labels/, overlays/ (+ reconstructions/)."),
    unet: Path = typer.Option(None, "--unet", help="Fast mode: a distilled UNet (.safetensors or run folder), an "
                              ".onnx file or a TensorRT engine."),
    head: Path = typer.Option(None, "--head", help="Inversion and head modes: a head file from `partseg train`."),
    gan: str = typer.Option("builtin:faces64", "--gan", help="Inversion and head modes: the head's generator. "
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
    device: str = typer.Option(None, "--device", help="Default: cuda when present, else cpu."),
) -> None:
    """Segment images with a distilled UNet (fast, any size) or through GAN inversion + head (accurate, slow)."""
    from .segment import list_image_files

    if mode == "auto":
        mode = "unet" if unet is not None else "inversion"
    if mode not in ("unet", "inversion", "head"):
        _fail(f"--mode must be unet, inversion, head or auto, not {mode!r}")
    if mode == "head":
        from .fewshot import FewShotHead
        from .segment import predict_samples

        if head is None:
            _fail("--mode head needs --head HEAD (and --gan, the head's generator)")
        if len(images) != 1 or not images[0].is_dir():
            _fail("--mode head takes one folder of generated samples with their latents (samples.json)")
        G = _load_gan(gan, device or "cpu", z_dim=z_dim)
        h = FewShotHead.load(head, G)
        _check_head_layers(h, layers)
        res = predict_samples(images[0], G, h, out, batch=batch)
        typer.echo(f"segmented {len(res.done)} generated samples with the head -> {out} (labels/, overlays/, "
                   f"predictions.json)")
        return
    files = list_image_files(images)
    if mode == "unet":
        if unet is None:
            _fail("--mode unet needs --unet MODEL (a distilled UNet, an ONNX file or a TensorRT engine)")
        from .runtime import Segmenter
        from .segment import predict_files_unet

        input_size: int | str | None = {"model": "model", "native": None}.get(size, size)
        if isinstance(input_size, str) and input_size != "model":
            if not input_size.isdigit() or int(input_size) < 1:
                _fail(f"--size must be 'model', 'native' or a positive number, not {size!r}")
            input_size = int(input_size)
        seg = Segmenter.load(unet, backend=backend, device=device, input_size=input_size)
        res = predict_files_unet(files, seg, out, batch=batch)
        typer.echo(f"segmented {len(res.done)} images with {seg.backend.name} -> {out} (labels/, overlays/, "
                   f"predictions.json)")
        _report_failed(res.failed, len(files))
        return
    if head is None:
        _fail("--mode inversion needs --head HEAD (and --gan CKPT); for the fast mode pass --unet MODEL")
    from .fewshot import FewShotHead
    from .invert import InversionConfig
    from .segment import predict_files

    G = _load_gan(gan, device or "cpu", z_dim=z_dim)
    G.inversion_generator()  # a generator without inversion: refused here with what to do instead
    h = FewShotHead.load(head, G)
    _check_head_layers(h, layers)
    res = predict_files(files, G, h, out, InversionConfig(steps=steps), batch=batch)
    typer.echo(f"segmented {len(res.done)} images -> {out} (labels/, overlays/, reconstructions/, "
               f"predictions.json)")
    _report_failed(res.failed, len(files))


def _report_failed(failed: list[tuple[Path, str]], total: int) -> None:
    """List the images that could not be segmented (one line each) and exit non-zero if there were any."""
    if not failed:
        return
    for f, why in failed:
        typer.secho(f"  {f}: {why}", fg=typer.colors.RED, err=True)
    _fail(f"{len(failed)} of {total} images could not be segmented (listed above and in predictions.json)")


@app.command("eval")
def evaluate(
    pred: Path = typer.Option(..., "--pred", help="Predicted masks (folder, or a predict/data-set folder)."),
    gt: Path = typer.Option(..., "--gt", help="Ground-truth masks (folder, or a data-set folder)."),
    labels: Path = typer.Option(None, "--labels", help="labels.json (default: the ground truth's)."),
    out: Path = typer.Option(None, "--out", help="Where eval.json and eval.png go (default: --pred)."),
) -> None:
    """Per-class IoU, mIoU, pixel accuracy and confusion matrix of predictions against ground truth."""
    from .evaluate import evaluate_and_write
    from .labels import Labels

    lab = Labels.load(labels or gt / "labels.json")
    rep = evaluate_and_write(pred, gt, lab, out or pred)
    for n, v in rep["iou"].items():
        typer.echo(f"  {n:>12s}  {'-' if v is None else f'{v:.3f}'}")
    typer.echo(f"mIoU {rep['miou']:.4f}, pixel accuracy {rep['pixel_accuracy']:.4f} -> {out or pred}/eval.json, "
               f"eval.png")


@app.command("distill")
def distill(
    head: Path = typer.Option(..., "--head", help="Head file from `partseg train`."),
    gan: str = typer.Option("builtin:faces64", "--gan", help="The generator the head was trained on. " + GAN_HELP),
    layers: str = typer.Option(None, "--layers", help=LAYERS_HELP),
    z_dim: int = typer.Option(None, "--z-dim", help=Z_DIM_HELP),
    out: Path = typer.Option(..., "--out", help="Run folder: model.safetensors (last), best.safetensors, log."),
    steps: int = typer.Option(3000, "--steps"),
    batch: int = typer.Option(16, "--batch", help="Generated pairs per step, in total over all processes."),
    confidence: float = typer.Option(0.5, "--confidence", help="Ignore pixels where the head's max softmax is "
                                     "below this (0: keep all)."),
    val_renders: int = typer.Option(0, "--val-renders", help="Validate mIoU on N rendered faces with exact masks "
                                    "(built-in domain only; 0: no validation)."),
    cache: Path = typer.Option(None, "--cache", help="Folder to keep the generated pairs in (data-set layout, "
                               "images as 8-bit PNG); a re-run with it reads them instead of rendering."),
    ckpt_every: int = typer.Option(0, "--ckpt-every", help="Steps between checkpoints (a re-run resumes from the "
                                   "last one); 0: min(100, steps / 10)."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option(None, "--device", help="Default: cuda (LOCAL_RANK under torchrun) if present."),
) -> None:
    """Auto-shot: train a UNet on generated images labelled by a head (re-run to resume).

    Multi-GPU: `torchrun --nproc_per_node N -m partseg.cli distill ...` (each process makes batch / N pairs).
    """
    import copy
    import os

    import torch

    from .distill import DistillConfig
    from .distill import distill as run_distill
    from .distributed import init_distributed_from_env
    from .fewshot import FewShotHead

    init_distributed_from_env(device)
    if device in (None, "cuda") and torch.cuda.is_available():
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    G = _load_gan(gan, device or "cpu", z_dim=z_dim)
    h = FewShotHead.load(head, G)
    _check_head_layers(h, layers)
    validate = None
    if val_renders:
        from .oracle import evaluate_on_renders

        def validate(model):  # the renders are CPU tensors: score a CPU copy of the model
            return evaluate_on_renders(copy.deepcopy(model).cpu(), n=val_renders, size=G.resolution).miou

    cfg = DistillConfig(steps=steps, batch=batch, confidence=confidence, seed=seed, ckpt_every=ckpt_every)
    _, res = run_distill(G, h, cfg, out, validate=validate, cache=cache)
    if res["rank"] != 0:
        return
    if res["stopped_early"]:
        typer.echo(f"stopped at step {res['step']} of {steps}; checkpoint written to {out}. Run the same command "
                   f"to resume.")
        return
    resumed = f" (resumed at step {res['start_step']})" if res["start_step"] else ""
    best = f", best validation mIoU {res['best']:.4f}" if res["best"] is not None else ""
    typer.echo(f"distilled {res['step']} steps on {res['world']} process(es){resumed} -> "
               f"{out / 'model.safetensors'}{best}")


@export_app.command("onnx")
def export_onnx(
    unet: Path = typer.Argument(..., help="A distilled UNet (.safetensors, or a run folder: best, else last)."),
    out: Path = typer.Option(..., "--out", help="The .onnx file to write."),
    opset: int = typer.Option(18, "--opset"),
    min_agreement: float = typer.Option(None, "--min-agreement", help="Parity: least share of pixels with the "
                                        "same class as the reference (PyTorch; with --int8 the float32 ONNX "
                                        "model). Default 0.999, with --int8 0.97."),
    int8: bool = typer.Option(False, "--int8", help="Static INT8 quantisation (QDQ, per-channel weights) for "
                              "CPU deployments, calibrated on generated images of the UNet's GAN or --calib."),
    calib: Path = typer.Option(None, "--calib", help="--int8: calibrate on the images in this folder (or its "
                               "images/ subfolder) instead of generated ones."),
    gan: str = typer.Option(None, "--gan", help="--int8: the generator to calibrate with (default: the built-in "
                            "one the UNet was distilled from, found by its fingerprint)."),
    n_calib: int = typer.Option(64, "--n-calib", help="--int8: generated calibration images."),
    calib_method: str = typer.Option("minmax", "--calib-method", help="--int8: minmax | entropy | percentile."),
    max_miou_drop: float = typer.Option(0.02, "--max-miou-drop", help="--int8: refuse if the mIoU on held-out "
                                        "rendered faces falls by more than this (built-in face labels only)."),
) -> None:
    """Export a UNet to ONNX (dynamic batch, height, width), check it, and compare it with PyTorch."""
    if not int8:
        given = [name for name, v in (("--calib", calib), ("--gan", gan)) if v is not None]
        if given:
            raise typer.BadParameter(f"{' and '.join(given)} only apply with --int8")
        from .onnx_export import export_onnx as run_export

        res = run_export(unet, out, opset=opset, min_agreement=0.999 if min_agreement is None else min_agreement)
        for p in res.parity:
            typer.echo(f"parity vs PyTorch: {p}")
        typer.echo(f"exported {unet} -> {out} (opset {opset}, dynamic batch/height/width in multiples of "
                   f"{res.info.stride}, {res.info.num_classes} classes; metadata carries labels and normalisation)")
        return
    if calib is not None and gan is not None:
        raise typer.BadParameter("give either --calib DIR or --gan CKPT, not both")
    from .quantize import export_int8

    res8 = export_int8(unet, out, calib=calib, gan=gan, n_calib=n_calib, method=calib_method, opset=opset,
                       min_agreement=0.97 if min_agreement is None else min_agreement, max_miou_drop=max_miou_drop)
    typer.echo(f"float32 parity vs PyTorch: {res8.fp32_parity[0]}")
    typer.echo(f"int8 parity vs float32: {res8.parity}")
    typer.echo(f"exported {unet} -> {out} (int8 QDQ, {calib_method} calibration on {res8.calibration})")


@export_app.command("tensorrt")
def export_tensorrt(
    model: Path = typer.Argument(..., help="ONNX file from `partseg export onnx`."),
    out: Path = typer.Option(..., "--out", help="Engine to write (.plan, .engine or .trt); OUT.json sidecar beside."),
    fp16: bool = typer.Option(False, "--fp16", help="FP16 engine (TensorRT 10: builder flag; 11: fp16 ONNX, "
                              "float32 I/O). Parity is reported, not enforced."),
    min_shape: str = typer.Option("1x3x64x64", "--min", help="Smallest input NxCxHxW (H, W multiples of the stride)."),
    opt_shape: str = typer.Option("8x3x256x256", "--opt", help="Input NxCxHxW the kernels are tuned for."),
    max_shape: str = typer.Option("32x3x512x512", "--max", help="Largest input NxCxHxW (larger batches run in "
                                  "chunks; larger images are refused)."),
    workspace_gib: float = typer.Option(4.0, "--workspace-gib", help="Builder workspace memory limit (GiB)."),
    timing_cache: Path = typer.Option(None, "--timing-cache", help="Timing cache file: read if present, saved "
                                      "after the build (faster rebuilds on the same GPU and TensorRT)."),
) -> None:
    """Build a TensorRT engine from an ONNX file, compare it with onnxruntime, and write it with its sidecar."""
    from .tensorrt_runtime import require_tensorrt

    try:
        from export.tensorrt import parse_shape

        for text, option in ((min_shape, "--min"), (opt_shape, "--opt"), (max_shape, "--max")):
            parse_shape(text, option)
    except ValueError as e:
        _fail(str(e), code=2)
    try:
        require_tensorrt()
    except ImportError as e:
        _fail(str(e), code=2)
    from export.tensorrt import build_engine

    try:
        res = build_engine(model, out, fp16=fp16, min_shape=min_shape, opt_shape=opt_shape, max_shape=max_shape,
                           workspace_gib=workspace_gib, timing_cache=timing_cache)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        _fail(str(e))
    for p in res.parity:
        typer.echo(f"parity vs onnxruntime: {p}")
    i = res.info
    how = f" via {res.fp16_method}" if res.fp16_method else ""
    note = "; fp16 agreement is reported, not enforced" if i.precision == "fp16" else ""
    typer.echo(f"built {out} ({i.precision}{how}, TensorRT {i.tensorrt_version}, {i.gpu}; profile "
               f"{'x'.join(map(str, i.min_shape))} .. {'x'.join(map(str, i.max_shape))}) and {res.sidecar.name}; "
               f"worst parity: {res.worst}{note}")


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

    from .serving import package_model

    if (gan is None) != (head is None):
        _fail("the inversion mode needs both --gan and --head")
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
    """Start the HTTP service locally (runs `bentoml serve serve.service:Segmenter`; Ctrl-C stops it)."""
    import os
    import signal
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    if not (root / "serve" / "service.py").is_file():
        _fail(f"no serve/service.py next to the package ({root}): serve from a source checkout, or `bentoml serve` "
              f"a built bento")
    env = dict(os.environ)
    env.setdefault("BENTOML_DO_NOT_TRACK", "true")
    for key, value in (("MODEL", model), ("MAX_BATCH_SIZE", max_batch_size), ("MAX_LATENCY_MS", max_latency_ms),
                       ("INVERSION", None if inversion is None else str(inversion).lower())):
        if value is not None:
            env[f"PARTSEG_{key}"] = str(value)
    if config is not None:
        env["PARTSEG_SERVE_CONFIG"] = str(config.resolve())
    from .serving import ServeConfig

    cfg = ServeConfig.from_env(env)  # settings errors here, before BentoML starts
    os.environ["BENTOML_DO_NOT_TRACK"] = env["BENTOML_DO_NOT_TRACK"]
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        bentoml.models.get(cfg.model_tag)
    except NotFound:
        _fail(f"model {cfg.model_tag} is not in the model store ({os.environ.get('BENTOML_HOME', '~/bentoml')}); "
              f"save one with `partseg serve package`")
    cmd = [sys.executable, "-m", "bentoml", "serve", "serve.service:Segmenter", "--host", host, "--port", str(port),
           "--working-dir", str(root)]
    typer.echo(f"serving {cfg.model_tag} at http://{host}:{port} (batching "
               f"{'up to ' + str(cfg.max_batch_size) if cfg.batching else 'off'}); Ctrl-C stops it")
    proc = subprocess.Popen(cmd, env=env, cwd=root)
    signal.signal(signal.SIGTERM, lambda *_: proc.send_signal(signal.SIGTERM))
    while True:
        try:
            raise typer.Exit(proc.wait())
        except KeyboardInterrupt:  # the terminal sent SIGINT to bentoml too; wait for it to stop
            continue


@app.command("bench", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench(
    ctx: typer.Context,
    name: str = typer.Argument(None, help="Benchmark to run (file name in benchmarks/ without .py); none: list."),
) -> None:
    """List or run the benchmarks in benchmarks/ (extra arguments go to the benchmark); results go to BENCHMARKS.md."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1] / "benchmarks"
    if not root.is_dir():
        _fail(f"no benchmarks/ folder next to the package ({root}): benchmarks run from a source checkout")
    scripts = {p.stem: p for p in sorted(root.glob("*.py")) if p.stem != "report"}
    if name is None:
        for stem, p in scripts.items():
            doc = p.read_text().split('"""')[1].strip().splitlines()[0] if '"""' in p.read_text() else ""
            typer.echo(f"{stem:20s} {doc}")
        return
    if name not in scripts:
        _fail(f"unknown benchmark {name!r}; available: {', '.join(scripts)}")
    raise typer.Exit(subprocess.call([sys.executable, str(scripts[name]), *ctx.args]))


# ---------------------------------------------------------------------------------------------------- demo


@app.command("demo")
def demo(
    out: Path = typer.Option(Path("partseg-demo"), "--out", help="Output folder."),
    gan: str = typer.Option("builtin:faces64", "--gan", help="Generator to use."),
) -> None:
    """Run the pipeline end to end on the built-in default (today: the stages that exist)."""
    from .demo import run_demo

    run_demo(out, gan)


def main() -> None:
    """Console entry point: expected user errors print one clear line, not a traceback."""
    from .gan.rosinality import CheckpointFormatError

    try:
        app()
    except (FileNotFoundError, NotADirectoryError, PermissionError, CheckpointFormatError, ValueError,
            FloatingPointError) as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
