/* sessions.c - sessions and background processes over the agent. */
#include "sessions.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_link.h"
#include "jsonv.h"

#define AGENT_MS 10000

bool
sessions_valid_signal (const char *name)
{
    static const char *const names[] = { "TERM", "KILL", "INT", "HUP", "QUIT", "USR1", "USR2" };
    for (size_t i = 0; name && i < sizeof names / sizeof names[0]; i++)
        if (!strcmp (name, names[i]))
            return true;
    return false;
}

/* Send req (stolen) to the sandbox (tenant, sid) and return the reply. */
static json_t *
s_call (sandbox_mgr_t *mgr, const char *tenant, const char *sid, json_t *req, char *cid_out,
        json_t **env, err_t *err)
{
    char cid[64];
    json_t *reply = NULL;
    if (req && sandbox_resolve (mgr, tenant, sid, cid, env, err) == 0)
        reply = agent_link_request (sandbox_mgr_link (mgr), cid, req, AGENT_MS, err);
    else if (!req)
        err_set (err, 500, "internal", "out of memory");
    json_decref (req);
    if (cid_out && reply)
        snprintf (cid_out, 64, "%s", cid);
    return reply;
}

static const char *const s_session_keys[] = { "id", "env", "cwd", NULL };

int
sessions_create (sandbox_mgr_t *mgr, const char *tenant, const char *sid, json_t *body,
                 json_t **out, err_t *err)
{
    const char *id = NULL, *cwd = "/workspace";
    json_t *env = NULL;
    if (jsonv_only_keys (body, "", s_session_keys, err) < 0
        || jsonv_string (body, "", "id", false, 63, &id, err) < 0
        || jsonv_string (body, "", "cwd", false, 4000, &cwd, err) < 0
        || jsonv_env (body, "", "env", 256, 64 * 1024, &env, err) < 0)
        return -1;
    if (id && !util_valid_id (id))
        return err_set (err, 400, "invalid_field",
                        "field 'id': 1 to 63 characters of [A-Za-z0-9_.-], starting alphanumeric");
    if (cwd[0] != '/')
        return err_set (err, 400, "invalid_field", "field 'cwd': must be an absolute path");
    char gen[32];
    if (!id) {
        char rnd[17];
        util_random_hex (rnd, 8);
        snprintf (gen, sizeof gen, "ses-%s", rnd);
        id = gen;
    }
    char cid[64];
    json_t *merged = NULL;
    if (sandbox_resolve (mgr, tenant, sid, cid, &merged, err) < 0)
        return -1;
    if (env)
        json_object_update (merged, env);
    json_t *req = json_pack ("{s:s, s:s, s:s, s:O}", "op", "session_open", "session", id, "cwd",
                             cwd, "env", merged);
    json_t *reply = agent_link_request (sandbox_mgr_link (mgr), cid, req, AGENT_MS, err);
    json_decref (req);
    if (!reply) {
        json_decref (merged);
        if (err->status == 409)
            err_set (err, 409, "exists", "session %s already exists", id);
        return -1;
    }
    json_decref (reply);
    *out = json_pack ("{s:s, s:s, s:o}", "id", id, "cwd", cwd, "env", merged);
    return 0;
}

int
sessions_list (sandbox_mgr_t *mgr, const char *tenant, const char *sid, json_t **out, err_t *err)
{
    json_t *reply
        = s_call (mgr, tenant, sid, json_pack ("{s:s}", "op", "session_list"), NULL, NULL, err);
    if (!reply)
        return -1;
    json_t *list = json_array ();
    size_t i;
    json_t *s;
    json_array_foreach (json_object_get (reply, "sessions"), i, s)
    {
        const char *id = json_string_value (json_object_get (s, "id"));
        if (id && util_valid_id (id))
            json_array_append_new (list, json_pack ("{s:s, s:b}", "id", id, "busy",
                                                    json_is_true (json_object_get (s, "busy"))));
    }
    json_decref (reply);
    *out = json_pack ("{s:o}", "sessions", list);
    return 0;
}

int
sessions_get (sandbox_mgr_t *mgr, const char *tenant, const char *sid, const char *session,
              json_t **out, err_t *err)
{
    json_t *reply = s_call (mgr, tenant, sid,
                            json_pack ("{s:s, s:s}", "op", "session_state", "session", session),
                            NULL, NULL, err);
    if (!reply) {
        if (err->status == 404)
            err_set (err, 404, "not_found", "session %s not found", session);
        return -1;
    }
    json_t *cwd = json_object_get (reply, "cwd"), *env = json_object_get (reply, "env");
    *out = json_pack ("{s:s, s:O, s:O}", "id", session, "cwd",
                      json_is_string (cwd) ? cwd : json_null (), "env",
                      json_is_object (env) ? env : json_null ());
    json_decref (reply);
    return 0;
}

