"""sandbox.py - the per-sandbox facade and the handles it gives out.

  Sandbox           one sandbox: exec, files, processes, sessions, code
                    contexts and run_code, env, ports, mounts, backups, git.
  ExecutionSession  one persistent shell in it; injects its session id.
  Process           a background process: status, logs, follow, kill, wait.
  Context           a Jupyter kernel: run_code in it, interrupt, restart.

Handles come from ``SandboxManager``; they hold no connection of their own."""

from __future__ import annotations

import os
import time
from typing import (IO, TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence,
                    Union)
from urllib.parse import quote

from ._sse import EventStream
from .errors import SandboxError
from .models import (CodeErrorEvent, CodeEvent, CompleteEvent, EndEvent, ErrorEvent, ExecEvent, ExecResult,
                     Execution, ExecutionError, FileEntry, OutputEvent, Result, ResultEvent, StderrEvent,
                     StdoutEvent, code_event, exec_event)

if TYPE_CHECKING:
    from .manager import SandboxManager

SLACK_SECONDS = 30.0
DEFAULT_SESSION = "default"
DEFAULT_RUN_SECONDS = 60.0
CHUNK = 1 << 20

Data = Union[str, bytes, bytearray, IO[bytes], Iterable[bytes]]


def _ms(seconds: Optional[float]) -> Optional[int]:
    return None if seconds is None else max(1, int(round(seconds * 1000)))


def _wait(seconds: Optional[float]) -> float:
    """How long to wait for the answer of something allowed to run seconds."""
    return (seconds if seconds is not None else DEFAULT_RUN_SECONDS) + SLACK_SECONDS


def _abs(path: str) -> str:
    """A sandbox path made absolute: relative ones are under /workspace."""
    if not path:
        raise SandboxError(None, "invalid_path", "path must not be empty")
    return path if path.startswith("/") else "/workspace/" + path


def _put(body: Dict[str, Any], **fields: Any) -> Dict[str, Any]:
    for k, v in fields.items():
        if v is not None:
            body[k] = v
    return body


