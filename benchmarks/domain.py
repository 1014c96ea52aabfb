"""The procedural faces domain (issue #3): render speed, the colour-only floor, class frequencies, a contact sheet.

    python3 benchmarks/domain.py [--mode wild|aligned] [--size 64] [--n-speed 2000] [--no-write]

(1) Render speed: `write_synth_dataset` (render + PNG writing) at 64 px with 2 workers and with 1 worker, in
    images per minute. (2) The colour floor: a per-pixel nearest class-mean RGB classifier fitted on 1000 renders
    and scored on 200 others; per-class IoU and mIoU (low = colour alone cannot find the parts), next to a
    position-only floor (each pixel's most frequent class over the fitting renders). (3) Class pixel frequencies.
Results replace this script's own section of BENCHMARKS.md (one per mode) and nothing else; the contact sheet
goes to docs/domain.png (docs/domain_aligned.png for the aligned mode).
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from report import machine, write_section  # noqa: E402

from partseg.data.dataset import time_synth  # noqa: E402
from partseg.data.faces import colour_floor, render_face  # noqa: E402
from partseg.eval.metrics import ScoreAccumulator  # noqa: E402
from partseg.labels import FACES  # noqa: E402

SHEET = ROOT / "docs" / "domain.png"
FLOOR_SEED = 1_000_000  # disjoint from the seeds `partseg data synth` uses by default (0 ..)


def contact_sheet(path: str | os.PathLike = SHEET, seeds: range = range(16), size: int = 64, zoom: int = 3,
                  cols: int = 8, mode: str = "wild") -> Path:
    """Renders with their masks: per block of `cols` faces an image row, then the mask blended over the image
    (60 % label colour) so alignment is visible. Upscaled by `zoom` (nearest) to show the real pixels."""
    from PIL import Image

    ims, overlays = [], []
    for s in seeds:
        img, mask = render_face(s, size, mode)
        ims.append(img)
        overlays.append((0.4 * img + 0.6 * FACES.colorize(mask)).astype(np.uint8))
    pad = np.full((size, size, 3), 255, np.uint8)
    rows = []
    for i in range(0, len(ims), cols):
        a, b = ims[i:i + cols], overlays[i:i + cols]
        a += [pad] * (cols - len(a))
        b += [pad] * (cols - len(b))
        rows += [np.concatenate(a, 1), np.concatenate(b, 1)]
    sheet = np.concatenate(rows, 0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).resize((sheet.shape[1] * zoom, sheet.shape[0] * zoom), Image.NEAREST).save(path)
    return path


def render_speed(n: int, workers: int, size: int = 64, mode: str = "wild") -> float:
    """Images per minute of write_synth_dataset (render + both PNGs) into a temporary folder."""
    tmp = Path(tempfile.mkdtemp(prefix="partseg-domain-"))
    try:
        _, seconds = time_synth(tmp / "ds", n, size=size, seed=0, workers=workers, progress=False, mode=mode)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return n / seconds * 60


def render_only_speed(n: int, size: int = 64, mode: str = "wild") -> float:
    """Images per minute of render_face alone (no files), in this process."""
    t0 = time.perf_counter()
    for s in range(n):
        render_face(s, size, mode)
    return n / (time.perf_counter() - t0) * 60


def position_floor(n_fit: int = 1000, n_eval: int = 200, size: int = 64, seed: int = FLOOR_SEED,
                   mode: str = "wild") -> dict:
    """Each pixel's most frequent class over the fitting renders, scored like colour_floor."""
    k = len(FACES)
    counts = np.zeros((size * size, k), np.int64)
    freq = np.zeros(k, np.int64)
    for s in range(seed, seed + n_fit):
        m = render_face(s, size, mode)[1].ravel()
        counts[np.arange(size * size), m] += 1
        freq += np.bincount(m, minlength=k)
    pred = counts.argmax(1)
    acc = ScoreAccumulator(k)
    for s in range(seed + n_fit, seed + n_fit + n_eval):
        acc.add(torch.from_numpy(pred), torch.from_numpy(render_face(s, size, mode)[1].ravel()))
    scores = acc.scores()
    return {"iou": scores.per_class(list(FACES.names)), "miou": scores.miou, "pixel_acc": scores.pixel_accuracy,
            "freq": (freq / freq.sum()).tolist()}


def class_presence(n: int = 200, size: int = 64, seed: int = FLOOR_SEED, mode: str = "wild") -> list[float]:
    """Fraction of images in which each class has at least one pixel."""
    k = len(FACES)
    seen = np.zeros(k)
    for s in range(seed, seed + n):
        seen += np.bincount(render_face(s, size, mode)[1].ravel(), minlength=k) > 0
    return (seen / n).tolist()


