"""GAN inversion: find the latents (W or W+, plus noise maps) whose rendering reproduces a given image.

This is the accurate mode of segmenting a real image: invert it, then read the head on the features of the
inverted latents. The objective needs no downloaded weights: per-pixel L2 plus a multi-scale structural
term (1 - SSIM at full, 1/2 and 1/4 resolution), so both colour and local structure are matched. As in the
StyleGAN2 projector, the optimised noise maps are regularised towards white noise (their autocorrelation at
every scale is pushed to zero and they are renormalised each step), so detail goes into the latents rather
than into the noise, and the learning rate ramps up then down with a cosine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from partseg.gan.stylegan2 import Generator


@dataclass
class InversionConfig:
    steps: int = 300
    lr: float = 0.05
    w_plus: bool = True
    optimise_noise: bool = True
    noise_reg: float = 1e4  # autocorrelation penalty weight of the noise maps (StyleGAN2 projector: 1e5)
    ssim_weight: float = 1.0
    w_noise: float = 0.05  # exploration noise on w early on, as a fraction of the W spread
    rampup: float = 0.05
    rampdown: float = 0.25
    seed: int = 0


@dataclass
class Inversion:
    ws: torch.Tensor  # [N, num_ws, w_dim]
    noise: list[torch.Tensor]  # per layer [N, 1, r, r]
    images: torch.Tensor  # reconstruction [N, 3, H, W]
    psnr: torch.Tensor  # [N] dB, images in [-1, 1] taken as range 2
    losses: list[float]


def _gaussian_window(size: int = 7, sigma: float = 1.5, device=None) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32, device=device) - size // 2
    g = torch.exp(-x.square() / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean SSIM per image [N] of images in [-1, 1] (Gaussian 7x7 window, per channel, valid region only).

    Computed on intensities shifted to [0, 1]: SSIM's luminance term assumes non-negative values, and on signed
    data an image and its negative would score as similar."""
    a, b, data_range = (a + 1) / 2, (b + 1) / 2, 1.0
    c = a.shape[1]
    win = _gaussian_window(device=a.device).expand(c, 1, -1, -1)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, win, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a.square()
    var_b = blur(b * b) - mu_b.square()
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a.square() + mu_b.square() + c1) * (var_a + var_b + c2))
    return s.mean(dim=(1, 2, 3))


def reconstruction_loss(x: torch.Tensor, target: torch.Tensor, ssim_weight: float = 1.0) -> torch.Tensor:
    """Per-image loss [N]: L2 + ssim_weight * mean over 3 scales of (1 - SSIM)."""
    loss = (x - target).square().mean(dim=(1, 2, 3))
    if ssim_weight:
        structural = 0
        for _ in range(3):
            if min(x.shape[-2:]) < 11:
                break
            structural = structural + (1 - ssim(x, target))
            x, target = F.avg_pool2d(x, 2), F.avg_pool2d(target, 2)
        loss = loss + ssim_weight * structural / 3
    return loss