class Sandbox:
    """One sandbox: the facade over everything the native API offers for it.

    Get it from ``SandboxManager.create_or_get_sandbox``. Attributes:
    ``id``; ``info`` (the sandbox object from the last create or refresh:
    status, expires_at, env, limits); ``created`` (the last
    ``create_or_get_sandbox`` created it rather than found it)."""

    def __init__(self, manager: "SandboxManager", sandbox_id: str) -> None:
        self.manager = manager
        self.id = sandbox_id
        self.info: Dict[str, Any] = {}
        self.created = False
        self._default_session: Optional[ExecutionSession] = None
        self._sessions: Dict[str, ExecutionSession] = {}

    def __repr__(self) -> str:
        return "Sandbox(%r)" % self.id

    # ---- plumbing --------------------------------------------------------

    def _path(self, *parts: str) -> str:
        return "/v1/sandboxes/%s%s" % (quote(self.id, safe=""), "".join(parts))

    def _req(self, method: str, suffix: str, **kw: Any) -> Any:
        """A request under this sandbox; the parsed JSON answer (or None)."""
        resp = self.manager.request(method, self._path(suffix), **kw)
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            raise SandboxError(resp.status_code, "bad_response", "answer is not JSON: %r" % resp.text[:200])

    # ---- life ------------------------------------------------------------

    def refresh(self) -> Dict[str, Any]:
        """Fetch the sandbox object again (status, expires_at, env, limits)."""
        self.info = self._req("GET", "")
        return self.info

    def keepalive(self, seconds: int) -> Dict[str, Any]:
        """Move ``expires_at`` ``seconds`` later (capped by the broker)."""
        self.info = self._req("PATCH", "", json={"keepalive_longer_by_seconds": int(seconds)})
        return self.info

    def delete(self) -> None:
        """Delete the sandbox and everything in it."""
        self.manager.delete_sandbox(self.id)

    def set_env(self, values: Mapping[str, Optional[str]]) -> Dict[str, str]:
        """Set (a string) or unset (``None``) sandbox environment variables
        for every later exec, process, session and context. Returns the
        whole sandbox env."""
        return self._req("POST", "/env", json=dict(values))["env"]

    # ---- exec ------------------------------------------------------------

    @property
    def default_session(self) -> "ExecutionSession":
        """The session named ``default`` (made on first use)."""
        if self._default_session is None:
            self._default_session = self.session(DEFAULT_SESSION)
        return self._default_session

    def exec(
        self,
        command: str,
        *,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        stdin: Optional[str] = None,
        session: Optional[str] = None,
        on_stdout: Optional[Callable[[str], None]] = None,
        on_stderr: Optional[Callable[[str], None]] = None,
    ) -> ExecResult:
        """Run ``bash -c command`` and wait for it.

        Without ``cwd`` the command runs in a session (``session``, else the
        default session): ``cd`` and ``export`` carry over to the next
        command there. With ``cwd`` it runs on its own in that directory.
        ``timeout`` is in seconds (default 60); at the deadline the command
        is killed and the result has ``timed_out`` (exit code 137).
        ``on_stdout``/``on_stderr`` are called with each piece of output as
        it arrives (the call then streams). A non-zero exit is not an
        error: check ``exit_code``."""
        if cwd is None:
            s = self.session(session) if session is not None else self.default_session
            return s.exec(command, env=env, timeout=timeout, stdin=stdin, on_stdout=on_stdout,
                          on_stderr=on_stderr)
        return self._exec(command, cwd=cwd, env=env, timeout=timeout, stdin=stdin, session=session,
                          on_stdout=on_stdout, on_stderr=on_stderr)

    def exec_stream(
        self,
        command: str,
        *,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        stdin: Optional[str] = None,
        session: Optional[str] = None,
    ) -> EventStream[ExecEvent]:
        """Run a command and iterate its events as they happen:
        ``StartEvent``, ``StdoutEvent``/``StderrEvent``, then one
        ``CompleteEvent`` or ``ErrorEvent``. Closing the stream early kills
        the command. Session rules as for ``exec``."""
        if cwd is None:
            s = self.session(session) if session is not None else self.default_session
            return s.exec_stream(command, env=env, timeout=timeout, stdin=stdin)
        return self._exec_stream(self._exec_body(command, cwd, env, timeout, stdin, session))

    def _exec_body(self, command: str, cwd: Optional[str], env: Optional[Mapping[str, str]],
                   timeout: Optional[float], stdin: Optional[str], session: Optional[str]) -> Dict[str, Any]:
        return _put({"command": command}, cwd=cwd, env=dict(env) if env is not None else None,
                    timeout_ms=_ms(timeout), stdin=stdin, session=session)

    def _exec_stream(self, body: Dict[str, Any]) -> EventStream[ExecEvent]:
        return self.manager.stream("POST", self._path("/exec"), exec_event, json=body)

    def _exec(self, command: str, *, cwd: Optional[str] = None, env: Optional[Mapping[str, str]] = None,
              timeout: Optional[float] = None, stdin: Optional[str] = None, session: Optional[str] = None,
              on_stdout: Optional[Callable[[str], None]] = None,
              on_stderr: Optional[Callable[[str], None]] = None) -> ExecResult:
        body = self._exec_body(command, cwd, env, timeout, stdin, session)
        if on_stdout is None and on_stderr is None:
            return ExecResult.from_json(self._req("POST", "/exec", json=body, timeout=_wait(timeout)))
        out: List[str] = []
        err: List[str] = []
        with self._exec_stream(body) as events:
            for ev in events:
                if isinstance(ev, StdoutEvent):
                    out.append(ev.data)
                    if on_stdout:
                        on_stdout(ev.data)
                elif isinstance(ev, StderrEvent):
                    err.append(ev.data)
                    if on_stderr:
                        on_stderr(ev.data)
                elif isinstance(ev, CompleteEvent):
                    return ExecResult("".join(out), "".join(err), ev.exit_code, ev.duration_ms, ev.timed_out,
                                      ev.truncated, ev.session_reset)
                elif isinstance(ev, ErrorEvent):
                    raise SandboxError(None, ev.code, ev.message)
        raise SandboxError(None, "bad_response", "exec stream ended without a complete event")

    # ---- sessions --------------------------------------------------------

    def session(self, session_id: str) -> "ExecutionSession":
        """The handle of session ``session_id`` (no request is made; the
        ``default`` session exists as soon as it is used)."""
        s = self._sessions.get(session_id)
        if s is None:
            s = ExecutionSession(self, session_id)
            self._sessions[session_id] = s
        return s

    def create_session(self, session_id: Optional[str] = None, *, env: Optional[Mapping[str, str]] = None,
                       cwd: Optional[str] = None) -> "ExecutionSession":
        """Start a new persistent shell (``SandboxError`` 409 ``exists`` if
        the id is in use). ``env`` defaults to the sandbox env, ``cwd`` to
        /workspace."""
        body = _put({}, id=session_id, env=dict(env) if env is not None else None, cwd=cwd)
        info = self._req("POST", "/sessions", json=body)
        s = self.session(info["id"])
        s.info = info
        return s

    def list_sessions(self) -> List[Dict[str, Any]]:
        """``[{"id", "busy"}, ...]`` for every session of the sandbox."""
        return list(self._req("GET", "/sessions").get("sessions", []))

    def delete_session(self, session_id: str) -> None:
        """Kill a session's shell and everything it started."""
        self._req("DELETE", "/sessions/%s" % quote(session_id, safe=""))
        self._sessions.pop(session_id, None)
        if session_id == DEFAULT_SESSION:
            self._default_session = None

    # ---- background processes --------------------------------------------

    def start_process(self, command: str, *, cwd: Optional[str] = None, env: Optional[Mapping[str, str]] = None,
                      session: Optional[str] = None) -> "Process":
        """Start ``bash -c command`` in the background; it outlives the call
        and dies with the sandbox. With ``session`` it starts in that
        session's directory and exported environment."""
        body = _put({"command": command}, cwd=cwd, env=dict(env) if env is not None else None, session=session)
        return Process(self, self._req("POST", "/processes", json=body))

    def list_processes(self) -> List["Process"]:
        """Every process the sandbox remembers (running and exited)."""
        return [Process(self, p) for p in self._req("GET", "/processes").get("processes", [])]

    def get_process(self, process_id: Union[str, int]) -> "Process":
        """A process by id (``p-1``) or pid."""
        return Process(self, self._req("GET", "/processes/%s" % quote(str(process_id), safe="")))

    def kill_all_processes(self, signal: str = "KILL") -> int:
        """Signal every process; the number signalled."""
        return int(self._req("DELETE", "/processes", params={"signal": signal}).get("count", 0))

    # ---- files -----------------------------------------------------------

    def _file_url(self, path: str) -> str:
        return "/files" + quote(_abs(path), safe="/")

    def write_file(self, path: str, data: Data, *, mkdir: bool = False, mode: Optional[int] = None) -> Dict[str, Any]:
        """Write a file (atomically: a cut-off upload leaves the old one).
        ``data``: text (written as UTF-8), bytes, a binary file object or an
        iterable of byte chunks (the last two are streamed, never held in
        memory). ``mkdir`` creates missing parent directories; ``mode``
        e.g. ``0o755``. Returns ``{"path", "size"}``."""
        params: Dict[str, str] = {}
        if mkdir:
            params["mkdir"] = "1"
        if mode is not None:
            params["mode"] = "%04o" % mode
        if isinstance(data, str):
            data = data.encode("utf-8")
        return self._req("PUT", self._file_url(path), data=data, params=params,
                         headers={"Content-Type": "application/octet-stream"}, timeout=3600.0)

    def upload_file(self, local_path: Union[str, "os.PathLike[str]"], path: str, *, mkdir: bool = False,
                    mode: Optional[int] = None) -> Dict[str, Any]:
        """Stream a local file into the sandbox at ``path``."""
        with open(local_path, "rb") as f:
            return self.write_file(path, f, mkdir=mkdir, mode=mode)

    def read_bytes(self, path: str) -> bytes:
        """A file's bytes (use ``download_file`` for big files)."""
        resp = self.manager.request("GET", self._path(self._file_url(path)), timeout=3600.0)
        return resp.content

    def read_file(self, path: str, encoding: str = "utf-8") -> str:
        """A file's text."""
        return self.read_bytes(path).decode(encoding)

    read_text = read_file

    def download_file(self, path: str, dest: Union[str, "os.PathLike[str]", IO[bytes]]) -> int:
        """Stream a sandbox file to ``dest`` (a local path or a binary file
        object), 1 MiB at a time. Returns the number of bytes written."""
        resp = self.manager.request("GET", self._path(self._file_url(path)), stream=True, timeout=600.0)
        n = 0
        try:
            if isinstance(dest, (str, os.PathLike)):
                with open(dest, "wb") as f:
                    for chunk in resp.iter_content(CHUNK):
                        f.write(chunk)
                        n += len(chunk)
            else:
                for chunk in resp.iter_content(CHUNK):
                    dest.write(chunk)
                    n += len(chunk)
        finally:
            resp.close()
        return n

    def stat(self, path: str) -> Optional[FileEntry]:
        """Type, size, mode and mtime of a path, or ``None`` if absent."""
        resp = self.manager.request("HEAD", self._path(self._file_url(path)), ok_statuses=(404,))
        if resp.status_code == 404:
            return None
        h = resp.headers
        p = _abs(path)
        return FileEntry(name=p.rstrip("/").rsplit("/", 1)[-1], path=p, type=h.get("X-File-Type", ""),
                         size=int(h.get("X-File-Size", "0") or 0), mode=h.get("X-File-Mode", ""),
                         mtime=h.get("X-File-Mtime", ""))

    def exists(self, path: str) -> bool:
        """True when something (file, directory, symlink) is at ``path``."""
        return self.stat(path) is not None

    def list_files(self, path: str = "/workspace", *, recursive: bool = False,
                   hidden: bool = False) -> List[FileEntry]:
        """The entries under a directory (``recursive``: the whole tree;
        ``hidden``: include dot files), sorted by path, at most 10000.
        Symlinks are listed, not followed."""
        params: Dict[str, str] = {"path": _abs(path), "recursive": "1" if recursive else "0",
                                  "hidden": "1" if hidden else "0"}
        return [FileEntry.from_json(e) for e in self._req("GET", "/files:list", params=params).get("entries", [])]

    def mkdir(self, path: str, *, recursive: bool = False) -> None:
        """Create a directory (``recursive``: with its parents, and no error
        if it exists)."""
        self._req("POST", "/files:mkdir", json={"path": _abs(path), "recursive": bool(recursive)})

    def move(self, src: str, dst: str) -> None:
        """Rename ``src`` to ``dst`` (replacing a file at ``dst``)."""
        self._req("POST", "/files:move", json={"from": _abs(src), "to": _abs(dst)})

    def delete_file(self, path: str, *, recursive: bool = False) -> None:
        """Remove a file, symlink or (``recursive``, or empty) directory."""
        self._req("DELETE", self._file_url(path), params={"recursive": "1"} if recursive else None)

    # ---- git -------------------------------------------------------------

    def git_checkout(self, repo_url: str, *, branch: Optional[str] = None, target_dir: Optional[str] = None,
                     depth: Optional[int] = None) -> Dict[str, Any]:
        """Clone a repository inside the sandbox; ``{repo_url, branch,
        target_dir}``."""
        body = _put({"repo_url": repo_url}, branch=branch, target_dir=target_dir, depth=depth)
        return self._req("POST", "/git/checkout", json=body, timeout=600.0)

    # ---- code contexts and run_code --------------------------------------

    def create_context(self, language: str = "python", *, cwd: Optional[str] = None,
                       env: Optional[Mapping[str, str]] = None) -> "Context":
        """Start a Jupyter kernel (``python``, ``javascript`` or
        ``typescript``); its state lives as long as the context."""
        body = _put({"language": language}, cwd=cwd, env=dict(env) if env is not None else None)
        return Context(self, self._req("POST", "/contexts", json=body, timeout=120.0))

    def list_contexts(self) -> List["Context"]:
        return [Context(self, c) for c in self._req("GET", "/contexts").get("contexts", [])]

    def get_context(self, context_id: str) -> "Context":
        return Context(self, self._req("GET", "/contexts/%s" % quote(context_id, safe="")))

    def delete_context(self, context: Union["Context", str]) -> None:
        """Kill a context's kernel."""
        cid = context.id if isinstance(context, Context) else context
        self._req("DELETE", "/contexts/%s" % quote(cid, safe=""))

    def _code_body(self, code: str, language: Optional[str], context: Union["Context", str, None],
                   timeout: Optional[float], max_image_pixels: Optional[int],
                   max_image_side: Optional[int]) -> Dict[str, Any]:
        cid = context.id if isinstance(context, Context) else context
        return _put({"code": code}, context_id=cid, language=language, timeout_ms=_ms(timeout),
                    max_image_pixels=max_image_pixels, max_image_side=max_image_side)

    def run_code(
        self,
        code: str,
        *,
        language: Optional[str] = None,
        context: Union["Context", str, None] = None,
        timeout: Optional[float] = None,
        max_image_pixels: Optional[int] = None,
        max_image_side: Optional[int] = None,
        on_stdout: Optional[Callable[[str], None]] = None,
        on_stderr: Optional[Callable[[str], None]] = None,
        on_result: Optional[Callable[[Result], None]] = None,
        on_error: Optional[Callable[[ExecutionError], None]] = None,
    ) -> Execution:
        """Run code in a kernel and return its ``Execution`` (``.text``,
        ``.results``, ``.logs``, ``.error``). An exception in the code is
        not raised: it is in ``.error``.

        ``context``: a ``Context`` (or its id); without one, the sandbox's
        default context for ``language`` (default python). ``timeout`` in
        seconds (default 60). The ``on_*`` callbacks are called as output
        arrives (the call then streams)."""
        body = self._code_body(code, language, context, timeout, max_image_pixels, max_image_side)
        if not (on_stdout or on_stderr or on_result or on_error):
            return Execution(self._req("POST", "/code", json=body, timeout=_wait(timeout)))
        with self.manager.stream("POST", self._path("/code"), code_event, json=body) as events:
            for ev in events:
                if isinstance(ev, OutputEvent):
                    cb = on_stdout if ev.type == "stdout" else on_stderr
                    if cb:
                        cb(ev.text)
                elif isinstance(ev, ResultEvent):
                    if on_result:
                        on_result(ev.result)
                elif isinstance(ev, CodeErrorEvent):
                    if on_error:
                        on_error(ev.error)
                elif isinstance(ev, EndEvent):
                    return ev.execution
        raise SandboxError(None, "bad_response", "code stream ended without an end event")

    def run_code_stream(
        self,
        code: str,
        *,
        language: Optional[str] = None,
        context: Union["Context", str, None] = None,
        timeout: Optional[float] = None,
        max_image_pixels: Optional[int] = None,
        max_image_side: Optional[int] = None,
    ) -> EventStream[CodeEvent]:
        """Run code and iterate its events as the kernel sends them:
        ``ExecutionCountEvent``, ``OutputEvent`` (stdout/stderr),
        ``ResultEvent``, ``DisplayUpdateEvent``, ``ClearOutputEvent``,
        ``CodeErrorEvent``, and last ``EndEvent`` with the whole Execution.
        Closing the stream early interrupts the run."""
        body = self._code_body(code, language, context, timeout, max_image_pixels, max_image_side)
        return self.manager.stream("POST", self._path("/code"), code_event, json=body)

    # ---- ports -----------------------------------------------------------

    def expose_port(self, port: int, *, name: Optional[str] = None) -> Dict[str, Any]:
        """Make a port inside the sandbox reachable through the broker;
        ``{port, name, url, token}``."""
        return self._req("POST", "/ports", json=_put({"port": int(port)}, name=name))

    def list_ports(self) -> List[Dict[str, Any]]:
        return list(self._req("GET", "/ports").get("ports", []))

    def unexpose_port(self, port: int) -> None:
        self._req("DELETE", "/ports/%d" % int(port))

    # ---- bucket mounts ---------------------------------------------------

    def mount_bucket(
        self,
        bucket: str,
        mount_path: str,
        *,
        endpoint: str,
        provider: Optional[str] = None,
        access_key_id: Optional[str] = None,
        secret_access_key: Optional[str] = None,
        read_only: Optional[bool] = None,
        prefix: Optional[str] = None,
    ) -> Dict[str, Any]:
        """Mount an S3-compatible bucket at ``mount_path`` in the sandbox."""
        body = _put({"bucket": bucket, "mount_path": mount_path, "endpoint": endpoint}, provider=provider,
                    read_only=read_only, prefix=prefix)
        if access_key_id is not None or secret_access_key is not None:
            body["credentials"] = {"access_key_id": access_key_id or "", "secret_access_key": secret_access_key or ""}
        return self._req("POST", "/mounts", json=body, timeout=120.0)

    def list_mounts(self) -> List[Dict[str, Any]]:
        return list(self._req("GET", "/mounts").get("mounts", []))

    def unmount_bucket(self, mount_path: str) -> None:
        self._req("DELETE", "/mounts", params={"path": mount_path}, timeout=120.0)

    # ---- backups ---------------------------------------------------------

    def create_backup(self, dir: str, *, excludes: Optional[Sequence[str]] = None) -> Dict[str, Any]:
        """Snapshot a directory; ``{backup_id, size, created_at}``."""
        body = _put({"dir": dir}, excludes=list(excludes) if excludes is not None else None)
        return self._req("POST", "/backups", json=body, timeout=3600.0)

    def restore_backup(self, backup_id: str, *, dir: Optional[str] = None) -> Dict[str, Any]:
        """Restore a snapshot (into ``dir``, default where it came from)."""
        return self._req("POST", "/backups/%s/restore" % quote(backup_id, safe=""), json=_put({}, dir=dir),
                         timeout=3600.0) or {}

    def list_backups(self) -> List[Dict[str, Any]]:
        """Every backup of the tenant (they outlive their sandbox)."""
        return list(self._req("GET", "/backups").get("backups", []))

    def get_backup(self, backup_id: str) -> Dict[str, Any]:
        return self._req("GET", "/backups/%s" % quote(backup_id, safe=""))

    def delete_backup(self, backup_id: str) -> None:
        self._req("DELETE", "/backups/%s" % quote(backup_id, safe=""))


