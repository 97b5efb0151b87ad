/* http_api.c - libmicrohttpd server, routing, auth, JSON errors and SSE. */
#include "http_api.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "contexts.h"
#include "exec.h"
#include "jsonv.h"
#include "sse.h"

#define VERSION_STRING   PACKAGE_VERSION
#define SSE_KEEPALIVE_MS 15000
#define SSE_POLL_MS      250

struct _http_api_t {
    const config_t *cfg;
    auth_t *auth;
    sandbox_mgr_t *mgr;
    contexts_t *ctxs;
    struct MHD_Daemon *daemon;
    int port;
};

typedef struct {
    char *body;
    size_t len;
    int too_large;
    int responded;
    int64_t started_us;
} request_t;

/* --- responses -------------------------------------------------------------- */

static enum MHD_Result
s_send_json (struct MHD_Connection *conn, unsigned status, json_t *body)
{
    char *text = jsonv_dumps (body);
    json_decref (body);
    if (!text)
        return MHD_NO;
    size_t len = strlen (text);
    struct MHD_Response *resp = MHD_create_response_from_buffer (len, text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free (text);
        return MHD_NO;
    }
    MHD_add_response_header (resp, "Content-Type", "application/json");
    MHD_add_response_header (resp, "Cache-Control", "no-store");
    enum MHD_Result rc = MHD_queue_response (conn, status, resp);
    MHD_destroy_response (resp);
    return rc;
}

static enum MHD_Result
s_send_error (struct MHD_Connection *conn, const err_t *err)
{
    int status = err->status >= 400 && err->status < 600 ? err->status : 500;
    json_t *body = json_pack ("{s:{s:s, s:s}}", "error", "code",
                              err->code[0] ? err->code : "internal", "message", err->message);
    if (status == 500)
        log_error ("internal error: %s", err->message);
    return s_send_json (conn, (unsigned)status, body);
}

static enum MHD_Result
s_fail (struct MHD_Connection *conn, int status, const char *code, const char *message)
{
    err_t err;
    err_set (&err, status, code, "%s", message);
    return s_send_error (conn, &err);
}

/* Queue a 200 text/event-stream response whose body reader produces; the
   free callback runs (also on failure) when the response is done with. */
static enum MHD_Result
s_sse_response (struct MHD_Connection *conn, MHD_ContentReaderCallback reader, void *cls,
                MHD_ContentReaderFreeCallback free_cb)
{
    struct MHD_Response *resp
        = MHD_create_response_from_callback (MHD_SIZE_UNKNOWN, 64 * 1024, reader, cls, free_cb);
    if (!resp) {
        free_cb (cls);
        return MHD_NO;
    }
    MHD_add_response_header (resp, "Content-Type", "text/event-stream");
    MHD_add_response_header (resp, "Cache-Control", "no-cache");
    MHD_add_response_header (resp, "X-Accel-Buffering", "no");
    enum MHD_Result rc = MHD_queue_response (conn, 200, resp);
    MHD_destroy_response (resp);
    return rc;
}

/* --- streaming exec ------------------------------------------------------- */

typedef struct {
    exec_t *exec;
    char *pending;
    size_t pending_len, pending_pos;
    int done;
    int fd;               /* the client's socket, to notice it hang up */
    int64_t keepalive_at; /* monotonic ms of the next keepalive comment */
} stream_t;

/* True when the client closed its side of the connection. A silent command
   would otherwise only notice at the next keepalive write. */
