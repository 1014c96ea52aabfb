"""Load NVIDIA stylegan2-ada-pytorch `.pkl` generators without running any code from the file.

The pickle is read by the restricted unpickler in `partseg.gan.nvidia_pickle` (networks arrive as data-only
`PersistentRecord`s; nothing from the file is executed). The generator (`G_ema`) is then remapped onto ours
strictly: every tensor is used, every shape checked, and features we do not implement (conditioning,
'orig'/'resnet' synthesis, StyleGAN3, other blur filters) are refused rather than rendered wrongly. The layer
maths match value for value (checked against the public code): equalised-lr gains, bias -> lrelu -> sqrt(2) ->
clamp, noise added after demodulation, and the 2x up-conv, which in NVIDIA's `conv2d_resample` is a stride-2
transposed conv with the weight transposed (in <-> out) but *not* flipped, padding 0, followed by the [1,3,3,1]
FIR with padding (1, 1) and gain 4: exactly our `SynthesisLayer`, so weights copy across without flipping.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from partseg.gan.nvidia_pickle import PersistentRecord, read_nvidia_pickle
from partseg.gan.ops import fir_kernel
from partseg.gan.state import CheckpointFormatError, generator_from_state
from partseg.gan.stylegan2 import Generator, GeneratorConfig

# ----------------------------------------------------------------------------------------------------------
# Records -> tensors and config hints


def flatten_record(rec: PersistentRecord, prefix: str = "") -> dict[str, torch.Tensor]:
    """The record tree's parameters and persistent buffers under dotted names, like `Module.state_dict()`."""
    out: dict[str, torch.Tensor] = {}
    skip = set(rec.attr("_non_persistent_buffers_set") or ())
    for group in ("_parameters", "_buffers"):
        for name, t in (rec.attr(group) or {}).items():
            if t is None or (group == "_buffers" and name in skip):
                continue
            if not isinstance(t, torch.Tensor):
                raise CheckpointFormatError(f"'{prefix}{name}' is a {type(t).__name__}, not a tensor")
            out[prefix + name] = t
    for name, child in (rec.attr("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, PersistentRecord):
            raise CheckpointFormatError(f"submodule '{prefix}{name}' is a {type(child).__name__}, not a "
                                        f"stylegan2-ada persistent module")
        out.update(flatten_record(child, f"{prefix}{name}."))
    return out


def _walk(rec: PersistentRecord, prefix: str = "") -> list[tuple[str, PersistentRecord]]:
    out = [(prefix.rstrip("."), rec)]
    for name, child in rec.modules.items():
        if isinstance(child, PersistentRecord):
            out += _walk(child, f"{prefix}{name}.")
    return out


def _number(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def generator_hints(G: PersistentRecord, where: str = "G_ema") -> dict[str, Any]:
    """Read what the tensors cannot tell (mapping lr multiplier, conv_clamp) and refuse unsupported variants."""
    if G.class_name != "Generator":
        raise CheckpointFormatError(f"{where} is a '{G.class_name}', not a stylegan2-ada 'Generator'")
    kw = G.init_kwargs
    nodes = _walk(G)
    classes = {r.class_name for _, r in nodes}
    synthesis = G.modules.get("synthesis")
    if "SynthesisInput" in classes or (synthesis is not None and "input" in synthesis.modules):
        raise CheckpointFormatError(f"{where} is a StyleGAN3 generator (alias-free synthesis); only StyleGAN2 "
                                    f"(stylegan2-ada-pytorch) generators are supported")
    c_dim = _number(G.attr("c_dim", kw.get("c_dim", 0))) or 0
    mapping = G.modules.get("mapping")
    if c_dim > 0 or (mapping is not None and "embed" in mapping.modules):
        raise CheckpointFormatError(f"{where} is a conditional generator (c_dim={c_dim:g}); only unconditional "
                                    f"generators are supported")
    archs = {r.attr("architecture") for _, r in nodes if r.class_name == "SynthesisBlock"}
    archs.add(dict(kw.get("synthesis_kwargs") or {}).get("architecture"))
    archs.discard(None)
    if archs - {"skip"}:
        raise CheckpointFormatError(f"{where} uses synthesis architecture {sorted(archs - {'skip'})}; only "
                                    f"'skip' (the stylegan2-ada default) is supported")

    lr_muls, clamps = set(), set()
    for name, r in nodes:
        leaf = name.rsplit(".", 1)[-1]
        act = r.attr("activation")
        if r.class_name == "FullyConnectedLayer":
            gain = _number(r.attr("bias_gain", r.init_kwargs.get("lr_multiplier")))  # bias_gain = lr multiplier
            if leaf == "affine":
                if act not in (None, "linear") or (gain is not None and abs(gain - 1) > 1e-6):
                    raise CheckpointFormatError(f"{where}.{name}: affine layer with activation {act!r}, lr "
                                                f"multiplier {gain}; expected linear, 1")
            elif name.startswith("mapping."):
                if act not in (None, "lrelu"):
                    raise CheckpointFormatError(f"{where}.{name}: mapping activation {act!r}; only 'lrelu'")
                if gain is not None:
                    lr_muls.add(round(gain, 9))
        elif r.class_name in ("SynthesisLayer", "ToRGBLayer"):
            if r.class_name == "SynthesisLayer" and act not in (None, "lrelu"):
                raise CheckpointFormatError(f"{where}.{name}: activation {act!r}; only 'lrelu' is supported")
            clamp = r.attr("conv_clamp", r.init_kwargs.get("conv_clamp"))
            if clamp is not None and _number(clamp) is None:
                raise CheckpointFormatError(f"{where}.{name}: conv_clamp {clamp!r} is not a number")
            clamps.add(_number(clamp))
    if len(lr_muls) > 1 or len(clamps) > 1:
        raise CheckpointFormatError(f"{where}: mixed mapping lr multipliers {sorted(lr_muls)} or conv_clamp values "
                                    f"{sorted(clamps, key=str)}; one value each is supported")
    if not lr_muls:  # no attribute found: fall back to the constructor arguments, then the default
        mk = dict(kw.get("mapping_kwargs") or {})
        lr = _number((mapping.init_kwargs if mapping else {}).get("lr_multiplier", mk.get("lr_multiplier", 0.01)))
        lr_muls.add(0.01 if lr is None else lr)
    if not clamps:
        clamps.add(_number(dict(kw.get("synthesis_kwargs") or {}).get("conv_clamp")))
    return {"mapping_lr_mul": float(lr_muls.pop()), "conv_clamp": clamps.pop()}


# ----------------------------------------------------------------------------------------------------------
# State dict remapping


def nvidia_config(sd: dict[str, torch.Tensor], mapping_lr_mul: float = 0.01,
                  conv_clamp: float | None = None) -> GeneratorConfig:
    """Our GeneratorConfig from a stylegan2-ada `G_ema` state dict's tensor shapes (plus the two scalars)."""
    if any(k.startswith("synthesis.input.") or re.match(r"synthesis\.L\d+_", k) for k in sd):
        raise CheckpointFormatError("this is a StyleGAN3 generator; only StyleGAN2 generators are supported")
    if any(k.startswith("mapping.embed.") for k in sd):
        raise CheckpointFormatError("this is a conditional generator (mapping.embed); only unconditional "
                                    "generators are supported")
    n_mlp = 0
    while f"mapping.fc{n_mlp}.weight" in sd:
        n_mlp += 1
    if n_mlp == 0:
        raise CheckpointFormatError("no mapping layers 'mapping.fc0.weight' found")
    z_dim = sd["mapping.fc0.weight"].shape[1]
    w_dim = sd[f"mapping.fc{n_mlp - 1}.weight"].shape[0]
    for i in range(n_mlp):
        shape = tuple(sd[f"mapping.fc{i}.weight"].shape)
        if shape != (w_dim, z_dim if i == 0 else w_dim):
            raise CheckpointFormatError(f"mapping.fc{i}.weight has shape {shape}; mapping layers whose width "
                                        f"differs from w_dim ({w_dim}) are not supported")
    res = sorted(int(m.group(1)) for k in sd if (m := re.fullmatch(r"synthesis\.b(\d+)\.conv1\.weight", k)))
    if not res or res != [4 * 2**i for i in range(len(res))]:
        raise CheckpointFormatError(f"synthesis blocks {res} are not 4, 8, 16, ... px")
    for r in res:
        if f"synthesis.b{r}.skip.weight" in sd:
            raise CheckpointFormatError("synthesis architecture 'resnet' is not supported; only 'skip'")
        if f"synthesis.b{r}.torgb.weight" not in sd:
            raise CheckpointFormatError(f"synthesis block b{r} has no torgb: architecture 'orig' is not "
                                        f"supported; only 'skip'")
    channels = {r: int(sd[f"synthesis.b{r}.conv1.weight"].shape[0]) for r in res}
    img_channels = int(sd[f"synthesis.b{res[-1]}.torgb.weight"].shape[0])
    try:
        return GeneratorConfig(resolution=res[-1], z_dim=int(z_dim), w_dim=int(w_dim), n_mlp=n_mlp,
                               channels=channels, mapping_lr_mul=float(mapping_lr_mul),
                               conv_clamp=None if conv_clamp is None else float(conv_clamp),
                               img_channels=img_channels)
    except ValueError as e:
        raise CheckpointFormatError(f"unsupported generator: {e}") from e


def nvidia_state_to_ours(sd: dict[str, torch.Tensor], mapping_lr_mul: float = 0.01,
                         conv_clamp: float | None = None) -> tuple[GeneratorConfig, dict[str, torch.Tensor]]:
    """stylegan2-ada `G_ema` state dict -> (our config, our state dict). Strict: every tensor must be used.

    `mean_w` is included only when the source has `mapping.w_avg`. Values copy across unchanged: the
    equalised-lr conventions are the same and the up-conv weight needs no flip (see the module docstring).
    """
    cfg = nvidia_config(sd, mapping_lr_mul, conv_clamp)
    src = dict(sd)
    out: dict[str, torch.Tensor] = {}

    def take(key: str) -> torch.Tensor:
        if key not in src:
            raise CheckpointFormatError(f"stylegan2-ada generator lacks tensor '{key}'")
        return src.pop(key)

    def check_filter(key: str) -> None:
        f = src.pop(key, None)
        ref = fir_kernel()  # setup_filter([1,3,3,1]): the 4x4 outer product normalised to sum 1
        if f is not None and (tuple(f.shape) != (4, 4) or not torch.allclose(f.float(), ref, atol=1e-6)):
            raise CheckpointFormatError(f"'{key}' is not the [1,3,3,1] blur filter; other filters are not supported")

    for i in range(cfg.n_mlp):
        out[f"mapping.layers.{i}.weight"] = take(f"mapping.fc{i}.weight")
        out[f"mapping.layers.{i}.bias"] = take(f"mapping.fc{i}.bias")
    if "mapping.w_avg" in src:
        out["mean_w"] = take("mapping.w_avg").reshape(-1)

    def affine(s: str, d: str) -> None:
        out[f"{d}.affine.weight"] = take(f"{s}.affine.weight")
        out[f"{d}.affine.bias"] = take(f"{s}.affine.bias")

    for r in cfg.resolutions:
        s, d = f"synthesis.b{r}", f"synthesis.blocks.b{r}"
        check_filter(f"{s}.resample_filter")
        if r == 4:
            out[f"{d}.const"] = take(f"{s}.const")
        for conv in (["conv1"] if r == 4 else ["conv0", "conv1"]):
            sc, dc = f"{s}.{conv}", f"{d}.{conv}"
            check_filter(f"{sc}.resample_filter")
            affine(sc, dc)
            out[f"{dc}.weight"] = take(f"{sc}.weight")
            out[f"{dc}.bias"] = take(f"{sc}.bias")
            strength, noise = src.pop(f"{sc}.noise_strength", None), src.pop(f"{sc}.noise_const", None)
            if (strength is None) != (noise is None):
                raise CheckpointFormatError(f"'{sc}' has only one of noise_strength / noise_const")
            if strength is None:  # use_noise=False: no noise input, which zero strength reproduces
                strength, noise = torch.zeros(()), torch.zeros(r, r)
            out[f"{dc}.noise_strength"] = strength.reshape(())
            out[f"{dc}.noise_const"] = noise
        affine(f"{s}.torgb", f"{d}.torgb")
        out[f"{d}.torgb.weight"] = take(f"{s}.torgb.weight")
        out[f"{d}.torgb.bias"] = take(f"{s}.torgb.bias")
    if src:
        raise CheckpointFormatError(f"stylegan2-ada generator has tensors this converter does not know: "
                                    f"{sorted(src)[:10]}")
    return cfg, out


# ----------------------------------------------------------------------------------------------------------
# Entry point


def load_nvidia_pickle(path: str | os.PathLike) -> Generator:
    """Load `G_ema` from a stylegan2-ada-pytorch `.pkl` as our Generator (eval mode, no grads), safely."""
    path = Path(path)
    data = read_nvidia_pickle(path)
    if "G_ema" not in data:
        raise CheckpointFormatError(f"{path}: pickle has no 'G_ema' generator; top-level keys: "
                                    f"{sorted(map(str, data))[:10]}")
    rec = data["G_ema"]
    if not isinstance(rec, PersistentRecord):
        raise CheckpointFormatError(f"{path}: 'G_ema' is a {type(rec).__name__}, not a stylegan2-ada network")
    try:
        hints = generator_hints(rec)
        cfg, sd = nvidia_state_to_ours(flatten_record(rec), **hints)
    except CheckpointFormatError as e:
        raise CheckpointFormatError(f"{path}: {e}") from None
    except (TypeError, ValueError, AttributeError, KeyError, IndexError) as e:  # odd values in the records
        raise CheckpointFormatError(f"{path}: unexpected G_ema contents ({type(e).__name__}: {e})") from e
    has_mean = "mean_w" in sd
    G = generator_from_state(cfg, {**sd, "mean_w": sd.get("mean_w", torch.zeros(cfg.w_dim))}, f"{path} [G_ema]")
    if not has_mean:  # built with w_avg_beta=None: estimate the W mean for truncation
        G.compute_mean_w()
    return G
