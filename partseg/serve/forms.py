"""Strict multipart/form-data parsing for the service's upload endpoints, ahead of BentoML's own parser.

BentoML 1.4 answers 500 to several well-formed or nearly well-formed requests (a file part in a text field, a
missing boundary, a long file name: see tests/test_serve_guard.py, which reproduces each against BentoML itself).
So every form is parsed here first (python-multipart, the parser Starlette uses), checked field by field against
what the endpoint takes, and re-encoded as one canonical body; BentoML only ever parses bodies written by
`encode_form`. Every problem is a RequestError with its 4xx status.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from partseg.serve.uploads import RequestError, TooLarge, Unprocessable, UnsupportedType, check_content_type

TEXT_LIMIT = 256  # bytes of a text field's value
TRUE = frozenset({"1", "true", "yes", "on", "t", "y"})
FALSE = frozenset({"0", "false", "no", "off", "f", "n"})


@dataclass(frozen=True)
class FormSpec:
    """What an endpoint takes: one file field and text fields of known kinds ("bool" or "unit": a number in
    [0, 1])."""

    file_field: str
    text_fields: Mapping[str, str]

    def describe(self) -> str:
        kinds = {"bool": "true/false", "unit": "a number from 0 to 1"}
        rest = [f"'{k}' ({kinds[v]})" for k, v in self.text_fields.items()]
        return f"'{self.file_field}' (an image file)" + "".join(f", {r}" for r in rest)


@dataclass
class Part:
    name: str
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class Form:
    file: Part
    values: dict[str, str]  # canonical text of each text field sent


def boundary_of(content_type: str | None) -> bytes:
    """The boundary of a multipart/form-data Content-Type header; 415 for another type, 400 without a boundary."""
    from python_multipart.multipart import parse_options_header

    base, params = parse_options_header(content_type or "")
    if base != b"multipart/form-data":
        shown = base.decode("latin-1") or "none"
        raise UnsupportedType(f"request content type {shown!r} is not accepted: send multipart/form-data with the "
                              f"image in the field 'image' (curl -F image=@face.png)")
    boundary = params.get(b"boundary", b"")
    if not boundary:
        raise RequestError("multipart/form-data without a boundary parameter: the form cannot be read (let your "
                           "HTTP client set the Content-Type of a form)")
    if len(boundary) > 200:
        raise RequestError(f"multipart boundary of {len(boundary)} bytes; at most 200 (RFC 2046 allows 70)")
    return boundary


class _Collector:
    """python-multipart callbacks that keep each part's headers and bytes, within per-part limits."""

    def __init__(self, file_limit: int):
        self.file_limit = file_limit
        self.parts: list[tuple[list[tuple[bytes, bytes]], bytearray]] = []
        self._name = bytearray()
        self._value = bytearray()
        self.ended = False

    def callbacks(self) -> dict:
        return {"on_part_begin": self.begin, "on_part_data": self.data, "on_header_field": self.field,
                "on_header_value": self.value, "on_header_end": self.header_end, "on_end": self.end}

    def begin(self) -> None:
        if len(self.parts) >= 8:
            raise RequestError("more than 8 parts in the form: send the image and at most the endpoint's options")
        self.parts.append(([], bytearray()))

    def field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]
        if len(self._value) > 8192:
            raise RequestError("a multipart part header is longer than 8 KiB")

    def header_end(self) -> None:
        self.parts[-1][0].append((bytes(self._name).lower(), bytes(self._value)))
        self._name.clear()
        self._value.clear()

    def data(self, data: bytes, start: int, end: int) -> None:
        buf = self.parts[-1][1]
        buf += data[start:end]
        if len(buf) > self.file_limit:
            raise TooLarge(f"the upload is over {self.file_limit / 2**20:.1f} MiB, the limit")

    def end(self) -> None:
        self.ended = True


