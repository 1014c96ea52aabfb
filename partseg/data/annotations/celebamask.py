"""CelebAMask-HQ part masks: one binary PNG per image and part, mapped onto the label set."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from partseg.data.annotations.base import Annotation, AnnotationError, _class_of, _open_image, _raster_layer
from partseg.labels import Labels

# CelebAMask-HQ part names in the order of the official face_parsing/Data_preprocessing/g_mask.py (label_list,
# "list2"): each part is painted over the previous ones, so a later part wins where two part masks overlap.
CELEBAMASK_PARTS = ("skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear", "mouth",
                    "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth")
# default part -> FACES class; earrings and necklaces are worn items, like glasses, hats and clothes
CELEBAMASK_TO_FACES: dict[str, str | None] = {
    "skin": "skin", "nose": "nose", "eye_g": "clothes", "l_eye": "eye", "r_eye": "eye", "l_brow": "eyebrow",
    "r_brow": "eyebrow", "l_ear": "ear", "r_ear": "ear", "mouth": "mouth", "u_lip": "mouth", "l_lip": "mouth",
    "hair": "hair", "hat": "clothes", "ear_r": "clothes", "neck_l": "clothes", "neck": "neck", "cloth": "clothes",
}


def celebamask_mapping(labels: Labels, mapping: Mapping[str, str | None] | None = None) -> dict[str, int | None]:
    """Part name -> class index (None: leave the part out).

    Without an explicit mapping: a part maps to the class of the same name when LABELS has one (a label set
    that keeps CelebAMask-HQ's parts), else to its FACES class (`CELEBAMASK_TO_FACES`).
    """
    out: dict[str, int | None] = {}
    if mapping is None:
        for part in CELEBAMASK_PARTS:
            if part in {n.lower() for n in labels.names}:
                out[part] = labels.index(part)
            else:
                target = CELEBAMASK_TO_FACES[part]
                out[part] = None if target is None else _class_of(target, labels, f"CelebAMask-HQ part {part!r}")
        return out
    for part, target in mapping.items():
        out[part] = None if target is None else _class_of(target, labels, f"CelebAMask-HQ mapping of part {part!r}")
    return out


def _part_of(stem: str, parts: Sequence[str]) -> tuple[str, str] | None:
    """'00012_l_eye' -> ('00012', 'l_eye'): the longest known part the name ends with."""
    for part in sorted(parts, key=len, reverse=True):
        if stem.endswith("_" + part) and len(stem) > len(part) + 1:
            return stem[:-len(part) - 1], part
    return None


def read_celebamask_hq(src: str | os.PathLike, labels: Labels,
                       mapping: Mapping[str, str | None] | None = None) -> list[Annotation]:
    """CelebAMask-HQ part masks: `{i:05d}_{part}.png` binary masks (any non-zero pixel is the part), possibly
    spread over subfolders (the official CelebAMask-HQ-mask-anno/0 .. 14). The prefix may also be an image name
    (`seed000003_hair.png`). Parts are painted in the official g_mask.py order, later parts on top.
    """
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"annotation folder not found: {src}")
    table = celebamask_mapping(labels, mapping)
    order = [p for p in CELEBAMASK_PARTS if p in table] + [p for p in table if p not in CELEBAMASK_PARTS]
    groups: dict[str, dict[str, Path]] = {}
    for f in sorted(src.rglob("*.png")):
        hit = _part_of(f.stem, order)
        if hit is None:
            raise AnnotationError(f"{f}: not a CelebAMask-HQ part mask: the name must end in _PART.png with PART one "
                                  f"of {', '.join(order)}")
        prefix, part = hit
        if part in groups.setdefault(prefix, {}):
            raise AnnotationError(f"{f}: part {part!r} of image {prefix!r} appears twice (also "
                                  f"{groups[prefix][part]})")
        groups[prefix][part] = f
    out = []
    for prefix, files in groups.items():
        layers, size = [], None
        for part in order:
            if part not in files or table[part] is None:
                continue
            f = files[part]
            bits = np.asarray(_open_image(f, str(f)).convert("RGB")).any(axis=2)
            size = size or bits.shape
            layers.append(_raster_layer(int(table[part]), f"{f} (part {part!r})", bits))
        first = next(iter(files.values()))
        out.append(Annotation(name=prefix, source=f"{first.parent}/{prefix}_*.png", size=size, layers=layers,
                              index=int(prefix) if prefix.isdigit() else None))
    return out
