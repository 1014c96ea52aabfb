"""Importing annotations: read any format, find and check each image, paint its mask, and write ONE canonical set
in the data-set layout (all images or none), carrying the kit's latents for the annotated samples."""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from partseg.data.annotations.base import (
    FORMATS,
    OVERLAP,
    UNLABELLED,
    Annotation,
    AnnotationError,
    AnnotationWarning,
    EmptyMaskError,
    _open_image,
    build_then_move,
    check_out_folder,
)
from partseg.data.annotations.celebamask import read_celebamask_hq
from partseg.data.annotations.coco import read_coco
from partseg.data.annotations.cvat import read_cvat
from partseg.data.annotations.kit import _Kit, _load_kit
from partseg.data.annotations.labelme import read_labelme
from partseg.data.annotations.png import read_png
from partseg.data.dataset import IMAGE_SUFFIXES, IMAGES, MASKS, write_image, write_mask
from partseg.labels import FACES, IGNORE, LABELS_FILE, Labels

# Label Studio renames uploaded files "<8 hex>-<original name>"; its exports then name images that way
_LABEL_STUDIO_PREFIX = re.compile(r"^[0-9a-f]{8}-(.+)$")


def _labels_arg(labels: Labels | str | os.PathLike | None) -> Labels | None:
    if labels is None or isinstance(labels, Labels):
        return labels
    return Labels.load(labels)


def _paint(ann: Annotation, h: int, w: int, unlabelled: str, overlap: str) -> np.ndarray:
    mask = np.full((h, w), 0 if unlabelled == "background" else IGNORE, dtype=np.uint8)
    owner = np.full((h, w), -1, dtype=np.int32) if overlap == "error" else None
    for k, layer in enumerate(ann.layers):
        cov = layer.cover(h, w)
        if owner is not None:
            clash = cov & (owner >= 0) & (mask != layer.cls)
            if clash.any():
                other = ann.layers[int(owner[clash][0])].what
                other = other[len(ann.source):].lstrip(": ") if other.startswith(ann.source) else other
                raise AnnotationError(f"{layer.what} overlaps {other} on {int(clash.sum())} pixels with a "
                                      f"different class (overlap='error'; use overlap='z-order' to let the later "
                                      f"shape win)")
            owner[cov] = k
        mask[cov] = layer.cls
    return mask


def _find_image(name: str, images: Path | None, hints: Sequence[Path]) -> Path | None:
    if images is not None:
        for suffix in IMAGE_SUFFIXES:
            for cand in (images / f"{name}{suffix}", images / f"{name}{suffix.upper()}"):
                if cand.is_file():
                    return cand
    for h in hints:
        if h.is_file():
            return h
    return None


def _image_by_number(i: int, images: Path | None) -> Path | None:
    if images is None or not images.is_dir():
        return None
    for p in sorted(images.iterdir()):
        if p.suffix.lower() in IMAGE_SUFFIXES and p.stem.isdigit() and int(p.stem) == i:
            return p
    return None


@dataclass
class _Resolved:
    name: str
    image: np.ndarray
    mask: np.ndarray
    kit_row: tuple[int, int] | None  # (row, seed) in the kit's latents; None for a real image


