#!/usr/bin/env python3
"""test_compat_artifact.py - the artifact compatibility surface
(/compat/artifact, docs/compat.md "artifact"): the flows artifact-sandbox.md
describes — POST /sandbox (create or get, and destroy), the sandbox named by
x-sandbox-id or ?sandbox_id=, POST /session, POST /run with the client's
injected {sessionId: "default"} answering {"output": "4", ...} for
print(2+2), PUT/GET/DELETE /file and GET /file?mode=download byte-identical
for binary data — plus sessions keeping state, errors and tenant isolation.

The contract is the reference document, docs/compat.md and issue 7."""

import base64
import os
import secrets
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import ID_RE  # noqa: E402

PREFIX = "/compat/artifact"
SB = "art-1"


def A(b, method, path, body=None, sid=SB, tenant="alice", raw=None, headers=None):
    """One request to the surface; the sandbox id in x-sandbox-id (sid None:
    no header)."""
    h = {"x-sandbox-id": sid} if sid is not None else {}
    if headers:
        h.update(headers)
    return b.request(method, PREFIX + path, body=body, raw=raw, tenant=tenant, headers=h)


def err_ok(r, status, code=None):
    return (r.status == status and harness.error_shape_ok(r.body)
            and (code is None or r.err_code() == code))


def test_sandbox(t, b):
    r = A(b, "POST", "/sandbox")
    t.eq(r.status, 200, "POST /sandbox with x-sandbox-id (the client's create_or_get): 200", r)
    t.ok(r.get("sandboxId") == SB and r.get("id") == SB and r.get("created") is True
         and r.get("status") == "running", "answer: sandboxId, created true, the native sandbox", r)
    r = A(b, "POST", "/sandbox")
    t.ok(r.status == 200 and r.get("created") is False, "again: 200, created false (get)", r)
    r = A(b, "GET", "/sandbox")
    t.ok(r.status == 200 and r.get("sandboxId") == SB and r.get("status") == "running",
         "GET /sandbox: the sandbox", r)
    r = b.get("/v1/sandboxes/" + SB)
    t.eq(r.status, 200, "it is the native sandbox art-1", r)
    r = b.request("POST", PREFIX + "/sandbox?sandbox_id=art-q", body={"keepalive_seconds": 120})
    t.ok(r.status == 200 and r.get("sandboxId") == "art-q" and r.get("created") is True,
         "POST /sandbox?sandbox_id=art-q: the id from the query; native create fields apply", r)
    exp = harness.iso_to_epoch(r.get("expires_at")) - harness.iso_to_epoch(r.get("created_at"))
    t.ok(abs(exp - 120) < 3, "keepalive_seconds 120 was applied", r)
    r = b.request("POST", PREFIX + "/sandbox?sandbox_id=art-ignored", headers={"x-sandbox-id": "art-h"})
    t.ok(r.status == 200 and r.get("sandboxId") == "art-h", "the header wins over the query", r)
    r = A(b, "POST", "/sandbox", sid=None)
    gen = r.get("sandboxId")
    t.ok(r.status == 200 and isinstance(gen, str) and ID_RE.match(gen) and r.get("id") == gen,
         "no id at all: a generated sandbox id comes back", r)
    r = A(b, "POST", "/sandbox", {"action": "destroy"}, sid=gen)
    t.ok(r.status == 200 and r.get("destroyed") is True, "POST /sandbox {action: destroy}: 200", r)
    t.eq(b.get("/v1/sandboxes/" + gen).status, 404, "it is gone")
    r = A(b, "DELETE", "/sandbox", sid="art-h")
    t.ok(r.status == 200 and r.get("destroyed") is True, "DELETE /sandbox: 200", r)
    r = b.request("DELETE", PREFIX + "/sandbox?sandbox_id=art-q")
    t.ok(r.status == 200, "DELETE /sandbox?sandbox_id=: 200", r)
    r = A(b, "DELETE", "/sandbox", sid="art-q")
    t.ok(err_ok(r, 404, "not_found"), "again: 404 (as natively)", r)
    for body, desc in (({"action": "explode"}, "an unknown action"), ({"bogus": 1}, "an unknown field"),
                       ({"id": "other"}, "a body id unlike the header's")):
        r = A(b, "POST", "/sandbox", body, sid="art-bad")
        t.ok(err_ok(r, 400, "invalid_field"), "POST /sandbox with %s: 400" % desc, r)
    t.eq(b.get("/v1/sandboxes/art-bad").status, 404, "none of them created a sandbox")


