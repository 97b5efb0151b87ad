/* agent.c - sandbox-agent: PID 1 of a sandbox; runs commands for the broker
   over ZeroMQ as described in docs/agent-protocol.md. Self-contained: it runs
   inside the container and links only libzmq and libjansson. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define AGENT_VERSION          1
#define AGENT_DEFAULT_ENDPOINT "ipc:///run/sandboxd/agent.sock"

#define MAX_EXECS        256
#define TAG_MAX          64
#define HEADER_MAX       (1024 * 1024)
#define PAYLOAD_MAX      (1024 * 1024)
#define COMMAND_MAX      (64 * 1024)
#define CWD_MAX          4096
#define ENV_MAX_ENTRIES  256
#define ENV_MAX_BYTES    (64 * 1024)
#define CHUNK_MAX        (64 * 1024)
#define OUTPUT_DEFAULT   (1024 * 1024)
#define OUTPUT_CLAMP     (64 * 1024 * 1024)
#define TIMEOUT_CLAMP_MS ((int64_t)1 << 40) /* ~35 years: no overflow below */
#define GRACE_MS         100
#define MSGS_PER_WAKEUP  64
#define NOFILE_WANT      4096
#define MONITOR_ENDPOINT "inproc://sandbox-agent-monitor"

/* Poll slots: socket, signalfd, monitor, then up to four fds per exec. */
#define POLL_FIXED 3
#define POLL_MAX   (POLL_FIXED + 4 * MAX_EXECS)

static const char *const s_base_env[]
    = { "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/workspace",
        "USER=sandbox", "LANG=C.UTF-8" };
#define BASE_ENV_COUNT (sizeof s_base_env / sizeof s_base_env[0])

static const struct {
    const char *name;
    int signo;
} s_signals[] = { { "TERM", SIGTERM }, { "KILL", SIGKILL }, { "INT", SIGINT },  { "HUP", SIGHUP },
                  { "QUIT", SIGQUIT }, { "USR1", SIGUSR1 }, { "USR2", SIGUSR2 } };

/* What the child reports on the exec-error pipe when it cannot start. */
typedef enum { STAGE_SETUP = 1, STAGE_CHDIR, STAGE_EXEC } child_stage_t;

typedef struct {
    int stage;
    int err;
} child_failure_t;

/* One command in flight, from fork until its exit (or error) event. */
typedef struct {
    bool used;
    unsigned char tag[TAG_MAX];
    size_t tag_len;
    pid_t pid;
    int status_fd; /* exec-error pipe; -1 once resolved */
    int out_fd, err_fd, in_fd;
    bool started; /* start event sent */
    char *cwd;    /* kept until start, for the bad_cwd message */
    unsigned char status_buf[sizeof (child_failure_t)];
    size_t status_len;
    unsigned char *in_buf; /* stdin payload still to write */
    size_t in_len, in_off;
    size_t max_output, out_sent, err_sent;
    bool truncated;
    int64_t fork_us;
    int64_t deadline_ms; /* 0: no timeout */
    bool timed_out;
    bool reaped;
    int wstatus;
    int64_t exit_us;
} exec_t;

/* What the child needs between fork and execve. Everything is prepared by
   the parent: libzmq runs threads, so the child may only make
   async-signal-safe calls. */
typedef struct {
    int in_fd, out_fd, err_fd, status_fd;
    const char *cwd;
    char *const *argv;
    char *const *envp;
    const struct rlimit *nofile; /* limit to restore, or NULL */
    unsigned max_fd;             /* for the close() fallback */
} child_spec_t;

/* A validated exec request; strings are borrowed from the JSON header. */
typedef struct {
    const char *command;
    const char *cwd;
    json_t *env;
    int64_t timeout_ms;
    size_t max_output;
} exec_req_t;

typedef enum { REF_STATUS, REF_STDOUT, REF_STDERR, REF_STDIN } ref_kind_t;

typedef struct {
    void *ctx;
    void *sock;
    void *monitor; /* PAIR receiving socket events, or NULL */
    int sig_fd;
    bool stop;
    exec_t execs[MAX_EXECS];
    size_t running;
    bool nofile_raised;
    struct rlimit nofile_orig;
    unsigned max_fd;
    zmq_pollitem_t items[POLL_MAX];
    struct {
        int slot;
        ref_kind_t kind;
    } refs[POLL_MAX];
    unsigned char chunk[CHUNK_MAX];
} agent_t;