def _resolve(ann: Annotation, kit: _Kit | None, images: Path | None, allow_real: bool, unlabelled: str,
             overlap: str) -> _Resolved:
    name, path, data = ann.name, None, None
    if ann.index is not None and kit is not None:
        if ann.index >= len(kit.order):
            raise AnnotationError(f"{ann.source}: image number {ann.index} but the kit has {len(kit.order)} images "
                                  f"(numbers are positions in the kit, 0-{len(kit.order) - 1})")
        name = kit.order[ann.index]
    elif ann.index is not None:
        path = _image_by_number(ann.index, images)
        if path is None:
            raise AnnotationError(f"{ann.source}: no image numbered {ann.index} in --images "
                                  f"{images if images is not None else '(not given)'}")
        name = path.stem
    if kit is not None and name not in kit.rows:
        m = _LABEL_STUDIO_PREFIX.match(name)
        if m and m.group(1) in kit.rows:
            name = m.group(1)
    row = kit.rows.get(name) if kit is not None else None
    if row is not None:
        path = kit.root / IMAGES / f"{name}.png"
        if not path.is_file():
            raise AnnotationError(f"{ann.source}: the kit's image {path} is missing")
    else:
        if kit is not None and not allow_real:
            raise AnnotationError(f"{ann.source}: image {name!r} is not in the kit {kit.root} (so it has no latent); "
                                  f"pass allow_real=True (--allow-real) to import it as a real image")
        if path is None:
            path = _find_image(name, images, ann.image_hints)
            if path is None:
                m = _LABEL_STUDIO_PREFIX.match(name)
                if m:
                    path = _find_image(m.group(1), images, [])
                    name = m.group(1) if path is not None else name
        if path is None and ann.image_bytes is not None:
            data = ann.image_bytes
        if path is None and data is None:
            looked = [str(images)] if images is not None else []
            looked += [str(h) for h in ann.image_hints]
            raise AnnotationError(f"{ann.source}: no image found for {name!r} (looked in: "
                                  f"{', '.join(looked) or 'nothing; pass --images DIR or --kit KIT'})")
    where = str(path) if path is not None else f"{ann.source} (embedded imageData)"
    image = np.asarray(_open_image(path if path is not None else data, where).convert("RGB"), dtype=np.uint8)
    h, w = image.shape[:2]
    if ann.size is not None and tuple(ann.size) != (h, w):
        raise AnnotationError(f"{ann.source}: size mismatch: the annotation is {ann.size[1]}x{ann.size[0]} (WxH) "
                              f"but its image {where} is {w}x{h}; images must not be resized")
    mask = ann.mask if ann.mask is not None else _paint(ann, h, w, unlabelled, overlap)
    if not ((mask != 0) & (mask != IGNORE)).any():
        raise EmptyMaskError(f"{ann.source}: empty mask: no pixel of any part class (all background or "
                              f"unlabelled); was the image annotated? (skip_empty=True / --skip-empty leaves such "
                              f"images out)")
    return _Resolved(name, image, mask, row)


