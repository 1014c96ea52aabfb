"""`partseg demo`: the pipeline end to end on the built-in default, as far as the pipeline exists.

Today: load the generator, sample images with their exact latents, show the pixel-wise representation (a PCA
of the per-pixel features and an unsupervised k-means of them: if the GAN's features carry part information,
the clusters already follow parts), train the paper's CNN head on the shipped 10-shot annotation set, and
segment rendered test faces through GAN inversion, scored against their exact masks.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .dataset import synth_name, write_image, write_mask
from .evaluate import evaluate_and_write
from .faces import render_face
from .features import feature_channels, pixel_features, stylegan_source
from .fewshot import FewShotConfig, load_shots, train_head
from .gan import Generator, GeneratorConfig, load_generator
from .gan.checkpoints import builtin_annotations
from .gan.sampling import image_grid, sample, save_png, save_samples, to_uint8
from .invert import InversionConfig
from .labels import FACES
from .segment import predict_files

DEMO_TEST_SEED0 = 9_500_000  # rendered test faces for the demo: disjoint from every training seed range
# a distinct colour per cluster (k <= 12)
PALETTE = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
                    [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [170, 110, 40]],
                   dtype=np.uint8)


def _pca_rgb(feats: torch.Tensor) -> np.ndarray:
    """[C, H, W] -> [H, W, 3] uint8: the first three principal components, each stretched to 0-255."""
    c, h, w = feats.shape
    x = feats.float().reshape(c, -1).T
    x = x - x.mean(0)
    _, _, v = torch.pca_lowrank(x, q=3, center=False, niter=4)
    y = x @ v[:, :3]
    lo, hi = y.quantile(0.01, dim=0), y.quantile(0.99, dim=0)
    y = ((y - lo) / (hi - lo + 1e-8)).clamp(0, 1)
    return (y.reshape(h, w, 3) * 255).round().byte().numpy()


def _kmeans_labels(feats: torch.Tensor, k: int = 6, iters: int = 25, seed: int = 0) -> np.ndarray:
    """[C, H, W] -> [H, W] cluster index, k-means on unit-normalised pixel features."""
    c, h, w = feats.shape
    x = torch.nn.functional.normalize(feats.float().reshape(c, -1).T, dim=1)
    gen = torch.Generator().manual_seed(seed)
    centres = x[torch.randperm(len(x), generator=gen)[:k]].clone()
    for _ in range(iters):
        assign = (x @ centres.T).argmax(1)
        for j in range(k):
            members = x[assign == j]
            if len(members):
                centres[j] = torch.nn.functional.normalize(members.mean(0), dim=0)
    return assign.reshape(h, w).numpy()


def run_demo(out: str | os.PathLike, gan: str = "builtin:faces64", n: int = 8, seed: int = 0,
             device: str = "cpu", head_steps: int = 300, n_test: int = 8, inversion_steps: int = 100) -> dict:
    """Run every stage that exists on the built-in default; returns what it wrote and measured."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    summary: dict = {"out": str(out)}
    try:
        G = load_generator(gan, device=device)
        source_note = gan
    except FileNotFoundError as e:
        if not gan.startswith("builtin:"):
            raise
        # an install without the built-in weights: say so and use an untrained generator
        print(f"note: {e}\nnote: using a randomly initialised 64 px generator instead: its images are noise, "
              f"but the stages below that need no annotations run for real.")
        torch.manual_seed(seed)
        G = Generator(GeneratorConfig(resolution=64, channels={4: 256, 8: 256, 16: 128, 32: 64, 64: 32},
                                      z_dim=128, w_dim=128, n_mlp=2)).to(device).eval().requires_grad_(False)
        G.compute_mean_w(n=1024)
        source_note = "random init (no built-in weights in this install)"
    summary["generator"] = source_note
    print(f"[1/5] generator: {source_note}: {G.resolution} px, {G.num_ws} ws of {G.w_dim}")

    s = sample(G, n, seed=seed)
    save_samples(s, out / "samples", generator=source_note)
    save_png(image_grid(s.images), out / "samples.png")
    print(f"[2/5] sampled {n} images with their exact latents -> {out / 'samples'}, grid {out / 'samples.png'}")

    src = stylegan_source(G)
    _, feats = pixel_features(src, s.ws[:1].to(device))
    feats = feats[0].cpu()
    img = to_uint8(s.images[:1])[0]
    panel = np.concatenate([img, _pca_rgb(feats), PALETTE[_kmeans_labels(feats)]], axis=1)
    scale = max(1, 256 // G.resolution)
    Image.fromarray(panel).resize((panel.shape[1] * scale, panel.shape[0] * scale), Image.NEAREST).save(
        out / "features.png")
    summary["channels"] = feature_channels(src)
    print(f"[3/5] pixel features of sample 0: {feature_channels(src)} channels per pixel from {len(src.layers)} "
          f"layers -> {out / 'features.png'} (image | PCA | 6-cluster k-means)")

    name = gan[len("builtin:"):] if gan.startswith("builtin:") else ""
    try:
        shots_dir = builtin_annotations(name) if source_note == gan else None
    except FileNotFoundError:
        shots_dir = None
    if shots_dir is None:
        print("[4/5] few-shot head: skipped (needs the built-in generator and its default annotation set)")
        print("[5/5] segmentation by inversion: skipped")
    else:
        shots = load_shots(shots_dir)
        head = train_head(G, shots, FewShotConfig(head="cnn", steps=head_steps, seed=seed))
        head.save(out / "head.safetensors")
        print(f"[4/5] trained the paper's CNN head on the {len(shots.names)} default shots "
              f"({head.meta['train_seconds']} s) -> {out / 'head.safetensors'}")
        test = out / "test"
        seeds = range(DEMO_TEST_SEED0, DEMO_TEST_SEED0 + n_test)
        for sd in seeds:
            im, mask = render_face(sd, G.resolution)
            write_image(test / "images" / f"{synth_name(sd)}.png", im)
            write_mask(test / "masks" / f"{synth_name(sd)}.png", mask, FACES)
        FACES.save(test / "labels.json")
        files = sorted((test / "images").glob("*.png"))
        predict_files(files, G, head, out / "pred", InversionConfig(steps=inversion_steps), progress=True)
        rep = evaluate_and_write(out / "pred", test, FACES, out / "pred")
        summary["miou_inversion"] = rep["miou"]
        print(f"[5/5] segmented {n_test} rendered test faces by GAN inversion ({inversion_steps} steps) + head: "
              f"mIoU {rep['miou']:.3f} against their exact masks -> {out / 'pred'} (overlays/, eval.png)")
    summary["seconds"] = round(time.time() - t0, 1)
    print(f"done in {summary['seconds']} s. Next stages (distil to a UNet, export, serve) arrive with issues #5-#7.")
    return summary
