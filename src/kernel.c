/* kernel.c - start, run, interrupt and stop one Jupyter kernel in a sandbox.

   The kernel process is an exec call to the sandbox agent that never ends
   while the kernel lives: its exit event is how we learn the kernel died.
   The kernel binds its sockets in /run/kernels/<kid>/, a directory tenant
   code can write. The broker therefore never connects by path there: it
   opens each socket inode with O_PATH|O_NOFOLLOW from a directory fd it
   holds, checks it is a socket, and connects to /proc/self/fd/N. */
#include "kernel.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sodium.h>
#include <zmq.h>

#include "execution.h"
#include "jsonv.h"
#include "jupyter.h"

#define START_TIMEOUT_MS    60000
#define GRACE_MS            3000
#define POLL_MS             250
#define KERNEL_UID          1000
#define MAX_ABORT_RETRIES   3
#define ABORT_RETRY_MS      250
#define SHUTDOWN_WAIT_MS    300
#define REATTACH_TIMEOUT_MS 5000

enum { CH_SHELL = 0, CH_IOPUB, CH_STDIN, CH_CONTROL, CH_HB, CH_COUNT };
static const char *const s_channel_names[CH_COUNT] = { "shell", "iopub", "stdin", "control", "hb" };

struct _kernel_t {
    agent_link_t *link;
    char cid[64];
    char kid[40];
    kernel_lang_t lang;
    jupyter_session_t session;
    agent_call_t *proc; /* the exec call running the kernel process */
    int pid;
    bool dead;
    bool no_shutdown; /* destroy without asking the kernel first */
    bool watched;     /* re-attached: proc is a watcher, not the kernel itself */
    int kernels_fd;   /* <sandbox_dir>/kernels */
    int kdir_fd;      /* <sandbox_dir>/kernels/<kid> */
    int sock_fd[CH_COUNT];
    void *sock[CH_COUNT];
    char kdir_path[1200];
};

static void *s_zctx;
static pthread_once_t s_zctx_once = PTHREAD_ONCE_INIT;

static void
s_zctx_init (void)
{
    s_zctx = zmq_ctx_new ();
}

const char *
kernel_lang_name (kernel_lang_t lang)
{
    switch (lang) {
    case KERNEL_PYTHON:
        return "python";
    case KERNEL_JAVASCRIPT:
        return "javascript";
    case KERNEL_TYPESCRIPT:
        return "typescript";
    }
    return "python";
}

int
kernel_lang_parse (const char *name, kernel_lang_t *out)
{
    for (int l = KERNEL_PYTHON; l <= KERNEL_TYPESCRIPT; l++)
        if (strcmp (name, kernel_lang_name ((kernel_lang_t)l)) == 0) {
            *out = (kernel_lang_t)l;
            return 0;
        }
    return -1;
}

kernel_lang_t
kernel_lang (const kernel_t *self)
{
    return self->lang;
}

/* One short request to the agent, waiting for its final reply. */
static int
s_agent_signal (kernel_t *self, const char *signame, err_t *err)
{
    json_t *req
        = json_pack ("{s:s, s:i, s:s}", "op", "signal", "pid", self->pid, "signal", signame);
    agent_call_t *call = agent_call_new (self->link, self->cid, req, NULL, 0, 1000, err);
    json_decref (req);
    if (!call)
        return -1;
    json_t *h = NULL;
    char *data = NULL;
    size_t len = 0;
    int got = agent_call_recv (call, 2000, &h, &data, &len, err);
    int rc = -1;
    if (got == 1 && !strcmp (json_string_value (json_object_get (h, "ev")), "ok"))
        rc = 0;
    else if (got >= 0)
        err_set (err, 503, "kernel_unavailable", "the kernel process is not running");
    json_decref (h);
    free (data);
    agent_call_destroy (&call);
    return rc;
}

/* Consume what the kernel process call has to say without blocking: its
   output is ignored, its exit marks the kernel dead. */
static void
s_check_proc (kernel_t *self, char *why, size_t why_size)
{
    for (;;) {
        json_t *h = NULL;
        char *data = NULL;
        size_t len = 0;
        err_t err = { 0 };
        int got = agent_call_recv (self->proc, 0, &h, &data, &len, &err);
        if (got <= 0) {
            if (got < 0)
                self->dead = true;
            return;
        }
        const char *ev = json_string_value (json_object_get (h, "ev"));
        if (!strcmp (ev, "exit") || !strcmp (ev, "error")) {
            self->dead = true;
            if (why) {
                json_t *code = json_object_get (h, "exit_code");
                const char *msg = json_string_value (json_object_get (h, "message"));
                if (msg)
                    snprintf (why, why_size, "%.300s", msg);
                else if (self->watched)
                    snprintf (why, why_size, "the kernel process exited (watcher status %lld)",
                              (long long)(json_is_integer (code) ? json_integer_value (code) : -1));
                else
                    snprintf (why, why_size, "the kernel process exited with status %lld",
                              (long long)(json_is_integer (code) ? json_integer_value (code) : -1));
            }
        }
        else if (why && data && len && !strcmp (ev, "stderr") && !self->watched) {
            /* Keep the tail of what the kernel said, for start-up errors. */
            size_t n = len < why_size - 1 ? len : why_size - 1;
            memcpy (why, data + len - n, n);
            why[n] = '\0';
        }
        json_decref (h);
        free (data);
    }
}

