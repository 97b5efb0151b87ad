/* test_agent.c - TAP tests for sandbox-agent, driven over a real ROUTER
   socket the way the broker drives it (docs/agent-protocol.md). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "../../src/util.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#define PLAN       60
#define BUSY_COUNT 256
#define OUT_CAP    (512 * 1024)

static int s_num, s_failed, s_unexpected;
static void *s_ctx, *s_router;
static char s_endpoint[600];
static char s_tmpdir[512];
static pid_t s_agent = -1;

/* ------------------------------------------------------------------ TAP */

static bool __attribute__ ((format (printf, 2, 3))) s_ok (bool cond, const char *fmt, ...)
{
    va_list ap;
    va_start (ap, fmt);
    printf ("%sok %d - ", cond ? "" : "not ", ++s_num);
    vprintf (fmt, ap);
    printf ("\n");
    va_end (ap);
    fflush (stdout);
    if (!cond)
        s_failed++;
    return cond;
}

static void __attribute__ ((format (printf, 1, 2))) s_diag (const char *fmt, ...)
{
    va_list ap;
    va_start (ap, fmt);
    printf ("# ");
    vprintf (fmt, ap);
    printf ("\n");
    va_end (ap);
    fflush (stdout);
}

/* ------------------------------------------------------------- messages */

/* One message from the agent: [tag][header][payload?] after the routing id. */
typedef struct {
    char tag[80];
    json_t *hdr;
    unsigned char *payload;
    size_t payload_len;
    bool has_payload;
} msg_t;

static void
s_msg_clear (msg_t *m)
{
    json_decref (m->hdr);
    free (m->payload);
    memset (m, 0, sizeof *m);
}

static const char *
s_ev (const msg_t *m)
{
    const char *ev = json_string_value (json_object_get (m->hdr, "ev"));
    return ev ? ev : "";
}

/* Send raw frames to the agent: the routing id is prepended. */
static int
s_send_frames (const void *const *frames, const size_t *lens, int n)
{
    if (zmq_send (s_router, "agent", 5, ZMQ_SNDMORE) < 0)
        return -1;
    for (int i = 0; i < n; i++)
        if (zmq_send (s_router, frames[i], lens[i], i + 1 < n ? ZMQ_SNDMORE : 0) < 0)
            return -1;
    return 0;
}

/* Send [tag][header] or [tag][header][payload]. */
static int
s_send (const char *tag, const char *header, const void *payload, size_t len)
{
    const void *frames[] = { tag, header, payload };
    size_t lens[] = { strlen (tag), strlen (header), len };
    return s_send_frames (frames, lens, payload ? 3 : 2);
}

/* Receive one message within timeout_ms. 0, or -1 on timeout. */
static int
s_recv (msg_t *m, int timeout_ms)
{
    memset (m, 0, sizeof *m);
    zmq_pollitem_t item = { .socket = s_router, .events = ZMQ_POLLIN };
    if (zmq_poll (&item, 1, timeout_ms) <= 0)
        return -1;
    zmq_msg_t frames[4];
    int n = 0;
    bool more = true;
    while (more) {
        zmq_msg_t f;
        zmq_msg_init (&f);
        if (zmq_msg_recv (&f, s_router, 0) < 0) {
            zmq_msg_close (&f);
            break;
        }
        more = zmq_msg_more (&f);
        if (n < 4)
            frames[n++] = f;
        else
            zmq_msg_close (&f);
    }
    if (n >= 2)
        snprintf (m->tag, sizeof m->tag, "%.*s", (int)zmq_msg_size (&frames[1]),
                  (char *)zmq_msg_data (&frames[1]));
    if (n >= 3)
        m->hdr = json_loadb (zmq_msg_data (&frames[2]), zmq_msg_size (&frames[2]), 0, NULL);
    if (n >= 4) {
        m->has_payload = true;
        m->payload_len = zmq_msg_size (&frames[3]);
        m->payload = malloc (m->payload_len + 1);
        memcpy (m->payload, zmq_msg_data (&frames[3]), m->payload_len);
    }
    for (int i = 0; i < n; i++)
        zmq_msg_close (&frames[i]);
    return 0;
}

