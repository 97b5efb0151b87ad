/* compat_kapin.c - the kapin surface: the REST shape of KAPIN's sandbox
   worker (docs/compat.md, "kapin"): /sandboxes/:projectId and below, every
   answer in the {success, data} / {success: false, error} envelope, CORS
   open to any origin. Over the native sandbox, exec, processes, git and
   files modules. */
#include "compat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compat_util.h"
#include "exec.h"
#include "files.h"
#include "git.h"
#include "jsonv.h"
#include "sessions.h"

#define CORS_METHODS "GET, POST, PUT, DELETE, OPTIONS"
#define CORS_HEADERS "Content-Type, Authorization"

static void
s_cors (compat_response_t *resp)
{
    compat_add_header (resp, "Access-Control-Allow-Origin", "*");
    compat_add_header (resp, "Access-Control-Allow-Methods", CORS_METHODS);
    compat_add_header (resp, "Access-Control-Allow-Headers", CORS_HEADERS);
}

/* A JSON string of a path from the URL, whatever its bytes. */
static json_t *
s_str (const char *s)
{
    return jsonv_string_from_bytes (s, strlen (s));
}

static int
s_ok (compat_response_t *resp, json_t *data)
{
    return compat_json (resp, 200, json_pack ("{s:b, s:o}", "success", 1, "data", data));
}

/* The error envelope. The reference names 400, 404 and 500 only: other
   client errors become 400 and other server errors 500 (401 stays: the
   reference has no tokens at all). */
static int
s_fail (compat_response_t *resp, int status, const char *message)
{
    if (status != 400 && status != 401 && status != 404 && status != 500)
        status = status >= 400 && status < 500 ? 400 : 500;
    if (status == 500)
        log_error ("kapin: internal error: %s", message);
    return compat_json (resp, (unsigned)status,
                        json_pack ("{s:b, s:o}", "success", 0, "error",
                                   jsonv_string_from_bytes (message, strlen (message))));
}

/* A native error, with the native field names in its message replaced by
   the ones a kapin client sent (pairs: native, kapin; NULL-terminated). */
static int
s_error (compat_response_t *resp, const err_t *err, const char *const *renames)
{
    char msg[sizeof err->message + 64];
    snprintf (msg, sizeof msg, "%s", err->message);
    for (; renames && renames[0]; renames += 2) {
        char *at = strstr (msg, renames[0]);
        size_t from = strlen (renames[0]), to = strlen (renames[1]);
        if (!at || strlen (msg) - from + to >= sizeof msg)
            continue;
        memmove (at + to, at + from, strlen (at + from) + 1);
        memcpy (at, renames[1], to);
    }
    return s_fail (resp, err->status ? err->status : 500, msg);
}

/* The parts of a kapin path: "/sandboxes/ID", "/sandboxes/ID/OP" and
   "/sandboxes/ID/files/REST" (rest with its leading slash). 0 when path
   has another shape. */
static int
s_parse (const char *path, char *id, size_t idsize, char *op, size_t opsize, const char **rest)
{
    static const char prefix[] = "/sandboxes/";
    if (strncmp (path, prefix, sizeof prefix - 1) != 0)
        return 0;
    const char *p = path + sizeof prefix - 1;
    const char *slash = strchr (p, '/');
    size_t n = slash ? (size_t)(slash - p) : strlen (p);
    if (n == 0 || n >= idsize)
        return 0;
    memcpy (id, p, n);
    id[n] = '\0';
    op[0] = '\0';
    *rest = NULL;
    if (!slash || !slash[1])
        return 1;
    p = slash + 1;
    if (!strncmp (p, "files/", 6)) {
        snprintf (op, opsize, "files");
        *rest = p + 5;
        return 1;
    }
    slash = strchr (p, '/');
    n = slash ? (size_t)(slash - p) : strlen (p);
    if (n == 0 || n >= opsize || (slash && slash[1]))
        return 0;
    memcpy (op, p, n);
    op[n] = '\0';
    return 1;
}

/* POST /sandboxes/ID: get or create. */
static int
s_sandbox (const compat_env_t *env, const char *tenant, const char *id, compat_response_t *resp)
{
    err_t err = { 0 };
    json_t *native = json_pack ("{s:s}", "id", id), *sb = NULL;
    int created = 0;
    int rc = sandbox_create (env->mgr, tenant, native, &sb, &created, &err);
    json_decref (native);
    json_decref (sb);
    if (rc < 0)
        return s_error (resp, &err, NULL);
    return s_ok (resp, json_pack ("{s:s, s:s, s:s}", "projectId", id, "status", "ready", "message",
                                  "Sandbox ready"));
}

/* DELETE /sandboxes/ID: kill every process, keep the sandbox. That is
   the native background processes, and the default session with what
   its commands left running in the background (`server &`: the same
   process group); the next exec opens a fresh default session. */
