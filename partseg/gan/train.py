"""StyleGAN2 training: non-saturating logistic loss, lazy R1, style mixing, path-length regularisation, G EMA.

Follows the StyleGAN2 / stylegan2-ada recipe (Karras et al. 2020) at any scale:
- G: softplus(-D(G(z))), style mixing with probability `mixing`; every `pl_every` steps a path-length penalty
  on a reduced batch. D: softplus(D(fake)) + softplus(-D(real)); every `r1_every` steps an R1 penalty.
- Lazy regularisation: the optimiser of a regularised network gets lr * c and betas ** c with c = k / (k + 1).
- An exponential moving average of G (`G_ema`) is what gets sampled, checkpointed and exported.

A run folder holds `config.json`, `checkpoint.pt` (everything needed to resume, loadable with
`torch.load(weights_only=True)`), `generator.safetensors` (G_ema), `grid-stepNNNNNN.png` per checkpoint and
`log.jsonl`. Re-running the same command resumes; the random stream is re-seeded from (seed, rank, step) at every
step and the data stream is indexed by image position, so a resumed run continues exactly as an uninterrupted
one would have. Under torchrun each process trains on batch / world images and gradients are averaged.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from partseg.atomic import atomic_torch_save, atomic_write_text
from partseg.distributed import Dist
from partseg.gan.checkpoints import TRAIN_FORMAT, save_generator
from partseg.gan.data import ImageFolder, infinite_batches
from partseg.gan.discriminator import Discriminator
from partseg.gan.stylegan2 import Generator, GeneratorConfig, channel_table
from partseg.images import image_grid, save_png
from partseg.precision import AMP_MODES, resolve_amp
from partseg.runs import StopOnSignal, clean_stale_tmp, load_checkpoint, read_log, refuse_other_settings, write_log

CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"
@dataclass
class TrainConfig:
    """Everything that defines a run. Defaults follow stylegan2-ada's 'auto' configuration."""

    data: str = ""
    resolution: int = 64
    batch: int = 0  # total over all processes; 0 -> min(4096 // resolution, 32)
    kimg: float = 1000.0  # training length in thousands of real images shown to D
    z_dim: int = 512
    w_dim: int = 512
    n_mlp: int = 2
    channel_base: int = 16384
    channel_max: int = 512
    lr: float = 0.0025
    beta1: float = 0.0
    beta2: float = 0.99
    r1_gamma: float = -1.0  # < 0 -> 0.0002 * resolution**2 / batch
    r1_every: int = 16
    pl_weight: float = 2.0  # 0 disables path-length regularisation
    pl_every: int = 4
    pl_batch_shrink: int = 2
    pl_decay: float = 0.01
    mixing: float = 0.9
    ema_kimg: float = -1.0  # < 0 -> batch * 10 / 32
    ema_rampup: float = 0.05
    mbstd_group: int = 4
    mirror: bool = True
    seed: int = 0
    ckpt_kimg: float = 10.0  # checkpoint (and sample grid) interval
    log_steps: int = 50
    grid: int = 32  # images in each sample grid
    workers: int = 2  # DataLoader processes
    amp: str = "auto"  # bfloat16 autocast of the G/D passes: auto (CUDA, or a CPU with bf16 units) | bf16 | off
    channels_last: bool = True  # NHWC weights and images: 1.18x per step at 128 px on 1 CPU thread (BENCHMARKS.md)
    channels: dict[int, int] | None = None  # explicit channel table; None -> channel_base / channel_max

    # fields that may change between a run and its resumption; everything else must match
    RESUMABLE_CHANGES = ("data", "kimg", "ckpt_kimg", "log_steps", "grid", "workers", "amp", "channels_last")

    def __post_init__(self) -> None:
        GeneratorConfig(resolution=self.resolution)  # validates the resolution
        if isinstance(self.amp, bool):  # run folders written before amp took a mode
            self.amp = "auto" if self.amp else "off"
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}")
        if self.channels:
            self.channels = {int(k): int(v) for k, v in self.channels.items()}
            GeneratorConfig(resolution=self.resolution, channels=self.channels)  # every resolution present
        if self.resolution < 32:
            raise ValueError(f"training resolution must be at least 32, got {self.resolution}")
        if self.batch <= 0:
            self.batch = min(4096 // self.resolution, 32)
        if self.r1_gamma < 0:
            self.r1_gamma = 0.0002 * self.resolution**2 / self.batch
        if self.ema_kimg < 0:
            self.ema_kimg = self.batch * 10 / 32
        for name in ("r1_every", "pl_every", "pl_batch_shrink", "log_steps", "mbstd_group"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.mixing <= 1:
            raise ValueError(f"mixing must be a probability in [0, 1], got {self.mixing}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def generator_config(self) -> GeneratorConfig:
        channels = self.channels or channel_table(self.resolution, self.channel_base, self.channel_max)
        return GeneratorConfig(resolution=self.resolution, z_dim=self.z_dim, w_dim=self.w_dim, n_mlp=self.n_mlp,
                               channels=channels)

    @property
    def total_steps(self) -> int:
        return math.ceil(self.kimg * 1000 / self.batch)

    @property
    def ckpt_steps(self) -> int:
        return max(1, round(self.ckpt_kimg * 1000 / self.batch))


def adam_for(params, cfg: TrainConfig, reg_every: int | None) -> torch.optim.Adam:
    """Adam with the lazy-regularisation correction: lr * c, betas ** c, c = k / (k + 1)."""
    c = reg_every / (reg_every + 1) if reg_every else 1.0
    return torch.optim.Adam(params, lr=cfg.lr * c, betas=(cfg.beta1**c, cfg.beta2**c), eps=1e-8)


def _step_seed(seed: int, rank: int, step: int) -> int:
    return (seed * 1_000_003 + rank * 7919 + step * 104_729) % (2**63)


def train(cfg: TrainConfig, run: str | os.PathLike, device: str | torch.device | None = None,
          stop_at_step: int | None = None, progress: bool = True) -> dict:
    """Train (or resume) a StyleGAN2 run in folder `run`; returns a summary dict.

    stop_at_step: stop early (writing a checkpoint) after that many steps, as an interrupt would.
    """
    run = Path(run)
    dd = Dist()
    if device is None:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if cfg.batch % dd.world:
        raise ValueError(f"batch {cfg.batch} must be divisible by the number of processes ({dd.world})")
    per_rank = cfg.batch // dd.world
    use_amp = resolve_amp(cfg.amp, device)
    dataset = ImageFolder(cfg.data, cfg.resolution, mirror=cfg.mirror)

    torch.manual_seed(cfg.seed)
    g_cfg = cfg.generator_config()
    G = Generator(g_cfg).to(device).train()
    D = Discriminator(cfg.resolution, g_cfg.channels, mbstd_group=min(cfg.mbstd_group, per_rank)).to(device)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    G_opt = adam_for(G.parameters(), cfg, cfg.pl_every if cfg.pl_weight > 0 else None)
    D_opt = adam_for(D.parameters(), cfg, cfg.r1_every)
    pl_mean = torch.zeros((), device=device)
    step = 0

    ckpt_path = run / CHECKPOINT
    resumed = ckpt_path.exists()
    if resumed:
        ckpt = load_checkpoint(ckpt_path, TRAIN_FORMAT, "GAN training", device)  # one-line errors naming it
        refuse_other_settings(run, ckpt["train_config"], cfg.to_dict(), TrainConfig.RESUMABLE_CHANGES,
                              hint=f"use a new --out folder or the run's settings (see {run / 'config.json'})")
        G.load_state_dict(ckpt["G"])
        D.load_state_dict(ckpt["D"])
        G_ema.load_state_dict(ckpt["G_ema"])
        G_opt.load_state_dict(ckpt["G_opt"])
        D_opt.load_state_dict(ckpt["D_opt"])
        pl_mean = ckpt["pl_mean"].to(device)
        step = int(ckpt["step"])
        del ckpt
    dd.broadcast_(G)
    dd.broadcast_(D)
    dd.broadcast_(G_ema)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    for m in (G, D, G_ema):  # a layout only: the same values, and checkpoints load into either
        m.to(memory_format=fmt)

    is_main = dd.rank == 0
    log_lines: list[str] = []
    if is_main:
        run.mkdir(parents=True, exist_ok=True)
        clean_stale_tmp(run)  # half-written files of a run killed mid-write; the real ones are intact
        atomic_write_text(json.dumps(cfg.to_dict(), indent=1), run / "config.json")
        log_lines = read_log(run / LOG, step)  # drop entries written after the checkpoint we resume from
        write_log(run / LOG, log_lines)

    grid_z = torch.randn(min(cfg.grid, 64), g_cfg.z_dim, generator=torch.Generator().manual_seed(cfg.seed + 1))

    def save_checkpoint() -> None:
        if not is_main:
            return
        state = {
            "format": TRAIN_FORMAT, "format_version": 1, "train_config": cfg.to_dict(), "g_config": g_cfg.to_dict(),
            "d_config": {"resolution": cfg.resolution, "mbstd_group": D.mbstd_group},
            "step": step, "nimg": step * cfg.batch, "pl_mean": pl_mean.detach().cpu(),
            "G": G.state_dict(), "D": D.state_dict(), "G_ema": G_ema.state_dict(),
            "G_opt": G_opt.state_dict(), "D_opt": D_opt.state_dict(),
        }
        atomic_torch_save(state, ckpt_path)
        write_log(run / LOG, log_lines)
        save_generator(G_ema, run / "generator.safetensors", extra={"step": str(step)})
        with torch.no_grad():
            imgs = torch.cat([G_ema(grid_z[i:i + 16].to(device)).float().cpu() for i in range(0, len(grid_z), 16)])
        save_png(image_grid(imgs, cols=8), run / f"grid-step{step:07d}.png")

    def mixed_ws(z: torch.Tensor) -> torch.Tensor:
        """Mapping with style mixing: with probability `mixing` the layers from a random cutoff use a 2nd z."""
        w = G.mapping(z)
        ws = w[:, None].repeat(1, G.num_ws, 1)
        if cfg.mixing > 0 and torch.rand(()) < cfg.mixing:
            cutoff = int(torch.randint(1, G.num_ws, ()))
            ws[:, cutoff:] = G.mapping(torch.randn_like(z))[:, None]
        return ws

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp)

    batches = infinite_batches(dataset, per_rank, cfg.seed, start=step * cfg.batch, rank=dd.rank, world=dd.world,
                               workers=cfg.workers)
    end = cfg.total_steps if stop_at_step is None else min(cfg.total_steps, stop_at_step)
    bar = tqdm(total=cfg.total_steps, initial=step, disable=not (is_main and progress), desc="gan train",
               bar_format="{l_bar}{bar}| step {n}/{total} [{elapsed}<{remaining}{postfix}]", dynamic_ncols=True)
    window: dict[str, list[float]] = {}
    t_window, steps_window = time.time(), 0
    start_step = step
    stopped_early = False
    if is_main and progress:
        tqdm.write(f"{'resuming' if resumed else 'starting'} {run} at step {step} of {cfg.total_steps} "
                   f"({len(dataset)} images incl. mirrors, batch {cfg.batch} on {dd.world} process(es), {device}, "
                   f"{'bf16 autocast' if use_amp else 'float32'}{', channels_last' if cfg.channels_last else ''})")

    with StopOnSignal() as stop:
        while step < end:
            torch.manual_seed(_step_seed(cfg.seed, dd.rank, step))
            real = next(batches).to(device, non_blocking=True).contiguous(memory_format=fmt)
            stats: dict[str, float] = {}

            # --- G main: non-saturating loss; also track the W mean used for truncation
            G.requires_grad_(True)
            D.requires_grad_(False)
            z = torch.randn(per_rank, g_cfg.z_dim, device=device)
            with autocast():
                ws = mixed_ws(z)
                fake_logits = D(G.synthesis(ws, noise_mode="random"))
                loss_G = F.softplus(-fake_logits.float()).mean()
            G_opt.zero_grad(set_to_none=True)
            loss_G.backward()
            dd.average_grads(list(G.parameters()))
            G_opt.step()
            with torch.no_grad():
                G.mean_w.lerp_(dd.mean(ws[:, 0].detach().float().mean(0)), 1 - 0.995)
            stats["loss_G"] = loss_G.item()

            # --- G reg: path-length penalty, lazily
            if cfg.pl_weight > 0 and step % cfg.pl_every == 0:
                n = max(per_rank // cfg.pl_batch_shrink, 1)
                ws = mixed_ws(torch.randn(n, g_cfg.z_dim, device=device))
                img = G.synthesis(ws, noise_mode="random")
                pl_noise = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
                (grad,) = torch.autograd.grad((img * pl_noise).sum(), ws, create_graph=True)
                lengths = grad.square().sum(2).mean(1).sqrt()
                pl_mean = pl_mean.lerp(dd.mean(lengths.mean().detach()), cfg.pl_decay)
                penalty = (lengths - pl_mean).square()
                G_opt.zero_grad(set_to_none=True)
                (penalty.mean() * cfg.pl_weight * cfg.pl_every).backward()
                dd.average_grads(list(G.parameters()))
                G_opt.step()
                stats["pl_penalty"] = penalty.mean().item()

            # --- G EMA (with ramp-up: early on, the average forgets faster)
            with torch.no_grad():
                ema_nimg = cfg.ema_kimg * 1000
                if cfg.ema_rampup:
                    ema_nimg = min(ema_nimg, (step + 1) * cfg.batch * cfg.ema_rampup)
                beta = 0.5 ** (cfg.batch / max(ema_nimg, 1e-8))
                for p_ema, p in zip(G_ema.parameters(), G.parameters(), strict=True):
                    p_ema.copy_(p.detach().lerp(p_ema, beta))
                for b_ema, b in zip(G_ema.buffers(), G.buffers(), strict=True):
                    b_ema.copy_(b)

            # --- D main: logistic loss on fakes and reals
            G.requires_grad_(False)
            D.requires_grad_(True)
            with torch.no_grad(), autocast():
                fake = G.synthesis(mixed_ws(torch.randn(per_rank, g_cfg.z_dim, device=device)), noise_mode="random")
            with autocast():
                fake_logits = D(fake).float()
                real_logits = D(real).float()
            loss_D = F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()
            D_opt.zero_grad(set_to_none=True)
            loss_D.backward()
            dd.average_grads(list(D.parameters()))
            D_opt.step()
            stats.update(loss_D=loss_D.item(), D_real=real_logits.mean().item(), D_fake=fake_logits.mean().item())

            # --- D reg: R1 penalty on reals, lazily
            if cfg.r1_gamma > 0 and step % cfg.r1_every == 0:
                real_ = real.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(D(real_).sum(), real_, create_graph=True)
                penalty = grad.square().sum(dim=(1, 2, 3))
                D_opt.zero_grad(set_to_none=True)
                (penalty.mean() * (cfg.r1_gamma / 2) * cfg.r1_every).backward()
                dd.average_grads(list(D.parameters()))
                D_opt.step()
                stats["r1_penalty"] = penalty.mean().item()

            for k, v in stats.items():
                if not math.isfinite(v):
                    raise FloatingPointError(f"{k} became {v} at step {step}; lower --lr or raise --r1-gamma "
                                             f"(the last good checkpoint is {ckpt_path})")
                window.setdefault(k, []).append(v)
            step += 1
            steps_window += 1
            bar.update(1)

            if step % cfg.log_steps == 0 or step == end:
                dt = time.time() - t_window
                rec = {"step": step, "kimg": round(step * cfg.batch / 1000, 3),
                       "sec_per_kimg": round(dt / (steps_window * cfg.batch / 1000), 3),
                       "precision": "bf16" if use_amp else "fp32", "device": device.type,
                       "layout": "channels_last" if cfg.channels_last else "contiguous",
                       **{k: round(sum(v) / len(v), 5) for k, v in window.items()}}
                bar.set_postfix_str(f"{rec['kimg']:.2f} kimg, G {rec['loss_G']:.3f} D {rec['loss_D']:.3f}, "
                                    f"{rec['sec_per_kimg']:.1f} s/kimg")
                if is_main:
                    log_lines.append(json.dumps(rec))
                    write_log(run / LOG, log_lines)
                window, t_window, steps_window = {}, time.time(), 0

            stop_now = dd.any(stop.requested, device)  # every rank must leave the loop together
            if step % cfg.ckpt_steps == 0 or step == end or stop_now:
                if dd.world > 1:  # replicas must never drift apart; check before trusting the checkpoint
                    sync = dd.check_replicas(step, G, D)
                    if is_main:
                        log_lines.append(json.dumps(sync))
                save_checkpoint()
            if stop_now:
                stopped_early = True
                break
    bar.close()
    if dd.on:
        dist.barrier()
    return {"run": str(run), "rank": dd.rank, "step": step, "total_steps": cfg.total_steps, "resumed": resumed,
            "start_step": start_step, "stopped_early": stopped_early or step < cfg.total_steps}