/* Wait for a reply with this tag, logging and dropping anything else. */
static int
s_expect (const char *tag, msg_t *m, int timeout_ms)
{
    int64_t end = util_mono_ms () + timeout_ms;
    for (;;) {
        int64_t left = end - util_mono_ms ();
        if (left < 0 || s_recv (m, (int)left) < 0)
            return -1;
        if (strcmp (m->tag, tag) == 0)
            return 0;
        s_diag ("unexpected message tag '%s' ev '%s'", m->tag, s_ev (m));
        s_unexpected++;
        s_msg_clear (m);
    }
}

/* Send a request and wait for its single reply. */
static int
s_request (const char *tag, const char *header, msg_t *m, int timeout_ms)
{
    if (s_send (tag, header, NULL, 0) < 0)
        return -1;
    return s_expect (tag, m, timeout_ms);
}

/* True if the agent still answers ping. */
static bool
s_ping_ok (void)
{
    msg_t m;
    bool ok
        = s_request ("ping", "{\"op\":\"ping\"}", &m, 2000) == 0 && strcmp (s_ev (&m), "pong") == 0;
    s_msg_clear (&m);
    return ok;
}

/* Send a request that must be answered by an error event with `code`. */
static bool
s_expect_error (const char *tag, const char *header, const char *code)
{
    msg_t m;
    bool ok = s_request (tag, header, &m, 2000) == 0 && strcmp (s_ev (&m), "error") == 0
              && json_is_string (json_object_get (m.hdr, "message"))
              && strcmp (json_string_value (json_object_get (m.hdr, "code")), code) == 0;
    if (!ok && m.hdr) {
        char *t = json_dumps (m.hdr, JSON_COMPACT);
        s_diag ("got %s", t);
        free (t);
    }
    s_msg_clear (&m);
    return ok;
}

/* ------------------------------------------------------------ exec runs */

/* Everything the agent reported about one exec. */
typedef struct {
    char tag[32];
    bool started, errored, exited, bad_order;
    pid_t pid;
    char code[32], message[512];
    char *out, *err;
    size_t out_len, err_len, max_chunk;
    int exit_code;
    char signal[16];
    bool timed_out, truncated;
    long long duration_ms;
    int64_t t_sent, t_done;
} run_t;

static void
s_run_init (run_t *r, const char *tag)
{
    memset (r, 0, sizeof *r);
    snprintf (r->tag, sizeof r->tag, "%s", tag);
    r->out = calloc (1, OUT_CAP + 1);
    r->err = calloc (1, OUT_CAP + 1);
    r->exit_code = -1;
}

static void
s_run_free (run_t *r)
{
    free (r->out);
    free (r->err);
    r->out = r->err = NULL;
}

static bool
s_run_done (const run_t *r)
{
    return r->exited || r->errored;
}

/* Fold one message into the run it belongs to. */
static void
s_run_feed (run_t *r, const msg_t *m)
{
    const char *ev = s_ev (m);
    if (s_run_done (r))
        r->bad_order = true;
    if (strcmp (ev, "start") == 0) {
        if (r->started)
            r->bad_order = true;
        r->started = true;
        r->pid = (pid_t)json_integer_value (json_object_get (m->hdr, "pid"));
    }
    else if (strcmp (ev, "stdout") == 0 || strcmp (ev, "stderr") == 0) {
        bool is_out = ev[3] == 'o';
        char *buf = is_out ? r->out : r->err;
        size_t *len = is_out ? &r->out_len : &r->err_len;
        if (!r->started || !m->has_payload)
            r->bad_order = true;
        if (m->payload_len > r->max_chunk)
            r->max_chunk = m->payload_len;
        size_t room = OUT_CAP - (*len < OUT_CAP ? *len : OUT_CAP);
        memcpy (buf + (*len < OUT_CAP ? *len : OUT_CAP), m->payload,
                m->payload_len < room ? m->payload_len : room);
        *len += m->payload_len;
    }
    else if (strcmp (ev, "exit") == 0) {
        if (!r->started)
            r->bad_order = true;
        r->exited = true;
        r->t_done = util_mono_ms ();
        r->exit_code = (int)json_integer_value (json_object_get (m->hdr, "exit_code"));
        const char *sig = json_string_value (json_object_get (m->hdr, "signal"));
        snprintf (r->signal, sizeof r->signal, "%s", sig ? sig : "");
        r->timed_out = json_is_true (json_object_get (m->hdr, "timed_out"));
        r->truncated = json_is_true (json_object_get (m->hdr, "truncated"));
        r->duration_ms = json_integer_value (json_object_get (m->hdr, "duration_ms"));
    }
    else if (strcmp (ev, "error") == 0) {
        r->errored = true;
        r->t_done = util_mono_ms ();
        snprintf (r->code, sizeof r->code, "%s",
                  json_string_value (json_object_get (m->hdr, "code")) ?: "");
        snprintf (r->message, sizeof r->message, "%s",
                  json_string_value (json_object_get (m->hdr, "message")) ?: "");
    }
    else
        r->bad_order = true;
}