static int
s_cleanup (const compat_env_t *env, const char *tenant, const char *id, compat_response_t *resp)
{
    err_t err = { 0 };
    json_t *out = NULL;
    if (processes_kill_all (env->mgr, tenant, id, "KILL", &out, &err) < 0)
        return s_error (resp, &err, NULL);
    json_decref (out);
    if (sessions_delete (env->mgr, tenant, id, "default", &err) < 0 && err.status != 404)
        return s_error (resp, &err, NULL);
    return s_ok (resp, json_pack ("{s:s, s:s, s:s}", "projectId", id, "status", "cleaned",
                                  "message", "All processes terminated"));
}

/* Run a native exec body to the end; the result (caller owns) or NULL. */
static json_t *
s_run (const compat_env_t *env, const char *tenant, const char *id, json_t *native, err_t *err)
{
    exec_t *ex = exec_start (env->mgr, tenant, id, native, err);
    json_t *out = ex ? exec_collect (ex, err) : NULL;
    exec_destroy (&ex);
    return out;
}

/* POST /sandboxes/ID/exec {command, stream?} */
static int
s_exec (const compat_env_t *env, const char *tenant, const char *id, json_t *body,
        compat_response_t *resp)
{
    static const char *const keys[] = { "command", "stream", NULL };
    err_t err = { 0 };
    const char *command = NULL;
    bool stream = false;
    if (jsonv_only_keys (body, "", keys, &err) < 0
        || jsonv_string (body, "", "command", true, (size_t)env->cfg->max_body_bytes, &command,
                         &err)
               < 0
        || jsonv_bool (body, "", "stream", &stream, &err) < 0)
        return s_error (resp, &err, NULL);
    if (stream)
        return s_fail (resp, 400,
                       "field 'stream': streaming is not offered here; use the native "
                       "POST /v1/sandboxes/{id}/exec with Accept: text/event-stream");
    json_t *native = json_pack ("{s:s}", "command", command);
    json_t *out = s_run (env, tenant, id, native, &err);
    json_decref (native);
    if (!out)
        return s_error (resp, &err, NULL);
    json_t *data = json_pack ("{s:O, s:O, s:O}", "stdout", json_object_get (out, "stdout"),
                              "stderr", json_object_get (out, "stderr"), "exitCode",
                              json_object_get (out, "exit_code"));
    json_decref (out);
    return s_ok (resp, data);
}

/* POST /sandboxes/ID/clone {repoUrl, directory?} */
static int
s_clone (const compat_env_t *env, const char *tenant, const char *id, json_t *body,
         compat_response_t *resp)
{
    static const char *const keys[] = { "repoUrl", "directory", NULL };
    static const char *const renames[]
        = { "'repo_url'", "'repoUrl'", "'target_dir'", "'directory'", NULL };
    err_t err = { 0 };
    const char *url = NULL, *dir = NULL;
    if (jsonv_only_keys (body, "", keys, &err) < 0
        || jsonv_string (body, "", "repoUrl", true, 4096, &url, &err) < 0
        || jsonv_string (body, "", "directory", false, 4000, &dir, &err) < 0)
        return s_error (resp, &err, NULL);
    json_t *native = json_pack ("{s:s}", "repo_url", url), *out = NULL;
    if (dir)
        json_object_set_new (native, "target_dir", json_string (dir));
    int rc = git_checkout (env->mgr, tenant, id, native, &out, &err);
    json_decref (native);
    if (rc < 0)
        return s_error (resp, &err, renames);
    json_t *data = json_pack ("{s:s, s:O, s:s}", "repoUrl", url, "directory",
                              json_object_get (out, "target_dir"), "message",
                              "Repository cloned successfully");
    json_decref (out);
    return s_ok (resp, data);
}

/* GET /sandboxes/ID/files/PATH */
static int
s_file_get (const compat_env_t *env, const char *tenant, const char *id, const char *path,
            compat_response_t *resp)
{
    err_t err = { 0 };
    files_root_t *root = compat_files_root (env, tenant, id, &err);
    char *data = NULL;
    size_t len = 0;
    /* The same bound as the native JSON read (GET …/files/PATH?encoding=). */
    int rc
        = root ? files_read_all (root, path, env->cfg->max_body_bytes * 16, &data, &len, &err) : -1;
    files_root_close (&root);
    if (rc < 0)
        return s_error (resp, &err, NULL);
    json_t *content = memchr (data, 0, len) ? NULL : json_stringn (data, len);
    free (data);
    if (!content)
        return s_fail (resp, 400,
                       "the file is not UTF-8 text: read it through the native "
                       "GET /v1/sandboxes/{id}/files/{path} instead");
    return s_ok (resp, json_pack ("{s:o, s:o}", "path", s_str (path), "content", content));
}