def import_annotations(src: str | os.PathLike, fmt: str, labels: Labels | str | os.PathLike | None,
                       out: str | os.PathLike, kit: str | os.PathLike | None = None, *,
                       images: str | os.PathLike | None = None, unlabelled: str = "background",
                       overlap: str = "z-order", allow_real: bool = False, skip_empty: bool = False,
                       mapping: Mapping[str, str | None] | None = None, overwrite: bool = False) -> Path:
    """Read annotations in `fmt` from `src` and write ONE canonical set in the data-set layout at `out`.

    out/labels.json, out/images/NAME.png, out/masks/NAME.png and, with a kit, out/latents.safetensors +
    out/samples.json holding exactly the annotated generated images' latents (real images, allowed with
    allow_real=True, are recorded with "latent": null). Every problem found is reported at once in one
    AnnotationError naming each file; nothing is written unless all images import cleanly.

    labels: Labels or a labels.json path; default the kit's labels, else FACES.
    unlabelled: what pixels no shape covers become in vector formats ('background' = class 0, or 'ignore').
    overlap: 'z-order' (later/higher shapes win) or 'error' (shapes of different classes must not overlap).
    mapping: CelebAMask-HQ part -> class name (None to drop a part); default `celebamask_mapping`.
    """
    from safetensors.torch import save_file

    from partseg.atomic import atomic_write_text
    from partseg.data.samples import INDEX_FILE, LATENTS_FILE

    if fmt not in FORMATS:
        raise AnnotationError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if unlabelled not in UNLABELLED:
        raise AnnotationError(f"unlabelled must be one of {UNLABELLED}, got {unlabelled!r}")
    if overlap not in OVERLAP:
        raise AnnotationError(f"overlap must be one of {OVERLAP}, got {overlap!r}")
    out = Path(out)
    check_out_folder(out, overwrite)
    the_kit = _load_kit(kit) if kit is not None else None
    lab = _labels_arg(labels)
    if the_kit is not None:
        if lab is not None and lab != the_kit.labels:
            raise AnnotationError(f"the given labels differ from the kit's {the_kit.root / LABELS_FILE} (classes "
                                  f"{', '.join(lab.names)} vs {', '.join(the_kit.labels.names)}); leave --labels "
                                  f"out to use the kit's")
        lab = the_kit.labels
    lab = lab or FACES
    images_dir = Path(images) if images is not None else None
    if images_dir is not None and not images_dir.is_dir():
        raise FileNotFoundError(f"--images folder not found: {images_dir}")

    if fmt == "png":
        anns = read_png(src, lab)
    elif fmt == "labelme":
        anns = read_labelme(src, lab)
    elif fmt == "cvat":
        anns = read_cvat(src, lab)
    elif fmt == "coco":
        anns = read_coco(src, lab)
    else:
        anns = read_celebamask_hq(src, lab, mapping)
    if not anns:
        raise AnnotationError(f"{src}: no {fmt} annotations found")

    done: dict[str, _Resolved] = {}
    sources: dict[str, str] = {}
    errors: list[str] = []
    for ann in anns:
        try:
            r = _resolve(ann, the_kit, images_dir, allow_real, unlabelled, overlap)
        except EmptyMaskError as e:
            if skip_empty:
                warnings.warn(f"{ann.source}: empty mask, left out", AnnotationWarning, stacklevel=2)
            else:
                errors.append(str(e))
            continue
        except AnnotationError as e:
            errors.append(str(e))
            continue
        if r.name in done:
            errors.append(f"{ann.source}: image {r.name!r} is annotated twice (also in {sources[r.name]})")
            continue
        done[r.name], sources[r.name] = r, ann.source
    if errors:
        head = f"{len(errors)} problem{'s' if len(errors) > 1 else ''} importing {fmt} annotations from {src}"
        raise AnnotationError(head + ":\n  - " + "\n  - ".join(errors[:50])
                              + (f"\n  ... and {len(errors) - 50} more" if len(errors) > 50 else ""))
    if not done:
        raise AnnotationError(f"{src}: no non-empty annotation to import")

    def build(tmp: Path) -> None:
        lab.save(tmp / LABELS_FILE)
        for name in sorted(done):
            r = done[name]
            write_image(tmp / IMAGES / f"{name}.png", r.image)
            write_mask(tmp / MASKS / f"{name}.png", r.mask, lab)
        if the_kit is None:
            return
        generated = [n for n in sorted(done) if done[n].kit_row is not None]
        entries = []
        for name in sorted(done):
            row = done[name].kit_row
            if row is None:
                entries.append({"file": f"{IMAGES}/{name}.png", "seed": None, "index": None, "latent": None,
                                "real": True})
            else:
                entries.append({"file": f"{IMAGES}/{name}.png", "seed": row[1], "index": generated.index(name),
                                "real": False})
        if generated:
            rows = torch.tensor([done[n].kit_row[0] for n in generated], dtype=torch.long)
            save_file({k: the_kit.latents[k][rows].contiguous() for k in ("z", "ws", "seeds")},
                      str(tmp / LATENTS_FILE))
        index = {"generator": the_kit.index.get("generator", ""), "truncation": the_kit.index.get("truncation"),
                 "noise_mode": the_kit.index.get("noise_mode"), "latents": LATENTS_FILE if generated else None,
                 "kit": str(the_kit.root), "annotations": {"format": fmt, "source": str(src)}, "samples": entries}
        atomic_write_text(json.dumps(index, indent=1), tmp / INDEX_FILE)

    return build_then_move(out, overwrite, build)
