/* compat_acontext.c - the acontext surface: the REST shape of the sandbox
   worker acontext's Python core talks to (docs/compat.md, "acontext"),
   over the native sandbox, exec and files modules. Errors keep the native
   shape {"error": {"code", "message"}}: the reference says nothing of its
   error bodies. */
#include "compat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compat_util.h"
#include "exec.h"
#include "files.h"
#include "jsonv.h"

#define MAX_SEGMENTS 3

static int
s_error (compat_response_t *resp, const err_t *err)
{
    int status = err->status >= 400 && err->status < 600 ? err->status : 500;
    if (status == 500)
        log_error ("acontext: internal error: %s", err->message);
    return compat_json (resp, (unsigned)status,
                        json_pack ("{s:{s:s, s:o}}", "error", "code",
                                   err->code[0] ? err->code : "internal", "message",
                                   jsonv_string_from_bytes (err->message, strlen (err->message))));
}

static int
s_fail (compat_response_t *resp, int status, const char *code, const char *message)
{
    err_t err;
    err_set (&err, status, code, "%s", message);
    return s_error (resp, &err);
}

/* Split "/sandbox/ID/op" into at most MAX_SEGMENTS segments (each shorter
   than 128 bytes). The count, or -1 when the path has more, an empty one
   or a too long one. */
static int
s_split (const char *path, char seg[][128])
{
    int n = 0;
    const char *p = path;
    while (*p == '/' && p[1]) {
        p++;
        const char *end = strchr (p, '/');
        size_t len = end ? (size_t)(end - p) : strlen (p);
        if (len == 0 || len >= 128 || n == MAX_SEGMENTS)
            return -1;
        memcpy (seg[n], p, len);
        seg[n][len] = '\0';
        n++;
        p += len;
    }
    return *p == '\0' || !strcmp (p, "/") ? n : -1;
}

/* The native sandbox object reshaped: {sandbox_id, sandbox_status,
   sandbox_created_at, sandbox_expires_at}. Steals sb. */
static json_t *
s_info (json_t *sb)
{
    const char *status = json_string_value (json_object_get (sb, "status"));
    /* acontext knows running, paused, killed and error; a sandbox being
       deleted is as good as killed, one being created is about to run. */
    const char *mapped = status && !strcmp (status, "deleting") ? "killed" : "running";
    json_t *out = json_pack ("{s:O, s:s, s:O, s:O}", "sandbox_id", json_object_get (sb, "id"),
                             "sandbox_status", mapped, "sandbox_created_at",
                             json_object_get (sb, "created_at"), "sandbox_expires_at",
                             json_object_get (sb, "expires_at"));
    json_decref (sb);
    return out;
}

/* keepalive_seconds on a call (the reference's idle timeout): make sure
   the sandbox lives at least that long from now, extending its expiry
   when it is sooner. *sb, when not NULL, gets the sandbox object after
   (caller owns). */
static int
s_touch (const compat_env_t *env, const char *tenant, const char *id, int64_t keepalive,
         json_t **sb, err_t *err)
{
    json_t *cur = NULL;
    if (sandbox_get (env->mgr, tenant, id, &cur, err) < 0)
        return -1;
    int64_t expires = 0;
    if (keepalive > 0
        && compat_parse_iso8601 (json_string_value (json_object_get (cur, "expires_at")), &expires)
               == 0) {
        int64_t want = util_now_ms () + keepalive * 1000;
        if (want > expires) {
            json_t *body = json_pack ("{s:I}", "keepalive_longer_by_seconds",
                                      (json_int_t)((want - expires + 999) / 1000));
            json_t *next = NULL;
            int rc = sandbox_extend (env->mgr, tenant, id, body, &next, err);
            json_decref (body);
            if (rc < 0) {
                json_decref (cur);
                return -1;
            }
            json_decref (cur);
            cur = next;
        }
    }
    if (sb)
        *sb = cur;
    else
        json_decref (cur);
    return 0;
}

