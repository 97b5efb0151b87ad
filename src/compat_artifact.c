/* compat_artifact.c - the artifact surface (docs/compat.md, "artifact"):
   the REST shapes of artifact-sandbox.md — /sandbox, /session, /run and
   /file, the sandbox named by the x-sandbox-id header or ?sandbox_id= —
   over the native modules. The document gives few shapes, so answers are
   the native twin's body with the sandboxId (and sessionId) added, and
   errors are the native {"error": {"code", "message"}}. */
#include "compat.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "exec.h"
#include "files.h"
#include "jsonv.h"
#include "sessions.h"

typedef struct {
    const compat_env_t *env;
    const compat_request_t *req;
    compat_response_t *resp;
    const char *tenant;
    const char *sid; /* x-sandbox-id or ?sandbox_id=, NULL when neither */
} ar_t;

/* --- answers --------------------------------------------------------------------- */

static int
s_error (ar_t *c, const err_t *err)
{
    int status = err->status >= 400 && err->status < 600 ? err->status : 500;
    if (status == 500)
        log_error ("compat artifact: %s", err->message);
    return compat_json (c->resp, (unsigned)status,
                        json_pack ("{s:{s:s, s:s}}", "error", "code",
                                   err->code[0] ? err->code : "internal", "message", err->message));
}

static int
s_fail (ar_t *c, int status, const char *code, const char *message)
{
    err_t err;
    err_set (&err, status, code, "%s", message);
    return s_error (c, &err);
}

/* {sandboxId, sessionId?} followed by the native answer's fields (stolen). */
static int
s_ok (ar_t *c, unsigned status, const char *session, bool with_session, json_t *native)
{
    json_t *ans = json_pack ("{s:s?}", "sandboxId", c->sid);
    if (with_session)
        json_object_set_new (ans, "sessionId", session ? json_string (session) : json_null ());
    if (native)
        json_object_update (ans, native);
    json_decref (native);
    return compat_json (c->resp, status, ans);
}

/* --- request helpers ------------------------------------------------------------- */

static const char *
s_header (ar_t *c, const char *name)
{
    return c->req->header (c->req->cls, name);
}

static const char *
s_query (ar_t *c, const char *name)
{
    const char *v = c->req->query (c->req->cls, name);
    return v && *v ? v : NULL;
}

static bool
s_query_true (ar_t *c, const char *name)
{
    const char *v = c->req->query (c->req->cls, name);
    return v && (!*v || !strcmp (v, "1") || !strcmp (v, "true"));
}

static json_t *
s_body (ar_t *c, bool allow_empty, err_t *err)
{
    if (c->req->too_large) {
        err_set (err, 413, "body_too_large", "request body is larger than %lld bytes",
                 (long long)c->env->cfg->max_body_bytes);
        return NULL;
    }
    return jsonv_parse_object (c->req->body, c->req->len, allow_empty, err);
}

/* The sandbox id is required for everything but POST /sandbox. */
static int
s_need_sid (ar_t *c, err_t *err)
{
    if (!c->sid)
        return err_set (err, 400, "invalid_field",
                        "the sandbox is required: header 'x-sandbox-id' or query 'sandbox_id'");
    return 0;
}

/* The session a request names: body sessionId, then ?sessionId=. Takes
   the key out of body (it may be NULL). */
static int
s_take_session (ar_t *c, json_t *body, char *out, size_t size, err_t *err)
{
    const char *v = NULL;
    out[0] = '\0';
    if (body && jsonv_string (body, "", "sessionId", false, 63, &v, err) < 0)
        return -1;
    if (!v)
        v = s_query (c, "sessionId");
    if (v && !util_valid_id (v))
        return err_set (err, 400, "invalid_field",
                        "field 'sessionId': 1 to 63 characters of [A-Za-z0-9_.-], starting "
                        "alphanumeric");
    if (v)
        snprintf (out, size, "%s", v);
    if (body)
        json_object_del (body, "sessionId");
    return 0;
}

/* --- /sandbox ---------------------------------------------------------------------- */

