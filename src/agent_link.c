/* agent_link.c - the I/O thread between request threads and agents.

   Frontend (inproc ROUTER) messages from request threads:
     [client]["call"][cid][header][payload?]   forward to cid's agent
     [client]["done"]                          the caller closed its call
     [client]["attach"][cid][socket path][key] bind cid's ROUTER
     [client]["detach"][cid]                   close it, fail calls in flight
     [client]["stop"]                          end the thread
   Replies to a client are [client][header][payload?].

   Backend (one ROUTER per sandbox, agent connects as routing id "agent"):
     ["agent"][tag][header][payload?]
   The tag of a request is the caller's frontend identity. A reply is only
   forwarded when that caller has a call in flight to this very sandbox, so
   an agent (which shares its user with tenant code) can never write into a
   call made to another sandbox.

   Tenant code can connect to the agent socket too (same uid as the agent,
   and a read-only bind mount does not stop connect(2)). So each ROUTER is
   a ZMQ_PLAIN server: the ZAP handler below (a REP socket at
   inproc://zeromq.zap.01, polled by this thread) admits a peer only with
   cid's secret, and names it user cid. Unauthenticated peers never get a
   pipe, so none of their frames is ever read; every message is checked
   for that User-Id anyway. A monitor DISCONNECTED event carries only the
   fd, so the agent's connection is known by the fd its messages arrive
   on (ZMQ_SRCFD; it says hello right after every handshake): only that
   fd going away counts as "the agent disconnected", and until the next
   hello calls are refused as agent_unreachable (callers retry). */
#include "agent_link.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sodium.h>
#include <unistd.h>
#include <sodium.h>
#include <zmq.h>

#include "jsonv.h"

#define MAX_HEADER    (64 * 1024)
#define MAX_PAYLOAD   (1024 * 1024)
#define MAX_TAG       64
#define MAX_PARTS     8
#define MAX_CALL_MSGS 200000
#define ZAP_ENDPOINT  "inproc://zeromq.zap.01"
/* An unauthenticated peer holds a broker descriptor this long at most. */
#define HANDSHAKE_MS   5000
#define REJECT_LOG_MS  10000
#define MAX_DRAIN_MSGS 4096

typedef struct {
    char cid[64];
    char path[4096];
    void *sock; /* ROUTER the agent connects to */
    void *mon;  /* PAIR receiving the socket's disconnect events */
    char key[AGENT_KEY_HEX + 1];
    int agent_fd; /* the authenticated agent's connection, -1 when none */
    unsigned rejected;
    int64_t reject_log_ms;
} backend_t;

typedef struct {
    unsigned char client[MAX_TAG];
    size_t client_len;
    char cid[64];
    size_t bytes, msgs;
} inflight_t;

struct _agent_link_t {
    void *ctx;
    char endpoint[64];
    pthread_t thread;
    int started;
    size_t max_call_bytes;
    /* owned by the link thread */
    void *front;
    void *zap; /* REP: ZAP requests from every backend's PLAIN handshakes */
    backend_t **backends;
    size_t nbackends;
    inflight_t *inflight;
    size_t ninflight, cap_inflight;
    unsigned mon_seq;
};

struct _agent_call_t {
    agent_link_t *link;
    void *sock;
    char cid[64];
    char *header;
    char *payload;
    size_t len;
    int64_t connect_deadline;
};

/* --- message helpers ----------------------------------------------------- */

typedef struct {
    zmq_msg_t part[MAX_PARTS];
    int n;
    int overflow;
} multipart_t;

static int
s_recv_multipart (void *sock, multipart_t *m, int flags)
{
    m->n = 0;
    m->overflow = 0;
    for (;;) {
        zmq_msg_t tmp;
        zmq_msg_init (&tmp);
        if (zmq_msg_recv (&tmp, sock, flags) < 0) {
            zmq_msg_close (&tmp);
            for (int i = 0; i < m->n; i++)
                zmq_msg_close (&m->part[i]);
            m->n = 0;
            return -1;
        }
        int more = zmq_msg_more (&tmp);
        if (m->n < MAX_PARTS)
            m->part[m->n++] = tmp; /* moves ownership */
        else {
            m->overflow = 1;
            zmq_msg_close (&tmp);
        }
        if (!more)
            return 0;
        flags &= ~ZMQ_DONTWAIT;
    }
}

static void
s_close_multipart (multipart_t *m)
{
    for (int i = 0; i < m->n; i++)
        zmq_msg_close (&m->part[i]);
    m->n = 0;
}

static int
s_part_is (multipart_t *m, int i, const char *s)
{
    size_t n = strlen (s);
    return i < m->n && zmq_msg_size (&m->part[i]) == n
           && memcmp (zmq_msg_data (&m->part[i]), s, n) == 0;
}

