"""COCO JSON (also what Label Studio exports): polygons and RLE per annotation, categories by name."""

from __future__ import annotations

import os
from pathlib import Path, PureWindowsPath
from typing import Any

import numpy as np

from partseg.data.annotations.base import (
    Annotation,
    AnnotationError,
    Layer,
    _class_of,
    _points,
    _raster_layer,
    _read_json,
    _union_layer,
)
from partseg.data.annotations.kit import _SKIP_JSON
from partseg.data.dataset import IMAGES
from partseg.data.rle import decode_coco_rle
from partseg.labels import Labels


def _coco_file(src: Path) -> Path:
    if src.is_file():
        return src
    if not src.is_dir():
        raise FileNotFoundError(f"annotation file not found: {src}")
    found = []
    for p in sorted(src.rglob("*.json")):
        if p.name in _SKIP_JSON:
            continue
        d = _read_json(p)
        if isinstance(d, dict) and "images" in d and "annotations" in d:
            found.append(p)
    if len(found) != 1:
        raise AnnotationError(f"{src}: expected exactly one COCO JSON file (with 'images' and 'annotations'), found "
                              f"{[str(p) for p in found]}; pass the file itself")
    return found[0]


def read_coco(src: str | os.PathLike, labels: Labels) -> list[Annotation]:
    """COCO JSON: polygons or RLE (uncompressed or compressed) per annotation, category names mapped by name.

    Annotations are painted in file order (COCO has no z-order). Several polygons in one annotation are one
    region (their union). iscrowd=1 marks a region whose instances are not separated; for part masks it is
    simply a region of its category, so it is painted like the others.
    """
    path = _coco_file(Path(src))
    d = _read_json(path)
    if not isinstance(d, dict) or not isinstance(d.get("images"), list) or not isinstance(d.get("annotations"), list):
        raise AnnotationError(f"{path}: not a COCO file (expected 'images' and 'annotations' lists)")
    cats: dict[Any, str] = {}
    for c in d.get("categories") or []:
        if isinstance(c, dict) and "id" in c:
            cats[c["id"]] = c.get("name")
    images: dict[Any, dict] = {}
    for im in d["images"]:
        if not isinstance(im, dict) or "id" not in im or not isinstance(im.get("file_name"), str):
            raise AnnotationError(f"{path}: every image needs an 'id' and a 'file_name'")
        images[im["id"]] = im
    per_image: dict[Any, list[Layer]] = {k: [] for k in images}
    for k, a in enumerate(d["annotations"]):
        where = f"{path}: annotation {k} (id {a.get('id')!r})" if isinstance(a, dict) else f"{path}: annotation {k}"
        if not isinstance(a, dict):
            raise AnnotationError(f"{where}: must be an object")
        if a.get("image_id") not in images:
            raise AnnotationError(f"{where}: image_id {a.get('image_id')!r} is not in 'images'")
        if a.get("category_id") not in cats:
            raise AnnotationError(f"{where}: category_id {a.get('category_id')!r} is not in 'categories'")
        cls = _class_of(cats[a["category_id"]], labels, where)
        im = images[a["image_id"]]
        what = f"{where} ({cats[a['category_id']]!r}{', crowd' if a.get('iscrowd') else ''})"
        seg = a.get("segmentation")
        if isinstance(seg, list) and seg:
            polys = []
            for j, p in enumerate(seg):
                if not isinstance(p, list) or len(p) < 6 or len(p) % 2:
                    raise AnnotationError(f"{where}: polygon {j} must be a flat [x1, y1, x2, y2, ...] list of at "
                                          f"least 3 points")
                polys.append(_points(np.asarray(p, dtype=object).reshape(-1, 2).tolist(), f"{where} polygon {j}", 3))
            per_image[a["image_id"]].append(_union_layer(cls, what, polys))
        elif isinstance(seg, dict):
            size = seg.get("size")
            if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)):
                raise AnnotationError(f"{where}: RLE needs 'size': [height, width]")
            if "height" in im and "width" in im and list(size) != [im["height"], im["width"]]:
                raise AnnotationError(f"{where}: size mismatch: RLE size is {size[1]}x{size[0]} (WxH) but image "
                                      f"{im['file_name']!r} is {im['width']}x{im['height']}")
            if not isinstance(seg.get("counts"), (str, list)):
                raise AnnotationError(f"{where}: RLE needs 'counts' (a list or a compressed string)")
            bits = decode_coco_rle(seg["counts"], size[0], size[1], where)
            per_image[a["image_id"]].append(_raster_layer(cls, what, bits))
        else:
            raise AnnotationError(f"{where}: no 'segmentation' (polygons or RLE); boxes alone are not part masks")
    out = []
    for key, im in images.items():
        rel = Path(PureWindowsPath(im["file_name"]).as_posix())
        size = None
        if "height" in im and "width" in im:
            try:
                size = (int(im["height"]), int(im["width"]))
            except (TypeError, ValueError):
                raise AnnotationError(f"{path}: image {im['file_name']!r}: height/width must be integers") from None
        out.append(Annotation(name=rel.stem, source=f"{path}: image {im['file_name']!r}", size=size,
                              layers=per_image[key], image_hints=[path.parent / rel, path.parent / IMAGES / rel,
                                                                  path.parent.parent / IMAGES / rel]))
    return out
