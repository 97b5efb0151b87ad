"""models.py - the typed objects the sandboxd client returns: command
results, code executions and their rich results, file entries, and the
events of the streaming calls."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

# Result fields that carry a representation of the value, in the order the
# broker documents them (docs/api.md, runCode).
RESULT_FORMATS = (
    "text", "html", "markdown", "svg", "png", "jpeg", "pdf", "latex", "json",
    "javascript", "data", "chart", "extra",
)


# --------------------------------------------------------------------------
# exec
# --------------------------------------------------------------------------


@dataclass
class ExecResult:
    """The outcome of one shell command (``Sandbox.exec``)."""

    stdout: str
    stderr: str
    exit_code: int
    duration_ms: int = 0
    timed_out: bool = False
    truncated: bool = False
    session_reset: bool = False

    @property
    def ok(self) -> bool:
        """True when the command exited with status 0."""
        return self.exit_code == 0

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "ExecResult":
        return cls(
            stdout=d.get("stdout", ""),
            stderr=d.get("stderr", ""),
            exit_code=d.get("exit_code", -1),
            duration_ms=d.get("duration_ms", 0),
            timed_out=bool(d.get("timed_out", False)),
            truncated=bool(d.get("truncated", False)),
            session_reset=bool(d.get("session_reset", False)),
        )


# --------------------------------------------------------------------------
# runCode
# --------------------------------------------------------------------------


class Result:
    """One rich result of a code run: a whole MIME bundle from ``display()``
    or the cell's value.

    Each representation is an attribute (``None`` when absent): ``text``,
    ``html``, ``markdown``, ``svg``, ``png`` and ``jpeg`` (base64 text),
    ``pdf``, ``latex``, ``json``, ``javascript``, ``data`` (a DataFrame as
    ``{"columns": ..., ...}``, see docs/charts.md), ``chart`` (a matplotlib
    figure described as data) and ``extra`` (other MIME types).
    ``is_main_result`` is true for the cell's value; ``raw`` is the JSON."""

    text: Optional[str]
    html: Optional[str]
    markdown: Optional[str]
    svg: Optional[str]
    png: Optional[str]
    jpeg: Optional[str]
    pdf: Optional[str]
    latex: Optional[str]
    json: Any
    javascript: Optional[str]
    data: Optional[Dict[str, Any]]
    chart: Optional[Dict[str, Any]]
    extra: Optional[Dict[str, Any]]

    def __init__(self, raw: Dict[str, Any]) -> None:
        self.raw = raw
        for name in RESULT_FORMATS:
            setattr(self, name, raw.get(name))
        self.is_main_result: bool = bool(raw.get("is_main_result", False))
        self.display_id: Optional[str] = raw.get("display_id")
        self.metadata: Dict[str, Any] = raw.get("metadata") or {}
        self.errors: Dict[str, str] = raw.get("errors") or {}

    def formats(self) -> List[str]:
        """The representations present, e.g. ``["text", "png", "chart"]``."""
        f = self.raw.get("formats")
        if isinstance(f, list):
            return list(f)
        return [n for n in RESULT_FORMATS if self.raw.get(n) is not None]

    def png_bytes(self) -> Optional[bytes]:
        """The PNG image decoded from base64, or ``None`` if there is none."""
        return base64.b64decode(self.png) if self.png else None

    def jpeg_bytes(self) -> Optional[bytes]:
        """The JPEG image decoded from base64, or ``None`` if there is none."""
        return base64.b64decode(self.jpeg) if self.jpeg else None

    def __repr__(self) -> str:
        return "Result(formats=%r, text=%r)" % (self.formats(), (self.text or "")[:60])


@dataclass
class Logs:
    """Stream output of a code run, one entry per kernel message."""

    stdout: List[str] = field(default_factory=list)
    stderr: List[str] = field(default_factory=list)


