#!/usr/bin/env python3
"""test_pyclient.py - the Python client's pytest suite (clients/python/tests)
against the real broker, reported as TAP.

Starts a broker (harness.Broker), runs
  /usr/bin/python3 -m pytest clients/python/tests
with SANDBOXD_URL / SANDBOXD_TOKEN / SANDBOXD_TOKEN_BOB pointing at it, and
prints one TAP line per pytest test, read from pytest's JUnit XML. A test
pytest skipped is a TAP skip only when it skipped because the broker has no
such route yet (ports, mounts, backups built on other branches); any other
skip is a failure. The client needs Debian's python3-requests and
python3-pytest, and python3-venv for the offline install test (all
installed by ./bootstrap); SANDBOXD_PYTHON overrides the interpreter."""

import os
import subprocess
import xml.etree.ElementTree as ET

import harness

PYTHON = os.environ.get("SANDBOXD_PYTHON", "/usr/bin/python3")
CLIENT = os.path.join(harness.SRCDIR, "clients", "python")
ROUTE_SKIP = "no such route"


def tap_skip(t, desc, reason):
    with t.lock:
        t.n += 1
        desc = " ".join(str(desc).replace("#", "\\#").split())
        print("ok %d - %s # SKIP %s" % (t.n, desc, " ".join(reason.split())), flush=True)


def report(t, xml_path):
    """One TAP line per testcase of the JUnit XML; the number of cases."""
    root = ET.parse(xml_path).getroot()
    cases = root.iter("testcase")
    n = 0
    for case in cases:
        n += 1
        name = "pyclient %s::%s" % (case.get("classname", "").rsplit(".", 1)[-1], case.get("name"))
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        skipped = case.find("skipped")
        if bad is not None:
            t.ok(False, name, (bad.get("message") or "") + "\n" + (bad.text or ""))
        elif skipped is not None:
            reason = skipped.get("message") or ""
            if ROUTE_SKIP in reason:
                tap_skip(t, name, reason)
            else:
                t.ok(False, "%s (skipped for a reason other than a missing route)" % name, reason)
        else:
            t.ok(True, "%s (%.2f s)" % (name, float(case.get("time") or 0)))
    return n


def main():
    harness.require_ready()
    t = harness.Tap()
    p = subprocess.run([PYTHON, "-c", "import requests, pytest"], capture_output=True, text=True)
    if not t.ok(p.returncode == 0, "%s has requests and pytest (python3-requests, python3-pytest)" % PYTHON,
                p.stderr):
        t.done()
    b = harness.Broker(t)
    try:
        if b.start():
            xml_path = os.path.join(b.tmp, "pyclient-junit.xml")
            env = dict(os.environ, SANDBOXD_URL=b.url, SANDBOXD_TOKEN=b.tokens["alice"],
                       SANDBOXD_TOKEN_BOB=b.tokens["bob"], PYTHONDONTWRITEBYTECODE="1")
            env.pop("PYTHONPATH", None)
            cmd = [PYTHON, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "--junitxml", xml_path,
                   "--basetemp", os.path.join(b.tmp, "pytest"), os.path.join(CLIENT, "tests")]
            try:
                run = subprocess.run(cmd, cwd=CLIENT, env=env, capture_output=True, text=True, timeout=1200)
                out, rc = run.stdout + run.stderr, run.returncode
            except subprocess.TimeoutExpired as e:
                out, rc = "timed out after 1200 s\n%s" % (e.stdout or ""), None
            n = report(t, xml_path) if os.path.exists(xml_path) else 0
            t.ok(n >= 40 and rc in (0, 1), "pytest ran the client suite (%d tests, exit status %s)" % (n, rc),
                 out[-6000:])
            if rc not in (0, None) or n == 0:
                t.diag(out[-6000:])
            left = b.get("/v1/sandboxes")
            t.eq([s.get("id") for s in left.get("sandboxes", [])], [],
                 "the client tests delete every sandbox they create", left)
    except KeyboardInterrupt:
        t.ok(False, "interrupted")
    finally:
        b.teardown()
    t.done()


if __name__ == "__main__":
    main()
