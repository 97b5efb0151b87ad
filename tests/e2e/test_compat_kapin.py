#!/usr/bin/env python3
"""test_compat_kapin.py - the kapin surface (/compat/kapin): the reference
document's own examples replayed as written (its curl commands, its
request lines and bodies, its service-binding request; only the base URL,
the token and the ids changed), answers checked against the documented
{success, data} / {success: false, error} envelopes, then each endpoint's
behaviour: get-or-create, exec, clone of a local repository (the sandbox
has no network), files GET/PUT, ls, DELETE killing processes, CORS, auth
and tenant isolation; and a second broker with compat_root = kapin serving
the surface at / while /v1 stays native.

The contract is docs/compat.md ("kapin") and the reference document
kapin-sandbox-worker.md (issue 7)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from compatlib import curl, doc_json, http, shape  # noqa: E402

P = "/compat/kapin"

# ---- the reference document, verbatim ------------------------------------

DOC_CURL_CREATE = """curl http://localhost:8787/sandboxes/test-project -X POST"""

DOC_CURL_EXEC = """curl http://localhost:8787/sandboxes/test-project/exec \\
  -X POST \\
  -H "Content-Type: application/json" \\
  -d '{"command": "echo Hello"}'"""

DOC_CREATE = "POST /sandboxes/:projectId"
DOC_CREATE_RESPONSE = """{
  "success": true,
  "data": {
    "projectId": "my-project",
    "status": "ready",
    "message": "Sandbox ready"
  }
}"""

DOC_EXEC = "POST /sandboxes/:projectId/exec"
DOC_EXEC_BODY = """{
  "command": "python --version",
  "stream": false
}"""
DOC_EXEC_RESPONSE = """{
  "success": true,
  "data": {
    "stdout": "Python 3.11.2",
    "stderr": "",
    "exitCode": 0
  }
}"""

DOC_CLONE = "POST /sandboxes/:projectId/clone"
DOC_CLONE_BODY = """{
  "repoUrl": "https://github.com/user/repo.git",
  "directory": "/workspace/repo"
}"""
DOC_CLONE_RESPONSE = """{
  "success": true,
  "data": {
    "repoUrl": "https://github.com/user/repo.git",
    "directory": "/workspace/repo",
    "message": "Repository cloned successfully"
  }
}"""

DOC_READ_EXAMPLE = "GET /sandboxes/my-project/files/workspace/package.json"
DOC_READ_RESPONSE = """{
  "success": true,
  "data": {
    "path": "/workspace/package.json",
    "content": "{ \\"name\\": \\"my-app\\" }"
  }
}"""

DOC_WRITE = "PUT /sandboxes/:projectId/files/<path>"
DOC_WRITE_BODY = """{
  "content": "console.log('Hello, World!');"
}"""
DOC_WRITE_RESPONSE = """{
  "success": true,
  "data": {
    "path": "/workspace/index.js",
    "message": "File written successfully"
  }
}"""

DOC_LS = "GET /sandboxes/:projectId/ls?path=/workspace"
DOC_LS_RESPONSE = """{
  "success": true,
  "data": {
    "path": "/workspace",
    "listing": "total 12\\ndrwxr-xr-x 3 root root 4096 Oct 25 10:00 .\\n..."
  }
}"""

DOC_DELETE = "DELETE /sandboxes/:projectId"
DOC_DELETE_RESPONSE = """{
  "success": true,
  "data": {
    "projectId": "my-project",
    "status": "cleaned",
    "message": "All processes terminated"
  }
}"""

DOC_ERROR = """{
  "success": false,
  "error": "Error message description"
}"""

# The web-worker's service-binding call: new Request('http://sandbox/sandboxes/my-project', {method: 'POST'})
DOC_BINDING = ("POST", "http://sandbox/sandboxes/my-project")

PROJ = "my-project"
SUB = {":projectId": PROJ}

MAKE_REPO = (
    "git config --global user.email t@example.com && git config --global user.name T && "
    "git config --global init.defaultBranch main && git init -q --bare /workspace/origin.git && "
    "git init -q /workspace/wt && cd /workspace/wt && echo kapin > README.md && git add README.md && "
    "git commit -qm first && git push -q /workspace/origin.git main && cd /workspace && echo made"
)


