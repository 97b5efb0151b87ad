#!/usr/bin/env python3
"""test_compat_lifecycle.py - the lifecycle compatibility surface
(/compat/lifecycle, docs/compat.md "lifecycle"): every curl example of
lifecycle-session-api.md replayed as written there (method, path, headers
and body; only the base URL, the token and ids substituted), the answers'
shapes and status codes, and what each endpoint does: sleepAfter/keepAlive
as expiry (and sleepAfter as an idle timer), exec with options.cwd/env/
timeout, the three ways of naming a session and their precedence, state kept
by a session, the bucket endpoints' validation (the mount itself is wired by
the native mounts module), tenant isolation, and compat_root = lifecycle
serving the surface at / while /v1 still works.

The contract is the reference document, docs/compat.md and issue 7."""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import iso_to_epoch, wait_until  # noqa: E402

PREFIX = "/compat/lifecycle"
MAX_KEEPALIVE = 86400
SEEN = []  # every answer of the surface: (Resp), for the no-500 check


def L(b, method, path, body=None, sid="sb-123", tenant="alice", headers=None, prefix=PREFIX):
    """One request to the surface. body is the text given to curl -d,
    sent byte for byte with the Content-Type the document's examples use."""
    h = {}
    if sid is not None:
        h["x-sandbox-id"] = sid
    raw = None
    if body is not None:
        h["Content-Type"] = "application/json"
        raw = body.encode()
    if headers:
        h.update(headers)
    r = b.request(method, prefix + path if path != "" else prefix, raw=raw, tenant=tenant, headers=h)
    # The surface's errors have the document's flat shape, not the native
    # one the harness checks at teardown: they are checked here instead.
    b.responses[:] = [x for x in b.responses if x is not r]
    SEEN.append(r)
    return r


def err_ok(r, status, keys=("sandboxId",), code=None):
    """The surface's error shape: a flat object with the request's ids and
    "error": "code: message"."""
    body = r.body
    ok = (r.status == status and isinstance(body, dict) and isinstance(body.get("error"), str)
          and set(body) == set(keys) | {"error"}
          and "application/json" in r.headers.get("content-type", ""))
    if ok and code is not None:
        ok = body["error"].startswith(code + ": ")
    return ok


def life(r):
    return iso_to_epoch(r.get("expires_at")) - iso_to_epoch(r.get("created_at"))


def native_exists(b, sid, tenant="alice"):
    return b.get("/v1/sandboxes/" + sid, tenant=tenant).status == 200


# --- 1. /lifecycle ----------------------------------------------------------------


def test_lifecycle_examples(t, b):
    # The first example, as written.
    r = L(b, "POST", "/lifecycle", '{"options":{"sleepAfter":"5m","keepAlive":true}}')
    t.eq(r.status, 201, "POST /lifecycle (doc example) creates sb-123: 201", r)
    t.eq(r.get("sandboxId"), "sb-123", "its answer names sandboxId sb-123", r)
    t.ok(r.get("created") is True and r.get("keepAlive") is True and r.get("status") == "running",
         "created true, keepAlive true, status running", r)
    t.ok(abs(life(r) - MAX_KEEPALIVE) < 5,
         "keepAlive: the sandbox lives max_keepalive_seconds (%d s), sleepAfter notwithstanding"
         % MAX_KEEPALIVE, r)
    t.ok(native_exists(b, "sb-123"), "the sandbox is the native sandbox sb-123 of the tenant")
    # The second example: the same request to the bare base URL.
    r = L(b, "POST", "", '{"options":{"sleepAfter":"5m","keepAlive":true}}')
    t.eq(r.status, 200, "POST to the bare base URL (doc's second example) answers 200 for the "
         "existing sandbox", r)
    t.ok(r.get("sandboxId") == "sb-123" and r.get("created") is False, "created false", r)


def test_sleep_after(t, b):
    r = L(b, "POST", "/lifecycle", '{"options":{"sleepAfter":"5m"}}', sid="sb-sleep")
    t.eq(r.status, 201, "sleepAfter 5m creates", r)
    t.ok(abs(life(r) - 300) < 3, "sleepAfter \"5m\": expires_at is 300 s after created_at", r)
    t.ok(r.get("sleepAfter") == 300 and r.get("keepAlive") is False, "the answer says 300 and "
         "keepAlive false", r)
    r = L(b, "POST", "/lifecycle", '{"options":{"sleepAfter":"10m"}}', sid="sb-sleep")
    t.ok(r.status == 200 and iso_to_epoch(r.get("expires_at")) - time.time() > 590,
         "POST /lifecycle again with sleepAfter 10m pushes the expiry to 10 min from now", r)
    r = L(b, "POST", "/lifecycle", "", sid="sb-default")
    t.ok(r.status == 201 and abs(life(r) - 600) < 3, "no options: the native default keepalive "
         "(600 s)", r)
    for bad in ['{"options":{"sleepAfter":"5x"}}', '{"options":{"sleepAfter":"0s"}}',
                '{"options":{"sleepAfter":"2d"}}', '{"options":{"keepAlive":"yes"}}',
                '{"options":{"sleepy":1}}', '{"options":[]}', '{"opts":{}}', '{"options":']:
        r = L(b, "POST", "/lifecycle", bad, sid="sb-bad")
        t.ok(err_ok(r, 400), "POST /lifecycle %s: 400 in the surface's error shape" % bad, r)
    t.ok(not native_exists(b, "sb-bad"), "none of them created a sandbox")
    for sid in ("sb-sleep", "sb-default"):
        L(b, "DELETE", "/lifecycle", sid=sid)


