"""git_checkout clones inside the sandbox."""

from __future__ import annotations

import pytest

from sandboxd import Sandbox, SandboxError


def test_git_checkout(sandbox: Sandbox) -> None:
    r = sandbox.exec(
        "set -e; rm -rf /workspace/origin /workspace/origin.git; mkdir origin; cd origin; git init -q -b main; "
        "echo v1 > README; git add README; git -c user.email=a@b -c user.name=a commit -qm init; "
        "cd ..; git clone -q --bare origin origin.git",
        cwd="/workspace",
    )
    assert r.exit_code == 0, r
    out = sandbox.git_checkout("file:///workspace/origin.git", branch="main", target_dir="/workspace/app")
    assert out["target_dir"] == "/workspace/app"
    assert sandbox.read_file("/workspace/app/README") == "v1\n"
    with pytest.raises(SandboxError) as ei:
        sandbox.git_checkout("file:///workspace/nothing.git")
    assert ei.value.status == 422 and ei.value.code == "git_failed"
