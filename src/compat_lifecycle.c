/* compat_lifecycle.c - the lifecycle surface (docs/compat.md, "lifecycle"):
   the REST shapes of lifecycle-session-api.md — the sandbox named by the
   x-sandbox-id header; /lifecycle, /exec, /session, /session/exec,
   /mount-bucket and /unmount-bucket — over the native modules. Answers
   carry the sandboxId (and sessionId) the way the document's examples do;
   errors are the document's flat {"sandboxId", ..., "error": "code:
   message"}. sleepAfter is an idle timer: requests through this surface
   push the sandbox's expiry on by its window. */
#include "compat.h"
#include "mounts.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "exec.h"
#include "files.h"
#include "jsonv.h"
#include "sessions.h"

#define MAX_RENEWALS 1024 /* sandboxes whose sleepAfter window is remembered */

/* One request being answered. */
typedef struct {
    const compat_env_t *env;
    const compat_request_t *req;
    compat_response_t *resp;
    const char *tenant;
    const char *sid; /* x-sandbox-id, NULL when absent */
} lc_t;

/* --- answers -------------------------------------------------------------------- */

/* ids (stolen) with "error": "code: message" added; the status of err. */
static int
s_error (lc_t *c, json_t *ids, const err_t *err)
{
    int status = err->status >= 400 && err->status < 600 ? err->status : 500;
    char text[600];
    snprintf (text, sizeof text, "%s: %s", err->code[0] ? err->code : "internal", err->message);
    if (status == 500)
        log_error ("compat lifecycle: %s", text);
    if (!ids)
        ids = json_object ();
    json_object_set_new (ids, "error", json_string (text));
    return compat_json (c->resp, (unsigned)status, ids);
}

static int
s_fail (lc_t *c, json_t *ids, int status, const char *code, const char *message)
{
    err_t err;
    err_set (&err, status, code, "%s", message);
    return s_error (c, ids, &err);
}

/* ids (stolen) followed by the fields of the native answer (stolen). */
static int
s_ok (lc_t *c, unsigned status, json_t *ids, json_t *native)
{
    if (native)
        json_object_update (ids, native);
    json_decref (native);
    return compat_json (c->resp, status, ids);
}

/* {"sandboxId": sid} (null when absent), plus "sessionId" when with_session. */
static json_t *
s_ids (lc_t *c, bool with_session, const char *session)
{
    json_t *ids = json_pack ("{s:s?}", "sandboxId", c->sid);
    if (with_session)
        json_object_set_new (ids, "sessionId", session ? json_string (session) : json_null ());
    return ids;
}

/* --- sleepAfter: an idle window, renewed by activity ------------------------------ */

static struct {
    char tenant[64];
    char id[64];
    int64_t window_s;
    int64_t renewed_ms; /* monotonic; 0 = free slot */
} s_renew[MAX_RENEWALS];
static pthread_mutex_t s_renew_lock = PTHREAD_MUTEX_INITIALIZER;

static int
s_renew_find (const char *tenant, const char *id)
{
    for (int i = 0; i < MAX_RENEWALS; i++)
        if (s_renew[i].renewed_ms && !strcmp (s_renew[i].tenant, tenant)
            && !strcmp (s_renew[i].id, id))
            return i;
    return -1;
}

/* Remember (or with window_s 0, forget) the window of (tenant, id). When
   the table is full the entry renewed longest ago makes room. */
static void
s_renew_set (const char *tenant, const char *id, int64_t window_s)
{
    pthread_mutex_lock (&s_renew_lock);
    int i = s_renew_find (tenant, id);
    if (window_s <= 0) {
        if (i >= 0)
            s_renew[i].renewed_ms = 0;
        pthread_mutex_unlock (&s_renew_lock);
        return;
    }
    if (i < 0) {
        i = 0;
        for (int j = 0; j < MAX_RENEWALS; j++) {
            if (!s_renew[j].renewed_ms) {
                i = j;
                break;
            }
            if (s_renew[j].renewed_ms < s_renew[i].renewed_ms)
                i = j;
        }
        snprintf (s_renew[i].tenant, sizeof s_renew[i].tenant, "%s", tenant);
        snprintf (s_renew[i].id, sizeof s_renew[i].id, "%s", id);
    }
    s_renew[i].window_s = window_s;
    s_renew[i].renewed_ms = util_mono_ms ();
    pthread_mutex_unlock (&s_renew_lock);
}

