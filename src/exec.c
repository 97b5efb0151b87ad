/* exec.c - one command in a sandbox, through the agent link. */
#include "exec.h"

#include <stdlib.h>
#include <string.h>

#include "jsonv.h"
#include "sessions.h"

#define START_WAIT_MS 10000
#define GRACE_MS      10000

struct _exec_t {
    agent_link_t *link;
    char cid[64];
    agent_call_t *call;
    int pid;
    int finished;
    int follow;       /* a process's logs: on an early end, stop following */
    int64_t deadline; /* monotonic ms after which the agent has overrun */
    size_t max_output;
};

static const char *const s_exec_keys[]
    = { "command", "cwd", "env", "timeout_ms", "stdin", "session", NULL };

static int
s_event_kind (const char *ev, exec_ev_kind_t *kind)
{
    static const struct {
        const char *name;
        exec_ev_kind_t kind;
    } map[] = { { "start", EXEC_EV_START },
                { "stdout", EXEC_EV_STDOUT },
                { "stderr", EXEC_EV_STDERR },
                { "exit", EXEC_EV_EXIT },
                { "error", EXEC_EV_ERROR } };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp (ev, map[i].name) == 0) {
            *kind = map[i].kind;
            return 0;
        }
    return -1;
}

/* Map an agent error event onto the error a client sees. */
static int
s_agent_error (json_t *h, err_t *err)
{
    const char *code = json_string_value (json_object_get (h, "code"));
    const char *msg = json_string_value (json_object_get (h, "message"));
    if (!code)
        code = "internal";
    if (!msg)
        msg = "the command could not be started";
    if (!strcmp (code, "bad_cwd"))
        return err_set (err, 422, "bad_cwd", "%.400s", msg);
    if (!strcmp (code, "busy"))
        return err_set (err, 429, "busy", "%.400s", msg);
    if (!strcmp (code, "not_found"))
        return err_set (err, 404, "not_found", "%.400s", msg);
    if (!strcmp (code, "sandbox_unavailable") || !strcmp (code, "agent_unreachable"))
        return err_set (err, 503, "sandbox_unavailable", "%.400s", msg);
    if (!strcmp (code, "exec_failed"))
        return err_set (err, 500, "exec_failed", "%.400s", msg);
    return err_set (err, 500, "internal", "sandbox agent: %.400s", msg);
}

/* Send req (borrowed) with the stdin payload and wait for the start (or
   the error that stops it). 0, or -1 with *err and self->finished set. */
static int
s_send_and_start (exec_t *self, json_t *req, const char *stdin_text, err_t *err)
{
    agent_call_destroy (&self->call);
    self->finished = 0;
    self->call = agent_call_new (self->link, self->cid, req, stdin_text,
                                 stdin_text ? strlen (stdin_text) : 0, 3000, err);
    if (!self->call) {
        self->finished = 1;
        return -1;
    }
    exec_event_t ev;
    int got = exec_next (self, START_WAIT_MS, &ev, err);
    if (got == 0)
        err_set (err, 503, "sandbox_unavailable", "the sandbox agent did not start the command");
    if (got == 1 && ev.kind == EXEC_EV_START) {
        json_t *pid = json_object_get (ev.header, "pid");
        self->pid = json_is_integer (pid) ? (int)json_integer_value (pid) : -1;
        exec_event_clear (&ev);
        return 0;
    }
    if (got == 1) {
        if (ev.kind == EXEC_EV_ERROR)
            s_agent_error (ev.header, err);
        else
            err_set (err, 500, "internal", "sandbox agent sent output before start");
        exec_event_clear (&ev);
    }
    self->finished = 1;
    return -1;
}

