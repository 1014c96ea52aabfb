"""Contract tests for our StyleGAN2: shapes, determinism, gradients, truncation, mixing, config checks."""

from __future__ import annotations

import pytest
import torch

from partseg.gan import Discriminator, Generator, GeneratorConfig, channel_table, rosinality_channel_table
from partseg.gan.ops import fir_kernel, upfirdn2d

from .conftest import tiny_config


def test_output_shape_and_num_ws(tiny_G: Generator) -> None:
    z = torch.randn(3, tiny_G.z_dim)
    w = tiny_G.mapping(z)
    assert w.shape == (3, tiny_G.w_dim)
    assert tiny_G.num_ws == 2 * 5 - 2 == 8
    img = tiny_G.synthesis(w[:, None].repeat(1, tiny_G.num_ws, 1))
    assert img.shape == (3, 3, 32, 32)
    assert torch.isfinite(img).all()
    # W input broadcasts to every layer and equals the explicit W+ form
    torch.testing.assert_close(tiny_G.synthesis(w), img)


@pytest.mark.parametrize("res", [32, 64, 128])
def test_resolutions_and_layer_names(res: int) -> None:
    G = Generator(GeneratorConfig(resolution=res, z_dim=16, w_dim=16, n_mlp=1, channels=channel_table(res, 256, 16)))
    img, acts = G.synthesis(torch.randn(1, G.num_ws, 16), return_activations=True)
    assert img.shape[-1] == res
    names = G.synthesis.layer_names
    assert names[0] == "b4.conv1" and names[1] == "b8.conv0" and names[-1] == f"b{res}.conv1"
    assert len(names) == G.num_ws - 1  # every conv has a latent; the last ToRGB takes the last one
    for n, a in acts.items():
        r = G.synthesis.layer_resolutions()[n]
        assert a.shape[-2:] == (r, r) and a.shape[1] == G.synthesis.layer_channels()[n]


def test_const_noise_is_deterministic_random_noise_is_not(tiny_G: Generator) -> None:
    ws = tiny_G.mapping(torch.randn(2, tiny_G.z_dim))
    a, b = tiny_G.synthesis(ws), tiny_G.synthesis(ws)
    assert torch.equal(a, b)
    r1, r2 = tiny_G.synthesis(ws, noise_mode="random"), tiny_G.synthesis(ws, noise_mode="random")
    assert not torch.equal(r1, r2)
    assert not torch.equal(tiny_G.synthesis(ws, noise_mode="none"), a)


def test_seed_determinism() -> None:
    torch.manual_seed(1)
    G1 = Generator(tiny_config())
    torch.manual_seed(1)
    G2 = Generator(tiny_config())
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(5))
    assert torch.equal(G1(z), G2(z))


def test_gradients_reach_w_and_noise(tiny_G: Generator) -> None:
    ws = tiny_G.mapping(torch.randn(2, tiny_G.z_dim)).detach()[:, None].repeat(1, tiny_G.num_ws, 1)
    ws.requires_grad_(True)
    res = tiny_G.synthesis.layer_resolutions()
    noise = [torch.randn(2, 1, res[n], res[n], requires_grad=True) for n in tiny_G.synthesis.layer_names]
    tiny_G.synthesis(ws, noise=noise).square().mean().backward()
    assert ws.grad is not None and ws.grad.abs().sum() > 0
    assert all(n.grad is not None and n.grad.abs().sum() > 0 for n in noise)
    # every layer's latent matters
    assert (ws.grad.abs().sum(dim=(0, 2)) > 0).all()


def test_every_generator_parameter_gets_a_gradient(tiny_G: Generator) -> None:
    img = tiny_G(torch.randn(2, tiny_G.z_dim), noise_mode="random")
    img.square().mean().backward()
    for name, p in tiny_G.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_discriminator_contract() -> None:
    torch.manual_seed(0)
    D = Discriminator(32, channels={4: 32, 8: 32, 16: 16, 32: 16})
    x = torch.randn(4, 3, 32, 32, requires_grad=True)
    logits = D(x)
    assert logits.shape == (4, 1) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in D.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_minibatch_stddev_sees_the_batch() -> None:
    torch.manual_seed(0)
    D = Discriminator(32, channels={4: 16, 8: 16, 16: 16, 32: 16}).eval()
    x = torch.randn(4, 3, 32, 32)
    same = x[:1].repeat(4, 1, 1, 1)
    # identical samples have zero spread, so D's view of the first sample changes with its batch mates
    assert not torch.allclose(D(x)[:1], D(torch.cat([x[:1], x[:1], x[:1], x[:1]]))[:1])
    assert torch.allclose(D(same)[0], D(same)[1])


def test_truncation_and_mixing(tiny_G: Generator) -> None:
    tiny_G.compute_mean_w(n=512)
    z = torch.randn(2, tiny_G.z_dim)
    w = tiny_G.mapping(z)
    wt = tiny_G.ws_from_z(z, truncation=0.0)
    torch.testing.assert_close(wt, tiny_G.mean_w.expand_as(wt))
    torch.testing.assert_close(tiny_G.ws_from_z(z, truncation=0.5)[:, 0],
                               tiny_G.mean_w + 0.5 * (w - tiny_G.mean_w))
    z2 = torch.randn(2, tiny_G.z_dim)
    ws = tiny_G.ws_from_z(z, z2=z2, inject_index=3)
    torch.testing.assert_close(ws[:, :3], w[:, None].expand(-1, 3, -1))
    torch.testing.assert_close(ws[:, 3:], tiny_G.mapping(z2)[:, None].expand(-1, tiny_G.num_ws - 3, -1))
    with pytest.raises(ValueError, match="inject_index"):
        tiny_G.ws_from_z(z, z2=z2, inject_index=0)


def test_bad_inputs_are_refused(tiny_G: Generator) -> None:
    with pytest.raises(ValueError, match="ws must be"):
        tiny_G.synthesis(torch.randn(1, 3, tiny_G.w_dim))
    with pytest.raises(ValueError, match="noise_mode"):
        tiny_G.synthesis(torch.randn(1, tiny_G.w_dim), noise_mode="loud")
    with pytest.raises(ValueError, match="power of two"):
        GeneratorConfig(resolution=48)
    with pytest.raises(ValueError, match="no entry"):
        GeneratorConfig(resolution=32, channels={4: 8, 8: 8})


def test_channel_tables() -> None:
    assert channel_table(1024, 32768, 512) == {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128,
                                               512: 64, 1024: 32}
    assert rosinality_channel_table(256) == {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128}


def test_upfirdn2d_matches_definition() -> None:
    """Upsample-by-2 with the [1,3,3,1] filter preserves a constant image (gain 4 compensates zeros)."""
    x = torch.ones(1, 2, 8, 8)
    y = upfirdn2d(x, fir_kernel(gain=4.0), up=2, pad=(2, 1))
    assert y.shape == (1, 2, 16, 16)
    torch.testing.assert_close(y[..., 2:-2, 2:-2], torch.ones_like(y[..., 2:-2, 2:-2]))
    d = upfirdn2d(torch.ones(1, 1, 8, 8), fir_kernel(), down=2, pad=(1, 1))
    assert d.shape == (1, 1, 4, 4)
    torch.testing.assert_close(d[..., 1:-1, 1:-1], torch.ones(1, 1, 2, 2))