class Errors:
    """Every kapin error answer seen (kept out of the broker's native-shape
    check; checked against the kapin envelope instead)."""

    seen = []


def k(b, method, path, body=None, tenant="alice", token=None, raw=None, headers=None, prefix=P):
    n = len(b.responses)
    r = b.request(method, prefix + path, body, tenant=tenant, token=token, raw=raw, headers=headers)
    del b.responses[n:]
    if r.status >= 400:
        Errors.seen.append(r)
    return r


def kd(r):
    return r.body.get("data") if isinstance(r.body, dict) and isinstance(r.body.get("data"), dict) else {}


def ok_env(t, r, desc):
    """A success envelope: 200, exactly {success: true, data: {...}}, CORS."""
    good = (r.status == 200 and isinstance(r.body, dict) and set(r.body) == {"success", "data"}
            and r.body["success"] is True and isinstance(r.body["data"], dict))
    t.ok(good, desc + ": 200 {success: true, data}", r)
    return good


def err_env(t, r, status, desc):
    t.ok(r.status == status and shape(r.body) == shape(doc_json(DOC_ERROR)) and r.body["error"],
         desc + ": %d {success: false, error: '…'}" % status, r)


def sh(b, command, sid=PROJ, tenant="alice"):
    r = k(b, "POST", "/sandboxes/%s/exec" % sid, {"command": command}, tenant=tenant)
    return kd(r).get("stdout")


# ---- the document's own examples -------------------------------------------


def test_doc_curl(t, b):
    r = curl(b, DOC_CURL_CREATE, P, record=False)
    ok_env(t, r, "the document's curl 'POST /sandboxes/test-project'")
    t.eq(r.body.get("data") if r.body else None, {"projectId": "test-project", "status": "ready",
                                                   "message": "Sandbox ready"},
         "data is exactly {projectId: test-project, status: ready, message: 'Sandbox ready'}", r)
    t.eq(b.get("/v1/sandboxes/test-project").status, 200, "the project is a native sandbox named test-project", None)
    r = curl(b, DOC_CURL_EXEC, P, record=False)
    ok_env(t, r, "the document's curl exec of 'echo Hello'")
    t.eq(kd(r), {"stdout": "Hello\n", "stderr": "", "exitCode": 0}, "data is {stdout: 'Hello\\n', stderr: '', "
         "exitCode: 0}", r)
    t.eq(shape(r.body), shape(doc_json(DOC_EXEC_RESPONSE)), "the documented exec response shape", r)