/* The optional keepalive_seconds of a body: 0 when absent. */
static int
s_keepalive (const compat_env_t *env, json_t *body, int64_t *keepalive, err_t *err)
{
    *keepalive = 0;
    return jsonv_int (body, "", "keepalive_seconds", false, 1, env->cfg->max_keepalive_seconds,
                      keepalive, err);
}

/* POST /sandbox/create {sandbox_id, keepalive_seconds?, additional_configs?} */
static int
s_create (const compat_env_t *env, const char *tenant, json_t *body, compat_response_t *resp)
{
    static const char *const keys[]
        = { "sandbox_id", "keepalive_seconds", "additional_configs", NULL };
    err_t err = { 0 };
    const char *id = NULL;
    int64_t keepalive = 0;
    if (jsonv_only_keys (body, "", keys, &err) < 0
        || jsonv_string (body, "", "sandbox_id", true, 63, &id, &err) < 0
        || s_keepalive (env, body, &keepalive, &err) < 0)
        return s_error (resp, &err);
    if (!util_valid_id (id))
        return s_fail (resp, 400, "invalid_field",
                       "field 'sandbox_id': 1 to 63 characters of [A-Za-z0-9_.-], starting with a "
                       "letter or digit");
    json_t *extra = json_object_get (body, "additional_configs");
    if (extra && !json_is_null (extra) && !json_is_object (extra))
        return s_fail (resp, 400, "invalid_field", "field 'additional_configs': must be an object");

    json_t *native = json_pack ("{s:s}", "id", id);
    if (keepalive > 0)
        json_object_set_new (native, "keepalive_seconds", json_integer (keepalive));
    json_t *sb = NULL;
    int created = 0;
    int rc = sandbox_create (env->mgr, tenant, native, &sb, &created, &err);
    json_decref (native);
    if (rc < 0)
        return s_error (resp, &err);
    if (!created && keepalive > 0) {
        /* An existing sandbox: the create is a get, and keepalive_seconds
           keeps it alive as on any other call. */
        json_decref (sb);
        sb = NULL;
        if (s_touch (env, tenant, id, keepalive, &sb, &err) < 0)
            return s_error (resp, &err);
    }
    return compat_json (resp, 200, s_info (sb));
}

/* POST /sandbox/ID/update {keepalive_longer_by_seconds} */
static int
s_update (const compat_env_t *env, const char *tenant, const char *id, json_t *body,
          compat_response_t *resp)
{
    err_t err = { 0 };
    json_t *sb = NULL;
    if (sandbox_extend (env->mgr, tenant, id, body, &sb, &err) < 0)
        return s_error (resp, &err);
    return compat_json (resp, 200, s_info (sb));
}

/* POST /sandbox/ID/exec {command, keepalive_seconds?} */
static int
s_exec (const compat_env_t *env, const char *tenant, const char *id, json_t *body,
        compat_response_t *resp)
{
    static const char *const keys[] = { "command", "keepalive_seconds", NULL };
    err_t err = { 0 };
    const char *command = NULL;
    int64_t keepalive = 0;
    if (jsonv_only_keys (body, "", keys, &err) < 0
        || jsonv_string (body, "", "command", true, (size_t)env->cfg->max_body_bytes, &command,
                         &err)
               < 0
        || s_keepalive (env, body, &keepalive, &err) < 0
        || (keepalive > 0 && s_touch (env, tenant, id, keepalive, NULL, &err) < 0))
        return s_error (resp, &err);
    json_t *native = json_pack ("{s:s}", "command", command);
    exec_t *ex = exec_start (env->mgr, tenant, id, native, &err);
    json_decref (native);
    json_t *out = ex ? exec_collect (ex, &err) : NULL;
    exec_destroy (&ex);
    if (!out)
        return s_error (resp, &err);
    json_t *reply = json_pack ("{s:O, s:O, s:O}", "stdout", json_object_get (out, "stdout"),
                               "stderr", json_object_get (out, "stderr"), "exit_code",
                               json_object_get (out, "exit_code"));
    json_decref (out);
    return compat_json (resp, 200, reply);
}