def test_idle_timer(t, b):
    r = L(b, "POST", "/lifecycle", '{"options":{"sleepAfter":"4s"}}', sid="sb-idle")
    t.eq(r.status, 201, "sleepAfter 4s creates", r)
    t0 = time.monotonic()
    ok = True
    while time.monotonic() - t0 < 9:
        e = L(b, "POST", "/exec", '{"command":"true"}', sid="sb-idle")
        ok = ok and e.status == 200
        time.sleep(1.5)
    t.ok(ok and native_exists(b, "sb-idle"),
         "a sandbox used every 1.5 s outlives its 4 s sleepAfter (9 s later it still runs)")
    gone = wait_until(lambda: not native_exists(b, "sb-idle"), 12, 0.5)
    t.ok(gone, "left idle, it is reaped once sleepAfter passes")
    r = L(b, "POST", "/exec", '{"command":"true"}', sid="sb-idle")
    t.ok(err_ok(r, 404, code="not_found"), "exec on the slept sandbox: 404", r)


# --- 2. /exec ------------------------------------------------------------------------


def test_exec_examples(t, b):
    r = L(b, "POST", "/exec", '{"command":"ls -la"}')
    t.ok(r.status == 200 and r.get("exit_code") == 0 and " .." in (r.get("stdout") or ""),
         "POST /exec ls -la (doc example): 200 with the listing", r)
    t.ok(r.get("sandboxId") == "sb-123" and set(r.body) >= {"stdout", "stderr", "exit_code",
                                                             "duration_ms", "timed_out", "truncated"},
         "the answer is the native exec result plus sandboxId", r)
    body = '''{
    "command": "echo $MY_VAR && pwd",
    "options": {
      "cwd": "/tmp",
      "env": {"MY_VAR": "hello"},
      "timeout": 10000
    }
  }'''
    r = L(b, "POST", "/exec", body)
    t.eq(r.get("stdout"), "hello\n/tmp\n", "exec with options cwd/env (doc example): hello, /tmp", r)
    r = L(b, "POST", "/exec", '{"command":"sleep 5; echo late","options":{"timeout":300}}')
    t.ok(r.status == 200 and r.get("timed_out") is True and r.get("exit_code") == 137
         and r.elapsed < 4, "options.timeout is milliseconds: 300 ms kills a 5 s sleep", r)
    r = L(b, "POST", "/exec", '{"command":"echo $MY_VAR"}')
    t.eq(r.get("stdout"), "\n", "options.env held for that command only", r)
    r = L(b, "POST", "/exec", '{"command":"cd /usr && export K=v"}')
    r = L(b, "POST", "/exec", '{"command":"pwd; echo $K"}')
    t.eq(r.get("stdout"), "/usr\nv\n", "without options.cwd, /exec runs in the sandbox's default "
         "session (state carries over, as natively)", r)
    L(b, "POST", "/exec", '{"command":"cd /workspace"}')
    r = L(b, "POST", "/exec", '{"command":"pwd","options":{"cwd":"/nonexistent"}}')
    t.ok(err_ok(r, 422, code="bad_cwd"), "a cwd that does not exist: 422 bad_cwd", r)
    for bad in ['{}', '{"command":1}', '{"command":"ls","options":{"timeout":"1s"}}',
                '{"command":"ls","options":{"cwd":"tmp"}}', '{"command":"ls","options":{"env":{"1A":"x"}}}',
                '{"command":"ls","timeout":5}', 'not json']:
        r = L(b, "POST", "/exec", bad)
        t.ok(err_ok(r, 400), "POST /exec %s: 400" % bad, r)


# --- 3. and 4. sessions ------------------------------------------------------------------