def test_doc_endpoints(t, b):
    method, url = DOC_BINDING
    r = k(b, method, url[len("http://sandbox"):])
    ok_env(t, r, "the web-worker's service-binding request POST http://sandbox/sandboxes/my-project")
    t.eq(r.body, doc_json(DOC_CREATE_RESPONSE), "it answers exactly the documented example", r)
    r = http(b, DOC_CREATE, P, subst=SUB, record=False)
    t.eq(r.body, doc_json(DOC_CREATE_RESPONSE), "the documented POST /sandboxes/:projectId answers the documented "
         "example again (the sandbox exists now)", r)

    r = http(b, DOC_EXEC, P, subst=SUB, body=DOC_EXEC_BODY, record=False)
    ok_env(t, r, "the documented exec request {command: 'python --version', stream: false}")
    t.eq(shape(r.body), shape(doc_json(DOC_EXEC_RESPONSE)), "exec: the documented response shape", r)
    t.ok(kd(r).get("exitCode") == 127 and "python" in (kd(r).get("stderr") or ""),
         "the image has python3 but no 'python': exitCode 127 and the shell's message on stderr", r)

    r = http(b, DOC_CLONE, P, subst=SUB, body=DOC_CLONE_BODY, record=False)
    err_env(t, r, 400, "the documented clone of https://github.com/user/repo.git (no network in a sandbox)")
    t.ok("github.com" in (r.get("error") or "") or "resolve" in (r.get("error") or ""),
         "the error is git's own message", r)
    t.eq(sh(b, MAKE_REPO), "made\n", "make a bare repository /workspace/origin.git inside the sandbox", None)
    body = DOC_CLONE_BODY.replace("https://github.com/user/repo.git", "file:///workspace/origin.git")
    r = http(b, DOC_CLONE, P, subst=SUB, body=body, record=False)
    ok_env(t, r, "the documented clone body with a reachable repoUrl (file:///workspace/origin.git)")
    want = doc_json(DOC_CLONE_RESPONSE)
    want["data"]["repoUrl"] = "file:///workspace/origin.git"
    t.eq(r.body, want, "it answers the documented example (repoUrl, directory /workspace/repo, message)", r)
    t.eq(sh(b, "cat /workspace/repo/README.md"), "kapin\n", "the clone is in /workspace/repo", None)

    r = k(b, "PUT", "/sandboxes/%s/files/workspace/package.json" % PROJ, {"content": '{ "name": "my-app" }'})
    ok_env(t, r, "PUT the example's package.json")
    r = http(b, DOC_READ_EXAMPLE, P, record=False)
    ok_env(t, r, "the documented example GET /sandboxes/my-project/files/workspace/package.json")
    t.eq(r.body, doc_json(DOC_READ_RESPONSE), "it answers exactly the documented example", r)

    r = http(b, DOC_WRITE, P, subst=dict(SUB, **{"<path>": "workspace/index.js"}), body=DOC_WRITE_BODY, record=False)
    ok_env(t, r, "the documented write {content: \"console.log('Hello, World!');\"} to workspace/index.js")
    t.eq(r.body, doc_json(DOC_WRITE_RESPONSE), "it answers exactly the documented example", r)
    t.eq(b.get("/v1/sandboxes/%s/files/workspace/index.js" % PROJ).raw, b"console.log('Hello, World!');",
         "the file holds the content", None)

    r = http(b, DOC_LS, P, subst=SUB, record=False)
    ok_env(t, r, "the documented GET /sandboxes/:projectId/ls?path=/workspace")
    t.eq(shape(r.body), shape(doc_json(DOC_LS_RESPONSE)), "ls: the documented response shape", r)
    listing = kd(r).get("listing") or ""
    t.ok(listing.startswith("total ") and " .\n" in listing and " index.js\n" in listing
         and " package.json\n" in listing and " repo\n" in listing,
         "listing is `ls -la` text ('total …', '.', the files)", r)
    t.eq(kd(r).get("path"), "/workspace", "data.path is /workspace", r)

    r = http(b, DOC_DELETE, P, subst=SUB, record=False)
    t.eq(r.body, doc_json(DOC_DELETE_RESPONSE), "the documented DELETE /sandboxes/:projectId answers exactly the "
         "documented example", r)
    t.eq(b.get("/v1/sandboxes/%s" % PROJ).status, 200, "the sandbox itself stays", None)


# ---- behaviours ----------------------------------------------------------------


def test_get_or_create(t, b):
    n = len(b.get("/v1/sandboxes").get("sandboxes") or [])
    before = b.get("/v1/sandboxes/%s" % PROJ).get("created_at")
    for i in range(3):
        r = k(b, "POST", "/sandboxes/%s" % PROJ)
        t.eq(r.body, doc_json(DOC_CREATE_RESPONSE), "POST /sandboxes/%s again (%d)" % (PROJ, i + 1), r)
    t.eq(len(b.get("/v1/sandboxes").get("sandboxes") or []), n, "no new sandbox was made", None)
    t.eq(b.get("/v1/sandboxes/%s" % PROJ).get("created_at"), before, "it is the same sandbox", None)
    t.eq(sh(b, "cat /workspace/index.js"), "console.log('Hello, World!');", "with its files", None)
    r = k(b, "POST", "/sandboxes/fresh-one", raw=b'{"whatever": 1}', headers={"Content-Type": "application/json"})
    t.eq(kd(r).get("projectId"), "fresh-one", "a body on POST /sandboxes/:projectId is ignored", r)
    r = k(b, "POST", "/sandboxes/bad%20id")
    err_env(t, r, 404, "a projectId that is not an id (bad id)")