/* "utf-8" (or "utf8") → 0, "base64" → 1, anything else → -1. */
static int
s_encoding (const char *encoding)
{
    if (!strcmp (encoding, "base64"))
        return 1;
    return !strcmp (encoding, "utf-8") || !strcmp (encoding, "utf8") ? 0 : -1;
}

/* POST /sandbox/ID/download {file_path, encoding?, keepalive_seconds?} */
static int
s_download (const compat_env_t *env, const char *tenant, const char *id, json_t *body,
            compat_response_t *resp)
{
    static const char *const keys[] = { "file_path", "encoding", "keepalive_seconds", NULL };
    err_t err = { 0 };
    const char *path = NULL, *encoding = "base64";
    int64_t keepalive = 0;
    if (jsonv_only_keys (body, "", keys, &err) < 0
        || jsonv_string (body, "", "file_path", true, FILES_MAX_PATH, &path, &err) < 0
        || jsonv_string (body, "", "encoding", false, 16, &encoding, &err) < 0
        || s_keepalive (env, body, &keepalive, &err) < 0)
        return s_error (resp, &err);
    int b64 = s_encoding (encoding);
    if (b64 < 0)
        return s_fail (resp, 400, "invalid_field", "field 'encoding': \"utf-8\" or \"base64\"");
    if (keepalive > 0 && s_touch (env, tenant, id, keepalive, NULL, &err) < 0)
        return s_error (resp, &err);
    files_root_t *root = compat_files_root (env, tenant, id, &err);
    char *data = NULL;
    size_t len = 0;
    /* The same bound as the native JSON read (GET …/files/PATH?encoding=). */
    int rc
        = root ? files_read_all (root, path, env->cfg->max_body_bytes * 16, &data, &len, &err) : -1;
    files_root_close (&root);
    if (rc < 0)
        return s_error (resp, &err);
    bool not_utf8 = false;
    json_t *content = jsonv_file_content (data, len, b64, &not_utf8);
    free (data);
    if (!content && not_utf8)
        return s_fail (resp, 422, "not_utf8",
                       "the file is not UTF-8 text: ask for \"encoding\": \"base64\"");
    if (!content)
        return s_fail (resp, 500, "internal", "out of memory");
    return compat_json (
        resp, 200,
        json_pack ("{s:o, s:s}", "content", content, "encoding", b64 ? "base64" : "utf-8"));
}

/* POST /sandbox/ID/upload {file_path, content, encoding?, keepalive_seconds?} */
static int
s_upload (const compat_env_t *env, const char *tenant, const char *id, json_t *body,
          compat_response_t *resp)
{
    static const char *const keys[]
        = { "file_path", "content", "encoding", "keepalive_seconds", NULL };
    err_t err = { 0 };
    const char *path = NULL, *content = NULL, *encoding = "utf-8";
    int64_t keepalive = 0;
    if (jsonv_only_keys (body, "", keys, &err) < 0
        || jsonv_string (body, "", "file_path", true, FILES_MAX_PATH, &path, &err) < 0
        || jsonv_string (body, "", "content", true, (size_t)env->cfg->max_body_bytes, &content,
                         &err)
               < 0
        || jsonv_string (body, "", "encoding", false, 16, &encoding, &err) < 0
        || s_keepalive (env, body, &keepalive, &err) < 0)
        return s_error (resp, &err);
    int b64 = s_encoding (encoding);
    if (b64 < 0)
        return s_fail (resp, 400, "invalid_field", "field 'encoding': \"utf-8\" or \"base64\"");
    size_t clen = json_string_length (json_object_get (body, "content"));
    unsigned char *bin = NULL;
    size_t len = clen;
    if (b64 && compat_base64_decode (content, clen, "content", &bin, &len, &err) < 0)
        return s_error (resp, &err);
    if (keepalive > 0 && s_touch (env, tenant, id, keepalive, NULL, &err) < 0) {
        free (bin);
        return s_error (resp, &err);
    }
    files_root_t *root = compat_files_root (env, tenant, id, &err);
    /* Missing parent directories are made, as the reference worker does. */
    int rc
        = root ? compat_files_write (root, path, b64 ? (const void *)bin : content, len, true, &err)
               : -1;
    files_root_close (&root);
    free (bin);
    if (rc < 0)
        return s_error (resp, &err);
    return compat_json (resp, 200, json_pack ("{s:b}", "success", 1));
}