def test_session_examples(t, b):
    r = L(b, "POST", "/session?session_id=s1", '''{
    "session": {
      "id": "s1",
      "env": {"HELLO": "WORLD"},
      "cwd": "/tmp"
    }
  }''')
    t.eq(r.status, 201, "POST /session way 1 (session.id in the body): 201", r)
    t.ok(r.get("sandboxId") == "sb-123" and r.get("sessionId") == "s1" and r.get("cwd") == "/tmp",
         "answer: sandboxId, sessionId s1, cwd /tmp", r)
    r = L(b, "POST", "/session?session_id=s2", '''{
    "session": {
      "env": {"HELLO": "QUERY_ID"},
      "cwd": "/tmp"
    }
  }''')
    t.ok(r.status == 201 and r.get("sessionId") == "s2", "way 2 (?session_id, no id in the body): "
         "session s2", r)
    r = L(b, "POST", "/session?session_id=s3", '''{
    "env": {"HELLO": "WORLD"},
    "cwd": "/workspace"
  }''')
    t.ok(r.status == 201 and r.get("sessionId") == "s3" and r.get("cwd") == "/workspace",
         "way 3 (the simplified body): session s3 in /workspace", r)
    r = L(b, "GET", "/session?session_id=s1")
    t.ok(r.status == 200 and r.get("sessionId") == "s1" and r.get("cwd") == "/tmp"
         and (r.get("env") or {}).get("HELLO") == "WORLD", "GET /session?session_id=s1 (doc "
         "example): its cwd and env", r)
    r = L(b, "POST", "/session/exec", '''{
    "sessionId": "s1",
    "command": "pwd"
  }''')
    t.ok(r.status == 200 and r.get("stdout") == "/tmp\n" and r.get("sessionId") == "s1",
         "POST /session/exec with body sessionId (doc example): pwd is /tmp", r)
    r = L(b, "POST", "/session/exec?session_id=s1", '''{
    "command": "ls -la"
  }''')
    t.ok(r.status == 200 and r.get("exit_code") == 0, "POST /session/exec?session_id=s1 ls -la "
         "(doc example): 200", r)
    r = L(b, "POST", "/session/exec?session_id=s1", '''{
    "command": "echo $HELLO && pwd",
    "options": {
      "cwd": "/workspace",
      "env": {"HELLO": "SESSION_VAR"},
      "timeout": 5000
    }
  }''')
    t.eq(r.get("stdout"), "SESSION_VAR\n/workspace\n", "session exec with options (doc example): "
         "SESSION_VAR, /workspace", r)
    r = L(b, "POST", "/session/exec?session_id=s1", '{"command":"echo $HELLO && pwd"}')
    t.eq(r.get("stdout"), "WORLD\n/tmp\n", "options.cwd and options.env held for that command "
         "only: the session is back to WORLD in /tmp", r)
    r = L(b, "POST", "/session/exec?session_id=s2", '{"command":"echo $HELLO"}')
    t.eq(r.get("stdout"), "QUERY_ID\n", "session s2 has its own env", r)
    r = L(b, "DELETE", "/session?session_id=s1")
    t.ok(r.status == 200 and r.get("sessionId") == "s1", "DELETE /session?session_id=s1 (doc "
         "example): 200", r)
    r = L(b, "GET", "/session?session_id=s1")
    t.ok(err_ok(r, 404, ("sandboxId", "sessionId"), "not_found"), "the deleted session: 404 "
         "{sandboxId, sessionId, error}", r)
    r = L(b, "POST", "/session/exec?session_id=s1", '{"command":"pwd"}')
    t.ok(err_ok(r, 404, ("sandboxId", "sessionId"), "not_found"), "exec in it: 404", r)
    r = L(b, "GET", "/session")
    ids = sorted(s.get("id") for s in r.get("sessions") or [])
    t.ok(r.status == 200 and "s2" in ids and "s3" in ids and "s1" not in ids,
         "GET /session without an id lists the sessions (the native list)", r)
    for s in ("s2", "s3"):
        L(b, "DELETE", "/session?session_id=" + s)


