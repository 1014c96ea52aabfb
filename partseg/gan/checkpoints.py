"""Load and save generators: our own files, rosinality `.pt`, NVIDIA stylegan2-ada `.pkl`, built-ins.

Nothing here executes code from a checkpoint: torch files load with `weights_only=True`, ours are
safetensors, and NVIDIA pickles go through the restricted unpickler in `nvidia_pickle.py`.
"""

from __future__ import annotations

import argparse
import json
import os
from importlib import resources
from pathlib import Path

import torch

from partseg.gan.rosinality import convert_rosinality, looks_like_rosinality
from partseg.gan.state import CheckpointFormatError, generator_from_state
from partseg.gan.stylegan2 import Generator, GeneratorConfig
from partseg.runs import torch_load_reason
from partseg.weights_io import read_safetensors, weights_digest, write_safetensors

GENERATOR_FORMAT = "partseg.generator"
TRAIN_FORMAT = "partseg.gan.train"

# name -> file inside the package's `weights/` folder; filled as weights are shipped.
BUILTINS: dict[str, str] = {"faces64": "faces64.safetensors", "faces128": "faces128.safetensors"}
# name -> folder (data-set layout, with latents) of a built-in generator's default annotation set
BUILTIN_ANNOTATIONS: dict[str, str] = {"faces64": "faces64_annotations", "faces128": "faces128_annotations"}
# name -> the render mode of the faces it was trained on (`partseg.data.faces.MODES`): what to test it on
BUILTIN_MODES: dict[str, str] = {"faces64": "wild", "faces128": "aligned"}
# The generator every command uses unless told otherwise: the aligned 128 px portraits of issue #14
# (docs/faces128.md). builtin:faces64, the first edition (wild 64 px renders), stays loadable.
DEFAULT_GAN = "builtin:faces128"


def builtin_annotations(name: str) -> Path:
    """The default annotation set shipped with built-in generator `name` (10 oracle-labelled samples)."""
    if name not in BUILTIN_ANNOTATIONS:
        raise FileNotFoundError(f"no default annotation set for 'builtin:{name}'; known: {sorted(BUILTIN_ANNOTATIONS)}")
    path = Path(str(resources.files("partseg") / "weights" / BUILTIN_ANNOTATIONS[name]))
    if not (path / "labels.json").exists():
        raise FileNotFoundError(f"the default annotation set of 'builtin:{name}' is not shipped in this install "
                                f"(expected {path})")
    return path


def builtin_path(name: str) -> Path:
    if name not in BUILTINS:
        raise FileNotFoundError(f"unknown built-in generator 'builtin:{name}'; known: "
                                f"{', '.join('builtin:' + n for n in BUILTINS)}")
    path = Path(str(resources.files("partseg") / "weights" / BUILTINS[name]))
    if not path.exists():
        raise FileNotFoundError(f"built-in generator 'builtin:{name}' is not shipped in this install "
                                f"(expected {path}); train one with `partseg gan train` or pass a checkpoint")
    return path


def save_generator(G: Generator, path: str | os.PathLike, dtype: torch.dtype = torch.float32,
                   extra: dict[str, str] | None = None) -> Path:
    """Write G as safetensors with its config in the metadata (atomically). float16 halves the size."""
    sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in G.state_dict().items()}
    meta = {"format": GENERATOR_FORMAT, "format_version": "1", "config": json.dumps(G.cfg.to_dict())}
    meta.update(extra or {})
    return write_safetensors(path, sd, meta)


def _load_safetensors(path: Path) -> Generator:
    meta, sd = read_safetensors(path, GENERATOR_FORMAT, "generator", CheckpointFormatError)
    return generator_from_state(GeneratorConfig.from_dict(json.loads(meta["config"])), sd, str(path))


def _torch_load(path: Path) -> dict:
    # rosinality training checkpoints carry their argparse Namespace; it only holds plain attributes.
    with torch.serialization.safe_globals([argparse.Namespace]):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - re-raised with the file named
            raise CheckpointFormatError(f"{path}: not a loadable torch checkpoint with plain tensors "
                                        f"({torch_load_reason(path, e)})") from None
    if not isinstance(obj, dict):
        raise CheckpointFormatError(f"{path}: expected a dict checkpoint, got {type(obj).__name__}")
    return obj


def load_generator(path: str | os.PathLike, device: str | torch.device = "cpu") -> Generator:
    """Load a generator from any supported source; returns our `Generator` in eval mode, no grads.

    Sources: 'builtin:NAME'; partseg `.safetensors` or training run `.pt`; rosinality `.pt`
    (`g_ema` + optional `latent_avg`); NVIDIA stylegan2-ada `.pkl` (via a restricted unpickler).
    """
    if str(path).startswith("builtin:"):
        path = builtin_path(str(path)[len("builtin:"):])
    path = Path(path)
    if path.is_dir() and (path / "checkpoint.pt").exists():  # a training run folder
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise FileNotFoundError(f"generator checkpoint not found: {path}")
    with open(path, "rb") as f:
        head = f.read(16)
    if path.suffix == ".safetensors":
        G = _load_safetensors(path)
    elif path.suffix == ".pkl" or (head[:1] == b"\x80" and not head.startswith(b"PK")):
        from partseg.gan.nvidia import load_nvidia_pickle

        G = load_nvidia_pickle(path)
    elif head.startswith(b"PK"):
        G = _load_torch_checkpoint(path)
    else:
        raise CheckpointFormatError(f"{path}: unrecognised checkpoint (expected .safetensors, a torch .pt "
                                    f"zip archive, or an NVIDIA .pkl)")
    return G.to(device)


def _load_torch_checkpoint(path: Path) -> Generator:
    ckpt = _torch_load(path)
    if ckpt.get("format") == TRAIN_FORMAT:
        cfg = GeneratorConfig.from_dict(ckpt["g_config"])
        return generator_from_state(cfg, ckpt["G_ema"], f"{path} [G_ema]")
    if "g_ema" in ckpt and looks_like_rosinality(ckpt["g_ema"]):
        cfg, sd = convert_rosinality(ckpt["g_ema"], ckpt.get("latent_avg"))
        G = generator_from_state(cfg, {**sd, "mean_w": sd.get("mean_w", torch.zeros(cfg.w_dim))}, str(path))
        if "mean_w" not in sd:  # rosinality training checkpoints store no latent_avg: estimate it
            G.compute_mean_w()
        return G
    raise CheckpointFormatError(f"{path}: torch checkpoint is neither a partseg training run (format "
                                f"'{TRAIN_FORMAT}') nor a rosinality checkpoint (key 'g_ema'); top-level keys: "
                                f"{sorted(ckpt)[:10]}")


def generator_fingerprint(G: Generator) -> str:
    """A short hash of the generator's weights and config: heads record it, so a head is never silently used
    with a GAN whose features it was not trained on. Computed on float32 values, so a float16 file and its
    loaded copy agree."""
    return weights_digest(json.dumps(G.cfg.to_dict(), sort_keys=True), G.state_dict())
