"""Segment image files: with a distilled UNet through the runtime (fast, any size), or through GAN inversion + a
few-shot head (accurate, slow). Writes, per image: the label PNG (palette = class colours), a colour overlay, and
for inversion the reconstruction; plus predictions.json with timing (and per-image PSNR for inversion)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from partseg.atomic import atomic_write_text
from partseg.data.dataset import load_images, write_image, write_mask
from partseg.data.predictions import Predicted, failed_records, readable, write_failed
from partseg.fewshot.invert import InversionConfig, invert
from partseg.fewshot.learner import FewShotHead
from partseg.gan.interface import GeneratorLike, as_fewshot_gan
from partseg.images import to_uint8


def segment_by_inversion(G: GeneratorLike, head: FewShotHead, images: torch.Tensor,
                         cfg: InversionConfig | None = None, batch: int = 8, progress: bool = False) -> dict:
    """Invert each batch, then apply the head to the features of the inverted latents and noise."""
    G = as_fewshot_gan(G).inversion_generator()  # a generator without inversion is refused here, by name
    head.check_generator(G)
    labels, recons, psnrs = [], [], []
    for i in range(0, len(images), batch):
        inv = invert(G, images[i:i + batch], cfg, progress=progress)
        _, logp = head.predict_ws(G, inv.ws, noise=inv.noise)
        if logp.shape[-1] != G.resolution:
            logp = torch.nn.functional.interpolate(logp, size=(G.resolution,) * 2, mode="bilinear",
                                                   align_corners=False)
        labels.append(logp.argmax(1).cpu())
        recons.append(inv.images.cpu())
        psnrs.append(inv.psnr.cpu())
    return {"labels": torch.cat(labels), "reconstructions": torch.cat(recons), "psnr": torch.cat(psnrs)}


def predict_files(files: list[Path], G: GeneratorLike, head: FewShotHead, out: str | os.PathLike,
                  cfg: InversionConfig | None = None, batch: int = 8, progress: bool = True) -> Predicted:
    """The `partseg predict --mode inversion` job: writes out/labels, out/overlays, out/reconstructions.

    Images that cannot be read are skipped and listed (returned and in predictions.json under 'failed')."""
    out = Path(out)
    G = as_fewshot_gan(G).inversion_generator()
    t0 = time.time()
    files, images, failed = readable(files, lambda f: load_images([f], G.resolution)[0])
    if not files:
        write_failed(out, "inversion", failed)
        return Predicted(out, [], failed)
    images = torch.stack(images)
    res = segment_by_inversion(G, head, images, cfg, batch, progress)
    seconds = time.time() - t0
    inputs = to_uint8(images)
    recon = to_uint8(res["reconstructions"])
    records = []
    for f, img, lab, rec, p in zip(files, inputs, res["labels"].byte().numpy(), recon, res["psnr"].tolist(),
                                   strict=True):
        write_mask(out / "labels" / f"{f.stem}.png", lab, head.labels)
        write_image(out / "overlays" / f"{f.stem}.png", head.labels.overlay(img, lab))
        write_image(out / "reconstructions" / f"{f.stem}.png", rec)
        records.append({"input": str(f), "name": f.stem, "psnr_db": round(p, 2)})
    head.labels.save(out / "labels.json")
    atomic_write_text(json.dumps({"mode": "inversion", "seconds_per_image": round(seconds / len(files), 3),
                                  "images": records, "failed": failed_records(failed)}, indent=1),
                      out / "predictions.json")
    return Predicted(out, files, failed)


def predict_samples(folder: str | os.PathLike, G: GeneratorLike, head: FewShotHead, out: str | os.PathLike,
                    batch: int = 8) -> Predicted:
    """The `partseg predict --mode head` job: segment generated samples that carry their latents (a folder from
    `annotate export` or `gan sample`) by applying the head to their regenerated features. Works with any
    generator, inversion or not. Writes out/labels, out/overlays (on the regenerated images), predictions.json."""
    from partseg.data.samples import INDEX_FILE, load_samples_record

    folder, out = Path(folder), Path(out)
    G = as_fewshot_gan(G)
    head.check_generator(G)
    if not (folder / INDEX_FILE).is_file():
        raise FileNotFoundError(f"{folder}: --mode head needs a folder of generated samples with their latents "
                                f"({INDEX_FILE}, written by `partseg annotate export` or `partseg gan sample`)")
    index, lat = load_samples_record(folder)
    todo = [s for s in index.get("samples", []) if not s.get("real") and s.get("index") is not None]
    if not todo or "ws" not in lat:
        raise ValueError(f"{folder / INDEX_FILE}: no generated samples with recorded latents")
    G.check_latents(lat["ws"], f"{folder}: field 'ws' of the latents")
    noise_mode = index.get("noise_mode") or "const"
    t0, records, done = time.time(), [], []
    for i in range(0, len(todo), batch):
        chunk = todo[i:i + batch]
        seeds = [int(s["seed"]) for s in chunk]
        ws = lat["ws"][[int(s["index"]) for s in chunk]].to(G.device)
        img, logp = head.predict_ws(G, ws, noise_mode=noise_mode, seeds=seeds)
        if logp.shape[-1] != img.shape[-1]:
            logp = torch.nn.functional.interpolate(logp, size=img.shape[-2:], mode="bilinear", align_corners=False)
        for s, im, lab in zip(chunk, to_uint8(img.clamp(-1, 1).cpu()), logp.argmax(1).byte().cpu().numpy(),
                              strict=True):
            name = Path(s["file"]).stem
            write_mask(out / "labels" / f"{name}.png", lab, head.labels)
            write_image(out / "overlays" / f"{name}.png", head.labels.overlay(im, lab))
            records.append({"sample": s["file"], "name": name, "seed": s["seed"]})
            done.append(folder / s["file"])
    head.labels.save(out / "labels.json")
    atomic_write_text(json.dumps({"mode": "head", "generator_fingerprint": G.fingerprint(),
                                  "seconds_per_image": round((time.time() - t0) / len(done), 4), "images": records,
                                  "failed": []}, indent=1), out / "predictions.json")
    return Predicted(out, done, [])
