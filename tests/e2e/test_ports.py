#!/usr/bin/env python3
"""test_ports.py - exposed ports and preview URLs: servers started inside a
sandbox through the processes API answer through the broker in both forms
(path form with the bearer token, preview-host form with the port's token):
bodies of several MiB both ways, headers through and hop-by-hop ones
dropped, chunked and close-delimited answers, a WebSocket echo, the errors
(502 no listener, 404 unexposed / wrong token / another tenant, 400 bad
port, 401), the per-sandbox limit, DELETE, ports forgotten with their
sandbox, kept over a broker restart, and a sandbox that still has no route
out. The contract is docs/api.md ("Ports and preview URLs")."""

import base64
import hashlib
import http.client
import json
import os
import re
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import wait_until  # noqa: E402

SB = "web"
MAX_PORTS = 4
MIB = 1 << 20

# A stdlib server: echo, headers, chunked, close-delimited, big downloads
# and a WebSocket echo (RFC 6455, enough of it for the test).
SERVER = r'''
import base64, hashlib, http.server, json, socketserver, struct, sys

class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def _send(self, status, body, headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _pieces(self):
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                yield self.rfile.read(size)
                self.rfile.readline()
        left = int(self.headers.get("Content-Length", "0"))
        while left:
            piece = self.rfile.read(min(left, 1 << 20))
            if not piece:
                return
            left -= len(piece)
            yield piece

    def _body(self):
        return b"".join(self._pieces())

    def do_GET(self):
        p = self.path
        if p.startswith("/headers"):
            body = json.dumps({"path": p, "headers": [[k, v] for k, v in self.headers.items()]}).encode()
            return self._send(200, body, [("Content-Type", "application/json")])
        if p == "/hello":
            return self._send(200, b"hello", [("Content-Type", "text/plain"), ("X-Custom", "yes"),
                                              ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"),
                                              ("Keep-Alive", "timeout=5"), ("Connection", "X-Hop"),
                                              ("X-Hop", "1"), ("Proxy-Thing", "x")])
        if p == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            for part in (b"one,", b"two,", b"x" * 70000, b",three"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.flush()
            self.wfile.write(b"0\r\nX-Trailer: t\r\n\r\n")
            return
        if p == "/bighead":
            self.send_response(200)
            for i in range(80):
                self.send_header("X-Big-%d" % i, "v" * 1000)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if p == "/slow-body":
            self.send_response(200)
            self.send_header("Content-Length", "10")
            self.end_headers()
            self.wfile.write(b"12345")
            self.wfile.flush()
            self.close_connection = True
            return
        if p == "/close":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"until-close " * 1000)
            self.close_connection = True
            return
        if p.startswith("/big/"):
            n = int(p[5:])
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            block = bytes(range(256)) * 4096
            left = n
            while left:
                k = min(left, len(block))
                self.wfile.write(block[:k])
                left -= k
            return
        if p == "/ws":
            key = self.headers.get("Sec-WebSocket-Key", "")
            acc = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", acc.decode())
            self.end_headers()
            self.wfile.flush()
            r, w = self.rfile, self.wfile
            while True:
                h = r.read(2)
                if len(h) < 2:
                    break
                op, n = h[0] & 15, h[1] & 127
                if n == 126:
                    n = struct.unpack(">H", r.read(2))[0]
                elif n == 127:
                    n = struct.unpack(">Q", r.read(8))[0]
                mask = r.read(4) if h[1] & 128 else b"\0\0\0\0"
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(r.read(n)))
                if op == 8:
                    w.write(b"\x88\x00")
                    break
                hdr = bytes([0x80 | op])
                if len(data) < 126:
                    hdr += bytes([len(data)])
                elif len(data) < 65536:
                    hdr += bytes([126]) + struct.pack(">H", len(data))
                else:
                    hdr += bytes([127]) + struct.pack(">Q", len(data))
                w.write(hdr + data)
                w.flush()
            self.close_connection = True
            return
        self._send(404, b"no such page")

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Length", self.path.rsplit("/", 1)[-1])
        self.end_headers()

    def do_POST(self):
        if self.path == "/count":
            h, n = hashlib.sha256(), 0
            for piece in self._pieces():
                h.update(piece)
                n += len(piece)
            return self._send(200, json.dumps({"bytes": n, "sha256": h.hexdigest()}).encode())
        data = self._body()
        self._send(200, data, [("Content-Type", "application/octet-stream"),
                               ("X-Sha256", hashlib.sha256(data).hexdigest()),
                               ("X-Got-Chunked", str("chunked" in self.headers.get("Transfer-Encoding", "")))])

    do_PUT = do_POST

class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

S(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
'''