/* "2026-11-21T10:00:00.000Z" → epoch ms; -1 when it is not one. */
static int64_t
s_parse_iso (const char *s)
{
    struct tm tm = { 0 };
    int ms = 0;
    if (!s
        || sscanf (s, "%d-%d-%dT%d:%d:%d.%dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                   &tm.tm_min, &tm.tm_sec, &ms)
               != 7)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm (&tm) * 1000 + ms;
}

/* Move the expiry of the sandbox to at least now + window_s. */
static int
s_extend_to (lc_t *c, int64_t window_s, json_t **out, err_t *err)
{
    json_t *sb = NULL;
    if (sandbox_get (c->env->mgr, c->tenant, c->sid, &sb, err) < 0)
        return -1;
    int64_t expires = s_parse_iso (json_string_value (json_object_get (sb, "expires_at")));
    int64_t by = expires < 0 ? 0 : (util_now_ms () + window_s * 1000 - expires) / 1000;
    if (by < 1) {
        *out = sb;
        return 0;
    }
    json_decref (sb);
    json_t *body = json_pack ("{s:I}", "keepalive_longer_by_seconds", (json_int_t)by);
    int rc = sandbox_extend (c->env->mgr, c->tenant, c->sid, body, out, err);
    json_decref (body);
    return rc;
}

/* Activity on the sandbox: renew its window (at most every window/10,
   between 1 s and 60 s), so that it sleeps only after sleepAfter idle. */
static void
s_touch (lc_t *c)
{
    pthread_mutex_lock (&s_renew_lock);
    int i = s_renew_find (c->tenant, c->sid);
    int64_t window = 0, now = util_mono_ms ();
    if (i >= 0) {
        int64_t every = s_renew[i].window_s * 100;
        every = every < 1000 ? 1000 : every > 60000 ? 60000 : every;
        if (now - s_renew[i].renewed_ms >= every) {
            window = s_renew[i].window_s;
            s_renew[i].renewed_ms = now;
        }
    }
    pthread_mutex_unlock (&s_renew_lock);
    if (!window)
        return;
    json_t *out = NULL;
    err_t err = { 0 };
    if (s_extend_to (c, window, &out, &err) < 0 && err.status == 404)
        s_renew_set (c->tenant, c->sid, 0);
    json_decref (out);
}

/* --- request helpers ---------------------------------------------------------------- */

static const char *
s_header (lc_t *c, const char *name)
{
    return c->req->header (c->req->cls, name);
}

static const char *
s_query (lc_t *c, const char *name)
{
    const char *v = c->req->query (c->req->cls, name);
    return v && *v ? v : NULL;
}

/* The JSON body as an object (empty: {} when allow_empty). */
static json_t *
s_body (lc_t *c, bool allow_empty, err_t *err)
{
    if (c->req->too_large) {
        err_set (err, 413, "body_too_large", "request body is larger than %lld bytes",
                 (long long)c->env->cfg->max_body_bytes);
        return NULL;
    }
    return jsonv_parse_object (c->req->body, c->req->len, allow_empty, err);
}

/* options.{cwd, env, timeout} of /exec and /session/exec, validated and
   put into the native exec body nb as cwd, env and timeout_ms. */
static int
s_exec_options (lc_t *c, json_t *body, json_t *nb, err_t *err)
{
    static const char *const keys[] = { "cwd", "env", "timeout", NULL };
    json_t *o = json_object_get (body, "options");
    if (!o || json_is_null (o))
        return 0;
    if (!json_is_object (o))
        return err_set (err, 400, "invalid_field", "field 'options': must be an object");
    const char *cwd = NULL;
    json_t *env = NULL;
    int64_t timeout = -1;
    if (jsonv_only_keys (o, "options.", keys, err) < 0
        || jsonv_string (o, "options.", "cwd", false, 4096, &cwd, err) < 0
        || jsonv_env (o, "options.", "env", 256, 64 * 1024, &env, err) < 0
        || jsonv_int (o, "options.", "timeout", false, 1, c->env->cfg->exec_max_timeout_ms,
                      &timeout, err)
               < 0)
        return -1;
    if (cwd && cwd[0] != '/')
        return err_set (err, 400, "invalid_field", "field 'options.cwd': must be an absolute path");
    if (cwd)
        json_object_set_new (nb, "cwd", json_string (cwd));
    if (env)
        json_object_set (nb, "env", env);
    if (timeout > 0)
        json_object_set_new (nb, "timeout_ms", json_integer (timeout));
    return 0;
}

static int
s_run_exec (lc_t *c, json_t *nb, json_t **out, err_t *err)
{
    exec_t *exec = exec_start (c->env->mgr, c->tenant, c->sid, nb, err);
    *out = exec ? exec_collect (exec, err) : NULL;
    exec_destroy (&exec);
    return *out ? 0 : -1;
}

/* --- /lifecycle ----------------------------------------------------------------------- */

/* sleepAfter: "30s", "5m", "2h", "1d", a bare number of seconds as a string
   or a JSON integer. Seconds, or -1 with *err. */
static int64_t
s_duration (json_t *v, int64_t max, err_t *err)
{
    int64_t n = -1;
    if (json_is_integer (v))
        n = json_integer_value (v);
    else if (json_is_string (v)) {
        const char *s = json_string_value (v);
        char *end;
        long long x = strtoll (s, &end, 10);
        int64_t unit = -1;
        if (end != s && s[0] >= '0' && s[0] <= '9' && x <= 100000000) {
            if (!strcmp (end, "") || !strcmp (end, "s"))
                unit = 1;
            else if (!strcmp (end, "m"))
                unit = 60;
            else if (!strcmp (end, "h"))
                unit = 3600;
            else if (!strcmp (end, "d"))
                unit = 86400;
        }
        if (unit > 0)
            n = x * unit;
    }
    if (n < 1 || n > max) {
        err_set (err, 400, "invalid_field",
                 "field 'options.sleepAfter': a duration like \"30s\", \"5m\" or \"1h\" (or "
                 "seconds), from 1 s to %lld s (max_keepalive_seconds)",
                 (long long)max);
        return -1;
    }
    return n;
}

static int
s_lifecycle_create (lc_t *c)
{
    static const char *const keys[] = { "options", NULL };
    static const char *const okeys[] = { "sleepAfter", "keepAlive", NULL };
    const config_t *cfg = c->env->cfg;
    err_t err = { 0 };
    json_t *body = s_body (c, true, &err);
    if (!body)
        return s_error (c, s_ids (c, false, NULL), &err);
    json_t *o = json_object_get (body, "options");
    bool keep = false;
    int64_t window = cfg->default_keepalive_seconds;
    if (jsonv_only_keys (body, "", keys, &err) < 0)
        goto fail;
    if (o && !json_is_null (o)) {
        if (!json_is_object (o)) {
            err_set (&err, 400, "invalid_field", "field 'options': must be an object");
            goto fail;
        }
        if (jsonv_only_keys (o, "options.", okeys, &err) < 0
            || jsonv_bool (o, "options.", "keepAlive", &keep, &err) < 0)
            goto fail;
        json_t *sleep = json_object_get (o, "sleepAfter");
        if (sleep && !json_is_null (sleep)
            && (window = s_duration (sleep, cfg->max_keepalive_seconds, &err)) < 0)
            goto fail;
    }
    json_decref (body);
    /* keepAlive: no idle sleep; the longest life this broker gives. */
    if (keep)
        window = cfg->max_keepalive_seconds;

    json_t *nb = json_pack ("{s:s, s:I}", "id", c->sid, "keepalive_seconds", (json_int_t)window);
    json_t *out = NULL;
    int created = 0;
    int rc = sandbox_create (c->env->mgr, c->tenant, nb, &out, &created, &err);
    json_decref (nb);
    if (rc == 0 && !created) {
        /* An existing sandbox takes the new window from now on. */
        json_decref (out);
        out = NULL;
        rc = s_extend_to (c, window, &out, &err);
    }
    if (rc < 0)
        return s_error (c, s_ids (c, false, NULL), &err);
    s_renew_set (c->tenant, c->sid, window);
    json_t *ids = s_ids (c, false, NULL);
    json_object_set_new (ids, "created", json_boolean (created));
    json_object_set_new (ids, "sleepAfter", keep ? json_null () : json_integer (window));
    json_object_set_new (ids, "keepAlive", json_boolean (keep));
    return s_ok (c, created ? 201 : 200, ids, out);
fail:
    json_decref (body);
    return s_error (c, s_ids (c, false, NULL), &err);
}

static int
s_lifecycle_destroy (lc_t *c)
{
    err_t err = { 0 };
    if (sandbox_delete (c->env->mgr, c->tenant, c->sid, &err) < 0)
        return s_error (c, s_ids (c, false, NULL), &err);
    s_renew_set (c->tenant, c->sid, 0);
    return s_ok (c, 200, s_ids (c, false, NULL),
                 json_pack ("{s:s, s:s, s:b}", "id", c->sid, "status", "deleted", "destroyed", 1));
}

/* --- /exec ------------------------------------------------------------------------------ */

static int
s_exec (lc_t *c)
{
    static const char *const keys[] = { "command", "options", NULL };
    err_t err = { 0 };
    const char *command = NULL;
    json_t *out = NULL, *nb = NULL;
    json_t *body = s_body (c, false, &err);
    if (!body || jsonv_only_keys (body, "", keys, &err) < 0
        || jsonv_string (body, "", "command", true, 64 * 1024, &command, &err) < 0)
        goto fail;
    nb = json_pack ("{s:s}", "command", command);
    if (s_exec_options (c, body, nb, &err) < 0)
        goto fail;
    s_touch (c);
    if (s_run_exec (c, nb, &out, &err) < 0)
        goto fail;
    json_decref (nb);
    json_decref (body);
    return s_ok (c, 200, s_ids (c, false, NULL), out);
fail:
    json_decref (nb);
    json_decref (body);
    return s_error (c, s_ids (c, false, NULL), &err);
}

/* --- /session --------------------------------------------------------------------------- */

static int
s_session_create (lc_t *c)
{
    static const char *const keys[] = { "id", "env", "cwd", NULL };
    err_t err = { 0 };
    const char *qid = s_query (c, "session_id");
    json_t *body = s_body (c, true, &err);
    if (!body)
        return s_error (c, s_ids (c, true, qid), &err);
    /* {session: {...}} or the options themselves (the simplified body). */
    json_t *opts = json_object_get (body, "session");
    const char *path = "session.";
    if (opts && !json_is_null (opts)) {
        static const char *const only[] = { "session", NULL };
        if (jsonv_only_keys (body, "", only, &err) < 0)
            goto fail;
        if (!json_is_object (opts)) {
            err_set (&err, 400, "invalid_field", "field 'session': must be an object");
            goto fail;
        }
    }
    else {
        opts = body;
        path = "";
    }
    const char *id = NULL;
    if (jsonv_only_keys (opts, path, keys, &err) < 0
        || jsonv_string (opts, path, "id", false, 63, &id, &err) < 0)
        goto fail;
    /* body's id first, then ?session_id; neither: a generated one. */
    json_t *nb = json_deep_copy (opts);
    if (!id && qid)
        json_object_set_new (nb, "id", json_string (qid));
    json_t *out = NULL;
    s_touch (c);
    int rc = sessions_create (c->env->mgr, c->tenant, c->sid, nb, &out, &err);
    json_decref (nb);
    if (rc < 0) {
        json_t *ids = s_ids (c, true, id ? id : qid);
        json_decref (body);
        return s_error (c, ids, &err);
    }
    json_decref (body);
    json_t *ids = s_ids (c, true, json_string_value (json_object_get (out, "id")));
    json_object_set_new (ids, "created", json_true ());
    return s_ok (c, 201, ids, out);
fail:
    json_decref (body);
    return s_error (c, s_ids (c, true, qid), &err);
}

static int
s_session (lc_t *c, const char *method)
{
    if (!strcmp (method, "POST"))
        return s_session_create (c);
    err_t err = { 0 };
    const char *qid = s_query (c, "session_id");
    json_t *out = NULL;
    s_touch (c);
    if (!strcmp (method, "GET")) {
        int rc = qid ? sessions_get (c->env->mgr, c->tenant, c->sid, qid, &out, &err)
                     : sessions_list (c->env->mgr, c->tenant, c->sid, &out, &err);
        return rc < 0 ? s_error (c, s_ids (c, true, qid), &err)
                      : s_ok (c, 200, s_ids (c, true, qid), out);
    }
    if (!qid)
        return s_fail (c, s_ids (c, true, NULL), 400, "invalid_field",
                       "query 'session_id' is required");
    if (sessions_delete (c->env->mgr, c->tenant, c->sid, qid, &err) < 0)
        return s_error (c, s_ids (c, true, qid), &err);
    return s_ok (c, 200, s_ids (c, true, qid),
                 json_pack ("{s:s, s:s, s:b}", "id", qid, "status", "deleted", "deleted", 1));
}

/* --- /session/exec ------------------------------------------------------------------------ */

/* 0 when path is a directory in the sandbox; 422 bad_cwd otherwise. */
static int
s_check_dir (lc_t *c, const char *path, err_t *err)
{
    char cid[64], dir[1200], rootfs[1300];
    if (sandbox_resolve (c->env->mgr, c->tenant, c->sid, cid, NULL, err) < 0)
        return -1;
    sandbox_mgr_dir (c->env->mgr, cid, dir, sizeof dir);
    snprintf (rootfs, sizeof rootfs, "%s/bundle/rootfs", dir);
    files_root_t *root = files_root_open (rootfs, err);
    if (!root)
        return -1;
    files_stat_t st;
    err_t serr = { 0 };
    int rc = files_stat (root, path, &st, &serr);
    files_root_close (&root);
    if (rc < 0 || strcmp (st.type, "dir"))
        return err_set (err, 422, "bad_cwd", "cwd %.400s is not a directory in the sandbox", path);
    return 0;
}

static int
s_session_exec (lc_t *c)
{
    static const char *const keys[] = { "sessionId", "session_id", "command", "options", NULL };
    err_t err = { 0 };
    const char *session = NULL, *alt = NULL, *command = NULL;
    char *wrapped = NULL;
    json_t *out = NULL, *nb = NULL;
    json_t *body = s_body (c, false, &err);
    if (!body || jsonv_only_keys (body, "", keys, &err) < 0
        || jsonv_string (body, "", "sessionId", false, 63, &session, &err) < 0
        || jsonv_string (body, "", "session_id", false, 63, &alt, &err) < 0
        || jsonv_string (body, "", "command", true, 64 * 1024, &command, &err) < 0)
        goto fail;
    /* body.sessionId, then body.session_id, then ?session_id. */
    if (!session)
        session = alt ? alt : s_query (c, "session_id");
    if (!session) {
        err_set (&err, 400, "invalid_field",
                 "a session is required: body 'sessionId' or 'session_id', or query 'session_id'");
        goto fail;
    }
    if (!util_valid_id (session)) {
        err_set (&err, 404, "not_found", "session %.63s not found", session);
        goto fail;
    }
    nb = json_pack ("{s:s}", "command", command);
    if (s_exec_options (c, body, nb, &err) < 0)
        goto fail;
    /* The native exec runs a cwd outside any session; here the command
       runs in the session, in that directory for this command only. */
    const char *cwd = json_string_value (json_object_get (nb, "cwd"));
    if (cwd) {
        if (s_check_dir (c, cwd, &err) < 0)
            goto fail;
        size_t size = strlen (command) + 2 * strlen (cwd) * 4 + 256;
        wrapped = malloc (size);
        if (!wrapped) {
            err_set (&err, 500, "internal", "out of memory");
            goto fail;
        }
        snprintf (wrapped, size, "__sbx_owd=$PWD; if cd -- ");
        util_shell_quote_append (wrapped, size, cwd);
        size_t n = strlen (wrapped);
        snprintf (wrapped + n, size - n,
                  "; then { %s\n}; __sbx_crc=$?; cd -- \"$__sbx_owd\"; unset __sbx_owd; eval "
                  "\"unset __sbx_crc; (exit $__sbx_crc)\"; else (exit 1); fi",
                  command);
        json_object_del (nb, "cwd");
        json_object_set_new (nb, "command", json_string (wrapped));
    }
    /* "default" is the sandbox's default session, made on first use. */
    if (strcmp (session, "default"))
        json_object_set_new (nb, "session", json_string (session));
    s_touch (c);
    if (s_run_exec (c, nb, &out, &err) < 0)
        goto fail;
    json_t *okids = s_ids (c, true, session);
    free (wrapped);
    json_decref (nb);
    json_decref (body);
    return s_ok (c, 200, okids, out);
fail:;
    json_t *ids = s_ids (c, true, session);
    free (wrapped);
    json_decref (nb);
    json_decref (body);
    return s_error (c, ids, &err);
}

/* --- bucket mounts ---------------------------------------------------------------------------
   The native mounts API (POST /v1/sandboxes/{id}/mounts, DELETE
   .../mounts?path=) lives in another module; these two functions are the
   only places that call it. */

static int
s_mount (const compat_env_t *env, const char *tenant, const char *id, json_t *native_body,
         json_t **out, err_t *err)
{
    *out = NULL;
    return mounts_create (env->mounts, tenant, id, native_body, out, err);
}

static int
s_unmount (const compat_env_t *env, const char *tenant, const char *id, const char *mount_path,
           json_t **out, err_t *err)
{
    *out = NULL;
    return mounts_delete (env->mounts, tenant, id, mount_path, out, err);
}

/* A bucket name: 1 to 255 of [A-Za-z0-9._-] (S3, R2 and GCS names fit). */
static bool
s_valid_bucket (const char *s)
{
    size_t n = strlen (s);
    if (n < 1 || n > 255)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9')
              || *s == '.' || *s == '_' || *s == '-'))
            return false;
    return true;
}

