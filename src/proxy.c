/* proxy.c - stream HTTP requests and WebSocket connections into sandboxes. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "httpmsg.h"
#include "jsonv.h"

/* Upstream response heads larger than this are refused with a 502. */
#define PROXY_HEAD_MAX (64 * 1024)
/* Response bodies are relayed in blocks of this size. */
#define PROXY_BLOCK  (64 * 1024)
#define PROXY_WS_BUF (64 * 1024)
/* Bodies up to this size are collected and sent from a buffer. */
#define PROXY_SMALL_BODY (16 * 1024)

struct _proxy_t {
    const config_t *cfg;
    auth_t *auth;
    ports_t *ports;
};

struct _proxy_req_t {
    proxy_t *proxy;
    ports_target_t target;
    int up;         /* the upstream socket inside the sandbox */
    bool reused;    /* up was kept from an earlier request: it may be stale */
    char *head_buf; /* the request head, kept to resend on a fresh connection */
    size_t head_len;
    int client_fd;   /* the client's socket, to notice it leave */
    bool chunked_up; /* the request body is re-chunked upstream */
    bool send_failed;
    bool head;    /* a HEAD request: the answer has no body */
    bool upgrade; /* a WebSocket upgrade was asked for */
    int timeout_ms;
    char id[64];
};

/* --- idle upstream connections -------------------------------------------------
   One idle upstream connection per client connection, kept for the next
   request on it (a new connection per request costs a server such as
   python's http.server an accept and a thread each time). http_api runs
   libmicrohttpd with a thread per connection, so thread-local storage is
   per client connection; the key's destructor closes the socket when that
   thread ends. A kept connection is only taken again for the same sandbox
   and port, after that request has been authorised like any other. */

typedef struct {
    int fd;
    int port;
    char cid[64];
} idle_t;

static pthread_key_t s_idle_key;
static pthread_once_t s_idle_once = PTHREAD_ONCE_INIT;

static void
s_idle_destroy (void *v)
{
    idle_t *i = v;
    if (i->fd >= 0)
        close (i->fd);
    free (i);
}

static void
s_idle_init (void)
{
    pthread_key_create (&s_idle_key, s_idle_destroy);
}

/* The kept connection to (cid, port), or -1. */
static int
s_idle_take (const char *cid, int port)
{
    pthread_once (&s_idle_once, s_idle_init);
    idle_t *i = pthread_getspecific (s_idle_key);
    if (!i || i->fd < 0)
        return -1;
    int fd = i->fd;
    i->fd = -1;
    if (i->port != port || strcmp (i->cid, cid)) {
        close (fd);
        return -1;
    }
    /* Readable while idle: the server closed it (or sent what it should
       not have). Either way it cannot carry a request. */
    struct pollfd p = { .fd = fd, .events = POLLIN };
    if (poll (&p, 1, 0) != 0) {
        close (fd);
        return -1;
    }
    return fd;
}

static void
s_idle_put (int fd, const char *cid, int port)
{
    pthread_once (&s_idle_once, s_idle_init);
    idle_t *i = pthread_getspecific (s_idle_key);
    if (!i) {
        i = calloc (1, sizeof *i);
        if (!i || pthread_setspecific (s_idle_key, i) != 0) {
            free (i);
            close (fd);
            return;
        }
        i->fd = -1;
    }
    if (i->fd >= 0)
        close (i->fd);
    i->fd = fd;
    i->port = port;
    snprintf (i->cid, sizeof i->cid, "%s", cid);
}

/* --- small helpers ---------------------------------------------------------- */

static enum MHD_Result
s_send_error (struct MHD_Connection *conn, const err_t *err)
{
    int status = err->status >= 400 && err->status < 600 ? err->status : 500;
    json_t *body = json_pack ("{s:{s:s, s:s}}", "error", "code",
                              err->code[0] ? err->code : "internal", "message", err->message);
    char *text = jsonv_dumps (body);
    json_decref (body);
    if (!text)
        return MHD_NO;
    struct MHD_Response *resp
        = MHD_create_response_from_buffer (strlen (text), text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free (text);
        return MHD_NO;
    }
    MHD_add_response_header (resp, "Content-Type", "application/json");
    MHD_add_response_header (resp, "Cache-Control", "no-store");
    enum MHD_Result rc = MHD_queue_response (conn, (unsigned)status, resp);
    MHD_destroy_response (resp);
    return rc;
}