state = {}


def ports_url(sb=SB):
    return "/v1/sandboxes/%s/ports" % sb


def host_of(b, port, token, sb=SB):
    return "%d-%s-%s.localhost:%d" % (port, sb.lower().replace("_", "-").replace(".", "-"), token, b.port)


def via_host(b, method, path, host, body=None, headers=None, timeout=60, encode_chunked=False):
    """A request by the preview-host form: no Authorization, Host set."""
    h = {"Host": host}
    if headers:
        h.update(headers)
    conn = http.client.HTTPConnection("127.0.0.1", b.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=h, encode_chunked=encode_chunked)
        r = conn.getresponse()
        payload = r.read()
        return r.status, r.getheaders(), payload
    finally:
        conn.close()


def via_path(b, method, path, port=8000, sb=SB, body=None, headers=None, tenant="alice", timeout=60,
             encode_chunked=False):
    h = {}
    if tenant:
        h["Authorization"] = "Bearer " + b.tokens[tenant]
    if headers:
        h.update(headers)
    conn = http.client.HTTPConnection("127.0.0.1", b.port, timeout=timeout)
    try:
        conn.request(method, "/v1/sandboxes/%s/ports/%d%s" % (sb, port, path), body=body, headers=h,
                     encode_chunked=encode_chunked)
        r = conn.getresponse()
        payload = r.read()
        return r.status, r.getheaders(), payload
    finally:
        conn.close()


def forms(b):
    """(name, fn(method, path, **kw)) for both forms on port 8000."""
    host = host_of(b, 8000, state.get("token", "0" * 32))
    return [("path form", lambda m, p, **kw: via_path(b, m, p, **kw)),
            ("host form", lambda m, p, **kw: via_host(b, m, p, host, **kw))]


def hget(headers, name):
    return [v for k, v in headers if k.lower() == name.lower()]


def jbody(payload):
    try:
        return json.loads(payload)
    except ValueError:
        return {}


def start_server(t, b, port, sb=SB):
    r = b.post("/v1/sandboxes/%s/processes" % sb, {"command": "python3 /workspace/srv.py %d" % port})
    t.eq(r.status, 201, "start the test server on port %d through the processes API" % port, r)


def test_setup(t, b):
    r = b.create(id=SB)
    t.eq(r.status, 201, "create sandbox %s" % SB, r)
    w = b.request("PUT", "/v1/sandboxes/%s/files/workspace/srv.py" % SB, raw=SERVER.encode(),
                  headers={"Content-Type": "text/x-python"})
    t.eq(w.status, 200, "write the server into the sandbox", w)
    start_server(t, b, 8000)
    e = b.post(ports_url(), {"port": 8000, "name": "web"})
    t.eq(e.status, 201, "POST /ports {port: 8000} answers 201", e)
    tok = e.get("token") or ""
    state["token"] = tok
    t.ok(re.fullmatch(r"[0-9a-f]{32}", tok) is not None, "the token is 32 hex characters", e)
    t.eq((e.get("port"), e.get("name")), (8000, "web"), "it echoes port and name", e)
    t.eq(e.get("url"), "http://8000-web-%s.localhost:%d/" % (tok, b.port),
         "url is http://{port}-{id}-{token}.localhost:{broker port}/", e)
    t.eq(e.get("path"), "/v1/sandboxes/web/ports/8000/", "path is the path form's prefix", e)
    again = b.post(ports_url(), {"port": 8000})
    t.eq((again.status, again.get("token"), again.get("name")), (200, tok, "web"),
         "exposing the same port again answers 200 with the existing entry", again)
    lst = b.get(ports_url())
    t.eq([(p.get("port"), p.get("token")) for p in lst.get("ports") or []], [(8000, tok)],
         "GET /ports lists it", lst)
    up = wait_until(lambda: via_path(b, "GET", "/hello")[0] == 200, 15, 0.2)
    t.ok(up, "the server answers through the proxy within 15 s", via_path(b, "GET", "/hello"))


