"""The labeller's one error type: what the kit logic raises and the HTTP handler turns into a JSON answer."""

from __future__ import annotations

from typing import Any


class RequestError(Exception):
    """A request that cannot be served; becomes a JSON error response {"error": message, **extra} with `status`.

    Raised by the kit logic as well as the HTTP plumbing, so the logic can say which 4xx a problem is (a stored
    mask that does not fit is a 409, a bad upload a 400) without knowing about the handler.
    """

    def __init__(self, status: int, message: str, **extra: Any):
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra
