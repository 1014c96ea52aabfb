"""The command groups and what every command shares: one-line errors, generator loading, option help."""

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


def fail(msg: str, code: int = 1) -> NoReturn:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


GAN_HELP = "Generator: file, run folder, builtin:NAME, or py:module:callable (your own nn.Module z -> image)."
LAYERS_HELP = "py: generators: submodules to read features from, e.g. main.2,main.5 (default: the head's)."
Z_DIM_HELP = "py: generators: latent size (default: the first layer's input channels/features)."
MEMORY_HELP = ("GB the feature maps may take (e.g. 6), or auto: half the available memory. Whole maps when they "
               "fit, else crops / sampled pixels (train) and tiles (prediction), with the same results.")


def layer_list(layers: str | None) -> list[str] | None:
    return [n.strip() for n in layers.split(",") if n.strip()] if layers else None


def load_gan(gan: str, device: str, layers: str | None = None, z_dim: int | None = None):
    """Any generator through the few-shot interface (partseg.gan.interface); errors name the option."""
    from partseg.gan.interface import load_fewshot_gan

    return load_fewshot_gan(gan, device=device, layers=layer_list(layers), z_dim=z_dim)


def check_memory(memory: str) -> str:
    """--memory as given, once it reads as GB or 'auto' (a bad value fails here, not in the middle of a run)."""
    from partseg.fewshot.memory import budget_bytes

    try:
        budget_bytes(memory)
    except ValueError as e:
        fail(f"--memory: {e}")
    return memory


def check_head_layers(h, layers: str | None) -> None:
    """--layers given with a head must be the head's (its weights fit those features only)."""
    if layers and layer_list(layers) != list(h.meta["layers"]):
        fail(f"--layers {layers} differs from the layers the head was trained on ({','.join(h.meta['layers'])}); "
              f"leave --layers out to use the head's")


def report_failed(failed: list[tuple[Path, str]], total: int) -> None:
    """List the images that could not be segmented (one line each) and exit non-zero if there were any."""
    if not failed:
        return
    for f, why in failed:
        typer.secho(f"  {f}: {why}", fg=typer.colors.RED, err=True)
    fail(f"{len(failed)} of {total} images could not be segmented (listed above and in predictions.json)")
