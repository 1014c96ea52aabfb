"""NVIDIA stylegan2-ada `.pkl` loading: exact round trip, never executing code from the file, strict refusals.

The pickles are written here, in the structure `torch_utils.persistence` produces: every network is
`_reconstruct_persistent_obj(meta)` with `meta = {type, version, module_src, class_name, state}` and `state`
the module's `__dict__`; kwargs are `dnnlib.util.EasyDict`; gains are numpy float64 scalars. The global names
are written directly by a small pickler subclass, so no fake `torch_utils`/`dnnlib` module is ever imported.
Tensors are our own tiny generator's, renamed to NVIDIA's layout by the table in the task description.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import struct
import subprocess
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from partseg.cli import app
from partseg.gan import CheckpointFormatError, Generator, GeneratorConfig, load_generator
from partseg.gan.nvidia import load_nvidia_pickle, nvidia_state_to_ours, read_nvidia_pickle
from partseg.gan.stylegan2 import SynthesisLayer

from .conftest import tiny_config

# module_src: the code NVIDIA's loader would exec. Ours must never run it.
SRC_TEMPLATE = "open({marker!r}, 'w').write('module_src was executed')\nclass Generator: pass\n"


# ----------------------------------------------------------------------------------------------------------
# Writing stylegan2-ada-structured pickles


def _fake_global(module: str, name: str):
    def deco(obj):
        obj._fake_global = (module, name)
        return obj
    return deco


@_fake_global("torch_utils.persistence", "_reconstruct_persistent_obj")
def _reconstruct_stub(meta):  # pragma: no cover - only its name is pickled
    raise AssertionError("writing only")


@_fake_global("dnnlib.util", "EasyDict")
class _EasyDictStub(dict):
    pass


@_fake_global("numpy", "dtype")
class _NpDTypeStub:
    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):  # what numpy 1.x writes for dtype('float64')
        return type(self), (self.code, False, True), (3, "<", None, None, None, -1, -1, 0)


@_fake_global("numpy.core.multiarray", "scalar")
def _np_scalar_stub(dtype, data):  # pragma: no cover - only its name is pickled
    raise AssertionError("writing only")


class _NpFloat64:
    """Pickles like a numpy 1.x float64 (`numpy.core.multiarray.scalar`), whatever numpy is installed."""

    def __init__(self, v: float):
        self.v = v

    def __reduce__(self):
        return _np_scalar_stub, (_NpDTypeStub("f8"), struct.pack("<d", self.v))


class _Writer(pickle._Pickler):
    """Pure-Python pickler that writes `_fake_global` objects under their stylegan2-ada global names."""

    def save_global(self, obj, name=None):
        fake = obj.__dict__.get("_fake_global") if hasattr(obj, "__dict__") else None
        if fake is None:
            return super().save_global(obj, name)
        self.write(pickle.GLOBAL + f"{fake[0]}\n{fake[1]}\n".encode())
        self.memoize(obj)

    dispatch = {**pickle._Pickler.dispatch, types.FunctionType: save_global}  # functions bypass method lookup


class FakeModule:
    """Pickles as `_reconstruct_persistent_obj(meta)`, the way a @persistent_class nn.Module does."""

    def __init__(self, class_name: str, src: str, params=(), buffers=(), modules=(), init_kwargs=None, **attrs):
        self.class_name, self.src = class_name, src
        self.params, self.buffers, self.modules = list(params), list(buffers), list(modules)
        self.init_kwargs, self.attrs = dict(init_kwargs or {}), attrs

    def __reduce__(self):
        hooks = ("_backward_hooks", "_forward_hooks", "_forward_pre_hooks", "_state_dict_hooks",
                 "_load_state_dict_pre_hooks")
        state = {
            "training": False,
            "_parameters": OrderedDict((k, nn.Parameter(v.detach().clone(), requires_grad=False))
                                       for k, v in self.params),
            "_buffers": OrderedDict((k, v.detach().clone()) for k, v in self.buffers),
            "_non_persistent_buffers_set": set(),
            **{h: OrderedDict() for h in hooks},
            "_is_full_backward_hook": None,
            "_modules": OrderedDict(self.modules),
            **self.attrs,
            "_init_args": (),
            "_init_kwargs": _EasyDictStub(self.init_kwargs),
        }
        meta = {"type": "class", "version": 6, "module_src": self.src, "class_name": self.class_name,
                "state": state}
        return _reconstruct_stub, (meta,)


def _blur() -> torch.Tensor:
    f = torch.tensor([1.0, 3.0, 3.0, 1.0])
    f = torch.outer(f, f)
    return f / f.sum()


def nvidia_structure(G: Generator, src: str, c_dim: int = 0) -> FakeModule:
    """Our generator's tensors in stylegan2-ada's module tree (names and attributes as networks.py has them)."""
    sd, cfg = G.state_dict(), G.cfg

    def fc(prefix: str, activation: str, lr: float) -> FakeModule:
        w = sd[f"{prefix}.weight"]
        return FakeModule("FullyConnectedLayer", src, params=[("weight", w), ("bias", sd[f"{prefix}.bias"])],
                          activation=activation, weight_gain=_NpFloat64(lr / math.sqrt(w.shape[1])), bias_gain=lr,
                          init_kwargs=dict(in_features=w.shape[1], out_features=w.shape[0], activation=activation,
                                           lr_multiplier=lr))

    def layer(p: str, res: int, up: int) -> FakeModule:
        return FakeModule("SynthesisLayer", src, modules=[("affine", fc(f"{p}.affine", "linear", 1))],
                          params=[("weight", sd[f"{p}.weight"]), ("noise_strength", sd[f"{p}.noise_strength"]),
                                  ("bias", sd[f"{p}.bias"])],
                          buffers=[("resample_filter", _blur()), ("noise_const", sd[f"{p}.noise_const"])],
                          resolution=res, up=up, use_noise=True, activation="lrelu", conv_clamp=cfg.conv_clamp,
                          padding=1, act_gain=np.float64(np.sqrt(2)))

    blocks = []
    for r in cfg.resolutions:
        p = f"synthesis.blocks.b{r}"
        mods = [] if r == 4 else [("conv0", layer(f"{p}.conv0", r, 2))]
        mods.append(("conv1", layer(f"{p}.conv1", r, 1)))
        w = sd[f"{p}.torgb.weight"]
        mods.append(("torgb", FakeModule("ToRGBLayer", src, modules=[("affine", fc(f"{p}.torgb.affine", "linear", 1))],
                                         params=[("weight", w), ("bias", sd[f"{p}.torgb.bias"])],
                                         conv_clamp=cfg.conv_clamp, weight_gain=_NpFloat64(1 / math.sqrt(w.shape[1])))))
        blocks.append((f"b{r}", FakeModule(
            "SynthesisBlock", src, modules=mods, buffers=[("resample_filter", _blur())],
            params=[("const", sd[f"{p}.const"])] if r == 4 else [],
            in_channels=0 if r == 4 else cfg.channels[r // 2], w_dim=cfg.w_dim, resolution=r,
            img_channels=cfg.img_channels, is_last=r == cfg.resolution, architecture="skip", use_fp16=False,
            channels_last=False, num_conv=1 if r == 4 else 2, num_torgb=1)))
    synthesis = FakeModule("SynthesisNetwork", src, modules=blocks, w_dim=cfg.w_dim, img_resolution=cfg.resolution,
                           img_channels=cfg.img_channels, block_resolutions=cfg.resolutions, num_ws=cfg.num_ws)
    mapping_mods = [(f"fc{i}", fc(f"mapping.layers.{i}", "lrelu", cfg.mapping_lr_mul)) for i in range(cfg.n_mlp)]
    if c_dim:
        mapping_mods.insert(0, ("embed", FakeModule("FullyConnectedLayer", src, params=[
            ("weight", torch.randn(cfg.w_dim, c_dim)), ("bias", torch.zeros(cfg.w_dim))])))
    mapping = FakeModule("MappingNetwork", src, modules=mapping_mods, buffers=[("w_avg", sd["mean_w"])],
                         z_dim=cfg.z_dim, c_dim=c_dim, w_dim=cfg.w_dim, num_ws=cfg.num_ws, num_layers=cfg.n_mlp,
                         w_avg_beta=0.995)
    kwargs = dict(z_dim=cfg.z_dim, w_dim=cfg.w_dim, c_dim=c_dim, img_resolution=cfg.resolution,
                  img_channels=cfg.img_channels, mapping_kwargs=_EasyDictStub(num_layers=cfg.n_mlp),
                  synthesis_kwargs=_EasyDictStub(channel_base=16384, channel_max=512, num_fp16_res=0,
                                                 conv_clamp=cfg.conv_clamp))
    return FakeModule("Generator", src, modules=[("synthesis", synthesis), ("mapping", mapping)], init_kwargs=kwargs,
                      z_dim=cfg.z_dim, c_dim=c_dim, w_dim=cfg.w_dim, img_resolution=cfg.resolution,
                      img_channels=cfg.img_channels, num_ws=cfg.num_ws)


def write_pickle(obj, path: Path) -> Path:
    buf = io.BytesIO()
    _Writer(buf, protocol=3).dump(obj)  # protocol 3: what Python 3.7 (stylegan2-ada's era) wrote by default
    path.write_bytes(buf.getvalue())
    return path


def snapshot(G_fake: FakeModule, src: str) -> dict:
    """A training snapshot's top level, as training_loop.py writes it."""
    return {"G": G_fake, "D": FakeModule("Discriminator", src, params=[("w", torch.randn(4, 4))], c_dim=0),
            "G_ema": G_fake, "augment_pipe": FakeModule("AugmentPipe", src, buffers=[("p", torch.ones(()))], xflip=1.0),
            "training_set_kwargs": {"class_name": "training.dataset.ImageFolderDataset", "path": "data.zip",
                                    "use_labels": False, "max_size": None, "xflip": False, "resolution": 32}}


