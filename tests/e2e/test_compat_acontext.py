#!/usr/bin/env python3
"""test_compat_acontext.py - the acontext surface (/compat/acontext): the
reference document's own examples replayed as written (its curl commands
and its request blocks, only the base URL, the token and the ids changed),
answers checked against the documented response shapes, then each
endpoint's behaviour: create (get or create), info, update (expiry), exec,
upload (utf-8 and base64) and download byte for byte, kill, keepalive
touches, errors, auth and tenant isolation.

The contract is docs/compat.md ("acontext") and the reference document
acontext-worker-api.md (issue 7)."""

import base64
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from compatlib import ISO_MS_RE, curl, doc_json, http, shape  # noqa: E402

P = "/compat/acontext"

# ---- the reference document, verbatim ------------------------------------

DOC_CURL_CREATE = """curl -X POST http://localhost:8787/sandbox/create \\
  -H "Content-Type: application/json" \\
  -d '{"sandbox_id": "test-123"}'"""

DOC_CURL_EXEC = """curl -X POST http://localhost:8787/sandbox/test-123/exec \\
  -H "Content-Type: application/json" \\
  -d '{"command": "echo hello"}'"""

DOC_CREATE = """POST /sandbox/create
Content-Type: application/json

{
  "sandbox_id": "my-sandbox-id",
  "keepalive_seconds": 1800,  # Optional
  "additional_configs": {}    # Optional
}"""

DOC_CREATE_RESPONSE = """{
  "sandbox_id": "my-sandbox-id",
  "sandbox_status": "running",
  "sandbox_created_at": "2025-01-15T10:00:00.000Z",
  "sandbox_expires_at": "2025-01-15T10:30:00.000Z"
}"""

DOC_KILL = """POST /sandbox/{sandbox_id}/kill"""

DOC_KILL_RESPONSE = """{
  "success": true
}"""

DOC_GET = """GET /sandbox/{sandbox_id}"""

DOC_GET_RESPONSE = """{
  "sandbox_id": "my-sandbox-id",
  "sandbox_status": "running",
  "sandbox_created_at": "2025-01-15T10:00:00.000Z",
  "sandbox_expires_at": null
}"""

DOC_UPDATE = """POST /sandbox/{sandbox_id}/update
Content-Type: application/json

{
  "keepalive_longer_by_seconds": 600
}"""

DOC_UPDATE_RESPONSE = """{
  "sandbox_id": "my-sandbox-id",
  "sandbox_status": "running",
  "sandbox_created_at": "2025-01-15T10:00:00.000Z",
  "sandbox_expires_at": "2025-01-15T10:40:00.000Z"
}"""

DOC_EXEC = """POST /sandbox/{sandbox_id}/exec
Content-Type: application/json

{
  "command": "python --version"
}"""

DOC_EXEC_RESPONSE = """{
  "stdout": "Python 3.11.14\\n",
  "stderr": "",
  "exit_code": 0
}"""

DOC_DOWNLOAD = """POST /sandbox/{sandbox_id}/download
Content-Type: application/json

{
  "file_path": "/workspace/example.txt",
  "encoding": "base64"  # Optional: "utf-8" or "base64"
}"""

DOC_DOWNLOAD_RESPONSE = """{
  "content": "SGVsbG8gV29ybGQ=",  # Base64 encoded
  "encoding": "base64"
}"""

DOC_UPLOAD = """POST /sandbox/{sandbox_id}/upload
Content-Type: application/json

{
  "file_path": "/workspace/example.txt",
  "content": "SGVsbG8gV29ybGQ=",  # Base64 encoded
  "encoding": "base64"  # Optional: "utf-8" or "base64"
}"""

DOC_UPLOAD_RESPONSE = """{
  "success": true
}"""

DOC_ID = "my-sandbox-id"
SB = "acx"  # the sandbox the behaviour tests use


def ep(r):
    return harness.iso_to_epoch(r.get("sandbox_expires_at"))


def info_ok(t, r, sid, desc):
    """An info answer: exactly the documented keys, a running sandbox, ms
    timestamps."""
    t.eq(shape(r.body), dict(shape(doc_json(DOC_CREATE_RESPONSE))), desc + ": the documented keys and types", r)
    t.ok(r.get("sandbox_id") == sid and r.get("sandbox_status") == "running"
         and ISO_MS_RE.match(r.get("sandbox_created_at") or "") and ISO_MS_RE.match(r.get("sandbox_expires_at") or ""),
         desc + ": sandbox_id %s, running, ISO timestamps with milliseconds" % sid, r)