static int
s_sandbox (ar_t *c, const char *method)
{
    err_t err = { 0 };
    json_t *out = NULL;
    if (!strcmp (method, "GET")) {
        if (s_need_sid (c, &err) < 0
            || sandbox_get (c->env->mgr, c->tenant, c->sid, &out, &err) < 0)
            return s_error (c, &err);
        return s_ok (c, 200, NULL, false, out);
    }
    const char *action = "create";
    json_t *body = NULL;
    if (!strcmp (method, "POST")) {
        body = s_body (c, true, &err);
        if (!body || jsonv_string (body, "", "action", false, 16, &action, &err) < 0) {
            json_decref (body);
            return s_error (c, &err);
        }
        if (strcmp (action, "create") && strcmp (action, "destroy")) {
            json_decref (body);
            return s_fail (c, 400, "invalid_field", "field 'action': \"create\" or \"destroy\"");
        }
    }
    else
        action = "destroy";
    if (!strcmp (action, "destroy")) {
        json_decref (body);
        if (s_need_sid (c, &err) < 0 || sandbox_delete (c->env->mgr, c->tenant, c->sid, &err) < 0)
            return s_error (c, &err);
        return s_ok (
            c, 200, NULL, false,
            json_pack ("{s:s, s:s, s:b}", "id", c->sid, "status", "deleted", "destroyed", 1));
    }
    /* Create or get: the rest of the body is the native create body. */
    json_object_del (body, "action");
    json_object_del (body, "sessionId");
    const char *bid = NULL;
    if (jsonv_string (body, "", "id", false, 63, &bid, &err) < 0) {
        json_decref (body);
        return s_error (c, &err);
    }
    if (c->sid && bid && strcmp (bid, c->sid)) {
        json_decref (body);
        return s_fail (c, 400, "invalid_field",
                       "field 'id': differs from the sandbox named by x-sandbox-id/sandbox_id");
    }
    if (c->sid)
        json_object_set_new (body, "id", json_string (c->sid));
    int created = 0;
    int rc = sandbox_create (c->env->mgr, c->tenant, body, &out, &created, &err);
    json_decref (body);
    if (rc < 0)
        return s_error (c, &err);
    /* A generated id becomes the sandbox this answer is about. */
    json_t *ans
        = json_pack ("{s:O, s:b}", "sandboxId", json_object_get (out, "id"), "created", created);
    json_object_update (ans, out);
    json_decref (out);
    return compat_json (c->resp, 200, ans);
}

/* --- /session ------------------------------------------------------------------------ */

static int
s_session (ar_t *c, const char *method)
{
    err_t err = { 0 };
    char session[64];
    json_t *out = NULL;
    bool is_post = !strcmp (method, "POST");
    json_t *body = s_body (c, true, &err);
    if (!body || s_need_sid (c, &err) < 0
        || s_take_session (c, body, session, sizeof session, &err) < 0) {
        json_decref (body);
        return s_error (c, &err);
    }
    if (is_post) {
        /* Native body {id?, env?, cwd?}: sessionId is its id. */
        if (session[0])
            json_object_set_new (body, "id", json_string (session));
        int rc = sessions_create (c->env->mgr, c->tenant, c->sid, body, &out, &err);
        int status = 201;
        if (rc < 0 && err.status == 409 && session[0]) {
            /* Get or create, like POST /sandbox: the existing session. */
            err_clear (&err);
            rc = sessions_get (c->env->mgr, c->tenant, c->sid, session, &out, &err);
            status = 200;
        }
        json_decref (body);
        if (rc < 0)
            return s_error (c, &err);
        const char *id = json_string_value (json_object_get (out, "id"));
        snprintf (session, sizeof session, "%s", id ? id : "");
        json_t *ans = json_pack ("{s:s, s:s, s:b}", "sandboxId", c->sid, "sessionId", session,
                                 "created", status == 201);
        json_object_update (ans, out);
        json_decref (out);
        return compat_json (c->resp, (unsigned)status, ans);
    }
    static const char *const none[] = { NULL };
    if (jsonv_only_keys (body, "", none, &err) < 0) {
        json_decref (body);
        return s_error (c, &err);
    }
    json_decref (body);
    if (!strcmp (method, "GET")) {
        int rc = session[0] ? sessions_get (c->env->mgr, c->tenant, c->sid, session, &out, &err)
                            : sessions_list (c->env->mgr, c->tenant, c->sid, &out, &err);
        if (rc < 0)
            return s_error (c, &err);
        return s_ok (c, 200, session[0] ? session : NULL, true, out);
    }
    if (!session[0])
        return s_fail (c, 400, "invalid_field", "'sessionId' is required (body or query)");
    if (sessions_delete (c->env->mgr, c->tenant, c->sid, session, &err) < 0)
        return s_error (c, &err);
    return s_ok (c, 200, session, true,
                 json_pack ("{s:s, s:s, s:b}", "id", session, "status", "deleted", "deleted", 1));
}

