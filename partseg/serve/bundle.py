"""Packaged models: the bundle layout in BentoML's model store, packaging, and the backend chosen at start-up."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from partseg.labels import Labels
from partseg.serve.config import BUNDLE_FILE, BUNDLE_FORMAT, DEFAULT_MODEL_NAME, ServeConfig

log = logging.getLogger("partseg.serve")


@dataclass
class Artefact:
    kind: str  # tensorrt | onnxruntime | torch
    file: str  # relative to the bundle folder
    extra: list[str] = field(default_factory=list)  # sidecar files that travel with it


ORDER = ("tensorrt", "onnxruntime", "torch")
KIND_OF_SUFFIX = {".plan": "tensorrt", ".engine": "tensorrt", ".trt": "tensorrt", ".onnx": "onnxruntime",
                  ".safetensors": "torch"}


@dataclass
class Bundle:
    """A packaged segmenter in the model store: artefacts (any of TensorRT engine, ONNX, UNet), labels, model info
    and optionally the generator + few-shot head of the inversion mode."""

    root: Path
    artefacts: list[Artefact]
    labels: Labels
    info: dict[str, str]  # ModelInfo.to_metadata() of the first artefact
    generator: str | None = None
    head: str | None = None

    @property
    def has_inversion(self) -> bool:
        return self.generator is not None and self.head is not None

    @classmethod
    def open(cls, root: str | os.PathLike) -> Bundle:
        root = Path(root)
        path = root / BUNDLE_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{root}: not a partseg model ({BUNDLE_FILE} is missing); package one with "
                                    f"`partseg serve package`")
        d = json.loads(path.read_text())
        if d.get("format") != BUNDLE_FORMAT:
            raise ValueError(f"{path}: format {d.get('format')!r}, expected {BUNDLE_FORMAT!r}")
        arts = [Artefact(**a) for a in d["artefacts"]]
        labels = Labels.from_dict(d["labels"], source=str(path))
        inv = d.get("inversion") or {}
        return cls(root, arts, labels, d["info"], inv.get("generator"), inv.get("head"))

    def path(self, rel: str) -> Path:
        return self.root / rel


def _artefact_info(path: Path) -> tuple[str, Any]:
    """(kind, ModelInfo) of a model file, checked by loading it on the CPU (a TensorRT engine: its metadata only)."""
    from partseg.runtime.segmenter import ModelInfo, Segmenter, read_onnx_info

    kind = KIND_OF_SUFFIX.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"{path}: unknown model file type {path.suffix!r}; expected a UNet .safetensors, an .onnx "
                         f"file or a TensorRT engine (.plan, .engine, .trt)")
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    if kind == "tensorrt":
        try:
            from partseg.runtime.tensorrt import read_engine_info  # type: ignore[import-not-found]
        except ImportError as e:
            raise ValueError(f"{path}: reading a TensorRT engine's metadata needs partseg.runtime.tensorrt, which "
                             f"this install lacks ({e})") from e
        info = read_engine_info(path)
        if not isinstance(info, ModelInfo):
            raise ValueError(f"{path}: no partseg metadata found for this engine")
        return kind, info
    if kind == "onnxruntime":
        read_onnx_info(path)
    seg = Segmenter.load(path, device="cpu", **({"providers": ["CPUExecutionProvider"]} if kind == "onnxruntime"
                                                  else {}))
    s = seg.info.stride
    seg.predict([np.zeros((s, s, 3), np.uint8)])  # the file really runs
    return kind, seg.info


def _sidecars(path: Path) -> list[Path]:
    """Files next to a TensorRT engine that carry its metadata (`model.plan.json`, `model.json`, ...)."""
    out = []
    for p in sorted(path.parent.iterdir()):
        if p == path or not p.is_file():
            continue
        if p.name.startswith(path.name + ".") or (p.stem == path.stem and p.suffix.lower() == ".json"):
            out.append(p)
    return out


def stage_bundle(artefacts: Sequence[str | os.PathLike], out: str | os.PathLike, gan: str | None = None,
                 head: str | os.PathLike | None = None) -> Bundle:
    """Check the artefacts (and generator + head) and copy them into the folder `out` as a bundle."""
    from partseg.distill.unet import resolve_unet_file
    from partseg.runtime.segmenter import ModelInfo

    out = Path(out)
    if not artefacts:
        raise ValueError("nothing to package: give a UNet .safetensors, an .onnx file and/or a TensorRT engine")
    if (gan is None) != (head is None):
        raise ValueError("the inversion mode needs both --gan (generator) and --head (few-shot head)")
    paths = [resolve_unet_file(a) for a in artefacts]  # a run folder stands for its best (else last) UNet
    infos: list[tuple[Path, str, ModelInfo]] = []
    for p in paths:
        kind, info = _artefact_info(p)
        if any(k == kind for _, k, _ in infos):
            raise ValueError(f"{p}: two {kind} artefacts given; package one file per backend")
        infos.append((p, kind, info))
    first = infos[0][2]
    for p, _, info in infos[1:]:
        if info.labels != first.labels or info.stride != first.stride:
            raise ValueError(f"{p}: its labels/stride differ from {infos[0][0]}'s; package artefacts of one model")
    out.mkdir(parents=True, exist_ok=True)
    arts = []
    for p, kind, _ in sorted(infos, key=lambda t: ORDER.index(t[1])):
        name = {"tensorrt": "model" + p.suffix.lower(), "onnxruntime": "model.onnx", "torch": "unet.safetensors"}[kind]
        shutil.copyfile(p, out / name)
        extra = []
        if kind == "tensorrt":
            for side in _sidecars(p):
                dest = name + side.name[len(p.name):] if side.name.startswith(p.name) else "model" + side.suffix
                shutil.copyfile(side, out / dest)
                extra.append(dest)
        arts.append(Artefact(kind, name, extra))
    inversion = None
    if gan is not None:
        inversion = _stage_inversion(gan, Path(head), first.labels, out)  # type: ignore[arg-type]
    manifest = {"format": BUNDLE_FORMAT, "version": 1, "artefacts": [asdict(a) for a in arts],
                "labels": first.labels.to_dict(), "info": first.to_metadata(), "inversion": inversion,
                "sources": [str(p.resolve()) for p, _, _ in infos]}
    (out / BUNDLE_FILE).write_text(json.dumps(manifest, indent=1))
    first.labels.save(out / "labels.json")
    return Bundle.open(out)


def _stage_inversion(gan: str, head: Path, labels: Labels, out: Path) -> dict[str, str]:
    from partseg.fewshot.learner import FewShotHead
    from partseg.gan import load_generator, save_generator

    G = load_generator(gan)
    h = FewShotHead.load(head, G)  # refuses a head trained on another generator
    if tuple(h.labels.names) != tuple(labels.names):
        raise ValueError(f"{head}: the head's classes {list(h.labels.names)} differ from the segmenter's "
                         f"{list(labels.names)}; package a head with the same labels")
    (out / "inversion").mkdir(exist_ok=True)
    save_generator(G, out / "inversion" / "generator.safetensors")
    shutil.copyfile(head, out / "inversion" / "head.safetensors")
    staged = out / "inversion"
    FewShotHead.load(staged / "head.safetensors", load_generator(staged / "generator.safetensors"))  # still pairs
    return {"generator": "inversion/generator.safetensors", "head": "inversion/head.safetensors",
            "gan_source": str(gan), "head_source": str(head.resolve())}


def package_model(artefacts: Sequence[str | os.PathLike], name: str = DEFAULT_MODEL_NAME, gan: str | None = None,
                  head: str | os.PathLike | None = None) -> str:
    """Save a bundle into BentoML's model store (BENTOML_HOME) with bentoml.models.create; returns the tag."""
    import bentoml

    with bentoml.models.create(name, labels={"project": "partseg"}) as model:
        bundle = stage_bundle(artefacts, model.path, gan=gan, head=head)
        model.info.metadata.update({"backends": ",".join(a.kind for a in bundle.artefacts),
                                    "classes": ",".join(bundle.labels.names),
                                    "inversion": bundle.has_inversion})
    return str(model.tag)