def upload(b, sid, path, content, encoding=None, tenant="alice", **extra):
    body = {"file_path": path, "content": content}
    if encoding is not None:
        body["encoding"] = encoding
    body.update(extra)
    return b.post("%s/sandbox/%s/upload" % (P, sid), body, tenant=tenant)


def download(b, sid, path, encoding=None, tenant="alice"):
    body = {"file_path": path}
    if encoding is not None:
        body["encoding"] = encoding
    return b.post("%s/sandbox/%s/download" % (P, sid), body, tenant=tenant)


def run(b, sid, command, tenant="alice"):
    return b.post("%s/sandbox/%s/exec" % (P, sid), {"command": command}, tenant=tenant, timeout=90)


# ---- the document's own examples -------------------------------------------


def test_doc_curl(t, b):
    r = curl(b, DOC_CURL_CREATE, P)
    t.eq(r.status, 200, "the document's curl 'Test create sandbox' answers 200", r)
    info_ok(t, r, "test-123", "its answer")
    created, expires = harness.iso_to_epoch(r.get("sandbox_created_at")), ep(r)
    t.ok(abs((expires - created) - 600) < 1, "without keepalive_seconds the sandbox lives default_keepalive_seconds "
         "(600 s): expires %.3f s after creation" % (expires - created), r)
    t.ok(abs(created - time.time()) < 30, "sandbox_created_at is now", r)
    nat = b.get("/v1/sandboxes/test-123")
    t.eq(nat.status, 200, "the sandbox is a native one: GET /v1/sandboxes/test-123 finds it", nat)

    r = curl(b, DOC_CURL_EXEC, P)
    t.eq(r.status, 200, "the document's curl 'Test execute command' answers 200", r)
    t.eq(r.body, {"stdout": "hello\n", "stderr": "", "exit_code": 0},
         "it answers exactly {stdout: 'hello\\n', stderr: '', exit_code: 0}", r)
    t.eq(shape(r.body), shape(doc_json(DOC_EXEC_RESPONSE)), "the documented exec response shape", r)


def test_doc_endpoints(t, b):
    sub = {"{sandbox_id}": DOC_ID}
    r = http(b, DOC_CREATE, P)
    t.eq(r.status, 200, "the documented create request (keepalive_seconds 1800, additional_configs {}) answers 200", r)
    info_ok(t, r, DOC_ID, "create")
    t.ok(abs((ep(r) - harness.iso_to_epoch(r.get("sandbox_created_at"))) - 1800) < 1,
         "keepalive_seconds 1800: sandbox_expires_at is 30 min after sandbox_created_at (as in the example)", r)
    created_at = r.get("sandbox_created_at")

    r = http(b, DOC_GET, P, subst=sub)
    t.eq(r.status, 200, "the documented GET /sandbox/{sandbox_id} answers 200", r)
    doc = shape(doc_json(DOC_GET_RESPONSE))
    t.eq(set(r.body or {}), set(doc), "GET has the documented keys", r)
    t.ok(isinstance(r.get("sandbox_expires_at"), str), "GET gives the real sandbox_expires_at (the example's null "
         "is documented as a choice in docs/compat.md)", r)
    t.eq(r.get("sandbox_created_at"), created_at, "GET gives the creation time of the create", r)
    before = ep(r)

    r = http(b, DOC_UPDATE, P, subst=sub)
    t.eq(r.status, 200, "the documented update (keepalive_longer_by_seconds 600) answers 200", r)
    t.eq(shape(r.body), shape(doc_json(DOC_UPDATE_RESPONSE)), "update: the documented response shape", r)
    t.ok(abs(ep(r) - before - 600) < 0.01, "update moves sandbox_expires_at 600 s later (10:30 -> 10:40 in the "
         "example): %.3f s" % (ep(r) - before), r)
    g = b.get("/v1/sandboxes/%s" % DOC_ID)
    t.eq(g.get("expires_at"), r.get("sandbox_expires_at"), "the native expires_at moved with it", g)

    r = http(b, DOC_EXEC, P, subst=sub)
    t.eq(r.status, 200, "the documented exec of 'python --version' answers 200", r)
    t.eq(shape(r.body), shape(doc_json(DOC_EXEC_RESPONSE)), "exec: the documented response shape", r)
    # The image has python3 but no 'python' command: the shell says so.
    t.ok(r.get("exit_code") == 127 and "python" in (r.get("stderr") or ""),
         "'python' is not in the image: exit_code 127 and the shell's message on stderr", r)
    r = run(b, DOC_ID, "python3 --version")
    t.ok(r.status == 200 and (r.get("stdout") or "").startswith("Python 3.") and r.get("exit_code") == 0,
         "python3 --version prints 'Python 3.…' on stdout", r)

    r = http(b, DOC_UPLOAD, P, subst=sub)
    t.eq(r.status, 200, "the documented upload (base64 'Hello World' to /workspace/example.txt) answers 200", r)
    t.eq(r.body, doc_json(DOC_UPLOAD_RESPONSE), "it answers exactly {success: true}", r)
    raw = b.get("/v1/sandboxes/%s/files/workspace/example.txt" % DOC_ID)
    t.eq(raw.raw, b"Hello World", "the file holds the decoded bytes 'Hello World'", raw)

    r = http(b, DOC_DOWNLOAD, P, subst=sub)
    t.eq(r.status, 200, "the documented download answers 200", r)
    t.eq(r.body, doc_json(DOC_DOWNLOAD_RESPONSE), "it answers exactly the documented example "
         "{content: 'SGVsbG8gV29ybGQ=', encoding: 'base64'}", r)

    r = http(b, DOC_KILL, P, subst=sub)
    t.eq(r.status, 200, "the documented kill answers 200", r)
    t.eq(r.body, doc_json(DOC_KILL_RESPONSE), "it answers exactly {success: true}", r)
    r = http(b, DOC_GET, P, subst=sub)
    t.ok(r.status == 404 and r.err_code() == "not_found", "after kill, GET is 404 not_found", r)
    g = b.get("/v1/sandboxes/%s" % DOC_ID)
    t.eq(g.status, 404, "the native sandbox is gone too", g)