/* --- /run ------------------------------------------------------------------------------- */

static int
s_run (ar_t *c)
{
    err_t err = { 0 };
    char session[64];
    json_t *body = s_body (c, false, &err);
    if (!body || s_need_sid (c, &err) < 0
        || s_take_session (c, body, session, sizeof session, &err) < 0) {
        json_decref (body);
        return s_error (c, &err);
    }
    /* The rest is the native exec body; "default" is the sandbox's default
       session (made on first use), as it is natively. */
    if (json_object_get (body, "session")) {
        json_decref (body);
        return s_fail (c, 400, "invalid_field", "unknown field 'session' (use 'sessionId')");
    }
    if (session[0] && strcmp (session, "default"))
        json_object_set_new (body, "session", json_string (session));
    exec_t *exec = exec_start (c->env->mgr, c->tenant, c->sid, body, &err);
    json_decref (body);
    json_t *out = exec ? exec_collect (exec, &err) : NULL;
    exec_destroy (&exec);
    if (!out)
        return s_error (c, &err);
    /* output: stdout without its trailing newlines ({"output": "4"} for
       print(2+2)). */
    const char *so = json_string_value (json_object_get (out, "stdout"));
    size_t n = so ? json_string_length (json_object_get (out, "stdout")) : 0;
    while (n > 0 && (so[n - 1] == '\n' || so[n - 1] == '\r'))
        n--;
    json_t *ans = json_pack ("{s:s, s:s, s:s%}", "sandboxId", c->sid, "sessionId",
                             session[0] ? session : "default", "output", so ? so : "", n);
    json_object_update (ans, out);
    json_decref (out);
    return compat_json (c->resp, 200, ans);
}

/* --- /file ------------------------------------------------------------------------------- */

static files_root_t *
s_root (ar_t *c, err_t *err)
{
    char cid[64], dir[1200], rootfs[1300];
    if (sandbox_resolve (c->env->mgr, c->tenant, c->sid, cid, NULL, err) < 0)
        return NULL;
    sandbox_mgr_dir (c->env->mgr, cid, dir, sizeof dir);
    snprintf (rootfs, sizeof rootfs, "%s/bundle/rootfs", dir);
    return files_root_open (rootfs, err);
}

/* The whole file into a new buffer (at most max bytes, else 413). */
static char *
s_read_all (files_root_t *root, const char *path, int64_t max, size_t *len, err_t *err)
{
    char *buf = NULL;
    if (files_read_all (root, path, max, &buf, len, err) < 0) {
        if (err->status == 413)
            err_set (err, 413, "file_too_large",
                     "the file is larger than %lld bytes: read it with the native GET "
                     "/v1/sandboxes/{id}/files/{path}",
                     (long long)max);
        return NULL;
    }
    return buf;
}