bool
kernel_heartbeat (kernel_t *self, int timeout_ms)
{
    if (!kernel_alive (self) || !self->sock[CH_HB])
        return false;
    if (zmq_send (self->sock[CH_HB], "ping", 4, ZMQ_DONTWAIT) < 0)
        return false;
    zmq_pollitem_t item = { self->sock[CH_HB], 0, ZMQ_POLLIN, 0 };
    if (zmq_poll (&item, 1, timeout_ms) <= 0)
        return false;
    char buf[16];
    return zmq_recv (self->sock[CH_HB], buf, sizeof buf, ZMQ_DONTWAIT) == 4
           && memcmp (buf, "ping", 4) == 0;
}

bool
kernel_alive (kernel_t *self)
{
    if (!self->dead)
        s_check_proc (self, NULL, 0);
    return !self->dead;
}

/* Open the kernel's socket files once they exist, refusing anything that
   is not a socket owned by the sandbox user. 1 when all are there. */
static int
s_open_sockets (kernel_t *self)
{
    if (self->kdir_fd < 0) {
        self->kdir_fd
            = openat (self->kernels_fd, self->kid, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (self->kdir_fd < 0)
            return 0;
    }
    char sep = self->lang == KERNEL_PYTHON ? '-' : ':'; /* ipykernel vs tslab naming */
    for (int ch = 0; ch < CH_COUNT; ch++) {
        if (self->sock_fd[ch] >= 0)
            continue;
        char name[16];
        snprintf (name, sizeof name, "k%c%d", sep, ch + 1);
        int fd = openat (self->kdir_fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            return 0;
        struct stat st;
        if (fstat (fd, &st) < 0 || !S_ISSOCK (st.st_mode) || st.st_uid != KERNEL_UID) {
            close (fd);
            return 0;
        }
        self->sock_fd[ch] = fd;
    }
    return 1;
}

static int
s_connect (kernel_t *self, err_t *err)
{
    static const int types[CH_COUNT] = { ZMQ_DEALER, ZMQ_SUB, ZMQ_DEALER, ZMQ_DEALER, ZMQ_REQ };
    for (int ch = 0; ch < CH_COUNT; ch++) {
        void *s = zmq_socket (s_zctx, types[ch]);
        if (!s)
            return err_set (err, 500, "internal", "zmq_socket: %s", zmq_strerror (errno));
        self->sock[ch] = s;
        int zero = 0;
        int64_t maxmsg = JUPYTER_MAX_FRAME;
        zmq_setsockopt (s, ZMQ_LINGER, &zero, sizeof zero);
        zmq_setsockopt (s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
        if (ch == CH_IOPUB)
            zmq_setsockopt (s, ZMQ_SUBSCRIBE, "", 0);
        if (ch == CH_HB) {
            /* A ping that got no answer must not wedge the REQ socket. */
            int one = 1;
            zmq_setsockopt (s, ZMQ_REQ_RELAXED, &one, sizeof one);
            zmq_setsockopt (s, ZMQ_REQ_CORRELATE, &one, sizeof one);
        }
        char ep[64];
        snprintf (ep, sizeof ep, "ipc:///proc/self/fd/%d", self->sock_fd[ch]);
        if (zmq_connect (s, ep) < 0)
            return err_set (err, 500, "internal", "connecting %s socket: %s", s_channel_names[ch],
                            zmq_strerror (errno));
    }
    return 0;
}

/* kernel_info on shell until it is answered and iopub has delivered a
   message, so the subscription is known to be live before the first real
   request; what arrives meanwhile is dropped. With watch, a kernel that
   exits meanwhile ends it at once. */
static int
s_info_exchange (const jupyter_session_t *session, void *shell, void *iopub, int64_t deadline,
                 kernel_t *watch, err_t *err)
{
    bool replied = false, iopub_live = false;
    int64_t next_send = 0;
    char sent[8][64];
    int nsent = 0;
    while (!(replied && iopub_live)) {
        int64_t now = util_mono_ms ();
        if (now >= deadline)
            return err_set (err, 503, "kernel_unavailable",
                            "the kernel did not answer kernel_info");
        if (now >= next_send && nsent < 8 * 1000) {
            jupyter_msg_t *m = jupyter_msg_new (session, "kernel_info_request", NULL);
            if (!m || jupyter_msg_send (session, shell, m, err) < 0) {
                jupyter_msg_destroy (&m);
                return -1;
            }
            snprintf (sent[nsent % 8], sizeof sent[0], "%s", jupyter_msg_id (m));
            nsent++;
            jupyter_msg_destroy (&m);
            next_send = now + 500;
        }
        zmq_pollitem_t items[2] = { { shell, 0, ZMQ_POLLIN, 0 }, { iopub, 0, ZMQ_POLLIN, 0 } };
        zmq_poll (items, 2, 50);
        for (int i = 0; i < 2; i++) {
            if (!(items[i].revents & ZMQ_POLLIN))
                continue;
            for (;;) {
                err_t rerr = { 0 };
                jupyter_msg_t *m = jupyter_msg_recv (session, items[i].socket, ZMQ_DONTWAIT, &rerr);
                if (!m) {
                    if (rerr.status == 0)
                        break;
                    continue;
                }
                if (i == 1)
                    iopub_live = true;
                else if (!strcmp (jupyter_msg_type (m), "kernel_info_reply"))
                    for (int k = 0; k < 8 && k < nsent; k++)
                        if (!strcmp (sent[k], jupyter_parent_id (m)))
                            replied = true;
                jupyter_msg_destroy (&m);
            }
        }
        if (watch) {
            char why[512] = "";
            s_check_proc (watch, why, sizeof why);
            if (watch->dead)
                return err_set (err, 503, "kernel_unavailable",
                                "the kernel exited while starting: %s", why);
        }
    }
    return 0;
}

static int
s_handshake (kernel_t *self, int64_t deadline, err_t *err)
{
    return s_info_exchange (&self->session, self->sock[CH_SHELL], self->sock[CH_IOPUB], deadline,
                            self, err);
}

static const char *
s_kernel_command (kernel_lang_t lang)
{
    switch (lang) {
    case KERNEL_PYTHON:
        /* No SQLite history: In/Out stay in memory, and each cell skips a
           database write (about a third of a 1+1 round trip). No 0.5 ms
           sleep before each reply: ipykernel sleeps for clients that stop
           at execute_reply before the output arrived; we always wait for
           status idle too, which iopub delivers after all output. */
        return "python3 -m ipykernel_launcher --HistoryManager.enabled=False "
               "--IPythonKernel._execute_sleep=0 "
               "\"--IPKernelApp.exec_lines=__import__('sys').path.insert(0, "
               "'/opt/sandboxd/python'); import sandboxd_display as _sbx; "
               "_sbx.install(get_ipython()); del _sbx\" -f";
    case KERNEL_JAVASCRIPT:
        return "tslab kernel --js --config-path";
    case KERNEL_TYPESCRIPT:
        return "tslab kernel --config-path";
    }
    return "false";
}

/* A kernel_t with nothing open yet, its kernels directory fd opened. */
static kernel_t *
s_alloc (agent_link_t *link, const char *cid, const char *sandbox_dir, kernel_lang_t lang,
         const char *kid, err_t *err)
{
    pthread_once (&s_zctx_once, s_zctx_init);
    kernel_t *self = calloc (1, sizeof *self);
    if (!self) {
        err_set (err, 500, "internal", "out of memory");
        return NULL;
    }
    self->link = link;
    self->lang = lang;
    self->pid = -1;
    self->kdir_fd = -1;
    for (int ch = 0; ch < CH_COUNT; ch++)
        self->sock_fd[ch] = -1;
    snprintf (self->cid, sizeof self->cid, "%s", cid);
    if (kid)
        snprintf (self->kid, sizeof self->kid, "%s", kid);
    else {
        char rnd[17];
        util_random_hex (rnd, 8);
        snprintf (self->kid, sizeof self->kid, "k%s", rnd);
    }
    jupyter_session_init (&self->session);
    char kernels[1100];
    snprintf (kernels, sizeof kernels, "%s/kernels", sandbox_dir);
    snprintf (self->kdir_path, sizeof self->kdir_path, "%s/%s", kernels, self->kid);
    self->kernels_fd = open (kernels, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (self->kernels_fd < 0) {
        err_set (err, 500, "internal", "opening %s: %s", kernels, strerror (errno));
        free (self);
        return NULL;
    }
    return self;
}

kernel_t *
kernel_start (agent_link_t *link, const char *cid, const char *sandbox_dir, kernel_lang_t lang,
              err_t *err)
{
    kernel_t *self = s_alloc (link, cid, sandbox_dir, lang, NULL, err);
    if (!self)
        return NULL;
    int64_t t0 = util_mono_ms (), deadline = t0 + START_TIMEOUT_MS;

    char base[128], file[160], command[1536];
    snprintf (base, sizeof base, "/run/kernels/%s/k", self->kid);
    snprintf (file, sizeof file, "/run/kernels/%s/connection.json", self->kid);
    json_t *conn = jupyter_connection_info (&self->session, base,
                                            lang == KERNEL_PYTHON ? "python3" : "tslab");
    char *conn_text = jsonv_dumps (conn);
    json_decref (conn);
    /* The connection file is written inside the sandbox by the sandbox user:
       the broker never writes into a directory tenant code controls. */
    snprintf (command, sizeof command,
              "umask 077 && mkdir /run/kernels/%s && printf '%%s' \"$SANDBOXD_KERNEL_CONN\" > %s "
              "&& unset SANDBOXD_KERNEL_CONN && exec %s %s",
              self->kid, file, s_kernel_command (lang), file);
    json_t *req
        = json_pack ("{s:s, s:s, s:s, s:{s:s, s:s}, s:i, s:i}", "op", "exec", "command", command,
                     "cwd", "/workspace", "env", "SANDBOXD_KERNEL_CONN", conn_text ? conn_text : "",
                     "PYDEVD_DISABLE_FILE_VALIDATION", "1", "timeout_ms", 0, "max_output", 65536);
    free (conn_text);
    self->proc = agent_call_new (link, cid, req, NULL, 0, 3000, err);
    json_decref (req);
    if (!self->proc) {
        kernel_destroy (&self);
        return NULL;
    }
    json_t *h = NULL;
    char *data = NULL;
    size_t len = 0;
    int got = agent_call_recv (self->proc, 10000, &h, &data, &len, err);
    const char *ev = got == 1 ? json_string_value (json_object_get (h, "ev")) : NULL;
    if (ev && !strcmp (ev, "start"))
        self->pid = (int)json_integer_value (json_object_get (h, "pid"));
    else {
        if (got >= 0)
            err_set (err, 503, "kernel_unavailable", "the sandbox agent did not start the kernel");
        json_decref (h);
        free (data);
        self->dead = true;
        kernel_destroy (&self);
        return NULL;
    }
    json_decref (h);
    free (data);

    while (!s_open_sockets (self)) {
        char why[512] = "";
        s_check_proc (self, why, sizeof why);
        if (self->dead || util_mono_ms () >= deadline) {
            err_set (err, 503, "kernel_unavailable", "the %s kernel did not start: %s",
                     kernel_lang_name (lang), self->dead ? why : "timed out");
            kernel_destroy (&self);
            return NULL;
        }
        usleep (10000);
    }
    if (s_connect (self, err) < 0 || s_handshake (self, deadline, err) < 0) {
        kernel_destroy (&self);
        return NULL;
    }
    log_info ("sandbox cid=%s kernel=%s (%s): ready in %lld ms", cid, self->kid,
              kernel_lang_name (lang), (long long)(util_mono_ms () - t0));
    return self;
}

/* A kernel id as kernel_start makes them: "k" and 16 lowercase hex digits.
   Ids read back from disk go into shell commands, so nothing else passes. */
static bool
s_kid_valid (const char *kid)
{
    if (!kid || kid[0] != 'k' || strlen (kid) != 17)
        return false;
    for (int i = 1; i < 17; i++)
        if (!strchr ("0123456789abcdef", kid[i]))
            return false;
    return true;
}

kernel_t *
kernel_reattach (agent_link_t *link, const char *cid, const char *sandbox_dir, kernel_lang_t lang,
                 const char *kid, int pid, const char *key_hex, err_t *err)
{
    if (!s_kid_valid (kid) || pid <= 0) {
        err_set (err, 500, "internal", "invalid kernel id or pid");
        return NULL;
    }
    kernel_t *self = s_alloc (link, cid, sandbox_dir, lang, kid, err);
    if (!self)
        return NULL;
    self->pid = pid;
    self->watched = true;
    int64_t deadline = util_mono_ms () + REATTACH_TIMEOUT_MS;
    if (jupyter_session_set_key (&self->session, key_hex, err) < 0) {
        kernel_destroy_now (&self);
        return NULL;
    }
    /* The agent knows the kernel's pid only while that very process runs
       (it is the agent's child), so the signal doubles as a liveness check
       that cannot be fooled by pid reuse. SIGINT also ends a run the
       previous broker left going; an idle kernel ignores it. */
    if (s_agent_signal (self, "INT", err) < 0) {
        self->dead = true;
        kernel_destroy_now (&self);
        return NULL;
    }
    /* The exec call that started the kernel belonged to the previous broker;
       its exit event will never reach us. A watcher that ends with the
       kernel takes its place. */
    char command[128];
    snprintf (command, sizeof command, "exec tail --pid=%d -s 0.25 -f /dev/null", pid);
    json_t *req = json_pack ("{s:s, s:s, s:s, s:i, s:i}", "op", "exec", "command", command, "cwd",
                             "/", "timeout_ms", 0, "max_output", 4096);
    self->proc = agent_call_new (link, cid, req, NULL, 0, 3000, err);
    json_decref (req);
    json_t *h = NULL;
    char *data = NULL;
    size_t len = 0;
    int got = self->proc ? agent_call_recv (self->proc, 5000, &h, &data, &len, err) : -1;
    const char *ev = got == 1 ? json_string_value (json_object_get (h, "ev")) : NULL;
    bool started = ev && !strcmp (ev, "start");
    json_decref (h);
    free (data);
    if (!started) {
        if (got >= 0)
            err_set (err, 503, "kernel_unavailable", "could not watch the kernel process");
        kernel_destroy_now (&self);
        return NULL;
    }
    if (!s_open_sockets (self)) {
        err_set (err, 503, "kernel_unavailable", "the kernel's sockets are gone");
        kernel_destroy_now (&self);
        return NULL;
    }
    if (s_connect (self, err) < 0 || s_handshake (self, deadline, err) < 0) {
        kernel_destroy_now (&self);
        return NULL;
    }
    log_info ("sandbox cid=%s kernel=%s (%s): re-attached", cid, self->kid,
              kernel_lang_name (lang));
    return self;
}

const char *
kernel_id (const kernel_t *self)
{
    return self->kid;
}

int
kernel_pid (const kernel_t *self)
{
    return self->pid;
}

const char *
kernel_key_hex (const kernel_t *self)
{
    return self->session.key_hex;
}

int
kernel_cleanup_stale (agent_link_t *link, const char *cid, const char *const *keep, size_t nkeep,
                      err_t *err)
{
    /* case patterns of the kernels to keep; "-" matches no kernel id. */
    char pats[2][4096];
    size_t off[2] = { 0, 0 };
    off[0] = (size_t)snprintf (pats[0], sizeof pats[0], "-");
    off[1] = (size_t)snprintf (pats[1], sizeof pats[1], "-");
    for (size_t i = 0; i < nkeep; i++) {
        if (!s_kid_valid (keep[i]) || off[0] + 64 >= sizeof pats[0])
            continue;
        off[0] += (size_t)snprintf (pats[0] + off[0], sizeof pats[0] - off[0],
                                    "|*/run/kernels/%s/*", keep[i]);
        off[1] += (size_t)snprintf (pats[1] + off[1], sizeof pats[1] - off[1], "|%s", keep[i]);
    }
    /* A broker killed during its own recovery leaves its cleanup running in
       the sandbox; run after it (flock), or it would kill the watchers and
       kernels this process starts next. */
    char command[9000];
    snprintf (command, sizeof command,
              "exec 9>>/run/kernels/.cleanup.lock ; flock -w 15 9 ; "
              "pkill -KILL -f '^tail --pid=[0-9]+ -s 0[.]25 -f /dev/null$' ; "
              "for p in $(pgrep -f '^(python3 -m ipykernel_launcher .*|node "
              "/usr/local/bin/tslab kernel) .*/run/kernels/'); do "
              "case \"$(tr '\\0' ' ' < /proc/$p/cmdline 2>/dev/null)\" in %s) ;; "
              "*) echo \"killed $p\" ; kill -KILL $p ;; esac ; done ; "
              "cd /run/kernels && for d in *; do case \"$d\" in %s) ;; "
              "*) rm -rf -- \"$d\" ;; esac ; done ; true",
              pats[0], pats[1]);
    json_t *req = json_pack ("{s:s, s:s, s:s, s:i, s:i}", "op", "exec", "command", command, "cwd",
                             "/", "timeout_ms", 30000, "max_output", 4096);
    agent_call_t *call = agent_call_new (link, cid, req, NULL, 0, 5000, err);
    json_decref (req);
    if (!call)
        return -1;
    int rc = -1;
    for (;;) {
        json_t *h = NULL;
        char *data = NULL;
        size_t len = 0;
        int got = agent_call_recv (call, 35000, &h, &data, &len, err);
        const char *ev = got == 1 ? json_string_value (json_object_get (h, "ev")) : NULL;
        bool end = !ev || !strcmp (ev, "exit") || !strcmp (ev, "error");
        if (ev && !strcmp (ev, "exit"))
            rc = 0;
        if (ev && !strcmp (ev, "stdout") && data)
            log_debug ("sandbox cid=%s: stale kernels: %.*s", cid, (int)len, data);
        json_decref (h);
        free (data);
        if (end)
            break;
    }
    agent_call_destroy (&call);
    return rc;
}

void
kernel_destroy (kernel_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    kernel_t *self = *self_p;
    if (self->pid > 0 && !self->dead && self->sock[CH_CONTROL] && !self->no_shutdown) {
        /* Ask first (the kernel may clean up), then make sure. */
        err_t err;
        json_t *content = json_pack ("{s:b}", "restart", 0);
        jupyter_msg_t *m = jupyter_msg_new (&self->session, "shutdown_request", content);
        if (m && jupyter_msg_send (&self->session, self->sock[CH_CONTROL], m, &err) == 0) {
            int64_t until = util_mono_ms () + SHUTDOWN_WAIT_MS;
            while (!self->dead && util_mono_ms () < until) {
                zmq_pollitem_t item = { agent_call_socket (self->proc), 0, ZMQ_POLLIN, 0 };
                zmq_poll (&item, 1, 20);
                s_check_proc (self, NULL, 0);
            }
        }
        jupyter_msg_destroy (&m);
    }
    if (self->pid > 0 && !self->dead) {
        err_t err;
        s_agent_signal (self, "KILL", &err);
    }
    for (int ch = 0; ch < CH_COUNT; ch++) {
        if (self->sock[ch])
            zmq_close (self->sock[ch]);
        if (self->sock_fd[ch] >= 0)
            close (self->sock_fd[ch]);
    }
    agent_call_destroy (&self->proc);
    if (self->kdir_fd >= 0)
        close (self->kdir_fd);
    if (self->kernels_fd >= 0) {
        close (self->kernels_fd);
        util_rm_rf (self->kdir_path);
    }
    free (self);
    *self_p = NULL;
}

void
kernel_close (kernel_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    kernel_t *self = *self_p;
    for (int ch = 0; ch < CH_COUNT; ch++) {
        if (self->sock[ch])
            zmq_close (self->sock[ch]);
        if (self->sock_fd[ch] >= 0)
            close (self->sock_fd[ch]);
    }
    agent_call_destroy (&self->proc);
    if (self->kdir_fd >= 0)
        close (self->kdir_fd);
    if (self->kernels_fd >= 0)
        close (self->kernels_fd);
    free (self);
    *self_p = NULL;
}

void
kernel_destroy_now (kernel_t **self_p)
{
    if (self_p && *self_p)
        (*self_p)->no_shutdown = true;
    kernel_destroy (self_p);
}

int
kernel_interrupt (kernel_t *self, err_t *err)
{
    if (self->pid <= 0)
        return err_set (err, 503, "kernel_unavailable", "the kernel is not running");
    return s_agent_signal (self, "INT", err);
}

void
kernel_kill (kernel_t *self)
{
    err_t err;
    if (self->pid > 0)
        s_agent_signal (self, "KILL", &err);
}

/* Deliver events (an array, stolen) to the sink; 1 if the sink gave up. */
static int
s_deliver (json_t *events, kernel_sink_fn *sink, void *arg)
{
    int gone = 0;
    size_t i;
    json_t *ev;
    if (sink)
        json_array_foreach (events, i, ev)
        {
            if (!gone && sink (arg, ev))
                gone = 1;
        }
    json_decref (events);
    return gone;
}

static int
s_deliver_one (json_t *event, kernel_sink_fn *sink, void *arg)
{
    json_t *arr = json_array ();
    json_array_append_new (arr, event);
    return s_deliver (arr, sink, arg);
}

json_t *
kernel_execute (kernel_t *self, const char *code, bool silent, int64_t timeout_ms, size_t max_bytes,
                const mime_image_opts_t *img, kernel_sink_fn *sink, void *arg, err_t *err)
{
    if (!kernel_alive (self)) {
        err_set (err, 503, "kernel_unavailable", "the kernel is not running");
        return NULL;
    }
    if (silent)
        sink = NULL;
    int64_t start_us = util_mono_us (), start = start_us / 1000;
    int64_t deadline = timeout_ms > 0 ? start + timeout_ms : INT64_MAX;
    int64_t interrupted_at = 0;
    bool timed_out = false, gone = false;
    char why[512] = "";
    char msg_id[80];
    execution_t *exec = NULL;
    int attempt = 0;
send:
    /* stop_on_error off: one failed cell must not make IPython skip the
       next request that arrives before it has settled. */
    {
        json_t *content = json_pack ("{s:s, s:b, s:b, s:{}, s:b, s:b}", "code", code, "silent",
                                     silent, "store_history", !silent, "user_expressions",
                                     "allow_stdin", 0, "stop_on_error", 0);
        jupyter_msg_t *req = jupyter_msg_new (&self->session, "execute_request", content);
        if (!req || jupyter_msg_send (&self->session, self->sock[CH_SHELL], req, err) < 0) {
            if (!req)
                err_set (err, 500, "internal", "out of memory");
            jupyter_msg_destroy (&req);
            execution_destroy (&exec);
            return NULL;
        }
        snprintf (msg_id, sizeof msg_id, "%s", jupyter_msg_id (req));
        jupyter_msg_destroy (&req);
    }
    execution_destroy (&exec);
    exec = execution_new (max_bytes, img);
    while (!execution_done (exec)) {
        int64_t now = util_mono_ms ();
        if (!interrupted_at && (now >= deadline || gone)) {
            timed_out = !gone;
            err_t ierr;
            kernel_interrupt (self, &ierr);
            interrupted_at = now;
        }
        if (interrupted_at && now >= interrupted_at + GRACE_MS) {
            /* Still busy after SIGINT: only a fresh kernel gets it back. */
            err_t kerr;
            s_agent_signal (self, "KILL", &kerr);
            self->dead = true;
            if (!timed_out)
                gone = true;
            s_deliver_one (execution_fail (exec, timed_out ? "TimeoutError" : "KernelRestarted",
                                           timed_out ? "the execution timed out; the kernel stayed "
                                                       "busy after an interrupt and was restarted"
                                                     : "the kernel was restarted",
                                           true),
                           gone ? NULL : sink, arg);
            timed_out = false;
            break;
        }
        zmq_pollitem_t items[3] = { { self->sock[CH_SHELL], 0, ZMQ_POLLIN, 0 },
                                    { self->sock[CH_IOPUB], 0, ZMQ_POLLIN, 0 },
                                    { agent_call_socket (self->proc), 0, ZMQ_POLLIN, 0 } };
        long wait = POLL_MS;
        if (!interrupted_at && deadline - now < wait)
            wait = deadline - now > 0 ? (long)(deadline - now) : 0;
        zmq_poll (items, 3, wait);
        /* iopub first: a reply's outputs are published before the reply. */
        for (int i = 1; i >= 0; i--) {
            for (int budget = 0; budget < 1000; budget++) {
                err_t rerr = { 0 };
                jupyter_msg_t *m
                    = jupyter_msg_recv (&self->session, items[i].socket, ZMQ_DONTWAIT, &rerr);
                if (!m) {
                    if (rerr.status == 0)
                        break;
                    continue;
                }
                if (!strcmp (jupyter_parent_id (m), msg_id)) {
                    json_t *events = execution_apply (exec, i == 1 ? "iopub" : "shell",
                                                      jupyter_msg_type (m), m->content);
                    /* A skipped cell is sent again (below): keep its
                       "aborted" error from the client. */
                    bool retry = execution_aborted (exec) && attempt < MAX_ABORT_RETRIES;
                    if (s_deliver (events, gone || retry ? NULL : sink, arg))
                        gone = true;
                }
                jupyter_msg_destroy (&m);
            }
        }
        if (sink && !gone && sink (arg, NULL))
            gone = true;
        s_check_proc (self, why, sizeof why);
        if (self->dead) {
            s_deliver_one (execution_fail (exec, "KernelDied",
                                           why[0] ? why : "the kernel process exited", true),
                           gone ? NULL : sink, arg);
            break;
        }
    }
    if (execution_aborted (exec) && attempt < MAX_ABORT_RETRIES && !interrupted_at && !gone
        && !self->dead && util_mono_ms () + ABORT_RETRY_MS < deadline) {
        /* TSLab skips every cell for 200 ms after a failed one. */
        attempt++;
        usleep (ABORT_RETRY_MS * 1000);
        goto send;
    }
    if (timed_out) {
        char msg[128];
        snprintf (msg, sizeof msg, "the execution exceeded its timeout of %lld ms",
                  (long long)timeout_ms);
        s_deliver_one (execution_fail (exec, "TimeoutError", msg, true), gone ? NULL : sink, arg);
    }
    log_debug ("kernel=%s: run of %zu bytes took %lld us (%d attempts)", self->kid, strlen (code),
               (long long)(util_mono_us () - start_us), attempt + 1);
    json_t *out = execution_to_json (exec);
    execution_destroy (&exec);
    return out;
}

/* --- channels for front ends that speak the protocol themselves --------- */

#define CHAN_SEND_TIMEOUT_MS 2000

struct _kernel_chan_t {
    jupyter_session_t session; /* the kernel's key; headers come from the front end */
    int fd[CH_COUNT];          /* our own duplicates of the socket inodes */
    void *sock[CH_COUNT];      /* shell, iopub, stdin, control (no heartbeat) */
};

kernel_chan_t *
kernel_chan_open (kernel_t *k, err_t *err)
{
    kernel_chan_t *c = calloc (1, sizeof *c);
    if (!c) {
        err_set (err, 500, "internal", "out of memory");
        return NULL;
    }
    c->session = k->session;
    for (int ch = 0; ch < CH_COUNT; ch++)
        c->fd[ch] = -1;
    /* One routing id for shell and stdin: ipykernel sends input_request
       to the identity that sent the execute_request. */
    unsigned char rid[16];
    randombytes_buf (rid, sizeof rid);
    rid[0] |= 1; /* a routing id must not start with a zero byte */
    static const int types[CH_COUNT] = { ZMQ_DEALER, ZMQ_SUB, ZMQ_DEALER, ZMQ_DEALER, 0 };
    for (int ch = 0; ch < CH_HB; ch++) {
        if (k->sock_fd[ch] < 0) {
            err_set (err, 503, "kernel_unavailable", "the kernel's sockets are not open");
            goto fail;
        }
        c->fd[ch] = fcntl (k->sock_fd[ch], F_DUPFD_CLOEXEC, 3);
        void *s = c->fd[ch] >= 0 ? zmq_socket (s_zctx, types[ch]) : NULL;
        if (!s) {
            err_set (err, 500, "internal", "opening a kernel channel: %s", strerror (errno));
            goto fail;
        }
        c->sock[ch] = s;
        int zero = 0, sndtimeo = CHAN_SEND_TIMEOUT_MS;
        int64_t maxmsg = JUPYTER_MAX_FRAME;
        zmq_setsockopt (s, ZMQ_LINGER, &zero, sizeof zero);
        zmq_setsockopt (s, ZMQ_SNDTIMEO, &sndtimeo, sizeof sndtimeo);
        zmq_setsockopt (s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
        if (ch == CH_IOPUB)
            zmq_setsockopt (s, ZMQ_SUBSCRIBE, "", 0);
        if (ch == CH_SHELL || ch == CH_STDIN)
            zmq_setsockopt (s, ZMQ_ROUTING_ID, rid, sizeof rid);
        char ep[64];
        snprintf (ep, sizeof ep, "ipc:///proc/self/fd/%d", c->fd[ch]);
        if (zmq_connect (s, ep) < 0) {
            err_set (err, 500, "internal", "connecting %s socket: %s", s_channel_names[ch],
                     zmq_strerror (errno));
            goto fail;
        }
    }
    return c;
fail:
    kernel_chan_close (&c);
    return NULL;
}

void
kernel_chan_close (kernel_chan_t **self_p)
{
    kernel_chan_t *c = *self_p;
    if (!c)
        return;
    *self_p = NULL;
    for (int ch = 0; ch < CH_COUNT; ch++) {
        if (c->sock[ch])
            zmq_close (c->sock[ch]);
        if (c->fd[ch] >= 0)
            close (c->fd[ch]);
    }
    free (c);
}

int
kernel_chan_index (const char *channel)
{
    for (int ch = 0; ch < CH_HB; ch++)
        if (!strcmp (channel, s_channel_names[ch]))
            return ch;
    return -1;
}

const char *
kernel_chan_name (int index)
{
    return index >= 0 && index < CH_COUNT ? s_channel_names[index] : "";
}

int
kernel_chan_send (kernel_chan_t *c, const char *channel, const jupyter_msg_t *msg, err_t *err)
{
    int ch = kernel_chan_index (channel);
    if (ch < 0 || ch == CH_IOPUB)
        return err_set (err, 400, "invalid_field", "a front end cannot send on channel '%.32s'",
                        channel);
    return jupyter_msg_send (&c->session, c->sock[ch], msg, err);
}

int
kernel_chan_poll (kernel_chan_t *c, int fd, int timeout_ms)
{
    zmq_pollitem_t items[CH_HB + 1];
    int n = 0;
    if (c)
        for (int ch = 0; ch < CH_HB; ch++)
            items[n++] = (zmq_pollitem_t){ c->sock[ch], 0, ZMQ_POLLIN, 0 };
    if (fd >= 0)
        items[n++] = (zmq_pollitem_t){ NULL, fd, ZMQ_POLLIN, 0 };
    if (zmq_poll (items, n, timeout_ms) <= 0)
        return 0;
    int mask = 0;
    for (int i = 0; i < n; i++)
        if (items[i].revents & (ZMQ_POLLIN | ZMQ_POLLERR))
            mask |= items[i].socket ? 2 : 1;
    return mask;
}

jupyter_msg_t *
kernel_chan_recv (kernel_chan_t *c, const char **channel, err_t *err)
{
    for (int ch = 0; ch < CH_HB; ch++) {
        for (;;) {
            err_t rerr = { 0 };
            jupyter_msg_t *m = jupyter_msg_recv (&c->session, c->sock[ch], ZMQ_DONTWAIT, &rerr);
            if (m) {
                *channel = s_channel_names[ch];
                return m;
            }
            if (rerr.status == 0)
                break; /* nothing more on this socket */
            if (rerr.status != 502) {
                *err = rerr;
                return NULL;
            }
            /* a forged or oversized message was dropped: try the next one */
        }
    }
    err->status = 0;
    return NULL;
}

int
kernel_chan_handshake (kernel_chan_t *c, int timeout_ms)
{
    err_t err = { 0 };
    return s_info_exchange (&c->session, c->sock[CH_SHELL], c->sock[CH_IOPUB],
                            util_mono_ms () + timeout_ms, NULL, &err);
}