/* An http(s) URL with a host and no blanks or control characters. */
static bool
s_valid_endpoint (const char *s)
{
    const char *host = !strncmp (s, "https://", 8)  ? s + 8
                       : !strncmp (s, "http://", 7) ? s + 7
                                                    : NULL;
    if (!host || !*host || *host == '/' || *host == ':')
        return false;
    for (; *s; s++)
        if ((unsigned char)*s <= ' ' || *s == 0x7f)
            return false;
    return true;
}

/* The provider an endpoint implies, or NULL. */
static const char *
s_detect_provider (const char *endpoint)
{
    if (strstr (endpoint, ".r2.cloudflarestorage.com"))
        return "r2";
    if (strstr (endpoint, "storage.googleapis.com"))
        return "gcs";
    if (strstr (endpoint, "amazonaws.com"))
        return "s3";
    return NULL;
}

/* Session named for a mount must exist (404 otherwise). */
static int
s_check_session (lc_t *c, const char *session, err_t *err)
{
    if (!session)
        return 0;
    json_t *s = NULL;
    if (!util_valid_id (session))
        return err_set (err, 404, "not_found", "session %.63s not found", session);
    int rc = sessions_get (c->env->mgr, c->tenant, c->sid, session, &s, err);
    json_decref (s);
    return rc;
}