# ---- behaviours ----------------------------------------------------------------


def test_create_get_or_create(t, b):
    r = b.post(P + "/sandbox/create", {"sandbox_id": SB, "keepalive_seconds": 900, "additional_configs": {"a": "b"}})
    t.eq(r.status, 200, "create %s answers 200" % SB, r)
    first = r.body or {}
    n = len(b.get("/v1/sandboxes").get("sandboxes") or [])
    r = b.post(P + "/sandbox/create", {"sandbox_id": SB})
    t.eq(r.status, 200, "a second create of the same sandbox_id answers 200", r)
    t.eq((r.get("sandbox_created_at"), r.get("sandbox_expires_at")),
         (first.get("sandbox_created_at"), first.get("sandbox_expires_at")),
         "it is the same sandbox (same creation time and expiry): create is get-or-create", r)
    t.eq(len(b.get("/v1/sandboxes").get("sandboxes") or []), n, "no second sandbox was made", None)
    r = b.post(P + "/sandbox/create", {"sandbox_id": SB, "keepalive_seconds": 3000})
    t.ok(r.status == 200 and ep(r) >= time.time() + 2990,
         "create of an existing sandbox with keepalive_seconds 3000 keeps it alive at least 3000 s from now", r)
    for body, field in (({}, "sandbox_id"), ({"sandbox_id": "bad id!"}, "sandbox_id"),
                        ({"sandbox_id": 7}, "sandbox_id"), ({"sandbox_id": "x1", "keepalive_seconds": 0},
                                                            "keepalive_seconds"),
                        ({"sandbox_id": "x1", "keepalive_seconds": "10"}, "keepalive_seconds"),
                        ({"sandbox_id": "x1", "additional_configs": []}, "additional_configs"),
                        ({"sandbox_id": "x1", "template": "python"}, "template")):
        r = b.post(P + "/sandbox/create", body)
        t.ok(r.status == 400 and harness.names_field(r.err_message(), field),
             "create %s -> 400 naming %s" % (body, field), r)
    r = b.request("POST", P + "/sandbox/create", raw=b"sandbox_id=x", headers={"Content-Type": "text/plain"})
    t.eq(r.status, 400, "a body that is not JSON -> 400", r)