def _random_G(cfg: GeneratorConfig, seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    G = Generator(cfg)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength") or name.endswith(".bias"):
                p.add_(0.1 * torch.randn_like(p))
        G.mean_w.copy_(0.3 * torch.randn(cfg.w_dim))
    return G.eval()


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "module_src_was_executed"


@pytest.fixture
def src(marker: Path) -> str:
    return SRC_TEMPLATE.format(marker=str(marker))


# ----------------------------------------------------------------------------------------------------------
# Round trip


@pytest.mark.parametrize("lr_mul, clamp", [(0.01, None), (0.05, 0.5)])
@torch.no_grad()
def test_round_trip_gives_identical_images(tmp_path, marker, src, lr_mul, clamp) -> None:
    cfg = tiny_config()
    cfg.mapping_lr_mul, cfg.conv_clamp = lr_mul, clamp
    G = _random_G(cfg)
    path = write_pickle(snapshot(nvidia_structure(G, src), src), tmp_path / "network-snapshot.pkl")

    G2 = load_nvidia_pickle(path)
    assert not marker.exists()
    assert not G2.training and not any(p.requires_grad for p in G2.parameters())
    assert G2.cfg.to_dict() == cfg.to_dict()
    for k, v in G.state_dict().items():
        assert torch.equal(G2.state_dict()[k], v), k  # values copy across unchanged (no kernel flip)
    z = torch.randn(3, cfg.z_dim, generator=torch.Generator().manual_seed(1))
    assert (G2.mapping(z) - G.mapping(z)).abs().max() <= 1e-5
    assert (G2(z) - G(z)).abs().max() <= 1e-5
    assert (G2(z, truncation=0.6) - G(z, truncation=0.6)).abs().max() <= 1e-5
    if clamp is not None:  # the clamp is honoured, not dropped
        unclamped = Generator(GeneratorConfig.from_dict({**cfg.to_dict(), "conv_clamp": None}))
        unclamped.load_state_dict(G.state_dict())
        assert (unclamped(z) - G2(z)).abs().max() > 1e-3


def test_load_generator_dispatches_pkl_and_pickle_bytes(tmp_path, marker, src) -> None:
    G = _random_G(tiny_config())
    path = write_pickle(snapshot(nvidia_structure(G, src), src), tmp_path / "ffhq.pkl")
    z = torch.randn(2, G.z_dim)
    with torch.no_grad():
        assert (load_generator(path)(z) - G(z)).abs().max() <= 1e-5
        renamed = tmp_path / "ffhq.network"  # no .pkl suffix: recognised by the pickle protocol byte
        renamed.write_bytes(path.read_bytes())
        assert (load_generator(renamed)(z) - G(z)).abs().max() <= 1e-5
    assert not marker.exists()


def test_module_src_is_never_executed(tmp_path, marker, src) -> None:
    # the planted source really would create the marker if anything ran it
    other = tmp_path / "control"
    exec(SRC_TEMPLATE.format(marker=str(other)), {})  # the control: proves the payload works
    assert other.exists()
    path = write_pickle(snapshot(nvidia_structure(_random_G(tiny_config()), src), src), tmp_path / "g.pkl")
    data = read_nvidia_pickle(path)
    assert data["G_ema"].class_name == "Generator" and data["G_ema"].source_chars == len(src)
    assert isinstance(data["training_set_kwargs"], dict)
    load_nvidia_pickle(path)
    assert not marker.exists()


def test_numpy_scalars_decode_without_numpy_objects(tmp_path) -> None:
    # real numpy (numpy._core.* on numpy 2, numpy.core.* on 1.x) and the numpy 1.x names written by hand
    path = write_pickle({"G_ema": None, "a": np.float64(0.125), "b": _NpFloat64(2.5), "c": np.float32(1.5),
                         "d": np.int64(-3)}, tmp_path / "s.pkl")
    data = read_nvidia_pickle(path)
    assert (data["a"], data["b"], data["c"], data["d"]) == (0.125, 2.5, 1.5, -3)
    assert all(type(data[k]) in (float, int) for k in "abcd")


# ----------------------------------------------------------------------------------------------------------
# The 2x up-conv orientation


@torch.no_grad()
def test_upconv_orientation_matches_stylegan2_ada() -> None:
    """Hand-computed from NVIDIA's conv2d_resample (up=2, 3x3 kernel, padding 1, 4-tap filter).

    There the up-conv is `conv_transpose2d(x, w.transpose(0, 1), stride=2, padding=0)` with the weight NOT
    flipped (SynthesisLayer passes flip_weight=False, which conv2d_resample inverts for the transposed conv),
    then upfirdn2d with the [1,3,3,1] filter and padding (1, 1). A single input pixel at (i, j) times a kernel
    whose only non-zero tap is (a, b) lands at (2i + a, 2j + b) of the transposed-conv output; the 4-tap blur
    with padding 1 spreads it over rows/cols 2i + a - 2 ... 2i + a + 1. Copying the weight with a flip would
    move tap (0, 0) to (2, 2) and shift the support by two pixels, which this test catches.
    """
    layer = SynthesisLayer(1, 1, w_dim=4, resolution=8, up=True)
    layer.affine.weight.zero_()  # style s = affine bias = 1
    layer.noise_strength.zero_()
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 2, 1] = 1.0  # i = 2, j = 1
    for a, b in [(0, 0), (0, 2), (2, 1)]:
        layer.weight.zero_()
        layer.weight[0, 0, a, b] = 1.0
        y = layer(x, torch.zeros(1, 4), noise_mode="none")[0, 0]
        rows = sorted(set(torch.nonzero(y)[:, 0].tolist()))
        cols = sorted(set(torch.nonzero(y)[:, 1].tolist()))
        assert rows == list(range(2 * 2 + a - 2, 2 * 2 + a + 2)), (a, b, rows)
        assert cols == list(range(2 * 1 + b - 2, 2 * 1 + b + 2)), (a, b, cols)