def parse_form(body: bytes, content_type: str | None, file_limit: int) -> list[Part]:
    """All parts of a multipart/form-data body, or a RequestError (malformed, truncated, too many parts, too big)."""
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser, parse_options_header

    if (content_type or "").split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
        return _urlencoded(body)  # text fields only: checked like a form, so a missing file is named as such
    boundary = boundary_of(content_type)
    col = _Collector(file_limit)
    try:
        parser = MultipartParser(boundary, col.callbacks())
        parser.write(body)
        parser.finalize()
    except MultipartParseError as e:
        raise RequestError(f"malformed multipart/form-data body ({e})") from None
    if not col.ended:
        raise RequestError("truncated multipart/form-data body: the closing boundary is missing")
    parts = []
    for headers, data in col.parts:
        hd = dict(headers)
        disposition, opts = parse_options_header(hd.get(b"content-disposition", b""))
        if disposition != b"form-data" or b"name" not in opts:
            raise RequestError("a multipart part has no 'Content-Disposition: form-data; name=...' header")
        name = _utf8(opts[b"name"], "a field name")
        filename = _utf8(opts[b"filename"], f"the file name of field '{name}'") if b"filename" in opts else None
        ctype = hd.get(b"content-type")
        parts.append(Part(name, filename, None if ctype is None else ctype.decode("latin-1").strip(), bytes(data)))
    return parts


def _urlencoded(body: bytes) -> list[Part]:
    from urllib.parse import parse_qsl

    text = _utf8(body, "the url-encoded form")
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text), max_num_fields=8,
                          errors="strict")
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(f"malformed url-encoded form ({e})") from None
    return [Part(k, None, None, v.encode()) for k, v in pairs]


def _utf8(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError(f"{what} is not valid UTF-8") from None


def check_form(parts: list[Part], spec: FormSpec) -> Form:
    """The parts checked against what the endpoint takes: one image file, known text fields once each, values of
    the right kind (400 wrong/extra/repeated field, 415 non-image file type, 422 bad value)."""
    seen: dict[str, Part] = {}
    for p in parts:
        if p.name != spec.file_field and p.name not in spec.text_fields:
            raise RequestError(f"unknown field {p.name!r}: this endpoint takes {spec.describe()}")
        if p.name in seen:
            extra = " (one image per request)" if p.name == spec.file_field else ""
            raise RequestError(f"field {p.name!r} sent more than once{extra}")
        seen[p.name] = p
    file = seen.get(spec.file_field)
    if file is None:
        raise RequestError(f"no {spec.file_field!r} file field: send the image as a multipart file part "
                           f"(curl -F {spec.file_field}=@face.png)")
    if file.filename is None:
        raise RequestError(f"the {spec.file_field!r} field must be an uploaded file (a multipart file part, e.g. "
                           f"curl -F {spec.file_field}=@face.png), not a text value; this server does not fetch "
                           f"URLs")
    check_content_type(file.content_type)
    values = {}
    for name, kind in spec.text_fields.items():
        p = seen.get(name)
        if p is None:
            continue
        if p.filename is not None:
            raise RequestError(f"field {name!r} must be a text value, not a file")
        if len(p.data) > TEXT_LIMIT:
            raise Unprocessable(f"field {name!r} is {len(p.data)} bytes long; expected {spec.describe()}")
        text = _utf8(p.data, f"field {name!r}").strip()
        values[name] = _canonical(name, kind, text)
    return Form(file, values)


def _canonical(name: str, kind: str, text: str) -> str:
    low = text.strip('"').lower()
    if kind == "bool":
        if low in TRUE:
            return "true"
        if low in FALSE:
            return "false"
        raise Unprocessable(f"field {name!r} must be true or false, got {text[:40]!r}")
    try:
        x = float(low)
    except ValueError:
        raise Unprocessable(f"field {name!r} must be a number from 0 to 1, got {text[:40]!r}") from None
    if not math.isfinite(x) or not 0 <= x <= 1:
        raise Unprocessable(f"field {name!r} must be a number from 0 to 1, got {text[:40]!r}")
    return repr(x)


def encode_form(form: Form, spec: FormSpec) -> tuple[bytes, str]:
    """(body, Content-Type) of the canonical form BentoML gets: fixed boundary, file name and headers."""
    ctype = (form.file.content_type or "application/octet-stream").split(";")[0].strip().lower()
    if not ctype.isascii() or any(c in ctype for c in '"\r\n'):
        ctype = "application/octet-stream"
    boundary = "partseg-" + secrets.token_hex(16)  # 128 random bits: never inside the image's bytes in practice
    if boundary.encode() in form.file.data:
        return encode_form(form, spec)
    out = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"{spec.file_field}\"; filename=\"upload\"\r\n"
           f"Content-Type: {ctype}\r\n\r\n".encode(), form.file.data, b"\r\n"]
    for name, value in form.values.items():
        out.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n".encode())
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={boundary}"
