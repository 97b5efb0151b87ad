"""manager.py - SandboxManager: the connection to one sandboxd broker.

It owns the one ``requests.Session`` (connection reuse), the base URL and
the bearer token, turns every error answer into a ``SandboxError`` and
caches one ``Sandbox`` handle per sandbox id."""

from __future__ import annotations

import json
import os
import threading
from typing import Any, Callable, Dict, List, Mapping, Optional, TypeVar
from urllib.parse import quote

import requests

from ._sse import EventStream
from .errors import SandboxError
from .sandbox import Sandbox

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8080"
# Seconds to wait for an answer beyond the time a command may run, and the
# longest silence tolerated inside an event stream (the broker sends a
# keepalive comment every 15 s).
SLACK_SECONDS = 30.0
STREAM_IDLE_SECONDS = 60.0


def _error_from(resp: requests.Response) -> SandboxError:
    body: Any = None
    try:
        body = resp.json()
    except ValueError:
        pass
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        e = body["error"]
        return SandboxError(resp.status_code, str(e.get("code", "unknown")), str(e.get("message", "")), body)
    text = resp.text[:500] if resp.content is not None else ""
    return SandboxError(resp.status_code, "http_%d" % resp.status_code, text or resp.reason or "", body)


class SandboxManager:
    """A client of one sandboxd broker.

    Args:
        base_url: the broker's URL (default: ``$SANDBOXD_URL``, else
            ``http://127.0.0.1:8080``).
        token: the bearer token (default: ``$SANDBOXD_TOKEN``; ``None``
            sends no Authorization header, for a broker without tokens).
        timeout: seconds to wait for an ordinary answer (calls that run
            something wait for their own timeout plus 30 s).
        session: a ``requests.Session`` to use instead of a new one.

    Use it as a context manager, or call ``close()``, to release its
    connections. It is safe to share between threads."""

    def __init__(
        self,
        base_url: Optional[str] = None,
        token: Optional[str] = None,
        *,
        timeout: float = 60.0,
        session: Optional[requests.Session] = None,
    ) -> None:
        self.base_url = (base_url or os.environ.get("SANDBOXD_URL") or DEFAULT_URL).rstrip("/")
        self.token = token if token is not None else os.environ.get("SANDBOXD_TOKEN")
        self.timeout = timeout
        self.http = session or requests.Session()
        if self.token:
            self.http.headers["Authorization"] = "Bearer " + self.token
        self._sandboxes: Dict[str, Sandbox] = {}
        self._lock = threading.Lock()

    # ---- sandboxes -------------------------------------------------------

    def create_or_get_sandbox(
        self,
        sandbox_id: Optional[str] = None,
        *,
        keepalive_seconds: Optional[int] = None,
        env: Optional[Mapping[str, str]] = None,
        limits: Optional[Mapping[str, Any]] = None,
    ) -> Sandbox:
        """Create the sandbox ``sandbox_id`` (a generated id when ``None``),
        or get it when this tenant already has it (then the other arguments
        are ignored, as the broker leaves it unchanged). Returns the cached
        handle for that id: the same object on every call.

        ``limits``: ``{"memory_mb": int, "cpus": float, "pids": int}``."""
        body: Dict[str, Any] = {}
        if sandbox_id is not None:
            body["id"] = sandbox_id
        if keepalive_seconds is not None:
            body["keepalive_seconds"] = keepalive_seconds
        if env is not None:
            body["env"] = dict(env)
        if limits is not None:
            body["limits"] = dict(limits)
        resp = self.request("POST", "/v1/sandboxes", json=body, timeout=self.timeout + SLACK_SECONDS)
        info = resp.json()
        sb = self.sandbox(info["id"])
        sb.info = info
        sb.created = resp.status_code == 201
        return sb

    def sandbox(self, sandbox_id: str) -> Sandbox:
        """The cached handle for ``sandbox_id``, made without asking the
        broker (calls on it fail with 404 if the sandbox does not exist)."""
        with self._lock:
            sb = self._sandboxes.get(sandbox_id)
            if sb is None:
                sb = Sandbox(self, sandbox_id)
                self._sandboxes[sandbox_id] = sb
            return sb

    def get_sandbox(self, sandbox_id: str) -> Sandbox:
        """The handle for an existing sandbox, its ``info`` refreshed
        (``SandboxError`` 404 when there is no such sandbox)."""
        info = self.request("GET", "/v1/sandboxes/%s" % quote(sandbox_id, safe="")).json()
        sb = self.sandbox(sandbox_id)
        sb.info = info
        return sb

    def list_sandboxes(self) -> List[Dict[str, Any]]:
        """This tenant's sandboxes, as the broker describes them."""
        return list(self.request("GET", "/v1/sandboxes").json().get("sandboxes", []))

    def delete_sandbox(self, sandbox_id: str) -> None:
        """Delete a sandbox (its container and everything in it) and forget
        its handle."""
        self.request("DELETE", "/v1/sandboxes/%s" % quote(sandbox_id, safe=""), timeout=self.timeout + SLACK_SECONDS)
        with self._lock:
            self._sandboxes.pop(sandbox_id, None)

    def health(self) -> Dict[str, Any]:
        """``GET /v1/health``: ``{"status": "ok", "version": ...}``."""
        return self.request("GET", "/v1/health").json()

    # ---- HTTP ------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Optional[Mapping[str, Any]] = None,
        data: Any = None,
        headers: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        stream: bool = False,
        ok_statuses: tuple = (),
    ) -> requests.Response:
        """One request to ``base_url + path``. Raises ``SandboxError`` for
        any answer of status 400 or more (unless listed in ok_statuses) and
        for transport failures. With ``stream``, the body is left unread."""
        url = self.base_url + path
        h = dict(headers or {})
        body = data
        if json is not None:
            body = _dumps(json)
            h.setdefault("Content-Type", "application/json")
        try:
            resp = self.http.request(
                method, url, params=params, data=body, headers=h,
                timeout=(10.0, timeout if timeout is not None else self.timeout), stream=stream,
            )
        except requests.Timeout as e:
            raise SandboxError(None, "timeout", "%s %s: no answer in time: %s" % (method, path, e)) from e
        except requests.RequestException as e:
            raise SandboxError(None, "connection_error", "%s %s: %s" % (method, path, e)) from e
        if resp.status_code >= 400 and resp.status_code not in ok_statuses:
            try:
                raise _error_from(resp)
            finally:
                resp.close()
        return resp

    def stream(
        self,
        method: str,
        path: str,
        convert: Callable[[str, Any], T],
        *,
        json: Any = None,
        params: Optional[Mapping[str, Any]] = None,
    ) -> EventStream[T]:
        """Open a Server-Sent Events stream; errors found before it starts
        raise ``SandboxError`` with the broker's status."""
        resp = self.request(
            method, path, json=json, params=params, headers={"Accept": "text/event-stream"},
            timeout=STREAM_IDLE_SECONDS, stream=True,
        )
        ctype = resp.headers.get("Content-Type", "")
        if "text/event-stream" not in ctype:
            resp.close()
            raise SandboxError(resp.status_code, "bad_response", "expected an event stream, got %r" % ctype)
        return EventStream(resp, convert)

    def close(self) -> None:
        """Close the pooled connections."""
        self.http.close()

    def __enter__(self) -> "SandboxManager":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return "SandboxManager(%r)" % self.base_url


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")