def test_headers(t, b):
    for name, req in forms(b):
        st, hd, body = req("GET", "/hello")
        t.eq((st, body), (200, b"hello"), "%s: GET /hello answers 200 hello" % name, hd)
        t.eq(hget(hd, "X-Custom"), ["yes"], "%s: a response header passes through" % name, hd)
        t.eq(sorted(hget(hd, "Set-Cookie")), ["a=1", "b=2"], "%s: both Set-Cookie headers pass" % name, hd)
        t.ok(not hget(hd, "Keep-Alive") and not hget(hd, "X-Hop") and not hget(hd, "Proxy-Thing"),
             "%s: hop-by-hop response headers (Keep-Alive, Proxy-*, one named in Connection) are dropped"
             % name, hd)
        st, hd, body = req("GET", "/headers?q=1&r=%2F", headers={
            "X-Req": "r1", "Connection": "keep-alive, X-Drop", "X-Drop": "1", "Keep-Alive": "300",
            "Proxy-Authorization": "Basic eA==", "TE": "trailers", "X-Forwarded-For": "10.1.2.3"})
        j = jbody(body)
        got = {}
        for k, v in j.get("headers", []):
            got.setdefault(k.lower(), []).append(v)
        t.eq(j.get("path"), "/headers?q=1&r=%2F", "%s: path and query reach the server as sent" % name, j)
        t.eq(got.get("x-req"), ["r1"], "%s: a request header passes through" % name, j)
        t.ok(not {"x-drop", "keep-alive", "proxy-authorization", "te"} & set(got),
             "%s: hop-by-hop request headers are dropped" % name, j)
        t.eq(got.get("x-forwarded-for"), ["10.1.2.3, 127.0.0.1"], "%s: X-Forwarded-For is appended to" % name, j)
        t.eq(got.get("x-forwarded-proto"), ["http"], "%s: X-Forwarded-Proto is http" % name, j)
        t.ok(got.get("x-forwarded-host") and got.get("x-forwarded-host") == got.get("host"),
             "%s: X-Forwarded-Host is the Host the client asked for" % name, j)
        if name == "path form":
            t.ok("authorization" not in got, "path form: the bearer token is not passed to the sandbox", j)
            t.eq(got.get("x-forwarded-prefix"), ["/v1/sandboxes/web/ports/8000"],
                 "path form: X-Forwarded-Prefix names the prefix", j)
        else:
            st, hd, body = req("GET", "/headers", headers={"Authorization": "Basic YXBwOnB3"})
            got = {k.lower(): v for k, v in jbody(body).get("headers", [])}
            t.eq(got.get("authorization"), "Basic YXBwOnB3",
                 "host form: the app's own Authorization header passes through", body)


def test_bodies(t, b):
    data = os.urandom(5 * MIB + 123)
    sha = hashlib.sha256(data).hexdigest()
    for name, req in forms(b):
        st, hd, body = req("POST", "/echo", body=data, headers={"Content-Type": "application/octet-stream"},
                           timeout=120)
        t.ok(st == 200 and body == data and hget(hd, "X-Sha256") == [sha],
             "%s: a 5 MiB body goes up and comes back byte-identical" % name,
             "status %d, %d bytes back" % (st, len(body)))

        def gen():
            for i in range(0, len(data), 300001):
                yield data[i:i + 300001]
        st, hd, body = req("PUT", "/echo", body=gen(), encode_chunked=True, timeout=120)
        t.ok(st == 200 and body == data and hget(hd, "X-Got-Chunked") == ["True"],
             "%s: a chunked 5 MiB request body reaches the server chunked and comes back whole" % name,
             "status %d, %d bytes back, %s" % (st, len(body), hget(hd, "X-Got-Chunked")))
        st, hd, body = req("GET", "/big/%d" % (8 * MIB), timeout=120)
        want = (bytes(range(256)) * 4096) * 8
        t.ok(st == 200 and body == want and hget(hd, "Content-Length") == [str(8 * MIB)],
             "%s: an 8 MiB download with Content-Length arrives whole" % name, "status %d, %d bytes" % (st, len(body)))
        st, hd, body = req("GET", "/chunked")
        t.eq((st, body), (200, b"one,two," + b"x" * 70000 + b",three"),
             "%s: a chunked upstream answer arrives decoded and whole" % name, hd)
        st, hd, body = req("GET", "/close")
        t.eq((st, body), (200, b"until-close " * 1000), "%s: a close-delimited answer arrives whole" % name, hd)
        st, hd, body = req("HEAD", "/big/1000")
        t.eq((st, body, hget(hd, "Content-Length")), (200, b"", ["1000"]),
             "%s: HEAD answers the length without a body" % name, hd)