int
sessions_delete (sandbox_mgr_t *mgr, const char *tenant, const char *sid, const char *session,
                 err_t *err)
{
    json_t *reply = s_call (mgr, tenant, sid,
                            json_pack ("{s:s, s:s}", "op", "session_close", "session", session),
                            NULL, NULL, err);
    if (!reply) {
        if (err->status == 404)
            err_set (err, 404, "not_found", "session %s not found", session);
        return -1;
    }
    json_decref (reply);
    return 0;
}

int
sessions_ensure_default (sandbox_mgr_t *mgr, const char *cid, json_t *env, err_t *err)
{
    json_t *req = json_pack ("{s:s, s:s, s:s, s:o}", "op", "session_open", "session", "default",
                             "cwd", "/workspace", "env", env ? json_incref (env) : json_object ());
    json_t *reply = agent_link_request (sandbox_mgr_link (mgr), cid, req, AGENT_MS, err);
    json_decref (req);
    if (!reply && err->status == 409) /* opened meanwhile by another request */
        return 0;
    json_decref (reply);
    return reply ? 0 : -1;
}

/* --- processes ---------------------------------------------------------------- */

/* A process object from the agent's, with ISO times. New reference. */
static json_t *
s_proc_json (json_t *p)
{
    char started[40], ended[40];
    json_t *st = json_object_get (p, "started_at"), *en = json_object_get (p, "ended_at");
    json_t *code = json_object_get (p, "exit_code"), *sig = json_object_get (p, "signal");
    const char *id = json_string_value (json_object_get (p, "id"));
    const char *cmd = json_string_value (json_object_get (p, "command"));
    const char *status = json_string_value (json_object_get (p, "status"));
    return json_pack (
        "{s:s, s:I, s:s, s:s, s:O, s:O, s:s?, s:s?}", "id", id ? id : "", "pid",
        json_integer_value (json_object_get (p, "pid")), "command", cmd ? cmd : "", "status",
        status ? status : "unknown", "exit_code", json_is_integer (code) ? code : json_null (),
        "signal", json_is_string (sig) ? sig : json_null (), "started_at",
        json_is_integer (st) ? util_iso8601 (json_integer_value (st), started, sizeof started)
                             : NULL,
        "ended_at",
        json_is_integer (en) ? util_iso8601 (json_integer_value (en), ended, sizeof ended) : NULL);
}

/* The agent's processes: one "proc" event each, then "procs". New array of
   the agent's process objects, or NULL with *err. */
static json_t *
s_proc_list (sandbox_mgr_t *mgr, const char *tenant, const char *sid, err_t *err)
{
    char cid[64];
    if (sandbox_resolve (mgr, tenant, sid, cid, NULL, err) < 0)
        return NULL;
    json_t *req = json_pack ("{s:s}", "op", "proc_list");
    json_t *events = agent_link_collect (sandbox_mgr_link (mgr), cid, req, "procs", AGENT_MS, err);
    json_decref (req);
    if (!events)
        return NULL;
    json_t *procs = json_array ();
    size_t i;
    json_t *e;
    json_array_foreach (events, i, e)
    {
        if (!strcmp (json_string_value (json_object_get (e, "ev")), "proc_entry"))
            json_array_append (procs, e);
    }
    json_decref (events);
    return procs;
}

/* Resolve "p-3" or "1234" to the agent's process id. */
static int
s_proc_id (sandbox_mgr_t *mgr, const char *tenant, const char *sid, const char *proc, char *id,
           size_t size, err_t *err)
{
    if (!strncmp (proc, "p-", 2)) {
        snprintf (id, size, "%s", proc);
        return 0;
    }
    char *end;
    long pid = strtol (proc, &end, 10);
    if (*end || pid <= 0)
        return err_set (err, 404, "not_found", "process %.64s not found", proc);
    json_t *reply = s_proc_list (mgr, tenant, sid, err);
    if (!reply)
        return -1;
    int rc = err_set (err, 404, "not_found", "process %.64s not found", proc);
    size_t i;
    json_t *p;
    json_array_foreach (reply, i, p)
    {
        const char *pid_id = json_string_value (json_object_get (p, "id"));
        if (json_integer_value (json_object_get (p, "pid")) == pid && pid_id) {
            snprintf (id, size, "%s", pid_id);
            rc = 0; /* the latest process with that pid wins */
        }
    }
    json_decref (reply);
    return rc;
}

