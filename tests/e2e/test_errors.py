#!/usr/bin/env python3
"""test_errors.py - bad requests get clean 4xx answers with the documented
error shape: malformed JSON, unknown fields, wrong types and ranges, bodies
over 1 MiB, bad ids, unknown routes and methods."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import error_shape_ok, names_field  # noqa: E402

SB = "err-box"
EXEC = "/v1/sandboxes/%s/exec" % SB


def expect(t, r, status, code, desc, field=None):
    """Assert status, code, the exact error shape and (if given) that the
    message names field."""
    ok = r.status == status and r.err_code() == code and error_shape_ok(r.body)
    if field is not None:
        ok = ok and names_field(r.err_message(), field)
    t.ok(ok, "%s -> %d %s%s" % (desc, status, code, " naming '%s'" % field if field else ""), r)


def test_setup(t, b):
    r = b.create(id=SB)
    t.eq(r.status, 201, "create a sandbox for exec and PATCH errors", r)


def test_malformed_json(t, b):
    for path, method in [("/v1/sandboxes", "POST"), (EXEC, "POST"), ("/v1/sandboxes/" + SB, "PATCH")]:
        for raw, what in [(b'{"id":', "truncated JSON"), (b"[1,2]", "a JSON array"), (b'"str"', "a JSON string"),
                          (b'{"id":"a"} x', "trailing garbage"), (b'{"command":"\xff"}', "invalid UTF-8")]:
            r = b.request(method, path, raw=raw, headers={"Content-Type": "application/json"})
            expect(t, r, 400, "invalid_json", "%s %s with %s" % (method, path, what))


def test_unknown_fields(t, b):
    r = b.post("/v1/sandboxes", {"id": "u1", "bogus": 1})
    expect(t, r, 400, "invalid_field", "create with unknown field", "bogus")
    r = b.post("/v1/sandboxes", {"limits": {"memory_mb": 256, "disk_gb": 1}})
    expect(t, r, 400, "invalid_field", "create with unknown limits field", "disk_gb")
    r = b.exec(SB, "true", shell="/bin/sh")
    expect(t, r, 400, "invalid_field", "exec with unknown field", "shell")
    r = b.patch("/v1/sandboxes/" + SB, {"keepalive_longer_by_seconds": 10, "color": "red"})
    expect(t, r, 400, "invalid_field", "PATCH with unknown field", "color")
    t.eq(b.get("/v1/sandboxes/u1").status, 404, "a refused create creates nothing")


def test_wrong_types(t, b):
    cases = [
        ({"id": 5}, "id"),
        ({"limits": {"memory_mb": "x"}}, "memory_mb"),
        ({"keepalive_seconds": -1}, "keepalive_seconds"),
        ({"env": {"A": 1}}, "env"),
        ({"env": ["A=1"]}, "env"),
        ({"keepalive_seconds": 0}, "keepalive_seconds"),
        ({"keepalive_seconds": 86401}, "keepalive_seconds"),
        ({"keepalive_seconds": 1.5}, "keepalive_seconds"),
        ({"keepalive_seconds": "600"}, "keepalive_seconds"),
        ({"limits": "big"}, "limits"),
        ({"limits": {"memory_mb": 63}}, "memory_mb"),
        ({"limits": {"memory_mb": 8193}}, "memory_mb"),
        ({"limits": {"memory_mb": 128.5}}, "memory_mb"),
        ({"limits": {"cpus": "1"}}, "cpus"),
        ({"limits": {"cpus": 0.05}}, "cpus"),
        ({"limits": {"cpus": 1000}}, "cpus"),
        ({"limits": {"pids": 15}}, "pids"),
        ({"limits": {"pids": 4097}}, "pids"),
        ({"env": {"K%d" % i: "v" for i in range(257)}}, "env"),
    ]
    before = b.cids_now()
    for body, field in cases:
        r = b.post("/v1/sandboxes", body)
        expect(t, r, 400, "invalid_field", "create with %s" % json.dumps(body)[:60], field)
    t.eq(b.cids_now() - before, set(), "refused creates start no container")

    ecases = [
        ({}, "command"),
        ({"command": 5}, "command"),
        ({"command": "x" * (64 * 1024 + 1)}, "command"),
        ({"command": "true", "cwd": 5}, "cwd"),
        ({"command": "true", "env": {"A": 1}}, "env"),
        ({"command": "true", "timeout_ms": 0}, "timeout_ms"),
        ({"command": "true", "timeout_ms": 3600001}, "timeout_ms"),
        ({"command": "true", "timeout_ms": "5"}, "timeout_ms"),
        ({"command": "true", "stdin": 5}, "stdin"),
    ]
    for body, field in ecases:
        r = b.post(EXEC, body)
        desc = json.dumps(body)
        desc = desc if len(desc) < 60 else desc[:40] + "...(%d chars)" % len(desc)
        expect(t, r, 400, "invalid_field", "exec with %s" % desc, field)

    for body in [{"keepalive_longer_by_seconds": 0}, {"keepalive_longer_by_seconds": "60"}, {}]:
        r = b.patch("/v1/sandboxes/" + SB, body)
        expect(t, r, 400, "invalid_field", "PATCH with %s" % json.dumps(body), "keepalive_longer_by_seconds")


def test_bad_ids(t, b):
    for sid, what in [("../x", "../x"), ("a" * 64, "64 characters"), ("", "empty"), ("-abc", "a leading dash"),
                      (".hidden", "a leading dot"), ("a/b", "a slash"), ("a b", "a space"), ("caf\u00e9", "non-ASCII")]:
        r = b.post("/v1/sandboxes", {"id": sid})
        expect(t, r, 400, "invalid_field", "create with id %s" % what, "id")
    r = b.create(id="a" * 63)
    t.eq(r.status, 201, "an id of 63 characters is accepted", r)
    r = b.create(id="A.b_c-9")
    t.eq(r.status, 201, "an id using every allowed character class is accepted", r)
    for path in ["/v1/sandboxes/..%2Fx", "/v1/sandboxes/%2e%2e", "/v1/sandboxes/" + "b" * 300]:
        r = b.get(path)
        t.ok(r.status in (400, 404) and error_shape_ok(r.body), "GET %s answers a clean 400 or 404" % path[:40], r)


def test_body_too_large(t, b):
    port = b.port
    big = b'{"id":"big","env":{"A":"' + b"a" * (1024 * 1024) + b'"}}'
    head = ("POST /v1/sandboxes HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: Bearer %s\r\n"
            "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (port, b.tokens["alice"], len(big)))
    r = b.raw_request(head.encode(), [big[i:i + 65536] for i in range(0, len(big), 65536)])
    t.ok(r is not None and r.status == 413 and r.err_code() == "body_too_large" and error_shape_ok(r.body),
         "a body over 1 MiB (Content-Length) answers 413 body_too_large", r if r is not None else "no answer")
    head = ("POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: Bearer %s\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" % (EXEC, port, b.tokens["alice"]))
    body = b'{"command":"true","stdin":"' + b"s" * (1100 * 1024) + b'"}'
    chunks = [b"%x\r\n%s\r\n" % (len(c), c) for c in (body[i:i + 65536] for i in range(0, len(body), 65536))]
    r = b.raw_request(head.encode(), chunks + [b"0\r\n\r\n"])
    t.ok(r is not None and r.status == 413 and r.err_code() == "body_too_large",
         "a chunked body over 1 MiB answers 413 body_too_large", r if r is not None else "no answer")
    t.eq(b.get("/v1/sandboxes/big").status, 404, "the oversized create created nothing")
    r = b.get("/v1/health", tenant=None)
    t.eq(r.status, 200, "the broker answers after oversized bodies", r)
    stdin = "s" * (900 * 1024)
    r = b.exec(SB, "wc -c", stdin=stdin)
    t.eq(r.get("stdout", "").strip(), str(len(stdin)), "a 900 kB body under the limit is accepted", r)


def test_routes_methods(t, b):
    for path in ["/v1/nope", "/v1/sandboxes/%s/nope" % SB, "/", "/v2/sandboxes", "/v1/sandboxes/no-such-box"]:
        r = b.get(path)
        expect(t, r, 404, "not_found", "GET %s" % path)
    r = b.patch("/v1/sandboxes/no-such-box", {"keepalive_longer_by_seconds": 5})
    expect(t, r, 404, "not_found", "PATCH a missing sandbox")
    r = b.delete("/v1/sandboxes/no-such-box")
    expect(t, r, 404, "not_found", "DELETE a missing sandbox")
    for method, path in [("PUT", "/v1/sandboxes"), ("DELETE", "/v1/sandboxes"), ("PUT", "/v1/sandboxes/" + SB),
                         ("POST", "/v1/sandboxes/" + SB), ("GET", EXEC), ("DELETE", EXEC), ("POST", "/v1/health")]:
        r = b.request(method, path)
        expect(t, r, 405, "method_not_allowed", "%s %s" % (method, path))


def test_curl_style(t, b):
    r = b.request("POST", "/v1/sandboxes", raw=b'{"id":"curl-box","keepalive_seconds":900}',
                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    t.eq(r.status, 201, "create as the docs' curl -d examples send it (form content type, JSON body) answers 201",
         r)
    r = b.request("POST", EXEC, raw=b'{"command":"echo hi"}')
    t.eq((r.status, r.get("stdout")), (200, "hi\n"), "exec with a JSON body and no Content-Type works", r)
    t.ok("application/json" in r.headers.get("content-type", ""), "answers are Content-Type application/json", r)


if __name__ == "__main__":
    harness.main([test_setup, test_malformed_json, test_unknown_fields, test_wrong_types, test_bad_ids,
                  test_body_too_large, test_routes_methods, test_curl_style])
