"""The labeller's HTTP side: a standard-library server on 127.0.0.1 that serves the page and reads/writes masks.

Only the standard library serves (no web framework to install for a local tool), only 127.0.0.1 is bound, and
requests whose Host header is not a loopback name are refused (a web page elsewhere cannot reach it by DNS
rebinding). The page itself (`static/`) is plain HTML/CSS/JS and is sent with a Content-Security-Policy that
allows requests to this server only, so the labeller makes no external network requests by construction.

API (names are image file stems, percent-encoded in the path; errors are JSON {"error": message} with a 4xx):

    GET  /                      the page (static/index.html); /static/app.js, /static/style.css
    GET  /api/kit               {"kit", "labels": [{index, name, color, description}], "ignore": 255,
                                 "images": [{name, width, height, annotated, suggest, error}],
                                 "progress": {"annotated": k, "total": K}, "suggest": {available, reason}}
    GET  /api/image/NAME        the image file as stored (PNG for generated kits)
    GET  /api/mask/NAME         the mask as stored: palette PNG of class indices; 404 when there is none yet
    GET  /api/mask/NAME?format=raw
                                the mask as raw bytes: H*W uint8 class indices, row-major (headers X-Mask-Width,
                                X-Mask-Height); 404 when there is none yet
    PUT  /api/mask/NAME         store a mask (POST does the same). Body: either Content-Type image/png, a PNG of
                                class indices (mode 'L' or 'P': the pixel values are the classes), or
                                Content-Type application/octet-stream, exactly H*W raw uint8 class indices in
                                row-major order. Values must be class indices (< number of classes) or 255
                                (unlabelled), the size must be the image's. Answers {"name", "annotated",
                                "labelled", "progress"}. Optional headers X-Labeller-Session and X-Mask-Revision
                                (an integer): a save older than one already written for the same session and
                                image is refused with 409 {"stale": true}.
    POST /api/suggest/NAME      the head's prediction for a generated image (raw bytes as above); 409 when this
                                image has no recorded latent or no head was given. Nothing is written.

A mask counts as annotated when it labels at least one pixel (a value other than 255). Writes go through
`partseg.data.dataset.write_mask` (temporary file + rename: a crash or a killed server leaves the old mask or the new
one, never half a PNG) under one lock, so two requests for the same image cannot interleave their temporary
files, and nothing is written unless the whole upload validated.
"""

from __future__ import annotations

import io
import json
import os
import sys
import threading
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
from PIL import Image, UnidentifiedImageError

from partseg.data.dataset import IMAGE_SUFFIXES, IMAGES, MASKS, read_mask, write_mask
from partseg.images import image_size as read_image_size
from partseg.labels import IGNORE, LABELS_FILE, Labels

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
                "style.css": "text/css; charset=utf-8"}
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".bmp": "image/bmp",
               ".webp": "image/webp"}
RAW = "application/octet-stream"
MAX_BODY = 64 << 20  # a 4096 x 4096 raw mask is 16 MiB; anything much bigger is not a mask of this kit
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HOST = "127.0.0.1"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


class RequestError(Exception):
    """A request that cannot be served; becomes a JSON error response with `status`."""

    def __init__(self, status: int, message: str, **extra: Any):
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


