"""The client installs offline with `pip install --no-index` into a venv
that sees Debian's python3-requests, and the README example runs from
there against the broker."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from sandboxd import SandboxError, SandboxManager

CLIENT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOP_README = os.path.join(os.path.dirname(os.path.dirname(CLIENT_DIR)), "README.md")
EXAMPLE_RE = re.compile(r"<!-- python-client-example[^>]*-->\n```python\n(.*?)```", re.S)


def _tree(d: str) -> set:
    out = set()
    for root, dirs, files in os.walk(d):
        dirs[:] = [x for x in dirs if x != "__pycache__"]
        for n in dirs + files:
            out.add(os.path.relpath(os.path.join(root, n), d))
    return out


def test_offline_install_and_readme_example(tmp_path, broker_url: str, token: str, manager: SandboxManager) -> None:
    with open(TOP_README, encoding="utf-8") as f:
        m = EXAMPLE_RE.search(f.read())
    assert m, "README.md has the marked Python client example"
    example = tmp_path / "example.py"
    example.write_text(m.group(1))

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    before = _tree(CLIENT_DIR)
    env = dict(os.environ)
    # Any attempt to reach a package index fails at once: the install must
    # need nothing from the network.
    env.update(HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", http_proxy="http://127.0.0.1:9",
               https_proxy="http://127.0.0.1:9", PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.pop("PYTHONPATH", None)
    p = subprocess.run([str(venv / "bin" / "pip"), "install", "--no-index", "--no-cache-dir", CLIENT_DIR], env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Successfully installed sandboxd-client-0.1.0" in p.stdout
    assert _tree(CLIENT_DIR) == before, "building leaves the source tree as it was"

    run_env = dict(os.environ, SANDBOXD_URL=broker_url, SANDBOXD_TOKEN=token)
    run_env.pop("PYTHONPATH", None)
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import sandboxd, requests; "
                            "print(sandboxd.__file__); print(requests.__file__)"],
                           cwd=str(tmp_path), env=run_env, capture_output=True, text=True, check=True)
    mod, req = where.stdout.split()
    assert mod.startswith(str(venv)), "the venv's python imports the installed copy: %s" % mod
    assert req.startswith("/usr/lib/python3/dist-packages/"), "requests is Debian's: %s" % req

    r = subprocess.run([str(venv / "bin" / "python"), str(example)], cwd=str(tmp_path), env=run_env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "42"
    assert lines[1] == "hello from /tmp"
    assert lines[2:5] == ["live: 1", "live: 2", "live: 3"]
    assert lines[5] == "3"
    assert re.fullmatch(r"\['text', 'png', 'chart'\] squares \d+ PNG bytes", lines[6]), lines[6]
    assert lines[7] == "['hello.txt'] hi"
    with pytest.raises(SandboxError) as ei:
        manager.get_sandbox("demo")
    assert ei.value.status == 404, "the example deletes its sandbox"
