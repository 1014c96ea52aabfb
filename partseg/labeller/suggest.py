"""The labeller's "suggest": a trained head's prediction, which the page puts into the unlabelled pixels.

Only a proposal: nothing is written here. The head and its generator are heavy (torch), so they are imported
only when a head is given.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from partseg.labels import Labels


class Suggester:
    """The head's prediction for kit images that carry their latents (samples.json + latents.safetensors).

    Loaded once at start-up so a wrong head (another GAN, other classes) fails before the page opens, not on
    the first click. Predictions are cached per image; one lock serialises the forward passes.
    """

    def __init__(self, kit: Path, labels: Labels, head: str | os.PathLike, gan: Any = None, memory: Any = None):
        from partseg.data.samples import INDEX_FILE, load_samples_record
        from partseg.fewshot.learner import FewShotHead
        from partseg.gan.interface import as_fewshot_gan, load_fewshot_gan

        if not Path(head).is_file():
            raise FileNotFoundError(f"head file not found: {head}")
        index_path = kit / INDEX_FILE
        index = json.loads(index_path.read_text()) if index_path.is_file() else None
        if gan is None:  # the kit records the generator it was sampled from
            gan = (index or {}).get("generator") or None
            if gan is None:
                raise ValueError(f"a head needs its generator: pass --gan (the kit's {INDEX_FILE} names none)")
        G = load_fewshot_gan(gan) if isinstance(gan, str | os.PathLike) else as_fewshot_gan(gan)
        self.G = G
        self.head = FewShotHead.load(head, G)  # refuses a head trained on another GAN's features
        self.head.memory = memory  # GB for the head's features (None: automatic; tiles when the maps are big)
        if [n.lower() for n in self.head.labels.names] != [n.lower() for n in labels.names]:
            raise ValueError(f"head {head} predicts the classes {list(self.head.labels.names)} but the kit's "
                             f"labels.json has {list(labels.names)}")
        self.latents: dict[str, tuple[Any, int]] = {}
        self.noise_mode = "const"
        if index is not None:
            index, lat = load_samples_record(kit)
            self.noise_mode = index.get("noise_mode") or "const"
            for s in index.get("samples", []):
                if s.get("real") or s.get("index") is None or "ws" not in lat:
                    continue
                self.latents[Path(s["file"]).stem] = (lat["ws"][int(s["index"])], int(s["seed"]))
        self.reason = "" if self.latents else f"the kit has no recorded latents ({INDEX_FILE})"
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, int, int], np.ndarray] = {}

    def available(self, name: str) -> bool:
        return name in self.latents

    def predict(self, name: str, height: int, width: int) -> np.ndarray:
        import torch

        from partseg.fewshot.learner import as_uint8_labels

        key = (name, height, width)
        with self._lock:
            if key not in self._cache:
                ws, seed = self.latents[name]
                with torch.no_grad():
                    _, logp = self.head.predict_ws(self.G, ws[None].to(self.G.device), seeds=[seed],
                                                   noise_mode=self.noise_mode)
                pred = as_uint8_labels(logp)[0]
                if pred.shape != (height, width):  # head feature size != image size: nearest keeps indices
                    pred = np.asarray(Image.fromarray(pred, "L").resize((width, height), Image.NEAREST))
                self._cache[key] = np.ascontiguousarray(pred, dtype=np.uint8)
            return self._cache[key].copy()