# ----------------------------------------------------------------------------------------------------------
# Refusals


class _Evil:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("kind", ["os.system", "builtins.exec", "subprocess.Popen", "raw os.system"])
def test_malicious_globals_are_refused_before_running(tmp_path, kind) -> None:
    target = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    if kind == "raw os.system":  # a hand-written GLOBAL 'os system', as an attacker would write it
        path.write_bytes(b"\x80\x03}q\x00X\x05\x00\x00\x00G_emaq\x01cos\nsystem\nq\x02X"
                         + struct.pack("<I", len(f"touch {target}")) + f"touch {target}".encode()
                         + b"\x85R\x73.")
        expected = "'os.system'"
    else:
        evil = {"os.system": _Evil(os.system, f"touch {target}"),
                "builtins.exec": _Evil(exec, f"open({str(target)!r}, 'w').close()"),
                "subprocess.Popen": _Evil(subprocess.Popen, ["touch", str(target)])}[kind]
        G = nvidia_structure(_random_G(tiny_config()), "")
        G.attrs["payload"] = evil  # buried deep inside the generator's state
        write_pickle(snapshot(G, ""), path)
        expected = {"os.system": f"'{os.system.__module__}.system'", "builtins.exec": "'builtins.exec'",
                    "subprocess.Popen": "'subprocess.Popen'"}[kind]
    with pytest.raises(CheckpointFormatError) as e:
        load_generator(path)
    msg = str(e.value)
    assert msg.startswith(f"refusing to load {path}") and expected in msg and "not allowed" in msg
    assert not target.exists()