def _mime(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


class _Suggester:
    """The head's prediction for kit images that carry their latents (samples.json + latents.safetensors).

    Loaded once at start-up so a wrong head (another GAN, other classes) fails before the page opens, not on
    the first click. Predictions are cached per image; one lock serialises the forward passes.
    """

    def __init__(self, kit: Path, labels: Labels, head: str | os.PathLike, gan: Any = None):
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


class LabellerApp:
    """The kit behind the page: which images exist, their masks, validation and atomic writes.

    The image folder is re-read on every request (a kit holds tens of images), so images added while the
    labeller runs appear on reload, and a name is only ever resolved by looking it up in that listing: a
    request can never name a file outside `KIT/images` or write outside `KIT/masks`.
    """

    def __init__(self, kit: str | os.PathLike, head: str | os.PathLike | None = None, gan: Any = None):
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
        self.suggester = _Suggester(self.kit, self.labels, head, gan) if head is not None else None

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
            raise RequestError(HTTPStatus.NOT_FOUND, f"no image named {name!r} in this kit")
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
            raise RequestError(HTTPStatus.CONFLICT, f"{path.name}: cannot read the image: {e}") from None
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
            raise RequestError(HTTPStatus.CONFLICT, str(e)) from None

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
        """A validated uint8 [H, W] mask from an upload, or a RequestError saying what is wrong with it."""
        h, w = self.image_size(self.image_path(name))
        kind = _mime(content_type)
        if kind == RAW:
            if len(body) != h * w:
                raise RequestError(HTTPStatus.BAD_REQUEST, f"raw mask of {len(body)} bytes; image {name!r} is "
                                                           f"{w}x{h}, so exactly {h * w} bytes are expected")
            mask = np.frombuffer(body, dtype=np.uint8).reshape(h, w).copy()
        elif kind == "image/png":
            try:
                with Image.open(io.BytesIO(body)) as im:
                    if im.format != "PNG":
                        raise RequestError(HTTPStatus.BAD_REQUEST, f"body is {im.format}, not a PNG")
                    if im.size != (w, h):  # checked before decoding: a huge PNG is never decompressed
                        raise RequestError(HTTPStatus.BAD_REQUEST, f"mask is {im.size[0]}x{im.size[1]}; image "
                                                                   f"{name!r} is {w}x{h}")
                    if im.mode not in ("L", "P"):
                        raise RequestError(HTTPStatus.BAD_REQUEST, f"PNG mode is {im.mode!r}; a mask is a "
                                                                   f"palette ('P') or greyscale ('L') PNG whose "
                                                                   f"pixel values are class indices")
                    mask = np.asarray(im, dtype=np.uint8).copy()
            except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
                raise RequestError(HTTPStatus.BAD_REQUEST, f"cannot decode the PNG: {e}") from None
        else:
            raise RequestError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                               f"Content-Type {content_type!r}: send image/png (class indices) or {RAW} "
                               f"(H*W uint8, row-major)")
        bad = (mask >= len(self.labels)) & (mask != IGNORE)
        if bad.any():
            vals = sorted(set(np.unique(mask[bad]).tolist()))
            raise RequestError(HTTPStatus.BAD_REQUEST, f"mask values {vals[:10]} are not class indices "
                                                       f"(0-{len(self.labels) - 1}) nor {IGNORE} (unlabelled)")
        return mask

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
                    raise RequestError(HTTPStatus.CONFLICT, f"stale save of {name!r}: revision {revision}, "
                                                            f"{last} is already written", stale=True)
                self._revisions[(session, name)] = revision
            write_mask(path, mask, self.labels)
        annotated, labelled, _ = self.status(name)
        return {"name": name, "annotated": annotated, "labelled": round(labelled, 4), "progress": self.progress()}

    def suggest(self, name: str) -> np.ndarray:
        h, w = self.image_size(self.image_path(name))
        if self.suggester is None:
            raise RequestError(HTTPStatus.CONFLICT, "no head loaded: start the labeller with --head HEAD")
        if not self.suggester.available(name):
            raise RequestError(HTTPStatus.CONFLICT, f"image {name!r} has no recorded latent in the kit, so the "
                                                    f"head cannot predict it")
        return self.suggester.predict(name, h, w)