def test_exec(t, b):
    r = run(b, SB, "echo out; echo err >&2; exit 3")
    t.eq(r.body, {"stdout": "out\n", "stderr": "err\n", "exit_code": 3},
         "stdout, stderr and a non-zero exit code come back apart", r)
    r = run(b, SB, "printf 'a\\nb'")
    t.eq(r.get("stdout"), "a\nb", "output is not trimmed or reformatted", r)
    r = run(b, SB, "cd /tmp && export ACX=1")
    r = run(b, SB, "pwd; echo $ACX")
    t.eq(r.get("stdout"), "/tmp\n1\n", "commands share one shell: cwd and exports carry over (as in the reference's "
         "default session)", r)
    run(b, SB, "cd /workspace")
    before = ep(b.get(P + "/sandbox/" + SB))
    r = b.post("%s/sandbox/%s/exec" % (P, SB), {"command": "true", "keepalive_seconds": 7200})
    after = ep(b.get(P + "/sandbox/" + SB))
    t.ok(r.status == 200 and after >= time.time() + 7190 and after > before,
         "exec with keepalive_seconds (as acontext's client sends it) keeps the sandbox alive that long", r)
    r = b.post("%s/sandbox/%s/exec" % (P, SB), {"command": "true", "keepalive_seconds": 60})
    t.eq(ep(b.get(P + "/sandbox/" + SB)), after, "a shorter keepalive_seconds never shortens the lifetime", r)
    for body, field in (({}, "command"), ({"command": 5}, "command"), ({"command": "x", "cwd": "/"}, "cwd")):
        r = b.post("%s/sandbox/%s/exec" % (P, SB), body)
        t.ok(r.status == 400 and harness.names_field(r.err_message(), field), "exec %s -> 400 naming %s"
             % (body, field), r)


def test_upload_download(t, b):
    text = "héllo wörld ✓\nline 2\n"
    r = upload(b, SB, "/workspace/u/t.txt", text, "utf-8")
    t.eq(r.body, {"success": True}, "upload of utf-8 text into a directory that does not exist yet", r)
    r = download(b, SB, "/workspace/u/t.txt", "utf-8")
    t.eq(r.body, {"content": text, "encoding": "utf-8"}, "download with encoding utf-8 gives the same text", r)
    r = download(b, SB, "/workspace/u/t.txt", "base64")
    t.eq(base64.b64decode(r.get("content") or ""), text.encode(), "download with base64 gives the UTF-8 bytes", r)
    r = download(b, SB, "/workspace/u/t.txt")
    t.eq(r.get("encoding"), "base64", "download without encoding answers base64 (as the reference does)", r)
    raw = b.get("/v1/sandboxes/%s/files/workspace/u/t.txt" % SB)
    t.eq(raw.raw, text.encode(), "the native file API reads the same bytes", raw)
    st = run(b, SB, "stat -c '%U %a' /workspace/u /workspace/u/t.txt")
    t.eq(st.get("stdout"), "sandbox 755\nsandbox 644\n", "the file and the made directory belong to the sandbox user",
         st)

    blob = bytes(range(256)) * 300 + b"\x00\xff"
    r = upload(b, SB, "/workspace/bin.dat", base64.b64encode(blob).decode(), "base64")
    t.eq(r.body, {"success": True}, "upload of %d binary bytes as base64" % len(blob), r)
    r = download(b, SB, "/workspace/bin.dat", "base64")
    t.ok(r.status == 200 and base64.b64decode(r.get("content") or "") == blob,
         "download gives them back byte for byte", r)
    r = download(b, SB, "/workspace/bin.dat", "utf-8")
    t.ok(r.status == 422 and r.err_code() == "not_utf8", "download of binary bytes as utf-8 -> 422 not_utf8", r)

    r = upload(b, SB, "/workspace/u/t.txt", "SGVsbG8gV29ybGQ=")
    t.eq(r.body, {"success": True}, "upload without encoding over an existing file", r)
    r = download(b, SB, "/workspace/u/t.txt", "utf-8")
    t.eq(r.get("content"), "SGVsbG8gV29ybGQ=", "without encoding the content is taken as utf-8 text, as written", r)
    r = upload(b, SB, "relative.txt", "rel", "utf8")
    t.ok(r.status == 200 and b.get("/v1/sandboxes/%s/files/workspace/relative.txt" % SB).raw == b"rel",
         "a relative file_path lands in /workspace; 'utf8' is taken for 'utf-8'", r)
    r = upload(b, SB, "/workspace/empty.txt", "")
    t.ok(r.status == 200 and download(b, SB, "/workspace/empty.txt").get("content") == "",
         "an empty file uploads and downloads as empty", r)

    r = upload(b, SB, "/workspace/x.bin", "not base64!!", "base64")
    t.ok(r.status == 400 and harness.names_field(r.err_message(), "content"), "invalid base64 -> 400 naming content", r)
    r = upload(b, SB, "/workspace/x.bin", "abc", "latin-1")
    t.ok(r.status == 400 and harness.names_field(r.err_message(), "encoding"), "encoding latin-1 -> 400 naming "
         "encoding", r)
    r = download(b, SB, "/workspace/u/t.txt", "hex")
    t.ok(r.status == 400 and harness.names_field(r.err_message(), "encoding"), "download encoding hex -> 400", r)
    for body, field in (({"content": "x"}, "file_path"), ({"file_path": "/workspace/a"}, "content"),
                        ({"file_path": 1, "content": "x"}, "file_path")):
        r = b.post("%s/sandbox/%s/upload" % (P, SB), body)
        t.ok(r.status == 400 and harness.names_field(r.err_message(), field), "upload %s -> 400 naming %s"
             % (body, field), r)
    r = download(b, SB, "/workspace/nope.txt")
    t.ok(r.status == 404 and r.err_code() == "not_found", "download of a missing file -> 404 not_found", r)
    r = download(b, SB, "/workspace")
    t.ok(r.status == 422, "download of a directory -> 422", r)
    r = upload(b, SB, "/workspace/u", "x")
    t.ok(r.status == 422, "upload over a directory -> 422, the directory stays", r)
    r = upload(b, SB, "/../../../../tmp/acx-escape", "x")
    t.ok(r.status == 200 and not os.path.exists("/tmp/acx-escape"),
         "a file_path with .. stays inside the sandbox (nothing written on the host)", r)


