"""GAN inversion lowers reconstruction error; its loss pieces behave as they should."""

from __future__ import annotations

import torch

from partseg.fewshot.invert import InversionConfig, invert, noise_regularisation, reconstruction_loss, ssim
from partseg.gan.sampling import sample


def test_ssim_and_loss_basics():
    a = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.allclose(ssim(a, a), torch.ones(2), atol=1e-5)
    assert (ssim(a, -a) < 0.5).all()
    assert torch.allclose(reconstruction_loss(a, a), torch.zeros(2), atol=1e-5)


def test_noise_regularisation_prefers_white_noise():
    white = [torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))]
    smooth = [torch.nn.functional.interpolate(torch.randn(1, 1, 8, 8), size=32, mode="bilinear")]
    assert noise_regularisation(white) < 0.1 * noise_regularisation(smooth)


def test_inversion_reconstructs_a_generated_image(tiny_G):
    tiny_G.compute_mean_w(n=512)  # inversion starts from the W mean
    target = sample(tiny_G, 2, seed=3, noise_mode="random").images
    target = target / target.abs().amax(dim=(1, 2, 3), keepdim=True)  # an untrained G's range is arbitrary
    start = invert(tiny_G, target, InversionConfig(steps=1, lr=1e-9))
    done = invert(tiny_G, target, InversionConfig(steps=80))
    assert done.losses[-1] < 0.5 * done.losses[0]
    assert (done.psnr > start.psnr + 1).all()
    assert done.ws.shape == (2, tiny_G.num_ws, tiny_G.w_dim) and len(done.noise) == len(tiny_G.synthesis.layer_names)