def test_run(t, b):
    # The client's default session: {sessionId: "default"} injected.
    r = A(b, "POST", "/run", {"command": "python3 -c \"print(2+2)\"", "sessionId": "default"})
    t.ok(r.status == 200 and r.get("output") == "4", "POST /run python3 -c print(2+2): "
         "{\"output\": \"4\", ...} as documented", r)
    t.ok(r.get("sandboxId") == SB and r.get("sessionId") == "default" and r.get("exit_code") == 0
         and r.get("stdout") == "4\n", "plus sandboxId, sessionId and the native exec fields", r)
    r = b.request("POST", PREFIX + "/run?sandbox_id=" + SB, body={"command": "echo via-query"})
    t.eq(r.get("output"), "via-query", "the sandbox named by ?sandbox_id=", r)
    r = A(b, "POST", "/run", {"command": "echo out; echo err >&2; exit 4"})
    t.ok(r.get("exit_code") == 4 and r.get("stderr") == "err\n" and r.get("output") == "out",
         "exit code and stderr come back", r)
    r = A(b, "POST", "/run", {"command": "sleep 5", "timeout_ms": 300})
    t.ok(r.get("timed_out") is True and r.elapsed < 4, "native timeout_ms applies", r)
    r = A(b, "POST", "/run", {"command": "pwd", "cwd": "/tmp"})
    t.eq(r.get("output"), "/tmp", "native cwd applies", r)
    for body, desc in (({}, "no command"), ({"command": "ls", "nope": 1}, "an unknown field"),
                       ({"command": "ls", "sessionId": "bad id"}, "a bad sessionId")):
        r = A(b, "POST", "/run", body)
        t.ok(err_ok(r, 400), "POST /run with %s: 400" % desc, r)
    r = A(b, "POST", "/run", {"command": "ls", "sessionId": "nosuch"})
    t.ok(err_ok(r, 404, "not_found"), "a session that does not exist: 404", r)
    r = A(b, "POST", "/run", {"command": "ls"}, sid=None)
    t.ok(err_ok(r, 400) and "x-sandbox-id" in r.err_message(), "no sandbox id: 400 naming "
         "x-sandbox-id", r)


def test_sessions(t, b):
    r = A(b, "POST", "/session", {"sessionId": "work", "cwd": "/tmp", "env": {"A": "1"}})
    t.ok(r.status == 201 and r.get("sessionId") == "work" and r.get("cwd") == "/tmp"
         and r.get("created") is True, "POST /session: 201 with the session", r)
    r = A(b, "POST", "/session", {"sessionId": "work"})
    t.ok(r.status == 200 and r.get("created") is False and r.get("cwd") == "/tmp",
         "again: 200, the existing session (get or create)", r)
    A(b, "POST", "/run", {"sessionId": "work", "command": "cd /usr && export B=2"})
    r = A(b, "POST", "/run", {"sessionId": "work", "command": "pwd; echo $A$B"})
    t.eq(r.get("stdout"), "/usr\n12\n", "/run in a session keeps cwd and exports", r)
    r = A(b, "POST", "/run", {"sessionId": "default", "command": "pwd; echo ${B:-none}"})
    t.eq(r.get("stdout"), "/workspace\nnone\n", "the default session is isolated from it", r)
    r = A(b, "GET", "/session?sessionId=work")
    t.ok(r.status == 200 and r.get("cwd") == "/usr", "GET /session?sessionId=work: its cwd now", r)
    r = A(b, "GET", "/session")
    t.ok(r.status == 200 and "work" in [s.get("id") for s in r.get("sessions") or []],
         "GET /session: the list", r)
    r = A(b, "DELETE", "/session?sessionId=work")
    t.ok(r.status == 200 and r.get("sessionId") == "work", "DELETE /session: 200", r)
    r = A(b, "GET", "/session?sessionId=work")
    t.ok(err_ok(r, 404, "not_found"), "then 404", r)
    r = A(b, "POST", "/session", {"cwd": "/tmp"})
    t.ok(r.status == 201 and str(r.get("sessionId", "")).startswith("ses-"),
         "no sessionId: a generated one (as natively)", r)
    A(b, "DELETE", "/session?sessionId=%s" % r.get("sessionId"))
    r = A(b, "DELETE", "/session")
    t.ok(err_ok(r, 400), "DELETE /session without an id: 400", r)


