"""Training images for the GAN: a folder of images of any size, centre-cropped and resized on the fly.

The sampler is infinite and indexed by position, so a resumed run continues with exactly the images it would
have drawn had it never stopped, and ranks of a distributed run draw disjoint images.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import torch

from partseg.images import IMAGE_SUFFIXES, ImageError, centre_square, from_uint8, read_image


def list_images(root: str | os.PathLike) -> list[Path]:
    """All image files under root (recursively), sorted so every process sees the same order."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"training data folder not found: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"training data must be a folder of images, got a file: {root}")
    if (root / "labels.json").is_file() and (root / "images").is_dir():
        root = root / "images"  # a partseg data set: train on its images, never on its masks
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"no images found in {root} (looked for {', '.join(IMAGE_SUFFIXES)}, recursively)")
    return files


def load_image(path: Path, resolution: int) -> torch.Tensor:
    """Decode, centre-crop to a square, resize to resolution; returns float [3, R, R] in [-1, 1]."""
    try:
        image = read_image(path)
    except ImageError as e:
        raise ValueError(f"cannot decode training image {e}") from e
    return from_uint8(centre_square(image, resolution))


class ImageFolder(torch.utils.data.Dataset):
    def __init__(self, root: str | os.PathLike, resolution: int, mirror: bool = True):
        self.root, self.resolution, self.mirror = Path(root), resolution, mirror
        self.files = list_images(root)

    def __len__(self) -> int:
        # with mirroring, index i >= n is the flipped copy of image i - n: a fixed, resumable augmentation
        return len(self.files) * (2 if self.mirror else 1)

    def __getitem__(self, i: int) -> torch.Tensor:
        n = len(self.files)
        x = load_image(self.files[i % n], self.resolution)
        return x.flip(-1) if i >= n else x


class InfiniteSampler(torch.utils.data.Sampler):
    """Yields dataset indices forever: epoch e is a permutation seeded by (seed, e).

    Position p of the global stream goes to rank p % world; `start` skips the first `start` global positions.
    """

    def __init__(self, n: int, seed: int = 0, rank: int = 0, world: int = 1, start: int = 0):
        self.n, self.seed, self.rank, self.world, self.start = n, seed, rank, world, start

    def __iter__(self) -> Iterator[int]:
        pos = self.start
        while True:
            epoch, offset = divmod(pos, self.n)
            perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
            for j in range(offset, self.n):
                if (pos := epoch * self.n + j) % self.world == self.rank:
                    yield int(perm[j])
            pos = (epoch + 1) * self.n


def infinite_batches(dataset: ImageFolder, batch: int, seed: int, start: int, rank: int = 0, world: int = 1,
                     workers: int = 2) -> Iterator[torch.Tensor]:
    """Batches of `batch` images for this rank, starting at global image position `start`."""
    sampler = InfiniteSampler(len(dataset), seed, rank, world, start)
    # own generator: otherwise creating the iterator draws from the global RNG and a resumed run diverges
    gen = torch.Generator().manual_seed(seed + rank)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers, generator=gen,
                                         pin_memory=torch.cuda.is_available(), drop_last=True,
                                         persistent_workers=workers > 0, prefetch_factor=4 if workers else None)
    yield from loader
