"""Named part classes with display colours: the one description of "what the mask values mean".

Every part of partseg that reads or writes masks (the procedural faces, the data-set layout, annotation import,
heads, evaluation, export) goes through a `Labels`, stored beside the data as `labels.json`. Mask pixels hold the
class index; 255 is reserved for "unlabelled / ignore", so at most 255 classes (0-254) exist.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

IGNORE = 255  # mask value for unlabelled pixels; palette entry 255 is white
MAX_CLASSES = 255
LABELS_FILE = "labels.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Labels:
    """Class names, RGB colours and optional one-line descriptions, index i describing mask value i.

    Sequences are stored as tuples so a shared instance (such as `FACES`) cannot be changed by accident.
    """

    names: Sequence[str]
    colors: Sequence[tuple[int, int, int]]
    descriptions: Sequence[str] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        names = tuple(self.names)
        if not names:
            raise ValueError("labels: at least one class is needed")
        if len(names) > MAX_CLASSES:
            raise ValueError(f"labels: {len(names)} classes, at most {MAX_CLASSES} are possible "
                             f"(mask values 0-{MAX_CLASSES - 1}; {IGNORE} means unlabelled)")
        seen: dict[str, int] = {}
        for i, n in enumerate(names):
            if not isinstance(n, str) or not n.strip():
                raise ValueError(f"labels: class {i} has an empty or non-string name: {n!r}")
            key = n.strip().lower()
            if key in seen:
                raise ValueError(f"labels: duplicate class name {n!r} (classes {seen[key]} and {i})")
            seen[key] = i
        colors = tuple(self.colors)
        if len(colors) != len(names):
            raise ValueError(f"labels: {len(names)} names but {len(colors)} colours")
        checked: list[tuple[int, int, int]] = []
        for i, c in enumerate(colors):
            c = tuple(c) if isinstance(c, Sequence) and not isinstance(c, str) else (c,)
            if len(c) != 3 or not all(isinstance(v, (int, np.integer)) and 0 <= v <= 255 for v in c):
                raise ValueError(f"labels: colour of class {i} ({names[i]!r}) must be 3 integers 0-255, got {c!r}")
            checked.append((int(c[0]), int(c[1]), int(c[2])))
        dup = {c for c in checked if checked.count(c) > 1}
        if dup:  # colour-coded masks could not be read back unambiguously
            c = sorted(dup)[0]
            which = [names[i] for i, x in enumerate(checked) if x == c]
            raise ValueError(f"labels: classes {which} share the colour {c}; colours must be distinct")
        descriptions = tuple(self.descriptions)
        if descriptions and len(descriptions) != len(names):
            raise ValueError(f"labels: {len(names)} names but {len(descriptions)} descriptions (give none or one "
                             f"per class)")
        if not all(isinstance(d, str) for d in descriptions):
            raise ValueError("labels: descriptions must be strings")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "colors", tuple(checked))
        object.__setattr__(self, "descriptions", descriptions or ("",) * len(names))

    def __len__(self) -> int:
        return len(self.names)

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        """Class index of a name (case-insensitive)."""
        for i, n in enumerate(self.names):
            if n.lower() == name.lower():
                return i
        raise KeyError(f"no class named {name!r}; classes are {', '.join(self.names)}")

    def palette(self) -> list[int]:
        """A 768-entry PNG palette: class colours, black for unused entries, white at IGNORE (255)."""
        pal = [0] * 768
        for i, c in enumerate(self.colors):
            pal[3 * i:3 * i + 3] = c
        pal[3 * IGNORE:3 * IGNORE + 3] = (255, 255, 255)
        return pal

    def colorize(self, mask: np.ndarray) -> np.ndarray:
        """uint8 [..., 3] colour image of an index mask (ignored pixels white)."""
        return np.asarray(self.palette(), dtype=np.uint8).reshape(256, 3)[np.asarray(mask, dtype=np.uint8)]

    def overlay(self, image: np.ndarray, mask: np.ndarray, alpha: float = 0.55) -> np.ndarray:
        """uint8 RGB image blended with the class colours of `mask` (alpha = colour weight)."""
        return ((1 - alpha) * np.asarray(image) + alpha * self.colorize(mask)).round().astype(np.uint8)

    def to_dict(self) -> dict[str, Any]:
        return {"version": FORMAT_VERSION, "ignore_index": IGNORE,
                "classes": [{"index": i, "name": n, "color": list(c), "description": d} for i, (n, c, d)
                            in enumerate(zip(self.names, self.colors, self.descriptions, strict=True))]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, d: Any, source: str = "labels") -> Labels:
        if not isinstance(d, dict) or not isinstance(d.get("classes"), list):
            raise ValueError(f"{source}: expected an object with a 'classes' list")
        if d.get("version", FORMAT_VERSION) != FORMAT_VERSION:
            raise ValueError(f"{source}: unsupported version {d.get('version')!r} (expected {FORMAT_VERSION})")
        if d.get("ignore_index", IGNORE) != IGNORE:
            raise ValueError(f"{source}: ignore_index must be {IGNORE}, got {d.get('ignore_index')!r}")
        names, colors, descs = [], [], []
        for i, c in enumerate(d["classes"]):
            if not isinstance(c, dict) or "name" not in c or "color" not in c:
                raise ValueError(f"{source}: classes[{i}] needs 'name' and 'color'")
            if c.get("index", i) != i:
                raise ValueError(f"{source}: classes[{i}] has index {c['index']!r}; classes must be listed in "
                                 f"index order 0, 1, 2, ...")
            names.append(c["name"])
            colors.append(c["color"])
            descs.append(c.get("description", ""))
        try:
            return cls(names, colors, descs)
        except ValueError as e:
            raise ValueError(f"{source}: {str(e).removeprefix('labels: ')}") from None

    @classmethod
    def from_json(cls, text: str, source: str = "labels") -> Labels:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{source}: not valid JSON: {e}") from None
        return cls.from_dict(d, source)

    def save(self, path: str | os.PathLike) -> Path:
        """Write `labels.json` (path may be the file or the folder that holds it) atomically; returns the file."""
        path = Path(path)
        if path.is_dir() or not path.suffix:
            path = path / LABELS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(self.to_json())
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Labels:
        """Read `labels.json` (path may be the file or the folder that holds it)."""
        path = Path(path)
        if path.is_dir():
            path = path / LABELS_FILE
        if not path.is_file():
            raise FileNotFoundError(f"labels file not found: {path}")
        return cls.from_json(path.read_text(), source=str(path))


FACES = Labels(
    names=["background", "skin", "hair", "eye", "eyebrow", "nose", "mouth", "ear", "neck", "clothes"],
    colors=[(0, 0, 0), (204, 153, 119), (92, 51, 23), (0, 160, 255), (255, 200, 0), (255, 85, 0),
            (220, 20, 60), (140, 70, 200), (70, 190, 120), (30, 60, 160)],
    descriptions=[
        "everything that is not the person",
        "face skin: forehead, cheeks, chin, temples (not nose, lips, ears, neck)",
        "scalp hair: fringe, cap, side locks, long hair over the shoulders (not eyebrows)",
        "the visible eye: sclera, iris, pupil and the lash line; a closed eye is its lash line",
        "eyebrows",
        "the nose: same colour as the skin, separated only by shading and the nostrils",
        "lips and, when open, the mouth interior and teeth",
        "ears (the visible part; hair or a far-side turn may hide them)",
        "neck and visible chest skin",
        "worn items: clothing, hats, and glasses frames (tinted lenses keep the label of what is behind them)",
    ],
)