/* Send all of buf, waiting (up to timeout_ms per stall) when the socket is
   full. 0, or -1 when the peer is gone or stalled too long. */
static int
s_send_all (int fd, const char *buf, size_t n, int timeout_ms)
{
    while (n > 0) {
        ssize_t k = send (fd, buf, n, MSG_NOSIGNAL);
        if (k > 0) {
            buf += k;
            n -= (size_t)k;
            continue;
        }
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd p = { .fd = fd, .events = POLLOUT };
            if (poll (&p, 1, timeout_ms) <= 0)
                return -1;
            continue;
        }
        return -1;
    }
    return 0;
}

/* A growing string for the request head. */
typedef struct {
    char *s;
    size_t len, cap;
    bool failed;
} sbuf_t;

static void
s_add (sbuf_t *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *g = realloc (b->s, cap);
        if (!g) {
            b->failed = true;
            return;
        }
        b->s = g;
        b->cap = cap;
    }
    memcpy (b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void
s_adds (sbuf_t *b, const char *s)
{
    s_add (b, s, strlen (s));
}

static void
s_header (sbuf_t *b, const char *name, const char *value)
{
    s_adds (b, name);
    s_add (b, ": ", 2);
    s_adds (b, value);
    s_add (b, "\r\n", 2);
}

typedef struct {
    sbuf_t *b;
    const char *connection; /* the client's Connection header */
    bool strip_auth;
    bool upgrade;
} hdr_ctx_t;

static enum MHD_Result
s_copy_header (void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    hdr_ctx_t *c = cls;
    (void)kind;
    if (!key || !value || strpbrk (key, "\r\n:") || strpbrk (value, "\r\n"))
        return MHD_YES; /* nothing that could split into two header lines */
    if (httpmsg_hop_by_hop (key) || !strcasecmp (key, "Host") || !strcasecmp (key, "Content-Length")
        || !strcasecmp (key, "Expect") || !strncasecmp (key, "X-Forwarded-", 12)
        || (c->strip_auth && !strcasecmp (key, "Authorization")))
        return MHD_YES;
    /* Headers the client named in Connection are hop-by-hop too. */
    if (c->connection && httpmsg_has_token (c->connection, key))
        return MHD_YES;
    s_header (c->b, key, value);
    return MHD_YES;
}

/* --- matching ------------------------------------------------------------------ */

/* "/v1/sandboxes/{id}/ports/{port}/rest": 1 with id, port segment and the
   upstream target (from the slash after the port on); 0 otherwise. */
static int
s_path_form (const char *uri, char *id, char *port, const char **target)
{
    static const char prefix[] = "/v1/sandboxes/";
    if (strncmp (uri, prefix, sizeof prefix - 1) != 0)
        return 0;
    const char *p = uri + sizeof prefix - 1;
    const char *slash = strchr (p, '/');
    if (!slash || slash == p || slash - p >= 64 || strncmp (slash, "/ports/", 7) != 0)
        return 0;
    memcpy (id, p, (size_t)(slash - p));
    id[slash - p] = '\0';
    const char *ps = slash + 7;
    const char *end = ps;
    while (*end && *end != '/' && *end != '?')
        end++;
    if (*end != '/' || end == ps || end - ps > 16)
        return 0; /* ".../ports/{port}" without the slash is DELETE's route */
    memcpy (port, ps, (size_t)(end - ps));
    port[end - ps] = '\0';
    *target = end;
    return 1;
}

/* --- begin --------------------------------------------------------------------- */

proxy_t *
proxy_new (const config_t *cfg, auth_t *auth, ports_t *ports)
{
    proxy_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->cfg = cfg;
    self->auth = auth;
    self->ports = ports;
    return self;
}

void
proxy_destroy (proxy_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free (*self_p);
    *self_p = NULL;
}

void
proxy_req_free (proxy_req_t **p_p)
{
    if (!p_p || !*p_p)
        return;
    if ((*p_p)->up >= 0)
        close ((*p_p)->up);
    free ((*p_p)->head_buf);
    free (*p_p);
    *p_p = NULL;
}

/* A request header's value, or NULL when absent or when it holds a line
   break (which must never reach the upstream head). */
static const char *
s_hdr (struct MHD_Connection *conn, const char *name)
{
    const char *v = MHD_lookup_connection_value (conn, MHD_HEADER_KIND, name);
    return v && !strpbrk (v, "\r\n") ? v : NULL;
}

int
proxy_begin (proxy_t *self, struct MHD_Connection *conn, const char *method, const char *raw_uri,
             proxy_req_t **out, enum MHD_Result *rc)
{
    *out = NULL;
    if (!self || !raw_uri)
        return 0;
    err_t err = { 0 };
    ports_target_t t = { 0 };
    const char *host = s_hdr (conn, "Host");
    const char *target = raw_uri;
    if (strpbrk (raw_uri, " \t\r\n"))
        return 0; /* not a request line libmicrohttpd could have parsed */
    char prefix[128] = "";
    int port = 0;
    char label[64], token[HTTPMSG_TOKEN_LEN + 1];
    int hm = httpmsg_preview_host (host, self->cfg->preview_domain, &port, label, token);
    if (hm < 0) {
        err_set (&err, 404, "not_found", "no such preview");
        goto fail;
    }
    bool path_form = false;
    if (hm == 1) {
        if (ports_target_by_host (self->ports, port, label, token, &t, &err) < 0)
            goto fail;
        if (raw_uri[0] != '/')
            target = "/"; /* an absolute-form or asterisk target: not ours to pass on */
    }
    else {
        char id[64], ps[17];
        if (!s_path_form (raw_uri, id, ps, &target))
            return 0;
        path_form = true;
        const char *tenant = auth_tenant (self->auth, s_hdr (conn, "Authorization"));
        if (!tenant) {
            err_set (&err, 401, "unauthorized", "missing or invalid bearer token");
            goto fail;
        }
        if (!util_valid_id (id)) {
            err_set (&err, 404, "not_found", "no such sandbox");
            goto fail;
        }
        if ((port = ports_parse (ps, "port", &err)) < 0)
            goto fail;
        if (ports_target_by_path (self->ports, tenant, id, port, &t, &err) < 0)
            goto fail;
        snprintf (prefix, sizeof prefix, "/v1/sandboxes/%s/ports/%d", id, port);
    }

    proxy_req_t *p = calloc (1, sizeof *p);
    if (!p) {
        err_set (&err, 500, "internal", "out of memory");
        goto fail;
    }
    p->proxy = self;
    p->up = -1;
    p->timeout_ms = (int)(self->cfg->proxy_timeout_seconds * 1000);
    snprintf (p->id, sizeof p->id, "%s", t.id);
    const union MHD_ConnectionInfo *ci
        = MHD_get_connection_info (conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    p->client_fd = ci ? ci->connect_fd : -1;
    p->head = !strcmp (method, "HEAD");
    const char *connection = s_hdr (conn, "Connection");
    const char *upgrade = s_hdr (conn, "Upgrade");
    p->upgrade = upgrade && connection && httpmsg_has_token (connection, "upgrade")
                 && httpmsg_has_token (upgrade, "websocket");
    const char *cl = s_hdr (conn, "Content-Length");
    if (cl && strspn (cl, "0123456789") != strlen (cl))
        cl = NULL; /* libmicrohttpd refuses such a request before this */
    const char *te = s_hdr (conn, "Transfer-Encoding");
    p->chunked_up = te && httpmsg_has_token (te, "chunked");
    /* A kept connection may turn out stale only once the request is on
       it; then the request is sent again on a fresh one, which is only
       possible without a body (the body streams and is not kept). */
    bool replayable = !p->upgrade && !p->chunked_up && (!cl || !strcmp (cl, "0"));
    p->target = t;
    if (replayable)
        p->up = s_idle_take (p->target.cid, port);
    p->reused = p->up >= 0;
    if (p->up < 0)
        p->up = ports_connect (self->ports, &p->target, &err);
    if (p->up < 0) {
        proxy_req_free (&p);
        goto fail;
    }

    /* The request head, as the upstream will see it. */
    sbuf_t b = { 0 };
    s_adds (&b, method);
    s_add (&b, " ", 1);
    s_adds (&b, target);
    s_adds (&b, " HTTP/1.1\r\n");
    if (host)
        s_header (&b, "Host", host);
    hdr_ctx_t hc = { &b, connection, path_form, p->upgrade };
    MHD_get_connection_values (conn, MHD_HEADER_KIND, s_copy_header, &hc);
    char ip[INET6_ADDRSTRLEN] = "";
    const union MHD_ConnectionInfo *ai
        = MHD_get_connection_info (conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ai && ai->client_addr) {
        const struct sockaddr *sa = ai->client_addr;
        if (sa->sa_family == AF_INET)
            inet_ntop (AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, ip, sizeof ip);
        else if (sa->sa_family == AF_INET6)
            inet_ntop (AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, ip, sizeof ip);
    }
    const char *xff = s_hdr (conn, "X-Forwarded-For");
    if (xff && *xff) {
        s_adds (&b, "X-Forwarded-For: ");
        s_adds (&b, xff);
        s_adds (&b, ", ");
        s_adds (&b, ip);
        s_adds (&b, "\r\n");
    }
    else if (ip[0])
        s_header (&b, "X-Forwarded-For", ip);
    if (host)
        s_header (&b, "X-Forwarded-Host", host);
    s_header (&b, "X-Forwarded-Proto", "http");
    if (prefix[0])
        s_header (&b, "X-Forwarded-Prefix", prefix);
    if (p->chunked_up)
        s_header (&b, "Transfer-Encoding", "chunked");
    else if (cl)
        s_header (&b, "Content-Length", cl);
    if (p->upgrade) {
        s_header (&b, "Connection", "Upgrade");
        s_header (&b, "Upgrade", upgrade);
    }
    s_add (&b, "\r\n", 2);
    bool sent = !b.failed && s_send_all (p->up, b.s, b.len, p->timeout_ms) == 0;
    if (!sent && !b.failed && p->reused) {
        close (p->up);
        p->reused = false;
        p->up = ports_connect (self->ports, &p->target, &err);
        if (p->up < 0) {
            free (b.s);
            proxy_req_free (&p);
            goto fail;
        }
        sent = s_send_all (p->up, b.s, b.len, p->timeout_ms) == 0;
    }
    if (!sent) {
        free (b.s);
        err_set (&err, 502, "upstream_failed",
                 "sending the request to port %d in sandbox %s failed", port, p->id);
        proxy_req_free (&p);
        goto fail;
    }
    if (p->reused) {
        p->head_buf = b.s;
        p->head_len = b.len;
    }
    else
        free (b.s);
    log_debug ("proxy: %s %.200s -> sandbox %s port %d", method, target, p->id, port);
    *out = p;
    return 1;

fail:
    *rc = s_send_error (conn, &err);
    return 1;
}

void
proxy_body (proxy_req_t *p, const char *data, size_t n)
{
    if (p->send_failed || n == 0)
        return;
    int rc = 0;
    if (p->chunked_up) {
        char size[32];
        int k = snprintf (size, sizeof size, "%zx\r\n", n);
        rc = s_send_all (p->up, size, (size_t)k, p->timeout_ms);
        if (rc == 0)
            rc = s_send_all (p->up, data, n, p->timeout_ms);
        if (rc == 0)
            rc = s_send_all (p->up, "\r\n", 2, p->timeout_ms);
    }
    else
        rc = s_send_all (p->up, data, n, p->timeout_ms);
    /* The upstream may have answered early and closed: keep reading the
       client's body (discarding it), then relay whatever it answered. */
    if (rc < 0)
        p->send_failed = true;
}

/* --- the answer ------------------------------------------------------------------ */

#define RECV_TIMEOUT (-2)
#define RECV_GONE    (-3)

/* Receive from the upstream socket, whose receives time out every second
   (see ports_connect): between slices, notice a client that left and give
   up after timeout_ms. Bytes read (0 at end of stream), -1 on an error,
   RECV_TIMEOUT or RECV_GONE. One syscall per read when data is there. */
static ssize_t
s_recv (int fd, char *buf, size_t n, int client_fd, int timeout_ms)
{
    int waited = 0;
    for (;;) {
        ssize_t k = recv (fd, buf, n, 0);
        if (k >= 0)
            return k;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -1;
        if (client_fd >= 0) {
            struct pollfd p = { .fd = client_fd, .events = POLLRDHUP };
            if (poll (&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)))
                return RECV_GONE;
        }
        waited += 1000;
        if (waited >= timeout_ms)
            return RECV_TIMEOUT;
    }
}

typedef struct {
    int up, client_fd, timeout_ms;
    char *buf; /* the head buffer: body bytes read with the head follow it */
    size_t pend_off, pend_len;
    int64_t remaining; /* Content-Length left, -1 when not length-delimited */
    bool chunked;
    bool done;
    bool keep;  /* the connection may carry another request afterwards */
    bool clean; /* the body was read to its exact end */
    int port;
    char cid[64];
    httpmsg_chunked_t dec;
} body_t;

static ssize_t
s_body_read (void *cls, uint64_t pos, char *buf, size_t max)
{
    body_t *b = cls;
    (void)pos;
    for (;;) {
        if (b->done || b->remaining == 0)
            return MHD_CONTENT_READER_END_OF_STREAM;
        size_t want = max, n;
        if (b->remaining > 0 && (uint64_t)want > (uint64_t)b->remaining)
            want = (size_t)b->remaining;
        if (b->pend_len) {
            n = b->pend_len < want ? b->pend_len : want;
            memcpy (buf, b->buf + b->pend_off, n);
            b->pend_off += n;
            b->pend_len -= n;
        }
        else {
            ssize_t k = s_recv (b->up, buf, want, b->client_fd, b->timeout_ms);
            if (k < 0)
                return MHD_CONTENT_READER_END_WITH_ERROR;
            if (k == 0) {
                /* Close-delimited bodies end here; others were cut short. */
                if (!b->chunked && b->remaining < 0)
                    return MHD_CONTENT_READER_END_OF_STREAM;
                return MHD_CONTENT_READER_END_WITH_ERROR;
            }
            n = (size_t)k;
        }
        if (b->chunked) {
            size_t used = 0;
            ssize_t d = httpmsg_chunked_decode (&b->dec, buf, n, &used);
            if (d < 0)
                return MHD_CONTENT_READER_END_WITH_ERROR;
            b->done = b->dec.done;
            b->clean = b->done && used == n && b->pend_len == 0;
            if (d == 0)
                continue;
            return d;
        }
        if (b->remaining > 0) {
            b->remaining -= (int64_t)n;
            b->clean = b->remaining == 0 && b->pend_len == 0;
        }
        return (ssize_t)n;
    }
}

static void
s_body_free (void *cls)
{
    body_t *b = cls;
    if (b->keep && b->clean)
        s_idle_put (b->up, b->cid, b->port);
    else
        close (b->up);
    free (b->buf);
    free (b);
}

typedef struct {
    int up, timeout_ms;
    char *buf;
    size_t pend_off, pend_len;
} ws_t;

/* Copy bytes both ways between the client and the upstream until either
   side closes. Runs in the connection's own thread (thread per connection),
   where blocking is allowed. */
static void
s_ws_relay (void *cls, struct MHD_Connection *conn, void *con_cls, const char *extra_in,
            size_t extra_in_size, MHD_socket sock, struct MHD_UpgradeResponseHandle *urh)
{
    ws_t *ws = cls;
    (void)conn;
    (void)con_cls;
    bool ok = true;
    if (extra_in_size && s_send_all (ws->up, extra_in, extra_in_size, ws->timeout_ms) < 0)
        ok = false;
    if (ok && ws->pend_len
        && s_send_all (sock, ws->buf + ws->pend_off, ws->pend_len, ws->timeout_ms) < 0)
        ok = false;
    free (ws->buf);
    ws->buf = malloc (PROXY_WS_BUF);
    while (ok && ws->buf) {
        struct pollfd p[2]
            = { { .fd = sock, .events = POLLIN }, { .fd = ws->up, .events = POLLIN } };
        int r = poll (p, 2, -1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            break;
        for (int i = 0; i < 2 && ok; i++) {
            if (!p[i].revents)
                continue;
            int from = i == 0 ? sock : ws->up, to = i == 0 ? ws->up : sock;
            ssize_t k = recv (from, ws->buf, PROXY_WS_BUF, MSG_DONTWAIT);
            if (k < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
                continue;
            if (k <= 0 || s_send_all (to, ws->buf, (size_t)k, ws->timeout_ms) < 0)
                ok = false;
        }
    }
    close (ws->up);
    free (ws->buf);
    free (ws);
    MHD_upgrade_action (urh, MHD_UPGRADE_ACTION_CLOSE);
}

/* Add the upstream's end-to-end headers to resp. */
static void
s_copy_response_headers (struct MHD_Response *resp, const httpmsg_head_t *h)
{
    const char *connection = NULL;
    for (int i = 0; i < h->nheaders; i++)
        if (!strcasecmp (h->headers[i].name, "Connection"))
            connection = h->headers[i].value;
    for (int i = 0; i < h->nheaders; i++) {
        const char *name = h->headers[i].name;
        if (httpmsg_hop_by_hop (name) || !strcasecmp (name, "Content-Length")
            || (connection && httpmsg_has_token (connection, name)))
            continue;
        MHD_add_response_header (resp, name, h->headers[i].value);
    }
}

enum MHD_Result
proxy_finish (proxy_req_t **p_p, struct MHD_Connection *conn)
{
    proxy_req_t *p = *p_p;
    err_t err = { 0 };
    if (p->chunked_up && !p->send_failed && s_send_all (p->up, "0\r\n\r\n", 5, p->timeout_ms) < 0)
        p->send_failed = true;

    /* Read the head (skipping 1xx interim answers but a 101). */
    char *buf = malloc (PROXY_HEAD_MAX + PROXY_SMALL_BODY);
    size_t len = 0, hl = 0;
    int interim = 0;
    httpmsg_head_t *h = malloc (sizeof *h);
    if (!buf || !h) {
        err_set (&err, 500, "internal", "out of memory");
        goto fail;
    }
    for (;;) {
        while ((hl = httpmsg_head_end (buf, len)) == 0) {
            if (len == PROXY_HEAD_MAX) {
                err_set (&err, 502, "upstream_invalid",
                         "the answer of sandbox %s has headers larger than %d KiB", p->id,
                         PROXY_HEAD_MAX / 1024);
                goto fail;
            }
            ssize_t k
                = s_recv (p->up, buf + len, PROXY_HEAD_MAX - len, p->client_fd, p->timeout_ms);
            if (k == RECV_TIMEOUT) {
                err_set (&err, 504, "upstream_timeout",
                         "the server in sandbox %s did not answer within %lld s", p->id,
                         (long long)p->proxy->cfg->proxy_timeout_seconds);
                goto fail;
            }
            if (k == RECV_GONE) {
                err_set (&err, 502, "upstream_failed", "the client left");
                goto fail;
            }
            if (k <= 0 && len == 0 && p->reused) {
                /* The kept connection was closed under us: once more on a
                   fresh one (the request had no body). */
                close (p->up);
                p->reused = false;
                p->up = ports_connect (p->proxy->ports, &p->target, &err);
                if (p->up < 0)
                    goto fail;
                if (s_send_all (p->up, p->head_buf, p->head_len, p->timeout_ms) < 0) {
                    err_set (&err, 502, "upstream_failed",
                             "sending the request to sandbox %s failed", p->id);
                    goto fail;
                }
                continue;
            }
            if (k <= 0) {
                err_set (&err, 502, "upstream_failed",
                         "the server in sandbox %s closed the connection without answering", p->id);
                goto fail;
            }
            len += (size_t)k;
        }
        char why[96];
        if (httpmsg_parse_response (buf, hl, h, why, sizeof why) < 0) {
            err_set (&err, 502, "upstream_invalid", "the answer of sandbox %s is not HTTP: %s",
                     p->id, why);
            goto fail;
        }
        if (h->status >= 200 || h->status == 101)
            break;
        if (++interim > 16) {
            err_set (&err, 502, "upstream_invalid",
                     "the server in sandbox %s sent more than 16 interim (1xx) answers", p->id);
            goto fail;
        }
        memmove (buf, buf + hl, len - hl);
        len -= hl;
    }

    if (h->status == 101) {
        if (!p->upgrade) {
            err_set (&err, 502, "upstream_invalid",
                     "the server in sandbox %s switched protocols unasked", p->id);
            goto fail;
        }
        ws_t *ws = calloc (1, sizeof *ws);
        struct MHD_Response *resp = ws ? MHD_create_response_for_upgrade (s_ws_relay, ws) : NULL;
        if (!resp) {
            free (ws);
            err_set (&err, 500, "internal", "out of memory");
            goto fail;
        }
        s_copy_response_headers (resp, h);
        const char *upgrade = "websocket";
        for (int i = 0; i < h->nheaders; i++)
            if (!strcasecmp (h->headers[i].name, "Upgrade"))
                upgrade = h->headers[i].value;
        MHD_add_response_header (resp, "Upgrade", upgrade);
        ws->up = p->up;
        ws->timeout_ms = p->timeout_ms;
        ws->buf = buf;
        ws->pend_off = hl;
        ws->pend_len = len - hl;
        p->up = -1;
        free (h);
        proxy_req_free (p_p);
        enum MHD_Result rc = MHD_queue_response (conn, 101, resp);
        MHD_destroy_response (resp);
        if (rc != MHD_YES) {
            /* The relay will never run: it owned the socket and buffer. */
            close (ws->up);
            free (ws->buf);
            free (ws);
        }
        return rc;
    }

    bool no_body = p->head || h->status == 204 || h->status == 304;
    bool keep
        = h->minor >= 1 && !h->other_coding && (no_body || h->chunked || h->content_length >= 0);
    for (int i = 0; i < h->nheaders; i++)
        if (!strcasecmp (h->headers[i].name, "Connection")
            && httpmsg_has_token (h->headers[i].value, "close"))
            keep = false;
    /* A small body that the server wrote after its head (a second segment)
       is read into the head buffer too, so that it goes out in one piece. */
    if (!no_body && !h->chunked && !h->other_coding && h->content_length >= 0
        && h->content_length <= PROXY_SMALL_BODY) {
        while (len - hl < (size_t)h->content_length) {
            ssize_t k = s_recv (p->up, buf + len, hl + (size_t)h->content_length - len,
                                p->client_fd, p->timeout_ms);
            if (k == 0)
                break; /* cut short: the streaming path below says so */
            if (k < 0) {
                err_set (&err, k == RECV_TIMEOUT ? 504 : 502,
                         k == RECV_TIMEOUT ? "upstream_timeout" : "upstream_failed",
                         "the server in sandbox %s stopped in the middle of its answer", p->id);
                goto fail;
            }
            len += (size_t)k;
        }
    }
    struct MHD_Response *resp;
    body_t *b = NULL;
    bool whole = !no_body && !h->chunked && !h->other_coding && h->content_length >= 0
                 && (uint64_t)(len - hl) >= (uint64_t)h->content_length;
    if ((no_body && !p->head) || whole) {
        /* Nothing (more) to read upstream: a plain buffer, which
           libmicrohttpd sends with the head in one go. */
        size_t blen = whole ? (size_t)h->content_length : 0;
        resp = MHD_create_response_from_buffer (blen, buf + hl, MHD_RESPMEM_MUST_COPY);
        if (!resp) {
            err_set (&err, 500, "internal", "out of memory");
            goto fail;
        }
        if (keep && len == hl + blen) {
            s_idle_put (p->up, p->target.cid, p->target.port);
            p->up = -1;
        }
    }
    else {
        b = calloc (1, sizeof *b);
        if (!b) {
            err_set (&err, 500, "internal", "out of memory");
            goto fail;
        }
        b->up = p->up;
        b->client_fd = p->client_fd;
        b->timeout_ms = p->timeout_ms;
        b->buf = buf;
        b->pend_off = hl;
        b->pend_len = len - hl;
        b->chunked = h->chunked;
        b->remaining = h->chunked || h->other_coding ? -1 : h->content_length;
        b->done = p->head;
        b->keep = keep;
        b->clean = (p->head || b->remaining == 0) && b->pend_len == 0;
        b->port = p->target.port;
        snprintf (b->cid, sizeof b->cid, "%s", p->target.cid);
        uint64_t size = b->remaining >= 0 ? (uint64_t)b->remaining : MHD_SIZE_UNKNOWN;
        /* libmicrohttpd allocates (and zeroes) the block with every
           response: a HEAD answer, which reads nothing, takes a small one. */
        resp = MHD_create_response_from_callback (size, p->head ? 1024 : PROXY_BLOCK, s_body_read,
                                                  b, s_body_free);
        if (!resp) {
            free (b);
            err_set (&err, 500, "internal", "out of memory");
            goto fail;
        }
        /* b owns the socket and the buffer now. */
        p->up = -1;
        buf = NULL;
    }
    s_copy_response_headers (resp, h);
    enum MHD_Result rc = MHD_queue_response (conn, (unsigned)h->status, resp);
    MHD_destroy_response (resp);
    free (h);
    free (buf);
    proxy_req_free (p_p);
    return rc;

fail:
    free (h);
    free (buf);
    proxy_req_free (p_p);
    return s_send_error (conn, &err);
}
