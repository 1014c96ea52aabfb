"""Reading and writing partseg's weight files: safetensors with a `format` tag and JSON in the metadata.

One place for the checks every loader needs: the file exists, it is readable safetensors (whose own errors do
not name the file), and its `format` tag says it is the kind of file the caller expects.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from partseg.atomic import atomic_path
from partseg.runs import one_line


def weights_digest(header: str, tensors: Mapping[str, torch.Tensor]) -> str:
    """16 hex digits of SHA-256 over `header` then every tensor (by name) as float32 bytes: generator
    fingerprints and head digests, stored in heads, UNets and caches, so its bytes must never change. float32
    values make a float16 file and its loaded copy agree."""
    h = hashlib.sha256(header.encode())
    for k, v in sorted(tensors.items()):
        h.update(k.encode())
        h.update(v.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def write_safetensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> Path:
    """Write tensors (moved to CPU, contiguous) with string metadata, atomically."""
    path = Path(path)
    sd = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(sd, str(tmp), metadata=meta)
    return path


def read_safetensors(path: str | os.PathLike, fmt: str, what: str,
                     error: type[ValueError] = ValueError) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors) of a partseg file whose metadata 'format' must be `fmt`; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            sd = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - safetensors' own errors do not name the file
        raise error(f"{path}: not a readable safetensors file ({one_line(e)})") from None
    if meta.get("format") != fmt:
        raise error(f"{path}: not a partseg {what} (metadata 'format' is {meta.get('format')!r}, expected {fmt!r})")
    return meta, sd
