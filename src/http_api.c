/* http_api.c - libmicrohttpd server, routing, auth, JSON errors and SSE. */
#include "http_api.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <errno.h>
#include <poll.h>
#include <sodium.h>
#include <unistd.h>
#include <pthread.h>
#include <stdbool.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "backups.h"
#include "compat.h"
#include "contexts.h"
#include "exec.h"
#include "files.h"
#include "gateway.h"
#include "httpmsg.h"
#include "git.h"
#include "sessions.h"
#include "jsonv.h"
#include "notebooks.h"
#include "ports.h"
#include "proxy.h"
#include "sse.h"
#include "ws.h"

#define VERSION_STRING   PACKAGE_VERSION
#define SSE_KEEPALIVE_MS 15000
#define SSE_POLL_MS      250

struct _http_api_t {
    const config_t *cfg;
    auth_t *auth;
    sandbox_mgr_t *mgr;
    contexts_t *ctxs;
    backups_t *backups;
    ports_t *ports;
    proxy_t *proxy;
    mounts_t *mounts;
    gateway_t *gateway;
    struct MHD_Daemon *daemon;
    int port;
};

typedef struct {
    char *body;
    size_t len;
    int too_large;
    int responded;
    int64_t started_us;
    int seen;           /* the access handler has had its first call */
    int nul_in_path;    /* the raw URI's path has a %00 */
    int64_t body_limit; /* s_body_limit of the URL */
    /* a raw PUT to /files/… streams straight into this writer */
    files_writer_t *writer;
    files_root_t *root;
    int64_t uploaded;
    err_t upload_err;
    char path[FILES_MAX_PATH + 1];
    char *raw_uri;      /* the request target as received, for the proxy */
    proxy_req_t *proxy; /* a request relayed to a port in a sandbox */
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
    bool follow;          /* a process's logs: "exit" ends it, nothing to kill */
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
        json_t *data
            = json_pack ("{s:I, s:I, s:b, s:b}", "exit_code",
                         json_is_integer (code) ? json_integer_value (code) : -1, "duration_ms",
                         json_is_integer (dur) ? json_integer_value (dur) : 0, "timed_out",
                         json_is_true (json_object_get (h, "timed_out")), "truncated",
                         json_is_true (json_object_get (h, "truncated")));
        if (json_is_true (json_object_get (h, "session_reset")))
            json_object_set_new (data, "session_reset", json_true ());
        s_stream_push (st, st->follow ? "exit" : "complete", data);
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

/* Stream exec events as SSE. For a process's logs (follow), there is no
   start event and the end is called "exit" rather than "complete". */
static enum MHD_Result
s_exec_stream (struct MHD_Connection *conn, exec_t *exec, bool follow)
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
    st->follow = follow;
    if (!follow)
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

static const char *
s_query (struct MHD_Connection *conn, const char *key)
{
    return MHD_lookup_connection_value (conn, MHD_GET_ARGUMENT_KIND, key);
}

/* ?key=1, ?key=true or a bare ?key. */
static bool
s_query_true (struct MHD_Connection *conn, const char *key)
{
    const char *v = s_query (conn, key);
    return v && (!*v || !strcmp (v, "1") || !strcmp (v, "true"));
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
    code_run_t *run;         /* a runCode stream, or */
    notebooks_job_t *nb_job; /* a notebook run's */
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

/* A notebook run's progress, pushed as SSE events (data stolen). */
static int
s_nb_sink (void *arg, const char *event, json_t *data)
{
    code_stream_t *cs = arg;
    pthread_mutex_lock (&cs->lock);
    int gone = cs->client_gone;
    if (!gone && event && json_is_object (data))
        s_cs_push_locked (cs, event, data);
    else
        json_decref (data);
    pthread_mutex_unlock (&cs->lock);
    return gone;
}

static void *
s_nb_thread (void *arg)
{
    code_stream_t *cs = arg;
    err_t err = { 0 };
    json_t *out = notebooks_run (cs->nb_job, s_nb_sink, cs, &err);
    pthread_mutex_lock (&cs->lock);
    if (out)
        s_cs_push_locked (cs, "done", out);
    else if (!cs->client_gone)
        s_cs_push_locked (cs, "error",
                          json_pack ("{s:s, s:s}", "code", err.code, "message", err.message));
    pthread_mutex_unlock (&cs->lock);
    /* The client has its result while the temporary context goes. */
    notebooks_job_free (cs->nb_job);
    cs->nb_job = NULL;
    pthread_mutex_lock (&cs->lock);
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

/* Stream a runCode run, or (run NULL) a notebook job; either is freed. */
static enum MHD_Result
s_code_stream (struct MHD_Connection *conn, code_run_t *run, notebooks_job_t *nb_job)
{
    code_stream_t *cs = calloc (1, sizeof *cs);
    if (!cs) {
        contexts_run_free (run);
        notebooks_job_free (nb_job);
        return s_fail (conn, 500, "internal", "out of memory");
    }
    pthread_mutex_init (&cs->lock, NULL);
    pthread_cond_init (&cs->cond, NULL);
    cs->run = run;
    cs->nb_job = nb_job;
    cs->refs = 2;
    cs->keepalive_at = util_mono_ms () + SSE_KEEPALIVE_MS;
    const union MHD_ConnectionInfo *ci
        = MHD_get_connection_info (conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    cs->fd = ci ? ci->connect_fd : -1;
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init (&attr);
    pthread_attr_setdetachstate (&attr, PTHREAD_CREATE_DETACHED);
    int started = pthread_create (&t, &attr, run ? s_cs_thread : s_nb_thread, cs) == 0;
    pthread_attr_destroy (&attr);
    if (!started) {
        contexts_run_free (run);
        notebooks_job_free (nb_job);
        free (cs);
        return s_fail (conn, 500, "internal", "cannot start the run");
    }
    return s_sse_response (conn, s_cs_read, cs, s_cs_free);
}

/* --- files ----------------------------------------------------------------
   Raw bytes stream both ways: downloads are sent from the file descriptor
   (sendfile), uploads are written as they arrive, so memory stays bounded
   whatever the file size. */

static const char *
s_content_type (const char *path)
{
    static const struct {
        const char *ext, *type;
    } map[] = { { ".txt", "text/plain; charset=utf-8" },
                { ".md", "text/markdown; charset=utf-8" },
                { ".csv", "text/csv; charset=utf-8" },
                { ".html", "text/html; charset=utf-8" },
                { ".htm", "text/html; charset=utf-8" },
                { ".css", "text/css; charset=utf-8" },
                { ".js", "text/javascript; charset=utf-8" },
                { ".ts", "text/plain; charset=utf-8" },
                { ".py", "text/x-python; charset=utf-8" },
                { ".sh", "text/x-shellscript; charset=utf-8" },
                { ".json", "application/json" },
                { ".xml", "application/xml" },
                { ".svg", "image/svg+xml" },
                { ".png", "image/png" },
                { ".jpg", "image/jpeg" },
                { ".jpeg", "image/jpeg" },
                { ".gif", "image/gif" },
                { ".webp", "image/webp" },
                { ".pdf", "application/pdf" },
                { ".zip", "application/zip" },
                { ".gz", "application/gzip" },
                { ".tar", "application/x-tar" },
                { ".ipynb", "application/x-ipynb+json" } };
    const char *dot = strrchr (path, '.');
    const char *slash = strrchr (path, '/');
    if (dot && (!slash || dot > slash))
        for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
            if (!strcasecmp (dot, map[i].ext))
                return map[i].type;
    return "application/octet-stream";
}

/* Parse a single "bytes=a-b" range against size. 1 with *off and *len set, 0
   when there is no usable Range header, -1 when it cannot be satisfied. */
static int
s_parse_range (const char *h, int64_t size, int64_t *off, int64_t *len)
{
    if (!h || strncmp (h, "bytes=", 6) != 0 || strchr (h, ','))
        return 0;
    const char *p = h + 6;
    char *end;
    if (*p == '-') {
        long long suffix = strtoll (p + 1, &end, 10);
        if (*end || suffix <= 0)
            return 0;
        if (size == 0)
            return -1;
        *len = suffix > size ? size : suffix;
        *off = size - *len;
        return 1;
    }
    long long a = strtoll (p, &end, 10);
    if (end == p || *end != '-' || a < 0)
        return 0;
    p = end + 1;
    long long b = size - 1;
    if (*p) {
        b = strtoll (p, &end, 10);
        if (*end || b < a)
            return 0;
    }
    if (a >= size)
        return -1;
    if (b >= size)
        b = size - 1;
    *off = a;
    *len = b - a + 1;
    return 1;
}

static files_root_t *
s_files_root (http_api_t *self, const char *tenant, const char *id, err_t *err)
{
    char cid[64], dir[1200], rootfs[1300];
    if (sandbox_resolve (self->mgr, tenant, id, cid, NULL, err) < 0)
        return NULL;
    sandbox_mgr_dir (self->mgr, cid, dir, sizeof dir);
    snprintf (rootfs, sizeof rootfs, "%s/bundle/rootfs", dir);
    return files_root_open (rootfs, err);
}

/* GET and HEAD of /files/PATH. */
static enum MHD_Result
s_file_get (http_api_t *self, struct MHD_Connection *conn, files_root_t *root, const char *path,
            bool head)
{
    err_t err = { 0 };
    files_stat_t st;
    const char *encoding = s_query (conn, "encoding");
    if (head || (encoding && *encoding)) {
        if (files_stat (root, path, &st, &err) < 0)
            return s_send_error (conn, &err);
    }
    if (head) {
        struct MHD_Response *resp = MHD_create_response_from_buffer (0, "", MHD_RESPMEM_PERSISTENT);
        char size[32], mode[8], ts[40];
        snprintf (size, sizeof size, "%lld", (long long)st.size);
        snprintf (mode, sizeof mode, "%04o", st.mode & 07777);
        MHD_add_response_header (resp, "X-File-Type", st.type);
        MHD_add_response_header (resp, "X-File-Size", size);
        MHD_add_response_header (resp, "X-File-Mode", mode);
        MHD_add_response_header (resp, "X-File-Mtime", util_iso8601 (st.mtime_ms, ts, sizeof ts));
        if (!strcmp (st.type, "file"))
            MHD_add_response_header (resp, "Content-Type", s_content_type (path));
        enum MHD_Result rc = MHD_queue_response (conn, 200, resp);
        MHD_destroy_response (resp);
        return rc;
    }
    if (encoding && *encoding) {
        bool b64 = !strcmp (encoding, "base64");
        if (!b64 && strcmp (encoding, "utf-8") && strcmp (encoding, "utf8"))
            return s_fail (conn, 400, "invalid_field", "query 'encoding': base64 or utf-8");
        char *buf = NULL;
        size_t len = 0;
        if (files_read_all (root, path, self->cfg->max_body_bytes * 16, &buf, &len, &err) < 0) {
            if (err.status == 413)
                return s_fail (
                    conn, 413, "file_too_large",
                    "the file is too large for a JSON answer: read it raw (no encoding)");
            return s_send_error (conn, &err);
        }
        bool not_utf8 = false;
        json_t *content = jsonv_file_content (buf, len, b64, &not_utf8);
        free (buf);
        if (!content && not_utf8)
            return s_fail (conn, 422, "not_utf8",
                           "the file is not UTF-8 text: ask for encoding=base64");
        if (!content)
            return s_fail (conn, 500, "internal", "out of memory");
        return s_send_json (conn, 200,
                            json_pack ("{s:s, s:o, s:s, s:I}", "path", path, "content", content,
                                       "encoding", b64 ? "base64" : "utf-8", "size",
                                       (json_int_t)len));
    }
    int fd = -1;
    if (files_open_read (root, path, &fd, &st, &err) < 0)
        return s_send_error (conn, &err);
    int64_t off = 0, len = st.size;
    int r = s_parse_range (MHD_lookup_connection_value (conn, MHD_HEADER_KIND, "Range"), st.size,
                           &off, &len);
    if (r < 0) {
        close (fd);
        char msg[128];
        snprintf (msg, sizeof msg, "the range is outside the file (%lld bytes)",
                  (long long)st.size);
        json_t *body = json_pack ("{s:{s:s, s:s}}", "error", "code", "range_not_satisfiable",
                                  "message", msg);
        char *text = jsonv_dumps (body);
        json_decref (body);
        struct MHD_Response *resp
            = text ? MHD_create_response_from_buffer (strlen (text), text, MHD_RESPMEM_MUST_FREE)
                   : NULL;
        if (!resp) {
            free (text);
            return MHD_NO;
        }
        char cr[64];
        snprintf (cr, sizeof cr, "bytes */%lld", (long long)st.size);
        MHD_add_response_header (resp, "Content-Range", cr);
        MHD_add_response_header (resp, "Content-Type", "application/json");
        enum MHD_Result rc = MHD_queue_response (conn, 416, resp);
        MHD_destroy_response (resp);
        return rc;
    }
    struct MHD_Response *resp
        = MHD_create_response_from_fd_at_offset64 ((uint64_t)len, fd, (uint64_t)off);
    if (!resp) {
        close (fd);
        return s_fail (conn, 500, "internal", "out of memory");
    }
    MHD_add_response_header (resp, "Content-Type", s_content_type (path));
    MHD_add_response_header (resp, "Accept-Ranges", "bytes");
    if (r == 1) {
        char cr[96];
        snprintf (cr, sizeof cr, "bytes %lld-%lld/%lld", (long long)off, (long long)(off + len - 1),
                  (long long)st.size);
        MHD_add_response_header (resp, "Content-Range", cr);
    }
    enum MHD_Result rc = MHD_queue_response (conn, r == 1 ? 206 : 200, resp);
    MHD_destroy_response (resp);
    return rc;
}

/* ?mode=0644 → 0644; absent → -1; bad → -2. */
static int
s_query_mode (struct MHD_Connection *conn)
{
    const char *m = s_query (conn, "mode");
    if (!m || !*m)
        return -1;
    char *end;
    long v = strtol (m, &end, 8);
    return *end || v < 0 || v > 07777 ? -2 : (int)v;
}

/* The JSON form of PUT /files/PATH: {content, encoding}. */
static enum MHD_Result
s_file_put_json (http_api_t *self, struct MHD_Connection *conn, files_root_t *root,
                 const char *path, request_t *req)
{
    err_t err = { 0 };
    json_t *body = jsonv_parse_object (req->body, req->len, false, &err);
    const char *content = NULL, *encoding = "utf-8";
    static const char *const keys[] = { "content", "encoding", NULL };
    if (!body || jsonv_only_keys (body, "", keys, &err) < 0
        || jsonv_string (body, "", "content", true, (size_t)self->cfg->max_body_bytes, &content,
                         &err)
               < 0
        || jsonv_string (body, "", "encoding", false, 16, &encoding, &err) < 0) {
        json_decref (body);
        return s_send_error (conn, &err);
    }
    bool b64 = !strcmp (encoding, "base64");
    if (!b64 && strcmp (encoding, "utf-8") && strcmp (encoding, "utf8")) {
        json_decref (body);
        return s_fail (conn, 400, "invalid_field", "field 'encoding': base64 or utf-8");
    }
    size_t clen = strlen (content), len = clen;
    unsigned char *bin = NULL;
    if (b64) {
        bin = malloc (clen + 1);
        if (!bin
            || sodium_base642bin (bin, clen + 1, content, clen, " \t\r\n", &len, NULL,
                                  sodium_base64_VARIANT_ORIGINAL)
                   != 0) {
            free (bin);
            json_decref (body);
            return s_fail (conn, 400, "invalid_field", "field 'content': invalid base64");
        }
    }
    int mode = s_query_mode (conn);
    if (mode == -2) {
        free (bin);
        json_decref (body);
        return s_fail (conn, 400, "invalid_field", "query 'mode': an octal mode like 0644");
    }
    files_writer_t *w = files_write_begin (root, path, s_query_true (conn, "mkdir"), mode, &err);
    int rc = w ? files_write_chunk (w, b64 ? (const void *)bin : content, len, &err) : -1;
    if (rc == 0)
        rc = files_write_commit (&w, &err);
    files_write_abort (&w);
    free (bin);
    json_decref (body);
    if (rc < 0)
        return s_send_error (conn, &err);
    return s_send_json (conn, 200, json_pack ("{s:s, s:I}", "path", path, "size", (json_int_t)len));
}

/* Routes of the file API: /files/PATH (GET, HEAD, PUT, DELETE) and
   files:list, files:mkdir, files:move. */
static enum MHD_Result
s_files_route (http_api_t *self, struct MHD_Connection *conn, const char *method,
               const char *tenant, const char *id, const char *op, const char *path, request_t *req)
{
    err_t err = { 0 };
    if (req->writer || req->upload_err.status) {
        /* A streamed upload: finish it. */
        if (req->upload_err.status)
            return s_send_error (conn, &req->upload_err);
        int rc = files_write_commit (&req->writer, &err);
        if (rc < 0)
            return s_send_error (conn, &err);
        return s_send_json (
            conn, 200,
            json_pack ("{s:s, s:I}", "path", req->path, "size", (json_int_t)req->uploaded));
    }
    files_root_t *root = s_files_root (self, tenant, id, &err);
    if (!root)
        return s_send_error (conn, &err);
    enum MHD_Result rc;
    json_t *body = NULL, *out = NULL;
    bool is_get = !strcmp (method, "GET"), is_head = !strcmp (method, "HEAD");
    if (!op) {
        if (is_get || is_head)
            rc = s_file_get (self, conn, root, path, is_head);
        else if (!strcmp (method, "PUT"))
            rc = s_file_put_json (self, conn, root, path, req);
        else if (!strcmp (method, "DELETE")) {
            rc = files_delete (root, path, s_query_true (conn, "recursive"), &err) == 0
                     ? s_send_json (conn, 200, json_pack ("{s:s, s:b}", "path", path, "deleted", 1))
                     : s_send_error (conn, &err);
        }
        else
            rc = s_fail (conn, 405, "method_not_allowed", "use GET, HEAD, PUT or DELETE");
    }
    else if (!strcmp (op, "list")) {
        const char *lpath = s_query (conn, "path");
        bool truncated = false;
        if (!is_get)
            rc = s_fail (conn, 405, "method_not_allowed", "use GET");
        else if (files_list (root, lpath && *lpath ? lpath : "/workspace",
                             s_query_true (conn, "recursive"), s_query_true (conn, "hidden"), &out,
                             &truncated, &err)
                 == 0)
            rc = s_send_json (conn, 200,
                              json_pack ("{s:s, s:o, s:b}", "path",
                                         lpath && *lpath ? lpath : "/workspace", "entries", out,
                                         "truncated", truncated));
        else
            rc = s_send_error (conn, &err);
    }
    else if (strcmp (method, "POST"))
        rc = s_fail (conn, 405, "method_not_allowed", "use POST");
    else if (!(body = jsonv_parse_object (req->body, req->len, false, &err)))
        rc = s_send_error (conn, &err);
    else if (!strcmp (op, "mkdir")) {
        static const char *const keys[] = { "path", "recursive", NULL };
        const char *p = NULL;
        bool recursive = false;
        if (jsonv_only_keys (body, "", keys, &err) < 0
            || jsonv_string (body, "", "path", true, FILES_MAX_PATH, &p, &err) < 0
            || jsonv_bool (body, "", "recursive", &recursive, &err) < 0
            || files_mkdir (root, p, recursive, &err) < 0)
            rc = s_send_error (conn, &err);
        else
            rc = s_send_json (conn, 201, json_pack ("{s:s}", "path", p));
    }
    else {
        static const char *const keys[] = { "from", "to", NULL };
        const char *from = NULL, *to = NULL;
        if (jsonv_only_keys (body, "", keys, &err) < 0
            || jsonv_string (body, "", "from", true, FILES_MAX_PATH, &from, &err) < 0
            || jsonv_string (body, "", "to", true, FILES_MAX_PATH, &to, &err) < 0
            || files_move (root, from, to, &err) < 0)
            rc = s_send_error (conn, &err);
        else
            rc = s_send_json (conn, 200, json_pack ("{s:s, s:s}", "from", from, "to", to));
    }
    json_decref (body);
    files_root_close (&root);
    return rc;
}

/* Split a files URL: /v1/sandboxes/ID/files/PATH (op NULL, path with
   its leading slash) or /v1/sandboxes/ID/files:OP. 1 when it is one. */
static int
s_files_url (const char *url, char *id, size_t idsize, const char **op, const char **path)
{
    static const char prefix[] = "/v1/sandboxes/";
    if (strncmp (url, prefix, sizeof prefix - 1) != 0)
        return 0;
    const char *p = url + sizeof prefix - 1;
    const char *slash = strchr (p, '/');
    if (!slash || (size_t)(slash - p) >= idsize)
        return 0;
    memcpy (id, p, (size_t)(slash - p));
    id[slash - p] = '\0';
    const char *rest = slash + 1;
    if (!strncmp (rest, "files/", 6)) {
        *op = NULL;
        *path = rest + 5;
        return 1;
    }
    if (!strcmp (rest, "files:list") || !strcmp (rest, "files:mkdir")
        || !strcmp (rest, "files:move")) {
        *op = rest + 6;
        *path = NULL;
        return 1;
    }
    return 0;
}

typedef enum {
    R_ENV,
    R_GIT_CHECKOUT,
    R_SESSIONS,
    R_SESSION,
    R_PROCESSES,
    R_PROCESS,
    R_PROCESS_LOGS,
    R_SANDBOXES,
    R_SANDBOX,
    R_EXEC,
    R_CODE,
    R_CONTEXTS,
    R_CONTEXT,
    R_CTX_INTERRUPT,
    R_CTX_RESTART,
    R_BACKUPS,
    R_BACKUP,
    R_BACKUP_RESTORE,
    R_PORTS,
    R_PORT,
    R_MOUNTS,
    R_NOTEBOOK_RUN,
} route_t;

/* Routes under /v1/sandboxes: segment count, the 4th and the last
   segments (NULL: an id slot or absent), and the methods allowed. */
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
    { 4, "notebooks:run", NULL, R_NOTEBOOK_RUN, "POST" },
    { 4, "contexts", NULL, R_CONTEXTS, "GET, POST" },
    { 5, "contexts", NULL, R_CONTEXT, "GET, DELETE" },
    { 6, "contexts", "interrupt", R_CTX_INTERRUPT, "POST" },
    { 6, "contexts", "restart", R_CTX_RESTART, "POST" },
    { 4, "env", NULL, R_ENV, "POST" },
    { 5, "git", "checkout", R_GIT_CHECKOUT, "POST" },
    { 4, "sessions", NULL, R_SESSIONS, "GET, POST" },
    { 5, "sessions", NULL, R_SESSION, "GET, DELETE" },
    { 4, "processes", NULL, R_PROCESSES, "GET, POST, DELETE" },
    { 5, "processes", NULL, R_PROCESS, "GET, DELETE" },
    { 6, "processes", "logs", R_PROCESS_LOGS, "GET" },
    { 4, "backups", NULL, R_BACKUPS, "GET, POST" },
    { 5, "backups", NULL, R_BACKUP, "GET, DELETE" },
    { 6, "backups", "restore", R_BACKUP_RESTORE, "POST" },
    { 4, "ports", NULL, R_PORTS, "GET, POST" },
    { 5, "ports", NULL, R_PORT, "DELETE" },
    { 4, "mounts", NULL, R_MOUNTS, "GET, POST, DELETE" },
};

static const char *
s_compat_header (void *cls, const char *name)
{
    return MHD_lookup_connection_value (cls, MHD_HEADER_KIND, name);
}

static const char *
s_compat_query (void *cls, const char *name)
{
    return MHD_lookup_connection_value (cls, MHD_GET_ARGUMENT_KIND, name);
}

/* Hand a request to a compatibility surface and send what it answers. */
static enum MHD_Result
s_compat (http_api_t *self, struct MHD_Connection *conn, const char *method, const char *rest,
          request_t *req, compat_handler_fn *fn)
{
    compat_env_t env = { self->cfg, self->auth, self->mgr, self->ctxs, self->mounts };
    compat_request_t creq = {
        .method = method,
        .path = rest,
        .body = req->body,
        .len = req->len,
        .too_large = req->too_large,
        .header = s_compat_header,
        .query = s_compat_query,
        .cls = conn,
    };
    compat_response_t resp = { 0 };
    fn (&env, &creq, &resp);
    struct MHD_Response *r
        = resp.has_body_fd
              ? MHD_create_response_from_fd64 ((uint64_t)resp.body_fd_len, resp.body_fd)
              : MHD_create_response_from_buffer (resp.len, resp.body ? resp.body : "",
                                                 MHD_RESPMEM_MUST_COPY);
    if (r && resp.has_body_fd)
        resp.has_body_fd = false; /* the response closes it */
    if (!r) {
        compat_response_clear (&resp);
        return MHD_NO;
    }
    MHD_add_response_header (r, "Content-Type",
                             resp.content_type[0] ? resp.content_type : "application/json");
    for (int i = 0; i < resp.nheaders; i++)
        MHD_add_response_header (r, resp.headers[i].name, resp.headers[i].value);
    enum MHD_Result ret = MHD_queue_response (conn, resp.status ? resp.status : 500, r);
    MHD_destroy_response (r);
    compat_response_clear (&resp);
    return ret;
}

/* --- Jupyter gateway API (gateway.h) ----------------------------------------------------- */

static void
s_gateway_upgraded (void *cls, struct MHD_Connection *conn, void *con_cls, const char *extra_in,
                    size_t extra_in_size, MHD_socket sock, struct MHD_UpgradeResponseHandle *urh)
{
    (void)conn;
    (void)con_cls;
    gateway_ws_run (cls, sock, extra_in, extra_in_size);
    MHD_upgrade_action (urh, MHD_UPGRADE_ACTION_CLOSE);
}

static enum MHD_Result
s_gateway_ws (http_api_t *self, struct MHD_Connection *conn, const char *tenant, const char *kid)
{
    const char *upgrade = MHD_lookup_connection_value (conn, MHD_HEADER_KIND, "Upgrade");
    const char *connection = MHD_lookup_connection_value (conn, MHD_HEADER_KIND, "Connection");
    const char *version
        = MHD_lookup_connection_value (conn, MHD_HEADER_KIND, "Sec-WebSocket-Version");
    const char *key = MHD_lookup_connection_value (conn, MHD_HEADER_KIND, "Sec-WebSocket-Key");
    err_t err = { 0 };
    gateway_ws_t *ws = gateway_ws_prepare (self->gateway, tenant, kid, &err);
    if (!ws)
        return s_send_error (conn, &err);
    char accept[29];
    if (!upgrade || !httpmsg_has_token (upgrade, "websocket") || !connection
        || !httpmsg_has_token (connection, "upgrade")) {
        gateway_ws_free (&ws);
        return s_fail (conn, 400, "upgrade_required",
                       "the channels endpoint is a websocket: send Upgrade: websocket");
    }
    if (!version || strcmp (version, "13")) {
        gateway_ws_free (&ws);
        struct MHD_Response *r = MHD_create_response_from_buffer (0, "", MHD_RESPMEM_PERSISTENT);
        MHD_add_response_header (r, "Sec-WebSocket-Version", "13");
        enum MHD_Result rc = MHD_queue_response (conn, 426, r);
        MHD_destroy_response (r);
        return rc;
    }
    if (ws_accept_key (key, accept) < 0) {
        gateway_ws_free (&ws);
        return s_fail (conn, 400, "invalid_header",
                       "header 'Sec-WebSocket-Key': must be 16 bytes in base64");
    }
    struct MHD_Response *resp = MHD_create_response_for_upgrade (s_gateway_upgraded, ws);
    if (!resp) {
        gateway_ws_free (&ws);
        return s_fail (conn, 500, "internal", "out of memory");
    }
    MHD_add_response_header (resp, "Upgrade", "websocket");
    MHD_add_response_header (resp, "Sec-WebSocket-Accept", accept);
    enum MHD_Result rc = MHD_queue_response (conn, 101, resp);
    MHD_destroy_response (resp);
    if (rc != MHD_YES)
        gateway_ws_free (&ws); /* the relay will never run */
    return rc;
}

static enum MHD_Result
s_gateway (http_api_t *self, struct MHD_Connection *conn, const char *method, const char *url,
           request_t *req)
{
    const char *tenant = auth_tenant (
        self->auth, MHD_lookup_connection_value (conn, MHD_HEADER_KIND, "Authorization"));
    if (!tenant)
        return s_fail (conn, 401, "unauthorized", "missing or invalid token");
    if (req->too_large) {
        char msg[96];
        snprintf (msg, sizeof msg, "request body is larger than %lld bytes",
                  (long long)self->cfg->max_body_bytes);
        return s_fail (conn, 413, "body_too_large", msg);
    }
    char kid[37];
    if (!strcmp (method, "GET") && gateway_channels_url (url, kid)
        && MHD_lookup_connection_value (conn, MHD_HEADER_KIND, "Upgrade"))
        return s_gateway_ws (self, conn, tenant, kid);
    json_t *out = NULL;
    err_t err = { 0 };
    int status
        = gateway_handle (self->gateway, tenant, method, url, req->body, req->len, &out, &err);
    if (status >= 400)
        return s_send_error (conn, &err);
    if (!out) {
        struct MHD_Response *r = MHD_create_response_from_buffer (0, "", MHD_RESPMEM_PERSISTENT);
        enum MHD_Result rc = MHD_queue_response (conn, (unsigned)status, r);
        MHD_destroy_response (r);
        return rc;
    }
    return s_send_json (conn, (unsigned)status, out);
}

/* The largest request body url may carry: notebooks are allowed more
   (max_notebook_bytes) than every other JSON body. */
static int64_t
s_body_limit (http_api_t *self, const char *url)
{
    char seg[6][128];
    int n = s_split (url, seg, 6);
    if (n == 4 && !strcmp (seg[0], "v1") && !strcmp (seg[1], "sandboxes")
        && !strcmp (seg[3], "notebooks:run"))
        return self->cfg->max_notebook_bytes;
    return self->cfg->max_body_bytes;
}

/* POST .../notebooks:run: validate, resolve the context, then run the
   notebook here or (Accept: text/event-stream) on a thread that streams
   its progress. body is stolen. */
static enum MHD_Result
s_notebook_run (http_api_t *self, struct MHD_Connection *conn, const char *tenant, const char *id,
                json_t *body)
{
    err_t err = { 0 };
    notebooks_query_t q = { s_query (conn, "language"), s_query (conn, "stop_on_error"),
                            s_query (conn, "timeout_ms"), s_query (conn, "context_id") };
    notebooks_request_t req;
    int rc = notebooks_request_parse (body, &q, (size_t)self->cfg->max_body_bytes,
                                      self->cfg->exec_max_timeout_ms, &req, &err);
    json_decref (body);
    if (rc < 0)
        return s_send_error (conn, &err);
    notebooks_job_t *job = notebooks_prepare (self->ctxs, self->cfg, tenant, id, &req, &err);
    notebooks_request_clear (&req);
    if (!job)
        return s_send_error (conn, &err);
    if (s_wants_sse (conn))
        return s_code_stream (conn, NULL, job);
    json_t *out = notebooks_run (job, NULL, NULL, &err);
    notebooks_job_free (job);
    return out ? s_send_json (conn, 200, out) : s_send_error (conn, &err);
}

static enum MHD_Result
s_route (http_api_t *self, struct MHD_Connection *conn, const char *method, const char *url,
         request_t *req)
{
    if (gateway_owns (url))
        return s_gateway (self, conn, method, url, req);
    const char *rest = NULL;
    compat_handler_fn *surface = compat_lookup (self->cfg, url, &rest);
    if (surface)
        return s_compat (self, conn, method, rest, req, surface);

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
    char fid[128];
    const char *fop = NULL, *fpath = NULL;
    bool is_files = s_files_url (url, fid, sizeof fid, &fop, &fpath);
    if (!is_files && (n < 2 || strcmp (seg[0], "v1") || strcmp (seg[1], "sandboxes")))
        return s_fail (conn, 404, "not_found", "no such route");

    const char *tenant = auth_tenant (
        self->auth, MHD_lookup_connection_value (conn, MHD_HEADER_KIND, "Authorization"));
    if (!tenant)
        return s_fail (conn, 401, "unauthorized", "missing or invalid bearer token");

    if (req->too_large) {
        char msg[96];
        snprintf (msg, sizeof msg, "request body is larger than %lld bytes",
                  (long long)req->body_limit);
        return s_fail (conn, 413, "body_too_large", msg);
    }

    if (is_files) {
        if (!util_valid_id (fid))
            return s_fail (conn, 404, "not_found", "no such sandbox");
        return s_files_route (self, conn, method, tenant, fid, fop, fpath, req);
    }

    int found = -1;
    for (size_t i = 0; i < sizeof s_routes / sizeof s_routes[0]; i++)
        if (s_routes[i].nseg == n && (!s_routes[i].s3 || !strcmp (seg[3], s_routes[i].s3))
            && (!s_routes[i].s5 || !strcmp (seg[n - 1], s_routes[i].s5))) {
            found = (int)i;
            break;
        }
    if (found < 0)
        return s_fail (conn, 404, "not_found", "no such route");
    route_t route = s_routes[found].route;
    const char *id = n >= 3 ? seg[2] : NULL;
    const char *ctx = n >= 5 && route != R_GIT_CHECKOUT && route != R_PORT ? seg[4] : NULL;
    if (id && !util_valid_id (id))
        return s_fail (conn, 404, "not_found", "no such sandbox");
    if (ctx && !util_valid_id (ctx))
        return s_fail (conn, 404, "not_found", "no such context, session or process");

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
                            || route == R_CTX_RESTART || route == R_BACKUP_RESTORE;
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
            return s_exec_stream (conn, exec, false);
        out = exec ? exec_collect (exec, &err) : NULL;
        exec_destroy (&exec);
        return out ? s_send_json (conn, 200, out) : s_send_error (conn, &err);
    }
    case R_CODE: {
        code_run_t *run = contexts_run_prepare (self->ctxs, tenant, id, body, &err);
        json_decref (body);
        if (run && s_wants_sse (conn))
            return s_code_stream (conn, run, NULL);
        out = run ? contexts_run_execute (run, NULL, NULL, &err) : NULL;
        return out ? s_send_json (conn, 200, out) : s_send_error (conn, &err);
    }
    case R_NOTEBOOK_RUN:
        return s_notebook_run (self, conn, tenant, id, body);
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
    case R_ENV:
        ok = sandbox_set_env (self->mgr, tenant, id, body, &out, &err) == 0;
        break;
    case R_GIT_CHECKOUT:
        ok = git_checkout (self->mgr, tenant, id, body, &out, &err) == 0;
        status = 201;
        break;
    case R_SESSIONS:
        if (is_get)
            ok = sessions_list (self->mgr, tenant, id, &out, &err) == 0;
        else {
            ok = sessions_create (self->mgr, tenant, id, body, &out, &err) == 0;
            status = 201;
        }
        break;
    case R_SESSION:
        if (is_get)
            ok = sessions_get (self->mgr, tenant, id, ctx, &out, &err) == 0;
        else if ((ok = sessions_delete (self->mgr, tenant, id, ctx, &err) == 0))
            out = json_pack ("{s:s, s:s}", "id", ctx, "status", "deleted");
        break;
    case R_PROCESSES:
        if (is_get)
            ok = processes_list (self->mgr, tenant, id, &out, &err) == 0;
        else if (is_post) {
            ok = processes_start (self->mgr, tenant, id, body, &out, &err) == 0;
            status = 201;
        }
        else
            ok = processes_kill_all (self->mgr, tenant, id, s_query (conn, "signal"), &out, &err)
                 == 0;
        break;
    case R_PROCESS:
        if (is_get)
            ok = processes_get (self->mgr, tenant, id, ctx, &out, &err) == 0;
        else
            ok = processes_signal (self->mgr, tenant, id, ctx, s_query (conn, "signal"), &out, &err)
                 == 0;
        break;
    case R_PROCESS_LOGS:
        if (s_query_true (conn, "follow") && s_wants_sse (conn)) {
            char cid[64];
            json_t *req = processes_follow_request (self->mgr, tenant, id, ctx, cid, &err);
            exec_t *follow = req ? exec_attach (self->mgr, cid, req, &err) : NULL;
            json_decref (req);
            json_decref (body);
            return follow ? s_exec_stream (conn, follow, true) : s_send_error (conn, &err);
        }
        ok = processes_logs (self->mgr, tenant, id, ctx, &out, &err) == 0;
        break;
    /* Backups belong to the tenant, not to the sandbox in the path: list,
       get and delete work whether or not that sandbox still exists. */
    case R_BACKUPS:
        if (is_get)
            ok = backups_list (self->backups, tenant, &out, &err) == 0;
        else {
            ok = backups_create (self->backups, tenant, id, body, &out, &err) == 0;
            status = 201;
        }
        break;
    case R_BACKUP:
        if (is_get)
            ok = backups_get (self->backups, tenant, ctx, &out, &err) == 0;
        else if ((ok = backups_delete (self->backups, tenant, ctx, &err) == 0))
            out = json_pack ("{s:s, s:s}", "backup_id", ctx, "status", "deleted");
        break;
    case R_BACKUP_RESTORE:
        ok = backups_restore (self->backups, tenant, id, ctx, body, &out, &err) == 0;
        break;
    case R_PORTS:
        if (is_get)
            ok = ports_list (self->ports, tenant, id, &out, &err) == 0;
        else {
            int created = 0;
            ok = ports_expose (self->ports, tenant, id, body, &out, &created, &err) == 0;
            status = created ? 201 : 200;
        }
        break;
    case R_PORT:
        ok = ports_unexpose (self->ports, tenant, id, seg[4], &out, &err) == 0;
        break;
    case R_MOUNTS:
        if (is_get)
            ok = mounts_list (self->mounts, tenant, id, &out, &err) == 0;
        else if (is_post) {
            ok = mounts_create (self->mounts, tenant, id, body, &out, &err) == 0;
            status = 201;
        }
        else
            ok = mounts_delete (self->mounts, tenant, id, s_query (conn, "path"), &out, &err) == 0;
        break;
    }
    json_decref (body);
    return ok ? s_send_json (conn, (unsigned)status, out) : s_send_error (conn, &err);
}

/* A raw PUT to /files/PATH (anything but a JSON body) is written to
   disk as it arrives. Sets up the writer; -1 with req->upload_err when the
   request must be refused before its body is read. 0 otherwise (also when
   this is not such an upload). */
static int
s_start_upload (http_api_t *self, struct MHD_Connection *conn, const char *url, request_t *req)
{
    char id[128];
    const char *op = NULL, *path = NULL;
    if (!s_files_url (url, id, sizeof id, &op, &path) || op)
        return 0;
    const char *ctype = MHD_lookup_connection_value (conn, MHD_HEADER_KIND, "Content-Type");
    if (ctype && !strncasecmp (ctype, "application/json", 16))
        return 0; /* the JSON form {content, encoding}: buffered like any body */
    err_t *err = &req->upload_err;
    const char *tenant = auth_tenant (
        self->auth, MHD_lookup_connection_value (conn, MHD_HEADER_KIND, "Authorization"));
    if (!tenant)
        return err_set (err, 401, "unauthorized", "missing or invalid bearer token");
    if (!util_valid_id (id))
        return err_set (err, 404, "not_found", "no such sandbox");
    const char *cl = MHD_lookup_connection_value (conn, MHD_HEADER_KIND, "Content-Length");
    if (cl && strtoll (cl, NULL, 10) > self->cfg->max_upload_bytes)
        return err_set (err, 413, "body_too_large", "upload larger than %lld bytes",
                        (long long)self->cfg->max_upload_bytes);
    int mode = s_query_mode (conn);
    if (mode == -2)
        return err_set (err, 400, "invalid_field", "query 'mode': an octal mode like 0644");
    req->root = s_files_root (self, tenant, id, err);
    if (!req->root)
        return -1;
    req->writer = files_write_begin (req->root, path, s_query_true (conn, "mkdir"), mode, err);
    if (!req->writer)
        return -1;
    snprintf (req->path, sizeof req->path, "%s", path);
    return 0;
}

static enum MHD_Result
s_access (void *cls, struct MHD_Connection *conn, const char *url, const char *method,
          const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
    http_api_t *self = cls;
    request_t *req = *con_cls;
    if (!req)
        return MHD_NO; /* made by s_uri_log; only out of memory leaves it NULL */
    if (!req->seen) {
        req->seen = 1;
        req->body_limit = s_body_limit (self, url);
        /* A port proxied into a sandbox: its body streams, never buffered. */
        enum MHD_Result rc = MHD_YES;
        if (proxy_begin (self->proxy, conn, method, req->raw_uri, &req->proxy, &rc)) {
            req->responded = !req->proxy;
            return rc;
        }
        if (req->nul_in_path) {
            req->responded = 1;
            return s_fail (conn, 400, "invalid_path", "a path must not contain NUL (%00)");
        }
        if (!strcmp (method, "PUT") && s_start_upload (self, conn, url, req) < 0) {
            req->responded = 1;
            return s_send_error (conn, &req->upload_err);
        }
        if (req->writer)
            return MHD_YES;
        /* Refuse a declared oversized body before reading any of it. */
        const char *cl = MHD_lookup_connection_value (conn, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoll (cl, NULL, 10) > req->body_limit) {
            req->responded = 1;
            const char *rest = NULL;
            compat_handler_fn *surface = compat_lookup (self->cfg, url, &rest);
            if (surface) { /* refused in the surface's own shape */
                req->too_large = 1;
                return s_compat (self, conn, method, rest, req, surface);
            }
            char msg[96];
            snprintf (msg, sizeof msg, "request body is larger than %lld bytes",
                      (long long)req->body_limit);
            return s_fail (conn, 413, "body_too_large", msg);
        }
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (req->proxy) {
            proxy_body (req->proxy, upload_data, n);
            return MHD_YES;
        }
        if (req->responded || req->too_large)
            return MHD_YES;
        if (req->writer || req->upload_err.status) {
            /* Streamed to disk as it comes: memory stays bounded. */
            if (req->writer && req->uploaded + (int64_t)n > self->cfg->max_upload_bytes) {
                err_set (&req->upload_err, 413, "body_too_large", "upload larger than %lld bytes",
                         (long long)self->cfg->max_upload_bytes);
                files_write_abort (&req->writer);
            }
            if (req->writer
                && files_write_chunk (req->writer, upload_data, n, &req->upload_err) < 0)
                files_write_abort (&req->writer);
            req->uploaded += (int64_t)n;
            return MHD_YES;
        }
        if (req->len + n > (size_t)req->body_limit) {
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
    if (req->proxy)
        return proxy_finish (&req->proxy, conn);
    return s_route (self, conn, method, url, req);
}

static void
s_completed (void *cls, struct MHD_Connection *conn, void **con_cls,
             enum MHD_RequestTerminationCode toe)
{
    request_t *req = *con_cls;
    if (!req)
        return;
    /* An upload cut short leaves the old file as it was. */
    files_write_abort (&req->writer);
    files_root_close (&req->root);
    proxy_req_free (&req->proxy);
    free (req->raw_uri);
    free (req->body);
    free (req);
    *con_cls = NULL;
}

static void *
s_uri_log (void *cls, const char *uri, struct MHD_Connection *conn)
{
    /* The only place that sees the URI before it is unescaped: a %00 there
       would cut a path short once decoded into a C string. What this
       returns becomes the request's context. */
    log_debug ("request %.200s", uri);
    request_t *req = calloc (1, sizeof *req);
    if (req) {
        req->started_us = util_mono_us ();
        req->raw_uri = strdup (uri);
        const char *q = strchr (uri, '?');
        size_t n = q ? (size_t)(q - uri) : strlen (uri);
        for (size_t i = 0; i + 2 < n; i++)
            if (uri[i] == '%' && uri[i + 1] == '0' && uri[i + 2] == '0')
                req->nul_in_path = 1;
    }
    return req;
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
http_api_start (const config_t *cfg, auth_t *auth, sandbox_mgr_t *mgr, contexts_t *ctxs,
                ports_t *ports, mounts_t *mounts, err_t *err)
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
    self->backups = backups_new (cfg, mgr, err);
    if (!self->backups) {
        free (self);
        return NULL;
    }
    self->ports = ports;
    self->mounts = mounts;
    self->proxy = proxy_new (cfg, auth, ports);
    self->gateway = self->proxy ? gateway_new (cfg, mgr, ctxs, err) : NULL;
    if (!self->proxy || !self->gateway) {
        if (!self->proxy)
            err_set (err, 500, "internal", "out of memory");
        proxy_destroy (&self->proxy);
        backups_destroy (&self->backups);
        free (self);
        return NULL;
    }
    /* poll, not select: connections get descriptors above FD_SETSIZE once
       the broker holds many sandboxes (main.c raises the limit). */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL
                     | MHD_USE_ERROR_LOG | MHD_ALLOW_UPGRADE;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    self->daemon = MHD_start_daemon (flags, 0, NULL, NULL, s_access, self, MHD_OPTION_SOCK_ADDR,
                                     (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_LIMIT,
                                     (unsigned)cfg->max_connections, MHD_OPTION_CONNECTION_TIMEOUT,
                                     (unsigned)600, MHD_OPTION_NOTIFY_COMPLETED, s_completed, self,
                                     MHD_OPTION_URI_LOG_CALLBACK, s_uri_log, self, MHD_OPTION_END);
    if (!self->daemon) {
        err_set (err, 500, "internal", "cannot listen on %s (address in use?)", cfg->listen);
        gateway_destroy (&self->gateway);
        backups_destroy (&self->backups);
        proxy_destroy (&self->proxy);
        free (self);
        return NULL;
    }
    const union MHD_DaemonInfo *info
        = MHD_get_daemon_info (self->daemon, MHD_DAEMON_INFO_BIND_PORT);
    self->port = info ? info->port : 0;
    ports_set_listen_port (ports, self->port);
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
    gateway_shutdown ((*self_p)->gateway); /* open websockets end, or the stop would wait */
    MHD_stop_daemon ((*self_p)->daemon);
    gateway_destroy (&(*self_p)->gateway);
    backups_destroy (&(*self_p)->backups);
    proxy_destroy (&(*self_p)->proxy);
    free (*self_p);
    *self_p = NULL;
}