def test_session_precedence(t, b):
    r = L(b, "POST", "/session?session_id=from-query",
          '{"session":{"id":"from-body","cwd":"/usr"}}')
    t.ok(r.status == 201 and r.get("sessionId") == "from-body",
         "body session.id wins over ?session_id", r)
    r = L(b, "GET", "/session?session_id=from-query")
    t.ok(err_ok(r, 404, ("sandboxId", "sessionId")), "no session was made under the query's id", r)
    r = L(b, "POST", "/session", '{"cwd":"/tmp"}')
    t.ok(r.status == 201 and str(r.get("sessionId", "")).startswith("ses-"),
         "neither: a generated id (as natively)", r)
    gen = r.get("sessionId")
    r = L(b, "POST", "/session?session_id=from-body", '{}')
    t.ok(err_ok(r, 409, ("sandboxId", "sessionId"), "exists"), "an id in use: 409 exists", r)
    r = L(b, "POST", "/session", '{"session":{"cwd":"/tmp"},"cwd":"/usr"}')
    t.ok(err_ok(r, 400, ("sandboxId", "sessionId")), "a session object plus top-level options: 400",
         r)
    # /session/exec: body.sessionId > body.session_id > query.session_id.
    for name, cwd in (("pa", "/tmp"), ("pb", "/usr"), ("pc", "/etc")):
        L(b, "POST", "/session?session_id=" + name, '{"cwd":"%s"}' % cwd)
    r = L(b, "POST", "/session/exec?session_id=pc",
          '{"sessionId":"pa","session_id":"pb","command":"pwd"}')
    t.ok(r.get("stdout") == "/tmp\n" and r.get("sessionId") == "pa", "body.sessionId first", r)
    r = L(b, "POST", "/session/exec?session_id=pc", '{"session_id":"pb","command":"pwd"}')
    t.ok(r.get("stdout") == "/usr\n" and r.get("sessionId") == "pb", "then body.session_id", r)
    r = L(b, "POST", "/session/exec?session_id=pc", '{"command":"pwd"}')
    t.ok(r.get("stdout") == "/etc\n" and r.get("sessionId") == "pc", "then ?session_id", r)
    r = L(b, "POST", "/session/exec", '{"command":"pwd"}')
    t.ok(err_ok(r, 400, ("sandboxId", "sessionId")), "no session at all: 400", r)
    # A session keeps its state between commands.
    L(b, "POST", "/session/exec?session_id=pa", '{"command":"cd /var && export KEPT=yes && f() { echo fn; }"}')
    r = L(b, "POST", "/session/exec?session_id=pa", '{"command":"pwd; echo $KEPT; f"}')
    t.eq(r.get("stdout"), "/var\nyes\nfn\n", "session exec keeps cwd, exports and functions", r)
    r = L(b, "POST", "/session/exec?session_id=pb", '{"command":"pwd; echo ${KEPT:-unset}"}')
    t.eq(r.get("stdout"), "/usr\nunset\n", "another session does not see them", r)
    odd = "/tmp/it's $(x)"
    L(b, "POST", "/exec", json.dumps({"command": "mkdir -p \"$D\"", "options": {"env": {"D": odd}}}))
    r = L(b, "POST", "/session/exec?session_id=pa",
          json.dumps({"command": "pwd; (exit 7)", "options": {"cwd": odd}}))
    t.ok(r.get("stdout") == "/tmp/it's $(x)\n" and r.get("exit_code") == 7,
         "options.cwd with a quote and $(...) in its name is taken literally; the exit code "
         "of the command comes back", r)
    r = L(b, "POST", "/session/exec?session_id=pa", '{"command":"pwd; echo $KEPT"}')
    t.eq(r.get("stdout"), "/var\nyes\n", "and the session is back in its own directory", r)
    r = L(b, "POST", "/session/exec?session_id=pa", '{"command":"exit 3"}')
    t.ok(r.get("exit_code") == 3, "exit status comes back", r)
    r = L(b, "POST", "/session/exec?session_id=pa", '{"command":"pwd","options":{"cwd":"/nope"}}')
    t.ok(err_ok(r, 422, ("sandboxId", "sessionId"), "bad_cwd"), "a missing options.cwd: 422 "
         "bad_cwd", r)
    for s in ("from-body", gen, "pa", "pb", "pc"):
        L(b, "DELETE", "/session?session_id=%s" % s)


def test_scenario_one(t, b):
    """Section 6, scenario 1, as written (sb-123 already exists)."""
    r = L(b, "POST", "/lifecycle", '{"options":{"keepAlive":true}}')
    t.ok(r.status == 200, "scenario 1 step 1: POST /lifecycle keepAlive", r)
    r = L(b, "POST", "/session?session_id=my-session", '''{
    "session": {
      "cwd": "/workspace",
      "env": {"PROJECT": "my-project"}
    }
  }''')
    t.ok(r.status == 201 and r.get("sessionId") == "my-session", "step 2: session my-session", r)
    r = L(b, "POST", "/session/exec?session_id=my-session", '{"command": "pwd"}')
    t.eq(r.get("stdout"), "/workspace\n", "step 3: pwd prints /workspace (as documented)", r)
    r = L(b, "POST", "/session/exec?session_id=my-session", '{"command": "echo $PROJECT"}')
    t.eq(r.get("stdout"), "my-project\n", "echo $PROJECT prints my-project (as documented)", r)
    r = L(b, "DELETE", "/session?session_id=my-session")
    t.eq(r.status, 200, "step 4: delete the session", r)


# --- 5. buckets ----------------------------------------------------------------------------

MOUNT_IDS = ("sandboxId", "sessionId", "bucket", "mountPath")
ENDPOINT = "https://YOUR_ACCOUNT_ID.r2.cloudflarestorage.com"


def mount_not_built(r):
    """The document's examples name an R2 endpoint this machine cannot
    reach; the test broker only allows 127.0.0.1 (mount_endpoint_hosts), so
    a request that passes the surface's validation reaches the native
    mounts module and is refused there, in the document's error shape."""
    return err_ok(r, 403, MOUNT_IDS, "endpoint_not_allowed")


def not_mounted(r, keys=("sandboxId", "sessionId", "mountPath")):
    """An unmount of a path with no mount: the native 404, in the document's shape."""
    return err_ok(r, 404, keys, "not_found")


