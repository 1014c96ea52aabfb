"""The annotation kit's layout: the files beside the images (annotators' README, LabelMe label list, CVAT and
Label Studio label configs) and reading a kit back (its labels, samples.json and latents)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from partseg.data.annotations.base import IGNORE_NAME, AnnotationError, _read_json
from partseg.data.samples import INDEX_FILE, LATENTS_FILE
from partseg.labels import LABELS_FILE, Labels

KIT_README = "README.md"
LABELME_LABELS = "labelme_labels.txt"
CVAT_LABELS = "cvat_labels.json"
LABEL_STUDIO_CONFIG = "label_studio_config.xml"

_SKIP_JSON = {LABELS_FILE, INDEX_FILE, CVAT_LABELS}  # JSON files in a kit that hold no annotation


@dataclass
class _Kit:
    root: Path
    labels: Labels
    index: dict
    latents: dict[str, torch.Tensor]
    rows: dict[str, tuple[int, int]]  # image name -> (row in the latents, seed)
    order: list[str]  # image names in sample order


def _load_kit(kit: str | os.PathLike) -> _Kit:
    from safetensors.torch import load_file

    root = Path(kit)
    if not (root / INDEX_FILE).is_file():
        raise FileNotFoundError(f"{root}: not an annotation kit (no {INDEX_FILE}; write one with "
                                f"`partseg annotate export`)")
    labels = Labels.load(root / LABELS_FILE)
    index = _read_json(root / INDEX_FILE)
    lat_path = root / (index.get("latents") or LATENTS_FILE)
    try:
        latents = load_file(str(lat_path))
    except Exception as e:  # safetensors raises several types for a bad file
        raise AnnotationError(f"{lat_path}: unreadable latents: {e}") from None
    rows, order = {}, []
    n = len(latents.get("seeds", []))
    for s in index.get("samples", []):
        name, row = Path(s["file"]).stem, s.get("index")
        if s.get("real") or row is None:
            continue
        if not (0 <= row < n) or int(latents["seeds"][row]) != s["seed"]:
            raise AnnotationError(f"{root}: samples.json entry {s['file']!r} does not match {lat_path.name}")
        rows[name] = (int(row), int(s["seed"]))
        order.append(name)
    return _Kit(root, labels, index, latents, rows, order)


def _hex(c: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*c)


def labelme_labels_text(labels: Labels) -> str:
    """LabelMe's --labels file: one name a line, `__ignore__` first (LabelMe's convention for "do not care")."""
    return "\n".join([IGNORE_NAME, *labels.names]) + "\n"


def cvat_labels_json(labels: Labels) -> str:
    """The label list for the "Raw" tab of CVAT's label constructor (task or project)."""
    return json.dumps([{"name": n, "color": _hex(c), "type": "polygon", "attributes": []}
                       for n, c in zip(labels.names, labels.colors, strict=True)], indent=2) + "\n"


def label_studio_config(labels: Labels) -> str:
    """A Label Studio labeling config: polygons on the image, one Label per class in its colour."""
    from xml.sax.saxutils import quoteattr

    rows = "\n".join(f"    <Label value={quoteattr(n)} background={quoteattr(_hex(c))}/>"
                     for n, c in zip(labels.names, labels.colors, strict=True))
    return (f'<View>\n  <Image name="image" value="$image"/>\n  <PolygonLabels name="label" toName="image">\n'
            f"{rows}\n  </PolygonLabels>\n</View>\n")


def kit_readme(labels: Labels, n: int, size: int | None = None) -> str:
    """Instructions for annotators: what to label, the classes, how to send the labels back."""
    table = "\n".join(f"| {i} | {n_} | `{_hex(c)}` | {c[0]}, {c[1]}, {c[2]} | {d} |"
                      for i, (n_, c, d) in enumerate(zip(labels.names, labels.colors, labels.descriptions,
                                                         strict=True)))
    px = f"{size}x{size} pixel " if size else ""
    return f"""# Annotation kit

This folder holds {n} generated {px}images in `images/`. Please label every pixel of each image with the part
it shows, using the classes below. Pixels you leave unlabelled count as **{labels.names[0]}** (class 0).

**Do not resize, crop, convert or rename the images**: the labels are matched to the images by file name and
must have exactly the images' size. Keep `latents.safetensors`, `samples.json` and `labels.json` untouched: they
let the labels be tied back to the generator.

## Classes

| index | name | colour | RGB | what it covers |
|---|---|---|---|---|
{table}

A region you cannot decide on may be labelled `{IGNORE_NAME}`: it is then left out of training and evaluation.

## How to label and what to send back

Any one of these is accepted; send back the files named below (zip them if you like).

* **LabelMe** (polygons): run
  `labelme images --labels {LABELME_LABELS} --nodata --validatelabel exact --autosave`
  and draw polygons (rectangles, circles and masks work too). LabelMe saves one `NAME.json` beside each image:
  send those JSON files. Shapes drawn later lie on top of earlier ones.
* **CVAT** (polygons, boxes, ellipses, brush masks): create a task from the images in `images/`; in the label
  constructor open the "Raw" tab and paste the contents of `{CVAT_LABELS}`. When done, export the task as
  **CVAT for images 1.1** and send `annotations.xml`. Where shapes overlap, the one with the higher z-order wins.
* **Label Studio** (polygons): create a project, paste `{LABEL_STUDIO_CONFIG}` as the labeling config, import
  the images, label, then export as **COCO** and send the JSON file.
* **COCO** from any other tool: polygons or RLE masks, category names exactly as in the table.
* **PNG masks** painted in any image editor: one `NAME.png` per image (same name and size as the image), either
  colour-coded with exactly the colours of the table (white = unlabelled; hard brush, no antialiasing, no
  JPEG), or a greyscale/palette PNG whose pixel values are the class indices (255 = unlabelled).

Coordinates are in pixels with (0, 0) the top-left corner of the top-left pixel; a pixel belongs to a shape when
its centre lies inside the shape.

The labels are imported with
`partseg annotate import ANNOTATIONS --format png|labelme|cvat|coco --kit THIS_FOLDER --out SHOTS`.
"""