static const char *const s_proc_keys[] = { "command", "cwd", "env", "session", NULL };

int
processes_start (sandbox_mgr_t *mgr, const char *tenant, const char *sid, json_t *body,
                 json_t **out, err_t *err)
{
    const char *command = NULL, *cwd = NULL, *session = NULL;
    json_t *env = NULL;
    if (jsonv_only_keys (body, "", s_proc_keys, err) < 0
        || jsonv_string (body, "", "command", true, 64 * 1024, &command, err) < 0
        || jsonv_string (body, "", "cwd", false, 4000, &cwd, err) < 0
        || jsonv_string (body, "", "session", false, 63, &session, err) < 0
        || jsonv_env (body, "", "env", 256, 64 * 1024, &env, err) < 0)
        return -1;
    if (cwd && cwd[0] != '/')
        return err_set (err, 400, "invalid_field", "field 'cwd': must be an absolute path");
    if (session && !util_valid_id (session))
        return err_set (err, 400, "invalid_field", "field 'session': not a valid session id");
    char cid[64];
    json_t *merged = NULL;
    if (sandbox_resolve (mgr, tenant, sid, cid, &merged, err) < 0)
        return -1;
    char start_cwd[4096];
    snprintf (start_cwd, sizeof start_cwd, "%s", "/workspace");
    if (session) {
        /* Start where the session is, with what it has exported. */
        json_t *req = json_pack ("{s:s, s:s}", "op", "session_state", "session", session);
        json_t *state = agent_link_request (sandbox_mgr_link (mgr), cid, req, AGENT_MS, err);
        json_decref (req);
        if (!state) {
            json_decref (merged);
            if (err->status == 404)
                err_set (err, 404, "not_found", "session %s not found", session);
            return -1;
        }
        const char *scwd = json_string_value (json_object_get (state, "cwd"));
        if (scwd)
            snprintf (start_cwd, sizeof start_cwd, "%s", scwd);
        if (json_is_object (json_object_get (state, "env")))
            json_object_update (merged, json_object_get (state, "env"));
        json_decref (state);
    }
    if (cwd)
        snprintf (start_cwd, sizeof start_cwd, "%s", cwd);
    if (env)
        json_object_update (merged, env);
    json_t *req = json_pack ("{s:s, s:s, s:s, s:o}", "op", "proc_start", "command", command, "cwd",
                             start_cwd, "env", merged);
    json_t *reply = agent_link_request (sandbox_mgr_link (mgr), cid, req, AGENT_MS, err);
    json_decref (req);
    if (!reply)
        return -1;
    *out = s_proc_json (reply);
    json_decref (reply);
    return 0;
}

int
processes_list (sandbox_mgr_t *mgr, const char *tenant, const char *sid, json_t **out, err_t *err)
{
    json_t *procs = s_proc_list (mgr, tenant, sid, err);
    if (!procs)
        return -1;
    json_t *list = json_array ();
    size_t i;
    json_t *p;
    json_array_foreach (procs, i, p) json_array_append_new (list, s_proc_json (p));
    json_decref (procs);
    *out = json_pack ("{s:o}", "processes", list);
    return 0;
}

int
processes_get (sandbox_mgr_t *mgr, const char *tenant, const char *sid, const char *proc,
               json_t **out, err_t *err)
{
    char id[64];
    if (s_proc_id (mgr, tenant, sid, proc, id, sizeof id, err) < 0)
        return -1;
    json_t *reply = s_call (mgr, tenant, sid, json_pack ("{s:s, s:s}", "op", "proc_get", "id", id),
                            NULL, NULL, err);
    if (!reply)
        return -1;
    *out = s_proc_json (reply);
    json_decref (reply);
    return 0;
}