def test_mount_examples(t, b):
    L(b, "POST", "/session?session_id=s1", '{"cwd":"/tmp"}')
    basic = '''{
    "bucket": "my-r2-bucket",
    "mountPath": "/data",
    "options": {
      "endpoint": "https://YOUR_ACCOUNT_ID.r2.cloudflarestorage.com"
    }
  }'''
    r = L(b, "POST", "/mount-bucket", basic)
    t.ok(err_ok(r, 400, MOUNT_IDS, "MissingCredentialsError"),
         "basic mount (doc example) with no credentials anywhere: 400 MissingCredentialsError", r)
    t.ok(r.get("sandboxId") == "sb-123" and r.get("sessionId") is None
         and r.get("bucket") == "my-r2-bucket" and r.get("mountPath") == "/data",
         "the error has the document's shape {sandboxId, sessionId: null, bucket, mountPath, "
         "error}", r)
    r = L(b, "POST", "/mount-bucket", '''{
    "bucket": "my-r2-bucket",
    "mountPath": "/data",
    "options": {
      "endpoint": "https://YOUR_ACCOUNT_ID.r2.cloudflarestorage.com",
      "provider": "r2",
      "credentials": {
        "accessKeyId": "your-access-key-id",
        "secretAccessKey": "your-secret-access-key"
      }
    }
  }''')
    t.ok(mount_not_built(r), "mount with credentials (doc example): passes validation", r)
    t.ok("your-secret-access-key" not in r.raw.decode(), "the secret is never echoed", r)
    # Credentials from the sandbox env, as the document's env fallback.
    e = b.post("/v1/sandboxes/sb-123/env", {"R2_ACCESS_KEY_ID": "k", "R2_SECRET_ACCESS_KEY": "s"})
    t.eq(e.status, 200, "set R2_* in the sandbox env", e)
    r = L(b, "POST", "/mount-bucket", basic)
    t.ok(mount_not_built(r), "basic mount (doc example) with R2_* in the sandbox env: passes "
         "validation", r)
    r = L(b, "POST", "/mount-bucket", '''{
    "bucket": "my-r2-bucket",
    "mountPath": "/data",
    "options": {
      "endpoint": "https://YOUR_ACCOUNT_ID.r2.cloudflarestorage.com",
      "readOnly": true
    }
  }''')
    t.ok(mount_not_built(r), "read-only mount (doc example): passes validation", r)
    r = L(b, "POST", "/mount-bucket", '''{
    "bucket": "my-r2-bucket",
    "mountPath": "/data",
    "sessionId": "s1",
    "options": {
      "endpoint": "https://YOUR_ACCOUNT_ID.r2.cloudflarestorage.com"
    }
  }''')
    t.ok(mount_not_built(r) and r.get("sessionId") == "s1", "mount in session s1 (doc example): "
         "passes validation, sessionId echoed", r)
    r = L(b, "DELETE", "/unmount-bucket?mountPath=/data")
    t.ok(not_mounted(r), "DELETE /unmount-bucket?mountPath=/data (doc example): nothing mounted there, 404", r)
    t.ok(r.get("mountPath") == "/data" and r.get("sessionId") is None, "error names mountPath", r)
    r = L(b, "POST", "/unmount-bucket", '''{
    "mountPath": "/data"
  }''')
    t.ok(not_mounted(r), "POST /unmount-bucket with a body (doc example): reaches the mounts module", r)
    r = L(b, "DELETE", "/unmount-bucket?mountPath=/data&sessionId=s1")
    t.ok(not_mounted(r) and r.get("sessionId") == "s1",
         "DELETE /unmount-bucket in session s1 (doc example): passes validation", r)
    r = L(b, "DELETE", "/unmount-bucket?path=/data")
    t.ok(not_mounted(r) and r.get("mountPath") == "/data",
         "path is an alias of mountPath", r)
    b.post("/v1/sandboxes/sb-123/env", {"R2_ACCESS_KEY_ID": None, "R2_SECRET_ACCESS_KEY": None})


EXEC_KEYS = {"sandboxId", "stdout", "stderr", "exit_code", "duration_ms", "timed_out", "truncated"}