static int
s_mount_bucket (lc_t *c)
{
    static const char *const keys[] = { "bucket", "mountPath", "sessionId", "options", NULL };
    static const char *const okeys[]
        = { "endpoint", "provider", "credentials", "readOnly", "s3fsOptions", NULL };
    static const char *const ckeys[] = { "accessKeyId", "secretAccessKey", NULL };
    err_t err = { 0 };
    const char *bucket = NULL, *mpath = NULL, *session = NULL, *endpoint = NULL;
    const char *provider = NULL, *key_id = NULL, *secret = NULL;
    bool read_only = false;
    json_t *o = NULL, *echo = NULL, *senv = NULL, *out = NULL;
    json_t *body = s_body (c, false, &err);
    if (!body)
        goto fail;
    /* Take what names the mount first, so that every error can show it. */
    jsonv_string (body, "", "bucket", false, 255, &bucket, NULL);
    jsonv_string (body, "", "mountPath", false, 4096, &mpath, NULL);
    jsonv_string (body, "", "sessionId", false, 63, &session, NULL);
    if (jsonv_only_keys (body, "", keys, &err) < 0
        || jsonv_string (body, "", "bucket", true, 255, &bucket, &err) < 0
        || jsonv_string (body, "", "mountPath", true, 4096, &mpath, &err) < 0
        || jsonv_string (body, "", "sessionId", false, 63, &session, &err) < 0)
        goto fail;
    if (!s_valid_bucket (bucket)) {
        err_set (&err, 400, "invalid_field",
                 "field 'bucket': 1 to 255 characters of [A-Za-z0-9._-]");
        goto fail;
    }
    if (mpath[0] != '/' || !strcmp (mpath, "/")) {
        err_set (&err, 400, "invalid_field",
                 "field 'mountPath': an absolute path below / (e.g. /data)");
        goto fail;
    }
    o = json_object_get (body, "options");
    if (!o || json_is_null (o)) {
        err_set (&err, 400, "invalid_field", "field 'options.endpoint' is required");
        goto fail;
    }
    if (!json_is_object (o)) {
        err_set (&err, 400, "invalid_field", "field 'options': must be an object");
        goto fail;
    }
    json_t *creds = json_object_get (o, "credentials"), *s3fs = json_object_get (o, "s3fsOptions");
    if (jsonv_only_keys (o, "options.", okeys, &err) < 0
        || jsonv_string (o, "options.", "endpoint", true, 2048, &endpoint, &err) < 0
        || jsonv_string (o, "options.", "provider", false, 16, &provider, &err) < 0
        || jsonv_bool (o, "options.", "readOnly", &read_only, &err) < 0)
        goto fail;
    if (!s_valid_endpoint (endpoint)) {
        err_set (&err, 400, "invalid_field",
                 "field 'options.endpoint': an http:// or https:// URL of the S3-compatible API");
        goto fail;
    }
    if (provider && strcmp (provider, "r2") && strcmp (provider, "s3")
        && strcmp (provider, "gcs")) {
        err_set (&err, 400, "invalid_field", "field 'options.provider': \"r2\", \"s3\" or \"gcs\"");
        goto fail;
    }
    if (s3fs && !json_is_null (s3fs) && (!json_is_array (s3fs) || json_array_size (s3fs) > 0)) {
        err_set (&err, 400, "invalid_field",
                 "field 'options.s3fsOptions': not supported (sandboxd chooses the mount "
                 "options); leave it out or send []");
        goto fail;
    }
    if (creds && !json_is_null (creds)) {
        if (!json_is_object (creds)) {
            err_set (&err, 400, "invalid_field", "field 'options.credentials': must be an object");
            goto fail;
        }
        if (jsonv_only_keys (creds, "options.credentials.", ckeys, &err) < 0
            || jsonv_string (creds, "options.credentials.", "accessKeyId", true, 1024, &key_id,
                             &err)
                   < 0
            || jsonv_string (creds, "options.credentials.", "secretAccessKey", true, 1024, &secret,
                             &err)
                   < 0)
            goto fail;
    }

    /* The sandbox, its env (where credentials may come from) and the session. */
    char cid[64];
    if (sandbox_resolve (c->env->mgr, c->tenant, c->sid, cid, &senv, &err) < 0
        || s_check_session (c, session, &err) < 0)
        goto fail;
    s_touch (c);
    if (!key_id) {
        static const char *const pairs[][2] = { { "R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY" },
                                                { "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY" } };
        for (size_t i = 0; i < 2 && !key_id; i++) {
            const char *k = json_string_value (json_object_get (senv, pairs[i][0]));
            const char *s = json_string_value (json_object_get (senv, pairs[i][1]));
            if (k && *k && s && *s) {
                key_id = k;
                secret = s;
            }
        }
    }
    if (!key_id) {
        err_set (&err, 400, "MissingCredentialsError",
                 "Credentials not found: give options.credentials, or set R2_ACCESS_KEY_ID and "
                 "R2_SECRET_ACCESS_KEY (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) in the "
                 "sandbox env");
        goto fail;
    }
    if (!provider)
        provider = s_detect_provider (endpoint);
    json_t *nb = json_pack ("{s:s, s:s, s:s, s:{s:s, s:s}, s:b}", "bucket", bucket, "mount_path",
                            mpath, "endpoint", endpoint, "credentials", "access_key_id", key_id,
                            "secret_access_key", secret, "read_only", read_only);
    if (provider)
        json_object_set_new (nb, "provider", json_string (provider));
    int rc = s_mount (c->env, c->tenant, c->sid, nb, &out, &err);
    json_decref (nb);
    json_decref (out);
    if (rc < 0)
        goto fail;
    /* The options as given, never the secret. */
    echo = json_deep_copy (o);
    json_object_del (echo, "credentials");
    json_t *ans
        = json_pack ("{s:s?, s:s?, s:s, s:s, s:b, s:o}", "sandboxId", c->sid, "sessionId", session,
                     "bucket", bucket, "mountPath", mpath, "mounted", 1, "options", echo);
    json_decref (senv);
    json_decref (body);
    return compat_json (c->resp, 200, ans);
fail:;
    json_t *ids = json_pack ("{s:s?, s:s?, s:s?, s:s?}", "sandboxId", c->sid, "sessionId", session,
                             "bucket", bucket, "mountPath", mpath);
    if (!session)
        json_object_set_new (ids, "sessionId", json_null ());
    if (!bucket)
        json_object_set_new (ids, "bucket", json_null ());
    if (!mpath)
        json_object_set_new (ids, "mountPath", json_null ());
    json_decref (senv);
    json_decref (body);
    return s_error (c, ids, &err);
}

