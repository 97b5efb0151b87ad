/* test_agent_link.c - TAP tests for the broker's agent link against the
   real sandbox-agent: only the peer holding the sandbox's key is the
   agent; anything else on the socket (tenant code can connect to it)
   changes nothing for calls in flight. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "../../src/agent_link.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "tap.h"

#define CID     "sbx-linktest"
#define CID2    "sbx-linktest2"
#define KEY     "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
#define BAD_KEY "10112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

static char s_tmp[256];

static pid_t
s_spawn_agent (const char *bin, const char *sock, const char *key, const char *log_name)
{
    char endpoint[400], log_path[400];
    snprintf (endpoint, sizeof endpoint, "ipc://%s", sock);
    snprintf (log_path, sizeof log_path, "%s/%s", s_tmp, log_name);
    pid_t pid = fork ();
    if (pid != 0)
        return pid;
    int fd = open (log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0)
        dup2 (fd, 2);
    setenv ("SANDBOXD_AGENT_KEY", key, 1);
    execl (bin, bin, endpoint, (char *)NULL);
    _exit (127);
}

static int
s_raw_connect (const char *sock)
{
    int fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (fd < 0 || strlen (sock) >= sizeof sa.sun_path)
        return -1;
    memcpy (sa.sun_path, sock, strlen (sock) + 1);
    if (connect (fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close (fd);
        return -1;
    }
    return fd;
}

/* A ZeroMQ peer that claims to be the agent and sends what looks like
   replies: with no credentials (mechanism NULL) or the wrong key. */