def section(speed: dict[int, float], render_only: float, load: str, n_speed: int, col: dict, pos: dict,
            presence: list[float], command: str, mode: str = "wild", size: int = 64) -> str:
    sheet = SHEET if mode == "wild" else SHEET.with_name(f"domain_{mode}.png")
    title = ("## Procedural faces domain (issue #3)" if mode == "wild" else
             f"## Procedural faces domain, {mode} mode (issue #14)")
    what = ("`partseg.data.faces.render_face(seed, size)`: stylised portraits with exact part masks"
            if mode == "wild" else
            f"`partseg.data.faces.render_face(seed, size, mode=\"{mode}\")`: the same identities as FFHQ-style crops "
            "(eyes level at a fixed height and distance, little yaw, modest background and effects)")
    lines = [
        title,
        "",
        f"{what}, 10 classes (background, skin, hair, eye, eyebrow, nose, mouth, ear, neck, clothes). Contact sheet: "
        f"[docs/{sheet.name}](docs/{sheet.name}) (16 faces at {size} px; image rows, then masks over the images).",
        "",
        f"- Machine: {machine()}; shared with other jobs (1-minute load average {load} before the speed runs), "
        f"so the speeds are lower bounds",
        f"- Command: `{command}`",
        f"- Date (UTC): {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M')}",
        "",
        f"Render speed, {size} px, `write_synth_dataset` (render + image PNG + palette mask PNG), {n_speed} images:",
        "",
        "| workers | images / minute |",
        "| ---: | ---: |",
    ]
    lines += [f"| {w} | {v:,.0f} |" for w, v in speed.items()]
    lines += [
        "",
        f"Rendering alone (`render_face`, no files, one process, {n_speed // 4} images): {render_only:,.0f} images / "
        f"minute ({60_000 / render_only:.1f} ms per image).",
        "",
        f"Floors a few-shot head must beat, {size} px, fitted on 1000 renders (seeds 1000000-1000999), scored on 200 "
        "others (IoU over all held-out pixels). Colour: each pixel to the nearest class-mean RGB. Position: each "
        "pixel to the class most frequent at that location. Frequency: share of all pixels; present: share of "
        "images where the class appears (200 images).",
        "",
        "| class | colour IoU | position IoU | pixel frequency | present in |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for i, name in enumerate(FACES.names):
        lines.append(f"| {name} | {col['iou'][name]:.3f} | {pos['iou'][name]:.3f} | {100 * pos['freq'][i]:.2f} % | "
                     f"{100 * presence[i]:.0f} % |")
    lines += [f"| **mean (mIoU)** | **{col['miou']:.3f}** | **{pos['miou']:.3f}** | | |",
              f"| pixel accuracy | {col['pixel_acc']:.3f} | {pos['pixel_acc']:.3f} | | |"]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", default="wild", choices=["wild", "aligned"], help="render mode")
    ap.add_argument("--size", type=int, default=64, help="image size of every measurement")
    ap.add_argument("--n-speed", type=int, default=2000, help="images per speed measurement")
    ap.add_argument("--no-write", action="store_true", help="print the section, leave BENCHMARKS.md alone")
    args = ap.parse_args()
    mode, size = args.mode, args.size

    sheet = SHEET if mode == "wild" else SHEET.with_name(f"domain_{mode}.png")
    print(f"contact sheet: {contact_sheet(sheet, size=size, zoom=max(1, 192 // size), mode=mode)}", flush=True)
    load = f"{os.getloadavg()[0]:.2f}"
    speed = {}
    for w in (2, 1):
        speed[w] = render_speed(args.n_speed, w, size, mode)
        print(f"{w} workers: {speed[w]:,.0f} images/minute", flush=True)
    render_only = render_only_speed(args.n_speed // 4, size, mode)
    print(f"render only: {render_only:,.0f} images/minute", flush=True)
    col = colour_floor(1000, 200, size, seed=FLOOR_SEED, mode=mode)
    print(f"colour floor mIoU {col['miou']:.3f}", flush=True)
    pos = position_floor(1000, 200, size, seed=FLOOR_SEED, mode=mode)
    print(f"position floor mIoU {pos['miou']:.3f}", flush=True)
    presence = class_presence(size=size, mode=mode)
    command = "python3 benchmarks/domain.py" + ("" if mode == "wild" else f" --mode {mode}") + (
        "" if size == 64 else f" --size {size}") + ("" if args.n_speed == 2000 else f" --n-speed {args.n_speed}")
    text = section(speed, render_only, load, args.n_speed, col, pos, presence, command, mode, size)
    if not args.no_write:
        write_section("domain" if mode == "wild" else f"domain-{mode}", text)
    print(text)


if __name__ == "__main__":
    main()
