"""`partseg annotate ...`: annotation kits out, annotations in, the browser labeller."""

from __future__ import annotations

from pathlib import Path

import typer

from partseg.cli.common import (
    GAN_HELP,
    LAYERS_HELP,
    MEMORY_HELP,
    Z_DIM_HELP,
    annotate_app,
    check_head_layers,
    check_memory,
    fail,
    layer_list,
    load_gan,
)
from partseg.gan.checkpoints import DEFAULT_GAN


@annotate_app.command("export")
def annotate_export(
    gan: str = typer.Option(DEFAULT_GAN, "--gan", help=GAN_HELP),
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
    from partseg.data.annotations import AnnotationError
    from partseg.fewshot.kit import export_kit
    from partseg.labels import FACES, Labels

    if layers:  # unknown layers, non-4-D or non-square maps: refused now, not at `partseg train`
        load_gan(gan, device, layers, z_dim).source(layer_list(layers))
    try:
        path = export_kit(gan, n, seed, Labels.load(labels) if labels is not None else FACES, out,
                          truncation=truncation, noise_mode=noise_mode, device=device, overwrite=overwrite,
                          z_dim=z_dim)
    except AnnotationError as e:
        fail(str(e))
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

    from partseg.data.annotations import AnnotationError, import_annotations

    try:
        part_map = json.loads(mapping.read_text()) if mapping is not None else None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        fail(f"{mapping}: not valid JSON ({e}); expected {{\"CelebAMask-HQ part\": \"class name\" or null}}")
    if part_map is not None and not isinstance(part_map, dict):
        fail(f"{mapping}: expected a JSON object {{\"CelebAMask-HQ part\": \"class name\" or null}}, got "
              f"{type(part_map).__name__}")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            path = import_annotations(src, fmt, labels, out, kit, images=images, unlabelled=unlabelled,
                                      overlap=overlap, allow_real=allow_real, skip_empty=skip_empty,
                                      mapping=part_map, overwrite=overwrite)
    except AnnotationError as e:
        fail(f"{mapping}: {e}" if mapping is not None and str(e).startswith("CelebAMask-HQ mapping") else str(e))
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
    memory: str = typer.Option("auto", "--memory", help="Suggest: " + MEMORY_HELP),
    verbose: bool = typer.Option(False, "--verbose", help="Log every request."),
) -> None:
    """Browser labeller for an annotation kit: paint masks, saved to the kit on every change. Ctrl-C stops it."""
    from partseg.labeller import run_labeller

    if gan is not None and head is None:
        fail("--gan is only used with --head (the suggest button)")
    if gan is not None and gan.startswith("py:"):
        from partseg.fewshot.learner import FewShotHead

        G = load_gan(gan, "cpu", z_dim=z_dim)
        check_head_layers(FewShotHead.load(head, G), layers)
        gan = G
    elif layers or z_dim:
        fail("--layers and --z-dim apply with --gan py:module:callable")

    def ready(url: str) -> None:
        typer.echo(f"labeller for {kit} at {url}  (Ctrl-C to stop)")

    try:
        run_labeller(kit, port=port, head=head, gan=gan, verbose=verbose, on_ready=ready,
                     memory=check_memory(memory) if head is not None else None)
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))
    except OSError as e:
        fail(f"cannot serve on 127.0.0.1:{port}: {e}")
    typer.echo("stopped")
