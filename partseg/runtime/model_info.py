"""What every runtime backend needs besides the weights (labels, stride, input size, normalisation), and the
file kinds: shared by the Segmenter and the TensorRT backend, which imports it rather than the Segmenter."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from partseg.labels import Labels

RUNTIME_FORMAT = "partseg.segmenter"
NORMALISATION = "x / 127.5 - 1"  # uint8 RGB -> [-1, 1], what every partseg UNet is trained on
ONNX_SUFFIXES = {".onnx"}
ENGINE_SUFFIXES = {".plan", ".engine", ".trt"}


@dataclass
class ModelInfo:
    """What any runtime needs besides the weights; stored in the UNet file, the ONNX metadata and the TRT sidecar."""

    labels: Labels
    stride: int  # height and width fed to the network are multiples of this
    input_size: int | None = None  # resolution the network was trained at (the default resize target)
    normalisation: str = NORMALISATION
    source: str = ""  # the file it was exported from

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_metadata(self) -> dict[str, str]:
        """Flat string key/values (ONNX metadata_props, JSON sidecars)."""
        return {"format": RUNTIME_FORMAT, "labels": self.labels.to_json(), "stride": str(self.stride),
                "input_size": "" if self.input_size is None else str(self.input_size),
                "normalisation": self.normalisation, "num_classes": str(self.num_classes), "source": self.source}

    @classmethod
    def from_metadata(cls, meta: dict[str, str], where: str) -> ModelInfo:
        if meta.get("format") != RUNTIME_FORMAT:
            raise ValueError(f"{where}: no partseg metadata (key 'format' is {meta.get('format')!r}, expected "
                             f"{RUNTIME_FORMAT!r}); export it with `partseg export onnx`")
        missing = [k for k in ("labels", "stride", "normalisation") if k not in meta]
        if missing:
            raise ValueError(f"{where}: partseg metadata lacks {', '.join(missing)}")
        if meta["normalisation"] != NORMALISATION:
            raise ValueError(f"{where}: input normalisation {meta['normalisation']!r} is not supported "
                             f"(expected {NORMALISATION!r})")
        labels = Labels.from_json(meta["labels"], source=f"{where} metadata")
        n = meta.get("num_classes")
        if n and int(n) != len(labels):
            raise ValueError(f"{where}: metadata says {n} classes but its labels list {len(labels)}")
        size = meta.get("input_size") or None
        return cls(labels=labels, stride=int(meta["stride"]), input_size=int(size) if size else None,
                   normalisation=meta["normalisation"], source=meta.get("source", ""))

    def to_json(self) -> str:
        d = asdict(self)
        d["labels"] = self.labels.to_dict()
        return json.dumps(d)