exec_t *
exec_start (sandbox_mgr_t *mgr, const char *tenant, const char *id, json_t *body, err_t *err)
{
    const config_t *cfg = sandbox_mgr_config (mgr);
    const char *command = NULL, *cwd = NULL, *stdin_text = NULL, *session = NULL;
    int64_t timeout_ms = cfg->exec_default_timeout_ms;
    json_t *env = NULL;
    if (jsonv_only_keys (body, "", s_exec_keys, err) < 0
        || jsonv_string (body, "", "command", true, 64 * 1024, &command, err) < 0
        || jsonv_string (body, "", "cwd", false, 4096, &cwd, err) < 0
        || jsonv_string (body, "", "session", false, 63, &session, err) < 0
        || jsonv_env (body, "", "env", 256, 64 * 1024, &env, err) < 0
        || jsonv_int (body, "", "timeout_ms", false, 1, cfg->exec_max_timeout_ms, &timeout_ms, err)
               < 0
        || jsonv_string (body, "", "stdin", false, (size_t)cfg->max_body_bytes, &stdin_text, err)
               < 0)
        return NULL;
    if (cwd && cwd[0] != '/') {
        err_set (err, 400, "invalid_field", "field 'cwd': must be an absolute path");
        return NULL;
    }
    if (session && !util_valid_id (session)) {
        err_set (err, 400, "invalid_field", "field 'session': not a valid session id");
        return NULL;
    }
    if (session && cwd) {
        err_set (err, 400, "invalid_field",
                 "give 'cwd' or 'session', not both (cd inside the session instead)");
        return NULL;
    }
    /* Naming the default session is the same as naming none: it is made
       on first use either way. */
    if (session && !strcmp (session, "default"))
        session = NULL;

    char cid[64];
    json_t *sandbox_env = NULL, *unset = NULL;
    if (sandbox_resolve_env (mgr, tenant, id, cid, &sandbox_env, &unset, err) < 0)
        return NULL;
    json_t *merged = json_deep_copy (sandbox_env);
    if (env)
        json_object_update (merged, env);

    exec_t *self = calloc (1, sizeof *self);
    if (!self) {
        json_decref (merged);
        json_decref (sandbox_env);
        json_decref (unset);
        err_set (err, 500, "internal", "out of memory");
        return NULL;
    }
    self->link = sandbox_mgr_link (mgr);
    snprintf (self->cid, sizeof self->cid, "%s", cid);
    self->max_output = (size_t)cfg->max_output_bytes;
    self->pid = -1;
    self->deadline = util_mono_ms () + timeout_ms + GRACE_MS;
    /* With a cwd the command runs on its own there; otherwise in a session
       (the sandbox's default one unless named), where cd, export and
       functions carry over. The env is exported into the session, so
       sandbox-wide env set later reaches existing sessions too. */
    json_t *req
        = cwd ? json_pack ("{s:s, s:s, s:s, s:O, s:I, s:I}", "op", "exec", "command", command,
                           "cwd", cwd, "env", merged, "timeout_ms", (json_int_t)timeout_ms,
                           "max_output", (json_int_t)cfg->max_output_bytes)
              /* In a session: the sandbox env is exported (it persists, and
                 reaches sessions opened before it was set), what was unset
                 is dropped, and the request's env holds for this command
                 only. */
              : json_pack ("{s:s, s:s, s:s, s:O, s:O, s:o, s:I, s:I}", "op", "session_exec",
                           "session", session ? session : "default", "command", command, "env",
                           sandbox_env, "unset", unset, "cmd_env",
                           env ? json_incref (env) : json_object (), "timeout_ms",
                           (json_int_t)timeout_ms, "max_output", (json_int_t)cfg->max_output_bytes);
    int rc = s_send_and_start (self, req, stdin_text, err);
    if (rc < 0 && !cwd && !session && err->status == 404) {
        /* The default session is made on first use. */
        err_t derr = { 0 };
        if (sessions_ensure_default (mgr, cid, sandbox_env, &derr) == 0)
            rc = s_send_and_start (self, req, stdin_text, err);
    }
    else if (rc < 0 && session && err->status == 404)
        err_set (err, 404, "not_found", "session %s not found", session);
    json_decref (req);
    json_decref (merged);
    json_decref (sandbox_env);
    json_decref (unset);
    if (rc < 0) {
        exec_destroy (&self);
        return NULL;
    }
    return self;
}

exec_t *
exec_attach (sandbox_mgr_t *mgr, const char *cid, json_t *req, err_t *err)
{
    exec_t *self = calloc (1, sizeof *self);
    if (!self) {
        err_set (err, 500, "internal", "out of memory");
        return NULL;
    }
    self->link = sandbox_mgr_link (mgr);
    snprintf (self->cid, sizeof self->cid, "%s", cid);
    self->max_output = SIZE_MAX;
    self->pid = -1;
    self->deadline = INT64_MAX;
    self->follow = 1;
    self->call = agent_call_new (self->link, cid, req, NULL, 0, 3000, err);
    if (!self->call) {
        free (self);
        return NULL;
    }
    return self;
}

int
exec_pid (const exec_t *self)
{
    return self->pid;
}

void
exec_event_clear (exec_event_t *ev)
{
    json_decref (ev->header);
    free (ev->data);
    memset (ev, 0, sizeof *ev);
}

