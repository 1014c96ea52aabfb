"""The on-disk layout of a part-segmentation data set, shared by the procedural faces and annotation import.

    DIR/labels.json        class names and colours (partseg.labels.Labels)
    DIR/images/NAME.png    RGB image
    DIR/masks/NAME.png     palette PNG: pixel value = class index, palette = label colours, 255 = unlabelled

Palette PNGs keep the class index exact (no colour matching) while still looking right in any image viewer.
Greyscale masks holding class indices are accepted on read.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from partseg.data.samples import Samples, sample_name, save_samples
from partseg.images import IMAGE_SUFFIXES, centre_square, from_uint8, image_size, read_image, save_png
from partseg.labels import IGNORE, LABELS_FILE, Labels

IMAGES, MASKS = "images", "masks"


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{path}: image must be uint8 [H, W, 3], got {image.dtype} {list(image.shape)}")
    save_png(Image.fromarray(image, "RGB"), path)


def write_mask(path: str | os.PathLike, mask: np.ndarray, labels: Labels) -> None:
    """Palette PNG of class indices; values must be < len(labels) or 255 (unlabelled)."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise ValueError(f"{path}: mask must be uint8 [H, W], got {mask.dtype} {list(mask.shape)}")
    bad = (mask >= len(labels)) & (mask != IGNORE)
    if bad.any():
        raise ValueError(f"{path}: mask value {int(mask[bad].max())} is not a class index (0-{len(labels) - 1}) "
                         f"nor {IGNORE} (unlabelled)")
    im = Image.fromarray(mask, "L").convert("P")  # "L" -> "P" keeps the values as palette indices
    im.putpalette(labels.palette())
    save_png(im, path)


def read_mask(path: str | os.PathLike, labels: Labels | None = None,
              image_path: str | os.PathLike | None = None) -> np.ndarray:
    """uint8 [H, W] class indices from a palette or greyscale PNG.

    With `labels`, values must be class indices or 255; with `image_path`, the mask must have its image's size.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mask not found: {path}")
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise ValueError(f"{path}: mask mode is {im.mode!r}; expected a palette ('P') or greyscale ('L') "
                                 f"PNG whose pixel values are class indices")
            mask = np.asarray(im, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{path}: cannot decode mask: {e}") from None
    if labels is not None:
        bad = (mask >= len(labels)) & (mask != IGNORE)
        if bad.any():
            vals = sorted(set(np.unique(mask[bad]).tolist()))
            raise ValueError(f"{path}: mask values {vals[:10]} are not class indices (0-{len(labels) - 1}, "
                             f"{len(labels)} classes in labels.json) nor {IGNORE} (unlabelled)")
    if image_path is not None:
        image_path = Path(image_path)
        try:
            h, w = image_size(image_path)  # as read_image returns it: EXIF rotation included
        except (FileNotFoundError, ValueError) as e:
            raise ValueError(f"{image_path}: cannot read the image of mask {path}: {e}") from None
        if (h, w) != mask.shape:
            raise ValueError(f"{path}: size mismatch: mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image "
                             f"{image_path} is {w}x{h}")
    return mask


def load_dataset(root: str | os.PathLike) -> tuple[Labels, list[tuple[str, Path, Path]]]:
    """Labels and (name, image path, mask path) of every pair, sorted by name. Files are not decoded here;
    an image without a mask (or the reverse) is an error that lists them."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data set folder not found: {root}")
    labels = Labels.load(root / LABELS_FILE)
    for sub in (IMAGES, MASKS):
        if not (root / sub).is_dir():
            raise FileNotFoundError(f"{root}: missing the {sub}/ folder (layout: labels.json, images/, masks/)")
    images = {p.stem: p for p in (root / IMAGES).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()}
    masks = {p.stem: p for p in (root / MASKS).iterdir() if p.suffix.lower() == ".png" and p.is_file()}
    only_img, only_mask = sorted(images.keys() - masks.keys()), sorted(masks.keys() - images.keys())
    if only_img or only_mask:
        def show(names: list[str]) -> str:
            return ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        parts = []
        if only_img:
            parts.append(f"{len(only_img)} images without a mask in masks/: {show(only_img)}")
        if only_mask:
            parts.append(f"{len(only_mask)} masks without an image in images/: {show(only_mask)}")
        raise ValueError(f"{root}: " + "; ".join(parts))
    return labels, [(n, images[n], masks[n]) for n in sorted(images)]