def test_conditional_generator_is_refused(tmp_path, src) -> None:
    G = _random_G(tiny_config())
    path = write_pickle(snapshot(nvidia_structure(G, src, c_dim=10), src), tmp_path / "cond.pkl")
    with pytest.raises(CheckpointFormatError, match=r"conditional generator \(c_dim=10\)"):
        load_nvidia_pickle(path)


def test_missing_g_ema_is_refused(tmp_path, src) -> None:
    data = snapshot(nvidia_structure(_random_G(tiny_config()), src), src)
    del data["G_ema"]
    path = write_pickle(data, tmp_path / "no_ema.pkl")
    with pytest.raises(CheckpointFormatError, match="no 'G_ema'.*'D', 'G'"):
        load_nvidia_pickle(path)


def test_unsupported_variants_are_refused(tmp_path, src) -> None:
    G = _random_G(tiny_config())
    fake = nvidia_structure(G, src)
    synthesis = dict(fake.modules)["synthesis"]
    synthesis.modules.append(("input", FakeModule("SynthesisInput", src, params=[("freqs", torch.randn(4, 2))])))
    with pytest.raises(CheckpointFormatError, match="StyleGAN3"):
        load_nvidia_pickle(write_pickle(snapshot(fake, src), tmp_path / "sg3.pkl"))

    fake = nvidia_structure(G, src)
    for _, block in dict(fake.modules)["synthesis"].modules:
        block.attrs["architecture"] = "orig"
    with pytest.raises(CheckpointFormatError, match="architecture.*'orig'"):
        load_nvidia_pickle(write_pickle(snapshot(fake, src), tmp_path / "orig.pkl"))