# ------------------------------------------------------------------------------------------------ backend choice


@dataclass
class Loaded:
    segmenter: Any  # partseg.runtime.segmenter.Segmenter
    backend: str  # e.g. onnxruntime-cpu, onnxruntime-cuda, tensorrt, torch-cpu
    artefact: str
    skipped: list[str]  # why better candidates were not used


def candidates(bundle: Bundle, cfg: ServeConfig, gpu: bool) -> tuple[list[Artefact], list[str]]:
    """Artefacts to try in order: TensorRT (GPU only) > onnxruntime (CUDA with a GPU, else CPU) > PyTorch."""
    arts = sorted(bundle.artefacts, key=lambda a: ORDER.index(a.kind))
    skipped = []
    if cfg.backend != "auto":
        chosen = [a for a in arts if a.kind == cfg.backend]
        if not chosen:
            raise ValueError(f"PARTSEG_BACKEND={cfg.backend} but the packaged model has only "
                             f"{', '.join(a.kind for a in arts)}")
        arts = chosen
    out = []
    for a in arts:
        if a.kind == "tensorrt" and not gpu:
            skipped.append(f"{a.file}: TensorRT needs a GPU")
            continue
        out.append(a)
    return out, skipped


def load_segmenter(bundle: Bundle, cfg: ServeConfig, gpu: bool) -> Loaded:
    """The best artefact that loads here; each failure is logged and the next one is tried."""
    from partseg.runtime.segmenter import Segmenter

    order, skipped = candidates(bundle, cfg, gpu)
    for a in order:
        opts: dict[str, Any] = {}
        if a.kind == "onnxruntime":
            if not gpu:
                opts["providers"] = ["CPUExecutionProvider"]
            if cfg.threads:
                opts["threads"] = cfg.threads
        try:
            seg = Segmenter.load(bundle.path(a.file), device=None if gpu else "cpu", max_batch=cfg.max_batch_size,
                                 **opts)
        except Exception as e:  # noqa: BLE001 - any failure means: try the next artefact
            log.warning("partseg: cannot use %s (%s); trying the next artefact", a.file, e)
            skipped.append(f"{a.file}: {e}")
            continue
        return Loaded(seg, getattr(seg.backend, "name", a.kind), a.file, skipped)
    raise RuntimeError(f"{bundle.root}: no packaged artefact could be loaded here: {'; '.join(skipped)}")

