"""What a prediction job writes besides masks: the list of inputs, the images it could not read and why, and
predictions.json. Shared by the UNet job (runtime) and the inversion/head jobs (few-shot)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from partseg.atomic import atomic_write_text
from partseg.images import IMAGE_SUFFIXES
from partseg.runs import one_line


def list_image_files(inputs: list[str | os.PathLike]) -> list[Path]:
    """Files and folders (their images, sorted) -> image paths; a missing path is an error naming it."""
    files: list[Path] = []
    for p in map(Path, inputs):
        if p.is_dir():
            files += sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file())
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"input image not found: {p}")
    if not files:
        raise ValueError(f"no images found in {', '.join(map(str, inputs))}")
    return files


@dataclass
class Predicted:
    """What a predict job did: its output folder, the images segmented, the ones that failed and why."""

    out: Path
    done: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def readable(files: list[Path], read) -> tuple[list[Path], list, list[tuple[Path, str]]]:
    """(good files, what `read` made of each, [(bad file, reason)]): one unreadable image never stops the rest."""
    good, data, bad = [], [], []
    for f in files:
        try:
            data.append(read(f))
            good.append(f)
        except Exception as e:  # noqa: BLE001 - any decoder failure (PIL raises several kinds) is this file's
            bad.append((f, reason(f, e)))
    return good, data, bad


def reason(f: Path, e: BaseException) -> str:
    text = one_line(e)
    return text.removeprefix(f"{f}: ") if text.startswith(f"{f}: ") else f"{type(e).__name__}: {text}"


def failed_records(failed: list[tuple[Path, str]]) -> list[dict]:
    return [{"input": str(f), "error": why} for f, why in failed]


def write_failed(out: Path, mode: str, failed: list[tuple[Path, str]]) -> None:
    atomic_write_text(json.dumps({"mode": mode, "images": [], "failed": failed_records(failed)}, indent=1),
                      out / "predictions.json")