def test_update(t, b):
    before = ep(b.get(P + "/sandbox/" + SB))
    r = b.post("%s/sandbox/%s/update" % (P, SB), {"keepalive_longer_by_seconds": 120})
    t.ok(r.status == 200 and abs(ep(r) - before - 120) < 0.01, "update by 120 s moves the expiry 120 s later", r)
    for body, field in (({}, "keepalive_longer_by_seconds"), ({"keepalive_longer_by_seconds": 0},
                                                              "keepalive_longer_by_seconds"),
                        ({"keepalive_longer_by_seconds": "60"}, "keepalive_longer_by_seconds"),
                        ({"keepalive_longer_by_seconds": 60, "x": 1}, "x")):
        r = b.post("%s/sandbox/%s/update" % (P, SB), body)
        t.ok(r.status == 400 and harness.names_field(r.err_message(), field), "update %s -> 400 naming %s"
             % (body, field), r)
    r = b.get(P + "/sandbox/%s?keepalive_seconds=20000" % SB)
    t.ok(r.status == 200 and ep(r) >= time.time() + 19990,
         "GET ?keepalive_seconds=20000 (acontext's client sends it) keeps the sandbox alive that long", r)
    r = b.get(P + "/sandbox/%s?keepalive_seconds=abc" % SB)
    t.ok(r.status == 400 and harness.names_field(r.err_message(), "keepalive_seconds"),
         "GET ?keepalive_seconds=abc -> 400 naming keepalive_seconds", r)
    r = b.post("%s/sandbox/%s/update" % (P, "nosuch"), {"keepalive_longer_by_seconds": 60})
    t.eq(r.status, 404, "update of a sandbox that does not exist -> 404", r)


def test_kill(t, b):
    before = b.cids_now()
    r = b.post(P + "/sandbox/create", {"sandbox_id": "acx-kill"})
    new = b.cids_now() - before
    t.ok(r.status == 200 and len(new) == 1, "create acx-kill starts one container", r)
    # The reference client posts kill with a JSON content type and no body.
    r = b.request("POST", P + "/sandbox/acx-kill/kill", headers={"Content-Type": "application/json"})
    t.eq(r.body, {"success": True}, "kill with no body answers {success: true}", r)
    t.eq(b.get(P + "/sandbox/acx-kill").status, 404, "the sandbox is gone", None)
    for cid in new:
        t.eq(b.container_gone(cid), [], "nothing of its container is left", None)
    r = b.post(P + "/sandbox/acx-kill/kill")
    t.ok(r.status == 404 and r.err_code() == "not_found", "a second kill -> 404 not_found", r)
    r = run(b, "acx-kill", "true")
    t.eq(r.status, 404, "exec in a killed sandbox -> 404", r)


