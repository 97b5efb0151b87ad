"""sandboxd - Python client for the sandboxd native HTTP API (/v1).

    from sandboxd import SandboxManager

    with SandboxManager("http://127.0.0.1:8080", token) as mgr:
        sb = mgr.create_or_get_sandbox("demo")
        print(sb.exec("echo hi").stdout)
        print(sb.run_code("1 + 1").text)

Layers: ``SandboxManager`` (one HTTP session, base URL, token, a cache of
``Sandbox`` handles), ``Sandbox`` (the facade for one sandbox),
``ExecutionSession`` (one persistent shell; injects its session id). Every
failure is a ``SandboxError`` carrying status, code and message."""

from .errors import SandboxError
from .manager import SandboxManager
from .models import (ClearOutputEvent, CodeErrorEvent, CodeEvent, CompleteEvent, DisplayUpdateEvent, EndEvent,
                     ErrorEvent, ExecEvent, ExecResult, Execution, ExecutionCountEvent, ExecutionError, FileEntry,
                     Logs, OutputEvent, Result, ResultEvent, StartEvent, StderrEvent, StdoutEvent, UnknownEvent)
from .sandbox import Context, ExecutionSession, Process, Sandbox
from ._sse import EventStream

__version__ = "0.1.0"

__all__ = [
    "SandboxManager", "Sandbox", "ExecutionSession", "Process", "Context", "SandboxError", "EventStream",
    "ExecResult", "Execution", "Result", "Logs", "ExecutionError", "FileEntry",
    "StartEvent", "StdoutEvent", "StderrEvent", "CompleteEvent", "ErrorEvent", "UnknownEvent", "ExecEvent",
    "ExecutionCountEvent", "OutputEvent", "ResultEvent", "DisplayUpdateEvent", "ClearOutputEvent",
    "CodeErrorEvent", "EndEvent", "CodeEvent",
]