def test_exec(t, b):
    r = k(b, "POST", "/sandboxes/%s/exec" % PROJ, {"command": "echo out; echo err >&2; exit 5"})
    t.eq(kd(r), {"stdout": "out\n", "stderr": "err\n", "exitCode": 5}, "stdout, stderr and exitCode 5 apart", r)
    r = k(b, "POST", "/sandboxes/%s/exec" % PROJ, {"command": "echo hi", "stream": True})
    err_env(t, r, 400, "stream: true (not offered)")
    t.ok("stream" in (r.get("error") or ""), "the error names stream", r)
    for body, word in (({}, "command"), ({"command": 1}, "command"), ({"command": "x", "stream": "no"}, "stream"),
                       ({"command": "x", "cwd": "/"}, "cwd")):
        r = k(b, "POST", "/sandboxes/%s/exec" % PROJ, body)
        err_env(t, r, 400, "exec %s" % body)
        t.ok(harness.names_field(r.get("error"), word), "the error names %s" % word, r)
    r = k(b, "POST", "/sandboxes/%s/exec" % PROJ, raw=b"echo hi", headers={"Content-Type": "text/plain"})
    err_env(t, r, 400, "a body that is not JSON")
    r = k(b, "POST", "/sandboxes/nosuch/exec", {"command": "true"})
    err_env(t, r, 404, "exec in a project that was never created")


def test_clone(t, b):
    r = k(b, "POST", "/sandboxes/%s/clone" % PROJ, {"repoUrl": "/workspace/origin.git"})
    ok_env(t, r, "clone without directory")
    t.eq(kd(r).get("directory"), "/workspace/origin", "directory defaults to /workspace/<repository name> (native)", r)
    t.eq(sh(b, "cat /workspace/origin/README.md"), "kapin\n", "the clone is there", None)
    r = k(b, "POST", "/sandboxes/%s/clone" % PROJ, {"repoUrl": "/workspace/origin.git",
                                                     "directory": "/workspace/repo"})
    err_env(t, r, 400, "clone into a directory that is not empty")
    t.ok("already exists" in (r.get("error") or ""), "with git's 'already exists' message", r)
    r = k(b, "POST", "/sandboxes/%s/clone" % PROJ, {"directory": "/workspace/x"})
    err_env(t, r, 400, "clone without repoUrl")
    t.ok(harness.names_field(r.get("error"), "repoUrl"), "the error names repoUrl", r)
    r = k(b, "POST", "/sandboxes/%s/clone" % PROJ, {"repoUrl": "--upload-pack=touch /workspace/pwned",
                                                     "directory": "/workspace/inj"})
    err_env(t, r, 400, "a repoUrl that looks like an option (taken as a repository that does not exist)")
    r = k(b, "POST", "/sandboxes/%s/clone" % PROJ, {"repoUrl": ""})
    err_env(t, r, 400, "an empty repoUrl")
    t.ok(harness.names_field(r.get("error"), "repoUrl") and "repo_url" not in r.get("error", ""),
         "the error names repoUrl (the kapin field), not the native repo_url", r)
    t.eq(sh(b, "ls /workspace | grep -c pwned || true"), "0\n", "no option injection ran", None)