static int
s_unmount_bucket (lc_t *c)
{
    static const char *const keys[] = { "mountPath", "path", "sessionId", NULL };
    err_t err = { 0 };
    const char *mpath = NULL, *alias = NULL, *session = NULL;
    json_t *out = NULL;
    json_t *body = s_body (c, true, &err);
    if (!body)
        goto fail;
    /* The body's fields (POST), then the query's (DELETE); path is an
       alias of mountPath. */
    if (jsonv_only_keys (body, "", keys, &err) < 0
        || jsonv_string (body, "", "mountPath", false, 4096, &mpath, &err) < 0
        || jsonv_string (body, "", "path", false, 4096, &alias, &err) < 0
        || jsonv_string (body, "", "sessionId", false, 63, &session, &err) < 0)
        goto fail;
    if (!mpath)
        mpath = alias;
    if (!mpath)
        mpath = s_query (c, "mountPath");
    if (!mpath)
        mpath = s_query (c, "path");
    if (!session)
        session = s_query (c, "sessionId");
    if (!mpath) {
        err_set (&err, 400, "invalid_field",
                 "'mountPath' is required (body or query; 'path' is an alias)");
        goto fail;
    }
    if (mpath[0] != '/' || strlen (mpath) > 4096) {
        err_set (&err, 400, "invalid_field", "field 'mountPath': an absolute path (e.g. /data)");
        goto fail;
    }
    char cid[64];
    if (sandbox_resolve (c->env->mgr, c->tenant, c->sid, cid, NULL, &err) < 0
        || s_check_session (c, session, &err) < 0)
        goto fail;
    s_touch (c);
    int rc = s_unmount (c->env, c->tenant, c->sid, mpath, &out, &err);
    json_decref (out);
    if (rc < 0)
        goto fail;
    json_t *ans = json_pack ("{s:s?, s:s?, s:s, s:b}", "sandboxId", c->sid, "sessionId", session,
                             "mountPath", mpath, "unmounted", 1);
    if (!session)
        json_object_set_new (ans, "sessionId", json_null ());
    json_decref (body);
    return compat_json (c->resp, 200, ans);
fail:;
    json_t *ids = json_pack ("{s:s?, s:s?, s:s?}", "sandboxId", c->sid, "sessionId", session,
                             "mountPath", mpath);
    if (!session)
        json_object_set_new (ids, "sessionId", json_null ());
    if (!mpath)
        json_object_set_new (ids, "mountPath", json_null ());
    json_decref (body);
    return s_error (c, ids, &err);
}