/* GET /sandbox/ID[?keepalive_seconds=N] */
static int
s_get (const compat_env_t *env, const compat_request_t *req, const char *tenant, const char *id,
       compat_response_t *resp)
{
    err_t err = { 0 };
    int64_t keepalive = 0;
    const char *q = req->query (req->cls, "keepalive_seconds");
    if (q && *q) {
        char *end;
        long long v = strtoll (q, &end, 10);
        if (*end || v < 1 || v > env->cfg->max_keepalive_seconds) {
            char msg[128];
            snprintf (msg, sizeof msg, "query 'keepalive_seconds': an integer from 1 to %lld",
                      (long long)env->cfg->max_keepalive_seconds);
            return s_fail (resp, 400, "invalid_field", msg);
        }
        keepalive = v;
    }
    json_t *sb = NULL;
    if (s_touch (env, tenant, id, keepalive, &sb, &err) < 0)
        return s_error (resp, &err);
    return compat_json (resp, 200, s_info (sb));
}

int
compat_acontext_handle (const compat_env_t *env, const compat_request_t *req,
                        compat_response_t *resp)
{
    const char *tenant = auth_tenant (env->auth, req->header (req->cls, "Authorization"));
    if (!tenant)
        return s_fail (resp, 401, "unauthorized", "missing or invalid bearer token");

    char seg[MAX_SEGMENTS][128];
    int n = s_split (req->path, seg);
    if (n < 2 || strcmp (seg[0], "sandbox"))
        return s_fail (resp, 404, "not_found", "no such route");
    const char *op = n == 3 ? seg[2] : NULL;
    bool is_get = !strcmp (req->method, "GET"), is_post = !strcmp (req->method, "POST");
    bool create = n == 2 && !strcmp (seg[1], "create") && is_post;
    if (n == 2 && !create && !is_get)
        return s_fail (resp, 405, "method_not_allowed", "use GET (POST for /sandbox/create)");
    if (op && strcmp (op, "kill") && strcmp (op, "update") && strcmp (op, "exec")
        && strcmp (op, "download") && strcmp (op, "upload"))
        return s_fail (resp, 404, "not_found", "no such route");
    if (op && !is_post)
        return s_fail (resp, 405, "method_not_allowed", "use POST");
    if (req->too_large) {
        char msg[96];
        snprintf (msg, sizeof msg, "request body is larger than %lld bytes",
                  (long long)env->cfg->max_body_bytes);
        return s_fail (resp, 413, "body_too_large", msg);
    }
    const char *id = create ? NULL : seg[1];
    if (id && !util_valid_id (id))
        return s_fail (resp, 404, "not_found", "no such sandbox");
    if (is_get)
        return s_get (env, req, tenant, id, resp);

    err_t err = { 0 };
    if (op && !strcmp (op, "kill")) {
        /* The reference sends no body here: whatever comes is ignored. */
        if (sandbox_delete (env->mgr, tenant, id, &err) < 0)
            return s_error (resp, &err);
        return compat_json (resp, 200, json_pack ("{s:b}", "success", 1));
    }
    json_t *body = jsonv_parse_object (req->body, req->len, false, &err);
    if (!body)
        return s_error (resp, &err);
    int rc;
    if (create)
        rc = s_create (env, tenant, body, resp);
    else if (!strcmp (op, "update"))
        rc = s_update (env, tenant, id, body, resp);
    else if (!strcmp (op, "exec"))
        rc = s_exec (env, tenant, id, body, resp);
    else if (!strcmp (op, "download"))
        rc = s_download (env, tenant, id, body, resp);
    else
        rc = s_upload (env, tenant, id, body, resp);
    json_decref (body);
    return rc;
}
