"""The OpenAPI document the service publishes: BentoML's, corrected to say what the service really answers.

BentoML 1.4 declares only 200/400/404/500, inlines 200 schemas that say `string` where it answers null, an error
`detail` of type string that its own validation errors fill with a list, `anyOf: [..., {type: null}]` (not
OpenAPI 3.0) for optional fields, and `type: file` in components.
Here every endpoint declares the statuses it can return with one error schema, nullable fields use 3.0's
`nullable`, and request bodies admit no undeclared fields (the guard refuses them).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

ERROR_SCHEMA = {
    "type": "object", "title": "Error", "required": ["error", "status"],
    "properties": {
        "error": {"type": "string", "description": "What was wrong and what was expected"},
        "status": {"type": "integer", "description": "The HTTP status, repeated"},
        "detail": {"type": "string", "description": "Extra detail, when there is any"},
    },
}
WHY = {
    "400": "Malformed request: not a form, no boundary, missing/unknown/repeated field, a file where a text value "
           "belongs, not an image, damaged or empty image",
    "404": "Unknown path, or an endpoint that is disabled on this server",
    "405": "Method other than POST",
    "408": "The request body did not arrive in time",
    "413": "Body, upload, pixel count or image side over the limit (decompression bombs included)",
    "415": "Request not multipart/form-data, or the file's declared type is not an image",
    "422": "A parameter out of range or of the wrong type, or an image aspect ratio over the limit",
    "500": "The inversion worker reported an error",
    "503": "Over capacity (queue bound, body budget or queue latency) or not ready; see the Retry-After header",
    "504": "Not answered within the time limit",
}


def _nullable(node: Any) -> Any:
    """anyOf [X, {type: null}] -> X with nullable: true (OpenAPI 3.0), recursively; `type: file` -> string."""
    if isinstance(node, list):
        return [_nullable(x) for x in node]
    if not isinstance(node, dict):
        return node
    node = {k: _nullable(v) for k, v in node.items()}
    any_of = node.get("anyOf")
    if isinstance(any_of, list) and {"type": "null"} in any_of and len(any_of) == 2:
        (other,) = [x for x in any_of if x != {"type": "null"}]
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        inner = {"allOf": [other]} if "$ref" in other else dict(other)
        node = {**inner, **rest, "nullable": True}
    if node.get("type") == "file":
        node["type"] = "string"
    return node


def patch_spec(spec: Mapping[str, Any], statuses: Mapping[str, list[int]],
               plain_text: tuple[str, ...] = ("/healthz", "/livez", "/readyz", "/metrics")) -> dict[str, Any]:
    """BentoML's spec with, for each path in `statuses`, exactly these error responses (and its 200); the GET
    routes in `plain_text` (BentoML's probes and metrics) declare the text they answer."""
    out = _nullable(copy.deepcopy(dict(spec)))
    for path in plain_text:
        for op in out.get("paths", {}).get(path, {}).values():
            op.setdefault("responses", {})["200"] = {"description": "OK",
                                                     "content": {"text/plain": {"schema": {"type": "string"}}}}
    schemas = out.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = ERROR_SCHEMA
    for name in ("InvalidArgument", "NotFound", "InternalServerError"):
        schemas.pop(name, None)
    err = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path, codes in statuses.items():
        for op in out.get("paths", {}).get(path, {}).values():
            ok = {str(k): v for k, v in op.get("responses", {}).items()}.get("200")  # BentoML's keys may be ints
            for media in (ok or {}).get("content", {}).values():
                # BentoML inlines the 200 schema, dropping the optional fields' null; its component keeps it
                title = media.get("schema", {}).get("title")
                if title in schemas and media["schema"].get("type") == "object":
                    media["schema"] = {"$ref": f"#/components/schemas/{title}"}
            op["responses"] = {"200": ok, **{str(c): {"description": WHY[str(c)], "content": err} for c in codes}}
            for media in op.get("requestBody", {}).get("content", {}).values():
                schema = media.get("schema", {})
                if schema.get("type") == "object":
                    schema["additionalProperties"] = False
    for name, schema in schemas.items():
        if name.endswith("__Input") and schema.get("type") == "object":
            schema["additionalProperties"] = False
    return out