class _Handler(BaseHTTPRequestHandler):
    """Routes requests to the LabellerApp; every answer carries a Content-Length (HTTP/1.1 keep-alive)."""

    server_version = "partseg-labeller"
    protocol_version = "HTTP/1.1"
    server: LabellerServer

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_POST(self) -> None:
        self._dispatch("POST")

    # ------------------------------------------------------------------ plumbing

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", CSP)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, obj: Any, status: int = HTTPStatus.OK) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _raw_mask(self, mask: np.ndarray) -> None:
        h, w = mask.shape
        self._send(HTTPStatus.OK, np.ascontiguousarray(mask, dtype=np.uint8).tobytes(), RAW,
                   {"X-Mask-Width": str(w), "X-Mask-Height": str(h)})

    def _check_host(self) -> None:
        """Only requests addressed to a loopback name: a page on another site that rebinds its own name to
        127.0.0.1 still sends its name as Host. Any port is fine (an SSH tunnel may forward another one)."""
        host = urlsplit(f"//{self.headers.get('Host') or ''}").hostname or ""
        if host not in LOOPBACK_NAMES:
            raise RequestError(HTTPStatus.FORBIDDEN, f"Host must be a loopback name ({', '.join(LOOPBACK_NAMES)})")
        origin = self.headers.get("Origin")
        if self.command != "GET" and origin is not None and (urlsplit(origin).hostname or "") not in LOOPBACK_NAMES:
            raise RequestError(HTTPStatus.FORBIDDEN, f"cross-origin {self.command} from {origin} refused")

    def _body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None:
            if self.headers.get("Transfer-Encoding"):
                raise RequestError(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length (chunked bodies are not read)")
            return b""  # HTTP/1.1: no length and no transfer coding means no body
        try:
            n = int(length)
        except ValueError:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"bad Content-Length {length!r}") from None
        if n < 0 or n > MAX_BODY:
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body of {n} bytes (at most {MAX_BODY})")
        body = self.rfile.read(n)
        if len(body) != n:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"body ended after {len(body)} of {n} bytes")
        return body

    def _revision(self) -> tuple[str | None, int | None]:
        session, rev = self.headers.get("X-Labeller-Session"), self.headers.get("X-Mask-Revision")
        if rev is None:
            return session, None
        try:
            return session, int(rev)
        except ValueError:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"X-Mask-Revision must be an integer, got {rev!r}") from None

    @staticmethod
    def _name(path: str, prefix: str) -> str:
        try:
            return unquote(path[len(prefix):], errors="strict")
        except UnicodeDecodeError:
            raise RequestError(HTTPStatus.BAD_REQUEST, "image name is not valid UTF-8") from None

    def _dispatch(self, method: str) -> None:
        app = self.server.app
        # until a request body has been read, an error answer must close the connection: the unread body would
        # otherwise be taken for the next request on this keep-alive connection
        requested_close = self.close_connection  # the client's own Connection: close
        self.close_connection = requested_close or method != "GET"
        try:
            self._check_host()
            url = urlsplit(self.path)
            path, query = url.path, parse_qs(url.query)
            if method == "GET" and path in ("/", "/index.html"):
                self._static("index.html")
            elif method == "GET" and path.startswith("/static/"):
                self._static(path[len("/static/"):])
            elif path == "/api/kit" and method == "GET":
                self._json(app.kit_info())
            elif path.startswith("/api/image/") and method == "GET":
                img = app.image_path(self._name(path, "/api/image/"))
                self._send(HTTPStatus.OK, img.read_bytes(), IMAGE_TYPES.get(img.suffix.lower(), RAW))
            elif path.startswith("/api/mask/"):
                name = self._name(path, "/api/mask/")
                if method == "GET":
                    self._get_mask(name, query.get("format", ["png"])[0])
                else:
                    body = self._body()
                    self.close_connection = requested_close
                    mask = app.decode_upload(name, body, self.headers.get("Content-Type"))
                    self._json(app.save_mask(name, mask, *self._revision()))
            elif path.startswith("/api/suggest/") and method in ("GET", "POST"):
                if method == "POST":
                    self._body()
                    self.close_connection = requested_close
                self._raw_mask(app.suggest(self._name(path, "/api/suggest/")))
            elif path.startswith("/api/"):
                raise RequestError(HTTPStatus.NOT_FOUND if method == "GET" else HTTPStatus.METHOD_NOT_ALLOWED,
                                   f"no such API call: {method} {path}")
            else:
                raise RequestError(HTTPStatus.NOT_FOUND, f"not found: {path}")
        except RequestError as e:
            self._json({"error": e.message, **e.extra}, e.status)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # noqa: BLE001 - answer 500 and keep serving; the page shows the message
            traceback.print_exc(file=sys.stderr)
            self.close_connection = True
            self._json({"error": f"internal error: {type(e).__name__}: {e}"}, HTTPStatus.INTERNAL_SERVER_ERROR)

    def _static(self, name: str) -> None:
        if name not in STATIC_FILES:  # a fixed list: no path from the URL ever reaches the file system
            raise RequestError(HTTPStatus.NOT_FOUND, f"not found: /static/{name}")
        self._send(HTTPStatus.OK, (STATIC_DIR / name).read_bytes(), STATIC_FILES[name])

    def _get_mask(self, name: str, fmt: str) -> None:
        app = self.server.app
        if fmt not in ("png", "raw"):
            raise RequestError(HTTPStatus.BAD_REQUEST, f"format must be png or raw, got {fmt!r}")
        mask = app.load_mask(name)
        if mask is None:
            raise RequestError(HTTPStatus.NOT_FOUND, f"image {name!r} has no mask yet")
        if fmt == "raw":
            self._raw_mask(mask)
        else:
            self._send(HTTPStatus.OK, app.mask_path(name).read_bytes(), "image/png")


class LabellerServer(ThreadingHTTPServer):
    """ThreadingHTTPServer holding the app; `url` is the page, `stop()` shuts it down and frees the port."""

    daemon_threads = True

    def __init__(self, app: LabellerApp, port: int = 0, verbose: bool = False):
        super().__init__((HOST, port), _Handler)
        self.app, self.verbose = app, verbose
        self.url = f"http://{HOST}:{self.server_address[1]}/"
        self._thread: threading.Thread | None = None

    def start(self) -> LabellerServer:
        """Serve in a daemon thread (tests, notebooks); returns self."""
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), name="partseg-labeller",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        self.server_close()


def serve(kit: str | os.PathLike, port: int = 0, head: str | os.PathLike | None = None, gan: Any = None,
          verbose: bool = False) -> tuple[LabellerServer, str]:
    """A labeller server for `kit` bound to 127.0.0.1:port (0: a free port), not yet serving; returns it and its
    URL. `head` (a head file) with `gan` (checkpoint, builtin:NAME or a Generator; default the generator the
    kit's samples.json names) enables the "suggest" button."""
    server = LabellerServer(LabellerApp(kit, head=head, gan=gan), port=port, verbose=verbose)
    return server, server.url


def start_labeller(kit: str | os.PathLike, port: int = 0, head: str | os.PathLike | None = None, gan: Any = None,
                   verbose: bool = False) -> tuple[LabellerServer, str]:
    """`serve`, already serving in a background thread; call `server.stop()` when done."""
    server, url = serve(kit, port=port, head=head, gan=gan, verbose=verbose)
    return server.start(), url


def run_labeller(kit: str | os.PathLike, port: int = 8765, head: str | os.PathLike | None = None, gan: Any = None,
                 verbose: bool = False, on_ready: Any = None) -> None:
    """Serve until Ctrl-C (the CLI). `on_ready(url)` is called once the port is bound."""
    server, url = serve(kit, port=port, head=head, gan=gan, verbose=verbose)
    if on_ready is not None:
        on_ready(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