int
exec_next (exec_t *self, int timeout_ms, exec_event_t *ev, err_t *err)
{
    memset (ev, 0, sizeof *ev);
    if (self->finished)
        return err_set (err, 500, "internal", "exec already finished");
    for (;;) {
        int64_t left = self->deadline - util_mono_ms ();
        if (left <= 0) {
            self->finished = 1;
            return err_set (err, 503, "sandbox_unavailable",
                            "the sandbox agent did not finish the command in time");
        }
        int wait = timeout_ms < 0 || timeout_ms > left ? (int)left : timeout_ms;
        json_t *h = NULL;
        char *data = NULL;
        size_t len = 0;
        int got = agent_call_recv (self->call, wait, &h, &data, &len, err);
        if (got <= 0) {
            if (got < 0)
                self->finished = 1;
            if (got == 0 && wait < left)
                return 0;
            if (got == 0)
                continue;
            return -1;
        }
        exec_ev_kind_t kind;
        if (s_event_kind (json_string_value (json_object_get (h, "ev")), &kind) < 0) {
            json_decref (h);
            free (data);
            continue; /* not an exec event: ignore */
        }
        if ((kind == EXEC_EV_STDOUT || kind == EXEC_EV_STDERR) && !data) {
            json_decref (h);
            continue;
        }
        if (kind == EXEC_EV_EXIT || kind == EXEC_EV_ERROR)
            self->finished = 1;
        ev->kind = kind;
        ev->header = h;
        ev->data = data;
        ev->len = len;
        return 1;
    }
}

typedef struct {
    char *buf;
    size_t len;
} buf_t;

static void
s_append (buf_t *b, const char *data, size_t len, size_t cap, int *truncated)
{
    if (b->len + len > cap) {
        len = cap > b->len ? cap - b->len : 0;
        *truncated = 1;
    }
    if (len == 0)
        return;
    char *grown = realloc (b->buf, b->len + len);
    if (!grown) {
        *truncated = 1;
        return;
    }
    b->buf = grown;
    memcpy (b->buf + b->len, data, len);
    b->len += len;
}

static int64_t
s_int (json_t *h, const char *key, int64_t fallback)
{
    json_t *v = json_object_get (h, key);
    return json_is_integer (v) ? json_integer_value (v) : fallback;
}

json_t *
exec_collect (exec_t *self, err_t *err)
{
    buf_t out = { 0 }, errb = { 0 };
    int truncated = 0;
    json_t *result = NULL;
    for (;;) {
        exec_event_t ev;
        int got = exec_next (self, -1, &ev, err);
        if (got < 0)
            break;
        if (got == 0)
            continue;
        if (ev.kind == EXEC_EV_STDOUT)
            s_append (&out, ev.data, ev.len, self->max_output, &truncated);
        else if (ev.kind == EXEC_EV_STDERR)
            s_append (&errb, ev.data, ev.len, self->max_output, &truncated);
        else if (ev.kind == EXEC_EV_ERROR) {
            s_agent_error (ev.header, err);
            exec_event_clear (&ev);
            break;
        }
        else if (ev.kind == EXEC_EV_EXIT) {
            int agent_truncated = json_is_true (json_object_get (ev.header, "truncated"));
            result
                = json_pack ("{s:o, s:o, s:I, s:I, s:b, s:b}", "stdout",
                             jsonv_string_from_bytes (out.buf ? out.buf : "", out.len), "stderr",
                             jsonv_string_from_bytes (errb.buf ? errb.buf : "", errb.len),
                             "exit_code", (json_int_t)s_int (ev.header, "exit_code", -1),
                             "duration_ms", (json_int_t)s_int (ev.header, "duration_ms", 0),
                             "timed_out", json_is_true (json_object_get (ev.header, "timed_out")),
                             "truncated", truncated || agent_truncated);
            if (result && json_is_true (json_object_get (ev.header, "session_reset")))
                json_object_set_new (result, "session_reset", json_true ());
            exec_event_clear (&ev);
            break;
        }
        exec_event_clear (&ev);
    }
    free (out.buf);
    free (errb.buf);
    return result;
}

void
exec_destroy (exec_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    exec_t *self = *self_p;
    if (!self->finished && self->follow && self->call) {
        /* Sent on the same call, so the agent knows which follower left. */
        json_t *req = json_pack ("{s:s}", "op", "proc_unfollow");
        err_t err;
        agent_call_send (self->call, req, &err);
        json_decref (req);
    }
    if (!self->finished && self->pid > 0) {
        /* The caller went away mid-run: do not leave the command behind. */
        json_t *req
            = json_pack ("{s:s, s:i, s:s}", "op", "signal", "pid", self->pid, "signal", "KILL");
        err_t err;
        agent_call_t *kill = agent_call_new (self->link, self->cid, req, NULL, 0, 0, &err);
        json_decref (req);
        if (kill) {
            json_t *h = NULL;
            char *data = NULL;
            size_t len;
            agent_call_recv (kill, 1000, &h, &data, &len, &err);
            json_decref (h);
            free (data);
            agent_call_destroy (&kill);
        }
    }
    agent_call_destroy (&self->call);
    free (self);
    *self_p = NULL;
}