/* Collect events for runs[0..n) until all are done or timeout_ms passes. */
static void
s_collect (run_t *runs, int n, int timeout_ms)
{
    int64_t end = util_mono_ms () + timeout_ms;
    for (;;) {
        bool all = true;
        for (int i = 0; i < n; i++)
            all = all && s_run_done (&runs[i]);
        int64_t left = end - util_mono_ms ();
        msg_t m;
        if (all || left < 0 || s_recv (&m, (int)left) < 0)
            return;
        int i = 0;
        while (i < n && strcmp (runs[i].tag, m.tag) != 0)
            i++;
        if (i < n)
            s_run_feed (&runs[i], &m);
        else {
            s_diag ("unexpected message tag '%s' ev '%s'", m.tag, s_ev (&m));
            s_unexpected++;
        }
        s_msg_clear (&m);
    }
}

/* Send an exec (header built by the caller) and collect until it is done. */
static void
s_exec (run_t *r, const char *tag, json_t *hdr, const void *payload, size_t len, int timeout_ms)
{
    s_run_init (r, tag);
    char *text = json_dumps (hdr, JSON_COMPACT);
    json_decref (hdr);
    r->t_sent = util_mono_ms ();
    if (s_send (tag, text, payload, len) == 0)
        s_collect (r, 1, timeout_ms);
    free (text);
}

/* Start an exec and wait only for its start event. */
static bool
s_start (run_t *r, const char *tag, const char *command)
{
    s_run_init (r, tag);
    json_t *hdr = json_pack ("{s:s, s:s, s:s}", "op", "exec", "command", command, "cwd", "/tmp");
    char *text = json_dumps (hdr, JSON_COMPACT);
    json_decref (hdr);
    r->t_sent = util_mono_ms ();
    msg_t m;
    bool ok = s_send (tag, text, NULL, 0) == 0 && s_expect (tag, &m, 2000) == 0;
    free (text);
    if (ok) {
        s_run_feed (r, &m);
        s_msg_clear (&m);
    }
    return ok && r->started && r->pid > 0;
}

static json_t *
s_exec_hdr (const char *command)
{
    return json_pack ("{s:s, s:s, s:s}", "op", "exec", "command", command, "cwd", "/tmp");
}

/* ------------------------------------------------------------ processes */

/* Reap whatever is ours (we are a subreaper) except the agent itself. */
static void
s_reap_orphans (void)
{
    for (;;) {
        int st;
        pid_t pid = waitpid (-1, &st, WNOHANG | __WNOTHREAD);
        if (pid <= 0)
            return;
        if (pid == s_agent) {
            s_diag ("agent exited unexpectedly (status %d)", st);
            s_agent = -1;
        }
    }
}

/* True once no process is left in process group pgid (waits up to ms). */
static bool
s_group_gone (pid_t pgid, int ms)
{
    int64_t end = util_mono_ms () + ms;
    for (;;) {
        s_reap_orphans ();
        if (kill (-pgid, 0) < 0 && errno == ESRCH)
            return true;
        if (util_mono_ms () > end)
            return false;
        usleep (10000);
    }
}

/* True once /proc/<pid> is gone, i.e. the process was reaped (waits up to ms). */
static bool
s_pid_reaped (pid_t pid, int ms)
{
    char path[64];
    snprintf (path, sizeof path, "/proc/%d", (int)pid);
    int64_t end = util_mono_ms () + ms;
    struct stat st;
    while (stat (path, &st) == 0) {
        if (util_mono_ms () > end)
            return false;
        usleep (10000);
    }
    return true;
}

static pid_t
s_spawn_agent (const char *bin, const char *log_path)
{
    pid_t pid = fork ();
    if (pid != 0)
        return pid;
    int fd = open (log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0)
        dup2 (fd, 2);
    execl (bin, bin, s_endpoint, (char *)NULL);
    fprintf (stderr, "exec %s: %s\n", bin, strerror (errno));
    _exit (127);
}

