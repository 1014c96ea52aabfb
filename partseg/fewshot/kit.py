"""Writing an annotation kit: generated images with the exact latents that regenerate them, plus the annotators'
files (README, LabelMe label list, CVAT and Label Studio configs; their layout is `partseg.data.annotations.kit`).

It lives in the few-shot stage because it samples a generator; reading the labels back
(`partseg.data.annotations.import_annotations`) needs none.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from partseg.data.annotations import (
    CVAT_LABELS,
    KIT_README,
    LABEL_STUDIO_CONFIG,
    LABELME_LABELS,
    build_then_move,
    check_out_folder,
    cvat_labels_json,
    kit_readme,
    label_studio_config,
    labelme_labels_text,
)
from partseg.data.dataset import write_sample_set
from partseg.gan.interface import as_fewshot_gan, load_fewshot_gan
from partseg.gan.sampling import sample
from partseg.labels import Labels


def export_kit(gan: Any, n: int, seed: int, labels: Labels, out: str | os.PathLike, truncation: float = 1.0,
               noise_mode: str = "const", device: str = "cpu", batch: int = 16, overwrite: bool = False,
               z_dim: int | None = None) -> Path:
    """Write an annotation kit: n generated images with their exact latents, plus the annotators' files.

    gan: a checkpoint path, 'builtin:NAME', 'py:module:callable' (z_dim: its latent size when not inferable) or
    a generator object (our StyleGAN2, a HookedGenerator, a FewShotGAN). Image i is sample seed+i (file
    images/seedNNNNNN.png).
    The kit is built in a temporary folder and renamed into place, so a failure leaves no half kit.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    by_name = isinstance(gan, str | os.PathLike)
    G = load_fewshot_gan(gan, device=device, z_dim=z_dim) if by_name else as_fewshot_gan(gan)
    generator = str(gan) if by_name else ""
    out = Path(out)
    check_out_folder(out, overwrite)
    s = sample(G, n, seed=seed, truncation=truncation, noise_mode=noise_mode, batch=batch)

    def build(tmp: Path) -> None:
        write_sample_set(tmp, s, labels, masks=None, generator=generator)
        (tmp / KIT_README).write_text(kit_readme(labels, n, int(s.images.shape[-1])), encoding="utf-8")
        (tmp / LABELME_LABELS).write_text(labelme_labels_text(labels), encoding="utf-8")
        (tmp / CVAT_LABELS).write_text(cvat_labels_json(labels), encoding="utf-8")
        (tmp / LABEL_STUDIO_CONFIG).write_text(label_studio_config(labels), encoding="utf-8")

    return build_then_move(out, overwrite, build)