def test_scenarios_two_and_three(t, b):
    """Section 6, scenarios 2 and 3, as written. The R2 endpoint they name
    is refused here (allow-list), so /data stays absent and the commands on
    it fail inside the sandbox: their answers are still the documented exec
    results. test_real_mount does the same against a real S3 server."""
    L(b, "POST", "/session?session_id=s1", '{"cwd":"/tmp"}')  # harmless if it exists
    r = L(b, "POST", "/lifecycle", '{"options":{"keepAlive":true}}')
    t.eq(r.status, 200, "scenario 2 step 1", r)
    r = L(b, "POST", "/mount-bucket", '''{
    "bucket": "my-r2-bucket",
    "mountPath": "/data",
    "options": {
      "endpoint": "https://YOUR_ACCOUNT_ID.r2.cloudflarestorage.com"
    }
  }''')
    t.ok(r.status in (400, 403) and set(r.body) == set(MOUNT_IDS) | {"error"}, "step 2: the "
         "mount answer has the document's error shape", r)
    for cmd in ('{"command": "ls -la /data"}', '{"command": "cat /data/my-file.txt"}',
                '{"command": "echo \\"Hello from sandbox\\" > /data/output.txt"}'):
        r = L(b, "POST", "/exec", cmd)
        t.ok(r.status == 200 and set(r.body) == EXEC_KEYS and r.get("exit_code") != 0,
             "scenario 2 exec %s: 200 with the exec result (no /data here)" % cmd, r)
    r = L(b, "DELETE", "/unmount-bucket?mountPath=/data")
    t.ok(r.status == 404 and set(r.body) == {"sandboxId", "sessionId", "mountPath", "error"},
         "step 6: unmount answer in the document's shape", r)
    r = L(b, "POST", "/session?session_id=data-processing", '''{
    "session": {
      "cwd": "/workspace",
      "env": {"BUCKET_PATH": "/data"}
    }
  }''')
    t.eq(r.status, 201, "scenario 3 step 2: session data-processing", r)
    r = L(b, "POST", "/mount-bucket", '''{
    "bucket": "my-r2-bucket",
    "mountPath": "/data",
    "sessionId": "data-processing",
    "options": {
      "endpoint": "https://YOUR_ACCOUNT_ID.r2.cloudflarestorage.com"
    }
  }''')
    t.ok(r.get("sessionId") == "data-processing" and "error" in r.body, "step 3: mount in the "
         "session names it", r)
    r = L(b, "POST", "/session/exec?session_id=data-processing", '{"command": "cd $BUCKET_PATH && ls -la"}')
    t.ok(r.status == 200 and set(r.body) == EXEC_KEYS | {"sessionId"} and "/data" in r.get("stderr", ""),
         "step 4: the session's BUCKET_PATH is /data (cd fails without the mount)", r)
    r = L(b, "DELETE", "/unmount-bucket?mountPath=/data&sessionId=data-processing")
    t.ok(r.status == 404 and r.get("sessionId") == "data-processing", "step 5: unmount in the session", r)
    r = L(b, "DELETE", "/session?session_id=data-processing")
    t.eq(r.status, 200, "step 6: delete the session", r)


