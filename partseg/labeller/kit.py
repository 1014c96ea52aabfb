"""The kit behind the labeller's page: its images, their masks and statuses, validated atomic saves, suggestions.

No HTTP here (partseg.labeller.handler serves it): problems are RequestErrors carrying the 4xx they are.
Writes go through `partseg.data.dataset.write_mask` (temporary file + rename: a crash or a killed server leaves
the old mask or the new one, never half a PNG) under one lock, so two requests for the same image cannot
interleave their temporary files, and nothing is written unless the whole upload validated.
"""

from __future__ import annotations

import os
import threading
from http import HTTPStatus
from pathlib import Path
from typing import Any

import numpy as np

from partseg.data.dataset import IMAGE_SUFFIXES, IMAGES, MASKS, read_mask, write_mask
from partseg.http_errors import RequestError
from partseg.images import image_size as read_image_size
from partseg.labeller.masks import decode_upload
from partseg.labeller.suggest import Suggester
from partseg.labels import IGNORE, LABELS_FILE, Labels


class LabellerApp:
    """The kit behind the page: which images exist, their masks, validation and atomic writes.

    The image folder is re-read on every request (a kit holds tens of images), so images added while the
    labeller runs appear on reload, and a name is only ever resolved by looking it up in that listing: a
    request can never name a file outside `KIT/images` or write outside `KIT/masks`.
    """

    def __init__(self, kit: str | os.PathLike, head: str | os.PathLike | None = None, gan: Any = None,
                 memory: Any = None):
        self.kit = Path(kit)
        if not self.kit.is_dir():
            raise FileNotFoundError(f"annotation kit not found: {self.kit}")
        if not (self.kit / LABELS_FILE).is_file():
            raise FileNotFoundError(f"{self.kit}: no {LABELS_FILE} (the class names and colours to paint with)")
        if not (self.kit / IMAGES).is_dir():
            raise FileNotFoundError(f"{self.kit}: no {IMAGES}/ folder (layout: {LABELS_FILE}, {IMAGES}/, "
                                    f"{MASKS}/)")
        self.labels = Labels.load(self.kit / LABELS_FILE)
        images, dups = self._scan()
        if dups:
            raise ValueError(f"{self.kit / IMAGES}: images {dups[:5]} share a name with another suffix; their "
                             f"masks would be the same file")
        if not images:
            raise ValueError(f"{self.kit / IMAGES}: no images ({', '.join(IMAGE_SUFFIXES)})")
        self._write_lock = threading.Lock()
        self._revisions: dict[tuple[str, str], int] = {}
        self._cache_lock = threading.Lock()
        self._sizes: dict[Path, tuple[tuple[int, int], tuple[int, int]]] = {}
        self._annotated: dict[str, tuple[tuple[int, int], bool, float, str]] = {}
        self.suggester = Suggester(self.kit, self.labels, head, gan, memory) if head is not None else None

    # ------------------------------------------------------------------ images and masks

    def _scan(self) -> tuple[dict[str, Path], list[str]]:
        images: dict[str, Path] = {}
        dups: list[str] = []
        for p in sorted((self.kit / IMAGES).iterdir()):
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith("."):
                if p.stem in images:
                    dups.append(p.stem)
                else:
                    images[p.stem] = p
        return images, dups

    def images(self) -> dict[str, Path]:
        """name -> image file, sorted by name."""
        return self._scan()[0]

    def image_path(self, name: str) -> Path:
        path = self.images().get(name)
        if path is None:
            raise RequestError(f"no image named {name!r} in this kit", HTTPStatus.NOT_FOUND)
        return path

    def image_size(self, path: Path) -> tuple[int, int]:
        """(height, width) of an image, read from its header and cached while the file is unchanged."""
        st = path.stat()
        key = (st.st_mtime_ns, st.st_size)
        with self._cache_lock:
            hit = self._sizes.get(path)
        if hit is not None and hit[0] == key:
            return hit[1]
        try:
            h, w = read_image_size(path)  # the decoder's rules: allow-listed formats, pixel limit, EXIF rotation
        except (ValueError, OSError) as e:
            raise RequestError(f"{path.name}: cannot read the image: {e}", HTTPStatus.CONFLICT) from None
        with self._cache_lock:
            self._sizes[path] = (key, (h, w))
        return h, w

    def mask_path(self, name: str) -> Path:
        return self.kit / MASKS / f"{name}.png"

    def load_mask(self, name: str) -> np.ndarray | None:
        """The stored mask of an image (None when there is none yet); a stored mask that does not fit its image
        or labels is a conflict the annotator must see, not something to paint over silently."""
        img = self.image_path(name)
        path = self.mask_path(name)
        if not path.is_file():
            return None
        try:
            return read_mask(path, self.labels, img)
        except ValueError as e:
            raise RequestError(str(e), HTTPStatus.CONFLICT) from None

    def status(self, name: str) -> tuple[bool, float, str]:
        """(annotated, fraction of pixels labelled, error) of an image, cached while its mask file is unchanged."""
        path = self.mask_path(name)
        try:
            st = path.stat()
        except FileNotFoundError:
            return False, 0.0, ""
        key = (st.st_mtime_ns, st.st_size)
        with self._cache_lock:
            hit = self._annotated.get(name)
        if hit is not None and hit[0] == key:
            return hit[1], hit[2], hit[3]
        try:
            mask = self.load_mask(name)
            labelled = float((mask != IGNORE).mean()) if mask is not None and mask.size else 0.0
            res = (labelled > 0, labelled, "")
        except RequestError as e:
            res = (False, 0.0, e.message)
        with self._cache_lock:
            self._annotated[name] = (key, *res)
        return res

    def progress(self, images: dict[str, Path] | None = None) -> dict[str, int]:
        images = self.images() if images is None else images
        return {"annotated": sum(self.status(n)[0] for n in images), "total": len(images)}

    def kit_info(self) -> dict[str, Any]:
        images = self.images()
        rows = []
        for name, path in images.items():
            try:
                h, w = self.image_size(path)
                err = ""
            except RequestError as e:
                h, w, err = 0, 0, e.message
            annotated, labelled, mask_err = self.status(name)
            rows.append({"name": name, "width": w, "height": h, "annotated": annotated,
                         "labelled": round(labelled, 4), "error": err or mask_err,
                         "suggest": bool(self.suggester and self.suggester.available(name))})
        if self.suggester is None:
            suggest = {"available": False, "reason": "start the labeller with --head HEAD (and --gan CKPT)"}
        else:
            suggest = {"available": bool(self.suggester.latents), "reason": self.suggester.reason}
        labels = self.labels.to_dict()["classes"]
        return {"kit": str(self.kit), "labels": labels, "ignore": IGNORE, "images": rows,
                "progress": {"annotated": sum(r["annotated"] for r in rows), "total": len(rows)},
                "suggest": suggest}

    def decode_upload(self, name: str, body: bytes, content_type: str | None) -> np.ndarray:
        """A validated uint8 [H, W] mask from an upload for image `name`, or a RequestError saying what is wrong."""
        h, w = self.image_size(self.image_path(name))
        return decode_upload(body, content_type, name, h, w, len(self.labels))

    def save_mask(self, name: str, mask: np.ndarray, session: str | None = None,
                  revision: int | None = None) -> dict[str, Any]:
        """Write a validated mask atomically and answer the new status and progress.

        A page numbers its saves (session, revision): one older than a save already written for the same page
        and image is refused as stale, so requests that overtake each other (a save still in flight when the
        tab closes and its keepalive copy) can never put an older mask over a newer one.
        """
        path = self.mask_path(name)
        with self._write_lock:  # write_mask's temporary name is per process: serialise the threads
            if session and revision is not None:
                last = self._revisions.get((session, name))
                if last is not None and revision <= last:
                    raise RequestError(f"stale save of {name!r}: revision {revision}, "
                                       f"{last} is already written", HTTPStatus.CONFLICT, stale=True)
                self._revisions[(session, name)] = revision
            write_mask(path, mask, self.labels)
        annotated, labelled, _ = self.status(name)
        return {"name": name, "annotated": annotated, "labelled": round(labelled, 4), "progress": self.progress()}

    def suggest(self, name: str) -> np.ndarray:
        h, w = self.image_size(self.image_path(name))
        if self.suggester is None:
            raise RequestError("no head loaded: start the labeller with --head HEAD", HTTPStatus.CONFLICT)
        if not self.suggester.available(name):
            raise RequestError(f"image {name!r} has no recorded latent in the kit, so the "
                               f"head cannot predict it", HTTPStatus.CONFLICT)
        return self.suggester.predict(name, h, w)