static void
s_part_str (multipart_t *m, int i, char *buf, size_t size)
{
    size_t n = i < m->n ? zmq_msg_size (&m->part[i]) : 0;
    if (n >= size)
        n = size - 1;
    if (n)
        memcpy (buf, zmq_msg_data (&m->part[i]), n);
    buf[n] = '\0';
}

/* Send frames; the last one without SNDMORE. Returns 0 or -1/errno. */
static int
s_send_frames (void *sock, int nframes, const void *data[], const size_t sizes[])
{
    for (int i = 0; i < nframes; i++) {
        int flags = (i < nframes - 1 ? ZMQ_SNDMORE : 0);
        if (zmq_send (sock, data[i], sizes[i], flags) < 0)
            return -1;
    }
    return 0;
}

static void
s_reply_text (agent_link_t *self, const void *client, size_t client_len, const char *text)
{
    const void *d[] = { client, text };
    size_t s[] = { client_len, strlen (text) };
    s_send_frames (self->front, 2, d, s);
}

static void
s_reply_error (agent_link_t *self, const void *client, size_t client_len, const char *code,
               const char *message)
{
    json_t *h = json_pack ("{s:s, s:s, s:s}", "ev", "error", "code", code, "message", message);
    char *text = jsonv_dumps (h);
    if (text)
        s_reply_text (self, client, client_len, text);
    free (text);
    json_decref (h);
}

/* --- link thread state ---------------------------------------------------- */

static backend_t *
s_backend_find (agent_link_t *self, const char *cid, size_t *index)
{
    for (size_t i = 0; i < self->nbackends; i++)
        if (strcmp (self->backends[i]->cid, cid) == 0) {
            if (index)
                *index = i;
            return self->backends[i];
        }
    return NULL;
}

static inflight_t *
s_inflight_find (agent_link_t *self, const void *client, size_t len)
{
    for (size_t i = 0; i < self->ninflight; i++)
        if (self->inflight[i].client_len == len
            && memcmp (self->inflight[i].client, client, len) == 0)
            return &self->inflight[i];
    return NULL;
}

static void
s_inflight_remove (agent_link_t *self, inflight_t *f)
{
    size_t i = (size_t)(f - self->inflight);
    self->inflight[i] = self->inflight[--self->ninflight];
}

static int
s_inflight_add (agent_link_t *self, const void *client, size_t len, const char *cid)
{
    inflight_t *f = s_inflight_find (self, client, len);
    if (!f) {
        if (self->ninflight == self->cap_inflight) {
            size_t cap = self->cap_inflight ? self->cap_inflight * 2 : 16;
            inflight_t *grown = realloc (self->inflight, cap * sizeof *grown);
            if (!grown)
                return -1;
            self->inflight = grown;
            self->cap_inflight = cap;
        }
        f = &self->inflight[self->ninflight++];
    }
    memset (f, 0, sizeof *f);
    memcpy (f->client, client, len);
    f->client_len = len;
    snprintf (f->cid, sizeof f->cid, "%s", cid);
    return 0;
}

/* End every call in flight to cid with an error event. */
static void
s_fail_inflight (agent_link_t *self, const char *cid, const char *message)
{
    for (size_t i = 0; i < self->ninflight;) {
        inflight_t *f = &self->inflight[i];
        if (strcmp (f->cid, cid) == 0) {
            s_reply_error (self, f->client, f->client_len, "sandbox_unavailable", message);
            s_inflight_remove (self, f);
        }
        else
            i++;
    }
}

static void
s_backend_close (agent_link_t *self, size_t index)
{
    backend_t *b = self->backends[index];
    if (b->mon)
        zmq_close (b->mon);
    if (b->sock) {
        zmq_socket_monitor (b->sock, NULL, 0);
        zmq_close (b->sock);
    }
    unlink (b->path);
    sodium_memzero (b->key, sizeof b->key);
    free (b);
    self->backends[index] = self->backends[--self->nbackends];
}

