"""A restricted unpickler for NVIDIA stylegan2-ada-pytorch `.pkl` snapshots: networks as data, no code run.

Those pickles are not just weights: each network is stored as `_reconstruct_persistent_obj(meta)`, where
`meta` carries the Python source of the module that defined the class, and NVIDIA's own loader `exec`s that
source. Anyone can put anything there, and any pickle can also name `os.system` or `builtins.exec` as a
"constructor". So we never use `pickle.load`: a restricted unpickler resolves only an explicit allow-list of
globals (containers, torch's tensor rebuild functions, data-only stand-ins for numpy scalars and EasyDict),
turns each persistent module into a plain `PersistentRecord` (class name + its `__dict__`, source ignored),
and refuses everything else with an error that names the file and the global. Tensor storages arrive as
nested legacy `torch.save` blobs; those are read with `torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from partseg.gan.state import CheckpointFormatError

# ----------------------------------------------------------------------------------------------------------
# Data-only stand-ins for the few non-torch globals a real snapshot contains


@dataclass
class PersistentRecord:
    """A persistent module as data: what `_reconstruct_persistent_obj(meta)` would have rebuilt.

    `state` is the module's pickled `__dict__` (`_parameters`, `_buffers`, `_modules`, `_init_kwargs`, plain
    attributes). The embedded source code is dropped unread; only its length is kept for diagnostics.
    """

    class_name: str
    state: dict
    version: Any = None
    source_chars: int = 0

    @property
    def modules(self) -> dict[str, PersistentRecord]:
        return {k: v for k, v in (self.state.get("_modules") or {}).items() if v is not None}

    @property
    def init_kwargs(self) -> dict:
        return dict(self.state.get("_init_kwargs") or {})

    def attr(self, name: str, default: Any = None) -> Any:
        return self.state.get(name, default)


class _EasyDict(dict):
    """Stand-in for `dnnlib.util.EasyDict`: a plain dict (attribute access is not needed to read kwargs)."""

    def __setstate__(self, state: Any) -> None:  # EasyDict keeps nothing in __dict__; ignore if present
        pass


class _NumpyDType:
    """Stand-in for `numpy.dtype` in a pickle: records the type code and byte order, nothing else."""

    def __init__(self, code: Any = "", align: Any = False, copy: Any = True):
        self.code = str(code)
        self.byteorder = "<"

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "|", "="):
            self.byteorder = state[1]


_STRUCT_CODES = {"f2": "e", "f4": "f", "f8": "d", "i1": "b", "i2": "h", "i4": "i", "i8": "q",
                 "u1": "B", "u2": "H", "u4": "I", "u8": "Q", "b1": "?"}


@dataclass
class OpaqueNumpyScalar:
    """A numpy scalar of a type we do not decode (kept as raw bytes; never needed by the converter)."""

    code: str
    data: bytes


def _numpy_scalar(dtype: Any, data: Any = b"") -> Any:
    """Decode `numpy.core.multiarray.scalar(dtype, bytes)` for plain numeric types into a Python number."""
    if not isinstance(dtype, _NumpyDType) or not isinstance(data, bytes):
        raise CheckpointFormatError("malformed numpy scalar in the pickle")
    code = dtype.code.lstrip("<>|=")
    fmt = _STRUCT_CODES.get(code)
    if fmt is None or struct.calcsize(fmt) != len(data):
        return OpaqueNumpyScalar(dtype.code, data)
    (value,) = struct.unpack((">" if dtype.byteorder == ">" else "<") + fmt, data)
    return value


# ----------------------------------------------------------------------------------------------------------
# Restricted unpickler


def _int_tuple(t: Any) -> bool:
    return isinstance(t, tuple) and all(isinstance(i, int) and not isinstance(i, bool) for i in t)


_TORCH_DTYPES = {"float16", "float32", "float64", "bfloat16", "half", "float", "double", "int8", "int16", "int32",
                 "int64", "uint8", "bool", "long", "int", "short", "complex64", "complex128"}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose `find_class` resolves only an explicit allow-list; anything else is refused."""

    def __init__(self, file: Any, where: str):
        super().__init__(file)
        self.where = where
        self.allowed: dict[tuple[str, str], Any] = {
            ("collections", "OrderedDict"): OrderedDict,
            ("builtins", "set"): set,
            ("builtins", "frozenset"): frozenset,
            ("torch._utils", "_rebuild_tensor_v2"): self._rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): self._rebuild_parameter,
            ("torch._utils", "_rebuild_parameter_with_state"): self._rebuild_parameter,
            ("torch.storage", "_load_from_bytes"): self._load_storage,
            ("torch", "Size"): torch.Size,
            ("torch", "device"): torch.device,
            ("torch_utils.persistence", "_reconstruct_persistent_obj"): self._persistent_record,
            ("dnnlib.util", "EasyDict"): _EasyDict,
            ("dnnlib", "EasyDict"): _EasyDict,
            ("numpy", "dtype"): _NumpyDType,
            ("numpy.core.multiarray", "scalar"): _numpy_scalar,
            ("numpy._core.multiarray", "scalar"): _numpy_scalar,
        }

    def find_class(self, module: str, name: str) -> Any:
        found = self.allowed.get((module, name))
        if found is not None:
            return found
        if module == "torch" and name in _TORCH_DTYPES:
            return getattr(torch, name)
        hint = ""
        if module.startswith("dnnlib.tflib"):
            hint = " (this is a TensorFlow StyleGAN pickle; convert it with NVIDIA's legacy.py first)"
        raise CheckpointFormatError(f"refusing to load {self.where}: it references '{module}.{name}', which is "
                                    f"not allowed in a stylegan2-ada checkpoint{hint}")

    def persistent_load(self, pid: Any) -> Any:
        raise CheckpointFormatError(f"{self.where}: unexpected persistent id in a plain pickle; refusing it")

    # -- allowed constructors, each checking its arguments before handing them to torch

    def _load_storage(self, data: Any) -> torch.storage.TypedStorage:
        """`torch.storage._load_from_bytes`, but with weights_only=True (torch's own version executes code)."""
        if not isinstance(data, (bytes, bytearray)):
            raise CheckpointFormatError(f"{self.where}: tensor storage is not a bytes blob")
        storage = torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)
        if not isinstance(storage, torch.storage.TypedStorage):
            raise CheckpointFormatError(f"{self.where}: tensor storage blob holds a {type(storage).__name__}")
        return storage

    def _rebuild_tensor(self, storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                        backward_hooks: Any = None, metadata: Any = None) -> torch.Tensor:
        if not (isinstance(storage, torch.storage.TypedStorage) and isinstance(offset, int) and _int_tuple(size)
                and _int_tuple(stride) and len(size) == len(stride)):
            raise CheckpointFormatError(f"{self.where}: malformed tensor in the pickle")
        return torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())

    def _rebuild_parameter(self, data: Any, requires_grad: Any = False, backward_hooks: Any = None,
                           state: Any = None) -> torch.Tensor:
        if not isinstance(data, torch.Tensor):
            raise CheckpointFormatError(f"{self.where}: malformed parameter in the pickle")
        return data.detach()  # we only need the values; no Parameter objects, hooks or state

    def _persistent_record(self, meta: Any) -> PersistentRecord:
        """Stand-in for `torch_utils.persistence._reconstruct_persistent_obj`: never executes `module_src`."""
        if not (isinstance(meta, dict) and isinstance(meta.get("class_name"), str)
                and isinstance(meta.get("state"), dict)):
            raise CheckpointFormatError(f"{self.where}: malformed persistent object record")
        if meta.get("type", "class") != "class":
            raise CheckpointFormatError(f"{self.where}: persistent object of type {meta.get('type')!r}")
        src = meta.get("module_src")
        return PersistentRecord(meta["class_name"], meta["state"], meta.get("version"),
                                len(src) if isinstance(src, str) else 0)


def read_nvidia_pickle(path: str | os.PathLike) -> dict:
    """Unpickle a stylegan2-ada snapshot safely: the top-level dict, with networks as `PersistentRecord`s."""
    path = Path(path)
    try:
        with open(path, "rb") as f, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")
            obj = _RestrictedUnpickler(f, str(path)).load()
    except CheckpointFormatError:
        raise
    except Exception as e:  # noqa: BLE001 - any decoding failure becomes one clear error naming the file
        raise CheckpointFormatError(f"{path}: not a readable stylegan2-ada pickle ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise CheckpointFormatError(f"{path}: expected a stylegan2-ada snapshot dict (G, D, G_ema, ...), got "
                                    f"{type(obj).__name__}")
    return obj