def psnr(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    mse = (x.clamp(-1, 1) - target).square().mean(dim=(1, 2, 3))
    return 10 * torch.log10(4.0 / mse.clamp_min(1e-10))


def noise_regularisation(noise: list[torch.Tensor]) -> torch.Tensor:
    """Sum over layers and scales of the squared autocorrelation at 1-pixel shifts (zero for white noise)."""
    total = 0
    for n in noise:
        while True:
            total = total + (n * n.roll(1, dims=3)).mean().square() + (n * n.roll(1, dims=2)).mean().square()
            if n.shape[2] <= 8:
                break
            n = F.avg_pool2d(n, 2) * 2
    return total


def prepare_targets(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Resize [N, 3, h, w] in [-1, 1] to the generator's resolution (area down, bilinear up)."""
    if images.shape[-2:] == (resolution, resolution):
        return images
    if images.shape[-1] > resolution:
        return F.interpolate(images, size=(resolution, resolution), mode="area")
    return F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False)


def invert(G: Generator, images: torch.Tensor, cfg: InversionConfig | None = None,
           progress: bool = False) -> Inversion:
    """Optimise latents (and noise) so that G reproduces `images` ([N, 3, H, W] in [-1, 1]), all at once."""
    G = _inversion_generator(G)
    cfg = cfg or InversionConfig()
    dev = G.mean_w.device
    target = prepare_targets(images.to(dev).float(), G.resolution)
    n = target.shape[0]
    gen = torch.Generator().manual_seed(cfg.seed)
    with torch.no_grad():  # spread of W, for the exploration noise
        w_samples = G.mapping(torch.randn(2048, G.z_dim, generator=gen).to(dev))
        w_std = (w_samples - G.mean_w).square().sum(1).mean().sqrt()
    w0 = G.mean_w.detach()[None, None].repeat(n, G.num_ws if cfg.w_plus else 1, 1)
    w_opt = w0.clone().requires_grad_(True)
    res = G.synthesis.layer_resolutions()
    noise = [torch.randn(n, 1, res[name], res[name], generator=gen).to(dev) for name in G.synthesis.layer_names]
    params = [w_opt]
    if cfg.optimise_noise:
        for t in noise:
            t.requires_grad_(True)
        params += noise
    opt = torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.999))
    losses = []
    G.requires_grad_(False)
    for step in tqdm(range(cfg.steps), desc="invert", disable=not progress):
        t = step / max(cfg.steps - 1, 1)
        lr_ramp = min(1.0, (1 - t) / cfg.rampdown) if cfg.rampdown else 1.0
        lr_ramp = 0.5 - 0.5 * math.cos(lr_ramp * math.pi)
        lr_ramp = lr_ramp * min(1.0, t / cfg.rampup) if cfg.rampup else lr_ramp
        for g in opt.param_groups:
            g["lr"] = cfg.lr * lr_ramp
        w_noise_scale = float(w_std) * cfg.w_noise * max(0.0, 1 - t / 0.75) ** 2
        ws = w_opt + torch.randn(w_opt.shape, generator=gen).to(dev) * w_noise_scale
        if not cfg.w_plus:
            ws = ws.expand(-1, G.num_ws, -1)
        x = G.synthesis(ws, noise=noise)
        per_image = reconstruction_loss(x, target, cfg.ssim_weight)
        loss = per_image.sum()
        if cfg.optimise_noise and cfg.noise_reg:
            loss = loss + cfg.noise_reg * noise_regularisation(noise) * n
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(per_image.detach().mean()))
        if cfg.optimise_noise:
            with torch.no_grad():  # keep every noise map zero-mean, unit-variance
                for t_ in noise:
                    t_.sub_(t_.mean(dim=(1, 2, 3), keepdim=True)).div_(t_.square().mean(dim=(1, 2, 3), keepdim=True)
                                                                      .sqrt().clamp_min(1e-8))
    with torch.no_grad():
        ws = w_opt.detach() if cfg.w_plus else w_opt.detach().expand(-1, G.num_ws, -1).contiguous()
        noise = [t_.detach() for t_ in noise]
        recon = G.synthesis(ws, noise=noise)
    return Inversion(ws, noise, recon, psnr(recon, target), losses)


def estimate_inversion_seconds(G: Generator, n: int, cfg: InversionConfig | None = None) -> float:
    """Rough time to invert n images here: two timed optimisation passes of the batch, times the step count."""
    import time

    G = _inversion_generator(G)
    cfg = cfg or InversionConfig()
    dev = G.mean_w.device
    ws = G.mean_w.detach()[None, None].repeat(n, G.num_ws, 1).requires_grad_(True)
    times = []
    for _ in range(2):  # the first pass also pays one-off allocation costs
        t0 = time.perf_counter()
        G.synthesis(ws, noise_mode="const").square().mean().backward()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times.append(time.perf_counter() - t0)
    return min(times) * cfg.steps * 1.3  # + the reconstruction loss and noise regularisation


def _inversion_generator(G: object) -> Generator:
    """Our StyleGAN2 as is; any other generator through the interface, which refuses those without inversion."""
    if isinstance(G, Generator):
        return G
    from partseg.gan.interface import as_fewshot_gan

    return as_fewshot_gan(G).inversion_generator()
