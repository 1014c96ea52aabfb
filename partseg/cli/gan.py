"""`partseg gan ...`: train, sample, inspect and convert generators."""

from __future__ import annotations

from pathlib import Path

import typer

from partseg.cli.common import fail, gan_app


def _channel_table(text: str) -> dict[int, int]:
    """'4:128,8:128,...' -> {4: 128, 8: 128, ...}, with a clear error for anything else."""
    try:
        pairs = [item.split(":") for item in text.split(",") if item.strip()]
        return {int(r): int(c) for r, c in pairs}
    except ValueError:
        fail(f"--channels: expected RES:CHANNELS pairs separated by commas (e.g. 4:128,8:128), got {text!r}")


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
    channels_last: bool = typer.Option(True, "--channels-last/--no-channels-last",
                                       help="NHWC layout of weights and images (faster on CPU; may change on resume)."),
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
    from partseg.distributed import init_distributed_from_env
    from partseg.gan.train import TrainConfig, train

    cfg = TrainConfig(data=str(data), resolution=resolution, kimg=kimg, batch=batch, lr=lr, r1_gamma=r1_gamma,
                      pl_weight=pl_weight, mixing=mixing, channel_base=channel_base, channel_max=channel_max,
                      z_dim=z_dim, w_dim=w_dim, n_mlp=n_mlp, mirror=mirror, ckpt_kimg=ckpt_kimg, workers=workers,
                      seed=seed, amp=amp, channels_last=channels_last,
                      channels=_channel_table(channels) if channels else None)
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
    from partseg.data.samples import save_samples
    from partseg.gan import load_generator
    from partseg.gan.sampling import sample
    from partseg.images import image_grid, save_png

    G = load_generator(ckpt, device=device)
    s = sample(G, n, seed=seed, truncation=truncation, noise_mode=noise_mode, batch=batch, progress=True)
    files = save_samples(s, out, generator=str(ckpt))
    save_png(image_grid(s.images), out / "grid.png")
    typer.echo(f"wrote {len(files)} images, latents and grid.png to {out}")


@gan_app.command("info")
def gan_info(ckpt: str = typer.Argument(..., help="Generator: file, run folder or builtin:NAME.")) -> None:
    """Print a generator's architecture as read from its checkpoint."""
    from partseg.gan import load_generator

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

    from partseg.gan import load_generator, save_generator

    if out.suffix != ".safetensors":
        fail(f"--out must name a .safetensors file, got {out}")
    G = load_generator(src)
    dtype = torch.float16 if fp16 else torch.float32
    path = save_generator(G, out, dtype=dtype, extra={"converted_from": src.name})
    n_params = sum(p.numel() for p in G.parameters())
    typer.echo(f"converted {src} -> {path}: {G.resolution} px, z_dim {G.z_dim}, w_dim {G.w_dim}, n_mlp "
               f"{G.cfg.n_mlp}, {n_params / 1e6:.2f} M parameters, {str(dtype).removeprefix('torch.')}")