def test_memory_bounded(t, b):
    """256 MiB up and 256 MiB down through the proxy: the broker's RSS
    must not grow with the body (bodies stream through fixed buffers)."""
    pid = b.proc.pid
    n = 256 * MIB
    block = os.urandom(MIB)
    want = hashlib.sha256()
    for i in range(256):
        want.update(block)
    before = harness.rss_kib(pid)
    smp = harness.RssSampler(pid).start()
    conn = http.client.HTTPConnection("127.0.0.1", b.port, timeout=300)
    conn.request("POST", "/count", body=(block for _ in range(256)),
                 headers={"Host": host_of(b, 8000, state["token"]), "Content-Length": str(n)})
    r = conn.getresponse()
    j = jbody(r.read())
    conn.close()
    peak = smp.stop()
    t.ok(r.status == 200 and j.get("bytes") == n and j.get("sha256") == want.hexdigest(),
         "a 256 MiB upload reaches the server whole", j)
    t.ok(peak - before < 16 * 1024, "broker RSS during the 256 MiB upload: %d -> peak %d KiB (+%.1f MiB, < 16 MiB)"
         % (before, peak, (peak - before) / 1024.0))
    before = harness.rss_kib(pid)
    smp = harness.RssSampler(pid).start()
    conn = http.client.HTTPConnection("127.0.0.1", b.port, timeout=300)
    conn.request("GET", "/big/%d" % n, headers={"Host": host_of(b, 8000, state["token"])})
    r = conn.getresponse()
    got = 0
    while True:
        piece = r.read(MIB)
        if not piece:
            break
        got += len(piece)
    conn.close()
    peak = smp.stop()
    t.eq((r.status, got), (200, n), "a 256 MiB download arrives whole", None)
    t.ok(peak - before < 16 * 1024, "broker RSS during the 256 MiB download: %d -> peak %d KiB (+%.1f MiB, < 16 MiB)"
         % (before, peak, (peak - before) / 1024.0))