int
processes_signal (sandbox_mgr_t *mgr, const char *tenant, const char *sid, const char *proc,
                  const char *signame, json_t **out, err_t *err)
{
    if (!signame)
        signame = "TERM";
    if (!sessions_valid_signal (signame))
        return err_set (err, 400, "invalid_field",
                        "query 'signal': one of TERM, KILL, INT, HUP, QUIT, USR1, USR2");
    char id[64];
    if (s_proc_id (mgr, tenant, sid, proc, id, sizeof id, err) < 0)
        return -1;
    json_t *reply
        = s_call (mgr, tenant, sid,
                  json_pack ("{s:s, s:s, s:s}", "op", "proc_signal", "id", id, "signal", signame),
                  NULL, NULL, err);
    if (!reply)
        return -1;
    json_decref (reply);
    return processes_get (mgr, tenant, sid, id, out, err);
}

int
processes_kill_all (sandbox_mgr_t *mgr, const char *tenant, const char *sid, const char *signame,
                    json_t **out, err_t *err)
{
    if (!signame)
        signame = "KILL";
    if (!sessions_valid_signal (signame))
        return err_set (err, 400, "invalid_field",
                        "query 'signal': one of TERM, KILL, INT, HUP, QUIT, USR1, USR2");
    json_t *reply = s_call (mgr, tenant, sid,
                            json_pack ("{s:s, s:s}", "op", "proc_kill_all", "signal", signame),
                            NULL, NULL, err);
    if (!reply)
        return -1;
    json_t *count = json_object_get (reply, "count");
    *out = json_pack ("{s:I}", "count", json_is_integer (count) ? json_integer_value (count) : 0);
    json_decref (reply);
    return 0;
}

json_t *
processes_follow_request (sandbox_mgr_t *mgr, const char *tenant, const char *sid, const char *proc,
                          char *cid, err_t *err)
{
    char id[64];
    if (s_proc_id (mgr, tenant, sid, proc, id, sizeof id, err) < 0
        || sandbox_resolve (mgr, tenant, sid, cid, NULL, err) < 0)
        return NULL;
    return json_pack ("{s:s, s:s, s:b}", "op", "proc_logs", "id", id, "follow", 1);
}

int
processes_logs (sandbox_mgr_t *mgr, const char *tenant, const char *sid, const char *proc,
                json_t **out, err_t *err)
{
    char id[64], cid[64];
    if (s_proc_id (mgr, tenant, sid, proc, id, sizeof id, err) < 0
        || sandbox_resolve (mgr, tenant, sid, cid, NULL, err) < 0)
        return -1;
    json_t *req = json_pack ("{s:s, s:s, s:b}", "op", "proc_logs", "id", id, "follow", 0);
    agent_call_t *call = agent_call_new (sandbox_mgr_link (mgr), cid, req, NULL, 0, 3000, err);
    json_decref (req);
    if (!call)
        return -1;
    /* The ring holds at most 16 MiB a stream; collect until logs_end. */
    char *bufs[2] = { NULL, NULL };
    size_t lens[2] = { 0, 0 };
    int rc = -1;
    bool truncated = false;
    for (;;) {
        json_t *h = NULL;
        char *data = NULL;
        size_t len = 0;
        int got = agent_call_recv (call, AGENT_MS, &h, &data, &len, err);
        if (got <= 0) {
            if (got == 0)
                err_set (err, 503, "sandbox_unavailable", "the sandbox agent did not answer");
            break;
        }
        const char *ev = json_string_value (json_object_get (h, "ev"));
        int k = !strcmp (ev, "stdout") ? 0 : !strcmp (ev, "stderr") ? 1 : -1;
        if (k >= 0 && data && lens[k] + len <= (32u << 20)) {
            char *grown = realloc (bufs[k], lens[k] + len);
            if (grown) {
                memcpy (grown + lens[k], data, len);
                bufs[k] = grown;
                lens[k] += len;
            }
        }
        bool end = !strcmp (ev, "logs_end") || !strcmp (ev, "error");
        if (!strcmp (ev, "logs_end")) {
            truncated = json_is_true (json_object_get (h, "truncated"));
            rc = 0;
        }
        else if (!strcmp (ev, "error"))
            agent_error_to_err (h, err);
        json_decref (h);
        free (data);
        if (end)
            break;
    }
    agent_call_destroy (&call);
    if (rc == 0)
        *out = json_pack ("{s:s, s:o, s:o, s:b}", "id", id, "stdout",
                          jsonv_string_from_bytes (bufs[0] ? bufs[0] : "", lens[0]), "stderr",
                          jsonv_string_from_bytes (bufs[1] ? bufs[1] : "", lens[1]), "truncated",
                          truncated);
    free (bufs[0]);
    free (bufs[1]);
    return rc;
}
