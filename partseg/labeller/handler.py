"""The labeller's HTTP plumbing: routing, the static page, JSON and byte answers, request checks and errors.

Only the standard library serves (no web framework to install for a local tool), only 127.0.0.1 is bound, and
requests whose Host header is not a loopback name are refused (a web page elsewhere cannot reach it by DNS
rebinding). The page itself (`static/`) is plain HTML/CSS/JS and is sent with a Content-Security-Policy that
allows requests to this server only, so the labeller makes no external network requests by construction.

API (names are image file stems, percent-encoded in the path; errors are JSON {"error": message} with a 4xx):

    GET  /                      the page (static/index.html)
    GET  /static/FILE           its ES modules (app.js imports the others) and style sheet: the files in static/
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

A mask counts as annotated when it labels at least one pixel (a value other than 255). What the answers mean
(kit listing, validation, atomic writes) is partseg.labeller.kit's; this module only moves bytes and statuses.
"""

from __future__ import annotations

import json
import sys
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np

from partseg.http_errors import RequestError
from partseg.labeller.masks import RAW

if TYPE_CHECKING:
    from partseg.labeller.server import LabellerServer

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8"}  # text/javascript: browsers refuse ES modules of other types
# the page's files, listed once at import: a URL is only ever looked up in this dict, never joined to a path
STATIC_FILES = {p.name: STATIC_TYPES[p.suffix] for p in sorted(STATIC_DIR.iterdir())
                if p.suffix in STATIC_TYPES and p.is_file() and not p.name.startswith(".")}
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".bmp": "image/bmp",
               ".webp": "image/webp"}
MAX_BODY = 64 << 20  # a 4096 x 4096 raw mask is 16 MiB; anything much bigger is not a mask of this kit
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


class Handler(BaseHTTPRequestHandler):
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
            raise RequestError(f"Host must be a loopback name ({', '.join(LOOPBACK_NAMES)})", HTTPStatus.FORBIDDEN)
        origin = self.headers.get("Origin")
        if self.command != "GET" and origin is not None and (urlsplit(origin).hostname or "") not in LOOPBACK_NAMES:
            raise RequestError(f"cross-origin {self.command} from {origin} refused", HTTPStatus.FORBIDDEN)

    def _body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None:
            if self.headers.get("Transfer-Encoding"):
                raise RequestError("send a Content-Length (chunked bodies are not read)", HTTPStatus.LENGTH_REQUIRED)
            return b""  # HTTP/1.1: no length and no transfer coding means no body
        try:
            n = int(length)
        except ValueError:
            raise RequestError(f"bad Content-Length {length!r}", HTTPStatus.BAD_REQUEST) from None
        if n < 0 or n > MAX_BODY:
            raise RequestError(f"body of {n} bytes (at most {MAX_BODY})", HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        body = self.rfile.read(n)
        if len(body) != n:
            raise RequestError(f"body ended after {len(body)} of {n} bytes", HTTPStatus.BAD_REQUEST)
        return body

    def _revision(self) -> tuple[str | None, int | None]:
        session, rev = self.headers.get("X-Labeller-Session"), self.headers.get("X-Mask-Revision")
        if rev is None:
            return session, None
        try:
            return session, int(rev)
        except ValueError:
            raise RequestError(f"X-Mask-Revision must be an integer, got {rev!r}", HTTPStatus.BAD_REQUEST) from None

    @staticmethod
    def _name(path: str, prefix: str) -> str:
        try:
            return unquote(path[len(prefix):], errors="strict")
        except UnicodeDecodeError:
            raise RequestError("image name is not valid UTF-8", HTTPStatus.BAD_REQUEST) from None

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
                raise RequestError(f"no such API call: {method} {path}",
                                   HTTPStatus.NOT_FOUND if method == "GET" else HTTPStatus.METHOD_NOT_ALLOWED)
            else:
                raise RequestError(f"not found: {path}", HTTPStatus.NOT_FOUND)
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
            raise RequestError(f"not found: /static/{name}", HTTPStatus.NOT_FOUND)
        self._send(HTTPStatus.OK, (STATIC_DIR / name).read_bytes(), STATIC_FILES[name])

    def _get_mask(self, name: str, fmt: str) -> None:
        app = self.server.app
        if fmt not in ("png", "raw"):
            raise RequestError(f"format must be png or raw, got {fmt!r}", HTTPStatus.BAD_REQUEST)
        mask = app.load_mask(name)
        if mask is None:
            raise RequestError(f"image {name!r} has no mask yet", HTTPStatus.NOT_FOUND)
        if fmt == "raw":
            self._raw_mask(mask)
        else:
            self._send(HTTPStatus.OK, app.mask_path(name).read_bytes(), "image/png")