/* PUT /sandboxes/ID/files/PATH {content} */
static int
s_file_put (const compat_env_t *env, const char *tenant, const char *id, const char *path,
            json_t *body, compat_response_t *resp)
{
    static const char *const keys[] = { "content", NULL };
    err_t err = { 0 };
    const char *content = NULL;
    if (jsonv_only_keys (body, "", keys, &err) < 0
        || jsonv_string (body, "", "content", true, (size_t)env->cfg->max_body_bytes, &content,
                         &err)
               < 0)
        return s_error (resp, &err, NULL);
    size_t len = json_string_length (json_object_get (body, "content"));
    files_root_t *root = compat_files_root (env, tenant, id, &err);
    int rc = root ? compat_files_write (root, path, content, len, false, &err) : -1;
    files_root_close (&root);
    if (rc < 0)
        return s_error (resp, &err, NULL);
    return s_ok (resp, json_pack ("{s:o, s:s}", "path", s_str (path), "message",
                                  "File written successfully"));
}

/* GET /sandboxes/ID/ls?path=DIR: `ls -la` of DIR, as text. */
static int
s_ls (const compat_env_t *env, const compat_request_t *req, const char *tenant, const char *id,
      compat_response_t *resp)
{
    const char *path = req->query (req->cls, "path");
    if (!path || !*path)
        path = "/workspace";
    if (strlen (path) > FILES_MAX_PATH)
        return s_fail (resp, 400, "query 'path': too long");
    json_t *valid = json_string (path);
    json_decref (valid);
    if (!valid)
        return s_fail (resp, 400, "query 'path': not UTF-8");
    char *command = compat_shell_quote ("ls -la -- ", path);
    if (!command)
        return s_fail (resp, 500, "out of memory");
    err_t err = { 0 };
    json_t *native = json_pack ("{s:s, s:s}", "command", command, "cwd", "/workspace");
    free (command);
    json_t *out = s_run (env, tenant, id, native, &err);
    json_decref (native);
    if (!out)
        return s_error (resp, &err, NULL);
    json_t *code = json_object_get (out, "exit_code");
    if (!json_is_integer (code) || json_integer_value (code) != 0) {
        const char *msg = json_string_value (json_object_get (out, "stderr"));
        char text[512];
        snprintf (text, sizeof text, "%s", msg && *msg ? msg : "ls failed");
        text[strcspn (text, "\n")] = '\0';
        int status = strstr (text, "No such file") ? 404 : 400;
        json_decref (out);
        return s_fail (resp, status, text);
    }
    json_t *data
        = json_pack ("{s:s, s:O}", "path", path, "listing", json_object_get (out, "stdout"));
    json_decref (out);
    return s_ok (resp, data);
}

int
compat_kapin_handle (const compat_env_t *env, const compat_request_t *req, compat_response_t *resp)
{
    /* CORS on every answer, preflights included, and a preflight needs no
       token: browsers send none with it. */
    s_cors (resp);
    if (!strcmp (req->method, "OPTIONS")) {
        compat_add_header (resp, "Access-Control-Max-Age", "86400");
        return compat_bytes (resp, 204, "text/plain", NULL, 0);
    }
    const char *tenant = auth_tenant (env->auth, req->header (req->cls, "Authorization"));
    if (!tenant)
        return s_fail (resp, 401, "Unauthorized: missing or invalid bearer token");

    char id[128], op[16];
    const char *rest = NULL;
    if (!s_parse (req->path, id, sizeof id, op, sizeof op, &rest))
        return s_fail (resp, 404, "Not found");
    const char *m = req->method;
    bool get = !strcmp (m, "GET"), post = !strcmp (m, "POST"), put = !strcmp (m, "PUT");
    bool del = !strcmp (m, "DELETE");
    bool files = !strcmp (op, "files");
    bool known = (!op[0] && (post || del)) || (!strcmp (op, "exec") && post)
                 || (!strcmp (op, "clone") && post) || (!strcmp (op, "ls") && get)
                 || (files && (get || put));
    if (!known)
        return s_fail (resp, 404, "Not found");
    if (req->too_large) {
        char msg[96];
        snprintf (msg, sizeof msg, "request body is larger than %lld bytes",
                  (long long)env->cfg->max_body_bytes);
        return s_fail (resp, 400, msg);
    }
    if (!util_valid_id (id))
        return s_fail (resp, 404, "Sandbox not found");
    if (files && (!rest || !rest[1]))
        return s_fail (resp, 400, "a file path is required: /sandboxes/:projectId/files/<path>");

    if (!op[0])
        return post ? s_sandbox (env, tenant, id, resp) : s_cleanup (env, tenant, id, resp);
    if (get)
        return files ? s_file_get (env, tenant, id, rest, resp) : s_ls (env, req, tenant, id, resp);

    err_t err = { 0 };
    json_t *body = jsonv_parse_object (req->body, req->len, false, &err);
    if (!body)
        return s_error (resp, &err, NULL);
    int rc;
    if (files)
        rc = s_file_put (env, tenant, id, rest, body, resp);
    else if (!strcmp (op, "exec"))
        rc = s_exec (env, tenant, id, body, resp);
    else
        rc = s_clone (env, tenant, id, body, resp);
    json_decref (body);
    return rc;
}