/* Monotonic clock in microseconds. */
static int64_t
s_mono_us (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Per-request lines are DEBUG and dropped unless SANDBOXD_AGENT_DEBUG is
   set: agent.log sits on the broker's disk, and a tenant decides how many
   requests its sandbox gets. */
static bool s_debug;

/* One line to stderr: "2026-11-21T10:00:00.123Z INFO  sandbox-agent: msg".
   Control characters are blanked so input cannot forge extra lines. */
static void __attribute__ ((format (printf, 2, 3))) s_log (const char *level, const char *fmt, ...)
{
    if (!s_debug && strcmp (level, "DEBUG") == 0)
        return;
    char line[2048], ts[32], base[24];
    struct timespec now;
    struct tm tm;
    clock_gettime (CLOCK_REALTIME, &now);
    gmtime_r (&now.tv_sec, &tm);
    strftime (base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf (ts, sizeof ts, "%s.%03dZ", base, (int)(now.tv_nsec / 1000000));
    va_list ap;
    va_start (ap, fmt);
    vsnprintf (line, sizeof line, fmt, ap);
    va_end (ap);
    for (char *p = line; *p; p++)
        if ((unsigned char)*p < 0x20)
            *p = ' ';
    fprintf (stderr, "%s %-5s sandbox-agent: %s\n", ts, level, line);
}

/* Close *fd if open and mark it closed. */
static void
s_close (int *fd)
{
    if (*fd >= 0) {
        close (*fd);
        *fd = -1;
    }
}

/* Signal name without the SIG prefix ("KILL"), or NULL if unknown. */
static const char *
s_signal_name (int signo)
{
    return sigabbrev_np (signo);
}

/* Send [tag][header][payload?] to the broker. Takes ownership of header
   (which may be NULL after a failed json_pack). Never blocks: SNDHWM is 0,
   so the only failures are fatal socket states, which are logged. */
static int
s_send (agent_t *self, const unsigned char *tag, size_t tag_len, json_t *header,
        const void *payload, size_t payload_len, bool with_payload)
{
    if (!header) {
        s_log ("ERROR", "cannot build event header");
        return -1;
    }
    char *text = json_dumps (header, JSON_COMPACT);
    json_decref (header);
    if (!text) {
        s_log ("ERROR", "cannot encode event header");
        return -1;
    }
    int rc = 0;
    if (zmq_send (self->sock, tag, tag_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0
        || zmq_send (self->sock, text, strlen (text),
                     (with_payload ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT)
               < 0
        || (with_payload && zmq_send (self->sock, payload, payload_len, ZMQ_DONTWAIT) < 0)) {
        s_log ("ERROR", "sending event: %s", zmq_strerror (zmq_errno ()));
        rc = -1;
    }
    free (text);
    return rc;
}

/* Send {"ev":"error","code":code,"message":...}. A message that is not valid
   UTF-8 (a JSON parser error quoting raw input) is reduced to ASCII. */
static int __attribute__ ((format (printf, 5, 6)))
s_send_error (agent_t *self, const unsigned char *tag, size_t tag_len, const char *code,
              const char *fmt, ...)
{
    char msg[CWD_MAX + 512];
    va_list ap;
    va_start (ap, fmt);
    vsnprintf (msg, sizeof msg, fmt, ap);
    va_end (ap);
    json_t *jmsg = json_string (msg);
    if (!jmsg) {
        for (char *p = msg; *p; p++)
            if ((unsigned char)*p >= 0x80)
                *p = '?';
        jmsg = json_string (msg);
    }
    s_log ("DEBUG", "request failed: %s: %s", code, msg);
    return s_send (self, tag, tag_len,
                   json_pack ("{s:s, s:s, s:o*}", "ev", "error", "code", code, "message", jmsg),
                   NULL, 0, false);
}

/* Announce ourselves; sent on every (re)connection to the broker. */
static void
s_send_hello (agent_t *self)
{
    s_send (self, NULL, 0,
            json_pack ("{s:s, s:i, s:I}", "ev", "hello", "version", AGENT_VERSION, "pid",
                       (json_int_t)getpid ()),
            NULL, 0, false);
}

/* ---------------------------------------------------------------- child */

/* Report a failure to the parent over the exec-error pipe and exit. */
static void __attribute__ ((noreturn)) s_child_fail (int status_fd, int stage, int err)
{
    child_failure_t f = { .stage = stage, .err = err };
    ssize_t n = write (status_fd, &f, sizeof f);
    (void)n;
    _exit (127);
}

/* Close every fd from `from` upwards except `keep`. */
static void
s_child_close_fds (unsigned from, unsigned keep, unsigned max_fd)
{
    bool done = true;
    if (keep > from && close_range (from, keep - 1, 0) < 0)
        done = false;
    if (close_range (keep + 1, ~0U, 0) < 0)
        done = false;
    if (done)
        return;
    for (unsigned fd = from; fd <= max_fd; fd++)
        if (fd != keep)
            close ((int)fd);
}

/* Runs in the forked child: new session, clean signal state, stdio, no other
   fds, then chdir and execve. Only async-signal-safe calls. Never returns. */
static void __attribute__ ((noreturn)) s_child (const child_spec_t *spec)
{
    int sfd = spec->status_fd;
    if (setsid () < 0)
        s_child_fail (sfd, STAGE_SETUP, errno);

    struct sigaction sa;
    memset (&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigemptyset (&sa.sa_mask);
    for (int sig = 1; sig < NSIG; sig++)
        sigaction (sig, &sa, NULL); /* fails harmlessly for KILL, STOP, libc-reserved */
    sigset_t none;
    sigemptyset (&none);
    sigprocmask (SIG_SETMASK, &none, NULL);

    if (dup2 (spec->in_fd, 0) < 0 || dup2 (spec->out_fd, 1) < 0 || dup2 (spec->err_fd, 2) < 0)
        s_child_fail (sfd, STAGE_SETUP, errno);
    s_child_close_fds (3, (unsigned)sfd, spec->max_fd);
    if (spec->nofile)
        setrlimit (RLIMIT_NOFILE, spec->nofile);

    if (chdir (spec->cwd) < 0)
        s_child_fail (sfd, STAGE_CHDIR, errno);
    execve ("/bin/bash", spec->argv, spec->envp);
    s_child_fail (sfd, STAGE_EXEC, errno);
}

/* ------------------------------------------------------------ validation */

/* 0 if every key of obj is in the NULL-terminated list `allowed`; otherwise
   -1 with msg naming the first unknown field. */
static int
s_check_fields (json_t *obj, const char *const *allowed, char *msg, size_t msgsz)
{
    for (void *it = json_object_iter (obj); it; it = json_object_iter_next (obj, it)) {
        const char *key = json_object_iter_key (it);
        bool known = false;
        for (const char *const *a = allowed; *a; a++)
            if (strcmp (key, *a) == 0)
                known = true;
        if (!known) {
            snprintf (msg, msgsz, "unknown field \"%.64s\"", key);
            return -1;
        }
    }
    return 0;
}

/* True if the JSON string has no embedded NUL (jansson rejects \u0000 by
   default; checked anyway because a NUL would silently cut an argument). */
static bool
s_string_clean (json_t *s)
{
    return strlen (json_string_value (s)) == json_string_length (s);
}

/* Validate an exec header into *out. 0, or -1 with a message in msg. */
static int
s_parse_exec (json_t *hdr, exec_req_t *out, char *msg, size_t msgsz)
{
    static const char *const allowed[]
        = { "op", "command", "cwd", "env", "timeout_ms", "max_output", NULL };
    if (s_check_fields (hdr, allowed, msg, msgsz) < 0)
        return -1;

    json_t *command = json_object_get (hdr, "command");
    if (!json_is_string (command)) {
        snprintf (msg, msgsz, "\"command\" must be a string");
        return -1;
    }
    if (json_string_length (command) > COMMAND_MAX || !s_string_clean (command)) {
        snprintf (msg, msgsz, "\"command\" must be at most %d bytes without NUL", COMMAND_MAX);
        return -1;
    }
    out->command = json_string_value (command);

    out->cwd = "/workspace";
    json_t *cwd = json_object_get (hdr, "cwd");
    if (cwd) {
        if (!json_is_string (cwd) || json_string_length (cwd) == 0
            || json_string_length (cwd) > CWD_MAX || !s_string_clean (cwd)) {
            snprintf (msg, msgsz, "\"cwd\" must be a non-empty string of at most %d bytes",
                      CWD_MAX);
            return -1;
        }
        out->cwd = json_string_value (cwd);
    }

    out->env = json_object_get (hdr, "env");
    if (out->env) {
        if (!json_is_object (out->env)) {
            snprintf (msg, msgsz, "\"env\" must be an object of strings");
            return -1;
        }
        if (json_object_size (out->env) > ENV_MAX_ENTRIES) {
            snprintf (msg, msgsz, "\"env\" has more than %d entries", ENV_MAX_ENTRIES);
            return -1;
        }
        size_t total = 0;
        for (void *it = json_object_iter (out->env); it;
             it = json_object_iter_next (out->env, it)) {
            const char *key = json_object_iter_key (it);
            json_t *value = json_object_iter_value (it);
            if (key[0] == '\0' || strchr (key, '=')) {
                snprintf (msg, msgsz, "env key \"%.64s\" is empty or contains '='", key);
                return -1;
            }
            if (!json_is_string (value) || !s_string_clean (value)) {
                snprintf (msg, msgsz, "env value of \"%.64s\" must be a string without NUL", key);
                return -1;
            }
            total += strlen (key) + json_string_length (value) + 2;
            if (total > ENV_MAX_BYTES) {
                snprintf (msg, msgsz, "\"env\" exceeds %d bytes", ENV_MAX_BYTES);
                return -1;
            }
        }
    }

    out->timeout_ms = 0;
    json_t *timeout = json_object_get (hdr, "timeout_ms");
    if (timeout) {
        if (!json_is_integer (timeout) || json_integer_value (timeout) < 0) {
            snprintf (msg, msgsz, "\"timeout_ms\" must be an integer >= 0");
            return -1;
        }
        out->timeout_ms = json_integer_value (timeout);
        if (out->timeout_ms > TIMEOUT_CLAMP_MS)
            out->timeout_ms = TIMEOUT_CLAMP_MS;
    }

    out->max_output = OUTPUT_DEFAULT;
    json_t *max_output = json_object_get (hdr, "max_output");
    if (max_output) {
        if (!json_is_integer (max_output) || json_integer_value (max_output) < 0) {
            snprintf (msg, msgsz, "\"max_output\" must be an integer >= 0");
            return -1;
        }
        json_int_t v = json_integer_value (max_output);
        out->max_output = v > OUTPUT_CLAMP ? OUTPUT_CLAMP : (size_t)v;
    }
    return 0;
}

/* Build the child's environment: the base entries not overridden by the
   request, then the request's. Caller frees the returned array and *block.
   NULL on allocation failure. */
static char **
s_build_env (json_t *env, char **block)
{
    size_t n = BASE_ENV_COUNT + (env ? json_object_size (env) : 0);
    size_t bytes = 0;
    for (void *it = env ? json_object_iter (env) : NULL; it; it = json_object_iter_next (env, it))
        bytes += strlen (json_object_iter_key (it))
                 + json_string_length (json_object_iter_value (it)) + 2;
    char **envp = calloc (n + 1, sizeof *envp);
    char *buf = malloc (bytes + 1);
    if (!envp || !buf) {
        free (envp);
        free (buf);
        return NULL;
    }
    size_t i = 0;
    for (size_t b = 0; b < BASE_ENV_COUNT; b++) {
        const char *eq = strchr (s_base_env[b], '=');
        char name[16];
        snprintf (name, sizeof name, "%.*s", (int)(eq - s_base_env[b]), s_base_env[b]);
        if (!env || !json_object_get (env, name))
            envp[i++] = (char *)s_base_env[b];
    }
    char *p = buf;
    for (void *it = env ? json_object_iter (env) : NULL; it; it = json_object_iter_next (env, it)) {
        const char *key = json_object_iter_key (it);
        json_t *value = json_object_iter_value (it);
        size_t kl = strlen (key), vl = json_string_length (value);
        envp[i++] = p;
        memcpy (p, key, kl);
        p[kl] = '=';
        memcpy (p + kl + 1, json_string_value (value), vl);
        p[kl + 1 + vl] = '\0';
        p += kl + vl + 2;
    }
    envp[i] = NULL;
    *block = buf;
    return envp;
}

/* ----------------------------------------------------------------- execs */

/* Release an exec slot and everything it holds. */
static void
s_exec_free (agent_t *self, exec_t *e)
{
    if (!e->used)
        return;
    s_close (&e->status_fd);
    s_close (&e->out_fd);
    s_close (&e->err_fd);
    s_close (&e->in_fd);
    free (e->in_buf);
    free (e->cwd);
    memset (e, 0, sizeof *e);
    e->status_fd = e->out_fd = e->err_fd = e->in_fd = -1;
    self->running--;
}

/* Stop feeding stdin: close the pipe and drop what was not written. */
static void
s_exec_close_stdin (exec_t *e)
{
    s_close (&e->in_fd);
    free (e->in_buf);
    e->in_buf = NULL;
    e->in_len = e->in_off = 0;
}

/* Send sig to the exec's process group, and to the process itself in case
   it has not reached setsid() yet. Only for execs not yet reaped, so the
   pid (and with it the group id) cannot have been reused. */
static void
s_exec_kill (exec_t *e, int sig)
{
    if (e->reaped)
        return;
    kill (-e->pid, sig);
    kill (e->pid, sig);
}

/* Create a CLOEXEC pipe, setting O_NONBLOCK on the parent's end only.
   parent_reads says which end the parent keeps. 0 or -1/errno. */
static int
s_pipe (int fds[2], bool parent_reads)
{
    if (pipe2 (fds, O_CLOEXEC) < 0)
        return -1;
    int mine = parent_reads ? fds[0] : fds[1];
    int fl = fcntl (mine, F_GETFL);
    if (fl < 0 || fcntl (mine, F_SETFL, fl | O_NONBLOCK) < 0) {
        int saved = errno;
        close (fds[0]);
        close (fds[1]);
        errno = saved;
        return -1;
    }
    return 0;
}

/* Handle {"op":"exec"}: validate, fork the child and register the slot.
   Every failure is answered with an error event. */
static void
s_op_exec (agent_t *self, const unsigned char *tag, size_t tag_len, json_t *hdr, zmq_msg_t *payload)
{
    exec_req_t req;
    char msg[256];
    if (s_parse_exec (hdr, &req, msg, sizeof msg) < 0) {
        s_send_error (self, tag, tag_len, "bad_request", "%s", msg);
        return;
    }
    if (self->running >= MAX_EXECS) {
        s_send_error (self, tag, tag_len, "busy", "%d commands already running", MAX_EXECS);
        return;
    }
    exec_t *e = NULL;
    for (int i = 0; i < MAX_EXECS && !e; i++)
        if (!self->execs[i].used)
            e = &self->execs[i];
    if (!e) {
        s_send_error (self, tag, tag_len, "busy", "no free exec slot");
        return;
    }

    size_t in_len = payload ? zmq_msg_size (payload) : 0;
    unsigned char *in_buf = NULL;
    char *env_block = NULL;
    char **envp = s_build_env (req.env, &env_block);
    if (in_len > 0)
        in_buf = malloc (in_len);
    if (!envp || (in_len > 0 && !in_buf)) {
        free (envp);
        free (env_block);
        free (in_buf);
        s_send_error (self, tag, tag_len, "exec_failed", "out of memory");
        return;
    }
    if (in_len > 0)
        memcpy (in_buf, zmq_msg_data (payload), in_len);

    int out_p[2] = { -1, -1 }, err_p[2] = { -1, -1 }, st_p[2] = { -1, -1 }, in_p[2] = { -1, -1 };
    const char *what = "pipe";
    int rc = 0;
    if (s_pipe (out_p, true) < 0 || s_pipe (err_p, true) < 0 || pipe2 (st_p, O_CLOEXEC) < 0)
        rc = -1;
    else if (in_len > 0) {
        if (s_pipe (in_p, false) < 0)
            rc = -1;
    }
    else {
        what = "open /dev/null";
        in_p[0] = open ("/dev/null", O_RDONLY | O_CLOEXEC);
        if (in_p[0] < 0)
            rc = -1;
    }
    if (rc == 0 && fcntl (st_p[0], F_SETFL, O_NONBLOCK) < 0)
        rc = -1;

    pid_t pid = -1;
    int64_t fork_us = s_mono_us ();
    if (rc == 0) {
        char *argv[] = { "bash", "-c", (char *)req.command, NULL };
        child_spec_t spec = { .in_fd = in_p[0],
                              .out_fd = out_p[1],
                              .err_fd = err_p[1],
                              .status_fd = st_p[1],
                              .cwd = req.cwd,
                              .argv = argv,
                              .envp = envp,
                              .nofile = self->nofile_raised ? &self->nofile_orig : NULL,
                              .max_fd = self->max_fd };
        what = "fork";
        pid = fork ();
        if (pid == 0)
            s_child (&spec);
        if (pid < 0)
            rc = -1;
    }
    int saved = errno;
    free (envp);
    free (env_block);
    s_close (&out_p[1]);
    s_close (&err_p[1]);
    s_close (&st_p[1]);
    s_close (&in_p[0]);
    char *cwd_copy = rc == 0 ? strdup (req.cwd) : NULL;
    if (rc < 0) {
        s_close (&out_p[0]);
        s_close (&err_p[0]);
        s_close (&st_p[0]);
        s_close (&in_p[1]);
        free (in_buf);
        s_send_error (self, tag, tag_len, "exec_failed", "%s: %s", what, strerror (saved));
        return;
    }

    memset (e, 0, sizeof *e);
    e->used = true;
    memcpy (e->tag, tag, tag_len);
    e->tag_len = tag_len;
    e->pid = pid;
    e->status_fd = st_p[0];
    e->out_fd = out_p[0];
    e->err_fd = err_p[0];
    e->in_fd = in_p[1];
    e->cwd = cwd_copy;
    e->in_buf = in_buf;
    e->in_len = in_len;
    e->max_output = req.max_output;
    e->fork_us = fork_us;
    e->deadline_ms = req.timeout_ms > 0 ? fork_us / 1000 + req.timeout_ms : 0;
    self->running++;
}

/* The exec-error pipe is readable: either the child failed before execve
   (error event; the slot is released and the child is later reaped as an
   unknown pid) or the pipe reached EOF because execve closed it (start). */
static void
s_exec_on_status (agent_t *self, exec_t *e)
{
    ssize_t n
        = read (e->status_fd, e->status_buf + e->status_len, sizeof e->status_buf - e->status_len);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    int read_errno = errno;
    if (n > 0) {
        e->status_len += (size_t)n;
        if (e->status_len < sizeof e->status_buf)
            return;
    }
    s_close (&e->status_fd);
    if (n == 0 && e->status_len == 0) {
        e->started = true;
        free (e->cwd);
        e->cwd = NULL;
        s_send (self, e->tag, e->tag_len,
                json_pack ("{s:s, s:I}", "ev", "start", "pid", (json_int_t)e->pid), NULL, 0, false);
        s_log ("DEBUG", "exec pid %d started", (int)e->pid);
        return;
    }
    child_failure_t f = { .stage = STAGE_SETUP, .err = n < 0 ? read_errno : EIO };
    if (e->status_len == sizeof f)
        memcpy (&f, e->status_buf, sizeof f);
    if (f.stage == STAGE_CHDIR)
        s_send_error (self, e->tag, e->tag_len, "bad_cwd", "cwd %s: %s",
                      e->cwd ? e->cwd : "(unknown)", strerror (f.err));
    else
        s_send_error (self, e->tag, e->tag_len, "exec_failed", "%s: %s",
                      f.stage == STAGE_EXEC ? "exec /bin/bash" : "child setup", strerror (f.err));
    s_exec_free (self, e);
}

/* Read one chunk from stdout or stderr and forward what fits under
   max_output; past it the output is read and discarded. EOF or a read error
   closes the pipe. */
static void
s_exec_on_output (agent_t *self, exec_t *e, bool is_stdout)
{
    int *fd = is_stdout ? &e->out_fd : &e->err_fd;
    size_t *sent = is_stdout ? &e->out_sent : &e->err_sent;
    ssize_t n = read (*fd, self->chunk, sizeof self->chunk);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        s_close (fd);
        return;
    }
    size_t fwd = 0;
    if (*sent < e->max_output)
        fwd = e->max_output - *sent < (size_t)n ? e->max_output - *sent : (size_t)n;
    if (fwd < (size_t)n)
        e->truncated = true;
    if (fwd > 0) {
        *sent += fwd;
        s_send (self, e->tag, e->tag_len,
                json_pack ("{s:s}", "ev", is_stdout ? "stdout" : "stderr"), self->chunk, fwd, true);
    }
}

/* stdin is writable: write as much of the payload as the pipe takes, close
   it when done or when the reader has gone (EPIPE). */
static void
s_exec_on_stdin (exec_t *e)
{
    ssize_t n = write (e->in_fd, e->in_buf + e->in_off, e->in_len - e->in_off);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n < 0) {
        s_exec_close_stdin (e);
        return;
    }
    e->in_off += (size_t)n;
    if (e->in_off >= e->in_len)
        s_exec_close_stdin (e);
}

/* Send the exit event once the main process is reaped and both pipes are at
   EOF, or GRACE_MS after it was reaped if something still holds them. */
static void
s_exec_maybe_finish (agent_t *self, exec_t *e, int64_t now_us)
{
    if (!e->used || !e->started || !e->reaped)
        return;
    bool drained = e->out_fd < 0 && e->err_fd < 0;
    if (!drained && now_us < e->exit_us + (int64_t)GRACE_MS * 1000)
        return;
    int code = -1;
    const char *signame = NULL;
    char numbuf[16];
    if (WIFEXITED (e->wstatus))
        code = WEXITSTATUS (e->wstatus);
    else if (WIFSIGNALED (e->wstatus)) {
        int sig = WTERMSIG (e->wstatus);
        code = 128 + sig;
        signame = s_signal_name (sig);
        if (!signame) {
            snprintf (numbuf, sizeof numbuf, "%d", sig);
            signame = numbuf;
        }
    }
    json_int_t duration = (json_int_t)((e->exit_us - e->fork_us) / 1000);
    s_send (self, e->tag, e->tag_len,
            json_pack ("{s:s, s:i, s:s?, s:b, s:b, s:I}", "ev", "exit", "exit_code", code, "signal",
                       signame, "timed_out", e->timed_out, "truncated", e->truncated, "duration_ms",
                       duration),
            NULL, 0, false);
    s_log ("DEBUG", "exec pid %d exited: code %d%s%s, %lld ms%s", (int)e->pid, code,
           e->timed_out ? ", timed out" : "", e->truncated ? ", truncated" : "",
           (long long)duration, drained ? "" : ", pipes still held open");
    s_exec_free (self, e);
}

/* Reap every child that has exited: our execs, orphans reparented to us and
   children whose start failed. Loops because SIGCHLD coalesces. */
static void
s_reap (agent_t *self)
{
    for (;;) {
        int status;
        pid_t pid = waitpid (-1, &status, WNOHANG);
        if (pid < 0 && errno == EINTR)
            continue;
        if (pid <= 0)
            return;
        for (int i = 0; i < MAX_EXECS; i++) {
            exec_t *e = &self->execs[i];
            if (e->used && !e->reaped && e->pid == pid) {
                e->reaped = true;
                e->wstatus = status;
                e->exit_us = s_mono_us ();
                s_exec_close_stdin (e);
                break;
            }
        }
    }
}

/* Drain the signalfd: SIGCHLD reaps, SIGTERM/SIGINT request a clean exit. */
static void
s_on_signals (agent_t *self)
{
    struct signalfd_siginfo si;
    for (;;) {
        ssize_t n = read (self->sig_fd, &si, sizeof si);
        if (n < 0 && errno == EINTR)
            continue;
        if (n != (ssize_t)sizeof si)
            break;
        if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
            s_log ("INFO", "received SIG%s from pid %u, exiting", s_signal_name ((int)si.ssi_signo),
                   si.ssi_pid);
            self->stop = true;
        }
    }
    s_reap (self);
}

/* Kill the process groups of execs whose deadline has passed. */
static void
s_check_deadlines (agent_t *self, int64_t now_us)
{
    for (int i = 0; i < MAX_EXECS; i++) {
        exec_t *e = &self->execs[i];
        if (e->used && !e->reaped && !e->timed_out && e->deadline_ms > 0
            && now_us / 1000 >= e->deadline_ms) {
            e->timed_out = true;
            s_exec_kill (e, SIGKILL);
            s_log ("DEBUG", "exec pid %d timed out, killed its process group", (int)e->pid);
        }
    }
}

/* Milliseconds until the nearest exec or grace deadline; -1 if none. */
static long
s_poll_timeout (agent_t *self, int64_t now_us)
{
    int64_t next = -1;
    for (int i = 0; i < MAX_EXECS; i++) {
        exec_t *e = &self->execs[i];
        int64_t at = -1;
        if (!e->used)
            continue;
        if (!e->reaped && !e->timed_out && e->deadline_ms > 0)
            at = e->deadline_ms * 1000;
        else if (e->reaped && e->started)
            at = e->exit_us + (int64_t)GRACE_MS * 1000;
        if (at >= 0 && (next < 0 || at < next))
            next = at;
    }
    if (next < 0)
        return -1;
    if (next <= now_us)
        return 0;
    return (long)((next - now_us + 999) / 1000);
}

/* --------------------------------------------------------------- requests */

/* Handle {"op":"signal","pid":N,"signal":"TERM"}. */
static void
s_op_signal (agent_t *self, const unsigned char *tag, size_t tag_len, json_t *hdr)
{
    static const char *const allowed[] = { "op", "pid", "signal", NULL };
    char msg[256];
    if (s_check_fields (hdr, allowed, msg, sizeof msg) < 0) {
        s_send_error (self, tag, tag_len, "bad_request", "%s", msg);
        return;
    }
    json_t *jpid = json_object_get (hdr, "pid");
    json_t *jsig = json_object_get (hdr, "signal");
    if (!json_is_integer (jpid) || json_integer_value (jpid) <= 0
        || json_integer_value (jpid) > INT_MAX) {
        s_send_error (self, tag, tag_len, "bad_request", "\"pid\" must be a positive integer");
        return;
    }
    int signo = 0;
    const char *name = json_string_value (jsig);
    for (size_t i = 0; name && i < sizeof s_signals / sizeof s_signals[0]; i++)
        if (strcmp (name, s_signals[i].name) == 0)
            signo = s_signals[i].signo;
    if (!signo) {
        s_send_error (self, tag, tag_len, "bad_request",
                      "\"signal\" must be one of TERM, KILL, INT, HUP, QUIT, USR1, USR2");
        return;
    }
    pid_t pid = (pid_t)json_integer_value (jpid);
    for (int i = 0; i < MAX_EXECS; i++) {
        exec_t *e = &self->execs[i];
        if (e->used && !e->reaped && e->pid == pid) {
            s_exec_kill (e, signo);
            s_log ("DEBUG", "sent SIG%s to process group %d", name, (int)pid);
            s_send (self, tag, tag_len, json_pack ("{s:s}", "ev", "ok"), NULL, 0, false);
            return;
        }
    }
    s_send_error (self, tag, tag_len, "not_found", "no running command with pid %d", (int)pid);
}

/* Validate one received message (frames as received, nframes in total) and
   dispatch it. Anything invalid is answered with an error event, or dropped
   when it has no usable tag. */
static void
s_dispatch (agent_t *self, zmq_msg_t *parts, int kept, int nframes)
{
    size_t tag_len = zmq_msg_size (&parts[0]);
    const unsigned char *tag = zmq_msg_data (&parts[0]);
    if (tag_len > TAG_MAX) {
        s_log ("WARN", "dropping message with a %zu-byte tag", tag_len);
        return;
    }
    if (nframes < 2 || nframes > 3) {
        s_send_error (self, tag, tag_len, "bad_request", "expected 2 or 3 frames, got %d", nframes);
        return;
    }
    zmq_msg_t *payload = kept == 3 ? &parts[2] : NULL;
    size_t hdr_len = zmq_msg_size (&parts[1]);
    if (hdr_len > HEADER_MAX) {
        s_send_error (self, tag, tag_len, "bad_request", "header exceeds %d bytes", HEADER_MAX);
        return;
    }
    if (payload && zmq_msg_size (payload) > PAYLOAD_MAX) {
        s_send_error (self, tag, tag_len, "bad_request", "payload exceeds %d bytes", PAYLOAD_MAX);
        return;
    }
    json_error_t jerr;
    json_t *hdr = json_loadb (zmq_msg_data (&parts[1]), hdr_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!hdr) {
        s_send_error (self, tag, tag_len, "bad_request", "header is not valid JSON: %s", jerr.text);
        return;
    }
    const char *op = json_string_value (json_object_get (hdr, "op"));
    if (!json_is_object (hdr))
        s_send_error (self, tag, tag_len, "bad_request", "header must be a JSON object");
    else if (!op)
        s_send_error (self, tag, tag_len, "bad_request", "\"op\" must be a string");
    else if (strcmp (op, "exec") == 0)
        s_op_exec (self, tag, tag_len, hdr, payload);
    else if (payload)
        s_send_error (self, tag, tag_len, "bad_request", "op \"%.32s\" takes no payload", op);
    else if (strcmp (op, "ping") == 0) {
        static const char *const allowed[] = { "op", NULL };
        char msg[128];
        if (s_check_fields (hdr, allowed, msg, sizeof msg) < 0)
            s_send_error (self, tag, tag_len, "bad_request", "%s", msg);
        else
            s_send (self, tag, tag_len,
                    json_pack ("{s:s, s:i, s:I, s:I}", "ev", "pong", "version", AGENT_VERSION,
                               "pid", (json_int_t)getpid (), "running", (json_int_t)self->running),
                    NULL, 0, false);
    }
    else if (strcmp (op, "signal") == 0)
        s_op_signal (self, tag, tag_len, hdr);
    else
        s_send_error (self, tag, tag_len, "bad_request", "unknown op \"%.32s\"", op);
    json_decref (hdr);
}

/* Receive and handle up to MSGS_PER_WAKEUP messages from the broker. Only
   the first three frames of a message are kept; the rest are counted and
   dropped, so memory stays bounded by ZMQ_MAXMSGSIZE per frame. */
static void
s_on_socket (agent_t *self)
{
    for (int m = 0; m < MSGS_PER_WAKEUP; m++) {
        zmq_msg_t parts[3];
        int kept = 0, nframes = 0;
        bool more = true;
        while (more) {
            zmq_msg_t frame;
            zmq_msg_init (&frame);
            if (zmq_msg_recv (&frame, self->sock, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close (&frame);
                break;
            }
            more = zmq_msg_more (&frame);
            nframes++;
            if (kept < 3)
                parts[kept++] = frame;
            else
                zmq_msg_close (&frame);
        }
        if (nframes == 0)
            return;
        s_dispatch (self, parts, kept, nframes);
        for (int i = 0; i < kept; i++)
            zmq_msg_close (&parts[i]);
    }
}

/* Socket monitor events: say hello each time the connection is (re)made,
   so a restarted broker learns the agent is back. */
static void
s_on_monitor (agent_t *self)
{
    for (;;) {
        zmq_msg_t frame;
        zmq_msg_init (&frame);
        if (zmq_msg_recv (&frame, self->monitor, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close (&frame);
            return;
        }
        bool connected = false;
        if (zmq_msg_size (&frame) == 6) {
            uint16_t event;
            memcpy (&event, zmq_msg_data (&frame), sizeof event);
            connected = event == ZMQ_EVENT_CONNECTED;
        }
        bool more = zmq_msg_more (&frame);
        zmq_msg_close (&frame);
        while (more) {
            zmq_msg_init (&frame);
            if (zmq_msg_recv (&frame, self->monitor, ZMQ_DONTWAIT) < 0)
                more = false;
            else
                more = zmq_msg_more (&frame);
            zmq_msg_close (&frame);
        }
        if (connected) {
            s_log ("INFO", "connected to broker");
            s_send_hello (self);
        }
    }
}

/* ------------------------------------------------------------------ loop */

/* Fill the poll set; returns the number of items. */
static int
s_build_poll (agent_t *self)
{
    int n = 0;
    self->items[n++] = (zmq_pollitem_t){ .socket = self->sock, .events = ZMQ_POLLIN };
    self->items[n++] = (zmq_pollitem_t){ .fd = self->sig_fd, .events = ZMQ_POLLIN };
    if (self->monitor)
        self->items[n++] = (zmq_pollitem_t){ .socket = self->monitor, .events = ZMQ_POLLIN };
    for (int i = 0; i < MAX_EXECS; i++) {
        exec_t *e = &self->execs[i];
        if (!e->used)
            continue;
        struct {
            int fd;
            ref_kind_t kind;
            short events;
        } want[4] = { { e->status_fd, REF_STATUS, ZMQ_POLLIN },
                      { e->started ? e->out_fd : -1, REF_STDOUT, ZMQ_POLLIN },
                      { e->started ? e->err_fd : -1, REF_STDERR, ZMQ_POLLIN },
                      { e->started ? e->in_fd : -1, REF_STDIN, ZMQ_POLLOUT } };
        for (int k = 0; k < 4; k++) {
            if (want[k].fd < 0)
                continue;
            self->items[n] = (zmq_pollitem_t){ .fd = want[k].fd, .events = want[k].events };
            self->refs[n].slot = i;
            self->refs[n].kind = want[k].kind;
            n++;
        }
    }
    return n;
}

/* Run until SIGTERM/SIGINT. 0 on a clean stop, -1 on a fatal poll error. */
static int
s_run (agent_t *self)
{
    while (!self->stop) {
        int n = s_build_poll (self);
        long timeout = s_poll_timeout (self, s_mono_us ());
        if (zmq_poll (self->items, n, timeout) < 0) {
            if (zmq_errno () == EINTR)
                continue;
            s_log ("ERROR", "zmq_poll: %s", zmq_strerror (zmq_errno ()));
            return -1;
        }
        if (self->items[1].revents)
            s_on_signals (self);
        for (int k = self->monitor ? 3 : 2; k < n; k++) {
            if (!self->items[k].revents)
                continue;
            exec_t *e = &self->execs[self->refs[k].slot];
            switch (self->refs[k].kind) {
            case REF_STATUS:
                if (e->used && e->status_fd == self->items[k].fd)
                    s_exec_on_status (self, e);
                break;
            case REF_STDOUT:
                if (e->used && e->out_fd == self->items[k].fd)
                    s_exec_on_output (self, e, true);
                break;
            case REF_STDERR:
                if (e->used && e->err_fd == self->items[k].fd)
                    s_exec_on_output (self, e, false);
                break;
            case REF_STDIN:
                if (e->used && e->in_fd == self->items[k].fd)
                    s_exec_on_stdin (e);
                break;
            }
        }
        if (self->items[0].revents)
            s_on_socket (self);
        if (self->monitor && self->items[2].revents)
            s_on_monitor (self);
        int64_t now = s_mono_us ();
        s_check_deadlines (self, now);
        for (int i = 0; i < MAX_EXECS; i++)
            s_exec_maybe_finish (self, &self->execs[i], now);
    }
    return 0;
}

/* ----------------------------------------------------------------- setup */

/* Make sure fds 0-2 are open, so no pipe lands on them and gets clobbered
   by the child's dup2 calls. */
static void
s_fix_stdio (void)
{
    for (int fd = 0; fd < 3; fd++)
        if (fcntl (fd, F_GETFD) < 0 && errno == EBADF) {
            int null = open ("/dev/null", O_RDWR);
            if (null >= 0 && null != fd) {
                dup2 (null, fd);
                close (null);
            }
        }
}

/* Raise the soft fd limit so 256 execs fit; children get the original back. */
static void
s_raise_nofile (agent_t *self)
{
    struct rlimit rl;
    self->max_fd = 1024;
    if (getrlimit (RLIMIT_NOFILE, &rl) < 0)
        return;
    self->nofile_orig = rl;
    if (rl.rlim_cur < NOFILE_WANT && rl.rlim_max > rl.rlim_cur) {
        struct rlimit want = rl;
        want.rlim_cur = rl.rlim_max < NOFILE_WANT ? rl.rlim_max : NOFILE_WANT;
        if (setrlimit (RLIMIT_NOFILE, &want) == 0) {
            self->nofile_raised = true;
            rl = want;
        }
    }
    self->max_fd
        = rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > 1048576 ? 1048576 : (unsigned)rl.rlim_cur;
}

/* Create the context, DEALER socket (options per the protocol) and the
   monitor, then connect. 0 or -1 (logged). */
static int
s_connect (agent_t *self, const char *endpoint)
{
    self->ctx = zmq_ctx_new ();
    if (!self->ctx) {
        s_log ("ERROR", "zmq_ctx_new: %s", zmq_strerror (zmq_errno ()));
        return -1;
    }
    self->sock = zmq_socket (self->ctx, ZMQ_DEALER);
    if (!self->sock) {
        s_log ("ERROR", "zmq_socket: %s", zmq_strerror (zmq_errno ()));
        return -1;
    }
    int ivl = 50, hwm = 0, linger = 0;
    int64_t maxmsg = 4 * 1024 * 1024;
    if (zmq_setsockopt (self->sock, ZMQ_ROUTING_ID, "agent", 5) < 0
        || zmq_setsockopt (self->sock, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl) < 0
        || zmq_setsockopt (self->sock, ZMQ_SNDHWM, &hwm, sizeof hwm) < 0
        || zmq_setsockopt (self->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) < 0
        || zmq_setsockopt (self->sock, ZMQ_LINGER, &linger, sizeof linger) < 0) {
        s_log ("ERROR", "zmq_setsockopt: %s", zmq_strerror (zmq_errno ()));
        return -1;
    }
    if (zmq_socket_monitor (self->sock, MONITOR_ENDPOINT, ZMQ_EVENT_CONNECTED) == 0) {
        self->monitor = zmq_socket (self->ctx, ZMQ_PAIR);
        if (self->monitor) {
            zmq_setsockopt (self->monitor, ZMQ_LINGER, &linger, sizeof linger);
            if (zmq_connect (self->monitor, MONITOR_ENDPOINT) < 0) {
                zmq_close (self->monitor);
                self->monitor = NULL;
            }
        }
    }
    if (!self->monitor) {
        s_log ("WARN", "socket monitor unavailable; hello is sent only once");
        zmq_socket_monitor (self->sock, NULL, 0);
    }
    if (zmq_connect (self->sock, endpoint) < 0) {
        s_log ("ERROR", "connecting to %s: %s", endpoint, zmq_strerror (zmq_errno ()));
        return -1;
    }
    if (!self->monitor)
        s_send_hello (self);
    return 0;
}

/* Kill what still runs and release everything. */
static void
s_shutdown (agent_t *self)
{
    for (int i = 0; i < MAX_EXECS; i++) {
        exec_t *e = &self->execs[i];
        if (e->used) {
            s_exec_kill (e, SIGKILL);
            s_exec_free (self, e);
        }
    }
    if (self->monitor) {
        zmq_socket_monitor (self->sock, NULL, 0);
        zmq_close (self->monitor);
    }
    if (self->sock)
        zmq_close (self->sock);
    if (self->ctx)
        zmq_ctx_term (self->ctx);
    if (self->sig_fd >= 0)
        close (self->sig_fd);
}

int
main (int argc, char *argv[])
{
    const char *endpoint = argc > 1 ? argv[1] : getenv ("SANDBOXD_AGENT_ENDPOINT");
    if (!endpoint || !*endpoint)
        endpoint = AGENT_DEFAULT_ENDPOINT;
    s_debug = getenv ("SANDBOXD_AGENT_DEBUG") != NULL;

    s_fix_stdio ();
    /* Tenant code runs as our uid: keep it from ptracing or reading us. */
    prctl (PR_SET_DUMPABLE, 0, 0, 0, 0);
    if (getpid () != 1 && prctl (PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
        s_log ("WARN", "PR_SET_CHILD_SUBREAPER: %s", strerror (errno));

    struct sigaction ign;
    memset (&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    sigemptyset (&ign.sa_mask);
    sigaction (SIGPIPE, &ign, NULL);

    /* Blocked before libzmq starts its threads, so they inherit the mask and
       these signals only ever surface through the signalfd. */
    sigset_t mask;
    sigemptyset (&mask);
    sigaddset (&mask, SIGCHLD);
    sigaddset (&mask, SIGTERM);
    sigaddset (&mask, SIGINT);
    if (sigprocmask (SIG_BLOCK, &mask, NULL) < 0) {
        s_log ("ERROR", "sigprocmask: %s", strerror (errno));
        return 1;
    }

    agent_t *self = calloc (1, sizeof *self);
    if (!self) {
        s_log ("ERROR", "out of memory");
        return 1;
    }
    for (int i = 0; i < MAX_EXECS; i++)
        self->execs[i].status_fd = self->execs[i].out_fd = self->execs[i].err_fd
            = self->execs[i].in_fd = -1;
    self->sig_fd = signalfd (-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (self->sig_fd < 0) {
        s_log ("ERROR", "signalfd: %s", strerror (errno));
        free (self);
        return 1;
    }
    s_raise_nofile (self);

    int rc = 1;
    if (s_connect (self, endpoint) == 0) {
        s_log ("INFO", "pid %d, connecting to %s", (int)getpid (), endpoint);
        rc = s_run (self) == 0 ? 0 : 1;
    }
    s_shutdown (self);
    free (self);
    return rc;
}