def test_files(t, b):
    text = "ünïcode ✓\n"
    r = k(b, "PUT", "/sandboxes/%s/files/workspace/repo/../u.txt" % PROJ, {"content": text})
    ok_env(t, r, "PUT a unicode text file")
    r = k(b, "GET", "/sandboxes/%s/files/workspace/u.txt" % PROJ)
    t.eq(kd(r).get("content"), text, "GET gives the same text back", r)
    t.eq(b.get("/v1/sandboxes/%s/files/workspace/u.txt" % PROJ).raw, text.encode(), "as UTF-8 bytes on disk", None)
    r = k(b, "GET", "/sandboxes/%s/files/workspace/nope.txt" % PROJ)
    err_env(t, r, 404, "GET of a missing file")
    r = k(b, "PUT", "/sandboxes/%s/files/workspace/no/such/dir/f.txt" % PROJ, {"content": "x"})
    err_env(t, r, 404, "PUT into a directory that does not exist (parents are not made, as natively)")
    r = k(b, "GET", "/sandboxes/%s/files/workspace" % PROJ)
    err_env(t, r, 400, "GET of a directory")
    r = k(b, "GET", "/sandboxes/%s/files/" % PROJ)
    err_env(t, r, 400, "GET without a path")
    r = k(b, "PUT", "/sandboxes/%s/files/workspace/a.txt" % PROJ, {"content": "x", "encoding": "base64"})
    err_env(t, r, 400, "PUT with a field the reference does not have (encoding)")
    r = k(b, "PUT", "/sandboxes/%s/files/workspace/a.txt" % PROJ, {"text": "x"})
    err_env(t, r, 400, "PUT without content")
    sh(b, "printf '\\377\\376' > /workspace/bin.dat")
    r = k(b, "GET", "/sandboxes/%s/files/workspace/bin.dat" % PROJ)
    err_env(t, r, 400, "GET of a file that is not UTF-8")
    r = k(b, "GET", "/sandboxes/%s/files/../../../../etc/hostname" % PROJ)
    t.ok(r.status != 200 or kd(r).get("content", "").strip() == "sandbox",
         "a path with .. reads inside the sandbox only", r)
    r = k(b, "DELETE", "/sandboxes/%s/files/workspace/u.txt" % PROJ)
    err_env(t, r, 404, "DELETE of a file (not in the reference)")


def test_ls(t, b):
    r = k(b, "GET", "/sandboxes/%s/ls" % PROJ)
    ok_env(t, r, "ls without path")
    t.eq(kd(r).get("path"), "/workspace", "path defaults to /workspace", r)
    sh(b, "mkdir -p \"/workspace/it's here\" && touch \"/workspace/it's here/f1\"")
    r = k(b, "GET", "/sandboxes/%s/ls?path=/workspace/it%%27s%%20here" % PROJ)
    ok_env(t, r, "ls of a directory whose name has a quote and a space")
    t.ok(" f1\n" in (kd(r).get("listing") or ""), "its listing shows f1", r)
    r = k(b, "GET", "/sandboxes/%s/ls?path=%%2Fworkspace%%3B%%20touch%%20%%2Fworkspace%%2Fpwned2" % PROJ)
    err_env(t, r, 404, "ls of '/workspace; touch /workspace/pwned2'")
    t.eq(sh(b, "ls /workspace | grep -c pwned2 || true"), "0\n", "the path was not run as a command", None)
    r = k(b, "GET", "/sandboxes/%s/ls?path=-R" % PROJ)
    err_env(t, r, 404, "ls of '-R' (a path, not an option)")
    r = k(b, "GET", "/sandboxes/%s/ls?path=repo" % PROJ)
    ok_env(t, r, "ls of a relative path (taken in /workspace)")
    t.ok(" README.md\n" in (kd(r).get("listing") or ""), "it lists /workspace/repo", r)


def test_delete_kills_processes(t, b):
    r = b.post("/v1/sandboxes/%s/processes" % PROJ, {"command": "sleep 1000"})
    t.eq(r.status, 201, "a native background process is running", r)
    proc = r.get("id")
    out = sh(b, "sleep 999 & nohup sleep 998 >/dev/null 2>&1 & echo started")
    t.eq(out, "started\n", "exec left two sleeps running in the background", None)
    sh(b, "cd /tmp && export KAPIN_X=1")
    t.eq(harness.wait_until(lambda: sh(b, "pgrep -c -x sleep") == "3\n", 10), True, "three sleeps run", None)
    r = k(b, "DELETE", "/sandboxes/%s" % PROJ)
    t.eq(r.body, doc_json(DOC_DELETE_RESPONSE), "DELETE answers the documented cleanup", r)
    t.ok(harness.wait_until(lambda: sh(b, "pgrep -c -x sleep || true") == "0\n", 5),
         "no sleep is left: all processes terminated", None)
    p = harness.wait_until(lambda: (lambda p: p if p.get("status") == "exited" else None)(
        b.get("/v1/sandboxes/%s/processes/%s" % (PROJ, proc))), 5) or b.get(
        "/v1/sandboxes/%s/processes/%s" % (PROJ, proc))
    t.ok(p.get("status") == "exited" and p.get("signal") == "KILL", "the native process was killed (KILL)", p)
    t.eq(sh(b, "pwd; echo ${KAPIN_X:-unset}"), "/workspace\nunset\n",
         "exec works after and starts in a fresh shell (/workspace, no old exports)", None)
    r = k(b, "DELETE", "/sandboxes/nosuch")
    err_env(t, r, 404, "DELETE of a project that was never created")