def test_state_dict_conversion_is_strict() -> None:
    G = _random_G(tiny_config())
    sd = {k.replace("synthesis.blocks.", "synthesis.").replace("mapping.layers.", "mapping.fc"): v
          for k, v in G.state_dict().items() if k != "mean_w"}
    cfg, out = nvidia_state_to_ours(sd)
    assert cfg.to_dict() == G.cfg.to_dict() and set(out) == set(G.state_dict()) - {"mean_w"}
    with pytest.raises(CheckpointFormatError, match="does not know.*extra"):
        nvidia_state_to_ours({**sd, "synthesis.b8.extra": torch.zeros(1)})
    bad = dict(sd)
    bad["synthesis.b8.conv0.resample_filter"] = torch.ones(4, 4) / 16
    with pytest.raises(CheckpointFormatError, match="blur filter"):
        nvidia_state_to_ours(bad)
    bad = dict(sd)
    del bad["synthesis.b16.torgb.bias"]
    with pytest.raises(CheckpointFormatError, match="lacks tensor 'synthesis.b16.torgb.bias'"):
        nvidia_state_to_ours(bad)


def test_garbage_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "broken.pkl"
    path.write_bytes(b"\x80\x03not really a pickle")
    with pytest.raises(CheckpointFormatError, match="broken.pkl: not a readable stylegan2-ada pickle"):
        load_nvidia_pickle(path)


# ----------------------------------------------------------------------------------------------------------
# CLI


@pytest.mark.parametrize("fp16", [False, True])
def test_cli_convert(tmp_path, marker, src, fp16) -> None:
    G = _random_G(tiny_config())
    pkl = write_pickle(snapshot(nvidia_structure(G, src), src), tmp_path / "net.pkl")
    dst = tmp_path / "out" / "net.safetensors"
    r = CliRunner().invoke(app, ["gan", "convert", str(pkl), "--out", str(dst), *(["--fp16"] if fp16 else [])])
    assert r.exit_code == 0, r.output
    assert "converted" in r.output and "32 px" in r.output and len(r.output.strip().splitlines()) == 1
    G2 = load_generator(dst)
    z = torch.randn(2, G.z_dim)
    with torch.no_grad():
        err = (G2(z) - G(z)).abs().max()
    assert err <= (0.05 if fp16 else 1e-5)
    assert not marker.exists()


def test_cli_convert_refuses_other_suffix(tmp_path, src) -> None:
    pkl = write_pickle(snapshot(nvidia_structure(_random_G(tiny_config()), src), src), tmp_path / "net.pkl")
    r = CliRunner().invoke(app, ["gan", "convert", str(pkl), "--out", str(tmp_path / "net.pt")])
    assert r.exit_code != 0 and not (tmp_path / "net.pt").exists()
