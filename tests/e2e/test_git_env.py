#!/usr/bin/env python3
"""test_git_env.py - POST git/checkout (clone of a repository on the
sandbox's own disk, by file:// URL and by path, with branch, depth and
target_dir; git's errors; validation; option injection) and POST env (the
sandbox env reaching plain exec, existing sessions, new sessions, new
processes and new Python contexts; null unsets; validation).

The contract is docs/api.md ("Git", "Sandbox environment") and issue 5."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import wait_until  # noqa: E402

SB = "gitenv"
BASE = "/v1/sandboxes/%s" % SB
GIT = BASE + "/git/checkout"
ENV = BASE + "/env"

MAKE_REPO = """
git config --global user.email tester@example.com &&
git config --global user.name Tester &&
git config --global init.defaultBranch main &&
git init -q --bare /workspace/origin.git &&
git init -q /workspace/wt && cd /workspace/wt &&
echo hello > README.md && git add README.md && git commit -qm first &&
echo two >> README.md && git commit -qam second &&
git push -q /workspace/origin.git main &&
git checkout -qb feature && echo feat > feature.txt && git add feature.txt && git commit -qm feat &&
git push -q /workspace/origin.git feature &&
echo made
"""


def sh(b, command):
    return b.exec(SB, command, cwd="/workspace")


def out(b, command):
    r = sh(b, command)
    return r.get("stdout") if r.status == 200 else "exec failed: %s" % r


def main_text(r):
    rs = r.get("results") if isinstance(r.get("results"), list) else []
    mains = [x for x in rs if isinstance(x, dict) and x.get("is_main_result") is True]
    return mains[0].get("text") if len(mains) == 1 else None


def test_setup(t, b):
    r = b.create(id=SB, env={"SBX_BASE": "base"})
    t.eq(r.status, 201, "create the git/env sandbox", r)
    r = sh(b, MAKE_REPO)
    t.eq(r.get("stdout"), "made\n", "make a bare repository with branches main and feature inside the sandbox", r)


def test_clone(t, b):
    r = b.post(GIT, {"repo_url": "file:///workspace/origin.git"}, timeout=120)
    t.eq(r.status, 201, "git/checkout of file:///workspace/origin.git answers 201", r)
    t.eq(r.get("repo_url"), "file:///workspace/origin.git", "the answer has repo_url", r)
    t.eq(r.get("target_dir"), "/workspace/origin", "target_dir defaults to /workspace/<repository name>", r)
    t.ok("branch" in (r.body or {}), "the answer has branch", r)
    t.eq(out(b, "cat /workspace/origin/README.md"), "hello\ntwo\n", "the clone's README.md has the content", None)
    g = b.get(BASE + "/files/workspace/origin/README.md")
    t.eq(g.raw, b"hello\ntwo\n", "the cloned file is readable through the file API", g)
    t.eq(out(b, "stat -c %u /workspace/origin /workspace/origin/README.md /workspace/origin/.git/HEAD"),
         "1000\n1000\n1000\n", "the clone belongs to the sandbox user (uid 1000)", None)
    t.eq(out(b, "git -C /workspace/origin rev-parse --abbrev-ref HEAD"), "main\n", "it is on the default branch",
         None)

    r = b.post(GIT, {"repo_url": "file:///workspace/origin.git", "branch": "feature", "depth": 1,
                     "target_dir": "/workspace/app"}, timeout=120)
    t.eq(r.status, 201, "git/checkout with branch feature, depth 1, target_dir /workspace/app answers 201", r)
    t.eq((r.get("branch"), r.get("target_dir")), ("feature", "/workspace/app"), "the answer has branch and target_dir",
         r)
    t.eq(out(b, "cat /workspace/app/feature.txt"), "feat\n", "feature.txt (only on branch feature) exists", None)
    t.eq(out(b, "git -C /workspace/app rev-parse --abbrev-ref HEAD; git -C /workspace/app rev-list --count HEAD"),
         "feature\n1\n", "the clone is on feature with depth 1 (one commit)", None)

    r = b.post(GIT, {"repo_url": "/workspace/origin.git", "target_dir": "/workspace/bypath"}, timeout=120)
    t.ok(r.status == 201 and out(b, "cat /workspace/bypath/README.md") == "hello\ntwo\n",
         "a local path works as repo_url too", r)
    r = b.post(GIT, {"repo_url": "file:///workspace/origin.git", "target_dir": "/workspace/nested/deeper/clone"},
               timeout=120)
    t.ok(r.status == 201 and out(b, "cat /workspace/nested/deeper/clone/README.md") == "hello\ntwo\n",
         "a target_dir whose parents do not exist yet", r)


def test_git_errors(t, b):
    r = b.post(GIT, {"repo_url": "file:///workspace/nope.git", "target_dir": "/workspace/nope"}, timeout=120)
    t.eq((r.status, r.err_code()), (422, "git_failed"), "a repository that does not exist -> 422 git_failed", r)
    msg = r.err_message() or ""
    t.ok("does not appear to be a git repository" in msg or "fatal:" in msg,
         "the message is git's own (%r)" % msg[:200], r)
    t.ok(out(b, "test -e /workspace/nope && echo exists || echo absent") == "absent\n",
         "a failed clone leaves no target directory", None)
    r = b.post(GIT, {"repo_url": "file:///workspace/origin.git", "branch": "no-such-branch",
                     "target_dir": "/workspace/nb"}, timeout=120)
    t.eq((r.status, r.err_code()), (422, "git_failed"), "a branch that does not exist -> 422 git_failed", r)
    t.ok("no-such-branch" in (r.err_message() or ""), "git's message names the branch", r)
    r = b.post(GIT, {"repo_url": "file:///workspace/origin.git", "target_dir": "/workspace/origin"}, timeout=120)
    t.eq((r.status, r.err_code()), (422, "git_failed"), "cloning into an existing non-empty directory -> 422", r)
    t.ok("already exists" in (r.err_message() or ""), "with git's 'already exists' message", r)
    t.eq(out(b, "cat /workspace/origin/README.md"), "hello\ntwo\n", "the existing clone is untouched", None)

    for branch in ("bad..name", "-b", "--upload-pack=touch /workspace/pwned1", "a b", "x~1", "", "a:b"):
        r = b.post(GIT, {"repo_url": "file:///workspace/origin.git", "branch": branch, "target_dir": "/workspace/bb"},
                   timeout=60)
        t.ok(r.status == 400 and harness.names_field(r.err_message(), "branch"),
             "branch %r -> 400 naming branch" % branch, r)
    for url in ("--upload-pack=touch /workspace/pwned2", "-u touch /workspace/pwned3"):
        r = b.post(GIT, {"repo_url": url, "target_dir": "/workspace/inj"}, timeout=60)
        t.ok(400 <= r.status < 500, "repo_url %r (an option) is refused with a 4xx" % url, r)
    r = b.post(GIT, {"repo_url": "file:///workspace/origin.git", "target_dir": "--upload-pack=touch /workspace/pwned4"},
               timeout=60)
    t.ok(400 <= r.status < 500 or r.status == 201, "a target_dir that looks like an option is not run as one", r)
    t.eq(out(b, "ls /workspace | grep -c pwned || true"), "0\n", "no option injection ran (no pwned files)", None)
    r = b.post(GIT, {"repo_url": "ext::sh -c touch% /workspace/pwned5", "target_dir": "/workspace/ext"}, timeout=60)
    t.ok(400 <= r.status < 500 and out(b, "test -e /workspace/pwned5 && echo ran || echo no") == "no\n",
         "an ext:: URL does not run a command", r)
    for body, what in [({}, "no repo_url"), ({"repo_url": 5}, "repo_url not a string"),
                       ({"repo_url": "file:///workspace/origin.git", "depth": 0}, "depth 0"),
                       ({"repo_url": "file:///workspace/origin.git", "depth": "1"}, "depth a string"),
                       ({"repo_url": "file:///workspace/origin.git", "colour": 1}, "an unknown field")]:
        r = b.post(GIT, body)
        t.eq((r.status, r.err_code()), (400, "invalid_field"), "%s -> 400 invalid_field" % what, r)
    r = b.post("/v1/sandboxes/no-such-box/git/checkout", {"repo_url": "file:///workspace/origin.git"})
    t.eq(r.status, 404, "git/checkout on a missing sandbox -> 404", r)
    r = b.post(GIT, {"repo_url": "file:///workspace/origin.git", "target_dir": "/workspace/bobclone"}, tenant="bob")
    t.eq(r.status, 404, "bob's git/checkout in alice's sandbox -> 404", r)
    t.eq(out(b, "test -e /workspace/bobclone && echo yes || echo no"), "no\n", "and it cloned nothing", None)


def test_env(t, b):
    r = b.post(BASE + "/sessions", {"id": "early"})
    t.eq(r.status, 201, "create a session before setting the env", r)
    r = b.post(BASE + "/processes", {"command": "sleep 3400"})
    t.eq(r.status, 201, "start a process before setting the env", r)
    b.exec(SB, "true")  # start the default session too
    before = b.post(BASE + "/contexts", {"language": "python"}, timeout=90)
    t.eq(before.status, 201, "create a Python context before setting the env", before)

    r = b.post(ENV, {"SBX_A": "1", "SBX_SP": "with space = and \u00e9"})
    t.eq(r.status, 200, "POST env answers 200", r)
    t.eq(r.get("env"), {"SBX_BASE": "base", "SBX_A": "1", "SBX_SP": "with space = and \u00e9"},
         "it answers the whole sandbox env", r)
    g = b.get(BASE)
    t.eq(g.get("env"), {"SBX_BASE": "base", "SBX_A": "1", "SBX_SP": "with space = and \u00e9"},
         "GET sandbox shows the new env", g)
    want = "1|with space = and \u00e9\n"
    r = b.exec(SB, 'echo "$SBX_A|$SBX_SP"')
    t.eq(r.get("stdout"), want, "a plain exec (default session, started before) sees it", r)
    r = b.exec(SB, 'echo "$SBX_A|$SBX_SP"', cwd="/tmp")
    t.eq(r.get("stdout"), want, "an exec with cwd sees it", r)
    r = b.exec(SB, 'echo "$SBX_A|$SBX_SP"', session="early")
    t.eq(r.get("stdout"), want, "a session created before the change sees it", r)
    r = b.post(BASE + "/sessions", {"id": "late"})
    t.eq((r.get("env") or {}).get("SBX_A"), "1", "a new session's env has it", r)
    r = b.exec(SB, 'echo "$SBX_A"', session="late")
    t.eq(r.get("stdout"), "1\n", "a command in the new session sees it", r)
    r = b.post(BASE + "/processes", {"command": 'echo "$SBX_A|$SBX_SP"'})
    pid = r.get("id")
    wait_until(lambda: b.get(BASE + "/processes/%s" % pid).get("status") == "exited", 5)
    lg = b.get(BASE + "/processes/%s/logs" % pid)
    t.eq(lg.get("stdout"), want, "a new background process sees it", lg)
    r = b.post(BASE + "/contexts", {"language": "python"}, timeout=90)
    ctx = r.get("id")
    t.eq(r.status, 201, "create a Python context after the change", r)
    r = b.post(BASE + "/code", {"code": "import os\n(os.environ.get('SBX_A'), os.environ.get('SBX_SP'))",
                                "context_id": ctx}, timeout=90)
    t.eq(main_text(r), "('1', 'with space = and \u00e9')", "a new Python context sees it in os.environ", r)
    r = b.post(BASE + "/contexts", {"language": "python", "env": {"SBX_A": "ctx"}}, timeout=90)
    r = b.post(BASE + "/code", {"code": "import os\nos.environ.get('SBX_A')", "context_id": r.get("id")}, timeout=90)
    t.eq(main_text(r), "'ctx'", "a context's own env wins over the sandbox env", r)
    r = b.post(BASE + "/code", {"code": "import os\nrepr(os.environ.get('SBX_A'))",
                                "context_id": before.get("id")}, timeout=90)
    t.eq(main_text(r), "'None'", "a running kernel keeps the env it had (documented)", r)
    r = b.exec(SB, 'echo "$SBX_A"', env={"SBX_A": "req"}, cwd="/workspace")
    t.eq(r.get("stdout"), "req\n", "a request's env wins over the sandbox env", r)

    r = b.post(ENV, {"SBX_A": "2"})
    r = b.exec(SB, 'echo "$SBX_A"', session="early")
    t.eq(r.get("stdout"), "2\n", "changing a value reaches an existing session", r)
    r = b.post(ENV, {"SBX_A": None})
    t.eq(r.get("env"), {"SBX_BASE": "base", "SBX_SP": "with space = and \u00e9"}, "null unsets SBX_A", r)
    r = b.exec(SB, 'echo "${SBX_A-unset}"')
    t.eq(r.get("stdout"), "unset\n", "a plain exec no longer sees it", r)
    r = b.exec(SB, 'echo "${SBX_A-unset}"', session="early")
    t.eq(r.get("stdout"), "unset\n", "an existing session no longer sees it", r)
    r = b.post(BASE + "/processes", {"command": 'echo "${SBX_A-unset}"'})
    pid = r.get("id")
    wait_until(lambda: b.get(BASE + "/processes/%s" % pid).get("status") == "exited", 5)
    t.eq(b.get(BASE + "/processes/%s/logs" % pid).get("stdout"), "unset\n", "nor a new process", None)
    r = b.post(ENV, {"SBX_NEVER": None})
    t.eq(r.status, 200, "unsetting a variable that is not set is fine", r)
    r = b.post(ENV, {})
    t.eq((r.status, r.get("env")), (200, {"SBX_BASE": "base", "SBX_SP": "with space = and \u00e9"}),
         "an empty object changes nothing", r)
    b.delete(BASE + "/processes")


def test_env_validation(t, b):
    for body, what in [({"1BAD": "x"}, "a name starting with a digit"), ({"A=B": "x"}, "a name with '='"),
                       ({"": "x"}, "an empty name"), ({"A B": "x"}, "a name with a space"),
                       ({"A": 1}, "a number value"), ({"A": ["x"]}, "a list value"), ({"A": True}, "a boolean value")]:
        r = b.post(ENV, body)
        t.eq((r.status, r.err_code()), (400, "invalid_field"), "env with %s -> 400 invalid_field" % what, r)
    r = b.post(ENV, {"A": "x\u0000y"})
    t.eq(r.status, 400, "env with a value containing NUL -> 400", r)
    r = b.post(ENV, raw=b"[1]")
    t.eq((r.status, r.err_code()), (400, "invalid_json"), "a body that is not an object -> 400 invalid_json", r)
    r = b.post(ENV, {"GOOD": "x", "1BAD": "y"})
    t.eq(r.status, 400, "one bad name refuses the whole request", r)
    g = b.get(BASE)
    t.ok("GOOD" not in (g.get("env") or {}), "and sets nothing", g)
    r = b.post(ENV, {"SBX_T": "x"}, tenant="bob")
    t.eq(r.status, 404, "bob's POST env on alice's sandbox -> 404", r)
    t.ok("SBX_T" not in (b.get(BASE).get("env") or {}), "and alice's env is unchanged", None)
    r = b.post("/v1/sandboxes/no-such-box/env", {"A": "1"})
    t.eq(r.status, 404, "env of a missing sandbox -> 404", r)


if __name__ == "__main__":
    harness.main([test_setup, test_clone, test_git_errors, test_env, test_env_validation])
