"""The error both of partseg's HTTP servers (the segmentation service, the browser labeller) raise from their
logic to answer a request with a 4xx (or 503) and a JSON body, without the logic knowing about the server."""

from __future__ import annotations

from http import HTTPStatus


class RequestError(Exception):
    """A request that cannot be served: answered with `status` and the JSON body {"error": message, **extra}.
    Subclasses (partseg.serve.uploads) fix the status of a kind of problem."""

    status: HTTPStatus = HTTPStatus.BAD_REQUEST

    def __init__(self, message: str, status: HTTPStatus | int | None = None, **extra: object):
        super().__init__(message)
        self.message, self.extra = message, extra
        if status is not None:
            self.status = HTTPStatus(status)