def test_real_mount(t, b):
    """Scenario 2 against a real S3-compatible server (s3rver on
    127.0.0.1): mount through the surface, write in the sandbox, read it
    back through S3, unmount."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import test_mounts as tm
    port = tm.free_port()
    if not tm.start_s3rver(t, port):
        return
    try:
        s3 = tm.STATE["s3"]
        t.eq(s3.make_bucket("life-bucket"), 200, "bucket created in s3rver")
        s3.put("life-bucket", "my-file.txt", b"from s3\n")
        r = L(b, "POST", "/mount-bucket", json.dumps({
            "bucket": "life-bucket", "mountPath": "/data",
            "options": {"endpoint": tm.STATE["endpoint"], "provider": "s3",
                        "credentials": {"accessKeyId": tm.AK, "secretAccessKey": tm.S3_SECRET}}}))
        t.ok(r.status == 200 and r.get("mountPath") == "/data" and tm.S3_SECRET not in r.raw.decode(),
             "mount-bucket against s3rver succeeds, the secret is not echoed", r)
        r = L(b, "POST", "/exec", '{"command": "cat /data/my-file.txt"}')
        t.eq(r.get("stdout"), "from s3\n", "the sandbox reads the bucket's file at /data", r)
        r = L(b, "POST", "/exec", '{"command": "echo \\"Hello from sandbox\\" > /data/output.txt"}')
        t.eq(r.get("exit_code"), 0, "the sandbox writes /data/output.txt", r)
        got = harness.wait_until(lambda: s3.get("life-bucket", "output.txt"), 10)
        t.eq(got, b"Hello from sandbox\n", "the file written in the sandbox is in the bucket")
        r = L(b, "DELETE", "/unmount-bucket?mountPath=/data")
        t.eq(r.status, 200, "unmount-bucket", r)
        r = L(b, "POST", "/exec", '{"command": "ls /data | wc -l"}')
        t.eq((r.get("stdout") or "").strip(), "0", "after unmounting, /data is empty again", r)
    finally:
        tm.stop_s3rver()


def test_mount_validation(t, b):
    ok_opts = '"options":{"endpoint":"%s","credentials":{"accessKeyId":"a","secretAccessKey":"b"}}' % ENDPOINT
    cases = [
        ('{"mountPath":"/data",%s}' % ok_opts, "bucket"),
        ('{"bucket":"my-r2-bucket",%s}' % ok_opts, "mountPath"),
        ('{"bucket":"my r2","mountPath":"/data",%s}' % ok_opts, "bucket"),
        ('{"bucket":"b","mountPath":"data",%s}' % ok_opts, "mountPath"),
        ('{"bucket":"b","mountPath":"/",%s}' % ok_opts, "mountPath"),
        ('{"bucket":"b","mountPath":"/data"}', "options.endpoint"),
        ('{"bucket":"b","mountPath":"/data","options":{}}', "options.endpoint"),
        ('{"bucket":"b","mountPath":"/data","options":{"endpoint":"ftp://x"}}', "options.endpoint"),
        ('{"bucket":"b","mountPath":"/data","options":{"endpoint":"%s","provider":"azure"}}' % ENDPOINT,
         "options.provider"),
        ('{"bucket":"b","mountPath":"/data","options":{"endpoint":"%s","credentials":{"accessKeyId":"a"}}}'
         % ENDPOINT, "options.credentials.secretAccessKey"),
        ('{"bucket":"b","mountPath":"/data","options":{"endpoint":"%s","readOnly":"yes"}}' % ENDPOINT,
         "options.readOnly"),
        ('{"bucket":"b","mountPath":"/data","options":{"endpoint":"%s","s3fsOptions":["-o","x"]}}'
         % ENDPOINT, "options.s3fsOptions"),
        ('{"bucket":"b","mountPath":"/data","extra":1,%s}' % ok_opts, "extra"),
    ]
    for body, field in cases:
        r = L(b, "POST", "/mount-bucket", body)
        t.ok(err_ok(r, 400, MOUNT_IDS) and harness.names_field(r.get("error"), field),
             "mount %s: 400 naming %s" % (body[:70], field), r)
    r = L(b, "POST", "/mount-bucket", "{")
    t.ok(err_ok(r, 400, MOUNT_IDS, "invalid_json"), "invalid JSON: 400 invalid_json", r)
    r = L(b, "POST", "/mount-bucket", '{"bucket":"b","mountPath":"/data","sessionId":"nope",%s}' % ok_opts)
    t.ok(err_ok(r, 404, MOUNT_IDS, "not_found"), "an unknown session: 404", r)
    r = L(b, "POST", "/mount-bucket", '{"bucket":"b","mountPath":"/data",%s}' % ok_opts, sid="no-such")
    t.ok(err_ok(r, 404, MOUNT_IDS, "not_found"), "an unknown sandbox: 404", r)
    r = L(b, "GET", "/mount-bucket")
    t.ok(err_ok(r, 405) and r.headers.get("allow") == "POST", "GET /mount-bucket: 405, Allow: POST",
         r)
    for path, desc in (("/unmount-bucket", "no mountPath"), ("/unmount-bucket?mountPath=data", "a relative one")):
        r = L(b, "DELETE", path)
        t.ok(err_ok(r, 400, ("sandboxId", "sessionId", "mountPath")), "unmount with %s: 400" % desc, r)
    r = L(b, "POST", "/unmount-bucket", '{"mountPath":"/data","bogus":1}')
    t.ok(err_ok(r, 400, ("sandboxId", "sessionId", "mountPath")), "unmount with an unknown field: 400",
         r)
    r = L(b, "DELETE", "/unmount-bucket?mountPath=/data&sessionId=nope")
    t.ok(err_ok(r, 404, ("sandboxId", "sessionId", "mountPath"), "not_found"), "unmount in an unknown "
         "session: 404", r)
    r = L(b, "DELETE", "/unmount-bucket?mountPath=/data", sid="no-such")
    t.ok(err_ok(r, 404, ("sandboxId", "sessionId", "mountPath"), "not_found"), "unmount on an unknown "
         "sandbox: 404", r)
    r = L(b, "PUT", "/unmount-bucket?mountPath=/data")
    t.ok(err_ok(r, 405), "PUT /unmount-bucket: 405", r)


# --- errors, isolation, destroy -----------------------------------------------------------


def test_errors_and_isolation(t, b):
    r = L(b, "POST", "/exec", '{"command":"ls"}', tenant=None)
    t.ok(err_ok(r, 401, code="unauthorized"), "no token: 401 in the surface's shape", r)
    r = L(b, "POST", "/exec", '{"command":"ls"}', sid=None)
    t.ok(err_ok(r, 400) and r.get("sandboxId") is None and "x-sandbox-id" in r.get("error", ""),
         "no x-sandbox-id: 400 naming the header", r)
    r = L(b, "POST", "/exec", '{"command":"ls"}', sid="../etc")
    t.ok(err_ok(r, 400), "an invalid x-sandbox-id: 400", r)
    r = L(b, "GET", "/nowhere")
    t.ok(err_ok(r, 404, code="not_found"), "unknown path: 404", r)
    r = L(b, "GET", "/exec")
    t.ok(err_ok(r, 405, code="method_not_allowed") and r.headers.get("allow") == "POST",
         "GET /exec: 405 with Allow", r)
    r = L(b, "PUT", "/lifecycle")
    t.ok(err_ok(r, 405) and r.headers.get("allow") == "POST, DELETE", "PUT /lifecycle: 405", r)
    r = L(b, "POST", "/exec", '{"command":"ls"}', sid="missing-box")
    t.ok(err_ok(r, 404, code="not_found"), "an unknown sandbox: 404", r)
    # bob, with alice's sandbox id
    L(b, "POST", "/exec", '{"command":"echo alice > /workspace/mine"}')
    for method, path, body, keys in (
            ("POST", "/exec", '{"command":"ls"}', ("sandboxId",)),
            ("GET", "/session", None, ("sandboxId", "sessionId")),
            ("POST", "/session?session_id=x", "{}", ("sandboxId", "sessionId")),
            ("DELETE", "/lifecycle", None, ("sandboxId",)),
            ("DELETE", "/unmount-bucket?mountPath=/data", None, ("sandboxId", "sessionId", "mountPath"))):
        r = L(b, method, path, body, tenant="bob")
        t.ok(err_ok(r, 404, keys, "not_found"), "bob %s %s on alice's sb-123: the surface's 404" %
             (method, path), r)
    r = L(b, "POST", "/lifecycle", "{}", tenant="bob")
    t.eq(r.status, 201, "bob's own sb-123 is a different sandbox", r)
    r = L(b, "POST", "/exec", '{"command":"cat /workspace/mine 2>&1 || echo none"}', tenant="bob")
    t.ok("alice" not in (r.get("stdout") or ""), "bob's sb-123 does not see alice's file", r)
    L(b, "DELETE", "/lifecycle", tenant="bob")
    r = L(b, "POST", "/exec", '{"command":"cat /workspace/mine"}')
    t.eq(r.get("stdout"), "alice\n", "alice's sandbox is untouched", r)


def test_destroy(t, b):
    r = L(b, "DELETE", "/lifecycle")
    t.ok(r.status == 200 and r.get("sandboxId") == "sb-123" and r.get("destroyed") is True,
         "DELETE /lifecycle (doc example): 200, destroyed", r)
    t.ok(not native_exists(b, "sb-123"), "the native sandbox is gone")
    r = L(b, "DELETE", "/lifecycle")
    t.ok(err_ok(r, 404, code="not_found"), "again: 404 (as natively)", r)


def test_no_internal_errors(t, b):
    bad = [r for r in SEEN if r.status == 500]
    t.ok(not bad, "no 500 from the surface in %d requests" % len(SEEN), "\n".join(map(str, bad[:5])))


def test_compat_root(t):
    """compat_root = lifecycle: the surface answers at / and /v1 is native."""
    b = harness.Broker(t, config={"compat_root": "lifecycle"}, name="root-broker")
    try:
        if not b.start():
            return
        r = L(b, "POST", "", '{"options":{"sleepAfter":"5m","keepAlive":true}}', prefix="")
        t.eq(r.status, 201, "compat_root: the doc's bare-URL POST creates sb-123 at /", r)
        r = L(b, "POST", "/lifecycle", '{"options":{"sleepAfter":"5m","keepAlive":true}}', prefix="")
        t.eq(r.status, 200, "compat_root: POST /lifecycle at the root", r)
        r = L(b, "POST", "/exec", '{"command":"echo root"}', prefix="")
        t.eq(r.get("stdout"), "root\n", "compat_root: POST /exec at the root", r)
        r = b.get("/v1/sandboxes/sb-123")
        t.ok(r.status == 200 and r.get("id") == "sb-123", "compat_root: /v1 still native", r)
        r = b.get("/v1/health", tenant=None)
        t.eq(r.status, 200, "compat_root: /v1/health", r)
        r = L(b, "POST", "/exec", '{"command":"echo prefixed"}')
        t.eq(r.get("stdout"), "prefixed\n", "compat_root: /compat/lifecycle still works", r)
        r = L(b, "DELETE", "/lifecycle", prefix="")
        t.eq(r.status, 200, "compat_root: DELETE /lifecycle", r)
    finally:
        b.teardown()


if __name__ == "__main__":
    harness.require_ready()
    tap = harness.Tap()
    # Bucket endpoints: only this machine (the doc's R2 endpoint is refused
    # in the native module, after the surface's validation).
    broker = harness.Broker(tap, config={"mount_endpoint_hosts": "127.0.0.1"})
    try:
        if broker.start():
            for fn in (test_lifecycle_examples, test_sleep_after, test_exec_examples,
                       test_session_examples, test_session_precedence, test_scenario_one,
                       test_mount_examples, test_scenarios_two_and_three, test_real_mount,
                       test_mount_validation, test_errors_and_isolation,
                       test_idle_timer, test_destroy, test_no_internal_errors):
                if not broker.alive():
                    tap.ok(False, "broker is running before %s" % fn.__name__)
                    break
                harness.run_test(tap, fn, broker)
    finally:
        broker.teardown()
    harness.run_test(tap, test_compat_root)
    tap.done()