def test_files(t, b):
    data = bytes(range(256)) * 4 + secrets.token_bytes(200000) + b"\r\n\x00end"
    r = A(b, "PUT", "/file?path=/workspace/bin.dat", raw=data,
          headers={"Content-Type": "application/octet-stream"})
    t.ok(r.status == 200 and r.get("size") == len(data) and r.get("path") == "/workspace/bin.dat",
         "PUT /file raw binary: 200 {path, size}", r)
    r = A(b, "GET", "/file?path=/workspace/bin.dat&mode=download")
    t.ok(r.status == 200 and r.raw == data, "GET /file?mode=download: byte-identical (%d bytes)"
         % len(data), "status %s, %d bytes" % (r.status, len(r.raw)))
    t.eq(r.headers.get("content-disposition"), 'attachment; filename="bin.dat"',
         "Content-Disposition: attachment with the file name", r.headers)
    t.eq(r.headers.get("content-type"), "application/octet-stream", "Content-Type octet-stream",
         r.headers)
    r = A(b, "GET", "/file?path=/workspace/bin.dat")
    t.ok(err_ok(r, 422, "not_utf8"), "GET /file of binary data without mode: 422 not_utf8", r)
    r = A(b, "GET", "/file?path=/workspace/bin.dat&encoding=base64")
    t.ok(r.status == 200 and base64.b64decode(r.get("content") or "") == data,
         "encoding=base64: the same bytes in JSON", "status %s" % r.status)
    r = A(b, "POST", "/run", {"command": "sha256sum < /workspace/bin.dat | cut -c1-64"})
    import hashlib
    t.eq(r.get("output"), hashlib.sha256(data).hexdigest(), "the sandbox sees the same bytes", r)
    r = A(b, "PUT", "/file?path=notes/hello.txt&mkdir=1", {"content": "héllo\n", "sessionId": "default"})
    t.ok(r.status == 200 and r.get("path") == "notes/hello.txt", "PUT /file JSON {content}: 200 "
         "(relative to /workspace, ?mkdir=1)", r)
    r = A(b, "GET", "/file?path=/workspace/notes/hello.txt")
    t.ok(r.status == 200 and r.get("content") == "héllo\n" and r.get("encoding") == "utf-8",
         "GET /file: JSON {path, content, encoding, size}", r)
    r = b.request("GET", PREFIX + "/file?sandbox_id=%s&path=/workspace/notes/hello.txt&mode=download" % SB)
    t.ok(r.status == 200 and r.raw == "héllo\n".encode(), "download with ?sandbox_id=", r)
    r = A(b, "PUT", "/file", {"path": "/workspace/b64.bin", "content": base64.b64encode(b"\x00\xff").decode(),
                              "encoding": "base64"})
    t.ok(r.status == 200 and r.get("size") == 2, "PUT JSON with path in the body and base64", r)
    r = A(b, "DELETE", "/file?path=/workspace/bin.dat")
    t.ok(r.status == 200 and r.get("deleted") is True, "DELETE /file: 200", r)
    r = A(b, "GET", "/file?path=/workspace/bin.dat&mode=download")
    t.ok(err_ok(r, 404, "not_found"), "then GET: 404", r)
    r = A(b, "DELETE", "/file?path=/workspace/notes")
    t.ok(err_ok(r, 409, "not_empty"), "DELETE of a non-empty directory: 409 (as natively)", r)
    r = A(b, "DELETE", "/file?path=/workspace/notes&recursive=1")
    t.eq(r.status, 200, "with recursive=1: 200", r)
    r = A(b, "GET", "/file?path=/workspace/../../etc/passwd&mode=download")
    t.ok(r.status == 200 and b"root:" in r.raw and b"sandbox" in r.raw,
         ".. stays inside the sandbox's root (its own /etc/passwd)", r)
    for q, code, desc in (("/file", 400, "no path"), ("/file?path=/x&mode=view", 400, "an unknown mode"),
                          ("/file?path=/workspace", 422, "a directory")):
        r = A(b, "GET", q)
        t.ok(err_ok(r, code), "GET %s (%s): %d" % (q, desc, code), r)
    r = A(b, "PUT", "/file", raw=b"x", headers={"Content-Type": "application/octet-stream"})
    t.ok(err_ok(r, 400), "PUT /file without a path: 400", r)
    # The broker may answer and close before the whole body is sent.
    n = (1 << 20) + 1
    head = ("PUT %s/file?path=/workspace/big HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
            "x-sandbox-id: %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n"
            % (PREFIX, b.tokens["alice"], SB, n)).encode()
    r = b.raw_request(head, [b"x" * n])
    t.ok(r is not None and err_ok(r, 413, "body_too_large"), "PUT of more than max_body_bytes: 413", r)
    r = A(b, "GET", "/file?path=/workspace/big&mode=download")
    t.ok(err_ok(r, 404), "and nothing was written", r)


