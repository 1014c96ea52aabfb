"""CVAT for images 1.1 XML: polygons, boxes, ellipses and brush masks, painted by z-order."""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from pathlib import Path, PureWindowsPath

import numpy as np

from partseg.data.annotations.base import (
    Annotation,
    AnnotationError,
    Layer,
    _class_of,
    _points,
    _polygon_layer,
    _raster_layer,
)
from partseg.data.annotations.rasterize import rasterize_ellipse
from partseg.data.dataset import IMAGES
from partseg.labels import Labels


def _cvat_float(el: ET.Element, key: str, where: str) -> float:
    try:
        v = float(el.attrib[key])
    except KeyError:
        raise AnnotationError(f"{where}: missing attribute {key!r}") from None
    except ValueError:
        raise AnnotationError(f"{where}: attribute {key}={el.attrib[key]!r} is not a number") from None
    if not math.isfinite(v):
        raise AnnotationError(f"{where}: attribute {key} is not finite")
    return v


def _cvat_shape(el: ET.Element, labels: Labels, where: str) -> Layer | None:
    tag = el.tag
    if tag == "tag":  # an image-level tag has no pixels
        return None
    label = el.get("label")
    cls = _class_of(label, labels, where)
    what = f"{where} (<{tag}> {label!r})"
    if tag == "polygon":
        try:
            pts = [[float(v) for v in p.split(",")] for p in (el.get("points") or "").strip().split(";") if p.strip()]
        except ValueError:
            raise AnnotationError(f"{where}: points must be 'x,y;x,y;...', got {el.get('points')!r:.80}") from None
        return _polygon_layer(cls, what, _points(pts, where, 3))
    if tag in ("box", "ellipse") and "rotation" in el.attrib and _cvat_float(el, "rotation", where) % 360 != 0:
        raise AnnotationError(f"{where}: rotated <{tag}> (rotation={el.get('rotation')}) is not supported; draw it "
                              f"as a polygon")
    if tag == "box":
        x0, y0, x1, y1 = (_cvat_float(el, k, where) for k in ("xtl", "ytl", "xbr", "ybr"))
        return _polygon_layer(cls, what, np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]))
    if tag == "ellipse":
        cx, cy, rx, ry = (_cvat_float(el, k, where) for k in ("cx", "cy", "rx", "ry"))
        return Layer(cls, what, lambda h, w: rasterize_ellipse(cx, cy, rx, ry, h, w))
    if tag == "mask":  # brush masks: run lengths (0s first) over a left/top/width/height box, row by row
        left, top, mw, mh = (int(_cvat_float(el, k, where)) for k in ("left", "top", "width", "height"))
        try:
            runs = [int(v) for v in (el.get("rle") or "").split(",") if v.strip()]
        except ValueError:
            raise AnnotationError(f"{where}: rle must be comma-separated integers") from None
        if any(r < 0 for r in runs) or sum(runs) != mw * mh:
            raise AnnotationError(f"{where}: rle covers {sum(runs)} pixels but the mask box is {mw}x{mh}")
        values = np.zeros(len(runs), dtype=bool)
        values[1::2] = True
        bits = np.repeat(values, runs).reshape(mh, mw)
        return _raster_layer(cls, what, bits, top=top, left=left, whole=False)
    raise AnnotationError(f"{where}: <{tag}> has no area (or is not supported); draw parts as polygons, boxes, "
                          f"ellipses or masks")


def read_cvat(src: str | os.PathLike, labels: Labels) -> list[Annotation]:
    """CVAT for images 1.1 XML (the file, or a folder holding annotations.xml as in CVAT's export zip).

    Shapes are painted by increasing z_order (CVAT: bigger is closer to the camera), ties in file order.
    """
    src = Path(src)
    if src.is_dir():
        path = src / "annotations.xml"
        if not path.is_file():
            xmls = sorted(src.glob("*.xml"))
            if len(xmls) != 1:
                raise AnnotationError(f"{src}: expected annotations.xml (or exactly one .xml file), found "
                                      f"{[p.name for p in xmls]}")
            path = xmls[0]
    elif src.is_file():
        path = src
    else:
        raise FileNotFoundError(f"annotation file not found: {src}")
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise AnnotationError(f"{path}: unreadable CVAT XML: {e}") from None
    if root.tag != "annotations":
        raise AnnotationError(f"{path}: not a CVAT XML file (root element <{root.tag}>, expected <annotations>)")
    if root.find("track") is not None:
        raise AnnotationError(f"{path}: this is a 'CVAT for video' export (it has <track> elements); export the task "
                              f"as 'CVAT for images 1.1'")
    out = []
    for image in root.iter("image"):
        name = image.get("name")
        if not name:
            raise AnnotationError(f"{path}: <image id={image.get('id')!r}> without a name")
        where = f"{path}: image {name!r}"
        try:
            size = (int(image.attrib["height"]), int(image.attrib["width"]))
        except (KeyError, ValueError):
            size = None
        shapes = []
        for i, el in enumerate(image):
            layer = _cvat_shape(el, labels, f"{where} element {i}")
            if layer is not None:
                try:
                    z = int(float(el.get("z_order") or 0))
                except ValueError:
                    raise AnnotationError(f"{where} element {i}: z_order {el.get('z_order')!r} is not a "
                                          f"number") from None
                shapes.append((z, i, layer))
        shapes.sort(key=lambda t: (t[0], t[1]))
        rel = Path(PureWindowsPath(name).as_posix())
        out.append(Annotation(name=rel.stem, source=where, size=size, layers=[s[2] for s in shapes],
                              image_hints=[path.parent / rel, path.parent / IMAGES / rel]))
    return out
