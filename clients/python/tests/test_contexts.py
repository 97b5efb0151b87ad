"""Code contexts: Python and JavaScript kernels with their own state."""

from __future__ import annotations

import pytest

from sandboxd import Context, Sandbox, SandboxError


def test_python_context(sandbox: Sandbox) -> None:
    ctx = sandbox.create_context("python", cwd="/tmp", env={"CTX_VAR": "v"})
    try:
        assert isinstance(ctx, Context) and ctx.language == "python" and ctx.cwd == "/tmp"
        ctx.run_code("import os\nz = 5")
        ex = ctx.run_code("(z * 2, os.getcwd(), os.environ['CTX_VAR'])")
        assert ex.text == "(10, '/tmp', 'v')"
        # A different context does not share state.
        other = sandbox.run_code("'z' in dir()")
        assert other.text == "False"
        assert ctx.id in [c.id for c in sandbox.list_contexts()]
        assert sandbox.get_context(ctx.id).status == "idle"
        ctx.restart()
        ex = ctx.run_code("'z' in dir()")
        assert ex.text == "False", "a restarted context has a fresh kernel"
    finally:
        ctx.delete()
    assert ctx.id not in [c.id for c in sandbox.list_contexts()]
    with pytest.raises(SandboxError) as ei:
        ctx.run_code("1")
    assert ei.value.status == 404


def test_javascript_context(sandbox: Sandbox) -> None:
    ctx = sandbox.create_context("javascript")
    try:
        assert ctx.language == "javascript"
        ctx.run_code("let n = 20;")
        ex = ctx.run_code("console.log('n is', n + 1)")
        assert ex.error is None, ex.error
        assert "".join(ex.logs.stdout).strip() == "n is 21"
        err = ctx.run_code("throw new Error('nope')")
        assert err.error is not None and err.error.name == "Error"
        # TSLab puts the source position in evalue; the message is in the traceback.
        assert "nope" in "\n".join(err.error.traceback)
    finally:
        sandbox.delete_context(ctx)


def test_run_code_by_language(sandbox: Sandbox) -> None:
    ex = sandbox.run_code("console.log(6 * 7)", language="javascript")
    assert "".join(ex.logs.stdout).strip() == "42"


def test_bad_language(sandbox: Sandbox) -> None:
    with pytest.raises(SandboxError) as ei:
        sandbox.create_context("cobol")
    assert ei.value.status == 400 and "language" in ei.value.message
