"""_sse.py - Server-Sent Events parsing over a streamed requests response."""

from __future__ import annotations

import json
from typing import Any, Callable, Generic, Iterator, Optional, Tuple, TypeVar

import requests

from .errors import SandboxError

T = TypeVar("T")


def _lines(resp: requests.Response) -> Iterator[str]:
    """The lines of resp's body as they arrive. iter_content(None) hands
    over each chunk as soon as the socket delivers it, so events are not
    held back waiting for a full buffer."""
    buf = b""
    for chunk in resp.iter_content(chunk_size=None):
        if not chunk:
            continue
        buf += chunk
        while True:
            i = buf.find(b"\n")
            if i < 0:
                break
            line, buf = buf[:i], buf[i + 1 :]
            yield line.rstrip(b"\r").decode("utf-8", "replace")
    if buf:
        yield buf.rstrip(b"\r").decode("utf-8", "replace")


def iter_raw_events(resp: requests.Response) -> Iterator[Tuple[str, Any]]:
    """(event name, parsed JSON data) for each event of an SSE body.
    Comments (``: keepalive``) are skipped."""
    name: Optional[str] = None
    data: list = []
    for line in _lines(resp):
        if line == "":
            if data or name:
                text = "\n".join(data)
                try:
                    parsed: Any = json.loads(text)
                except ValueError:
                    parsed = text
                yield (name or "message", parsed)
            name, data = None, []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
    if data:
        text = "\n".join(data)
        try:
            yield (name or "message", json.loads(text))
        except ValueError:
            yield (name or "message", text)


class EventStream(Generic[T]):
    """An iterator of typed events read live from the broker.

    Iterate it (``for ev in stream``) to receive events as they happen. It
    closes itself after the last event; close it early (``stream.close()``,
    or use it as a context manager) to disconnect, which makes the broker
    stop the command (exec), interrupt the run (code) or stop following
    (process logs)."""

    def __init__(self, resp: requests.Response, convert: Callable[[str, Any], T]) -> None:
        self._resp = resp
        self._convert = convert
        self._it = iter_raw_events(resp)
        self.closed = False

    def __iter__(self) -> "EventStream[T]":
        return self

    def __next__(self) -> T:
        if self.closed:
            raise StopIteration
        try:
            name, data = next(self._it)
        except StopIteration:
            self.close()
            raise
        except requests.RequestException as e:
            self.close()
            raise SandboxError(None, "connection_error", "event stream broken: %s" % e) from e
        return self._convert(name, data)

    def close(self) -> None:
        """Disconnect from the broker (idempotent)."""
        if not self.closed:
            self.closed = True
            self._resp.close()

    def __enter__(self) -> "EventStream[T]":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
