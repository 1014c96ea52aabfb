"""`partseg demo`: the pipeline end to end on the built-in default, as far as the pipeline exists.

Load the generator, sample images with their exact latents, show the pixel-wise representation (a PCA of the
per-pixel features and an unsupervised k-means of them: if the GAN's features carry part information, the clusters
already follow parts), train a few-shot head with the default recipe (a per-pixel MLP: BENCHMARKS.md "few-shot
recipes") on the shipped 10-shot annotation set, distil it into a UNet on generated images (auto-shot), export that
to ONNX, segment rendered test faces with it through the runtime, and,
for comparison, through GAN inversion + head; both scored against the faces' exact masks, side by side in
`overview.png`. The test faces are rendered in the generator's world (aligned portraits for builtin:faces128);
for an aligned generator the UNet is also scored on unaligned ("wild") renders, which its augmentation is for.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from partseg.data.dataset import read_mask, write_synth_dataset
from partseg.data.samples import save_samples
from partseg.distill.autoshot import DistillConfig, distill
from partseg.eval.evaluate import evaluate_and_write
from partseg.features import feature_channels, pixel_features, stylegan_source
from partseg.fewshot.invert import InversionConfig
from partseg.fewshot.learner import FewShotConfig, load_shots, train_head
from partseg.fewshot.segment import predict_files
from partseg.gan import Generator, GeneratorConfig, load_generator
from partseg.gan.checkpoints import BUILTIN_MODES, DEFAULT_GAN, builtin_annotations
from partseg.gan.sampling import sample
from partseg.images import image_grid, read_image, save_png, to_uint8
from partseg.labels import FACES
from partseg.runtime.files import predict_files_unet
from partseg.runtime.segmenter import Segmenter

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


def _overview(test: Path, preds: dict[str, Path], path: Path) -> None:
    """One row per test face: image | exact mask | one overlay per method, zoomed (nearest) to show real pixels."""
    rows = []
    for f in sorted((test / "images").glob("*.png")):
        img = read_image(f)
        cells = [img, (0.45 * img + 0.55 * FACES.colorize(read_mask(test / "masks" / f.name, FACES))).astype(np.uint8)]
        cells += [read_image(p / "overlays" / f.name) for p in preds.values()]
        rows.append(np.concatenate(cells, axis=1))
    grid = np.concatenate(rows, axis=0)
    zoom = 3 if img.shape[0] <= 64 else 2
    save_png(Image.fromarray(grid).resize((grid.shape[1] * zoom, grid.shape[0] * zoom), Image.NEAREST), path)


def _test_set(root: Path, n: int, size: int, mode: str) -> list[Path]:
    """Rendered test faces with exact masks in the data-set layout; returns the image files."""
    write_synth_dataset(root, n, size=size, seed=DEMO_TEST_SEED0, workers=1, progress=False, mode=mode)
    return sorted((root / "images").glob("*.png"))


def run_demo(out: str | os.PathLike, gan: str = DEFAULT_GAN, n: int = 8, seed: int = 0,
             device: str = "cpu", head_steps: int = 0, n_test: int = 8, inversion_steps: int = 100,
             distill_steps: int = 1800, distill_batch: int = 16, distill_pool: int = 192,
             distill_crop: int = 64, distill_class_weights: str = "sqrt",
             test_mode: str | None = None) -> dict:
    """Run every stage that exists on the built-in default; returns what it wrote and measured.

    test_mode: how the test faces are rendered ("aligned" or "wild"); default: the built-in generator's world
    (`BUILTIN_MODES`), "wild" for other generators."""
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
    print(f"[1/7] generator: {source_note}: {G.resolution} px, {G.num_ws} ws of {G.w_dim}")

    s = sample(G, n, seed=seed)
    save_samples(s, out / "samples", generator=source_note)
    save_png(image_grid(s.images), out / "samples.png")
    print(f"[2/7] sampled {n} images with their exact latents -> {out / 'samples'}, grid {out / 'samples.png'}")

    src = stylegan_source(G)
    _, feats = pixel_features(src, s.ws[:1].to(device))
    feats = feats[0].cpu()
    img = to_uint8(s.images[:1])[0]
    panel = np.concatenate([img, _pca_rgb(feats), PALETTE[_kmeans_labels(feats)]], axis=1)
    scale = max(1, 256 // G.resolution)
    save_png(Image.fromarray(panel).resize((panel.shape[1] * scale, panel.shape[0] * scale), Image.NEAREST),
             out / "features.png")
    summary["channels"] = feature_channels(src)
    print(f"[3/7] pixel features of sample 0: {feature_channels(src)} channels per pixel from {len(src.layers)} "
          f"layers -> {out / 'features.png'} (image | PCA | 6-cluster k-means)")

    name = gan[len("builtin:"):] if gan.startswith("builtin:") else ""
    try:
        shots_dir = builtin_annotations(name) if source_note == gan else None
    except FileNotFoundError:
        shots_dir = None
    if shots_dir is None:
        print("[4/7] few-shot head: skipped (needs the built-in generator and its default annotation set); "
              "stages 5-7 need the head and are skipped too")
    else:
        shots = load_shots(shots_dir)
        head = train_head(G, shots, FewShotConfig(steps=head_steps, seed=seed))
        head.save(out / "head.safetensors")
        print(f"[4/7] trained a {head.ensemble.cfg.kind} head on the {len(shots.names)} default shots "
              f"({head.meta['train_seconds']} s) -> {out / 'head.safetensors'}")

        t = time.time()
        crop = distill_crop if distill_crop < G.resolution else 0  # any generator: smaller ones train on whole images
        distill(G, head, DistillConfig(steps=distill_steps, batch=distill_batch, pool=distill_pool, seed=seed,
                                       crop=crop, class_weights=distill_class_weights, val_every=0),
                out / "unet")
        summary["distill_seconds"] = round(time.time() - t, 1)
        pooled = -(-distill_pool // distill_batch) * distill_batch  # the pool is whole steps' pairs
        pairs = min(pooled, distill_steps * distill_batch) if distill_pool else distill_steps * distill_batch
        window = f"{crop} px windows of " if crop else ""
        print(f"[5/7] auto-shot: distilled the head into a UNet, {distill_steps} steps of {distill_batch} "
              f"{window}augmented pairs drawn from {pairs} generated images, {distill_class_weights} class weights "
              f"({summary['distill_seconds']} s) -> {out / 'unet' / 'model.safetensors'}")

        from partseg.runtime.onnx_export import export_onnx

        exp = export_onnx(out / "unet" / "model.safetensors", out / "unet.onnx")
        print(f"[6/7] exported the UNet to ONNX -> {out / 'unet.onnx'}; parity with PyTorch: {exp.worst}")

        mode = test_mode or BUILTIN_MODES.get(name, "wild")
        files = _test_set(out / "test", n_test, G.resolution, mode)
        seg = Segmenter.load(out / "unet.onnx")
        predict_files_unet(files, seg, out / "pred_unet", progress=False)
        rep_unet = evaluate_and_write(out / "pred_unet", out / "test", FACES, out / "pred_unet")
        t = time.time()
        predict_files(files, G, head, out / "pred_inversion", InversionConfig(steps=inversion_steps), progress=True)
        inv_seconds = time.time() - t
        rep_inv = evaluate_and_write(out / "pred_inversion", out / "test", FACES, out / "pred_inversion")
        summary["test_mode"] = mode
        summary["miou_unet"], summary["miou_inversion"] = rep_unet["miou"], rep_inv["miou"]
        unet_ms = 1000 * json.loads((out / "pred_unet" / "predictions.json").read_text())["seconds_per_image"]
        _overview(out / "test", {"unet": out / "pred_unet", "inversion": out / "pred_inversion"},
                  out / "overview.png")
        wild = ""
        if mode == "aligned":  # the UNet needs no GAN, so it should also cope with faces the GAN never drew
            wild_files = _test_set(out / "test_wild", n_test, G.resolution, "wild")
            predict_files_unet(wild_files, seg, out / "pred_unet_wild", progress=False)
            rep_wild = evaluate_and_write(out / "pred_unet_wild", out / "test_wild", FACES, out / "pred_unet_wild")
            summary["miou_unet_wild"] = rep_wild["miou"]
            _overview(out / "test_wild", {"unet": out / "pred_unet_wild"}, out / "overview_wild.png")
            wild = (f"; the same UNet on {n_test} unaligned (wild) renders: mIoU {rep_wild['miou']:.3f} -> "
                    f"{out / 'overview_wild.png'}")
        print(f"[7/7] segmented {n_test} rendered {mode} test faces, scored against their exact masks: "
              f"auto-shot UNet ({seg.backend.name}) mIoU {rep_unet['miou']:.3f} at {unet_ms:.1f} ms/image; "
              f"GAN inversion ({inversion_steps} steps) + head mIoU {rep_inv['miou']:.3f} at "
              f"{1000 * inv_seconds / n_test:.0f} ms/image -> {out / 'overview.png'} "
              f"(image | exact mask | UNet | inversion){wild}")
    summary["seconds"] = round(time.time() - t0, 1)
    print(f"done in {summary['seconds']} s. Serve the UNet: partseg serve package {out / 'unet.onnx'} "
          f"--name partseg-segmenter && partseg serve start")
    return summary