class ExecutionSession:
    """One persistent bash shell in a sandbox. Every command sent through
    it carries its session id, so ``cd``, ``export``, variables and
    functions carry over from one call to the next; commands on one session
    run one at a time, in order."""

    def __init__(self, sandbox: Sandbox, session_id: str) -> None:
        self.sandbox = sandbox
        self.id = session_id
        self.info: Dict[str, Any] = {}

    def __repr__(self) -> str:
        return "ExecutionSession(%r, %r)" % (self.sandbox.id, self.id)

    def exec(self, command: str, *, env: Optional[Mapping[str, str]] = None, timeout: Optional[float] = None,
             stdin: Optional[str] = None, on_stdout: Optional[Callable[[str], None]] = None,
             on_stderr: Optional[Callable[[str], None]] = None) -> ExecResult:
        """Run a command in this session (see ``Sandbox.exec``). A command
        that exits the shell or times out reports ``session_reset``."""
        return self.sandbox._exec(command, env=env, timeout=timeout, stdin=stdin, session=self._wire_id(),
                                  on_stdout=on_stdout, on_stderr=on_stderr)

    def exec_stream(self, command: str, *, env: Optional[Mapping[str, str]] = None,
                    timeout: Optional[float] = None, stdin: Optional[str] = None) -> EventStream[ExecEvent]:
        """Run a command in this session and iterate its events."""
        return self.sandbox._exec_stream(self.sandbox._exec_body(command, None, env, timeout, stdin,
                                                                 self._wire_id()))

    def start_process(self, command: str, *, env: Optional[Mapping[str, str]] = None) -> "Process":
        """Start a background process in this session's directory and
        exported environment."""
        try:
            return self.sandbox.start_process(command, env=env, session=self.id)
        except SandboxError as e:
            if self.id != DEFAULT_SESSION or e.status != 404 or e.code != "not_found":
                raise
        # The broker opens its default session on the first exec that names
        # no session; open it so the process starts where that shell is.
        self.exec(":")
        return self.sandbox.start_process(command, env=env, session=self.id)

    def _wire_id(self) -> Optional[str]:
        """The session field to send: none for the default session (the
        broker treats "default" and no field alike; brokers before that
        only opened it on first use when the field was left out)."""
        return None if self.id == DEFAULT_SESSION else self.id

    def refresh(self) -> Dict[str, Any]:
        """``{id, cwd, env}``: the shell's current directory and exported
        environment."""
        self.info = self.sandbox._req("GET", "/sessions/%s" % quote(self.id, safe=""))
        return self.info

    @property
    def cwd(self) -> str:
        """The shell's current directory (asks the broker)."""
        return self.refresh().get("cwd", "")

    def delete(self) -> None:
        """Kill the shell and everything it started."""
        self.sandbox.delete_session(self.id)


