"""errors.py - the one exception the sandboxd client raises."""

from __future__ import annotations

from typing import Any, Optional


class SandboxError(Exception):
    """An error from the broker, or from talking to it.

    Attributes:
        status:  the HTTP status (404, 400, ...); ``None`` when there was no
                 HTTP answer (connection refused, timeout) or the error
                 arrived inside an event stream.
        code:    the broker's error code (``not_found``, ``invalid_field``,
                 ...); the client uses ``connection_error``, ``timeout`` and
                 ``bad_response`` for failures of its own.
        message: the human-readable message (names the offending field).
        body:    the parsed JSON error body, when there was one.
    """

    def __init__(self, status: Optional[int], code: str, message: str, body: Any = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.body = body
        super().__init__("%s %s: %s" % (status if status is not None else "-", code, message))

    def __repr__(self) -> str:
        return "SandboxError(status=%r, code=%r, message=%r)" % (self.status, self.code, self.message)