static int
s_file_get (ar_t *c, files_root_t *root, const char *path)
{
    err_t err = { 0 };
    const char *mode = s_query (c, "mode"), *encoding = s_query (c, "encoding");
    bool download = mode && !strcmp (mode, "download");
    if (mode && !download)
        return s_fail (c, 400, "invalid_field", "query 'mode': \"download\" or absent");
    bool b64 = encoding && !strcmp (encoding, "base64");
    if (encoding && !b64 && strcmp (encoding, "utf-8") && strcmp (encoding, "utf8"))
        return s_fail (c, 400, "invalid_field", "query 'encoding': base64 or utf-8");
    if (download) {
        /* Streamed from the file: no size limit, nothing held in memory. */
        int fd = -1;
        files_stat_t st;
        if (files_open_read (root, path, &fd, &st, &err) < 0)
            return s_error (c, &err);
        const char *slash = strrchr (path, '/');
        const char *name = slash ? slash + 1 : path;
        char disp[256], safe[200];
        size_t j = 0;
        for (const char *p = name; *p && j + 1 < sizeof safe; p++)
            safe[j++] = (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20) ? '_' : *p;
        safe[j] = '\0';
        snprintf (disp, sizeof disp, "attachment; filename=\"%s\"", safe[0] ? safe : "download");
        compat_file (c->resp, 200, "application/octet-stream", fd, st.size);
        compat_add_header (c->resp, "Content-Disposition", disp);
        return 0;
    }
    size_t len = 0;
    char *buf = s_read_all (root, path, c->env->cfg->max_body_bytes * 16, &len, &err);
    if (!buf)
        return s_error (c, &err);
    bool not_utf8 = false;
    json_t *content = jsonv_file_content (buf, len, b64, &not_utf8);
    free (buf);
    if (!content && not_utf8)
        return s_fail (c, 422, "not_utf8",
                       "the file is not UTF-8 text: ask for encoding=base64 or mode=download");
    if (!content)
        return s_fail (c, 500, "internal", "out of memory");
    return s_ok (c, 200, NULL, false,
                 json_pack ("{s:s, s:o, s:s, s:I}", "path", path, "content", content, "encoding",
                            b64 ? "base64" : "utf-8", "size", (json_int_t)len));
}

/* PUT: the raw body is the file, or with Content-Type: application/json
   {content, encoding?, path?, sessionId?}. */
static int
s_file_put (ar_t *c, files_root_t *root, const char *qpath)
{
    err_t err = { 0 };
    const char *ctype = s_header (c, "Content-Type");
    const void *data = c->req->body ? c->req->body : "";
    size_t len = c->req->len;
    const char *path = qpath;
    unsigned char *bin = NULL;
    json_t *body = NULL;
    if (c->req->too_large) {
        err_set (&err, 413, "body_too_large",
                 "request body is larger than %lld bytes: upload large files with the native PUT "
                 "/v1/sandboxes/{id}/files/{path}",
                 (long long)c->env->cfg->max_body_bytes);
        return s_error (c, &err);
    }
    if (ctype && !strncasecmp (ctype, "application/json", 16)) {
        static const char *const keys[] = { "content", "encoding", "path", "sessionId", NULL };
        const char *content = NULL, *encoding = "utf-8", *bpath = NULL;
        char session[64];
        body = s_body (c, false, &err);
        if (!body || s_take_session (c, body, session, sizeof session, &err) < 0
            || jsonv_only_keys (body, "", keys, &err) < 0
            || jsonv_string (body, "", "content", true, (size_t)c->env->cfg->max_body_bytes,
                             &content, &err)
                   < 0
            || jsonv_string (body, "", "encoding", false, 16, &encoding, &err) < 0
            || jsonv_string (body, "", "path", false, FILES_MAX_PATH, &bpath, &err) < 0)
            goto fail;
        if (!path)
            path = bpath;
        bool b64 = !strcmp (encoding, "base64");
        if (!b64 && strcmp (encoding, "utf-8") && strcmp (encoding, "utf8")) {
            err_set (&err, 400, "invalid_field", "field 'encoding': base64 or utf-8");
            goto fail;
        }
        size_t clen = strlen (content);
        data = content;
        len = clen;
        if (b64) {
            bin = malloc (clen + 1);
            if (!bin
                || sodium_base642bin (bin, clen + 1, content, clen, " \t\r\n", &len, NULL,
                                      sodium_base64_VARIANT_ORIGINAL)
                       != 0) {
                err_set (&err, 400, "invalid_field", "field 'content': invalid base64");
                goto fail;
            }
            data = bin;
        }
    }
    if (!path) {
        err_set (&err, 400, "invalid_field", "query 'path' is required");
        goto fail;
    }
    files_writer_t *w = files_write_begin (root, path, s_query_true (c, "mkdir"), -1, &err);
    int rc = w ? files_write_chunk (w, data, len, &err) : -1;
    if (rc == 0)
        rc = files_write_commit (&w, &err);
    files_write_abort (&w);
    if (rc < 0)
        goto fail;
    json_t *native = json_pack ("{s:s, s:I}", "path", path, "size", (json_int_t)len);
    free (bin);
    json_decref (body);
    return s_ok (c, 200, NULL, false, native);
fail:
    free (bin);
    json_decref (body);
    return s_error (c, &err);
}