def test_routes_and_auth(t, b):
    r = b.get(P + "/sandbox/%s" % SB, tenant=None)
    t.ok(r.status == 401 and r.err_code() == "unauthorized", "no Authorization header -> 401 unauthorized", r)
    r = b.post(P + "/sandbox/create", {"sandbox_id": "x"}, token="not-a-valid-token-at-all")
    t.eq(r.status, 401, "a wrong bearer token -> 401", r)
    r = b.get(P + "/sandbox/%s" % SB, headers={"Authorization": "bearer " + b.tokens["alice"]}, tenant=None)
    t.eq(r.status, 200, "the bearer scheme is case-insensitive", r)
    for method, path, want in (("GET", "/sandboxes", 404), ("GET", "/sandbox/%s/exec" % SB, 405),
                               ("DELETE", "/sandbox/%s" % SB, 405), ("POST", "/sandbox/%s/stop" % SB, 404),
                               ("GET", "/", 404), ("POST", "/sandbox/%s/exec/x" % SB, 404),
                               ("POST", "/sandbox/bad%%20id/exec", 404)):
        r = b.request(method, P + path, raw=b"{}", headers={"Content-Type": "application/json"})
        t.eq(r.status, want, "%s %s -> %d" % (method, path, want), r)


def test_body_limit(t, b):
    big = b'{"command": "' + b"x" * (1 << 20) + b'"}'
    head = ("POST %s/sandbox/%s/exec HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
            "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % (P, SB, b.tokens["alice"], len(big))).encode()
    r = b.raw_request(head, [big[i:i + 65536] for i in range(0, len(big), 65536)])
    t.ok(r.status == 413 and r.err_code() == "body_too_large", "a body whose Content-Length is over max_body_bytes -> 413 body_too_large", r)
    head = ("POST %s/sandbox/%s/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            % (P, SB, b.tokens["alice"])).encode()
    chunk = b"%x\r\n%s\r\n" % (65536, b"A" * 65536)
    r = b.raw_request(head, [b'11\r\n{"content": "AAAA\r\n'] + [chunk] * 20 + [b"0\r\n\r\n"])
    t.ok(r is not None and r.status == 413 and r.err_code() == "body_too_large",
         "a chunked body over max_body_bytes (no Content-Length) -> 413 body_too_large", r)


def test_isolation(t, b):
    cases = (("GET", "/sandbox/%s" % SB, None), ("POST", "/sandbox/%s/exec" % SB, {"command": "id"}),
             ("POST", "/sandbox/%s/update" % SB, {"keepalive_longer_by_seconds": 60}),
             ("POST", "/sandbox/%s/download" % SB, {"file_path": "/workspace/u/t.txt"}),
             ("POST", "/sandbox/%s/upload" % SB, {"file_path": "/workspace/bob.txt", "content": "bob"}),
             ("POST", "/sandbox/%s/kill" % SB, None))
    for method, path, body in cases:
        r = b.request(method, P + path, body, tenant="bob")
        t.ok(r.status == 404 and r.err_code() == "not_found", "bob: %s %s on alice's sandbox -> 404 not_found"
             % (method, path), r)
    r = b.get(P + "/sandbox/" + SB)
    t.eq(r.status, 200, "alice's sandbox is still there", r)
    t.eq(b.get("/v1/sandboxes/%s/files/workspace/bob.txt" % SB).status, 404, "bob's upload did not land in it", None)
    r = b.post(P + "/sandbox/create", {"sandbox_id": SB}, tenant="bob")
    t.ok(r.status == 200 and r.get("sandbox_created_at") != b.get(P + "/sandbox/" + SB).get("sandbox_created_at"),
         "bob creating the same sandbox_id gets a sandbox of his own", r)
    r = download(b, SB, "/workspace/u/t.txt", tenant="bob")
    t.eq(r.status, 404, "in which alice's files do not exist", r)


if __name__ == "__main__":
    harness.main([test_doc_curl, test_doc_endpoints, test_create_get_or_create, test_exec, test_upload_download,
                  test_update, test_kill, test_routes_and_auth, test_body_limit, test_isolation])