static int
s_client_gone (int fd)
{
    if (fd < 0)
        return 0;
    struct pollfd p = { .fd = fd, .events = POLLRDHUP };
    return poll (&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

static void
s_stream_push (stream_t *st, const char *event, json_t *data)
{
    char ts[40];
    json_object_set_new (data, "type", json_string (event));
    json_object_set_new (data, "timestamp",
                         json_string (util_iso8601 (util_now_ms (), ts, sizeof ts)));
    size_t len = 0;
    char *text = sse_format (event, data, &len);
    json_decref (data);
    if (!text)
        return;
    char *grown = realloc (st->pending, st->pending_len + len);
    if (!grown) {
        free (text);
        return;
    }
    st->pending = grown;
    memcpy (st->pending + st->pending_len, text, len);
    st->pending_len += len;
    free (text);
}

static void
s_stream_event (stream_t *st, exec_event_t *ev)
{
    json_t *h = ev->header;
    switch (ev->kind) {
    case EXEC_EV_STDOUT:
    case EXEC_EV_STDERR:
        s_stream_push (st, ev->kind == EXEC_EV_STDOUT ? "stdout" : "stderr",
                       json_pack ("{s:o}", "data", jsonv_string_from_bytes (ev->data, ev->len)));
        break;
    case EXEC_EV_EXIT: {
        json_t *code = json_object_get (h, "exit_code");
        json_t *dur = json_object_get (h, "duration_ms");
        s_stream_push (st, "complete",
                       json_pack ("{s:I, s:I, s:b, s:b}", "exit_code",
                                  json_is_integer (code) ? json_integer_value (code) : -1,
                                  "duration_ms",
                                  json_is_integer (dur) ? json_integer_value (dur) : 0, "timed_out",
                                  json_is_true (json_object_get (h, "timed_out")), "truncated",
                                  json_is_true (json_object_get (h, "truncated"))));
        st->done = 1;
        break;
    }
    case EXEC_EV_ERROR: {
        const char *code = json_string_value (json_object_get (h, "code"));
        const char *msg = json_string_value (json_object_get (h, "message"));
        s_stream_push (st, "error",
                       json_pack ("{s:s, s:s}", "code", code ? code : "internal", "message",
                                  msg ? msg : "error"));
        st->done = 1;
        break;
    }
    case EXEC_EV_START:
        break;
    }
}

static ssize_t
s_stream_read (void *cls, uint64_t pos, char *buf, size_t max)
{
    stream_t *st = cls;
    (void)pos;
    while (st->pending_pos == st->pending_len) {
        st->pending_len = st->pending_pos = 0;
        if (st->done)
            return MHD_CONTENT_READER_END_OF_STREAM;
        if (s_client_gone (st->fd))
            return MHD_CONTENT_READER_END_WITH_ERROR;
        exec_event_t ev;
        err_t err = { 0 };
        int got = exec_next (st->exec, SSE_POLL_MS, &ev, &err);
        if (got < 0) {
            s_stream_push (st, "error",
                           json_pack ("{s:s, s:s}", "code", err.code, "message", err.message));
            st->done = 1;
        }
        else if (got == 0) {
            if (util_mono_ms () < st->keepalive_at)
                continue;
            st->keepalive_at = util_mono_ms () + SSE_KEEPALIVE_MS;
            size_t n = strlen (SSE_KEEPALIVE);
            char *grown = realloc (st->pending, n);
            if (!grown)
                return MHD_CONTENT_READER_END_WITH_ERROR;
            st->pending = grown;
            memcpy (st->pending, SSE_KEEPALIVE, n);
            st->pending_len = n;
        }
        else {
            s_stream_event (st, &ev);
            exec_event_clear (&ev);
        }
    }
    size_t n = st->pending_len - st->pending_pos;
    if (n > max)
        n = max;
    memcpy (buf, st->pending + st->pending_pos, n);
    st->pending_pos += n;
    return (ssize_t)n;
}

static void
s_stream_free (void *cls)
{
    stream_t *st = cls;
    exec_destroy (&st->exec); /* kills the command if the client left early */
    free (st->pending);
    free (st);
}

static enum MHD_Result
s_exec_stream (struct MHD_Connection *conn, exec_t *exec)
{
    stream_t *st = calloc (1, sizeof *st);
    if (!st) {
        exec_destroy (&exec);
        return s_fail (conn, 500, "internal", "out of memory");
    }
    st->exec = exec;
    st->keepalive_at = util_mono_ms () + SSE_KEEPALIVE_MS;
    const union MHD_ConnectionInfo *ci
        = MHD_get_connection_info (conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    st->fd = ci ? ci->connect_fd : -1;
    s_stream_push (st, "start", json_pack ("{s:i}", "pid", exec_pid (exec)));
    return s_sse_response (conn, s_stream_read, st, s_stream_free);
}

/* --- routing ------------------------------------------------------------------ */

/* Split "/v1/sandboxes/ID/exec" into at most max segments. Returns the
   count, or -1 when there are more or one is empty or too long. */
static int
s_split (const char *url, char seg[][128], int max)
{
    int n = 0;
    const char *p = url;
    if (*p != '/')
        return -1;
    while (*p == '/' && p[1]) {
        p++;
        const char *end = strchr (p, '/');
        size_t len = end ? (size_t)(end - p) : strlen (p);
        if (len == 0 || len >= 128 || n == max)
            return -1;
        memcpy (seg[n], p, len);
        seg[n][len] = '\0';
        n++;
        p += len;
    }
    return n;
}

static int
s_wants_sse (struct MHD_Connection *conn)
{
    const char *accept = MHD_lookup_connection_value (conn, MHD_HEADER_KIND, "Accept");
    return accept && strstr (accept, "text/event-stream") != NULL;
}

/* --- streaming runCode ----------------------------------------------------------
   The run blocks in its own thread and pushes events into a queue; the
   response callback drains it. The last of the two to let go frees it. */

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    char *buf;
    size_t len, pos;
    bool finished;
    bool client_gone;
    int refs;
    int fd;
    int64_t keepalive_at;
    code_run_t *run;
} code_stream_t;

static void
s_cs_unref (code_stream_t *cs)
{
    pthread_mutex_lock (&cs->lock);
    int left = --cs->refs;
    pthread_mutex_unlock (&cs->lock);
    if (left > 0)
        return;
    pthread_mutex_destroy (&cs->lock);
    pthread_cond_destroy (&cs->cond);
    free (cs->buf);
    free (cs);
}

/* Append one SSE event (data stolen) under the lock. */
static void
s_cs_push_locked (code_stream_t *cs, const char *event, json_t *data)
{
    json_object_set_new (data, "type", json_string (event));
    size_t len = 0;
    char *text = sse_format (event, data, &len);
    json_decref (data);
    if (!text)
        return;
    if (cs->pos == cs->len)
        cs->pos = cs->len = 0;
    char *grown = realloc (cs->buf, cs->len + len);
    if (grown) {
        cs->buf = grown;
        memcpy (cs->buf + cs->len, text, len);
        cs->len += len;
    }
    free (text);
    pthread_cond_signal (&cs->cond);
}

static int
s_cs_sink (void *arg, json_t *event)
{
    code_stream_t *cs = arg;
    if (!event) {
        pthread_mutex_lock (&cs->lock);
        int gone = cs->client_gone;
        pthread_mutex_unlock (&cs->lock);
        return gone;
    }
    const char *name = json_string_value (json_object_get (event, "event"));
    json_t *data = json_object_get (event, "data");
    pthread_mutex_lock (&cs->lock);
    int gone = cs->client_gone;
    if (!gone && name && json_is_object (data))
        s_cs_push_locked (cs, name, json_deep_copy (data));
    pthread_mutex_unlock (&cs->lock);
    return gone;
}

static void *
s_cs_thread (void *arg)
{
    code_stream_t *cs = arg;
    err_t err = { 0 };
    json_t *out = contexts_run_execute (cs->run, s_cs_sink, cs, &err);
    pthread_mutex_lock (&cs->lock);
    if (out)
        s_cs_push_locked (cs, "end", json_pack ("{s:o}", "execution", out));
    else
        s_cs_push_locked (cs, "error",
                          json_pack ("{s:s, s:s}", "code", err.code, "message", err.message));
    cs->finished = true;
    pthread_cond_signal (&cs->cond);
    pthread_mutex_unlock (&cs->lock);
    s_cs_unref (cs);
    return NULL;
}

static ssize_t
s_cs_read (void *cls, uint64_t pos, char *buf, size_t max)
{
    code_stream_t *cs = cls;
    pthread_mutex_lock (&cs->lock);
    while (cs->pos == cs->len && !cs->finished) {
        if (s_client_gone (cs->fd)) {
            cs->client_gone = true;
            pthread_mutex_unlock (&cs->lock);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        if (util_mono_ms () >= cs->keepalive_at) {
            cs->keepalive_at = util_mono_ms () + SSE_KEEPALIVE_MS;
            size_t n = strlen (SSE_KEEPALIVE);
            pthread_mutex_unlock (&cs->lock);
            memcpy (buf, SSE_KEEPALIVE, n < max ? n : max);
            return (ssize_t)(n < max ? n : max);
        }
        struct timespec ts;
        clock_gettime (CLOCK_REALTIME, &ts);
        ts.tv_nsec += SSE_POLL_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait (&cs->cond, &cs->lock, &ts);
    }
    if (cs->pos == cs->len) {
        pthread_mutex_unlock (&cs->lock);
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    size_t n = cs->len - cs->pos;
    if (n > max)
        n = max;
    memcpy (buf, cs->buf + cs->pos, n);
    cs->pos += n;
    pthread_mutex_unlock (&cs->lock);
    return (ssize_t)n;
}

static void
s_cs_free (void *cls)
{
    code_stream_t *cs = cls;
    pthread_mutex_lock (&cs->lock);
    cs->client_gone = true; /* the run is interrupted at its next event */
    pthread_mutex_unlock (&cs->lock);
    s_cs_unref (cs);
}

static enum MHD_Result
s_code_stream (struct MHD_Connection *conn, code_run_t *run)
{
    code_stream_t *cs = calloc (1, sizeof *cs);
    if (!cs) {
        contexts_run_free (run);
        return s_fail (conn, 500, "internal", "out of memory");
    }
    pthread_mutex_init (&cs->lock, NULL);
    pthread_cond_init (&cs->cond, NULL);
    cs->run = run;
    cs->refs = 2;
    cs->keepalive_at = util_mono_ms () + SSE_KEEPALIVE_MS;
    const union MHD_ConnectionInfo *ci
        = MHD_get_connection_info (conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    cs->fd = ci ? ci->connect_fd : -1;
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init (&attr);
    pthread_attr_setdetachstate (&attr, PTHREAD_CREATE_DETACHED);
    int started = pthread_create (&t, &attr, s_cs_thread, cs) == 0;
    pthread_attr_destroy (&attr);
    if (!started) {
        contexts_run_free (run);
        free (cs);
        return s_fail (conn, 500, "internal", "cannot start the run");
    }
    return s_sse_response (conn, s_cs_read, cs, s_cs_free);
}

typedef enum {
    R_SANDBOXES,
    R_SANDBOX,
    R_EXEC,
    R_CODE,
    R_CONTEXTS,
    R_CONTEXT,
    R_CTX_INTERRUPT,
    R_CTX_RESTART,
} route_t;

/* Routes under /v1/sandboxes: segment count, the 4th and 6th segments
   (NULL: the id slot or absent), and the methods allowed. */
static const struct {
    int nseg;
    const char *s3, *s5;
    route_t route;
    const char *allowed;
} s_routes[] = {
    { 2, NULL, NULL, R_SANDBOXES, "GET, POST" },
    { 3, NULL, NULL, R_SANDBOX, "GET, PATCH, DELETE" },
    { 4, "exec", NULL, R_EXEC, "POST" },
    { 4, "code", NULL, R_CODE, "POST" },
    { 4, "contexts", NULL, R_CONTEXTS, "GET, POST" },
    { 5, "contexts", NULL, R_CONTEXT, "GET, DELETE" },
    { 6, "contexts", "interrupt", R_CTX_INTERRUPT, "POST" },
    { 6, "contexts", "restart", R_CTX_RESTART, "POST" },
};

static enum MHD_Result
s_route (http_api_t *self, struct MHD_Connection *conn, const char *method, const char *url,
         request_t *req)
{
    char seg[6][128];
    int n = s_split (url, seg, 6);
    err_t err = { 0 };
    json_t *out = NULL;

    if (n == 2 && !strcmp (seg[0], "v1") && !strcmp (seg[1], "health")) {
        if (strcmp (method, "GET") && strcmp (method, "HEAD"))
            return s_fail (conn, 405, "method_not_allowed", "use GET");
        return s_send_json (conn, 200,
                            json_pack ("{s:s, s:s}", "status", "ok", "version", VERSION_STRING));
    }
    if (n < 2 || strcmp (seg[0], "v1") || strcmp (seg[1], "sandboxes"))
        return s_fail (conn, 404, "not_found", "no such route");

    const char *tenant = auth_tenant (
        self->auth, MHD_lookup_connection_value (conn, MHD_HEADER_KIND, "Authorization"));
    if (!tenant)
        return s_fail (conn, 401, "unauthorized", "missing or invalid bearer token");

    if (req->too_large) {
        char msg[96];
        snprintf (msg, sizeof msg, "request body is larger than %lld bytes",
                  (long long)self->cfg->max_body_bytes);
        return s_fail (conn, 413, "body_too_large", msg);
    }

    int found = -1;
    for (size_t i = 0; i < sizeof s_routes / sizeof s_routes[0]; i++)
        if (s_routes[i].nseg == n && (!s_routes[i].s3 || !strcmp (seg[3], s_routes[i].s3))
            && (!s_routes[i].s5 || !strcmp (seg[5], s_routes[i].s5))) {
            found = (int)i;
            break;
        }
    if (found < 0)
        return s_fail (conn, 404, "not_found", "no such route");
    route_t route = s_routes[found].route;
    const char *id = n >= 3 ? seg[2] : NULL;
    const char *ctx = n >= 5 ? seg[4] : NULL;
    if (id && !util_valid_id (id))
        return s_fail (conn, 404, "not_found", "no such sandbox");
    if (ctx && !util_valid_id (ctx))
        return s_fail (conn, 404, "not_found", "no such context");

    /* Method first, so a wrong method is a 405 whatever the body holds. */
    int is_get = !strcmp (method, "GET"), is_post = !strcmp (method, "POST");
    int is_patch = !strcmp (method, "PATCH"), is_delete = !strcmp (method, "DELETE");
    if (!(is_get || is_post || is_patch || is_delete)
        || !strstr (s_routes[found].allowed, method)) {
        char msg[64];
        snprintf (msg, sizeof msg, "use %s", s_routes[found].allowed);
        return s_fail (conn, 405, "method_not_allowed", msg);
    }

    json_t *body = NULL;
    if (is_post || is_patch) {
        bool may_be_empty = route == R_SANDBOXES || route == R_CONTEXTS || route == R_CTX_INTERRUPT
                            || route == R_CTX_RESTART;
        body = jsonv_parse_object (req->body, req->len, may_be_empty, &err);
        if (!body)
            return s_send_error (conn, &err);
    }

    int ok = 0, status = 200;
    switch (route) {
    case R_SANDBOXES:
        if (is_get)
            ok = sandbox_list (self->mgr, tenant, &out, &err) == 0;
        else {
            int created = 0;
            ok = sandbox_create (self->mgr, tenant, body, &out, &created, &err) == 0;
            status = created ? 201 : 200;
        }
        break;
    case R_SANDBOX:
        if (is_get)
            ok = sandbox_get (self->mgr, tenant, id, &out, &err) == 0;
        else if (is_patch)
            ok = sandbox_extend (self->mgr, tenant, id, body, &out, &err) == 0;
        else if ((ok = sandbox_delete (self->mgr, tenant, id, &err) == 0))
            out = json_pack ("{s:s, s:s}", "id", id, "status", "deleted");
        break;
    case R_EXEC: {
        exec_t *exec = exec_start (self->mgr, tenant, id, body, &err);
        json_decref (body);
        if (exec && s_wants_sse (conn))
            return s_exec_stream (conn, exec);
        out = exec ? exec_collect (exec, &err) : NULL;
        exec_destroy (&exec);
        return out ? s_send_json (conn, 200, out) : s_send_error (conn, &err);
    }
    case R_CODE: {
        code_run_t *run = contexts_run_prepare (self->ctxs, tenant, id, body, &err);
        json_decref (body);
        if (run && s_wants_sse (conn))
            return s_code_stream (conn, run);
        out = run ? contexts_run_execute (run, NULL, NULL, &err) : NULL;
        return out ? s_send_json (conn, 200, out) : s_send_error (conn, &err);
    }
    case R_CONTEXTS:
        if (is_get)
            ok = contexts_list (self->ctxs, tenant, id, &out, &err) == 0;
        else {
            ok = contexts_create (self->ctxs, tenant, id, body, &out, &err) == 0;
            status = 201;
        }
        break;
    case R_CONTEXT:
        if (is_get)
            ok = contexts_get (self->ctxs, tenant, id, ctx, &out, &err) == 0;
        else if ((ok = contexts_delete (self->ctxs, tenant, id, ctx, &err) == 0))
            out = json_pack ("{s:s, s:s}", "id", ctx, "status", "deleted");
        break;
    case R_CTX_INTERRUPT:
        if ((ok = contexts_interrupt (self->ctxs, tenant, id, ctx, &err) == 0))
            out = json_pack ("{s:s, s:b}", "id", ctx, "interrupted", 1);
        break;
    case R_CTX_RESTART:
        ok = contexts_restart (self->ctxs, tenant, id, ctx, &out, &err) == 0;
        break;
    }
    json_decref (body);
    return ok ? s_send_json (conn, (unsigned)status, out) : s_send_error (conn, &err);
}

static enum MHD_Result
s_access (void *cls, struct MHD_Connection *conn, const char *url, const char *method,
          const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
    http_api_t *self = cls;
    request_t *req = *con_cls;
    if (!req) {
        req = calloc (1, sizeof *req);
        if (!req)
            return MHD_NO;
        req->started_us = util_mono_us ();
        *con_cls = req;
        /* Refuse a declared oversized body before reading any of it. */
        const char *cl = MHD_lookup_connection_value (conn, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoll (cl, NULL, 10) > self->cfg->max_body_bytes) {
            req->responded = 1;
            char msg[96];
            snprintf (msg, sizeof msg, "request body is larger than %lld bytes",
                      (long long)self->cfg->max_body_bytes);
            return s_fail (conn, 413, "body_too_large", msg);
        }
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (req->responded || req->too_large)
            return MHD_YES;
        if (req->len + n > (size_t)self->cfg->max_body_bytes) {
            req->too_large = 1;
            free (req->body);
            req->body = NULL;
            req->len = 0;
            return MHD_YES;
        }
        char *grown = realloc (req->body, req->len + n + 1);
        if (!grown)
            return MHD_NO;
        req->body = grown;
        memcpy (req->body + req->len, upload_data, n);
        req->len += n;
        req->body[req->len] = '\0';
        return MHD_YES;
    }
    if (req->responded)
        return MHD_YES;
    req->responded = 1;
    return s_route (self, conn, method, url, req);
}

static void
s_completed (void *cls, struct MHD_Connection *conn, void **con_cls,
             enum MHD_RequestTerminationCode toe)
{
    request_t *req = *con_cls;
    if (!req)
        return;
    free (req->body);
    free (req);
    *con_cls = NULL;
}

static void *
s_uri_log (void *cls, const char *uri, struct MHD_Connection *conn)
{
    log_debug ("request %.200s", uri);
    return NULL;
}

/* Parse "ADDR:PORT" or "[V6]:PORT". */
static int
s_parse_listen (const char *listen, struct sockaddr_storage *ss, socklen_t *sslen, int *loopback,
                err_t *err)
{
    char host[128];
    const char *colon = strrchr (listen, ':');
    if (!colon)
        return err_set (err, 400, "invalid_config", "listen: expected ADDR:PORT");
    size_t hl = (size_t)(colon - listen);
    if (hl >= sizeof host)
        return err_set (err, 400, "invalid_config", "listen: address too long");
    memcpy (host, listen, hl);
    host[hl] = '\0';
    char *end;
    long port = strtol (colon + 1, &end, 10);
    if (*end || port < 0 || port > 65535)
        return err_set (err, 400, "invalid_config", "listen: bad port");
    memset (ss, 0, sizeof *ss);
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
        host[hl - 1] = '\0';
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons ((uint16_t)port);
        if (inet_pton (AF_INET6, host + 1, &a->sin6_addr) != 1)
            return err_set (err, 400, "invalid_config", "listen: bad IPv6 address");
        *loopback = IN6_IS_ADDR_LOOPBACK (&a->sin6_addr);
        *sslen = sizeof *a;
        return 0;
    }
    struct sockaddr_in *a = (struct sockaddr_in *)ss;
    a->sin_family = AF_INET;
    a->sin_port = htons ((uint16_t)port);
    if (!strcmp (host, "localhost"))
        snprintf (host, sizeof host, "127.0.0.1");
    if (inet_pton (AF_INET, host, &a->sin_addr) != 1)
        return err_set (err, 400, "invalid_config", "listen: bad IPv4 address '%s'", host);
    *loopback = (ntohl (a->sin_addr.s_addr) >> 24) == 127;
    *sslen = sizeof *a;
    return 0;
}

http_api_t *
http_api_start (const config_t *cfg, auth_t *auth, sandbox_mgr_t *mgr, contexts_t *ctxs, err_t *err)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    int loopback = 0;
    if (s_parse_listen (cfg->listen, &ss, &sslen, &loopback, err) < 0)
        return NULL;
    if (auth_is_open (auth) && !loopback) {
        err_set (err, 400, "invalid_config",
                 "refusing to listen on %s without a tokens file: use a loopback address or "
                 "--tokens FILE",
                 cfg->listen);
        return NULL;
    }
    http_api_t *self = calloc (1, sizeof *self);
    if (!self) {
        err_set (err, 500, "internal", "out of memory");
        return NULL;
    }
    self->cfg = cfg;
    self->auth = auth;
    self->mgr = mgr;
    self->ctxs = ctxs;
    unsigned flags
        = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    self->daemon = MHD_start_daemon (flags, 0, NULL, NULL, s_access, self, MHD_OPTION_SOCK_ADDR,
                                     (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_LIMIT,
                                     (unsigned)cfg->max_connections, MHD_OPTION_CONNECTION_TIMEOUT,
                                     (unsigned)600, MHD_OPTION_NOTIFY_COMPLETED, s_completed, self,
                                     MHD_OPTION_URI_LOG_CALLBACK, s_uri_log, self, MHD_OPTION_END);
    if (!self->daemon) {
        err_set (err, 500, "internal", "cannot listen on %s (address in use?)", cfg->listen);
        free (self);
        return NULL;
    }
    const union MHD_DaemonInfo *info
        = MHD_get_daemon_info (self->daemon, MHD_DAEMON_INFO_BIND_PORT);
    self->port = info ? info->port : 0;
    return self;
}

int
http_api_port (const http_api_t *self)
{
    return self->port;
}

void
http_api_destroy (http_api_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    MHD_stop_daemon ((*self_p)->daemon);
    free (*self_p);
    *self_p = NULL;
}
