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
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
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
#define KEY_ENV          "SANDBOXD_AGENT_KEY"
#define KEY_MAX          128
#define RETRY_MS         1000
#define SPAWN_WAIT_MS    2000 /* a shell or process must exec within this */

#define MAX_SESSIONS        32
#define SESSION_ID_MAX      63
#define SESSION_QUEUE_MAX   32                 /* execs and state requests waiting per session */
#define QUEUE_BYTES_MAX     (64 * 1024 * 1024) /* commands + stdin waiting, all sessions */
#define SESSION_DIR_DEFAULT "/tmp/.sandboxd-sessions"
#define SESSION_DIR_MAX     512
#define MARK_MAX            64 /* "\036SBXEND <32 hex> " is 41 bytes */
#define MARK_TAIL_MAX       16 /* "<status>\036\n" after it */
#define MARKER_GRACE_MS     500
#define STATE_TIMEOUT_MS    5000
#define STATE_MAX           (4 * 1024 * 1024) /* pwd + env -0 output read */
#define STATE_BUDGET        (48 * 1024)       /* JSON bytes of cwd + env in a state event */

#define MAX_PROCS         256
#define MAX_FOLLOWERS     16
#define LOG_DEFAULT       (1024 * 1024)
#define LOG_CLAMP         (16 * 1024 * 1024)
#define LOG_RESERVE_MAX   ((size_t)512 * 1024 * 1024) /* 2 x max_log over tracked procs */
#define PROC_COMMAND_SHOW 4096                        /* bytes of command in a proc event */

/* Poll slots: socket, signalfd, monitor, then up to four fds per exec,
   three per session and two per process. */
#define POLL_FIXED 3
#define POLL_MAX   (POLL_FIXED + 4 * MAX_EXECS + 3 * MAX_SESSIONS + 2 * MAX_PROCS)

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

/* One queued session request: a command, or the agent's own state query. */
typedef struct _sess_item_t sess_item_t;
struct _sess_item_t {
    sess_item_t *next;
    bool is_state;
    unsigned char tag[TAG_MAX];
    size_t tag_len;
    char *command; /* NULL for a state query */
    char *exports; /* "unset -v K" and "export K='V'" lines (unset, env), or NULL */
    char *assigns; /* "K='V' " assignments for this command only (cmd_env), or NULL */
    unsigned char *in_buf;
    size_t in_len;
    int64_t timeout_ms;
    size_t max_output;
    size_t bytes; /* counted in agent_t.queue_bytes while queued */
};

typedef enum { SCAN_SEARCH, SCAN_TAIL, SCAN_DONE } scan_phase_t;

/* End-marker scanner for one of the shell's output streams. */
typedef struct {
    scan_phase_t phase;
    unsigned char hold[MARK_MAX]; /* a possible start of the marker, not yet forwarded */
    size_t hold_len;
    char tail[MARK_TAIL_MAX]; /* status digits after the marker */
    size_t tail_len;
    int rc;
} scan_t;

/* A persistent shell and the command running in it. */
typedef struct {
    bool used;
    char id[SESSION_ID_MAX + 1];
    char *cwd;   /* initial cwd and env, for restarts */
    json_t *env; /* owned, or NULL */
    pid_t pid;   /* the shell (its process group); 0 while none runs */
    bool reaped;
    int wstatus;
    int64_t reap_us;
    int in_fd, out_fd, err_fd;
    char *line; /* command line still to write to the shell */
    size_t line_len, line_off;
    sess_item_t *head, *tail; /* waiting */
    size_t queued;
    sess_item_t *cur; /* running, or NULL */
    char mark[MARK_MAX];
    size_t mark_len;
    char files[3][SESSION_DIR_MAX + 40]; /* command, stdin, env files of cur ("" if none) */
    scan_t scan[2];
    int64_t start_us, deadline_us, marker_us; /* 0: none */
    bool timed_out, truncated;
    size_t sent[2];
    unsigned char *cap; /* state query output */
    size_t cap_len;
    bool cap_over;
} session_t;

/* The last `max` bytes of one output stream of a process. */
typedef struct {
    unsigned char *buf;
    size_t cap, max, start, len;
    bool dropped;
} ring_t;

typedef struct {
    unsigned char tag[TAG_MAX];
    size_t tag_len;
} follower_t;

/* A background process, tracked from proc_start until forgotten. */
typedef struct {
    bool used;
    uint64_t num; /* id "p-<num>" */
    char *command;
    pid_t pid;
    bool reaped;
    bool done; /* pipes closed, followers told */
    int wstatus;
    int out_fd, err_fd;
    ring_t ring[2];
    int64_t started_ms, ended_ms; /* epoch */
    int64_t fork_us, exit_us;
    size_t reserve; /* counted in agent_t.log_reserved */
    follower_t followers[MAX_FOLLOWERS];
    int nfollow;
} proc_t;

typedef enum {
    REF_STATUS,
    REF_STDOUT,
    REF_STDERR,
    REF_STDIN,
    REF_SESS_OUT,
    REF_SESS_ERR,
    REF_SESS_IN,
    REF_PROC_OUT,
    REF_PROC_ERR
} ref_kind_t;

typedef struct {
    void *ctx;
    void *sock;
    void *monitor; /* PAIR receiving socket events, or NULL */
    const char *endpoint;
    int64_t retry_us; /* when to connect again after a refused handshake; 0: no need */
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
    unsigned char scan_buf[MARK_MAX + CHUNK_MAX];
    session_t sessions[MAX_SESSIONS];
    size_t queue_bytes;
    char session_dir[SESSION_DIR_MAX + 1];
    proc_t procs[MAX_PROCS];
    uint64_t next_proc;
    size_t log_reserved;
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

/* "command": required string, at most COMMAND_MAX bytes, no NUL. */
static int
s_parse_command (json_t *hdr, const char **out, char *msg, size_t msgsz)
{
    json_t *command = json_object_get (hdr, "command");
    if (!json_is_string (command)) {
        snprintf (msg, msgsz, "\"command\" must be a string");
        return -1;
    }
    if (json_string_length (command) > COMMAND_MAX || !s_string_clean (command)) {
        snprintf (msg, msgsz, "\"command\" must be at most %d bytes without NUL", COMMAND_MAX);
        return -1;
    }
    *out = json_string_value (command);
    return 0;
}

/* "cwd": optional non-empty string of at most CWD_MAX bytes, default
   /workspace. */
static int
s_parse_cwd (json_t *hdr, const char **out, char *msg, size_t msgsz)
{
    *out = "/workspace";
    json_t *cwd = json_object_get (hdr, "cwd");
    if (!cwd)
        return 0;
    if (!json_is_string (cwd) || json_string_length (cwd) == 0 || json_string_length (cwd) > CWD_MAX
        || !s_string_clean (cwd)) {
        snprintf (msg, msgsz, "\"cwd\" must be a non-empty string of at most %d bytes", CWD_MAX);
        return -1;
    }
    *out = json_string_value (cwd);
    return 0;
}

/* True if key is a shell variable name: [A-Za-z_][A-Za-z0-9_]*. */
static bool
s_shell_name (const char *key)
{
    if (!((key[0] >= 'A' && key[0] <= 'Z') || (key[0] >= 'a' && key[0] <= 'z') || key[0] == '_'))
        return false;
    for (const char *p = key; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9')
              || *p == '_'))
            return false;
    return true;
}

/* "env": optional object of strings within ENV_MAX_ENTRIES and
   ENV_MAX_BYTES; keys non-empty without '=', or shell variable names when
   shell_names (they are exported by a shell). *out is borrowed or NULL. */