def ws_echo(b, path, host, auth=None, messages=(b"hi", b"x" * 100000, b"bye")):
    s = socket.create_connection(("127.0.0.1", b.port), timeout=20)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        req = ("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n" % (path, host, key))
        if auth:
            req += "Authorization: Bearer %s\r\n" % auth
        s.sendall((req + "\r\n").encode())
        f = s.makefile("rb")
        status = f.readline()
        hdrs = {}
        while True:
            line = f.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            k, _, v = line.decode().partition(":")
            hdrs[k.strip().lower()] = v.strip()
        want = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        if b" 101 " not in status or hdrs.get("sec-websocket-accept") != want.decode():
            return "handshake: %r %r" % (status, hdrs)
        got = []
        for m in messages:
            mask = os.urandom(4)
            hdr = bytes([0x82])
            if len(m) < 126:
                hdr += bytes([0x80 | len(m)])
            elif len(m) < 65536:
                hdr += bytes([0x80 | 126]) + struct.pack(">H", len(m))
            else:
                hdr += bytes([0x80 | 127]) + struct.pack(">Q", len(m))
            s.sendall(hdr + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(m)))
            h = f.read(2)
            n = h[1] & 127
            if n == 126:
                n = struct.unpack(">H", f.read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", f.read(8))[0]
            got.append(f.read(n))
        s.sendall(b"\x88\x80" + os.urandom(4))
        close = f.read(2)
        return got == list(messages) and close[:1] == b"\x88" or "echo mismatch: %r" % [len(g) for g in got]
    finally:
        s.close()


def test_websocket(t, b):
    r = ws_echo(b, "/v1/sandboxes/web/ports/8000/ws", "127.0.0.1:%d" % b.port, auth=b.tokens["alice"])
    t.ok(r is True, "path form: a WebSocket echoes three messages (one of 100 KB) and closes", r)
    r = ws_echo(b, "/ws", host_of(b, 8000, state["token"]))
    t.ok(r is True, "host form: a WebSocket echoes three messages (one of 100 KB) and closes", r)


def test_errors(t, b):
    tok = state["token"]
    e = b.post(ports_url(), {"port": 8001})
    t.eq(e.status, 201, "expose port 8001, where nothing listens", e)
    st, hd, body = via_path(b, "GET", "/", port=8001)
    j = jbody(body)
    t.ok(st == 502 and harness.error_shape_ok(j) and "8001" in j["error"]["message"],
         "path form: a port with no listener answers 502 with a JSON error naming the port", body)
    st, hd, body = via_host(b, "GET", "/", host_of(b, 8001, e.get("token") or ""))
    t.eq((st, jbody(body).get("error", {}).get("code")), (502, "port_not_listening"),
         "host form: a port with no listener answers 502 port_not_listening", body)

    st, _, body = via_path(b, "GET", "/hello", port=8002)
    t.eq(st, 404, "path form: an unexposed port answers 404", body)
    st, _, body = via_host(b, "GET", "/hello", host_of(b, 8002, tok))
    t.eq(st, 404, "host form: the right token with another port answers 404", body)
    bad = ("1" if tok[0] != "1" else "2") + tok[1:]
    st, _, body = via_host(b, "GET", "/hello", host_of(b, 8000, bad))
    t.ok(st == 404 and harness.error_shape_ok(jbody(body)), "host form: a wrong token answers 404 JSON", body)
    st, _, body = via_host(b, "GET", "/hello", "8000-other-%s.localhost:%d" % (tok, b.port))
    t.eq(st, 404, "host form: the right token under another sandbox's name answers 404", body)
    st, _, body = via_host(b, "GET", "/hello", "8000-web-%s.localhost.example:%d" % (tok, b.port))
    t.ok(st == 404 and jbody(body).get("error", {}).get("message") == "no such route",
         "host form: the name followed by more labels is not a preview (API 404)", body)
    st, _, body = via_host(b, "GET", "/hello", "x.8000-web-%s.localhost" % tok)
    t.eq(st, 404, "host form: a deeper name under the domain answers 404", body)
    st, _, body = via_host(b, "GET", "/hello", "8000-WEB-%s.LocalHost:%d" % (tok.upper(), b.port))
    t.eq((st, body), (200, b"hello"), "host form: names are matched without regard to case", body)
    st, _, body = via_path(b, "GET", "/hello", tenant=None)
    t.eq(st, 401, "path form without a bearer token answers 401", body)
    st, _, body = via_path(b, "GET", "/bighead")
    j = jbody(body)
    t.ok(st == 502 and "64 KiB" in j.get("error", {}).get("message", ""),
         "an upstream answer with 80 KB of headers answers 502 naming the 64 KiB bound", body)
    try:
        st, _, body = via_path(b, "GET", "/slow-body")
        cut = "answered %d with %d bytes" % (st, len(body))
    except http.client.IncompleteRead as e:
        cut = True
    except (http.client.HTTPException, OSError) as e:
        cut = True
    t.ok(cut is True, "an upstream body cut short of its Content-Length is cut short for the client too", cut)
    st, _, body = via_path(b, "GET", "/hello")
    t.eq((st, body), (200, b"hello"), "and the proxy keeps working afterwards", body)

    for desc, body in [("0", {"port": 0}), ("65536", {"port": 65536}), ("a string", {"port": "80"}),
                       ("80.5", {"port": 80.5}), ("missing", {}), ("null", {"port": None})]:
        r = b.post(ports_url(), body)
        t.ok(r.status == 400 and harness.names_field(r.err_message(), "port"),
             "POST /ports with port %s answers 400 naming 'port'" % desc, r)
    r = b.post(ports_url(), {"port": 8003, "name": "n" * 65})
    t.ok(r.status == 400 and harness.names_field(r.err_message(), "name"), "a name over 64 characters: 400", r)
    r = b.post(ports_url(), {"port": 8003, "extra": 1})
    t.ok(r.status == 400 and harness.names_field(r.err_message(), "extra"), "an unknown field: 400 naming it", r)
    for seg in ("abc", "0", "70000", "08000"):
        r = b.delete(ports_url() + "/" + seg)
        t.ok(r.status == 400 and harness.names_field(r.err_message(), "port"),
             "DELETE /ports/%s answers 400 naming 'port'" % seg, r)
    for seg in ("abc", "0", "70000"):
        r = b.get("/v1/sandboxes/web/ports/%s/" % seg)
        t.ok(r.status == 400 and harness.names_field(r.err_message(), "port"),
             "path form with port '%s' answers 400 naming 'port'" % seg, r)
    r = b.delete(ports_url() + "/8002")
    t.eq(r.status, 404, "DELETE of an unexposed port answers 404", r)

    # Another tenant sees nothing of alice's sandbox.
    for method, path, body in [("GET", ports_url(), None), ("POST", ports_url(), {"port": 8005}),
                               ("DELETE", ports_url() + "/8000", None)]:
        r = b.request(method, path, body, tenant="bob")
        t.eq(r.status, 404, "bob: %s %s answers 404" % (method, path), r)
    st, _, body = via_path(b, "GET", "/hello", tenant="bob")
    t.eq(st, 404, "bob: the path form on alice's sandbox answers 404", body)
    r = b.get(ports_url("nosuch"))
    t.eq(r.status, 404, "GET /ports of a sandbox that does not exist answers 404", r)


def test_limit(t, b):
    have = len(b.get(ports_url()).get("ports") or [])
    for p in range(9000, 9000 + MAX_PORTS - have):
        r = b.post(ports_url(), {"port": p})
        t.eq(r.status, 201, "expose port %d (within max_ports_per_sandbox = %d)" % (p, MAX_PORTS), r)
    r = b.post(ports_url(), {"port": 9100})
    t.ok(r.status == 409 and r.err_code() == "too_many_ports" and "max_ports_per_sandbox" in (r.err_message() or ""),
         "one more answers 409 too_many_ports naming max_ports_per_sandbox", r)
    r = b.post(ports_url(), {"port": 8000})
    t.eq(r.status, 200, "re-exposing an exposed port still works at the limit", r)
    for p in range(9000, 9000 + MAX_PORTS - have):
        b.delete(ports_url() + "/%d" % p)


def test_no_route_out(t, b):
    code = ("import socket, errno\n"
            "res = []\n"
            "for addr in [('127.0.0.1', %d), ('%s', %d), ('1.1.1.1', 80)]:\n"
            "    s = socket.socket(); s.settimeout(3)\n"
            "    try:\n"
            "        s.connect(addr); res.append('connected')\n"
            "    except OSError as e:\n"
            "        res.append(errno.errorcode.get(e.errno, str(e)))\n"
            "print(' '.join(res))\n"
            "print(open('/proc/net/route').read().count('\\n') - 1)\n")
    host_ip = None
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(("192.0.2.1", 9))
        host_ip = s.getsockname()[0]
        s.close()
    except OSError:
        host_ip = "192.0.2.1"
    x = b.exec(SB, "python3 -c \"$C\"", env={"C": code % (b.port, host_ip, b.port)})
    out = (x.get("stdout") or "").split("\n")
    t.ok(len(out) > 1 and out[0].split()[0] == "ECONNREFUSED",
         "inside the sandbox, 127.0.0.1:<broker port> is the sandbox's own loopback: refused", x)
    t.ok(len(out) > 1 and out[0].split()[1:] == ["ENETUNREACH", "ENETUNREACH"],
         "the host's address (%s) and the internet are unreachable from inside" % host_ip, x)
    t.eq(out[1] if len(out) > 1 else None, "0", "the sandbox has no routes at all", x)


def test_delete_port(t, b):
    tok = state["token"]
    e = b.post(ports_url(), {"port": 8010})
    t.eq(e.status, 201, "expose port 8010", e)
    d = b.delete(ports_url() + "/8010")
    t.eq((d.status, d.get("port"), d.get("deleted")), (200, 8010, True), "DELETE /ports/8010 answers 200", d)
    st, _, _ = via_path(b, "GET", "/", port=8010)
    t.eq(st, 404, "path form: the deleted port answers 404", st)
    st, _, _ = via_host(b, "GET", "/", host_of(b, 8010, e.get("token") or ""))
    t.eq(st, 404, "host form: the deleted port's token answers 404", st)
    lst = b.get(ports_url())
    t.ok(8010 not in [p.get("port") for p in lst.get("ports") or []], "it is gone from the list", lst)
    st, _, body = via_host(b, "GET", "/hello", host_of(b, 8000, tok))
    t.eq((st, body), (200, b"hello"), "the other port still answers", body)


def test_restart(t, b):
    tok = state["token"]
    before = b.get(ports_url()).get("ports")
    if not b.restart():
        return
    after = b.get(ports_url()).get("ports")
    t.eq([(p["port"], p["token"], p["name"]) for p in after or []],
         [(p["port"], p["token"], p["name"]) for p in before or []],
         "after a broker restart the same ports are listed with the same tokens", after)
    t.ok(all(p["url"].endswith(":%d/" % b.port) for p in after or []),
         "their urls name the broker's new port", after)
    st, _, body = via_path(b, "GET", "/hello")
    t.eq((st, body), (200, b"hello"), "path form works after the restart", body)
    st, _, body = via_host(b, "GET", "/hello", host_of(b, 8000, tok))
    t.eq((st, body), (200, b"hello"), "host form with the old token works after the restart", body)
    r = ws_echo(b, "/ws", host_of(b, 8000, tok), messages=(b"again",))
    t.ok(r is True, "a WebSocket works after the restart", r)


def test_sandbox_delete(t, b):
    r = b.create(id="Tmp_box.2")
    t.eq(r.status, 201, "create sandbox Tmp_box.2 (an id with '_', '.' and capitals)", r)
    w = b.request("PUT", "/v1/sandboxes/Tmp_box.2/files/workspace/srv.py", raw=SERVER.encode())
    t.eq(w.status, 200, "write the server into it", w)
    start_server(t, b, 7000, sb="Tmp_box.2")
    e = b.post(ports_url("Tmp_box.2"), {"port": 7000})
    tok = e.get("token") or ""
    t.ok(e.status == 201 and (e.get("url") or "").startswith("http://7000-tmp-box-2-%s.localhost:" % tok),
         "its preview url uses the label tmp-box-2", e)
    host = host_of(b, 7000, tok, sb="Tmp_box.2")
    up = wait_until(lambda: via_host(b, "GET", "/hello", host)[0] == 200, 15, 0.2)
    t.ok(up, "the preview of Tmp_box.2 answers", via_host(b, "GET", "/hello", host))
    d = b.delete("/v1/sandboxes/Tmp_box.2")
    t.eq(d.status, 200, "delete the sandbox", d)
    st, _, body = via_host(b, "GET", "/hello", host)
    t.eq(st, 404, "the deleted sandbox's preview token answers 404", body)
    r = b.create(id="Tmp_box.2")
    t.eq(r.status, 201, "create a sandbox with the same id again", r)
    lst = b.get(ports_url("Tmp_box.2"))
    t.eq((lst.status, lst.get("ports")), (200, []), "it starts with no exposed ports", lst)
    st, _, body = via_host(b, "GET", "/hello", host)
    t.eq(st, 404, "and the old token does not reach it", body)
    b.delete("/v1/sandboxes/Tmp_box.2")


if __name__ == "__main__":
    harness.main([test_setup, test_headers, test_bodies, test_memory_bounded, test_websocket, test_errors, test_limit,
                  test_no_route_out, test_delete_port, test_restart, test_sandbox_delete],
                 config={"max_ports_per_sandbox": MAX_PORTS})
