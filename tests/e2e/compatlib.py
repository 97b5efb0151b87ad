"""compatlib.py - replaying a reference document's own request examples
against a compatibility surface of the broker.

A reference document shows requests in two forms, both kept verbatim in
the tests that use this module:

  curl(...)    a curl command line as printed in the document (line
               continuations, -X, -H, -d, the URL anywhere), run with only
               its base URL replaced and an Authorization header added.
  http(...)    an HTTP request block ("POST /path", header lines, a blank
               line, a body that may carry '# ...' comments as the
               documents annotate their JSON), run the same way.

shape(value) turns a documented response example into its shape (the keys
and JSON types, recursively) so that an answer can be compared with what
the document promises.
"""

import json
import re
import shlex

DOC_BASES = ("http://localhost:8787", "https://cloudflare.your-subdomain.workers.dev", "http://sandbox")


def _send(b, method, path, headers, data, tenant, token, prefix, record):
    """One request through the broker's request helper. record=False keeps
    the answer out of the broker's list of error answers (whose shape the
    teardown checks against the native one)."""
    n = len(b.responses)
    r = b.request(method, prefix + path, raw=data, headers=headers, tenant=tenant, token=token)
    if not record:
        del b.responses[n:]
    return r


def parse_curl(text):
    """(method, path, headers, body bytes or None) of a curl command line
    as printed in a document."""
    args = shlex.split(text.replace("\\\n", " "))
    if not args or args[0] != "curl":
        raise ValueError("not a curl command: %r" % text)
    method, url, headers, data = None, None, {}, None
    i = 1
    while i < len(args):
        a = args[i]
        if a in ("-X", "--request"):
            method = args[i + 1]
            i += 2
        elif a in ("-H", "--header"):
            name, _, value = args[i + 1].partition(":")
            headers[name.strip()] = value.strip()
            i += 2
        elif a in ("-d", "--data", "--data-raw"):
            data = args[i + 1].encode()
            i += 2
        elif a.startswith("-"):
            raise ValueError("curl option %s is not understood here" % a)
        else:
            url = a
            i += 1
    for base in DOC_BASES:
        if url.startswith(base):
            url = url[len(base):]
            break
    else:
        raise ValueError("unexpected base URL in %r" % url)
    if method is None:
        method = "POST" if data is not None else "GET"
    if data is not None and "Content-Type" not in headers:
        headers["Content-Type"] = "application/x-www-form-urlencoded"  # what curl -d sends
    return method, url, headers, data


def curl(b, text, prefix, tenant="alice", token=None, record=True, subst=None):
    """Run a documented curl command against the surface at prefix. subst:
    {placeholder: value} replacements made in the command text first."""
    for k, v in (subst or {}).items():
        text = text.replace(k, v)
    method, path, headers, data = parse_curl(text)
    r = _send(b, method, path, headers, data, tenant, token, prefix, record)
    r.doc_request = (method, path, headers, data)
    return r


def _strip_comments(body):
    """Drop the '# ...' annotations the documents put after JSON values
    (outside strings)."""
    out = []
    for line in body.splitlines():
        in_str, esc, cut = False, False, None
        for i, c in enumerate(line):
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"':
                in_str = not in_str
            elif c == "#" and not in_str:
                cut = i
                break
        out.append((line if cut is None else line[:cut]).rstrip())
    return "\n".join(out).strip()


def parse_http(text):
    """(method, path, headers, body bytes or None) of a documented request
    block: 'METHOD /path' then header lines, a blank line and a body."""
    lines = text.strip("\n").split("\n")
    method, path = lines[0].split()[:2]
    headers, i = {}, 1
    while i < len(lines) and lines[i].strip():
        name, _, value = lines[i].partition(":")
        headers[name.strip()] = value.strip()
        i += 1
    body = _strip_comments("\n".join(lines[i + 1:])) if i + 1 < len(lines) else ""
    if body:
        json.loads(body)  # the example must be JSON once its comments are gone
    return method, path, headers, body.encode() if body else None


def http(b, text, prefix, tenant="alice", token=None, record=True, subst=None, body=None):
    """Run a documented request block. body: a documented request body
    shown apart from the request line (as JSON text), sent as JSON."""
    for k, v in (subst or {}).items():
        text = text.replace(k, v)
    method, path, headers, data = parse_http(text)
    if body is not None:
        data = _strip_comments(body).encode()
        json.loads(data)
        headers.setdefault("Content-Type", "application/json")
    r = _send(b, method, path, headers, data, tenant, token, prefix, record)
    r.doc_request = (method, path, headers, data)
    return r


def shape(v):
    """The shape of a JSON value: dicts keep their keys, everything else
    becomes its type name; null is its own type."""
    if isinstance(v, dict):
        return {k: shape(x) for k, x in v.items()}
    if isinstance(v, list):
        return [shape(x) for x in v[:1]]
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "number"
    return "str"


def doc_json(text):
    """A documented JSON example, its '# ...' annotations removed."""
    return json.loads(_strip_comments(text))


ISO_MS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