class Process:
    """A background process. Attributes mirror the broker's object: ``id``
    (``p-1``), ``pid``, ``command``, ``status`` (``running``/``exited``),
    ``exit_code``, ``signal``, ``started_at``, ``ended_at``."""

    def __init__(self, sandbox: Sandbox, info: Dict[str, Any]) -> None:
        self.sandbox = sandbox
        self._set(info)

    def _set(self, info: Dict[str, Any]) -> None:
        self.info = info
        self.id: str = info.get("id", "")
        self.pid: Optional[int] = info.get("pid")
        self.command: str = info.get("command", "")
        self.status: str = info.get("status", "")
        self.exit_code: Optional[int] = info.get("exit_code")
        self.signal: Optional[str] = info.get("signal")
        self.started_at: Optional[str] = info.get("started_at")
        self.ended_at: Optional[str] = info.get("ended_at")

    def __repr__(self) -> str:
        return "Process(%r, status=%r, exit_code=%r)" % (self.id, self.status, self.exit_code)

    def _url(self, suffix: str = "") -> str:
        return "/processes/%s%s" % (quote(self.id, safe=""), suffix)

    @property
    def running(self) -> bool:
        return self.status == "running"

    def refresh(self) -> "Process":
        """Fetch the process's status again."""
        self._set(self.sandbox._req("GET", self._url()))
        return self

    def logs(self) -> Dict[str, Any]:
        """The output so far: ``{stdout, stderr, truncated}``."""
        return self.sandbox._req("GET", self._url("/logs"))

    def follow_logs(self) -> EventStream[ExecEvent]:
        """The buffered output, then new output live, as ``StdoutEvent`` /
        ``StderrEvent``, ending with a ``CompleteEvent`` (type ``exit``)
        when the process ends."""
        return self.sandbox.manager.stream("GET", self.sandbox._path(self._url("/logs")), exec_event,
                                           params={"follow": "1"})

    def kill(self, signal: str = "TERM") -> "Process":
        """Send ``signal`` (TERM, KILL, INT, HUP, QUIT, USR1, USR2) to the
        process group."""
        self._set(self.sandbox._req("DELETE", self._url(), params={"signal": signal}))
        return self

    def wait(self, timeout: Optional[float] = None, interval: float = 0.1) -> "Process":
        """Poll until the process has exited; ``SandboxError`` ``timeout``
        if it is still running after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.refresh().running:
            if deadline is not None and time.monotonic() >= deadline:
                raise SandboxError(None, "timeout", "process %s still running after %.1f s" % (self.id, timeout))
            time.sleep(interval)
        return self


class Context:
    """A code context: one Jupyter kernel with its own state. Attributes
    mirror the broker's object: ``id``, ``language``, ``cwd``, ``status``
    (``idle``/``busy``/``stopped``), ``restarted``, ``env``."""

    def __init__(self, sandbox: Sandbox, info: Dict[str, Any]) -> None:
        self.sandbox = sandbox
        self._set(info)

    def _set(self, info: Dict[str, Any]) -> None:
        self.info = info
        self.id: str = info.get("id", "")
        self.language: str = info.get("language", "")
        self.cwd: str = info.get("cwd", "")
        self.status: str = info.get("status", "")
        self.restarted: bool = bool(info.get("restarted", False))
        self.env: Dict[str, str] = info.get("env") or {}

    def __repr__(self) -> str:
        return "Context(%r, %r, status=%r)" % (self.id, self.language, self.status)

    def _url(self, suffix: str = "") -> str:
        return "/contexts/%s%s" % (quote(self.id, safe=""), suffix)

    def run_code(self, code: str, **kw: Any) -> Execution:
        """``Sandbox.run_code`` in this context."""
        return self.sandbox.run_code(code, context=self, **kw)

    def run_code_stream(self, code: str, **kw: Any) -> EventStream[CodeEvent]:
        """``Sandbox.run_code_stream`` in this context."""
        return self.sandbox.run_code_stream(code, context=self, **kw)

    def refresh(self) -> "Context":
        self._set(self.sandbox._req("GET", self._url()))
        return self

    def interrupt(self) -> None:
        """Send SIGINT to the kernel (a running Python cell ends with
        KeyboardInterrupt)."""
        self.sandbox._req("POST", self._url("/interrupt"))

    def restart(self) -> "Context":
        """Replace the kernel with a fresh one (its state is lost)."""
        self._set(self.sandbox._req("POST", self._url("/restart"), timeout=120.0))
        return self

    def delete(self) -> None:
        """Kill the kernel."""
        self.sandbox.delete_context(self.id)
