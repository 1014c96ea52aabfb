"""The `partseg predict --unet` job: segment image files of any size with a Segmenter and write masks, overlays
and predictions.json; an unreadable image is listed, never fatal."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from partseg.atomic import atomic_write_text
from partseg.data.dataset import read_image, write_image, write_mask
from partseg.data.predictions import Predicted, failed_records, readable, reason
from partseg.runtime.segmenter import Segmenter


def predict_files_unet(files: list[Path], segmenter: Segmenter, out: str | os.PathLike, batch: int = 16,
                       progress: bool = True) -> Predicted:
    """The `partseg predict --unet` job: images of any size, `batch` at a time -> out/labels, out/overlays.

    An image that cannot be read or segmented is skipped and listed (returned and in predictions.json under
    'failed'); every other image gets its outputs."""
    from tqdm import tqdm

    out = Path(out)
    labels = segmenter.labels
    records, seconds, done, failed = [], 0.0, [], []
    with tqdm(total=len(files), desc="predict", unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for i in range(0, len(files), batch):
            chunk, images, bad = readable(files[i:i + batch], read_image)
            failed += bad
            t0 = time.perf_counter()
            try:
                results = list(zip(chunk, images, segmenter.predict(images), strict=True)) if chunk else []
            except ValueError:  # one image the model refuses (e.g. its size) must not cost the batch: one by one
                results = []
                for f, img in zip(chunk, images, strict=True):
                    try:
                        results.append((f, img, segmenter.predict([img])[0]))
                    except ValueError as e:
                        failed.append((f, reason(f, e)))
            seconds += time.perf_counter() - t0
            for f, img, lab in results:
                write_mask(out / "labels" / f"{f.stem}.png", lab, labels)
                write_image(out / "overlays" / f"{f.stem}.png", labels.overlay(img, lab))
                records.append({"input": str(f), "name": f.stem, "height": img.shape[0], "width": img.shape[1]})
                done.append(f)
            bar.update(len(files[i:i + batch]))
    labels.save(out / "labels.json")
    atomic_write_text(json.dumps({"mode": "unet", "backend": segmenter.backend.name,
                                  "model": segmenter.info.source, "input_size": segmenter.input_size,
                                  "seconds_per_image": round(seconds / max(len(done), 1), 5), "images": records,
                                  "failed": failed_records(failed)}, indent=1), out / "predictions.json")
    return Predicted(out, done, failed)