@dataclass
class ExecutionError:
    """An exception raised by the code: ``name`` (``ZeroDivisionError``),
    ``value`` (its message) and ``traceback`` (lines, with the kernel's ANSI
    colours)."""

    name: str
    value: str
    traceback: List[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "ExecutionError":
        tb = d.get("traceback") or []
        if isinstance(tb, str):
            tb = tb.splitlines()
        return cls(name=d.get("name", ""), value=d.get("value", ""), traceback=list(tb))


class Execution:
    """The outcome of ``run_code``: ``results`` (list of ``Result``),
    ``logs`` (``Logs``), ``error`` (``ExecutionError`` or ``None``),
    ``execution_count`` and ``truncated``."""

    def __init__(self, raw: Optional[Dict[str, Any]] = None) -> None:
        raw = raw or {}
        self.raw = raw
        self.results: List[Result] = [Result(r) for r in raw.get("results") or []]
        logs = raw.get("logs") or {}
        self.logs = Logs(stdout=list(logs.get("stdout") or []), stderr=list(logs.get("stderr") or []))
        err = raw.get("error")
        self.error: Optional[ExecutionError] = ExecutionError.from_json(err) if err else None
        self.execution_count: Optional[int] = raw.get("execution_count")
        self.truncated: bool = bool(raw.get("truncated", False))

    @property
    def text(self) -> Optional[str]:
        """The text of the main result (the cell's value), or ``None``."""
        for r in self.results:
            if r.is_main_result:
                return r.text
        return None

    def __repr__(self) -> str:
        return "Execution(text=%r, results=%d, error=%r)" % (self.text, len(self.results), self.error)


# --------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------


@dataclass
class FileEntry:
    """One entry of a directory listing or a ``stat``."""

    name: str
    path: str
    type: str  # "file", "dir", "symlink", "other"
    size: int
    mode: str
    mtime: str

    @property
    def is_dir(self) -> bool:
        return self.type == "dir"

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "FileEntry":
        return cls(
            name=d.get("name", ""),
            path=d.get("path", ""),
            type=d.get("type", ""),
            size=d.get("size", 0),
            mode=d.get("mode", ""),
            mtime=d.get("mtime", ""),
        )


# --------------------------------------------------------------------------
# events of exec_stream and process log following
# --------------------------------------------------------------------------


@dataclass
class StartEvent:
    """The command started (``pid`` inside the sandbox)."""

    pid: Optional[int]
    timestamp: Optional[str] = None
    type: str = "start"


@dataclass
class StdoutEvent:
    """A piece of the command's standard output."""

    data: str
    timestamp: Optional[str] = None
    type: str = "stdout"


@dataclass
class StderrEvent:
    """A piece of the command's standard error."""

    data: str
    timestamp: Optional[str] = None
    type: str = "stderr"


@dataclass
class CompleteEvent:
    """The command ended (last event of ``exec_stream``); ``type`` is
    ``"exit"`` when it ends a followed process log."""

    exit_code: int
    duration_ms: int = 0
    timed_out: bool = False
    truncated: bool = False
    session_reset: bool = False
    timestamp: Optional[str] = None
    type: str = "complete"


@dataclass
class ErrorEvent:
    """The command could not run to its end (last event); ``code`` and
    ``message`` as in the broker's error table."""

    code: str
    message: str
    timestamp: Optional[str] = None
    type: str = "error"


@dataclass
class UnknownEvent:
    """An event this client version does not know; kept, not dropped."""

    type: str
    raw: Any


ExecEvent = Union[StartEvent, StdoutEvent, StderrEvent, CompleteEvent, ErrorEvent, UnknownEvent]


def exec_event(name: str, d: Any) -> ExecEvent:
    """Turn one SSE event of exec or process logs into its typed event."""
    if not isinstance(d, dict):
        return UnknownEvent(name, d)
    ts = d.get("timestamp")
    if name == "start":
        return StartEvent(pid=d.get("pid"), timestamp=ts)
    if name == "stdout":
        return StdoutEvent(data=d.get("data", ""), timestamp=ts)
    if name == "stderr":
        return StderrEvent(data=d.get("data", ""), timestamp=ts)
    if name in ("complete", "exit"):
        return CompleteEvent(
            exit_code=d.get("exit_code", -1),
            duration_ms=d.get("duration_ms", 0),
            timed_out=bool(d.get("timed_out", False)),
            truncated=bool(d.get("truncated", False)),
            session_reset=bool(d.get("session_reset", False)),
            timestamp=ts,
            type=name,
        )
    if name == "error":
        return ErrorEvent(code=d.get("code", "internal"), message=d.get("message", ""), timestamp=ts)
    return UnknownEvent(name, d)


# --------------------------------------------------------------------------
# events of run_code_stream
# --------------------------------------------------------------------------


@dataclass
class ExecutionCountEvent:
    """The kernel started the run as cell number ``execution_count``."""

    execution_count: int
    type: str = "execution_count"


@dataclass
class OutputEvent:
    """Stream output of the code; ``type`` is ``"stdout"`` or ``"stderr"``."""

    text: str
    type: str = "stdout"


@dataclass
class ResultEvent:
    """A rich result (``display()`` or the cell's value)."""

    result: Result
    type: str = "result"


@dataclass
class DisplayUpdateEvent:
    """``update_display`` replaced the results with ``display_id``."""

    display_id: str
    result: Result
    type: str = "display_update"


@dataclass
class ClearOutputEvent:
    """``clear_output`` was called (with ``wait``: at the next output)."""

    wait: bool
    type: str = "clear_output"


@dataclass
class CodeErrorEvent:
    """The code raised ``error``."""

    error: ExecutionError
    type: str = "error"


@dataclass
class EndEvent:
    """The run ended; ``execution`` is the whole Execution (always last)."""

    execution: Execution
    type: str = "end"


CodeEvent = Union[
    ExecutionCountEvent, OutputEvent, ResultEvent, DisplayUpdateEvent, ClearOutputEvent,
    CodeErrorEvent, EndEvent, UnknownEvent,
]


def code_event(name: str, d: Any) -> CodeEvent:
    """Turn one SSE event of runCode into its typed event."""
    if not isinstance(d, dict):
        return UnknownEvent(name, d)
    if name == "execution_count":
        return ExecutionCountEvent(execution_count=d.get("execution_count", 0))
    if name in ("stdout", "stderr"):
        return OutputEvent(text=d.get("text", ""), type=name)
    if name == "result":
        return ResultEvent(result=Result(d.get("result", d)))
    if name == "display_update":
        return DisplayUpdateEvent(display_id=d.get("display_id", ""), result=Result(d.get("result") or {}))
    if name == "clear_output":
        return ClearOutputEvent(wait=bool(d.get("wait", False)))
    if name == "error":
        return CodeErrorEvent(error=ExecutionError.from_json(d))
    if name == "end":
        return EndEvent(execution=Execution(d.get("execution") or {}))
    return UnknownEvent(name, d)