/* --- dispatch ------------------------------------------------------------------------------- */

static const struct {
    const char *path;
    const char *allowed;
} s_routes[] = {
    { "/", "POST" }, /* the document's bare-URL create example */
    { "/lifecycle", "POST, DELETE" },
    { "/exec", "POST" },
    { "/session", "POST, GET, DELETE" },
    { "/session/exec", "POST" },
    { "/mount-bucket", "POST" },
    { "/unmount-bucket", "DELETE, POST" },
};

int
compat_lifecycle_handle (const compat_env_t *env, const compat_request_t *req,
                         compat_response_t *resp)
{
    lc_t c = { env, req, resp, NULL, NULL };
    const char *method = req->method;
    c.sid = s_header (&c, "x-sandbox-id");
    if (c.sid && !*c.sid)
        c.sid = NULL;
    int found = -1;
    for (size_t i = 0; i < sizeof s_routes / sizeof s_routes[0]; i++)
        if (!strcmp (req->path, s_routes[i].path))
            found = (int)i;
    if (found < 0)
        return s_fail (&c, s_ids (&c, false, NULL), 404, "not_found", "no such route");
    const char *allowed = s_routes[found].allowed;
    if (!compat_method_allowed (allowed, method)) {
        char msg[64];
        snprintf (msg, sizeof msg, "use %s", allowed);
        compat_add_header (resp, "Allow", allowed);
        return s_fail (&c, s_ids (&c, false, NULL), 405, "method_not_allowed", msg);
    }
    c.tenant = auth_tenant (env->auth, s_header (&c, "Authorization"));
    if (!c.tenant)
        return s_fail (&c, s_ids (&c, false, NULL), 401, "unauthorized",
                       "missing or invalid bearer token");
    if (!c.sid)
        return s_fail (&c, s_ids (&c, false, NULL), 400, "invalid_field",
                       "header 'x-sandbox-id' is required");
    if (!util_valid_id (c.sid)) {
        c.sid = NULL;
        return s_fail (&c, s_ids (&c, false, NULL), 400, "invalid_field",
                       "header 'x-sandbox-id': 1 to 63 characters of [A-Za-z0-9_.-], starting "
                       "with a letter or digit");
    }
    const char *p = req->path;
    if (!strcmp (p, "/") || !strcmp (p, "/lifecycle"))
        return !strcmp (method, "POST") ? s_lifecycle_create (&c) : s_lifecycle_destroy (&c);
    if (!strcmp (p, "/exec"))
        return s_exec (&c);
    if (!strcmp (p, "/session"))
        return s_session (&c, method);
    if (!strcmp (p, "/session/exec"))
        return s_session_exec (&c);
    if (!strcmp (p, "/mount-bucket"))
        return s_mount_bucket (&c);
    return s_unmount_bucket (&c);
}