def test_large_download(t, b):
    """A download streams from the file: larger than any buffered answer."""
    import hashlib
    chunk = secrets.token_bytes(1 << 20)
    n = 24
    want = hashlib.sha256(chunk * n).hexdigest()
    r = b.put_stream("/v1/sandboxes/%s/files/workspace/big.bin" % SB, (chunk for _ in range(n)),
                     length=n * len(chunk))
    t.eq(r.status, 200, "a 24 MiB file written through the native API", r)
    h = hashlib.sha256()
    before = harness.rss_kib(b.proc.pid) or 0
    rss = harness.RssSampler(b.proc.pid).start()
    r = b.get_stream(PREFIX + "/file?path=/workspace/big.bin&mode=download", sink=h.update,
                     headers={"x-sandbox-id": SB})
    peak = rss.stop()
    t.ok(r.status == 200 and r.nbytes == n * len(chunk) and h.hexdigest() == want,
         "GET /file?mode=download of 24 MiB: byte-identical", r)
    # Growth, not an absolute figure: a sanitizer build starts far higher.
    t.ok(peak - before < 12 * 1024, "the broker never held it in memory (RSS %d -> peak %d KiB)"
         % (before, peak))
    r = A(b, "GET", "/file?path=/workspace/big.bin&encoding=base64")
    t.ok(err_ok(r, 413, "file_too_large"), "as JSON it is over 16 x max_body_bytes: 413", r)
    A(b, "DELETE", "/file?path=/workspace/big.bin")


def test_errors_and_isolation(t, b):
    r = A(b, "POST", "/run", {"command": "ls"}, tenant=None)
    t.ok(err_ok(r, 401, "unauthorized"), "no token: 401", r)
    r = A(b, "GET", "/nowhere")
    t.ok(err_ok(r, 404, "not_found"), "unknown path: 404", r)
    r = A(b, "GET", "/run")
    t.ok(err_ok(r, 405) and r.headers.get("allow") == "POST", "GET /run: 405 with Allow", r)
    r = A(b, "POST", "/file?path=/x", {})
    t.ok(err_ok(r, 405), "POST /file: 405", r)
    r = A(b, "POST", "/run", {"command": "ls"}, sid="../x")
    t.ok(err_ok(r, 400), "an invalid sandbox id: 400", r)
    A(b, "PUT", "/file?path=/workspace/alice.txt", raw=b"alice", headers={"Content-Type": "text/plain"})
    for method, path, body in (("POST", "/run", {"command": "cat /workspace/alice.txt"}),
                               ("GET", "/file?path=/workspace/alice.txt&mode=download", None),
                               ("DELETE", "/file?path=/workspace/alice.txt", None),
                               ("GET", "/sandbox", None), ("GET", "/session", None),
                               ("POST", "/sandbox", {"action": "destroy"}), ("DELETE", "/sandbox", None)):
        r = A(b, method, path, body, tenant="bob")
        t.ok(err_ok(r, 404, "not_found"), "bob %s %s on alice's %s: 404" % (method, path, SB), r)
    r = b.request("GET", PREFIX + "/file?sandbox_id=%s&path=/workspace/alice.txt&mode=download" % SB,
                  tenant="bob")
    t.ok(err_ok(r, 404, "not_found"), "bob with ?sandbox_id=: 404", r)
    r = A(b, "GET", "/file?path=/workspace/alice.txt&mode=download")
    t.ok(r.status == 200 and r.raw == b"alice", "alice's file is untouched", r)


def test_destroy(t, b):
    r = A(b, "POST", "/sandbox", {"action": "destroy"})
    t.ok(r.status == 200 and r.get("sandboxId") == SB, "POST /sandbox {action: destroy}: 200", r)
    t.eq(b.get("/v1/sandboxes/" + SB).status, 404, "the native sandbox is gone")


if __name__ == "__main__":
    harness.main([test_sandbox, test_run, test_sessions, test_files, test_large_download, test_errors_and_isolation,
                  test_destroy])