def test_cors(t, b):
    r = k(b, "OPTIONS", "/sandboxes/%s/exec" % PROJ, tenant=None,
          headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                   "Access-Control-Request-Headers": "content-type"})
    t.ok(200 <= r.status < 300, "a preflight (OPTIONS, no token) answers 2xx (%d)" % r.status, r)
    h = r.headers
    t.eq(h.get("access-control-allow-origin"), "*", "Access-Control-Allow-Origin: * (wildcard, as documented)", r)
    methods = {m.strip() for m in h.get("access-control-allow-methods", "").split(",")}
    t.ok({"GET", "POST", "PUT", "DELETE", "OPTIONS"} <= methods, "it allows GET, POST, PUT, DELETE, OPTIONS", r)
    allowed = h.get("access-control-allow-headers", "").lower()
    t.ok("content-type" in allowed and "authorization" in allowed, "it allows Content-Type and Authorization", r)
    for r, desc in ((k(b, "POST", "/sandboxes/%s" % PROJ, headers={"Origin": "https://app.example"}), "a success"),
                    (k(b, "GET", "/sandboxes/%s/files/nope" % PROJ), "an error"),
                    (k(b, "GET", "/sandboxes/%s" % PROJ, tenant=None), "a 401")):
        t.eq(r.headers.get("access-control-allow-origin"), "*", "%s carries Access-Control-Allow-Origin: *" % desc, r)


def test_auth_and_isolation(t, b):
    r = k(b, "POST", "/sandboxes/%s/exec" % PROJ, {"command": "id"}, tenant=None)
    err_env(t, r, 401, "no token")
    r = k(b, "POST", "/sandboxes/%s/exec" % PROJ, {"command": "id"}, token="wrong-token-wrong-token")
    err_env(t, r, 401, "a wrong token")
    for method, path, body in (("POST", "/exec", {"command": "id"}), ("GET", "/files/workspace/index.js", None),
                               ("PUT", "/files/workspace/bob.txt", {"content": "bob"}), ("GET", "/ls", None),
                               ("POST", "/clone", {"repoUrl": "/workspace/origin.git", "directory": "/workspace/b"}),
                               ("DELETE", "", None)):
        r = k(b, method, "/sandboxes/%s%s" % (PROJ, path), body, tenant="bob")
        err_env(t, r, 404, "bob: %s /sandboxes/%s%s on alice's project" % (method, PROJ, path))
    r = k(b, "POST", "/sandboxes/%s" % PROJ, tenant="bob")
    ok_env(t, r, "bob's POST /sandboxes/%s makes a project of his own" % PROJ)
    r = k(b, "GET", "/sandboxes/%s/files/workspace/index.js" % PROJ, tenant="bob")
    err_env(t, r, 404, "in which alice's index.js does not exist")
    t.eq(b.get("/v1/sandboxes/%s/files/workspace/bob.txt" % PROJ).status, 404,
         "bob's PUT did not land in alice's sandbox", None)


