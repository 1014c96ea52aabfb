"""The ASGI layer in front of BentoML's app (outside its metrics, timeout and routing layers): admission, body
limits, strict forms, unknown paths, uniform error bodies, Retry-After on every 503, the corrected OpenAPI document.

Why in front: BentoML reads a whole body before any limit applies, answers 500 to some malformed forms, and keeps
one Prometheus label set per requested path, so a scan of random URLs grows /metrics without bound. Here:

- an unknown path is a 404 answered before BentoML's metrics see it;
- an endpoint request is admitted only while fewer than `max_queue` are in progress (else 503 at once, body
  unread); a declared Content-Length over the limit is a 413 before the body is read, a body without one is
  counted while it streams in and refused as soon as it passes the limit;
- a form is parsed and checked by `forms`, then handed to BentoML re-encoded (BentoML never parses client bytes);
- every 4xx/5xx body leaving the service is `{"error": str, "status": int}` (plus `detail` as a string where
  BentoML gave one), and every 503 carries Retry-After.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from partseg.serve.forms import FormSpec, check_form, encode_form, parse_form
from partseg.serve.uploads import RequestError, TooLarge, Unavailable

GUARDED_BENTOML = "1.4.40"  # the BentoML whose parser and app layers tests/test_serve_guard.py checks
FORM_OVERHEAD = 64 * 1024  # bytes a form may add to the upload limit: boundaries, part headers, text fields
SMALL_BODY = 64 * 1024  # bytes of a body for an endpoint without an upload
BODY_TIMEOUT_S = 30.0  # to receive a whole body: a client that stalls does not hold its admission slot for good


@dataclass(frozen=True)
class Endpoint:
    """An API route: `form` says which multipart fields it takes; None: no parameters (empty body or {})."""

    form: FormSpec | None = None


class Admission:
    """At most `limit` endpoint requests in progress in this process (reading, decoding, queued for or in the
    model, encoding), holding at most `max_bytes` of request bodies between them; past either, a request is refused
    (503) at once or as soon as its body would pass the byte budget."""

    def __init__(self, limit: int, max_bytes: int | None = None):
        self.limit = int(limit)
        self.max_bytes = max_bytes
        self.bytes = 0
        self.inside = 0
        self.admitted = 0
        self.refused = 0

    def enter(self) -> bool:
        if self.inside >= self.limit:
            self.refused += 1
            return False
        self.inside += 1
        self.admitted += 1
        return True

    def leave(self) -> None:
        self.inside -= 1

    def reserve(self, n: int) -> None:
        """Count `n` more body bytes held, or refuse the request (Unavailable) when the budget is spent."""
        if self.max_bytes is not None and self.bytes + n > self.max_bytes:
            raise Unavailable(f"the service holds {self.bytes / 2**20:.0f} MiB of request bodies, its limit "
                              f"(PARTSEG_MAX_BUFFERED_MB); retry later")
        self.bytes += n


class ClientGone(Exception):
    pass


async def read_body(scope: Mapping[str, Any], receive: Callable, limit: int,
                    timeout: float = BODY_TIMEOUT_S, reserve: Callable[[int], None] | None = None) -> bytes:
    """The request body, refused (413) from its Content-Length before reading or as soon as it streams past
    `limit`; 408 when it has not all arrived within `timeout` seconds."""
    declared = header(scope, b"content-length")
    if declared is not None:
        try:
            n = int(declared)
        except ValueError:
            raise RequestError(f"invalid Content-Length {declared[:40]!r}") from None
        if n > limit:
            raise TooLarge(f"request body of {n:,} bytes is over the limit of {limit:,} bytes (the upload limit, "
                           f"PARTSEG_MAX_UPLOAD_MB, plus {FORM_OVERHEAD // 1024} KiB for the form)")
    buf = bytearray()
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            msg = await asyncio.wait_for(receive(), max(deadline - asyncio.get_running_loop().time(), 0.001))
        except asyncio.TimeoutError:  # noqa: UP041 - not TimeoutError's alias before Python 3.11
            raise RequestError(f"the request body did not arrive within {timeout:g} s",
                               HTTPStatus.REQUEST_TIMEOUT) from None
        if msg["type"] == "http.disconnect":
            raise ClientGone
        chunk = msg.get("body", b"")
        if reserve is not None:
            reserve(len(chunk))
        buf += chunk
        if len(buf) > limit:
            raise TooLarge(f"request body over the limit of {limit:,} bytes (the upload limit, "
                           f"PARTSEG_MAX_UPLOAD_MB, plus {FORM_OVERHEAD // 1024} KiB for the form)")
        if not msg.get("more_body", False):
            return bytes(buf)


def header(scope: Mapping[str, Any], name: bytes) -> str | None:
    for k, v in scope.get("headers", ()):
        if k.lower() == name:
            return v.decode("latin-1")
    return None


def error_body(status: int, message: str, detail: str | None = None) -> bytes:
    d: dict[str, Any] = {"error": message, "status": int(status)}
    if detail:
        d["detail"] = detail
    return json.dumps(d).encode()


class Guard:
    """ASGI app wrapping BentoML's app for the front service (see the module docstring)."""

    def __init__(self, app: Callable, endpoints: Mapping[str, Endpoint], passthrough: frozenset[str],
                 passthrough_prefixes: tuple[str, ...], max_upload_bytes: int, admission: Admission,
                 retry_after_s: int = 1, spec: Callable[[], dict] | None = None, spec_path: str = "/docs.json"):
        self.app = app
        self.endpoints = dict(endpoints)
        self.passthrough = passthrough
        self.prefixes = passthrough_prefixes
        self.max_upload = int(max_upload_bytes)
        self.admission = admission
        self.retry_after = str(int(retry_after_s))
        self.spec, self.spec_path = spec, spec_path
        self._spec_body: bytes | None = None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        send = self._uniform_errors(send)
        path = scope["path"]
        if path in self.endpoints:
            return await self._endpoint(self.endpoints[path], scope, receive, send)
        if path == self.spec_path and self.spec is not None and scope["method"] in ("GET", "HEAD"):
            if self._spec_body is None:
                self._spec_body = json.dumps(self.spec()).encode()
            return await respond(send, 200, self._spec_body, "application/json")
        if path in self.passthrough or path.startswith(self.prefixes):
            return await self.app(scope, receive, send)
        known = ", ".join(sorted(self.endpoints))
        await respond(send, 404, error_body(404, f"no such endpoint {path[:200]!r}; the API is {known} (POST), "
                                                 f"see {self.spec_path}"))

    async def _endpoint(self, ep: Endpoint, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["method"] != "POST":
            body = error_body(405, f"{scope['path']} takes POST, not {scope['method'][:20]}")
            return await respond(send, 405, body, headers=[(b"allow", b"POST")])
        if not self.admission.enter():
            msg = (f"the service is at its limit of {self.admission.limit} requests in progress "
                   f"(PARTSEG_MAX_QUEUE); retry after {self.retry_after} s")
            return await respond(send, 503, error_body(503, msg))
        held = 0

        def reserve(n: int) -> None:
            nonlocal held
            self.admission.reserve(n)
            held += n

        try:
            try:
                limit = self.max_upload + FORM_OVERHEAD if ep.form is not None else SMALL_BODY
                raw = await read_body(scope, receive, limit, reserve=reserve)
                body, ctype = self._canonical(ep, raw, header(scope, b"content-type"))
            except RequestError as e:
                return await respond(send, int(e.status), error_body(int(e.status), e.message))
            except ClientGone:
                return
            headers = [(k, v) for k, v in scope["headers"] if k.lower() not in (b"content-type", b"content-length",
                                                                              b"transfer-encoding", b"expect")]
            headers += [(b"content-type", ctype.encode()), (b"content-length", str(len(body)).encode())]
            await self.app({**scope, "headers": headers}, _replay(body, receive), send)
        finally:
            self.admission.bytes -= held
            self.admission.leave()

    def _canonical(self, ep: Endpoint, raw: bytes, content_type: str | None) -> tuple[bytes, str]:
        if ep.form is None:
            text = raw.strip()
            try:
                ok = not text or json.loads(text) == {}
            except (ValueError, UnicodeDecodeError):
                ok = False
            if not ok:
                raise RequestError("this endpoint takes no parameters: send no body or the JSON object {}")
            return b"{}", "application/json"
        if not raw:
            raise RequestError("empty request body: send multipart/form-data with the image in the field 'image' "
                               "(curl -F image=@face.png)")
        parts = parse_form(raw, content_type, self.max_upload)
        return encode_form(check_form(parts, ep.form), ep.form)

    def _uniform_errors(self, send: Callable) -> Callable:
        """Error bodies from BentoML's layers rewritten to the service's error shape; Retry-After on 503s."""
        held: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def wrapped(message: dict) -> None:
            if message["type"] == "http.response.start":
                if message["status"] < 400:
                    return await send(message)
                held["start"] = message
                return None
            if "start" not in held or message["type"] != "http.response.body":
                return await send(message)
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return None
            start = held.pop("start")
            status = int(start["status"])
            body = uniform_error(status, b"".join(chunks))
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() not in (b"content-length",
                                                                                     b"content-type")]
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            if status == 503 and not any(k.lower() == b"retry-after" for k, _ in headers):
                headers.append((b"retry-after", self.retry_after.encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        return wrapped


def uniform_error(status: int, body: bytes) -> bytes:
    """{"error": str, "status": int[, "detail": str]} from whatever error body an inner layer wrote."""
    try:
        d = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        d = None
    if isinstance(d, dict) and isinstance(d.get("error"), str):
        detail = d.get("detail")
        if detail is not None and not isinstance(detail, str):
            detail = json.dumps(detail)
        return error_body(status, d["error"], detail)
    text = body.decode("utf-8", "replace").strip() or HTTPStatus(status).phrase
    return error_body(status, text[:2000])


def _replay(body: bytes, receive: Callable) -> Callable:
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def respond(send: Callable, status: int, body: bytes, content_type: str = "application/json",
                  headers: list[tuple[bytes, bytes]] | None = None) -> None:
    hdrs = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
            *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})