static void *
s_fake_dealer (void *ctx, const char *sock, const char *password)
{
    char endpoint[400];
    snprintf (endpoint, sizeof endpoint, "ipc://%s", sock);
    void *d = zmq_socket (ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt (d, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt (d, ZMQ_ROUTING_ID, "agent", 5);
    if (password) {
        zmq_setsockopt (d, ZMQ_PLAIN_USERNAME, "agent", 5);
        zmq_setsockopt (d, ZMQ_PLAIN_PASSWORD, password, strlen (password));
    }
    zmq_connect (d, endpoint);
    static const char *forged[]
        = { "{\"ev\":\"hello\",\"version\":1,\"pid\":1}", "{\"ev\":\"exit\",\"exit_code\":0}",
            "{\"ev\":\"error\",\"code\":\"busy\",\"message\":\"forged\"}" };
    for (size_t i = 0; i < sizeof forged / sizeof forged[0]; i++) {
        zmq_send (d, i ? "tag" : "", i ? 3 : 0, ZMQ_SNDMORE | ZMQ_DONTWAIT);
        zmq_send (d, forged[i], strlen (forged[i]), ZMQ_DONTWAIT);
    }
    return d;
}

/* Collect a call's events until a final one or timeout_ms. */
typedef struct {
    int starts, exits, errors, others, exit_code;
    char out[256], error[256];
} events_t;

static void
s_collect (agent_call_t *call, events_t *e, int timeout_ms)
{
    memset (e, 0, sizeof *e);
    e->exit_code = -1;
    int64_t end = util_mono_ms () + timeout_ms;
    for (;;) {
        int64_t left = end - util_mono_ms ();
        json_t *h = NULL;
        char *payload = NULL;
        size_t len = 0;
        err_t err = { 0 };
        if (left <= 0 || agent_call_recv (call, (int)left, &h, &payload, &len, &err) <= 0)
            return;
        const char *ev = json_string_value (json_object_get (h, "ev"));
        bool last = false;
        if (!strcmp (ev, "start"))
            e->starts++;
        else if (!strcmp (ev, "stdout"))
            strncat (e->out, payload ? payload : "",
                     len < sizeof e->out - strlen (e->out) - 1
                         ? len
                         : sizeof e->out - strlen (e->out) - 1);
        else if (!strcmp (ev, "exit")) {
            e->exits++;
            e->exit_code = (int)json_integer_value (json_object_get (h, "exit_code"));
            last = true;
        }
        else if (!strcmp (ev, "error")) {
            e->errors++;
            snprintf (e->error, sizeof e->error, "%s: %s",
                      json_string_value (json_object_get (h, "code")),
                      json_string_value (json_object_get (h, "message")));
            last = true;
        }
        else if (strcmp (ev, "stderr") != 0)
            e->others++;
        json_decref (h);
        free (payload);
        if (last)
            return;
    }
}

static agent_call_t *
s_exec (agent_link_t *link, const char *cid, const char *command)
{
    json_t *h = json_pack ("{s:s, s:s, s:s}", "op", "exec", "command", command, "cwd", "/tmp");
    err_t err = { 0 };
    agent_call_t *call = agent_call_new (link, cid, h, NULL, 0, 3000, &err);
    json_decref (h);
    return call;
}

int
main (void)
{
    const char *bin = getenv ("SANDBOXD_AGENT_BIN");
    if (!bin || !*bin)
        bin = "src/agent/sandbox-agent";
    signal (SIGPIPE, SIG_IGN);
    snprintf (s_tmp, sizeof s_tmp, "/tmp/test_agent_link.XXXXXX");
    if (!mkdtemp (s_tmp))
        return 1;
    char sessions[400], sock[400], sock2[400];
    snprintf (sessions, sizeof sessions, "%s/sessions", s_tmp);
    setenv ("SANDBOXD_AGENT_SESSION_DIR", sessions, 1);
    snprintf (sock, sizeof sock, "%s/a.sock", s_tmp);
    snprintf (sock2, sizeof sock2, "%s/b.sock", s_tmp);

    err_t err = { 0 };
    agent_link_t *link = agent_link_new (4 << 20, &err);
    ok (link != NULL, "agent link starts");
    if (!link)
        return tap_done ();
    ok (agent_link_attach (link, CID, sock, "short", &err) < 0, "a malformed key is refused");
    ok (agent_link_attach (link, CID, sock, KEY, &err) == 0, "attach binds the socket");
    pid_t agent = s_spawn_agent (bin, sock, KEY, "agent.log");
    ok (agent > 0 && agent_link_ping (link, CID, 5000, &err) == 0,
        "the agent with the right key answers ping");

    /* While an exec is in flight, everything tenant code could do to the
       socket: garbage, a frame header announcing 2 GB, an instant hang-up,
       many connections, forged replies with and without a (wrong) key. */
    agent_call_t *call = s_exec (link, CID, "sleep 1.5; echo ok");
    ok (call != NULL, "exec sent");
    void *ctx = zmq_ctx_new ();
    int raw[24], nraw = 0;
    raw[nraw] = s_raw_connect (sock);
    if (raw[nraw] >= 0) {
        static const char big[] = "\xff\0\0\0\0\0\0\0\x01\x7f\x03\x00\x4e\x55\x4c\x4c";
        ssize_t w = write (raw[nraw], big, sizeof big - 1);
        w = write (raw[nraw], "\x02\x7f\xff\xff\xff\xff\xff\xff\xff", 9);
        (void)w;
        nraw++;
    }
    for (int i = 0; i < 20; i++) {
        raw[nraw] = s_raw_connect (sock);
        if (raw[nraw] >= 0)
            nraw++;
    }
    void *fake_null = s_fake_dealer (ctx, sock, NULL);
    void *fake_bad = s_fake_dealer (ctx, sock, BAD_KEY);
    ok (nraw == 21, "raw peers can connect to the socket (%d)", nraw);
    usleep (300 * 1000);
    for (int i = 0; i < nraw; i++)
        close (raw[i]);
    zmq_close (fake_null);
    zmq_close (fake_bad);
    usleep (200 * 1000);
    events_t e;
    s_collect (call, &e, 5000);
    agent_call_destroy (&call);
    ok (e.starts == 1 && e.exits == 1 && e.exit_code == 0 && e.errors == 0 && e.others == 0
            && !strcmp (e.out, "ok\n"),
        "the exec in flight completes normally (out '%s', error '%s')", e.out, e.error);
    ok (agent_link_ping (link, CID, 2000, &err) == 0, "the agent still answers afterwards");

    /* The real agent going away still fails what is in flight at once. */
    call = s_exec (link, CID, "sleep 30");
    usleep (300 * 1000);
    kill (agent, SIGKILL);
    waitpid (agent, NULL, 0);
    int64_t t0 = util_mono_ms ();
    s_collect (call, &e, 5000);
    agent_call_destroy (&call);
    ok (e.errors == 1 && strstr (e.error, "disconnected") && util_mono_ms () - t0 < 2000,
        "the authenticated agent's disconnect fails the call in flight (%s)", e.error);

    /* The agent comes back (a restarted container, or the agent after a
       broker restart) with the same key: served again. */
    agent = s_spawn_agent (bin, sock, KEY, "agent2.log");
    err_clear (&err);
    ok (agent > 0 && agent_link_ping (link, CID, 5000, &err) == 0,
        "an agent with the kept key is accepted again (%s)", err.message);

    /* An agent with the wrong key is never heard: its sandbox answers no
       ping. */
    ok (agent_link_attach (link, CID2, sock2, KEY, &err) == 0, "a second sandbox attaches");
    pid_t bad = s_spawn_agent (bin, sock2, BAD_KEY, "agent-bad.log");
    ok (bad > 0 && agent_link_ping (link, CID2, 1500, &err) < 0 && err.status == 503,
        "an agent with the wrong key cannot talk to the broker");
    /* It was the key: attached again with the one that agent holds, the
       same agent is served. */
    agent_link_detach (link, CID2);
    ok (agent_link_attach (link, CID2, sock2, BAD_KEY, &err) == 0, "re-attached with its key");
    ok (agent_link_ping (link, CID2, 5000, &err) == 0, "and then that agent is served");

    kill (agent, SIGKILL);
    kill (bad, SIGKILL);
    waitpid (agent, NULL, 0);
    waitpid (bad, NULL, 0);
    agent_link_detach (link, CID);
    agent_link_detach (link, CID2);
    agent_link_destroy (&link);
    zmq_ctx_term (ctx);
    if (!getenv ("KEEP_TMP"))
        util_rm_rf (s_tmp);
    return tap_done ();
}