static void *
s_bind_router (void)
{
    void *r = zmq_socket (s_ctx, ZMQ_ROUTER);
    int one = 1, zero = 0;
    zmq_setsockopt (r, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt (r, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_bind (r, s_endpoint) < 0) {
        s_diag ("bind %s: %s", s_endpoint, zmq_strerror (zmq_errno ()));
        zmq_close (r);
        return NULL;
    }
    return r;
}

/* Wait for a hello on the current router; true if it looks right. */
static bool
s_wait_hello (int timeout_ms)
{
    msg_t m;
    bool ok = s_expect ("", &m, timeout_ms) == 0 && strcmp (s_ev (&m), "hello") == 0
              && json_integer_value (json_object_get (m.hdr, "version")) == 1
              && json_integer_value (json_object_get (m.hdr, "pid")) == s_agent;
    s_msg_clear (&m);
    return ok;
}

/* Print the last lines of the agent's log as TAP diagnostics. */
static void
s_dump_log (const char *log_path)
{
    static char lines[40][512];
    int n = 0;
    FILE *f = fopen (log_path, "r");
    if (!f)
        return;
    while (fgets (lines[n % 40], sizeof lines[0], f))
        n++;
    fclose (f);
    s_diag ("agent log (last %d lines):", n < 40 ? n : 40);
    for (int i = n < 40 ? 0 : n - 40; i < n; i++) {
        char *line = lines[i % 40];
        line[strcspn (line, "\n")] = '\0';
        s_diag ("  %s", line);
    }
}

/* ----------------------------------------------------------------- tests */

static void
s_test_basics (void)
{
    msg_t m;
    bool ok = s_request ("p1", "{\"op\":\"ping\"}", &m, 2000) == 0
              && strcmp (s_ev (&m), "pong") == 0
              && json_integer_value (json_object_get (m.hdr, "version")) == 1
              && json_integer_value (json_object_get (m.hdr, "running")) == 0;
    s_msg_clear (&m);
    s_ok (ok, "ping is answered by pong with version 1 and running 0");

    run_t r;
    s_exec (&r, "e1", s_exec_hdr ("echo hi; echo err >&2; exit 3"), NULL, 0, 3000);
    s_ok (r.started && r.pid > 0 && !r.bad_order, "exec sends start with a pid, events in order");
    s_ok (r.out_len == 3 && memcmp (r.out, "hi\n", 3) == 0, "stdout is forwarded");
    s_ok (r.err_len == 4 && memcmp (r.err, "err\n", 4) == 0, "stderr is forwarded");
    s_ok (r.exited && r.exit_code == 3 && r.signal[0] == '\0' && !r.timed_out && !r.truncated
              && r.duration_ms >= 0 && r.duration_ms < 2000,
          "exit reports exit_code 3, no signal, not timed out or truncated");
    s_run_free (&r);

    json_t *hdr = json_pack ("{s:s, s:s, s:s, s:{s:s, s:s}}", "op", "exec", "command",
                             "pwd; echo \"$FOO|$HOME|$USER|$LANG|${SANDBOXD_TEST_LEAK-unset}\"",
                             "cwd", "/tmp", "env", "FOO", "bar", "LANG", "C");
    s_exec (&r, "e2", hdr, NULL, 0, 3000);
    const char *want = "/tmp\nbar|/workspace|sandbox|C|unset\n";
    s_ok (r.exited && r.out_len == strlen (want) && memcmp (r.out, want, r.out_len) == 0,
          "cwd is applied; env is base env plus request env, request wins, nothing leaks");
    if (r.out_len)
        s_diag ("stdout: %.*s", (int)r.out_len, r.out);
    s_run_free (&r);

    hdr = json_pack ("{s:s, s:s, s:s}", "op", "exec", "command", "true", "cwd", "/nope");
    s_exec (&r, "e3", hdr, NULL, 0, 3000);
    s_ok (r.errored && !r.started && strcmp (r.code, "bad_cwd") == 0
              && strcmp (r.message, "cwd /nope: No such file or directory") == 0,
          "bad cwd is answered by error bad_cwd with a clear message");
    s_diag ("message: %s", r.message);
    s_run_free (&r);
    usleep (50000);
    int before = s_unexpected;
    s_ok (s_ping_ok () && s_unexpected == before,
          "no stray events after bad_cwd; agent still answers");
}

static void
s_test_stdin (void)
{
    size_t len = 200000;
    unsigned char *data = malloc (len);
    for (size_t i = 0; i < len; i++)
        data[i] = (unsigned char)(i * 7 + (i >> 8));
    run_t r;
    s_exec (&r, "in1", s_exec_hdr ("cat"), data, len, 3000);
    s_ok (r.exited && r.exit_code == 0 && r.out_len == len && memcmp (r.out, data, len) == 0,
          "stdin payload (200 KB, binary) is echoed by cat");
    s_ok (r.max_chunk > 0 && r.max_chunk <= 65536, "output chunks are at most 64 KiB (max %zu)",
          r.max_chunk);
    s_run_free (&r);

    s_exec (&r, "in2", s_exec_hdr ("exit 0"), data, len, 3000);
    s_ok (r.exited && r.exit_code == 0, "stdin payload the command never reads is dropped");
    s_run_free (&r);
    free (data);

    s_exec (&r, "in3", s_exec_hdr ("wc -c"), NULL, 0, 3000);
    s_ok (r.exited && r.out_len == 2 && memcmp (r.out, "0\n", 2) == 0,
          "without payload stdin is empty (/dev/null)");
    s_run_free (&r);
}

static void
s_test_timeout_and_limits (void)
{
    run_t r;
    json_t *hdr = json_pack ("{s:s, s:s, s:s, s:i}", "op", "exec", "command", "sleep 30 & sleep 30",
                             "cwd", "/tmp", "timeout_ms", 200);
    s_exec (&r, "t1", hdr, NULL, 0, 3000);
    s_ok (r.exited && r.timed_out && strcmp (r.signal, "KILL") == 0 && r.exit_code == 137,
          "timeout: exit with timed_out, signal KILL, exit_code 137");
    s_ok (r.exited && r.t_done - r.t_sent < 1000, "timeout: exit within 1 s (%lld ms)",
          (long long)(r.t_done - r.t_sent));
    s_ok (r.pid > 0 && s_group_gone (r.pid, 1000),
          "timeout: the whole process group, background child included, is dead");
    s_run_free (&r);

    hdr = json_pack ("{s:s, s:s, s:s, s:i}", "op", "exec", "command", "head -c 100000 /dev/zero",
                     "cwd", "/tmp", "max_output", 1000);
    s_exec (&r, "t2", hdr, NULL, 0, 3000);
    s_ok (r.exited && r.exit_code == 0 && r.out_len == 1000 && r.truncated,
          "max_output: exactly 1000 bytes forwarded, truncated (%zu)", r.out_len);
    s_run_free (&r);

    s_exec (&r, "t3", s_exec_hdr ("sleep 3 & echo x"), NULL, 0, 3000);
    s_ok (r.exited && r.exit_code == 0 && r.out_len == 2 && memcmp (r.out, "x\n", 2) == 0
              && r.t_done - r.t_sent < 1000,
          "background grandchild holding stdout: exit within 1 s (%lld ms)",
          (long long)(r.t_done - r.t_sent));
    if (r.pid > 0)
        kill (-r.pid, SIGKILL);
    s_run_free (&r);

    s_exec (&r, "t4", s_exec_hdr ("sleep 0.3 >/dev/null 2>&1 & echo $!"), NULL, 0, 3000);
    pid_t orphan = (pid_t)atoi (r.out);
    s_ok (r.exited && orphan > 0 && s_pid_reaped (orphan, 2000),
          "orphaned grandchild is reaped by the agent");
    s_run_free (&r);

    run_t two[2];
    s_run_init (&two[0], "c1");
    s_run_init (&two[1], "c2");
    s_send ("c1", "{\"op\":\"exec\",\"command\":\"sleep 0.3; echo a\",\"cwd\":\"/tmp\"}", NULL, 0);
    s_send ("c2", "{\"op\":\"exec\",\"command\":\"echo b; exit 5\",\"cwd\":\"/tmp\"}", NULL, 0);
    s_collect (two, 2, 3000);
    s_ok (two[0].exited && two[1].exited && two[0].exit_code == 0 && two[1].exit_code == 5
              && two[0].out_len == 2 && two[0].out[0] == 'a' && two[1].out_len == 2
              && two[1].out[0] == 'b' && !two[0].bad_order && !two[1].bad_order,
          "two concurrent execs complete independently");
    s_ok (two[1].t_done < two[0].t_done, "the short exec finishes before the long one");
    s_run_free (&two[0]);
    s_run_free (&two[1]);
}

static void
s_test_malformed (void)
{
    s_ok (s_expect_error ("m1", "{not json", "bad_request"), "invalid JSON → bad_request");
    s_ok (s_expect_error ("m2", "[1,2]", "bad_request"), "non-object header → bad_request");
    s_ok (s_expect_error ("m3", "{\"op\":\"frobnicate\"}", "bad_request"),
          "unknown op → bad_request");
    s_ok (s_expect_error ("m4", "{\"op\":42}", "bad_request"), "non-string op → bad_request");
    s_ok (s_expect_error ("m5", "{\"op\":\"exec\",\"command\":5}", "bad_request"),
          "non-string command → bad_request");
    s_ok (s_expect_error ("m6", "{\"op\":\"exec\",\"command\":\"true\",\"timeout_ms\":\"1\"}",
                          "bad_request"),
          "string timeout_ms → bad_request");
    s_ok (s_expect_error ("m7", "{\"op\":\"exec\",\"command\":\"true\",\"max_output\":-1}",
                          "bad_request"),
          "negative max_output → bad_request");
    s_ok (s_expect_error ("m8", "{\"op\":\"exec\",\"command\":\"true\",\"env\":{\"A=B\":\"x\"}}",
                          "bad_request"),
          "env key with '=' → bad_request");
    s_ok (s_expect_error ("m9", "{\"op\":\"exec\",\"command\":\"true\",\"env\":{\"A\":1}}",
                          "bad_request"),
          "non-string env value → bad_request");
    s_ok (s_expect_error ("m10", "{\"op\":\"exec\",\"command\":\"true\",\"env\":{\"\":\"x\"}}",
                          "bad_request"),
          "empty env key → bad_request");
    s_ok (s_expect_error ("m11", "{\"op\":\"exec\",\"command\":\"a\\u0000b\"}", "bad_request"),
          "NUL in command → bad_request");
    s_ok (s_expect_error ("m12", "{\"op\":\"exec\",\"command\":\"true\",\"timeout\":5}",
                          "bad_request"),
          "unknown field → bad_request");
    s_ok (s_expect_error ("m13", "{\"op\":\"ping\",\"op\":\"ping\"}", "bad_request"),
          "duplicate key → bad_request");

    json_t *env = json_object ();
    for (int i = 0; i < 300; i++) {
        char k[16];
        snprintf (k, sizeof k, "K%d", i);
        json_object_set_new (env, k, json_string ("v"));
    }
    json_t *hdr = json_pack ("{s:s, s:s, s:o}", "op", "exec", "command", "true", "env", env);
    char *text = json_dumps (hdr, JSON_COMPACT);
    s_ok (s_expect_error ("m14", text, "bad_request"), "more than 256 env entries → bad_request");
    free (text);
    json_decref (hdr);

    char *big = malloc (70000);
    memset (big, 'a', 69999);
    big[69999] = '\0';
    hdr = json_pack ("{s:s, s:s, s:{s:s}}", "op", "exec", "command", "true", "env", "BIG", big);
    text = json_dumps (hdr, JSON_COMPACT);
    s_ok (s_expect_error ("m15", text, "bad_request"), "env over 64 KiB → bad_request");
    free (text);
    json_decref (hdr);
    hdr = json_pack ("{s:s, s:s}", "op", "exec", "command", big);
    text = json_dumps (hdr, JSON_COMPACT);
    s_ok (s_expect_error ("m16", text, "bad_request"), "command over 64 KiB → bad_request");
    free (text);
    json_decref (hdr);
    free (big);

    size_t plen = 1024 * 1024 + 1;
    char *payload = calloc (1, plen);
    msg_t m;
    s_send ("m17", "{\"op\":\"exec\",\"command\":\"cat\"}", payload, plen);
    s_ok (s_expect ("m17", &m, 2000) == 0 && strcmp (s_ev (&m), "error") == 0,
          "payload over 1 MiB → error");
    s_msg_clear (&m);
    free (payload);

    const void *f5[] = { "m18", "x", "y", "z", "w" };
    size_t l5[] = { 3, 1, 1, 1, 1 };
    s_send_frames (f5, l5, 5);
    s_ok (s_expect ("m18", &m, 2000) == 0 && strcmp (s_ev (&m), "error") == 0, "5 frames → error");
    s_msg_clear (&m);

    const void *f3[] = { "m19", "\x01\xff\xfe garbage", "more garbage" };
    size_t l3[] = { 3, 12, 12 };
    s_send_frames (f3, l3, 3);
    s_ok (s_expect ("m19", &m, 2000) == 0 && strcmp (s_ev (&m), "error") == 0,
          "3 frames of binary garbage → error");
    s_msg_clear (&m);

    const void *f1[] = { "m20" };
    size_t l1[] = { 3 };
    s_send_frames (f1, l1, 1);
    s_ok (s_expect ("m20", &m, 2000) == 0 && strcmp (s_ev (&m), "error") == 0,
          "single frame → error");
    s_msg_clear (&m);

    char longtag[100];
    memset (longtag, 't', sizeof longtag);
    const void *fl[] = { longtag, "{\"op\":\"ping\"}" };
    size_t ll[] = { sizeof longtag, 13 };
    s_send_frames (fl, ll, 2);
    const void *fe[] = { "", "" };
    size_t le[] = { 0, 0 };
    s_send_frames (fe, le, 2);
    s_ok (s_expect ("", &m, 2000) == 0 && strcmp (s_ev (&m), "error") == 0,
          "oversized tag is dropped; empty header → error");
    s_msg_clear (&m);

    s_ok (s_expect_error ("m21", "{\"op\":\"ping\",\"x\":1}", "bad_request"),
          "ping with extra field → bad_request");
    s_ok (s_ping_ok (), "agent still answers ping after malformed input");
}

static void
s_test_signal (void)
{
    run_t r;
    s_ok (s_start (&r, "s1", "sleep 30"), "sleep 30 started");
    char hdr[128];
    msg_t m;
    snprintf (hdr, sizeof hdr, "{\"op\":\"signal\",\"pid\":%d,\"signal\":\"TERM\"}", (int)r.pid);
    bool ok = s_request ("s2", hdr, &m, 2000) == 0 && strcmp (s_ev (&m), "ok") == 0;
    s_msg_clear (&m);
    s_ok (ok, "signal op answers ok");
    s_collect (&r, 1, 2000);
    s_ok (r.exited && r.exit_code == 143 && strcmp (r.signal, "TERM") == 0 && !r.timed_out,
          "signalled exec exits with signal TERM, exit_code 143");
    s_run_free (&r);

    snprintf (hdr, sizeof hdr, "{\"op\":\"signal\",\"pid\":%d,\"signal\":\"KILL\"}", (int)r.pid);
    s_ok (s_expect_error ("s3", hdr, "not_found"), "signal to a finished exec → not_found");
    snprintf (hdr, sizeof hdr, "{\"op\":\"signal\",\"pid\":%d,\"signal\":\"KILL\"}",
              (int)getpid ());
    s_ok (s_expect_error ("s4", hdr, "not_found"),
          "signal to a process the agent did not start → not_found");
    s_ok (s_expect_error ("s5", "{\"op\":\"signal\",\"pid\":1,\"signal\":\"STOP\"}", "bad_request"),
          "unsupported signal name → bad_request");
    s_ok (
        s_expect_error ("s6", "{\"op\":\"signal\",\"pid\":-1,\"signal\":\"KILL\"}", "bad_request"),
        "negative pid → bad_request");
}

static void
s_test_busy (void)
{
    static run_t runs[BUSY_COUNT];
    char tag[16];
    int started = 0;
    for (int i = 0; i < BUSY_COUNT; i++) {
        snprintf (tag, sizeof tag, "b%d", i);
        s_run_init (&runs[i], tag);
        s_send (tag, "{\"op\":\"exec\",\"command\":\"exec sleep 30\",\"cwd\":\"/tmp\"}", NULL, 0);
    }
    int64_t end = util_mono_ms () + 15000;
    while (started < BUSY_COUNT && util_mono_ms () < end) {
        msg_t m;
        if (s_recv (&m, 1000) < 0)
            continue;
        int i = atoi (m.tag + 1);
        if (m.tag[0] == 'b' && i >= 0 && i < BUSY_COUNT) {
            s_run_feed (&runs[i], &m);
            started += strcmp (s_ev (&m), "start") == 0;
            if (strcmp (s_ev (&m), "error") == 0)
                s_diag ("%s: %s", m.tag, runs[i].message);
        }
        s_msg_clear (&m);
    }
    s_ok (started == BUSY_COUNT, "%d execs run at once (%d started)", BUSY_COUNT, started);
    s_ok (s_expect_error ("b-extra", "{\"op\":\"exec\",\"command\":\"true\",\"cwd\":\"/tmp\"}",
                          "busy"),
          "one more is answered by busy");
    for (int i = 0; i < BUSY_COUNT; i++) {
        char hdr[128];
        snprintf (hdr, sizeof hdr, "{\"op\":\"signal\",\"pid\":%d,\"signal\":\"KILL\"}",
                  (int)runs[i].pid);
        snprintf (tag, sizeof tag, "k%d", i);
        s_send (tag, hdr, NULL, 0);
    }
    int oks = 0, exits = 0;
    while ((oks < BUSY_COUNT || exits < BUSY_COUNT) && util_mono_ms () < end) {
        msg_t m;
        if (s_recv (&m, 1000) < 0)
            continue;
        oks += m.tag[0] == 'k' && strcmp (s_ev (&m), "ok") == 0;
        exits += m.tag[0] == 'b' && strcmp (s_ev (&m), "exit") == 0;
        s_msg_clear (&m);
    }
    s_ok (oks == BUSY_COUNT && exits == BUSY_COUNT, "all of them are killed by signal op");
    for (int i = 0; i < BUSY_COUNT; i++)
        s_run_free (&runs[i]);
    msg_t m;
    bool ok = s_request ("p2", "{\"op\":\"ping\"}", &m, 2000) == 0
              && json_integer_value (json_object_get (m.hdr, "running")) == 0;
    s_msg_clear (&m);
    s_ok (ok, "ping reports running 0 afterwards");
}

static void
s_test_reconnect (void)
{
    zmq_close (s_router);
    s_router = s_bind_router ();
    s_ok (s_router && s_wait_hello (3000), "after the broker rebinds, the agent says hello again");
    s_ok (s_router && s_ping_ok (), "and answers ping on the new socket");
}

static void
s_test_sigterm (void)
{
    run_t r;
    s_ok (s_start (&r, "x1", "sleep 30"), "sleep 30 started before SIGTERM");
    s_run_free (&r);
    kill (s_agent, SIGTERM);
    int status = -1;
    pid_t got = 0;
    int64_t end = util_mono_ms () + 3000;
    while (got == 0 && util_mono_ms () < end) {
        got = waitpid (s_agent, &status, WNOHANG);
        if (got == 0)
            usleep (10000);
    }
    s_ok (got == s_agent && WIFEXITED (status) && WEXITSTATUS (status) == 0,
          "agent exits 0 on SIGTERM");
    if (got == s_agent)
        s_agent = -1;
    s_ok (r.pid > 0 && s_group_gone (r.pid, 1000), "and kills running process groups");
}

int
main (void)
{
    const char *bin = getenv ("SANDBOXD_AGENT_BIN");
    if (!bin || !*bin)
        bin = "src/agent/sandbox-agent";
    const char *tmp = getenv ("TMPDIR");
    snprintf (s_tmpdir, sizeof s_tmpdir, "%s/test_agent.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    printf ("1..%d\n", PLAN);
    fflush (stdout);
    if (!mkdtemp (s_tmpdir)) {
        s_diag ("mkdtemp: %s", strerror (errno));
        return 1;
    }
    snprintf (s_endpoint, sizeof s_endpoint, "ipc://%s/agent.sock", s_tmpdir);
    char log_path[600];
    snprintf (log_path, sizeof log_path, "%s/agent.log", s_tmpdir);

    /* Orphans of the agent's children come to us, so we can reap them and
       tell a dead process group from a zombie one. */
    prctl (PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    setenv ("SANDBOXD_TEST_LEAK", "leaked", 1);
    signal (SIGPIPE, SIG_IGN);

    s_ctx = zmq_ctx_new ();
    s_router = s_bind_router ();
    s_agent = s_router ? s_spawn_agent (bin, log_path) : -1;
    if (s_ok (s_agent > 0 && s_wait_hello (5000), "agent connects and says hello")) {
        s_test_basics ();
        s_test_stdin ();
        s_test_timeout_and_limits ();
        s_test_malformed ();
        s_test_signal ();
        s_test_busy ();
        s_test_reconnect ();
        s_test_sigterm ();
    }

    if (s_agent > 0) {
        kill (s_agent, SIGKILL);
        waitpid (s_agent, NULL, 0);
    }
    s_reap_orphans ();
    if (s_failed || s_num != PLAN)
        s_dump_log (log_path);
    if (s_router)
        zmq_close (s_router);
    zmq_ctx_term (s_ctx);
    util_rm_rf (s_tmpdir);
    if (s_num != PLAN)
        s_diag ("ran %d tests, planned %d", s_num, PLAN);
    return s_failed == 0 && s_num == PLAN ? 0 : 1;
}