static int
s_parse_env_key (json_t *hdr, const char *field, bool shell_names, json_t **out, char *msg,
                 size_t msgsz)
{
    json_t *env = *out = json_object_get (hdr, field);
    if (!env)
        return 0;
    if (!json_is_object (env)) {
        snprintf (msg, msgsz, "\"env\" must be an object of strings");
        return -1;
    }
    if (json_object_size (env) > ENV_MAX_ENTRIES) {
        snprintf (msg, msgsz, "\"env\" has more than %d entries", ENV_MAX_ENTRIES);
        return -1;
    }
    size_t total = 0;
    for (void *it = json_object_iter (env); it; it = json_object_iter_next (env, it)) {
        const char *key = json_object_iter_key (it);
        json_t *value = json_object_iter_value (it);
        if (key[0] == '\0' || strchr (key, '=')) {
            snprintf (msg, msgsz, "env key \"%.64s\" is empty or contains '='", key);
            return -1;
        }
        if (shell_names && !s_shell_name (key)) {
            snprintf (msg, msgsz, "env key \"%.64s\" is not a shell variable name", key);
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
    return 0;
}

static int
s_parse_env (json_t *hdr, bool shell_names, json_t **out, char *msg, size_t msgsz)
{
    return s_parse_env_key (hdr, "env", shell_names, out, msg, msgsz);
}

/* Optional integer field >= 0: def when absent, clamped to clamp. */
static int
s_parse_count (json_t *hdr, const char *name, int64_t def, int64_t clamp, int64_t *out, char *msg,
               size_t msgsz)
{
    *out = def;
    json_t *v = json_object_get (hdr, name);
    if (!v)
        return 0;
    if (!json_is_integer (v) || json_integer_value (v) < 0) {
        snprintf (msg, msgsz, "\"%s\" must be an integer >= 0", name);
        return -1;
    }
    *out = json_integer_value (v) > clamp ? clamp : json_integer_value (v);
    return 0;
}

/* "signal": one of s_signals; def when absent (NULL: required). */
static int
s_parse_signal (json_t *hdr, const char *def, int *signo, const char **name, char *msg,
                size_t msgsz)
{
    json_t *jsig = json_object_get (hdr, "signal");
    const char *want = jsig ? json_string_value (jsig) : def;
    for (size_t i = 0; want && i < sizeof s_signals / sizeof s_signals[0]; i++)
        if (strcmp (want, s_signals[i].name) == 0) {
            *signo = s_signals[i].signo;
            *name = s_signals[i].name;
            return 0;
        }
    snprintf (msg, msgsz, "\"signal\" must be one of TERM, KILL, INT, HUP, QUIT, USR1, USR2");
    return -1;
}

/* Validate an exec header into *out. 0, or -1 with a message in msg. */
static int
s_parse_exec (json_t *hdr, exec_req_t *out, char *msg, size_t msgsz)
{
    static const char *const allowed[]
        = { "op", "command", "cwd", "env", "timeout_ms", "max_output", NULL };
    int64_t max_output;
    if (s_check_fields (hdr, allowed, msg, msgsz) < 0
        || s_parse_command (hdr, &out->command, msg, msgsz) < 0
        || s_parse_cwd (hdr, &out->cwd, msg, msgsz) < 0
        || s_parse_env (hdr, false, &out->env, msg, msgsz) < 0
        || s_parse_count (hdr, "timeout_ms", 0, TIMEOUT_CLAMP_MS, &out->timeout_ms, msg, msgsz) < 0
        || s_parse_count (hdr, "max_output", OUTPUT_DEFAULT, OUTPUT_CLAMP, &max_output, msg, msgsz)
               < 0)
        return -1;
    out->max_output = (size_t)max_output;
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

static int s_decode_status (int wstatus, const char **signame, char numbuf[16]);

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
   closes the pipe. True when a chunk was read. */
static bool
s_exec_on_output (agent_t *self, exec_t *e, bool is_stdout)
{
    int *fd = is_stdout ? &e->out_fd : &e->err_fd;
    size_t *sent = is_stdout ? &e->out_sent : &e->err_sent;
    ssize_t n = read (*fd, self->chunk, sizeof self->chunk);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return false;
    if (n <= 0) {
        s_close (fd);
        return false;
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
    return true;
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
    /* Whatever the command wrote before it exited is still in the pipes,
       and may never have been polled for: when the agent is slow (its
       cgroup throttled) the reap and the start can fall in different loop
       turns, GRACE_MS apart. Take it now (at most a pipe's worth each,
       plus what something still holding the pipes adds meanwhile). */
    for (int k = 0; k < 16 && e->out_fd >= 0 && s_exec_on_output (self, e, true); k++)
        ;
    for (int k = 0; k < 16 && e->err_fd >= 0 && s_exec_on_output (self, e, false); k++)
        ;
    drained = e->out_fd < 0 && e->err_fd < 0;
    const char *signame;
    char numbuf[16];
    int code = s_decode_status (e->wstatus, &signame, numbuf);
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

/* Decode a wait status into an exit code (128+signal for a signal) and the
   signal's name (NULL if it exited); numbuf holds an unnamed signal. */
static int
s_decode_status (int wstatus, const char **signame, char numbuf[16])
{
    *signame = NULL;
    if (WIFEXITED (wstatus))
        return WEXITSTATUS (wstatus);
    if (!WIFSIGNALED (wstatus))
        return -1;
    int sig = WTERMSIG (wstatus);
    *signame = s_signal_name (sig);
    if (!*signame) {
        snprintf (numbuf, 16, "%d", sig);
        *signame = numbuf;
    }
    return 128 + sig;
}

/* Send stdout/stderr events for data, in chunks of at most CHUNK_MAX. */
static void
s_send_output (agent_t *self, const unsigned char *tag, size_t tag_len, bool is_stdout,
               const unsigned char *data, size_t len)
{
    for (size_t off = 0; off < len; off += CHUNK_MAX) {
        size_t n = len - off < CHUNK_MAX ? len - off : CHUNK_MAX;
        s_send (self, tag, tag_len, json_pack ("{s:s}", "ev", is_stdout ? "stdout" : "stderr"),
                data + off, n, true);
    }
}

/* A JSON string of bytes that may not be valid UTF-8: as is when valid,
   otherwise with every byte >= 0x80 replaced by '?'. NULL on allocation
   failure. */
static json_t *
s_json_bytes (const char *p, size_t n)
{
    json_t *s = json_stringn (p, n);
    if (s)
        return s;
    char *copy = malloc (n + 1);
    if (!copy)
        return NULL;
    for (size_t i = 0; i < n; i++)
        copy[i] = (unsigned char)p[i] >= 0x80 || p[i] == '\0' ? '?' : p[i];
    s = json_stringn (copy, n);
    free (copy);
    return s;
}

/* Bytes the JSON encoding of p[0..n) takes, quotes included. */
static size_t
s_json_len (const char *p, size_t n)
{
    size_t len = 2;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '"' || c == '\\' || c == '\n' || c == '\t' || c == '\r' || c == '\b' || c == '\f')
            len += 2;
        else
            len += c < 0x20 ? 6 : 1;
    }
    return len;
}

/* Length of the longest prefix of s[0..n) that is at most max bytes and
   does not end inside a UTF-8 sequence. */
static size_t
s_utf8_cut (const char *s, size_t n, size_t max)
{
    if (n <= max)
        return n;
    size_t cut = max;
    while (cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80)
        cut--;
    return cut;
}

/* 32 hex characters of fresh randomness into buf (33 bytes). */
static void
s_random_token (char buf[33])
{
    static uint64_t counter;
    unsigned char raw[16];
    if (getrandom (raw, sizeof raw, GRND_NONBLOCK) != (ssize_t)sizeof raw) {
        /* Entropy not ready (very early boot): unique is what matters. */
        uint64_t a = (uint64_t)s_mono_us () ^ ((uint64_t)getpid () << 40);
        uint64_t b = ++counter ^ (uint64_t)time (NULL) << 20;
        memcpy (raw, &a, 8);
        memcpy (raw + 8, &b, 8);
    }
    for (int i = 0; i < 16; i++)
        snprintf (buf + 2 * i, 3, "%02x", raw[i]);
}

/* Append s to buf as a single-quoted shell word. buf must have room for
   4 * strlen (s) + 3 bytes; returns the new end. */
static char *
s_shell_quote (char *out, const char *s)
{
    *out++ = '\'';
    for (; *s; s++) {
        if (*s == '\'') {
            memcpy (out, "'\\''", 4);
            out += 4;
        }
        else
            *out++ = *s;
    }
    *out++ = '\'';
    *out = '\0';
    return out;
}

/* Fork /bin/bash with argv and the base environment plus env, in cwd, with
   stdio on in_fd/out_fd/err_fd, and wait (at most SPAWN_WAIT_MS) until it
   has exec'd. The caller still owns and closes all three fds. Returns the
   pid, or -1 with *code ("bad_cwd" or "exec_failed") and a message. */
static pid_t
s_spawn (agent_t *self, char **argv, json_t *env, const char *cwd, int in_fd, int out_fd,
         int err_fd, const char **code, char *msg, size_t msgsz)
{
    *code = "exec_failed";
    char *block = NULL;
    char **envp = s_build_env (env, &block);
    if (!envp) {
        snprintf (msg, msgsz, "out of memory");
        return -1;
    }
    int st[2];
    if (pipe2 (st, O_CLOEXEC) < 0) {
        snprintf (msg, msgsz, "pipe: %s", strerror (errno));
        free (envp);
        free (block);
        return -1;
    }
    child_spec_t spec = { .in_fd = in_fd,
                          .out_fd = out_fd,
                          .err_fd = err_fd,
                          .status_fd = st[1],
                          .cwd = cwd,
                          .argv = argv,
                          .envp = envp,
                          .nofile = self->nofile_raised ? &self->nofile_orig : NULL,
                          .max_fd = self->max_fd };
    pid_t pid = fork ();
    if (pid == 0)
        s_child (&spec);
    int saved = errno;
    free (envp);
    free (block);
    close (st[1]);
    if (pid < 0) {
        close (st[0]);
        snprintf (msg, msgsz, "fork: %s", strerror (saved));
        return -1;
    }
    /* Blocking, but bounded: the child only has setsid, dup2, chdir and
       execve to do, and this keeps callers free of a "starting" state. */
    child_failure_t f;
    size_t got = 0;
    bool eof = false;
    int64_t end = s_mono_us () + (int64_t)SPAWN_WAIT_MS * 1000;
    while (!eof && got < sizeof f) {
        int64_t left = (end - s_mono_us ()) / 1000;
        struct pollfd p = { .fd = st[0], .events = POLLIN };
        int r = left > 0 ? poll (&p, 1, (int)left) : 0;
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        ssize_t n = read (st[0], (char *)&f + got, sizeof f - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            eof = true;
        else
            got += (size_t)n;
    }
    close (st[0]);
    if (eof && got == 0)
        return pid;
    if (got == sizeof f && f.stage == STAGE_CHDIR) {
        *code = "bad_cwd";
        snprintf (msg, msgsz, "cwd %s: %s", cwd, strerror (f.err));
    }
    else if (got == sizeof f)
        snprintf (msg, msgsz, "%s: %s", f.stage == STAGE_EXEC ? "exec /bin/bash" : "child setup",
                  strerror (f.err));
    else {
        kill (pid, SIGKILL); /* not reaped yet: the pid is still ours */
        snprintf (msg, msgsz, "child did not start within %d ms", SPAWN_WAIT_MS);
    }
    return -1;
}

/* -------------------------------------------------------------- sessions */

static void s_session_next (agent_t *self, session_t *s);

/* True if id is 1..SESSION_ID_MAX characters of [A-Za-z0-9_.-]. */
static bool
s_session_id_ok (const char *id, size_t len)
{
    if (len == 0 || len > SESSION_ID_MAX || strlen (id) != len)
        return false;
    for (const char *p = id; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9')
              || *p == '_' || *p == '.' || *p == '-'))
            return false;
    return true;
}

/* The open session called id, or NULL. */
static session_t *
s_session_find (agent_t *self, const char *id)
{
    for (int i = 0; i < MAX_SESSIONS; i++)
        if (self->sessions[i].used && strcmp (self->sessions[i].id, id) == 0)
            return &self->sessions[i];
    return NULL;
}

static void
s_item_free (agent_t *self, sess_item_t *item, bool queued)
{
    if (!item)
        return;
    if (queued)
        self->queue_bytes -= item->bytes;
    free (item->command);
    free (item->exports);
    free (item->assigns);
    free (item->in_buf);
    free (item);
}

/* Kill the shell's whole process group. Only while the shell is not
   reaped, so the group id cannot have been reused. */
static void
s_session_kill (session_t *s)
{
    if (s->pid > 0 && !s->reaped) {
        kill (-s->pid, SIGKILL);
        kill (s->pid, SIGKILL);
    }
}

/* Close the shell's pipes and forget it (it is killed or reaped). */
static void
s_session_drop_shell (session_t *s)
{
    s_close (&s->in_fd);
    s_close (&s->out_fd);
    s_close (&s->err_fd);
    free (s->line);
    s->line = NULL;
    s->line_len = s->line_off = 0;
    s->pid = 0;
    s->reaped = false;
}

/* Start the session's shell in its initial cwd and env. 0, or -1 with
 *code and msg. */
static int
s_session_spawn (agent_t *self, session_t *s, const char **code, char *msg, size_t msgsz)
{
    int in_p[2] = { -1, -1 }, out_p[2] = { -1, -1 }, err_p[2] = { -1, -1 };
    *code = "exec_failed";
    if (s_pipe (in_p, false) < 0 || s_pipe (out_p, true) < 0 || s_pipe (err_p, true) < 0) {
        snprintf (msg, msgsz, "pipe: %s", strerror (errno));
        s_close (&in_p[0]);
        s_close (&in_p[1]);
        s_close (&out_p[0]);
        s_close (&out_p[1]);
        return -1;
    }
    char *argv[] = { "bash", "--norc", "--noprofile", NULL };
    pid_t pid = s_spawn (self, argv, s->env, s->cwd, in_p[0], out_p[1], err_p[1], code, msg, msgsz);
    s_close (&in_p[0]);
    s_close (&out_p[1]);
    s_close (&err_p[1]);
    if (pid < 0) {
        s_close (&in_p[1]);
        s_close (&out_p[0]);
        s_close (&err_p[0]);
        return -1;
    }
    s->pid = pid;
    s->reaped = false;
    s->in_fd = in_p[1];
    s->out_fd = out_p[0];
    s->err_fd = err_p[0];
    s_log ("DEBUG", "session %s: shell pid %d started", s->id, (int)pid);
    return 0;
}

/* Remove the files of the running command. */
static void
s_session_unlink (session_t *s)
{
    for (int i = 0; i < 3; i++)
        if (s->files[i][0]) {
            unlink (s->files[i]);
            s->files[i][0] = '\0';
        }
}

/* Forget the running item (its final event has been sent) and its files. */
static void
s_session_end_cur (agent_t *self, session_t *s)
{
    s_session_unlink (s);
    s_item_free (self, s->cur, false);
    s->cur = NULL;
    free (s->cap);
    s->cap = NULL;
    s->cap_len = 0;
    s->cap_over = false;
    s->deadline_us = s->marker_us = 0;
}

/* Send the exit event of the running command. */
static void
s_session_send_exit (agent_t *self, session_t *s, int code, const char *signame, bool reset)
{
    sess_item_t *it = s->cur;
    json_int_t duration = (json_int_t)((s_mono_us () - s->start_us) / 1000);
    s_send (self, it->tag, it->tag_len,
            json_pack ("{s:s, s:i, s:s?, s:b, s:b, s:I, s:b}", "ev", "exit", "exit_code", code,
                       "signal", signame, "timed_out", s->timed_out, "truncated", s->truncated,
                       "duration_ms", duration, "session_reset", reset),
            NULL, 0, false);
    s_log ("DEBUG", "session %s: command exited: code %d%s%s", s->id, code,
           s->timed_out ? ", timed out" : "", reset ? ", session reset" : "");
}

/* Output of the running item, markers already removed: forwarded within
   max_output for a command, kept (stdout only) for a state query. */
static void
s_session_emit (agent_t *self, session_t *s, int stream, const unsigned char *data, size_t n)
{
    sess_item_t *it = s->cur;
    if (n == 0 || !it)
        return;
    if (it->is_state) {
        if (stream != 0)
            return;
        if (s->cap_len + n > STATE_MAX) {
            s->cap_over = true;
            return;
        }
        unsigned char *grown = realloc (s->cap, s->cap_len + n);
        if (!grown) {
            s->cap_over = true;
            return;
        }
        s->cap = grown;
        memcpy (s->cap + s->cap_len, data, n);
        s->cap_len += n;
        return;
    }
    size_t fwd = 0;
    if (s->sent[stream] < it->max_output)
        fwd = it->max_output - s->sent[stream] < n ? it->max_output - s->sent[stream] : n;
    if (fwd < n)
        s->truncated = true;
    s->sent[stream] += fwd;
    s_send_output (self, it->tag, it->tag_len, stream == 0, data, fwd);
}

/* Parse the state query's output ("<cwd>\0K=V\0...") into a state event.
   Entries that would take the event past STATE_BUDGET are left out and
   reported as truncated. */
static void
s_session_send_state (agent_t *self, session_t *s)
{
    sess_item_t *it = s->cur;
    const char *p = (const char *)s->cap;
    size_t n = s->cap_len;
    const char *nul = p ? memchr (p, '\0', n) : NULL;
    if (!nul || s->cap_over) {
        s_send_error (self, it->tag, it->tag_len, "exec_failed",
                      s->cap_over ? "session state exceeds %d bytes"
                                  : "session state unreadable (%d)",
                      STATE_MAX);
        return;
    }
    size_t cwd_len = s_utf8_cut (p, (size_t)(nul - p), CWD_MAX);
    json_t *env = json_object ();
    json_t *cwd = s_json_bytes (p, cwd_len);
    bool truncated = cwd_len < (size_t)(nul - p);
    size_t used = 64 + s_json_len (p, cwd_len);
    for (const char *e = nul + 1; env && e < p + n;) {
        const char *end = memchr (e, '\0', (size_t)(p + n - e));
        size_t len = end ? (size_t)(end - e) : (size_t)(p + n - e);
        const char *eq = memchr (e, '=', len);
        if (eq && eq > e) {
            size_t klen = (size_t)(eq - e), vlen = len - klen - 1;
            size_t cost = s_json_len (e, klen) + s_json_len (eq + 1, vlen) + 2;
            char *key = used + cost <= STATE_BUDGET ? strndup (e, klen) : NULL;
            json_t *val = key ? s_json_bytes (eq + 1, vlen) : NULL;
            /* json_object_set_new takes val even when it fails. */
            if (val && json_object_set_new (env, key, val) == 0)
                used += cost;
            else
                truncated = true;
            free (key);
        }
        e += len + 1;
    }
    s_send (self, it->tag, it->tag_len,
            json_pack ("{s:s, s:o*, s:o*, s:b}", "ev", "state", "cwd", cwd, "env", env, "truncated",
                       truncated),
            NULL, 0, false);
}

/* The running item finished normally (end markers seen). */
static void
s_session_finish (agent_t *self, session_t *s)
{
    int rc = s->scan[0].phase == SCAN_DONE ? s->scan[0].rc : s->scan[1].rc;
    if (s->cur->is_state)
        s_session_send_state (self, s);
    else
        s_session_send_exit (self, s, rc, NULL, false);
    s_session_end_cur (self, s);
    s_session_next (self, s);
}

/* Feed one read of a stream (held bytes first) to its marker scanner. */
static void
s_session_scan (agent_t *self, session_t *s, int stream, const unsigned char *p, size_t len)
{
    scan_t *sc = &s->scan[stream];
    if (sc->phase == SCAN_SEARCH) {
        const unsigned char *hit = memmem (p, len, s->mark, s->mark_len);
        if (!hit) {
            /* Hold back a tail that could be the start of a marker split
               across reads; everything before it is output. */
            size_t k = len < s->mark_len - 1 ? len : s->mark_len - 1;
            while (k > 0 && memcmp (p + len - k, s->mark, k) != 0)
                k--;
            s_session_emit (self, s, stream, p, len - k);
            memcpy (sc->hold, p + len - k, k);
            sc->hold_len = k;
            return;
        }
        s_session_emit (self, s, stream, p, (size_t)(hit - p));
        sc->hold_len = 0;
        len -= (size_t)(hit - p) + s->mark_len;
        p = hit + s->mark_len;
        sc->phase = SCAN_TAIL;
        sc->tail_len = 0;
    }
    while (sc->phase == SCAN_TAIL && len > 0) {
        char c = (char)*p++;
        len--;
        if (c != '\n' && sc->tail_len < MARK_TAIL_MAX - 1) {
            sc->tail[sc->tail_len++] = c;
            continue;
        }
        sc->tail[sc->tail_len] = '\0';
        int rc = 0;
        for (char *d = sc->tail; *d >= '0' && *d <= '9' && rc < 1000; d++)
            rc = rc * 10 + (*d - '0');
        sc->rc = rc > 255 ? 255 : rc;
        sc->phase = SCAN_DONE;
        if (!s->marker_us)
            s->marker_us = s_mono_us ();
    }
    /* After the marker: output of background jobs, owned by no command. */
}

/* A shell output pipe is readable. */
static void
s_session_on_output (agent_t *self, session_t *s, int stream)
{
    int *fd = stream == 0 ? &s->out_fd : &s->err_fd;
    scan_t *sc = &s->scan[stream];
    size_t pre = s->cur && sc->phase == SCAN_SEARCH ? sc->hold_len : 0;
    memcpy (self->scan_buf, sc->hold, pre);
    ssize_t n = read (*fd, self->scan_buf + pre, CHUNK_MAX);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        s_close (fd);
        return;
    }
    if (s->cur)
        s_session_scan (self, s, stream, self->scan_buf, pre + (size_t)n);
}

/* The shell's stdin is writable: write what is left of the command line.
   A shell that stopped reading its stdin can never run another command,
   so it is killed (and restarted when reaped). */
static void
s_session_on_stdin (session_t *s)
{
    if (!s->line || s->in_fd < 0)
        return;
    ssize_t n = write (s->in_fd, s->line + s->line_off, s->line_len - s->line_off);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n < 0) {
        s_log ("WARN", "session %s: writing to the shell: %s; killing it", s->id, strerror (errno));
        s_close (&s->in_fd);
        s_session_kill (s);
    }
    else
        s->line_off += (size_t)n;
    if (n < 0 || s->line_off >= s->line_len) {
        free (s->line);
        s->line = NULL;
        s->line_len = s->line_off = 0;
    }
}

/* Make sure the session directory exists, is ours and private. */
static int
s_session_dir (agent_t *self, char *msg, size_t msgsz)
{
    struct stat st;
    if (mkdir (self->session_dir, 0700) < 0 && errno != EEXIST) {
        snprintf (msg, msgsz, "mkdir %s: %s", self->session_dir, strerror (errno));
        return -1;
    }
    if (lstat (self->session_dir, &st) < 0 || !S_ISDIR (st.st_mode) || st.st_uid != geteuid ()
        || (st.st_mode & 077)) {
        snprintf (msg, msgsz, "%s is not a private directory of uid %d", self->session_dir,
                  (int)geteuid ());
        return -1;
    }
    return 0;
}

/* Create path (mode 0600, must not exist) holding data. 0 or -1/errno. */
static int
s_write_new_file (const char *path, const void *data, size_t len)
{
    int fd = open (path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    for (size_t off = 0; off < len;) {
        ssize_t n = write (fd, (const char *)data + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int saved = errno;
            close (fd);
            unlink (path);
            errno = saved;
            return -1;
        }
        off += (size_t)n;
    }
    if (close (fd) < 0) {
        int saved = errno;
        unlink (path);
        errno = saved;
        return -1;
    }
    return 0;
}

/* Build the line that makes the shell run s->cur: the command (or state
   query) followed by an end marker with its status on stdout and stderr.
   Writes the command's files first. 0, or -1 with a message. */
static int
s_session_prepare (agent_t *self, session_t *s, char *msg, size_t msgsz)
{
    sess_item_t *it = s->cur;
    char token[33];
    s_random_token (token);
    s->mark_len = (size_t)snprintf (s->mark, sizeof s->mark, "\036SBXEND %s ", token);

    char q[3][4 * (SESSION_DIR_MAX + 40) + 3]; /* quoted file names */
    if (!it->is_state) {
        if (s_session_dir (self, msg, msgsz) < 0)
            return -1;
        static const char prefix[3] = { 'c', 'i', 'e' };
        const void *data[3] = { it->command, it->in_buf, it->exports };
        size_t len[3]
            = { strlen (it->command), it->in_len, it->exports ? strlen (it->exports) : 0 };
        for (int i = 0; i < 3; i++) {
            if (i > 0 && !data[i])
                continue;
            snprintf (s->files[i], sizeof s->files[i], "%s/%c-%s", self->session_dir, prefix[i],
                      token);
            if (s_write_new_file (s->files[i], data[i], len[i]) < 0) {
                snprintf (msg, msgsz, "writing %s: %s", s->files[i], strerror (errno));
                s->files[i][0] = '\0';
                s_session_unlink (s);
                return -1;
            }
            s_shell_quote (q[i], s->files[i]);
        }
    }
    const char *trailer = "__sbx_rc=$?; builtin printf '\\036SBXEND %s %%d\\036\\n' \"$__sbx_rc\"; "
                          "builtin printf '\\036SBXEND %s %%d\\036\\n' \"$__sbx_rc\" >&2\n";
    size_t cap = 3 * sizeof q[0] + 512 + (it->assigns ? strlen (it->assigns) : 0);
    char *line = malloc (cap);
    if (!line) {
        snprintf (msg, msgsz, "out of memory");
        s_session_unlink (s);
        return -1;
    }
    int n;
    if (it->is_state)
        n = snprintf (line, cap,
                      "{ builtin printf '%%s\\0' \"$(builtin pwd)\"; command -p env -0; } "
                      "</dev/null 2>/dev/null; ");
    else
        /* With cmd_env, a plain "." so that the assignments reach the
           command's children too (bash exports a special builtin's
           temporary assignments only without the "builtin" prefix). */
        n = snprintf (line, cap, "%s%s%s%s%s %s < %s; ", it->exports ? "builtin . " : "",
                      it->exports ? q[2] : "", it->exports ? "; " : "",
                      it->assigns ? it->assigns : "", it->assigns ? "." : "builtin .", q[0],
                      it->in_buf ? q[1] : "/dev/null");
    n += snprintf (line + n, cap - (size_t)n, trailer, token, token);
    s->line = line;
    s->line_len = (size_t)n;
    s->line_off = 0;
    return 0;
}

/* Start the next queued item if the session is idle, restarting the shell
   first if it is not running. Items that cannot start get an error. */
static void
s_session_next (agent_t *self, session_t *s)
{
    while (!s->cur && s->head) {
        sess_item_t *it = s->head;
        s->head = it->next;
        if (!s->head)
            s->tail = NULL;
        s->queued--;
        self->queue_bytes -= it->bytes;
        it->next = NULL;

        char msg[CWD_MAX + 256];
        const char *code = "exec_failed";
        s->cur = it;
        if ((s->pid == 0 && s_session_spawn (self, s, &code, msg, sizeof msg) < 0)
            || s_session_prepare (self, s, msg, sizeof msg) < 0) {
            s_send_error (self, it->tag, it->tag_len, code, "%s", msg);
            s_session_end_cur (self, s);
            continue;
        }
        memset (s->scan, 0, sizeof s->scan);
        s->sent[0] = s->sent[1] = 0;
        s->timed_out = s->truncated = false;
        s->marker_us = 0;
        s->start_us = s_mono_us ();
        int64_t timeout_ms = it->is_state ? STATE_TIMEOUT_MS : it->timeout_ms;
        s->deadline_us = timeout_ms > 0 ? s->start_us + timeout_ms * 1000 : 0;
        if (!it->is_state)
            s_send (self, it->tag, it->tag_len,
                    json_pack ("{s:s, s:I}", "ev", "start", "pid", (json_int_t)s->pid), NULL, 0,
                    false);
        s_session_on_stdin (s);
    }
}

/* The shell died (reaped) and its pipes are drained or the grace period
   is over: end the running item with session_reset, then start a new
   shell with the initial cwd and env. */
static void
s_session_reset (agent_t *self, session_t *s)
{
    if (s->cur) {
        for (int i = 0; i < 2; i++)
            if (s->scan[i].phase == SCAN_SEARCH)
                s_session_emit (self, s, i, s->scan[i].hold, s->scan[i].hold_len);
        char numbuf[16];
        const char *signame;
        int code = s_decode_status (s->wstatus, &signame, numbuf);
        if (s->timed_out) {
            code = 128 + SIGKILL;
            signame = "KILL";
        }
        if (s->cur->is_state)
            s_send_error (self, s->cur->tag, s->cur->tag_len, "exec_failed",
                          "the session's shell exited (status %d) and was restarted", code);
        else
            s_session_send_exit (self, s, code, signame, true);
        s_session_end_cur (self, s);
    }
    s_log ("INFO", "session %s: shell pid %d ended, restarting it", s->id, (int)s->pid);
    s_session_drop_shell (s);
    char msg[CWD_MAX + 256];
    const char *code;
    if (s_session_spawn (self, s, &code, msg, sizeof msg) < 0)
        s_log ("WARN", "session %s: restarting the shell: %s", s->id, msg);
    s_session_next (self, s);
}

/* Per-iteration checks: a finished command, a shell to reset, a timeout. */
static void
s_session_tick (agent_t *self, session_t *s, int64_t now_us)
{
    if (!s->used)
        return;
    if (s->cur) {
        bool d0 = s->scan[0].phase == SCAN_DONE, d1 = s->scan[1].phase == SCAN_DONE;
        /* Both markers, or one and the other stream is gone or late (the
           command redirected the shell's stdout or stderr for good). */
        if ((d0 && d1)
            || ((d0 || d1)
                && ((d0 ? s->err_fd : s->out_fd) < 0
                    || now_us >= s->marker_us + (int64_t)MARKER_GRACE_MS * 1000))) {
            s_session_finish (self, s);
            return;
        }
        /* Usually the shell has just died and SIGCHLD is on its way; if not,
           it can never report an end again. */
        if (!s->reaped && s->out_fd < 0 && s->err_fd < 0)
            s_session_kill (s);
        if (!s->reaped && !s->timed_out && s->deadline_us && now_us >= s->deadline_us) {
            s->timed_out = true;
            s_session_kill (s);
            s_log ("DEBUG", "session %s: command timed out, killed the shell's group", s->id);
        }
    }
    if (s->pid > 0 && s->reaped
        && ((s->out_fd < 0 && s->err_fd < 0) || now_us >= s->reap_us + (int64_t)GRACE_MS * 1000))
        s_session_reset (self, s);
}

/* Earliest time s_session_tick has something to do, or -1. */
static int64_t
s_session_next_at (const session_t *s)
{
    int64_t at = -1;
#define S_AT(t)                                                                                    \
    do {                                                                                           \
        if ((t) > 0 && (at < 0 || (t) < at))                                                       \
            at = (t);                                                                              \
    } while (0)
    if (!s->used)
        return -1;
    if (s->cur && s->marker_us)
        S_AT (s->marker_us + (int64_t)MARKER_GRACE_MS * 1000);
    if (s->cur && !s->reaped && !s->timed_out && s->deadline_us)
        S_AT (s->deadline_us);
    if (s->pid > 0 && s->reaped)
        S_AT (s->reap_us + (int64_t)GRACE_MS * 1000);
#undef S_AT
    return at;
}

/* Close a session: kill its group, end its running command (exit 137,
   session_reset) and its queue (not_found), remove its files. */
static void
s_session_close (agent_t *self, session_t *s)
{
    s_session_kill (s);
    if (s->cur) {
        if (s->cur->is_state)
            s_send_error (self, s->cur->tag, s->cur->tag_len, "not_found", "session %s was closed",
                          s->id);
        else
            s_session_send_exit (self, s, 128 + SIGKILL, "KILL", true);
        s_session_end_cur (self, s);
    }
    while (s->head) {
        sess_item_t *it = s->head;
        s->head = it->next;
        s_send_error (self, it->tag, it->tag_len, "not_found", "session %s was closed", s->id);
        s_item_free (self, it, true);
    }
    s_session_drop_shell (s);
    free (s->cwd);
    json_decref (s->env);
    memset (s, 0, sizeof *s);
    s->in_fd = s->out_fd = s->err_fd = -1;
}

/* The session ID of a request ("session"), validated. NULL after replying
   with bad_request. */
static const char *
s_req_session (agent_t *self, const unsigned char *tag, size_t tag_len, json_t *hdr,
               const char *const *allowed)
{
    char msg[256];
    if (s_check_fields (hdr, allowed, msg, sizeof msg) < 0) {
        s_send_error (self, tag, tag_len, "bad_request", "%s", msg);
        return NULL;
    }
    json_t *jid = json_object_get (hdr, "session");
    if (!json_is_string (jid)
        || !s_session_id_ok (json_string_value (jid), json_string_length (jid))) {
        s_send_error (self, tag, tag_len, "bad_request",
                      "\"session\" must be 1 to %d characters of [A-Za-z0-9_.-]", SESSION_ID_MAX);
        return NULL;
    }
    return json_string_value (jid);
}

/* Validate a request naming an open session: the session, or NULL after
   answering bad_request or not_found. */
static session_t *
s_req_open_session (agent_t *self, const unsigned char *tag, size_t tag_len, json_t *hdr,
                    const char *const allowed[])
{
    const char *id = s_req_session (self, tag, tag_len, hdr, allowed);
    if (!id)
        return NULL;
    session_t *s = s_session_find (self, id);
    if (!s)
        s_send_error (self, tag, tag_len, "not_found", "no session %s", id);
    return s;
}

/* {"op":"session_open","session":ID,"cwd":...,"env":{...}} */
static void
s_op_session_open (agent_t *self, const unsigned char *tag, size_t tag_len, json_t *hdr)
{
    static const char *const allowed[] = { "op", "session", "cwd", "env", NULL };
    const char *id = s_req_session (self, tag, tag_len, hdr, allowed);
    if (!id)
        return;
    char msg[CWD_MAX + 256];
    const char *cwd;
    json_t *env;
    if (s_parse_cwd (hdr, &cwd, msg, sizeof msg) < 0
        || s_parse_env (hdr, false, &env, msg, sizeof msg) < 0) {
        s_send_error (self, tag, tag_len, "bad_request", "%s", msg);
        return;
    }
    if (s_session_find (self, id)) {
        s_send_error (self, tag, tag_len, "exists", "session %s is already open", id);
        return;
    }
    session_t *s = NULL;
    for (int i = 0; i < MAX_SESSIONS && !s; i++)
        if (!self->sessions[i].used)
            s = &self->sessions[i];
    if (!s) {
        s_send_error (self, tag, tag_len, "busy", "%d sessions already open", MAX_SESSIONS);
        return;
    }
    memset (s, 0, sizeof *s);
    s->in_fd = s->out_fd = s->err_fd = -1;
    snprintf (s->id, sizeof s->id, "%s", id);
    s->cwd = strdup (cwd);
    s->env = env ? json_deep_copy (env) : NULL;
    const char *code = "exec_failed";
    if (!s->cwd || (env && !s->env)) {
        snprintf (msg, sizeof msg, "out of memory");
        code = "exec_failed";
    }
    else if (s_session_spawn (self, s, &code, msg, sizeof msg) == 0) {
        s->used = true;
        s_log ("DEBUG", "session %s opened", id);
        s_send (self, tag, tag_len, json_pack ("{s:s}", "ev", "ok"), NULL, 0, false);
        return;
    }
    free (s->cwd);
    json_decref (s->env);
    memset (s, 0, sizeof *s);
    s->in_fd = s->out_fd = s->err_fd = -1;
    s_send_error (self, tag, tag_len, code, "%s", msg);
}

/* {"op":"session_close","session":ID} */
static void
s_op_session_close (agent_t *self, const unsigned char *tag, size_t tag_len, json_t *hdr)
{
    static const char *const allowed[] = { "op", "session", NULL };
    session_t *s = s_req_open_session (self, tag, tag_len, hdr, allowed);
    if (!s)
        return;
    s_log ("DEBUG", "session %s closing", s->id);
    s_session_close (self, s);
    s_send (self, tag, tag_len, json_pack ("{s:s}", "ev", "ok"), NULL, 0, false);
}

/* Queue an item on a session (taking ownership) and run it when its turn
   comes. Answers busy at the queue limits. */
static void
s_session_enqueue (agent_t *self, session_t *s, sess_item_t *it)
{
    if (s->queued >= SESSION_QUEUE_MAX) {
        s_send_error (self, it->tag, it->tag_len, "busy",
                      "%d requests already queued on session %s", SESSION_QUEUE_MAX, s->id);
        s_item_free (self, it, false);
        return;
    }
    if (self->queue_bytes + it->bytes > QUEUE_BYTES_MAX) {
        s_send_error (self, it->tag, it->tag_len, "busy",
                      "queued session commands would exceed %d bytes", QUEUE_BYTES_MAX);
        s_item_free (self, it, false);
        return;
    }
    self->queue_bytes += it->bytes;
    if (s->tail)
        s->tail->next = it;
    else
        s->head = it;
    s->tail = it;
    s->queued++;
    s_session_next (self, s);
}

/* A new item for tag, or NULL after answering with an error. */
static sess_item_t *
s_item_new (agent_t *self, const unsigned char *tag, size_t tag_len)
{
    sess_item_t *it = calloc (1, sizeof *it);
    if (!it) {
        s_send_error (self, tag, tag_len, "exec_failed", "out of memory");
        return NULL;
    }
    memcpy (it->tag, tag, tag_len);
    it->tag_len = tag_len;
    return it;
}

/* {"op":"session_exec","session":ID,"command":...,"env":{...},
   "timeout_ms":N,"max_output":N} with optional stdin payload. */
static void
s_op_session_exec (agent_t *self, const unsigned char *tag, size_t tag_len, json_t *hdr,
                   zmq_msg_t *payload)
{
    static const char *const allowed[] = { "op",    "session",    "command",    "env", "cmd_env",
                                           "unset", "timeout_ms", "max_output", NULL };
    const char *id = s_req_session (self, tag, tag_len, hdr, allowed);
    if (!id)
        return;
    char msg[256];
    const char *command;
    json_t *env, *cmd_env;
    json_t *unset = json_object_get (hdr, "unset");
    if (unset && (!json_is_array (unset) || json_array_size (unset) > ENV_MAX_ENTRIES)) {
        s_send_error (self, tag, tag_len, "bad_request", "\"unset\" must be an array of names");
        return;
    }
    for (size_t k = 0; unset && k < json_array_size (unset); k++) {
        const char *name = json_string_value (json_array_get (unset, k));
        if (!name || !s_shell_name (name)) {
            s_send_error (self, tag, tag_len, "bad_request",
                          "\"unset\" must hold shell variable names");
            return;
        }
    }
    if (s_parse_env_key (hdr, "cmd_env", true, &cmd_env, msg, sizeof msg) < 0) {
        s_send_error (self, tag, tag_len, "bad_request", "%s", msg);
        return;
    }
    int64_t timeout_ms, max_output;
    if (s_parse_command (hdr, &command, msg, sizeof msg) < 0
        || s_parse_env (hdr, true, &env, msg, sizeof msg) < 0
        || s_parse_count (hdr, "timeout_ms", 0, TIMEOUT_CLAMP_MS, &timeout_ms, msg, sizeof msg) < 0
        || s_parse_count (hdr, "max_output", OUTPUT_DEFAULT, OUTPUT_CLAMP, &max_output, msg,
                          sizeof msg)
               < 0) {
        s_send_error (self, tag, tag_len, "bad_request", "%s", msg);
        return;
    }
    session_t *s = s_session_find (self, id);
    if (!s) {
        s_send_error (self, tag, tag_len, "not_found", "no session %s", id);
        return;
    }
    sess_item_t *it = s_item_new (self, tag, tag_len);
    if (!it)
        return;
    it->timeout_ms = timeout_ms;
    it->max_output = (size_t)max_output;
    it->command = strdup (command);
    bool oom = !it->command;
    it->in_len = payload ? zmq_msg_size (payload) : 0;
    if (payload) {
        /* An empty payload is still a stdin file (empty, not /dev/null). */
        it->in_buf = malloc (it->in_len ? it->in_len : 1);
        if (it->in_buf)
            memcpy (it->in_buf, zmq_msg_data (payload), it->in_len);
        oom = oom || !it->in_buf;
    }
    size_t nunset = unset ? json_array_size (unset) : 0;
    if ((env && json_object_size (env) > 0) || nunset > 0) {
        size_t need = 1;
        for (size_t k = 0; k < nunset; k++)
            need += 10 + json_string_length (json_array_get (unset, k));
        for (void *i = json_object_iter (env); env && i; i = json_object_iter_next (env, i))
            need += 8 + strlen (json_object_iter_key (i))
                    + 4 * json_string_length (json_object_iter_value (i)) + 4;
        char *p = it->exports = malloc (need);
        if (p)
            *p = '\0';
        for (size_t k = 0; p && k < nunset; k++)
            p += sprintf (p, "unset -v %s\n", json_string_value (json_array_get (unset, k)));
        for (void *i = json_object_iter (env); p && env && i; i = json_object_iter_next (env, i)) {
            p += sprintf (p, "export %s=", json_object_iter_key (i));
            p = s_shell_quote (p, json_string_value (json_object_iter_value (i)));
            *p++ = '\n';
            *p = '\0';
        }
        oom = oom || !it->exports;
    }
    if (cmd_env && json_object_size (cmd_env) > 0) {
        size_t need = 1;
        for (void *i = json_object_iter (cmd_env); i; i = json_object_iter_next (cmd_env, i))
            need += strlen (json_object_iter_key (i))
                    + 4 * json_string_length (json_object_iter_value (i)) + 5;
        char *p = it->assigns = malloc (need);
        for (void *i = json_object_iter (cmd_env); p && i; i = json_object_iter_next (cmd_env, i)) {
            p += sprintf (p, "%s=", json_object_iter_key (i));
            p = s_shell_quote (p, json_string_value (json_object_iter_value (i)));
            *p++ = ' ';
            *p = '\0';
        }
        oom = oom || !it->assigns;
    }
    if (oom) {
        s_send_error (self, tag, tag_len, "exec_failed", "out of memory");
        s_item_free (self, it, false);
        return;
    }
    it->bytes = strlen (it->command) + it->in_len + (it->exports ? strlen (it->exports) : 0)
                + (it->assigns ? strlen (it->assigns) : 0);
    s_session_enqueue (self, s, it);
}

/* {"op":"session_state","session":ID}: queued like a command. */
static void
s_op_session_state (agent_t *self, const unsigned char *tag, size_t tag_len, json_t *hdr)
{
    static const char *const allowed[] = { "op", "session", NULL };
    session_t *s = s_req_open_session (self, tag, tag_len, hdr, allowed);
    if (!s)
        return;
    sess_item_t *it = s_item_new (self, tag, tag_len);
    if (it) {
        it->is_state = true;
        s_session_enqueue (self, s, it);
    }
}

/* {"op":"session_list"} */
static void
s_op_session_list (agent_t *self, const unsigned char *tag, size_t tag_len, json_t *hdr)
{
    static const char *const allowed[] = { "op", NULL };
    char msg[128];
    if (s_check_fields (hdr, allowed, msg, sizeof msg) < 0) {
        s_send_error (self, tag, tag_len, "bad_request", "%s", msg);
        return;
    }
    json_t *list = json_array ();
    for (int i = 0; list && i < MAX_SESSIONS; i++) {
        session_t *s = &self->sessions[i];
        if (s->used)
            json_array_append_new (list, json_pack ("{s:s, s:I, s:b}", "id", s->id, "pid",
                                                    (json_int_t)s->pid, "busy", s->cur != NULL));
    }
    s_send (self, tag, tag_len, json_pack ("{s:s, s:o*}", "ev", "sessions", "sessions", list), NULL,
            0, false);
}

/* ------------------------------------------------------------- processes */

/* Append data to the ring, dropping the oldest bytes past r->max. The
   buffer grows on demand, so quiet processes cost little. */
static void
s_ring_write (ring_t *r, const unsigned char *data, size_t n)
{
    if (n == 0)
        return;
    if (n > r->max) {
        r->dropped = true;
        data += n - r->max;
        n = r->max;
        r->len = 0;
        r->start = 0;
        if (n == 0)
            return;
    }
    if (r->len + n > r->cap && r->cap < r->max) {
        size_t want = r->cap * 2 > r->len + n ? r->cap * 2 : r->len + n;
        if (want < 64 * 1024)
            want = 64 * 1024;
        if (want > r->max)
            want = r->max;
        unsigned char *grown = malloc (want);
        if (grown) {
            size_t first = r->cap - r->start < r->len ? r->cap - r->start : r->len;
            if (r->len) {
                memcpy (grown, r->buf + r->start, first);
                memcpy (grown + first, r->buf, r->len - first);
            }
            free (r->buf);
            r->buf = grown;
            r->cap = want;
            r->start = 0;
        }
    }
    if (r->cap == 0) {
        r->dropped = true;
        return;
    }
    if (n > r->cap) { /* growth failed */
        data += n - r->cap;
        n = r->cap;
        r->dropped = true;
    }
    if (r->len + n > r->cap) {
        size_t drop = r->len + n - r->cap;
        r->start = (r->start + drop) % r->cap;
        r->len -= drop;
        r->dropped = true;
    }
    size_t at = (r->start + r->len) % r->cap;
    size_t first = r->cap - at < n ? r->cap - at : n;
    memcpy (r->buf + at, data, first);
    memcpy (r->buf, data + first, n - first);
    r->len += n;
}

/* Send the ring's content as output events. */
static void
s_ring_send (agent_t *self, const ring_t *r, const unsigned char *tag, size_t tag_len,
             bool is_stdout)
{
    if (r->len == 0)
        return;
    size_t first = r->cap - r->start < r->len ? r->cap - r->start : r->len;
    s_send_output (self, tag, tag_len, is_stdout, r->buf + r->start, first);
    s_send_output (self, tag, tag_len, is_stdout, r->buf, r->len - first);
}

/* The tracked process with id "p-N", or NULL. */
static proc_t *
s_proc_find (agent_t *self, const char *id)
{
    if (!id || strncmp (id, "p-", 2) != 0 || id[2] < '1' || id[2] > '9' || strlen (id) > 22)
        return NULL;
    char *end;
    errno = 0;
    unsigned long long num = strtoull (id + 2, &end, 10);
    if (*end || errno)
        return NULL;
    for (int i = 0; i < MAX_PROCS; i++)
        if (self->procs[i].used && self->procs[i].num == num)
            return &self->procs[i];
    return NULL;
}

/* The process as a JSON object (command cut to PROC_COMMAND_SHOW bytes). */
static json_t *
s_proc_json (const proc_t *p)
{
    char id[32], numbuf[16];
    snprintf (id, sizeof id, "p-%llu", (unsigned long long)p->num);
    const char *signame = NULL;
    json_t *code = json_null (), *ended = json_null ();
    if (p->reaped) {
        code = json_integer (s_decode_status (p->wstatus, &signame, numbuf));
        ended = json_integer (p->ended_ms);
    }
    size_t cmd_len = strlen (p->command);
    return json_pack (
        "{s:s, s:I, s:o*, s:s, s:o*, s:s?, s:I, s:o*}", "id", id, "pid", (json_int_t)p->pid,
        "command", s_json_bytes (p->command, s_utf8_cut (p->command, cmd_len, PROC_COMMAND_SHOW)),
        "status", p->reaped ? "exited" : "running", "exit_code", code, "signal", signame,
        "started_at", (json_int_t)p->started_ms, "ended_at", ended);
}

/* Send the exit event of a finished process to tag. */
static void
s_proc_send_exit (agent_t *self, const proc_t *p, const unsigned char *tag, size_t tag_len)
{
    char numbuf[16];
    const char *signame;
    int code = s_decode_status (p->wstatus, &signame, numbuf);
    s_send (self, tag, tag_len,
            json_pack ("{s:s, s:i, s:s?, s:b, s:b, s:I}", "ev", "exit", "exit_code", code, "signal",
                       signame, "timed_out", false, "truncated",
                       p->ring[0].dropped || p->ring[1].dropped, "duration_ms",
                       (json_int_t)((p->exit_us - p->fork_us) / 1000)),
            NULL, 0, false);
}

/* Forget a process: free its slot and logs. */
static void
s_proc_free (agent_t *self, proc_t *p)
{
    s_close (&p->out_fd);
    s_close (&p->err_fd);
    free (p->command);
    free (p->ring[0].buf);
    free (p->ring[1].buf);
    self->log_reserved -= p->reserve;
    memset (p, 0, sizeof *p);
    p->out_fd = p->err_fd = -1;
}

/* Forget the oldest finished process. False if none is finished. */
static bool
s_proc_gc (agent_t *self)
{
    proc_t *oldest = NULL;
    for (int i = 0; i < MAX_PROCS; i++) {
        proc_t *p = &self->procs[i];
        if (p->used && p->done && (!oldest || p->num < oldest->num))
            oldest = p;
    }
    if (!oldest)
        return false;
    s_log ("DEBUG", "forgetting process p-%llu", (unsigned long long)oldest->num);
    s_proc_free (self, oldest);
    return true;
}

/* A process pipe is readable: keep the output and pass it to followers. */
static void
s_proc_on_output (agent_t *self, proc_t *p, int stream)
{
    int *fd = stream == 0 ? &p->out_fd : &p->err_fd;
    ssize_t n = read (*fd, self->chunk, sizeof self->chunk);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        s_close (fd);
        return;
    }
    s_ring_write (&p->ring[stream], self->chunk, (size_t)n);
    for (int i = 0; i < p->nfollow; i++)
        s_send (self, p->followers[i].tag, p->followers[i].tag_len,
                json_pack ("{s:s}", "ev", stream == 0 ? "stdout" : "stderr"), self->chunk,
                (size_t)n, true);
}

/* Once reaped and drained (or GRACE_MS after the exit), close the pipes
   and send exit to the followers. */
static void
s_proc_tick (agent_t *self, proc_t *p, int64_t now_us)
{
    if (!p->used || !p->reaped || p->done)
        return;
    if ((p->out_fd >= 0 || p->err_fd >= 0) && now_us < p->exit_us + (int64_t)GRACE_MS * 1000)
        return;
    s_close (&p->out_fd);
    s_close (&p->err_fd);
    for (int i = 0; i < p->nfollow; i++)
        s_proc_send_exit (self, p, p->followers[i].tag, p->followers[i].tag_len);
    p->nfollow = 0;
    p->done = true;
}

/* Reply with {"ev":ev,...process}. */
static void
s_proc_reply (agent_t *self, const unsigned char *tag, size_t tag_len, const proc_t *p,
              const char *ev)
{
    json_t *obj = s_proc_json (p);
    if (obj)
        json_object_set_new (obj, "ev", json_string (ev));
    s_send (self, tag, tag_len, obj, NULL, 0, false);
}

/* {"op":"proc_start","command":...,"cwd":...,"env":{...},"max_log":N} */
static void
s_op_proc_start (agent_t *self, const unsigned char *tag, size_t tag_len, json_t *hdr)
{
    static const char *const allowed[] = { "op", "command", "cwd", "env", "max_log", NULL };
    char msg[CWD_MAX + 256];
    const char *command, *cwd;
    json_t *env;
    int64_t max_log;
    if (s_check_fields (hdr, allowed, msg, sizeof msg) < 0
        || s_parse_command (hdr, &command, msg, sizeof msg) < 0
        || s_parse_cwd (hdr, &cwd, msg, sizeof msg) < 0
        || s_parse_env (hdr, false, &env, msg, sizeof msg) < 0
        || s_parse_count (hdr, "max_log", LOG_DEFAULT, LOG_CLAMP, &max_log, msg, sizeof msg) < 0) {
        s_send_error (self, tag, tag_len, "bad_request", "%s", msg);
        return;
    }
    size_t reserve = 2 * (size_t)max_log;
    proc_t *p = NULL;
    for (;;) {
        for (int i = 0; i < MAX_PROCS && !p; i++)
            if (!self->procs[i].used)
                p = &self->procs[i];
        if (p && self->log_reserved + reserve <= LOG_RESERVE_MAX)
            break;
        p = NULL;
        if (!s_proc_gc (self)) {
            s_send_error (self, tag, tag_len, "busy",
                          "%d processes or %zu MiB of logs tracked, none finished", MAX_PROCS,
                          LOG_RESERVE_MAX >> 20);
            return;
        }
    }
    char *cmd_copy = strdup (command);
    int out_p[2] = { -1, -1 }, err_p[2] = { -1, -1 };
    int null_fd = open ("/dev/null", O_RDONLY | O_CLOEXEC);
    if (!cmd_copy || null_fd < 0 || s_pipe (out_p, true) < 0 || s_pipe (err_p, true) < 0) {
        const char *why = cmd_copy ? strerror (errno) : "out of memory";
        s_send_error (self, tag, tag_len, "exec_failed", "%s", why);
        free (cmd_copy);
        s_close (&null_fd);
        s_close (&out_p[0]);
        s_close (&out_p[1]);
        return;
    }
    char *argv[] = { "bash", "-c", (char *)command, NULL };
    const char *code;
    int64_t fork_us = s_mono_us ();
    pid_t pid = s_spawn (self, argv, env, cwd, null_fd, out_p[1], err_p[1], &code, msg, sizeof msg);
    s_close (&null_fd);
    s_close (&out_p[1]);
    s_close (&err_p[1]);
    if (pid < 0) {
        free (cmd_copy);
        s_close (&out_p[0]);
        s_close (&err_p[0]);
        s_send_error (self, tag, tag_len, code, "%s", msg);
        return;
    }
    struct timespec now;
    clock_gettime (CLOCK_REALTIME, &now);
    memset (p, 0, sizeof *p);
    p->used = true;
    p->num = ++self->next_proc;
    p->command = cmd_copy;
    p->pid = pid;
    p->out_fd = out_p[0];
    p->err_fd = err_p[0];
    p->ring[0].max = p->ring[1].max = (size_t)max_log;
    p->started_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    p->fork_us = fork_us;
    p->reserve = reserve;
    self->log_reserved += reserve;
    s_log ("DEBUG", "process p-%llu started, pid %d", (unsigned long long)p->num, (int)pid);
    s_proc_reply (self, tag, tag_len, p, "proc");
}

/* The process named by "id" of a request with the given fields; NULL after
   replying with an error. */
static proc_t *
s_req_proc (agent_t *self, const unsigned char *tag, size_t tag_len, json_t *hdr,
            const char *const *allowed)
{
    char msg[256];
    if (s_check_fields (hdr, allowed, msg, sizeof msg) < 0) {
        s_send_error (self, tag, tag_len, "bad_request", "%s", msg);
        return NULL;
    }
    json_t *jid = json_object_get (hdr, "id");
    if (!json_is_string (jid) || json_string_length (jid) > 64 || !s_string_clean (jid)) {
        s_send_error (self, tag, tag_len, "bad_request", "\"id\" must be a process id (\"p-1\")");
        return NULL;
    }
    proc_t *p = s_proc_find (self, json_string_value (jid));
    if (!p)
        s_send_error (self, tag, tag_len, "not_found", "no process %s", json_string_value (jid));
    return p;
}

/* {"op":"proc_get","id":ID} */
static void
s_op_proc_get (agent_t *self, const unsigned char *tag, size_t tag_len, json_t *hdr)
{
    static const char *const allowed[] = { "op", "id", NULL };
    proc_t *p = s_req_proc (self, tag, tag_len, hdr, allowed);
    if (p)
        s_proc_reply (self, tag, tag_len, p, "proc");
}

/* {"op":"proc_list"}: one proc_entry event per process, oldest first, then
   {"ev":"procs","count":N}. One event each because 256 processes with
   their commands would not fit in one header. */
static void
s_op_proc_list (agent_t *self, const unsigned char *tag, size_t tag_len, json_t *hdr)
{
    static const char *const allowed[] = { "op", NULL };
    char msg[128];
    if (s_check_fields (hdr, allowed, msg, sizeof msg) < 0) {
        s_send_error (self, tag, tag_len, "bad_request", "%s", msg);
        return;
    }
    json_int_t count = 0;
    for (uint64_t last = 0;; count++) {
        proc_t *next = NULL;
        for (int i = 0; i < MAX_PROCS; i++) {
            proc_t *p = &self->procs[i];
            if (p->used && p->num > last && (!next || p->num < next->num))
                next = p;
        }
        if (!next)
            break;
        s_proc_reply (self, tag, tag_len, next, "proc_entry");
        last = next->num;
    }
    s_send (self, tag, tag_len, json_pack ("{s:s, s:I}", "ev", "procs", "count", count), NULL, 0,
            false);
}

/* Signal a process's group (and the process, in case it has not reached
   setsid yet). Only before it is reaped, so the ids are still its own. */
static void
s_proc_kill (proc_t *p, int signo)
{
    kill (-p->pid, signo);
    kill (p->pid, signo);
}

/* {"op":"proc_signal","id":ID,"signal":"TERM"} (default TERM) */
static void
s_op_proc_signal (agent_t *self, const unsigned char *tag, size_t tag_len, json_t *hdr)
{
    static const char *const allowed[] = { "op", "id", "signal", NULL };
    char msg[256];
    int signo;
    const char *name;
    if (s_parse_signal (hdr, "TERM", &signo, &name, msg, sizeof msg) < 0) {
        s_send_error (self, tag, tag_len, "bad_request", "%s", msg);
        return;
    }
    proc_t *p = s_req_proc (self, tag, tag_len, hdr, allowed);
    if (!p)
        return;
    if (p->reaped) {
        s_send_error (self, tag, tag_len, "not_running", "process p-%llu has exited",
                      (unsigned long long)p->num);
        return;
    }
    s_proc_kill (p, signo);
    s_send (self, tag, tag_len, json_pack ("{s:s}", "ev", "ok"), NULL, 0, false);
}

/* {"op":"proc_kill_all","signal":"KILL"} (default KILL) */
static void
s_op_proc_kill_all (agent_t *self, const unsigned char *tag, size_t tag_len, json_t *hdr)
{
    static const char *const allowed[] = { "op", "signal", NULL };
    char msg[256];
    int signo;
    const char *name;
    if (s_check_fields (hdr, allowed, msg, sizeof msg) < 0
        || s_parse_signal (hdr, "KILL", &signo, &name, msg, sizeof msg) < 0) {
        s_send_error (self, tag, tag_len, "bad_request", "%s", msg);
        return;
    }
    json_int_t count = 0;
    for (int i = 0; i < MAX_PROCS; i++) {
        proc_t *p = &self->procs[i];
        if (p->used && !p->reaped) {
            s_proc_kill (p, signo);
            count++;
        }
    }
    s_send (self, tag, tag_len, json_pack ("{s:s, s:I}", "ev", "ok", "count", count), NULL, 0,
            false);
}

/* {"op":"proc_logs","id":ID,"follow":bool} */
static void
s_op_proc_logs (agent_t *self, const unsigned char *tag, size_t tag_len, json_t *hdr)
{
    static const char *const allowed[] = { "op", "id", "follow", NULL };
    json_t *jfollow = json_object_get (hdr, "follow");
    if (jfollow && !json_is_boolean (jfollow)) {
        s_send_error (self, tag, tag_len, "bad_request", "\"follow\" must be a boolean");
        return;
    }
    proc_t *p = s_req_proc (self, tag, tag_len, hdr, allowed);
    if (!p)
        return;
    bool follow = json_is_true (jfollow);
    if (follow && !p->done && p->nfollow >= MAX_FOLLOWERS) {
        s_send_error (self, tag, tag_len, "busy", "process already has %d followers",
                      MAX_FOLLOWERS);
        return;
    }
    s_ring_send (self, &p->ring[0], tag, tag_len, true);
    s_ring_send (self, &p->ring[1], tag, tag_len, false);
    /* Each reply stream ends with one event whose name alone says it is
       the last: logs_end without follow, exit with it. */
    if (!follow) {
        s_send (self, tag, tag_len,
                json_pack ("{s:s, s:b}", "ev", "logs_end", "truncated",
                           p->ring[0].dropped || p->ring[1].dropped),
                NULL, 0, false);
        return;
    }
    if (p->done) {
        s_proc_send_exit (self, p, tag, tag_len);
        return;
    }
    follower_t *f = &p->followers[p->nfollow++];
    memcpy (f->tag, tag, tag_len);
    f->tag_len = tag_len;
}

/* Stop following for tag on every process (followed == NULL) or drop all
   followers; returns how many were removed. */
static int
s_proc_unfollow (agent_t *self, const unsigned char *tag, size_t tag_len)
{
    int removed = 0;
    for (int i = 0; i < MAX_PROCS; i++) {
        proc_t *p = &self->procs[i];
        for (int k = 0; k < p->nfollow;) {
            follower_t *f = &p->followers[k];
            if (!tag || (f->tag_len == tag_len && memcmp (f->tag, tag, tag_len) == 0)) {
                *f = p->followers[--p->nfollow];
                removed++;
            }
            else
                k++;
        }
    }
    return removed;
}

/* {"op":"proc_unfollow"}, sent with the tag of a proc_logs follow request. */
static void
s_op_proc_unfollow (agent_t *self, const unsigned char *tag, size_t tag_len, json_t *hdr)
{
    static const char *const allowed[] = { "op", NULL };
    char msg[128];
    if (s_check_fields (hdr, allowed, msg, sizeof msg) < 0) {
        s_send_error (self, tag, tag_len, "bad_request", "%s", msg);
        return;
    }
    int n = s_proc_unfollow (self, tag, tag_len);
    s_send (self, tag, tag_len, json_pack ("{s:s, s:i}", "ev", "ok", "count", n), NULL, 0, false);
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
        for (int i = 0; i < MAX_SESSIONS; i++) {
            session_t *s = &self->sessions[i];
            if (s->used && s->pid == pid && !s->reaped) {
                /* The rest of the group goes too (background jobs), now,
                   while the group id cannot have been reused. */
                kill (-pid, SIGKILL);
                s->reaped = true;
                s->wstatus = status;
                s->reap_us = s_mono_us ();
                s_close (&s->in_fd);
                free (s->line);
                s->line = NULL;
                s->line_len = s->line_off = 0;
            }
        }
        for (int i = 0; i < MAX_PROCS; i++) {
            proc_t *p = &self->procs[i];
            if (p->used && p->pid == pid && !p->reaped) {
                struct timespec now;
                clock_gettime (CLOCK_REALTIME, &now);
                p->reaped = true;
                p->wstatus = status;
                p->exit_us = s_mono_us ();
                p->ended_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
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

/* Milliseconds until the nearest exec, session or process deadline or
   grace period; -1 if none. */
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
    for (int i = 0; i < MAX_SESSIONS; i++) {
        int64_t at = s_session_next_at (&self->sessions[i]);
        if (at >= 0 && (next < 0 || at < next))
            next = at;
    }
    for (int i = 0; i < MAX_PROCS; i++) {
        proc_t *p = &self->procs[i];
        int64_t at = p->used && p->reaped && !p->done ? p->exit_us + (int64_t)GRACE_MS * 1000 : -1;
        if (at >= 0 && (next < 0 || at < next))
            next = at;
    }
    if (self->retry_us && (next < 0 || self->retry_us < next))
        next = self->retry_us;
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
    for (int i = 0; i < MAX_SESSIONS; i++) {
        session_t *s = &self->sessions[i];
        if (s->used && s->cur && !s->cur->is_state && s->pid == pid && !s->reaped) {
            kill (-pid, signo);
            s_log ("DEBUG", "sent SIG%s to session %s", name, s->id);
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
    else if (strcmp (op, "session_exec") == 0)
        s_op_session_exec (self, tag, tag_len, hdr, payload);
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
    else if (strcmp (op, "session_open") == 0)
        s_op_session_open (self, tag, tag_len, hdr);
    else if (strcmp (op, "session_close") == 0)
        s_op_session_close (self, tag, tag_len, hdr);
    else if (strcmp (op, "session_state") == 0)
        s_op_session_state (self, tag, tag_len, hdr);
    else if (strcmp (op, "session_list") == 0)
        s_op_session_list (self, tag, tag_len, hdr);
    else if (strcmp (op, "proc_start") == 0)
        s_op_proc_start (self, tag, tag_len, hdr);
    else if (strcmp (op, "proc_list") == 0)
        s_op_proc_list (self, tag, tag_len, hdr);
    else if (strcmp (op, "proc_get") == 0)
        s_op_proc_get (self, tag, tag_len, hdr);
    else if (strcmp (op, "proc_signal") == 0)
        s_op_proc_signal (self, tag, tag_len, hdr);
    else if (strcmp (op, "proc_kill_all") == 0)
        s_op_proc_kill_all (self, tag, tag_len, hdr);
    else if (strcmp (op, "proc_logs") == 0)
        s_op_proc_logs (self, tag, tag_len, hdr);
    else if (strcmp (op, "proc_unfollow") == 0)
        s_op_proc_unfollow (self, tag, tag_len, hdr);
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

/* Socket monitor events: say hello each time the connection is (re)made
   and authenticated, so a restarted broker learns the agent is back (and
   the broker learns which connection is ours). */
static void
s_on_monitor (agent_t *self)
{
    static bool rejected;
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
            connected = event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED;
            if (!connected && !rejected)
                s_log ("ERROR",
                       "the broker refused the handshake (event 0x%x): wrong or missing "
                       "%s? retrying every %d ms",
                       event, KEY_ENV, RETRY_MS);
            rejected = !connected;
            /* libzmq gives a connection up for good after a refused
               handshake; try again later (the broker may be re-attached
               with the key we hold), slowly. */
            if (!connected && !self->retry_us)
                self->retry_us = s_mono_us () + (int64_t)RETRY_MS * 1000;
            else if (connected)
                self->retry_us = 0;
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
            /* Tags belong to the broker that sent them: a new connection
               is a new broker, which will never read the old follows. */
            int dropped = s_proc_unfollow (self, NULL, 0);
            s_log ("INFO", "connected to broker%s", dropped ? "; dropped old log followers" : "");
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
    for (int i = 0; i < MAX_SESSIONS; i++) {
        session_t *s = &self->sessions[i];
        struct {
            int fd;
            ref_kind_t kind;
            short events;
        } want[3] = { { s->out_fd, REF_SESS_OUT, ZMQ_POLLIN },
                      { s->err_fd, REF_SESS_ERR, ZMQ_POLLIN },
                      { s->line ? s->in_fd : -1, REF_SESS_IN, ZMQ_POLLOUT } };
        for (int k = 0; k < 3 && s->used; k++) {
            if (want[k].fd < 0)
                continue;
            self->items[n] = (zmq_pollitem_t){ .fd = want[k].fd, .events = want[k].events };
            self->refs[n].slot = i;
            self->refs[n].kind = want[k].kind;
            n++;
        }
    }
    for (int i = 0; i < MAX_PROCS; i++) {
        proc_t *p = &self->procs[i];
        int fds[2] = { p->out_fd, p->err_fd };
        for (int k = 0; k < 2 && p->used; k++) {
            if (fds[k] < 0)
                continue;
            self->items[n] = (zmq_pollitem_t){ .fd = fds[k], .events = ZMQ_POLLIN };
            self->refs[n].slot = i;
            self->refs[n].kind = k == 0 ? REF_PROC_OUT : REF_PROC_ERR;
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
            int fd = self->items[k].fd, slot = self->refs[k].slot;
            exec_t *e = &self->execs[slot < MAX_EXECS ? slot : 0];
            session_t *s = &self->sessions[slot < MAX_SESSIONS ? slot : 0];
            proc_t *p = &self->procs[slot < MAX_PROCS ? slot : 0];
            switch (self->refs[k].kind) {
            case REF_SESS_OUT:
                if (s->used && s->out_fd == fd)
                    s_session_on_output (self, s, 0);
                break;
            case REF_SESS_ERR:
                if (s->used && s->err_fd == fd)
                    s_session_on_output (self, s, 1);
                break;
            case REF_SESS_IN:
                if (s->used && s->in_fd == fd)
                    s_session_on_stdin (s);
                break;
            case REF_PROC_OUT:
                if (p->used && p->out_fd == fd)
                    s_proc_on_output (self, p, 0);
                break;
            case REF_PROC_ERR:
                if (p->used && p->err_fd == fd)
                    s_proc_on_output (self, p, 1);
                break;
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
        if (self->retry_us && now >= self->retry_us) {
            self->retry_us = 0;
            zmq_disconnect (self->sock, self->endpoint);
            if (zmq_connect (self->sock, self->endpoint) < 0)
                s_log ("ERROR", "connecting to %s: %s", self->endpoint,
                       zmq_strerror (zmq_errno ()));
        }
        s_check_deadlines (self, now);
        for (int i = 0; i < MAX_EXECS; i++)
            s_exec_maybe_finish (self, &self->execs[i], now);
        for (int i = 0; i < MAX_SESSIONS; i++)
            s_session_tick (self, &self->sessions[i], now);
        for (int i = 0; i < MAX_PROCS; i++)
            s_proc_tick (self, &self->procs[i], now);
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

/* The secret the broker admits us with (docs/agent-protocol.md), from
   KEY_ENV. Taken before anything else runs in the container: the value is
   wiped from the environment block (what /proc/1/environ shows) and the
   variable dropped, so no child ever inherits it; PR_SET_DUMPABLE 0 keeps
   tenant code (our uid) from reading our memory or /proc/1/environ. */
static char s_key[KEY_MAX + 1];

static void
s_take_key (void)
{
    char *v = getenv (KEY_ENV);
    if (!v) {
        s_log ("WARN", "%s is not set: connecting without credentials", KEY_ENV);
        return;
    }
    size_t n = strlen (v);
    if (n > 0 && n <= KEY_MAX)
        memcpy (s_key, v, n + 1);
    else
        s_log ("WARN", "%s is empty or longer than %d bytes: ignored", KEY_ENV, KEY_MAX);
    explicit_bzero (v, n);
    unsetenv (KEY_ENV);
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
    if (s_key[0]
        && (zmq_setsockopt (self->sock, ZMQ_PLAIN_USERNAME, "agent", 5) < 0
            || zmq_setsockopt (self->sock, ZMQ_PLAIN_PASSWORD, s_key, strlen (s_key)) < 0)) {
        s_log ("ERROR", "zmq_setsockopt (PLAIN): %s", zmq_strerror (zmq_errno ()));
        return -1;
    }
    /* libzmq keeps its own copy for reconnects. */
    explicit_bzero (s_key, sizeof s_key);
    if (zmq_socket_monitor (self->sock, MONITOR_ENDPOINT,
                            ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH
                                | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL)
        == 0) {
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
    self->endpoint = endpoint;
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
    for (int i = 0; i < MAX_SESSIONS; i++) {
        session_t *s = &self->sessions[i];
        if (s->used) {
            s_session_kill (s);
            s_session_unlink (s);
            s_item_free (self, s->cur, false);
            s->cur = NULL;
            while (s->head) {
                sess_item_t *it = s->head;
                s->head = it->next;
                s_item_free (self, it, true);
            }
            free (s->cap);
            s_session_drop_shell (s);
            free (s->cwd);
            json_decref (s->env);
        }
    }
    for (int i = 0; i < MAX_PROCS; i++) {
        proc_t *p = &self->procs[i];
        if (p->used) {
            if (!p->reaped)
                s_proc_kill (p, SIGKILL);
            s_proc_free (self, p);
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
    s_take_key ();
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
    for (int i = 0; i < MAX_SESSIONS; i++)
        self->sessions[i].in_fd = self->sessions[i].out_fd = self->sessions[i].err_fd = -1;
    for (int i = 0; i < MAX_PROCS; i++)
        self->procs[i].out_fd = self->procs[i].err_fd = -1;
    const char *session_dir = getenv ("SANDBOXD_AGENT_SESSION_DIR");
    if (!session_dir || session_dir[0] != '/' || strlen (session_dir) > SESSION_DIR_MAX) {
        if (session_dir)
            s_log ("WARN",
                   "ignoring SANDBOXD_AGENT_SESSION_DIR: not an absolute path of at most %d "
                   "bytes",
                   SESSION_DIR_MAX);
        session_dir = SESSION_DIR_DEFAULT;
    }
    snprintf (self->session_dir, sizeof self->session_dir, "%s", session_dir);
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