def load_images(files: list[Path], size: int) -> torch.Tensor:
    """[N, 3, size, size] in [-1, 1]: each image centre-cropped to a square and resized."""
    return torch.stack([from_uint8(centre_square(read_image(f), size)) for f in files])


# ------------------------------------------------------------------------------------------ procedural faces


def synth_name(seed: int) -> str:
    return f"faces_{seed:07d}"


def _write_chunk(args: tuple[str, list[int], int]) -> int:
    from partseg.data.faces import render_face
    from partseg.labels import FACES

    out, seeds, size, mode = args
    out = Path(out)
    for s in seeds:
        img, mask = render_face(s, size, mode)
        write_image(out / IMAGES / f"{synth_name(s)}.png", img)
        write_mask(out / MASKS / f"{synth_name(s)}.png", mask, FACES)
    return len(seeds)


def _chunks(seeds: list[int], size: int) -> Iterable[list[int]]:
    for i in range(0, len(seeds), size):
        yield seeds[i:i + size]


def write_synth_dataset(out: str | os.PathLike, n: int, size: int = 64, seed: int = 0, workers: int = 2,
                        progress: bool = True, mode: str = "wild") -> Path:
    """Render faces seed .. seed+n-1 into the data-set layout (image i is `faces_{seed+i:07d}.png`).

    mode: "wild" (unaligned, cluttered) or "aligned" (FFHQ-style portraits; `partseg.data.faces.aligned`).

    Deterministic: the same (n, size, seed) always writes the same files, whatever `workers` is. Re-running
    overwrites files of the same names; files of other names in `out` are left alone.
    """
    from tqdm import tqdm

    from partseg.data.faces import MIN_SIZE, MODES
    from partseg.labels import FACES

    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if size < MIN_SIZE:
        raise ValueError(f"size must be >= {MIN_SIZE}, got {size}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out must be a folder, got a file: {out}")
    (out / IMAGES).mkdir(parents=True, exist_ok=True)
    (out / MASKS).mkdir(parents=True, exist_ok=True)
    if (out / LABELS_FILE).exists() and Labels.load(out / LABELS_FILE) != FACES:
        raise ValueError(f"{out / LABELS_FILE} holds other classes than the built-in faces; refusing to mix data "
                         f"sets (choose another --out)")
    FACES.save(out / LABELS_FILE)
    seeds = list(range(seed, seed + n))
    chunk = max(1, min(64, n // (4 * max(workers, 1)) or 1))
    jobs = [(str(out), c, size, mode) for c in _chunks(seeds, chunk)]
    bar = tqdm(total=n, unit="img", desc="render", disable=not progress)
    try:
        if workers <= 1 or len(jobs) <= 1:
            for j in jobs:
                bar.update(_write_chunk(j))
        else:
            with get_context().Pool(workers) as pool:
                for done in pool.imap_unordered(_write_chunk, jobs):
                    bar.update(done)
    finally:
        bar.close()
    return out


def time_synth(out: str | os.PathLike, n: int, size: int = 64, seed: int = 0, workers: int = 2,
               progress: bool = True, mode: str = "wild") -> tuple[Path, float]:
    """write_synth_dataset plus its wall-clock seconds (for the CLI and the benchmark)."""
    t0 = time.perf_counter()
    path = write_synth_dataset(out, n, size=size, seed=seed, workers=workers, progress=progress, mode=mode)
    return path, time.perf_counter() - t0


# ------------------------------------------------------------------------------------------ generated samples


def write_sample_set(out: str | os.PathLike, samples: Samples, labels: Labels, masks: np.ndarray | None = None,
                     generator: str = "") -> Path:
    """Generated samples in the data-set layout, with the exact latents that regenerate them.

    out/images/seedNNNNNN.png, out/labels.json, out/latents.safetensors + out/samples.json (z, ws, seeds,
    truncation, noise mode: what the few-shot heads need to recompute the GAN features), and, when `masks`
    [N, H, W] is given, out/masks/seedNNNNNN.png. Without masks it is an annotation kit waiting for labels.
    """
    out = Path(out)
    save_samples(samples, out, generator=generator, subdir=IMAGES)
    labels.save(out / LABELS_FILE)
    if masks is not None:
        if len(masks) != len(samples.seeds):
            raise ValueError(f"{len(masks)} masks for {len(samples.seeds)} samples")
        for seed, m in zip(samples.seeds, masks, strict=True):
            write_mask(out / MASKS / f"{sample_name(seed)}.png", np.asarray(m, dtype=np.uint8), labels)
    return out
