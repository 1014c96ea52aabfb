"""UNet checkpoint -> float32 ONNX with dynamic batch, height and width, and the metadata it needs to run alone.

The graph is traced by torch.export (`dynamo=True`) with height and width declared as multiples of the UNet's
stride; BatchNorm is folded into the convs first. Labels, colours, normalisation, stride and training size go into
the model's metadata_props, so `partseg.runtime.Segmenter.load("model.onnx")` (and the service) need nothing else.
The written file is checked with `onnx.checker` (full check) and compared against PyTorch before it is kept.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from partseg.atomic import atomic_path
from partseg.distill.unet import fold_batchnorm, load_unet, resolve_unet_file, unet_stride
from partseg.runtime.segmenter import ModelInfo, Parity, Segmenter, TorchBackend, compare, parity_images

DEFAULT_OPSET = 18
MAX_SIDE = 8192  # upper bound declared for dynamic height/width


@dataclass
class OnnxExport:
    path: Path
    info: ModelInfo
    opset: int
    parity: list[Parity]

    @property
    def worst(self) -> Parity:
        return min(self.parity, key=lambda p: (p.argmax_agreement, -p.max_abs_logit))


def export_onnx(unet: str | os.PathLike, out: str | os.PathLike, opset: int = DEFAULT_OPSET,
                min_agreement: float = 0.999, max_logit: float = 1e-3, verbose: bool = False) -> OnnxExport:
    """Export, check and compare; the file at `out` appears only if every check passes."""
    import onnx
    from torch.export import Dim

    unet, out = resolve_unet_file(unet), Path(out)
    model, labels, meta = load_unet(unet, with_meta=True)
    if labels is None:
        raise ValueError(f"{unet}: the UNet file stores no labels, so the ONNX file could not carry them")
    size = meta.get("train_resolution")
    info = ModelInfo(labels, unet_stride(model.cfg), int(size) if size else None, source=unet.name)
    folded = fold_batchnorm(model)
    s = info.stride
    example = torch.zeros(2, 3, 4 * s, 4 * s)
    batch, h, w = Dim("batch", min=1, max=4096), Dim("h", min=1, max=MAX_SIDE // s), Dim("w", min=1, max=MAX_SIDE // s)
    # torch.export's deprecation notices and the exporter's "torchvision is not installed" lines say nothing about
    # this model (a UNet uses no torchvision op); the export's own errors still raise
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        try:
            program = torch.onnx.export(folded, (example,), dynamo=True, opset_version=opset, input_names=["image"],
                                        output_names=["logits"], verbose=verbose,
                                        dynamic_shapes={"x": {0: batch, 2: s * h, 3: s * w}})
        finally:
            registration.setLevel(level)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "model.onnx"
        program.save(str(staged))
        proto = onnx.load(str(staged))
        proto.doc_string = f"partseg UNet exported from {unet.name}: image [N, 3, H, W] in [-1, 1] -> logits"
        del proto.metadata_props[:]
        for k, v in info.to_metadata().items():
            proto.metadata_props.add(key=k, value=v)
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(staged))
        reference = Segmenter(TorchBackend(model), info, input_size=None)
        candidate = Segmenter.load(staged, input_size=None)
        parity = [compare(reference, candidate, batch) for batch in parity_images(info)]
        bad = [p for p in parity if not p.ok(min_agreement, max_logit)]
        if bad:
            raise RuntimeError(f"ONNX export of {unet} failed its parity check against PyTorch: {bad[0]} "
                               f"(limits: agreement >= {100 * min_agreement}%, |logit diff| <= {max_logit})")
        with atomic_path(out) as final:
            final.write_bytes(staged.read_bytes())
    return OnnxExport(out, info, opset, parity)