static int
s_backend_open (agent_link_t *self, const char *cid, const char *path, const void *key,
                size_t key_len, char *errbuf, size_t errsize)
{
    if (key_len != AGENT_KEY_HEX) {
        snprintf (errbuf, errsize, "the agent key must be %d hex digits", AGENT_KEY_HEX);
        return -1;
    }
    size_t index;
    if (s_backend_find (self, cid, &index))
        s_backend_close (self, index);
    backend_t *b = calloc (1, sizeof *b);
    backend_t **grown = realloc (self->backends, (self->nbackends + 1) * sizeof *grown);
    if (!b || !grown) {
        free (b);
        if (grown)
            self->backends = grown;
        snprintf (errbuf, errsize, "out of memory");
        return -1;
    }
    self->backends = grown;
    snprintf (b->cid, sizeof b->cid, "%s", cid);
    snprintf (b->path, sizeof b->path, "%s", path);
    memcpy (b->key, key, AGENT_KEY_HEX);
    b->key[AGENT_KEY_HEX] = '\0';
    b->agent_fd = -1;
    b->sock = zmq_socket (self->ctx, ZMQ_ROUTER);
    int one = 1, zero = 0, hwm = 256, handshake = HANDSHAKE_MS;
    int64_t maxmsg = MAX_PAYLOAD + 4096;
    zmq_setsockopt (b->sock, ZMQ_PLAIN_SERVER, &one, sizeof one);
    zmq_setsockopt (b->sock, ZMQ_ZAP_DOMAIN, cid, strlen (cid));
    zmq_setsockopt (b->sock, ZMQ_HANDSHAKE_IVL, &handshake, sizeof handshake);
    zmq_setsockopt (b->sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    /* A reconnecting agent takes its routing id over from a connection
       not yet torn down; only authenticated peers ever get one. */
    zmq_setsockopt (b->sock, ZMQ_ROUTER_HANDOVER, &one, sizeof one);
    zmq_setsockopt (b->sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt (b->sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt (b->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    /* The directory is the broker's own; a leftover socket from a previous
       broker process is replaced. */
    unlink (path);
    char endpoint[4200];
    snprintf (endpoint, sizeof endpoint, "ipc://%s", path);
    if (zmq_bind (b->sock, endpoint) < 0) {
        snprintf (errbuf, errsize, "binding %.300s: %s", endpoint, zmq_strerror (errno));
        zmq_close (b->sock);
        sodium_memzero (b->key, sizeof b->key);
        free (b);
        return -1;
    }
    chmod (path, 0666);
    char mon_ep[64];
    snprintf (mon_ep, sizeof mon_ep, "inproc://agent-mon-%p-%u", (void *)self, self->mon_seq++);
    if (zmq_socket_monitor (b->sock, mon_ep, ZMQ_EVENT_DISCONNECTED) == 0) {
        b->mon = zmq_socket (self->ctx, ZMQ_PAIR);
        zmq_setsockopt (b->mon, ZMQ_LINGER, &zero, sizeof zero);
        if (zmq_connect (b->mon, mon_ep) < 0) {
            zmq_close (b->mon);
            b->mon = NULL;
        }
    }
    self->backends[self->nbackends++] = b;
    return 0;
}

/* --- link thread: frontend and backend handlers ---------------------------- */

static void
s_handle_front (agent_link_t *self, multipart_t *m)
{
    if (m->n < 2)
        return;
    const void *client = zmq_msg_data (&m->part[0]);
    size_t client_len = zmq_msg_size (&m->part[0]);
    if (client_len == 0 || client_len > MAX_TAG)
        return;
    char cid[64];
    s_part_str (m, 2, cid, sizeof cid);

    if (s_part_is (m, 1, "call") && (m->n == 4 || m->n == 5)) {
        backend_t *b = s_backend_find (self, cid, NULL);
        if (!b) {
            s_reply_error (self, client, client_len, "sandbox_unavailable",
                           "the sandbox is not running");
            return;
        }
        if (b->agent_fd < 0) {
            /* Not (yet, or no longer) connected: the caller retries until
               the agent's hello. Sending anyway could land in the pipe of
               a connection that is gone but not yet torn down. */
            s_reply_error (self, client, client_len, "agent_unreachable",
                           "the sandbox agent is not connected");
            return;
        }
        const void *d[4] = { "agent", client, zmq_msg_data (&m->part[3]),
                             m->n == 5 ? zmq_msg_data (&m->part[4]) : NULL };
        size_t s[4] = { 5, client_len, zmq_msg_size (&m->part[3]),
                        m->n == 5 ? zmq_msg_size (&m->part[4]) : 0 };
        if (s_send_frames (b->sock, m->n == 5 ? 4 : 3, d, s) < 0) {
            s_reply_error (self, client, client_len, "agent_unreachable",
                           errno == EHOSTUNREACH ? "the sandbox agent is not connected"
                                                 : zmq_strerror (errno));
            return;
        }
        if (s_inflight_add (self, client, client_len, cid) < 0)
            s_reply_error (self, client, client_len, "internal", "out of memory");
    }
    else if (s_part_is (m, 1, "attach") && m->n == 5) {
        char path[4096], errbuf[512];
        s_part_str (m, 3, path, sizeof path);
        if (s_backend_open (self, cid, path, zmq_msg_data (&m->part[4]), zmq_msg_size (&m->part[4]),
                            errbuf, sizeof errbuf)
            < 0)
            s_reply_text (self, client, client_len, errbuf);
        else
            s_reply_text (self, client, client_len, "ok");
    }
    else if (s_part_is (m, 1, "done") && m->n == 2) {
        /* The caller is finished with its call: forget it, so nothing more
           is forwarded to that identity. */
        inflight_t *f = s_inflight_find (self, client, client_len);
        if (f)
            s_inflight_remove (self, f);
    }
    else if (s_part_is (m, 1, "detach") && m->n == 3) {
        size_t index;
        if (s_backend_find (self, cid, &index)) {
            s_fail_inflight (self, cid, "the sandbox was stopped");
            s_backend_close (self, index);
        }
        s_reply_text (self, client, client_len, "ok");
    }
}

static void
s_handle_back (agent_link_t *self, backend_t *b, multipart_t *m)
{
    if (m->n < 2)
        return;
    /* Only the peer that passed ZAP with this sandbox's key is user cid;
       libzmq reads nothing from any other, this is the second lock. */
    const char *user = zmq_msg_gets (&m->part[1], "User-Id");
    if (!user || strcmp (user, b->cid) != 0) {
        log_warn ("agent %s: message from an unauthenticated peer dropped", b->cid);
        return;
    }
    int fd = zmq_msg_get (&m->part[1], ZMQ_SRCFD);
    if (fd >= 0 && fd != b->agent_fd) {
        if (b->agent_fd < 0)
            log_info ("sandbox %s: agent connected", b->cid);
        b->agent_fd = fd;
    }
    if (m->overflow || m->n < 3 || m->n > 4 || !s_part_is (m, 0, "agent"))
        return; /* not our protocol: drop */
    size_t tag_len = zmq_msg_size (&m->part[1]);
    size_t header_len = zmq_msg_size (&m->part[2]);
    if (tag_len == 0 || tag_len > MAX_TAG)
        return; /* unsolicited (hello) or junk */
    inflight_t *f = s_inflight_find (self, zmq_msg_data (&m->part[1]), tag_len);
    if (!f || strcmp (f->cid, b->cid) != 0) {
        log_debug ("agent %s: reply for an unknown call dropped", b->cid);
        return;
    }
    if (header_len == 0 || header_len > MAX_HEADER) {
        log_warn ("agent %s: oversized or empty header dropped", b->cid);
        return;
    }
    json_t *h = json_loadb (zmq_msg_data (&m->part[2]), header_len, 0, NULL);
    const char *ev = json_is_object (h) ? json_string_value (json_object_get (h, "ev")) : NULL;
    if (!ev) {
        log_warn ("agent %s: malformed event dropped", b->cid);
        json_decref (h);
        return;
    }
    size_t payload_len = m->n == 4 ? zmq_msg_size (&m->part[3]) : 0;
    /* The last event of a reply, by name (docs/agent-protocol.md); a call
       can also be ended by its caller ("done"). */
    static const char *const last[]
        = { "exit", "error", "pong", "ok", "state", "sessions", "proc", "procs", "logs_end" };
    int terminal = 0;
    for (size_t i = 0; i < sizeof last / sizeof last[0] && !terminal; i++)
        terminal = !strcmp (ev, last[i]);
    f->bytes += header_len + payload_len;
    f->msgs++;
    if (!terminal && (f->bytes > self->max_call_bytes || f->msgs > MAX_CALL_MSGS)) {
        json_decref (h);
        return; /* the agent ignores its own caps: stop passing its output on */
    }
    const void *d[3] = { f->client, zmq_msg_data (&m->part[2]),
                         payload_len ? zmq_msg_data (&m->part[3]) : NULL };
    size_t s[3] = { f->client_len, header_len, payload_len };
    s_send_frames (self->front, payload_len ? 3 : 2, d, s);
    if (terminal)
        s_inflight_remove (self, f);
    json_decref (h);
}

/* Answer one ZAP request (rfc.zeromq.org/spec/27): [version][request id]
   [domain][address][identity][mechanism][credentials...]. A peer passes
   only with mechanism PLAIN, user "agent" and the key of the backend named
   by the domain, compared in constant time; it is then known as user cid.
   Every request gets a reply, or libzmq would stall that handshake. */
static void
s_handle_zap (agent_link_t *self)
{
    multipart_t m;
    if (s_recv_multipart (self->zap, &m, ZMQ_DONTWAIT) < 0)
        return;
    char domain[64], address[128];
    s_part_str (&m, 2, domain, sizeof domain);
    s_part_str (&m, 3, address, sizeof address);
    backend_t *b = NULL;
    if (!m.overflow && m.n == 8 && s_part_is (&m, 0, "1.0") && s_part_is (&m, 5, "PLAIN")
        && zmq_msg_size (&m.part[2]) < sizeof domain)
        b = s_backend_find (self, domain, NULL);
    bool ok = b && s_part_is (&m, 6, "agent") && zmq_msg_size (&m.part[7]) == AGENT_KEY_HEX
              && sodium_memcmp (zmq_msg_data (&m.part[7]), b->key, AGENT_KEY_HEX) == 0;
    if (!ok && b) {
        /* Tenant code can knock as often as it likes: log a summary. */
        b->rejected++;
        int64_t now = util_mono_ms ();
        if (now - b->reject_log_ms >= REJECT_LOG_MS) {
            log_warn ("sandbox %s: rejected %u unauthenticated peer(s) on the agent socket "
                      "(last from uid:gid:pid %s)",
                      b->cid, b->rejected, address);
            b->rejected = 0;
            b->reject_log_ms = now;
        }
    }
    const void *d[6] = { "1.0",
                         m.n > 1 ? zmq_msg_data (&m.part[1]) : "",
                         ok ? "200" : "400",
                         ok ? "OK" : "not the sandbox agent",
                         ok ? b->cid : "",
                         "" };
    size_t s[6] = {
        3, m.n > 1 ? zmq_msg_size (&m.part[1]) : 0, 3, ok ? 2 : 21, ok ? strlen (b->cid) : 0, 0
    };
    s_send_frames (self->zap, 6, d, s);
    s_close_multipart (&m);
}

/* Read what the backend has queued, up to a bound. */
static void
s_drain_back (agent_link_t *self, backend_t *b, int max)
{
    for (int k = 0; k < max; k++) {
        multipart_t m;
        if (s_recv_multipart (b->sock, &m, ZMQ_DONTWAIT) < 0)
            break;
        s_handle_back (self, b, &m);
        s_close_multipart (&m);
    }
}

/* One monitor event: [event u16, value u32][endpoint]. Only the
   authenticated agent's connection closing fails the calls in flight; a
   peer that failed (or never tried) the handshake changes nothing. */
static void
s_handle_mon (agent_link_t *self, backend_t *b)
{
    multipart_t m;
    if (s_recv_multipart (b->mon, &m, ZMQ_DONTWAIT) < 0)
        return;
    uint16_t event = 0;
    uint32_t value = 0;
    if (m.n >= 1 && zmq_msg_size (&m.part[0]) == 6) {
        memcpy (&event, zmq_msg_data (&m.part[0]), sizeof event);
        memcpy (&value, (char *)zmq_msg_data (&m.part[0]) + 2, sizeof value);
    }
    s_close_multipart (&m);
    if (event != ZMQ_EVENT_DISCONNECTED)
        return;
    /* libzmq flushed the connection's last messages before it reported
       the disconnect: read them first, so a late message cannot name an
       fd that is already gone (and may be reused by the next peer). */
    s_drain_back (self, b, MAX_DRAIN_MSGS);
    if (b->agent_fd < 0 || (int)value != b->agent_fd) {
        log_debug ("sandbox %s: a peer that was not the agent went away", b->cid);
        return;
    }
    b->agent_fd = -1;
    log_info ("sandbox %s: agent disconnected", b->cid);
    s_fail_inflight (self, b->cid, "the sandbox agent disconnected");
}

static void *
s_thread (void *arg)
{
    agent_link_t *self = arg;
    zmq_pollitem_t *items = NULL;
    size_t cap = 0;
    for (;;) {
        size_t n = 2 + 2 * self->nbackends;
        if (n > cap) {
            zmq_pollitem_t *grown = realloc (items, n * sizeof *grown);
            if (!grown) {
                usleep (10000);
                continue;
            }
            items = grown;
            cap = n;
        }
        items[0] = (zmq_pollitem_t){ self->front, 0, ZMQ_POLLIN, 0 };
        items[1] = (zmq_pollitem_t){ self->zap, 0, ZMQ_POLLIN, 0 };
        for (size_t i = 0; i < self->nbackends; i++) {
            items[2 + 2 * i] = (zmq_pollitem_t){ self->backends[i]->sock, 0, ZMQ_POLLIN, 0 };
            items[3 + 2 * i] = (zmq_pollitem_t){ self->backends[i]->mon, 0,
                                                 self->backends[i]->mon ? ZMQ_POLLIN : 0, 0 };
        }
        if (zmq_poll (items, (int)n, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (items[1].revents & ZMQ_POLLIN)
            for (int k = 0; k < 64; k++)
                s_handle_zap (self);
        /* Backends first, front last: the front may add or remove backends. */
        for (size_t i = 0; i < self->nbackends && 3 + 2 * i < n; i++) {
            backend_t *b = self->backends[i];
            if (items[2 + 2 * i].revents & ZMQ_POLLIN)
                s_drain_back (self, b, 64);
            if (b->mon && (items[3 + 2 * i].revents & ZMQ_POLLIN))
                for (int k = 0; k < 64; k++)
                    s_handle_mon (self, b);
        }
        if (items[0].revents & ZMQ_POLLIN) {
            int stop = 0;
            for (int k = 0; k < 64 && !stop; k++) {
                multipart_t m;
                if (s_recv_multipart (self->front, &m, ZMQ_DONTWAIT) < 0)
                    break;
                if (s_part_is (&m, 1, "stop")) {
                    stop = 1;
                    if (m.n >= 1)
                        s_reply_text (self, zmq_msg_data (&m.part[0]), zmq_msg_size (&m.part[0]),
                                      "ok");
                }
                else
                    s_handle_front (self, &m);
                s_close_multipart (&m);
            }
            if (stop)
                break;
        }
    }
    free (items);
    while (self->nbackends > 0)
        s_backend_close (self, 0);
    return NULL;
}

/* --- public API ------------------------------------------------------------ */

static void *
s_client_socket (agent_link_t *self)
{
    void *sock = zmq_socket (self->ctx, ZMQ_DEALER);
    if (!sock)
        return NULL;
    int zero = 0;
    zmq_setsockopt (sock, ZMQ_LINGER, &zero, sizeof zero);
    /* The identity is the tag the agent echoes. ZeroMQ's own identities
       follow the same sequence in every broker process, so a call of a
       restarted broker would get the events of the previous process's
       call with the same number (e.g. the exit of a command it started):
       use random ones. A first byte of 0 is reserved to ZeroMQ. */
    unsigned char id[16];
    randombytes_buf (id, sizeof id);
    id[0] |= 0x80;
    zmq_setsockopt (sock, ZMQ_ROUTING_ID, id, sizeof id);
    if (zmq_connect (sock, self->endpoint) < 0) {
        zmq_close (sock);
        return NULL;
    }
    return sock;
}

/* A synchronous control exchange with the link thread. Returns the reply
   text in buf ("ok" on success). */
static int
s_control (agent_link_t *self, int nframes, const void *d[], const size_t s[], char *buf,
           size_t size)
{
    void *sock = s_client_socket (self);
    if (!sock) {
        snprintf (buf, size, "cannot reach the agent link");
        return -1;
    }
    int rc = -1;
    if (s_send_frames (sock, nframes, d, s) == 0) {
        int n = zmq_recv (sock, buf, size - 1, 0);
        if (n >= 0) {
            buf[(size_t)n < size - 1 ? (size_t)n : size - 1] = '\0';
            rc = strcmp (buf, "ok") == 0 ? 0 : -1;
        }
    }
    zmq_close (sock);
    return rc;
}

agent_link_t *
agent_link_new (size_t max_call_bytes, err_t *err)
{
    agent_link_t *self = calloc (1, sizeof *self);
    if (!self) {
        err_set (err, 500, "internal", "out of memory");
        return NULL;
    }
    self->max_call_bytes = max_call_bytes;
    self->ctx = zmq_ctx_new ();
    snprintf (self->endpoint, sizeof self->endpoint, "inproc://agent-link-%p", (void *)self);
    self->front = zmq_socket (self->ctx, ZMQ_ROUTER);
    int zero = 0, one = 1;
    zmq_setsockopt (self->front, ZMQ_LINGER, &zero, sizeof zero);
    /* Never drop silently towards a caller: the per-call byte cap bounds
       what can queue up for one that reads slowly. */
    zmq_setsockopt (self->front, ZMQ_SNDHWM, &zero, sizeof zero);
    zmq_setsockopt (self->front, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    /* The ZAP handler must be bound before any PLAIN handshake starts. */
    self->zap = zmq_socket (self->ctx, ZMQ_REP);
    zmq_setsockopt (self->zap, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_bind (self->front, self->endpoint) < 0 || zmq_bind (self->zap, ZAP_ENDPOINT) < 0
        || pthread_create (&self->thread, NULL, s_thread, self) != 0) {
        err_set (err, 500, "internal", "starting the agent link: %s", zmq_strerror (errno));
        zmq_close (self->zap);
        zmq_close (self->front);
        zmq_ctx_term (self->ctx);
        free (self);
        return NULL;
    }
    self->started = 1;
    return self;
}

void
agent_link_destroy (agent_link_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    agent_link_t *self = *self_p;
    if (self->started) {
        const void *d[] = { "stop" };
        size_t s[] = { 4 };
        char buf[16];
        s_control (self, 1, d, s, buf, sizeof buf);
        pthread_join (self->thread, NULL);
    }
    zmq_close (self->zap);
    zmq_close (self->front);
    zmq_ctx_term (self->ctx);
    free (self->backends);
    free (self->inflight);
    free (self);
    *self_p = NULL;
}

int
agent_link_attach (agent_link_t *self, const char *cid, const char *sock_path, const char *key,
                   err_t *err)
{
    const void *d[] = { "attach", cid, sock_path, key };
    size_t s[] = { 6, strlen (cid), strlen (sock_path), strlen (key) };
    char buf[512];
    if (s_control (self, 4, d, s, buf, sizeof buf) < 0)
        return err_set (err, 500, "internal", "agent socket for %s: %s", cid, buf);
    return 0;
}

void
agent_link_detach (agent_link_t *self, const char *cid)
{
    const void *d[] = { "detach", cid };
    size_t s[] = { 6, strlen (cid) };
    char buf[64];
    s_control (self, 2, d, s, buf, sizeof buf);
}

static int
s_call_send (agent_call_t *self)
{
    const void *d[] = { "call", self->cid, self->header, self->payload };
    size_t s[] = { 4, strlen (self->cid), strlen (self->header), self->len };
    return s_send_frames (self->sock, self->payload ? 4 : 3, d, s);
}

agent_call_t *
agent_call_new (agent_link_t *self, const char *cid, json_t *header, const void *payload,
                size_t len, int connect_wait_ms, err_t *err)
{
    agent_call_t *call = calloc (1, sizeof *call);
    if (!call) {
        err_set (err, 500, "internal", "out of memory");
        return NULL;
    }
    call->link = self;
    snprintf (call->cid, sizeof call->cid, "%s", cid);
    call->header = jsonv_dumps (header);
    if (payload) {
        call->payload = malloc (len ? len : 1);
        if (call->payload)
            memcpy (call->payload, payload, len);
        call->len = len;
    }
    call->connect_deadline = util_mono_ms () + connect_wait_ms;
    call->sock = s_client_socket (self);
    if (!call->header || (payload && !call->payload) || !call->sock || s_call_send (call) < 0) {
        err_set (err, 500, "internal", "sending to the sandbox agent failed");
        agent_call_destroy (&call);
        return NULL;
    }
    return call;
}

int
agent_call_recv (agent_call_t *self, int timeout_ms, json_t **header, char **payload, size_t *len,
                 err_t *err)
{
    int64_t deadline = timeout_ms < 0 ? -1 : util_mono_ms () + timeout_ms;
    for (;;) {
        int wait = -1;
        if (deadline >= 0) {
            int64_t left = deadline - util_mono_ms ();
            wait = left > 0 ? (int)left : 0;
        }
        zmq_pollitem_t item = { self->sock, 0, ZMQ_POLLIN, 0 };
        int rc = zmq_poll (&item, 1, wait);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc < 0)
            return err_set (err, 500, "internal", "agent link poll: %s", zmq_strerror (errno));
        if (rc == 0)
            return 0;
        multipart_t m;
        if (s_recv_multipart (self->sock, &m, ZMQ_DONTWAIT) < 0)
            continue;
        if (m.n < 1 || m.n > 2) {
            s_close_multipart (&m);
            continue;
        }
        json_t *h = json_loadb (zmq_msg_data (&m.part[0]), zmq_msg_size (&m.part[0]), 0, NULL);
        const char *ev = json_is_object (h) ? json_string_value (json_object_get (h, "ev")) : NULL;
        if (!ev) {
            json_decref (h);
            s_close_multipart (&m);
            continue;
        }
        const char *code = json_string_value (json_object_get (h, "code"));
        if (!strcmp (ev, "error") && code && !strcmp (code, "agent_unreachable")
            && util_mono_ms () < self->connect_deadline) {
            /* Not connected yet: try again shortly. */
            json_decref (h);
            s_close_multipart (&m);
            usleep (20000);
            if (s_call_send (self) < 0)
                return err_set (err, 500, "internal", "sending to the sandbox agent failed");
            continue;
        }
        *header = h;
        *payload = NULL;
        *len = 0;
        if (m.n == 2) {
            size_t n = zmq_msg_size (&m.part[1]);
            *payload = malloc (n ? n : 1);
            if (!*payload) {
                json_decref (h);
                s_close_multipart (&m);
                return err_set (err, 500, "internal", "out of memory");
            }
            memcpy (*payload, zmq_msg_data (&m.part[1]), n);
            *len = n;
        }
        s_close_multipart (&m);
        return 1;
    }
}

int
agent_call_fd (agent_call_t *self)
{
    int fd = -1;
    size_t size = sizeof fd;
    zmq_getsockopt (self->sock, ZMQ_FD, &fd, &size);
    return fd;
}

void *
agent_call_socket (agent_call_t *self)
{
    return self->sock;
}

void
agent_call_destroy (agent_call_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    agent_call_t *self = *self_p;
    if (self->sock) {
        /* inproc hands the message over at once, so LINGER 0 keeps it. */
        zmq_send (self->sock, "done", 4, ZMQ_DONTWAIT);
        zmq_close (self->sock);
    }
    free (self->header);
    free (self->payload);
    free (self);
    *self_p = NULL;
}

int
agent_link_ping (agent_link_t *self, const char *cid, int timeout_ms, err_t *err)
{
    json_t *h = json_pack ("{s:s}", "op", "ping");
    agent_call_t *call = agent_call_new (self, cid, h, NULL, 0, timeout_ms, err);
    json_decref (h);
    if (!call)
        return -1;
    int64_t deadline = util_mono_ms () + timeout_ms;
    int rc = -1;
    for (;;) {
        int64_t left = deadline - util_mono_ms ();
        json_t *ev = NULL;
        char *payload = NULL;
        size_t len;
        int got = agent_call_recv (call, left > 0 ? (int)left : 0, &ev, &payload, &len, err);
        free (payload);
        if (got <= 0) {
            if (got == 0)
                err_set (err, 503, "sandbox_unavailable", "the sandbox agent did not answer");
            break;
        }
        const char *name = json_string_value (json_object_get (ev, "ev"));
        if (!strcmp (name, "pong")) {
            json_decref (ev);
            rc = 0;
            break;
        }
        if (!strcmp (name, "error")) {
            const char *msg = json_string_value (json_object_get (ev, "message"));
            err_set (err, 503, "sandbox_unavailable", "sandbox agent: %s", msg ? msg : "error");
            json_decref (ev);
            break;
        }
        json_decref (ev);
    }
    agent_call_destroy (&call);
    return rc;
}

int
agent_error_to_err (json_t *event, err_t *err)
{
    static const struct {
        const char *code;
        int status;
    } map[] = { { "not_found", 404 },
                { "exists", 409 },
                { "busy", 429 },
                { "bad_request", 400 },
                { "bad_cwd", 422 },
                { "not_running", 409 },
                { "exec_failed", 500 },
                { "sandbox_unavailable", 503 },
                { "agent_unreachable", 503 } };
    const char *code = json_string_value (json_object_get (event, "code"));
    const char *msg = json_string_value (json_object_get (event, "message"));
    int status = 500;
    for (size_t i = 0; code && i < sizeof map / sizeof map[0]; i++)
        if (!strcmp (code, map[i].code))
            status = map[i].status;
    if (status == 503)
        code = "sandbox_unavailable";
    return err_set (err, status, status == 500 ? "internal" : code, "%.400s",
                    msg ? msg : "the sandbox agent refused the request");
}

json_t *
agent_link_request (agent_link_t *self, const char *cid, json_t *req, int timeout_ms, err_t *err)
{
    agent_call_t *call = agent_call_new (self, cid, req, NULL, 0, 3000, err);
    if (!call)
        return NULL;
    json_t *h = NULL;
    char *data = NULL;
    size_t len = 0;
    int got = agent_call_recv (call, timeout_ms, &h, &data, &len, err);
    free (data);
    agent_call_destroy (&call);
    if (got == 0)
        err_set (err, 503, "sandbox_unavailable", "the sandbox agent did not answer");
    if (got <= 0)
        return NULL;
    if (!strcmp (json_string_value (json_object_get (h, "ev")), "error")) {
        agent_error_to_err (h, err);
        json_decref (h);
        return NULL;
    }
    return h;
}

json_t *
agent_link_collect (agent_link_t *self, const char *cid, json_t *req, const char *final_ev,
                    int timeout_ms, err_t *err)
{
    agent_call_t *call = agent_call_new (self, cid, req, NULL, 0, 3000, err);
    if (!call)
        return NULL;
    json_t *events = json_array ();
    int64_t deadline = util_mono_ms () + timeout_ms;
    for (;;) {
        int64_t left = deadline - util_mono_ms ();
        json_t *h = NULL;
        char *data = NULL;
        size_t len = 0;
        int got = agent_call_recv (call, left > 0 ? (int)left : 0, &h, &data, &len, err);
        free (data);
        if (got <= 0) {
            if (got == 0)
                err_set (err, 503, "sandbox_unavailable", "the sandbox agent did not answer");
            json_decref (events);
            events = NULL;
            break;
        }
        const char *ev = json_string_value (json_object_get (h, "ev"));
        if (!strcmp (ev, "error")) {
            agent_error_to_err (h, err);
            json_decref (h);
            json_decref (events);
            events = NULL;
            break;
        }
        bool last = !strcmp (ev, final_ev);
        if (json_array_size (events) < 100000)
            json_array_append_new (events, h);
        else
            json_decref (h);
        if (last)
            break;
    }
    agent_call_destroy (&call);
    return events;
}

int
agent_call_send (agent_call_t *self, json_t *header, err_t *err)
{
    char *text = jsonv_dumps (header);
    if (!text)
        return err_set (err, 500, "internal", "out of memory");
    const void *d[] = { "call", self->cid, text };
    size_t s[] = { 4, strlen (self->cid), strlen (text) };
    int rc = s_send_frames (self->sock, 3, d, s);
    free (text);
    return rc < 0 ? err_set (err, 500, "internal", "sending to the sandbox agent failed") : 0;
}