def test_body_limit(t, b):
    head = ("POST %s/sandboxes/%s/exec HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            % (P, PROJ, b.tokens["alice"])).encode()
    chunk = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
    n = len(b.responses)
    r = b.raw_request(head, [b'e\r\n{"command": "x\r\n'] + [chunk] * 20 + [b"0\r\n\r\n"])
    del b.responses[n:]
    if r is not None and r.status >= 400:
        Errors.seen.append(r)
    err_env(t, r, 400, "a chunked body over max_body_bytes")
    t.eq(r.headers.get("access-control-allow-origin") if r else None, "*", "with CORS", r)
    big = b'{"command": "' + b"x" * (1 << 20) + b'"}'
    head = ("POST %s/sandboxes/%s/exec HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
            "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % (P, PROJ, b.tokens["alice"], len(big))).encode()
    n = len(b.responses)
    r = b.raw_request(head, [big[i:i + 65536] for i in range(0, len(big), 65536)])
    del b.responses[n:]
    err_env(t, r, 400, "a body whose Content-Length is over max_body_bytes (refused before it is read)")
    t.eq(r.headers.get("access-control-allow-origin") if r else None, "*", "with CORS", r)


def test_routes(t, b):
    for method, path in (("GET", "/sandboxes/%s" % PROJ), ("PUT", "/sandboxes/%s" % PROJ),
                         ("GET", "/sandboxes/%s/exec" % PROJ), ("POST", "/sandboxes/%s/ls" % PROJ),
                         ("POST", "/sandboxes/%s/files/workspace/a" % PROJ), ("GET", "/sandboxes"),
                         ("GET", "/"), ("POST", "/sandboxes/%s/nope" % PROJ), ("POST", "/sandboxes/%s/exec/x" % PROJ)):
        r = k(b, method, path, raw=b"{}", headers={"Content-Type": "application/json"})
        err_env(t, r, 404, "%s %s (not in the reference)" % (method, path))


def test_envelopes(t, b):
    bad = [r for r in Errors.seen if shape(r.body) != shape(doc_json(DOC_ERROR))
           or "application/json" not in r.headers.get("content-type", "")
           or r.status not in (400, 401, 404, 500)]
    t.ok(not bad, "all %d kapin error answers were JSON {success: false, error} with 400, 401, 404 or 500"
         % len(Errors.seen), "\n\n".join(str(r) for r in bad[:5]))
    t.ok(not [r for r in Errors.seen if r.status == 500], "no 500 among them", None)


def test_compat_root(t):
    """A broker with compat_root = kapin serves the surface at / too."""
    b = harness.Broker(t, config={"compat_root": "kapin"}, name="rooted broker")
    try:
        if not b.start():
            return
        r = curl(b, DOC_CURL_CREATE, "", record=False)
        ok_env(t, r, "compat_root = kapin: the document's curl POST /sandboxes/test-project at the root")
        t.eq(kd(r).get("projectId"), "test-project", "it made test-project", r)
        r = curl(b, DOC_CURL_EXEC, "", record=False)
        t.eq(kd(r), {"stdout": "Hello\n", "stderr": "", "exitCode": 0}, "the document's curl exec at the root", r)
        r = k(b, "OPTIONS", "/sandboxes/test-project", tenant=None, prefix="")
        t.eq(r.headers.get("access-control-allow-origin"), "*", "a preflight at the root has CORS", r)
        r = b.get("/v1/health", tenant=None)
        t.eq((r.status, r.get("status")), (200, "ok"), "/v1/health is still the native one", r)
        r = b.get("/v1/sandboxes")
        t.eq([s.get("id") for s in r.get("sandboxes") or []], ["test-project"], "/v1/sandboxes lists the project", r)
        r = b.exec("test-project", "echo native")
        t.eq(r.get("stdout"), "native\n", "native exec in it still works", r)
        r = b.get("/v1/nope")
        t.ok(r.status == 404 and harness.error_shape_ok(r.body), "an unknown /v1 route is a native 404", r)
        r = k(b, "POST", "/compat/kapin/sandboxes/test-project/exec", {"command": "echo prefixed"}, prefix="")
        t.eq(kd(r).get("stdout"), "prefixed\n", "/compat/kapin/… still works", r)
        r = b.post("/compat/acontext/sandbox/test-project/exec", {"command": "echo other"})
        t.eq(r.get("stdout"), "other\n", "and so does another surface under its prefix", r)
    finally:
        b.teardown()


if __name__ == "__main__":
    harness.require_ready()
    tap = harness.Tap()
    broker = harness.Broker(tap)
    try:
        if broker.start():
            for fn in (test_doc_curl, test_doc_endpoints, test_get_or_create, test_exec, test_clone, test_files,
                       test_ls, test_delete_kills_processes, test_cors, test_auth_and_isolation, test_body_limit, test_routes,
                       test_envelopes):
                if not broker.alive():
                    tap.ok(False, "broker is running before %s" % fn.__name__)
                    break
                harness.run_test(tap, fn, broker)
    finally:
        broker.teardown()
    harness.run_test(tap, test_compat_root)
    tap.done()