static int
s_file (ar_t *c, const char *method)
{
    err_t err = { 0 };
    if (s_need_sid (c, &err) < 0)
        return s_error (c, &err);
    const char *path = s_query (c, "path");
    if (!path && strcmp (method, "PUT"))
        return s_fail (c, 400, "invalid_field", "query 'path' is required");
    files_root_t *root = s_root (c, &err);
    if (!root)
        return s_error (c, &err);
    int rc;
    if (!strcmp (method, "GET"))
        rc = s_file_get (c, root, path);
    else if (!strcmp (method, "PUT"))
        rc = s_file_put (c, root, path);
    else if (files_delete (root, path, s_query_true (c, "recursive"), &err) < 0)
        rc = s_error (c, &err);
    else
        rc = s_ok (c, 200, NULL, false, json_pack ("{s:s, s:b}", "path", path, "deleted", 1));
    files_root_close (&root);
    return rc;
}

/* --- dispatch ---------------------------------------------------------------------------- */

static const struct {
    const char *path;
    const char *allowed;
} s_routes[] = {
    { "/sandbox", "POST, GET, DELETE" },
    { "/session", "POST, GET, DELETE" },
    { "/run", "POST" },
    { "/file", "PUT, GET, DELETE" },
};

int
compat_artifact_handle (const compat_env_t *env, const compat_request_t *req,
                        compat_response_t *resp)
{
    ar_t c = { env, req, resp, NULL, NULL };
    const char *method = req->method;
    int found = -1;
    for (size_t i = 0; i < sizeof s_routes / sizeof s_routes[0]; i++)
        if (!strcmp (req->path, s_routes[i].path))
            found = (int)i;
    if (found < 0)
        return s_fail (&c, 404, "not_found", "no such route");
    if (!compat_method_allowed (s_routes[found].allowed, method)) {
        char msg[64];
        snprintf (msg, sizeof msg, "use %s", s_routes[found].allowed);
        compat_add_header (resp, "Allow", s_routes[found].allowed);
        return s_fail (&c, 405, "method_not_allowed", msg);
    }
    c.tenant = auth_tenant (env->auth, s_header (&c, "Authorization"));
    if (!c.tenant)
        return s_fail (&c, 401, "unauthorized", "missing or invalid bearer token");
    /* The header first, then the query. */
    c.sid = s_header (&c, "x-sandbox-id");
    if (!c.sid || !*c.sid)
        c.sid = s_query (&c, "sandbox_id");
    if (c.sid && !util_valid_id (c.sid))
        return s_fail (&c, 400, "invalid_field",
                       "sandbox id (x-sandbox-id or sandbox_id): 1 to 63 characters of "
                       "[A-Za-z0-9_.-], starting with a letter or digit");
    const char *p = req->path;
    if (!strcmp (p, "/sandbox"))
        return s_sandbox (&c, method);
    if (!strcmp (p, "/session"))
        return s_session (&c, method);
    if (!strcmp (p, "/run"))
        return s_run (&c);
    return s_file (&c, method);
}
