"""Pixel features: layer selection, shapes, dtypes, and that tiles and sampled pixels equal the full map."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from partseg.features import (
    default_layers,
    feature_channels,
    hooked_source,
    iter_feature_tiles,
    pixel_features,
    sample_pixel_features,
    stylegan_source,
)
from partseg.gan import Generator
from partseg.gan.hooked import HookedGenerator


def random_ws(G: Generator, n: int = 2, seed: int = 0) -> torch.Tensor:
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return G.ws_from_z(z)


class TinyConvGenerator(nn.Module):
    """A plain DCGAN-like generator: z -> 4x4 -> 8x8 -> 16x16 image, with a batch norm."""

    def __init__(self, z_dim: int = 8):
        super().__init__()
        self.fc = nn.Linear(z_dim, 16 * 4 * 4)
        self.body = nn.Sequential(
            nn.Upsample(scale_factor=2), nn.Conv2d(16, 8, 3, padding=1), nn.BatchNorm2d(8), nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2), nn.Conv2d(8, 4, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(4, 3, 1), nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.fc(z).view(-1, 16, 4, 4))


# ----------------------------------------------------------------------------------------------------------
# Layer selection and the full map


def test_default_layers_follow_the_paper(tiny_G: Generator) -> None:
    paper = default_layers(tiny_G)
    assert paper == ["b8.conv0", "b8.conv1", "b16.conv0", "b16.conv1", "b32.conv0", "b32.conv1"]
    assert default_layers(tiny_G, "all") == ["b4.conv1", *paper]
    with_rgb = default_layers(tiny_G, include_torgb=True)
    assert with_rgb == ["b8.conv0", "b8.conv1", "b8.torgb", "b16.conv0", "b16.conv1", "b16.torgb",
                        "b32.conv0", "b32.conv1", "b32.torgb"]
    assert "b4.torgb" in default_layers(tiny_G, "all", include_torgb=True)
    assert stylegan_source(tiny_G).layers == paper


@pytest.mark.parametrize("layers", [None, "all", ["b32.conv1", "b8.conv0"], ["b16.torgb"]])
def test_shapes_and_channel_count(tiny_G: Generator, layers) -> None:
    src = stylegan_source(tiny_G, layers)
    ch = tiny_G.synthesis.layer_channels()
    assert feature_channels(src) == sum(ch[n] for n in src.layers)
    img, f = pixel_features(src, random_ws(tiny_G))
    size = max(tiny_G.synthesis.layer_resolutions()[n] for n in src.layers)
    assert img.shape == (2, 3, 32, 32)
    assert f.shape == (2, feature_channels(src), size, size) and f.dtype == torch.float32
    assert not f.requires_grad


def test_features_are_the_resized_activations_in_layer_order(tiny_G: Generator) -> None:
    src = stylegan_source(tiny_G, ["b32.conv1", "b8.conv0", "b16.torgb"])
    ws = random_ws(tiny_G)
    _, acts = tiny_G.synthesis(ws, return_activations=True)
    _, f = pixel_features(src, ws, size=16)
    torch.testing.assert_close(f[:, :16], F.interpolate(acts["b32.conv1"], size=16, mode="area"))
    torch.testing.assert_close(f[:, 16:48], F.interpolate(acts["b8.conv0"], size=16, mode="bilinear",
                                                          align_corners=True))
    torch.testing.assert_close(f[:, 48:], acts["b16.torgb"])


def test_a_comma_separated_layer_string_is_a_list(tiny_G: Generator) -> None:
    """FewShotConfig.layers is a string: 'b32.conv1, b8.conv0' names the layers as the list would."""
    assert stylegan_source(tiny_G, "b32.conv1, b8.conv0").layers == ["b32.conv1", "b8.conv0"]
    with pytest.raises(ValueError, match="unknown: \\['most'\\]"):
        stylegan_source(tiny_G, "most")


def test_torgb_is_optional(tiny_G: Generator) -> None:
    plain, rgb = stylegan_source(tiny_G), stylegan_source(tiny_G, include_torgb=True)
    assert feature_channels(rgb) == feature_channels(plain) + 3 * 3
    with pytest.raises(ValueError, match="include_torgb"):
        stylegan_source(tiny_G, ["b8.conv0"], include_torgb=True)


def test_unknown_layer_names_are_refused(tiny_G: Generator) -> None:
    with pytest.raises(ValueError, match="b64.conv0"):
        stylegan_source(tiny_G, ["b8.conv0", "b64.conv0"])
    with pytest.raises(ValueError, match="selection"):
        default_layers(tiny_G, "most")


def test_float16_output(tiny_G: Generator) -> None:
    src, ws = stylegan_source(tiny_G), random_ws(tiny_G)
    _, f32 = pixel_features(src, ws)
    _, f16 = pixel_features(src, ws, dtype=torch.float16)
    assert f16.dtype == torch.float16 and f16.shape == f32.shape
    torch.testing.assert_close(f16.float(), f32, rtol=1e-3, atol=1e-3)


def test_deterministic_with_const_noise_and_noise_is_plumbed(tiny_G: Generator) -> None:
    ws = random_ws(tiny_G)
    src = stylegan_source(tiny_G)
    assert torch.equal(pixel_features(src, ws)[1], pixel_features(src, ws)[1])
    rnd = stylegan_source(tiny_G, noise_mode="random")
    assert not torch.equal(pixel_features(rnd, ws)[1], pixel_features(rnd, ws)[1])
    # explicit noise maps equal to the stored ones give the const-noise features
    syn = tiny_G.synthesis
    noise = [syn.get_submodule(f"blocks.{n}").noise_const[None, None] for n in syn.layer_names]
    torch.testing.assert_close(pixel_features(stylegan_source(tiny_G, noise=noise), ws)[1],
                               pixel_features(src, ws)[1], rtol=0, atol=0)


def test_gradients_reach_ws(tiny_G: Generator) -> None:
    src = stylegan_source(tiny_G)
    ws = random_ws(tiny_G, n=1).requires_grad_(True)
    _, f = pixel_features(src, ws, grad=True)
    f.square().mean().backward()
    assert ws.grad is not None and ws.grad.abs().sum() > 0
    ws.grad = None
    _, p = sample_pixel_features(src, ws, n_pixels=20, grad=True, generator=torch.Generator().manual_seed(0))
    p.sum().backward()
    assert ws.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------------------
# Tiles and sampled pixels equal the full map


CASES = [  # (layers, size, mode, align_corners)
    ("all", None, "bilinear", True),  # 4..32 up to 32
    ("all", 24, "bilinear", True),  # 32 -> 24 is area with uneven bins; 4, 8, 16 up
    ("all", 16, "bilinear", True),  # 32 -> 16 is a 2x2 average
    ("all", 40, "bilinear", True),  # every layer upsampled
    ("all", 24, "bilinear", False),
    ("all", 13, "bilinear", True),  # odd size: uneven area bins from 32 and 16, upsampling from 4 and 8
    ("all", None, "nearest", True),
    ("all", 24, "nearest", True),
    (["b32.conv1", "b16.torgb"], 8, "bilinear", True),  # only area, factors 4 and 2
]


@pytest.mark.parametrize(("layers", "size", "mode", "align_corners"), CASES)
@pytest.mark.parametrize("tile", [7, 16])
def test_tiles_equal_crops_of_the_full_map(tiny_G: Generator, layers, size, mode, align_corners, tile) -> None:
    src, ws = stylegan_source(tiny_G, layers), random_ws(tiny_G)
    kw = dict(size=size, mode=mode, align_corners=align_corners)
    _, full = pixel_features(src, ws, **kw)
    seen = torch.zeros(full.shape[-2:], dtype=torch.int)
    for y0, x0, t in iter_feature_tiles(src, ws, tile=tile, **kw):
        th, tw = t.shape[-2:]
        assert th <= tile and tw <= tile and t.shape[:2] == full.shape[:2]
        err = (t - full[:, :, y0:y0 + th, x0:x0 + tw]).abs().max().item()
        assert err <= 1e-5, f"tile ({y0}, {x0}): max abs err {err}"
        seen[y0:y0 + th, x0:x0 + tw] += 1
    assert (seen == 1).all()  # tiles cover the map exactly once


@pytest.mark.parametrize(("layers", "size", "mode", "align_corners"), CASES)
def test_sampled_pixels_equal_gathering_from_the_full_map(tiny_G: Generator, layers, size, mode,
                                                           align_corners) -> None:
    src, ws = stylegan_source(tiny_G, layers), random_ws(tiny_G)
    kw = dict(size=size, mode=mode, align_corners=align_corners)
    _, full = pixel_features(src, ws, **kw)
    coords, p = sample_pixel_features(src, ws, n_pixels=50, generator=torch.Generator().manual_seed(1), **kw)
    assert coords.shape == (2, 50, 2) and coords.dtype == torch.long
    assert p.shape == (2, 50, full.shape[1])
    for n in range(2):
        assert len({tuple(c) for c in coords[n].tolist()}) == 50  # without replacement
        gathered = full[n, :, coords[n, :, 0], coords[n, :, 1]].T
        assert (p[n] - gathered).abs().max().item() <= 1e-5


def test_sampling_is_reproducible_and_takes_explicit_coords(tiny_G: Generator) -> None:
    src, ws = stylegan_source(tiny_G), random_ws(tiny_G)
    a = sample_pixel_features(src, ws, n_pixels=10, generator=torch.Generator().manual_seed(3))
    b = sample_pixel_features(src, ws, n_pixels=10, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    corners = torch.tensor([[0, 0], [31, 31], [0, 31]])
    coords, p = sample_pixel_features(src, ws, coords=corners, dtype=torch.float16)
    assert coords.shape == (2, 3, 2) and p.dtype == torch.float16
    _, full = pixel_features(src, ws)
    torch.testing.assert_close(p[1, 1].float(), full[1, :, 31, 31], rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="exactly one"):
        sample_pixel_features(src, ws)
    with pytest.raises(ValueError, match="coords must lie"):
        sample_pixel_features(src, ws, coords=torch.tensor([[0, 32]]))


def test_tiles_leave_the_callers_grad_mode_alone(tiny_G: Generator) -> None:
    src = stylegan_source(tiny_G)
    for _ in iter_feature_tiles(src, random_ws(tiny_G), tile=16):
        assert torch.is_grad_enabled()


# ----------------------------------------------------------------------------------------------------------
# Any convolutional generator through hooks


def test_hooked_generator_serves_pixel_features() -> None:
    torch.manual_seed(0)
    net = TinyConvGenerator().train()
    hg = HookedGenerator(net, ["body.3", "body.6"], z_dim=8)
    src = hooked_source(hg)
    assert net.training and net.body[2].num_batches_tracked.item() == 0  # the shape dry run changed nothing
    assert src.channels == {"body.3": 8, "body.6": 4} and src.resolutions == {"body.3": 8, "body.6": 16}
    net.eval()
    z = torch.randn(3, 8)
    img, f = pixel_features(src, z)
    assert img.shape == (3, 3, 16, 16) and f.shape == (3, 12, 16, 16)
    with torch.no_grad():
        h8 = net.body[:4](net.fc(z).view(-1, 16, 4, 4))
    torch.testing.assert_close(f[:, :8], F.interpolate(h8, size=16, mode="bilinear", align_corners=True))
    for y0, x0, t in iter_feature_tiles(src, z, tile=5):
        assert (t - f[:, :, y0:y0 + t.shape[2], x0:x0 + t.shape[3]]).abs().max() <= 1e-5
    # hooks exist only during a call
    assert all(not m._forward_hooks for m in net.modules())


def test_hooked_generator_errors_are_clear() -> None:
    net = TinyConvGenerator()
    with pytest.raises(ValueError, match=r"unknown layer names \['body.33'\].*close matches.*body.3"):
        HookedGenerator(net, ["body.33"], z_dim=8)
    hg = HookedGenerator(net, ["fc", "body.1"], z_dim=8)
    with pytest.raises(ValueError, match=r"'fc' outputs \[2, 256\].*4-D"):
        hg.activations(torch.randn(2, 8))
    assert all(not m._forward_hooks for m in net.modules())  # removed even though the forward raised
    shared = nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU())
    shared.add_module("again", shared[1])  # the same ReLU runs twice

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = shared

        def forward(self, z):
            return self.net(z.view(-1, 3, 1, 1).expand(-1, 3, 4, 4))

    with pytest.raises(RuntimeError, match="more than once"):
        HookedGenerator(Twice(), ["net.1"], z_dim=3).activations(torch.randn(1, 3))
