"""`partseg distill`: auto-shot distillation of a head into a UNet."""

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
    load_gan,
)
from partseg.gan.checkpoints import DEFAULT_GAN


@app.command("distill")
def distill(
    head: Path = typer.Option(..., "--head", help="Head file from `partseg train`."),
    gan: str = typer.Option(DEFAULT_GAN, "--gan", help="The generator the head was trained on. " + GAN_HELP),
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
    pool: int = typer.Option(0, "--pool", help="Render this many pairs (per process) once and draw every later "
                             "batch from them, freshly augmented: faster on a CPU, fewer distinct images; 0: fresh "
                             "pairs every step."),
    class_weights: str = typer.Option("none", "--class-weights", help="Weight the loss by each class's inverse "
                                      "pixel frequency in the head's labels (none | sqrt | inverse): small parts "
                                      "sooner."),
    crop: int = typer.Option(0, "--crop", help="Train on a random C x C window of each augmented pair (cheaper "
                             "steps, same receptive field); 0: whole images."),
    ckpt_every: int = typer.Option(0, "--ckpt-every", help="Steps between checkpoints (a re-run resumes from the "
                                   "last one); 0: min(100, steps / 10)."),
    memory: str = typer.Option("auto", "--memory", help="Labelling pairs with the head: " + MEMORY_HELP),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option(None, "--device", help="Default: cuda (LOCAL_RANK under torchrun) if present."),
) -> None:
    """Auto-shot: train a UNet on generated images labelled by a head (re-run to resume).

    Multi-GPU: `torchrun --nproc_per_node N -m partseg.cli distill ...` (each process makes batch / N pairs).
    """
    import copy
    import os

    import torch

    from partseg.distill.autoshot import DistillConfig
    from partseg.distill.autoshot import distill as run_distill
    from partseg.distributed import init_distributed_from_env
    from partseg.fewshot.learner import FewShotHead

    init_distributed_from_env(device)
    if device in (None, "cuda") and torch.cuda.is_available():
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    G = load_gan(gan, device or "cpu", z_dim=z_dim)
    h = FewShotHead.load(head, G)
    h.memory = check_memory(memory)
    check_head_layers(h, layers)
    validate = None
    if val_renders:
        from partseg.eval.oracle import evaluate_on_renders

        def validate(model):  # the renders are CPU tensors: score a CPU copy of the model
            return evaluate_on_renders(copy.deepcopy(model).cpu(), n=val_renders, size=G.resolution).miou

    cfg = DistillConfig(steps=steps, batch=batch, confidence=confidence, seed=seed, pool=pool, crop=crop,
                        class_weights=class_weights, ckpt_every=ckpt_every)
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
