/* httpc.c - a small blocking HTTP/1.1 client over TCP (see httpc.h).

   Every wait for the network is a poll() in 200 ms slices, so that a caller
   can be interrupted (the stop flag set by a signal handler) and can redraw
   a progress display (the tick) while a long notebook cell runs. The server
   is not trusted with sizes: header lines, the header block, chunk sizes,
   bodies and events are all bounded. */
#include "httpc.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HEAD_MAX  (64 * 1024)
#define LINE_MAX_ (8 * 1024)
#define SLICE_MS  200

struct _httpc_t {
    int fd;
    int timeout_ms;
    volatile sig_atomic_t *stop;
    httpc_tick_fn *tick;
    void *tick_cls;
    char host_header[300];
    char prefix[1024];
    char err[512];
    /* raw bytes received and not consumed yet */
    char buf[64 * 1024];
    size_t off, len;
    bool peer_closed;
    /* response */
    int status;
    char content_type[128];
    bool chunked;
    int64_t content_length; /* -1: read to close */
    int64_t body_left;      /* of the body (Content-Length) or of the chunk */
    bool need_crlf;         /* after a chunk's data */
    bool body_done;
    /* SSE line assembly */
    char *acc;
    size_t acc_len, acc_cap;
};

static int
s_fail (httpc_t *self, const char *fmt, ...)
{
    va_list ap;
    va_start (ap, fmt);
    vsnprintf (self->err, sizeof self->err, fmt, ap);
    va_end (ap);
    return -1;
}

static int64_t
s_mono_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int
httpc_url_parse (const char *url, httpc_url_t *u, char *err, size_t errlen)
{
    memset (u, 0, sizeof *u);
    if (!strncasecmp (url, "https://", 8)) {
        snprintf (err, errlen,
                  "'%s': https is not supported; reach the broker over http (e.g. through an "
                  "SSH tunnel or a TLS-terminating proxy on this machine)",
                  url);
        return -1;
    }
    if (strncasecmp (url, "http://", 7) != 0) {
        snprintf (err, errlen, "'%s': the URL must start with http://", url);
        return -1;
    }
    const char *p = url + 7;
    const char *host_end;
    const char *rest;
    if (*p == '[') {
        host_end = strchr (p, ']');
        if (!host_end) {
            snprintf (err, errlen, "'%s': unterminated [ in the host", url);
            return -1;
        }
        p++;
        rest = host_end + 1;
    }
    else {
        host_end = p + strcspn (p, ":/?#");
        rest = host_end;
    }
    size_t hl = (size_t)(host_end - p);
    if (hl == 0 || hl >= sizeof u->host) {
        snprintf (err, errlen, "'%s': no host, or a host over 255 characters", url);
        return -1;
    }
    memcpy (u->host, p, hl);
    strcpy (u->port, "80");
    if (*rest == ':') {
        rest++;
        size_t pl = strspn (rest, "0123456789");
        long port = pl && pl < 6 ? strtol (rest, NULL, 10) : 0;
        if (port < 1 || port > 65535) {
            snprintf (err, errlen, "'%s': the port must be a number from 1 to 65535", url);
            return -1;
        }
        snprintf (u->port, sizeof u->port, "%ld", port);
        rest += pl;
    }
    if (*rest && *rest != '/') {
        snprintf (err, errlen, "'%s': unexpected '%c' after the host", url, *rest);
        return -1;
    }
    size_t rl = strlen (rest);
    while (rl > 0 && rest[rl - 1] == '/')
        rl--;
    if (rl >= sizeof u->prefix || memchr (rest, '?', rl) || memchr (rest, '#', rl)) {
        snprintf (err, errlen, "'%s': the URL path must be a plain prefix under 1 KiB", url);
        return -1;
    }
    for (size_t i = 0; i < rl; i++)
        if ((unsigned char)rest[i] <= ' ' || rest[i] == 0x7f) {
            snprintf (err, errlen, "'%s': white space or a control character in the URL", url);
            return -1;
        }
    memcpy (u->prefix, rest, rl);
    return 0;
}

/* Wait until fd is ready for events. 0 when ready, -1 on timeout, stop or
   error (the message set). */
static int
s_wait (httpc_t *self, short events, const char *doing)
{
    int64_t deadline = s_mono_ms () + self->timeout_ms;
    for (;;) {
        if (self->stop && *self->stop)
            return s_fail (self, "interrupted");
        int64_t left = deadline - s_mono_ms ();
        if (left <= 0)
            return s_fail (self, "timed out after %d s %s", self->timeout_ms / 1000, doing);
        struct pollfd pfd = { .fd = self->fd, .events = events };
        int n = poll (&pfd, 1, left < SLICE_MS ? (int)left : SLICE_MS);
        if (n < 0 && errno != EINTR)
            return s_fail (self, "poll: %s", strerror (errno));
        if (n > 0)
            return 0;
        if (self->tick)
            self->tick (self->tick_cls);
    }
}

httpc_t *
httpc_connect (const httpc_url_t *u, int timeout_ms, volatile sig_atomic_t *stop, char *err,
               size_t errlen)
{
    httpc_t *self = calloc (1, sizeof *self);
    if (!self) {
        snprintf (err, errlen, "out of memory");
        return NULL;
    }
    self->fd = -1;
    self->timeout_ms = timeout_ms;
    self->stop = stop;
    bool v6 = strchr (u->host, ':') != NULL;
    if (strcmp (u->port, "80") == 0)
        snprintf (self->host_header, sizeof self->host_header, v6 ? "[%s]" : "%s", u->host);
    else
        snprintf (self->host_header, sizeof self->host_header, v6 ? "[%s]:%s" : "%s:%s", u->host,
                  u->port);
    snprintf (self->prefix, sizeof self->prefix, "%s", u->prefix);

    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
    struct addrinfo *res = NULL;
    int gai = getaddrinfo (u->host, u->port, &hints, &res);
    if (gai != 0) {
        snprintf (err, errlen, "cannot resolve %s: %s", u->host, gai_strerror (gai));
        free (self);
        return NULL;
    }
    char last[600] = "no address";
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = socket (ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                         ai->ai_protocol);
        if (fd < 0) {
            snprintf (last, sizeof last, "socket: %s", strerror (errno));
            continue;
        }
        self->fd = fd;
        if (connect (fd, ai->ai_addr, ai->ai_addrlen) == 0
            || (errno == EINPROGRESS && s_wait (self, POLLOUT, "connecting") == 0)) {
            int soerr = 0;
            socklen_t sl = sizeof soerr;
            getsockopt (fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
            if (soerr == 0)
                break;
            snprintf (last, sizeof last, "%s", strerror (soerr));
        }
        else if (errno != EINPROGRESS) {
            snprintf (last, sizeof last, "%s", strerror (errno));
        }
        else {
            snprintf (last, sizeof last, "%s", self->err);
        }
        close (fd);
        self->fd = -1;
        if (stop && *stop)
            break;
    }
    freeaddrinfo (res);
    if (self->fd < 0) {
        snprintf (err, errlen, "cannot connect to %s: %s", self->host_header, last);
        free (self);
        return NULL;
    }
    return self;
}

void
httpc_destroy (httpc_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    httpc_t *self = *self_p;
    if (self->fd >= 0)
        close (self->fd);
    free (self->acc);
    free (self);
    *self_p = NULL;
}

void
httpc_set_timeout (httpc_t *self, int timeout_ms)
{
    self->timeout_ms = timeout_ms;
}

void
httpc_set_tick (httpc_t *self, httpc_tick_fn *tick, void *cls)
{
    self->tick = tick;
    self->tick_cls = cls;
}

const char *
httpc_error (httpc_t *self)
{
    return self->err;
}

static int
s_send_all (httpc_t *self, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send (self->fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (s_wait (self, POLLOUT, "sending the request") < 0)
                return -1;
            continue;
        }
        return s_fail (self, "sending the request: %s",
                       w < 0 ? strerror (errno) : "connection closed");
    }
    return 0;
}

int
httpc_request (httpc_t *self, const char *method, const char *path, const char *headers,
               const char *token, const void *body, int body_fd, int64_t len)
{
    char head[4096];
    int n = snprintf (head, sizeof head,
                      "%s %s%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: sandboxd-run/" PACKAGE_VERSION
                      "\r\nConnection: close\r\n%s%s%s%s",
                      method, self->prefix, path, self->host_header,
                      token ? "Authorization: Bearer " : "", token ? token : "",
                      token ? "\r\n" : "", headers ? headers : "");
    if (n < 0 || (size_t)n >= sizeof head - 64)
        return s_fail (self, "request head too long");
    if (len > 0 || strcmp (method, "POST") == 0 || strcmp (method, "PUT") == 0
        || strcmp (method, "PATCH") == 0)
        n += snprintf (head + n, sizeof head - (size_t)n, "Content-Length: %lld\r\n",
                       (long long)len);
    n += snprintf (head + n, sizeof head - (size_t)n, "\r\n");
    if (s_send_all (self, head, (size_t)n) < 0)
        return -1;
    if (body_fd < 0)
        return len > 0 ? s_send_all (self, body, (size_t)len) : 0;
    char chunk[64 * 1024];
    int64_t left = len;
    while (left > 0) {
        ssize_t r
            = read (body_fd, chunk, left < (int64_t)sizeof chunk ? (size_t)left : sizeof chunk);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return s_fail (self, "reading the file to upload: %s",
                           r < 0 ? strerror (errno) : "it became shorter while being sent");
        if (s_send_all (self, chunk, (size_t)r) < 0)
            return -1;
        left -= r;
    }
    return 0;
}

/* Read more raw bytes into buf. 1 when bytes came, 0 when the peer closed,
   -1 on error. */
static int
s_fill (httpc_t *self)
{
    if (self->off > 0) {
        memmove (self->buf, self->buf + self->off, self->len - self->off);
        self->len -= self->off;
        self->off = 0;
    }
    if (self->len == sizeof self->buf)
        return s_fail (self, "internal: read buffer full");
    if (self->peer_closed)
        return 0;
    for (;;) {
        ssize_t r = recv (self->fd, self->buf + self->len, sizeof self->buf - self->len, 0);
        if (r > 0) {
            self->len += (size_t)r;
            return 1;
        }
        if (r == 0) {
            self->peer_closed = true;
            return 0;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (s_wait (self, POLLIN, "waiting for the broker") < 0)
                return -1;
            continue;
        }
        return s_fail (self, "reading the answer: %s", strerror (errno));
    }
}

/* One raw line (CRLF or LF stripped) of at most LINE_MAX_ bytes into out. */
static int
s_raw_line (httpc_t *self, char *out, size_t outlen, const char *what)
{
    for (;;) {
        char *nl = memchr (self->buf + self->off, '\n', self->len - self->off);
        if (nl) {
            size_t l = (size_t)(nl - (self->buf + self->off));
            size_t keep = l > 0 && nl[-1] == '\r' ? l - 1 : l;
            if (keep >= outlen)
                return s_fail (self, "%s line over %zu bytes", what, outlen - 1);
            memcpy (out, self->buf + self->off, keep);
            out[keep] = '\0';
            self->off += l + 1;
            return 0;
        }
        if (self->len - self->off >= outlen)
            return s_fail (self, "%s line over %zu bytes", what, outlen - 1);
        int r = s_fill (self);
        if (r < 0)
            return -1;
        if (r == 0)
            return s_fail (self, "the broker closed the connection in the middle of %s", what);
    }
}

int
httpc_read_head (httpc_t *self)
{
    char line[LINE_MAX_];
    size_t total = 0;
    if (s_raw_line (self, line, sizeof line, "the status") < 0)
        return -1;
    int status = 0;
    if (strncmp (line, "HTTP/1.", 7) != 0 || !line[7] || line[8] != ' '
        || sscanf (line + 9, "%3d", &status) != 1 || status < 100 || status > 599)
        return s_fail (self, "not an HTTP/1.x answer: '%.80s'", line);
    self->status = status;
    self->content_length = -1;
    for (;;) {
        if (s_raw_line (self, line, sizeof line, "the headers") < 0)
            return -1;
        total += strlen (line) + 2;
        if (total > HEAD_MAX)
            return s_fail (self, "answer headers over %d bytes", HEAD_MAX);
        if (line[0] == '\0')
            break;
        char *colon = strchr (line, ':');
        if (!colon)
            continue;
        *colon = '\0';
        char *v = colon + 1;
        v += strspn (v, " \t");
        if (!strcasecmp (line, "Content-Type")) {
            snprintf (self->content_type, sizeof self->content_type, "%s", v);
        }
        else if (!strcasecmp (line, "Content-Length")) {
            char *end;
            long long cl = strtoll (v, &end, 10);
            if (end == v || cl < 0)
                return s_fail (self, "bad Content-Length '%.40s'", v);
            self->content_length = cl;
        }
        else if (!strcasecmp (line, "Transfer-Encoding")) {
            if (strcasestr (v, "chunked"))
                self->chunked = true;
        }
    }
    if (status == 100)
        return httpc_read_head (self);
    if (self->chunked)
        self->content_length = -1;
    self->body_left = self->chunked ? 0 : self->content_length;
    self->body_done = !self->chunked && self->content_length == 0;
    if (status == 204 || status == 304)
        self->body_done = true;
    return status;
}

const char *
httpc_content_type (httpc_t *self)
{
    return self->content_type;
}

/* Up to n body bytes (de-chunked) into dst. The count, 0 at the end of the
   body, -1 on error. */
static ssize_t
s_body_read (httpc_t *self, char *dst, size_t n)
{
    if (self->body_done)
        return 0;
    if (self->chunked && self->body_left == 0) {
        char line[256];
        if (self->need_crlf) {
            if (s_raw_line (self, line, sizeof line, "the chunked body") < 0)
                return -1;
            if (line[0])
                return s_fail (self, "malformed chunked body (no CRLF after a chunk)");
            self->need_crlf = false;
        }
        if (s_raw_line (self, line, sizeof line, "a chunk size") < 0)
            return -1;
        char *end;
        errno = 0;
        long long size = strtoll (line, &end, 16);
        if (end == line || size < 0 || errno || (*end && *end != ';' && *end != ' '))
            return s_fail (self, "malformed chunk size '%.40s'", line);
        if (size == 0) {
            /* trailers up to the blank line */
            for (int i = 0; i < 64; i++) {
                if (s_raw_line (self, line, sizeof line, "the chunked trailer") < 0)
                    return -1;
                if (!line[0]) {
                    self->body_done = true;
                    return 0;
                }
            }
            return s_fail (self, "more than 64 trailer lines");
        }
        self->body_left = size;
        self->need_crlf = true;
    }
    if (self->off == self->len) {
        int r = s_fill (self);
        if (r < 0)
            return -1;
        if (r == 0) {
            if (!self->chunked && self->content_length < 0) {
                self->body_done = true;
                return 0;
            }
            return s_fail (self, "the broker closed the connection before the end of the answer");
        }
    }
    size_t avail = self->len - self->off;
    size_t k = n < avail ? n : avail;
    if (self->content_length >= 0 || self->chunked)
        if ((int64_t)k > self->body_left)
            k = (size_t)self->body_left;
    memcpy (dst, self->buf + self->off, k);
    self->off += k;
    if (self->content_length >= 0 || self->chunked) {
        self->body_left -= (int64_t)k;
        if (!self->chunked && self->body_left == 0)
            self->body_done = true;
    }
    return (ssize_t)k;
}

int
httpc_read_body (httpc_t *self, size_t max, char **out, size_t *len)
{
    size_t cap = 4096, n = 0;
    char *b = malloc (cap);
    if (!b)
        return s_fail (self, "out of memory");
    for (;;) {
        if (cap - n < 4096 + 1) {
            if (cap > max + 8192) {
                free (b);
                return s_fail (self, "answer body over %zu bytes", max);
            }
            char *nb = realloc (b, cap * 2);
            if (!nb) {
                free (b);
                return s_fail (self, "out of memory");
            }
            b = nb;
            cap *= 2;
        }
        ssize_t r = s_body_read (self, b + n, cap - n - 1);
        if (r < 0) {
            free (b);
            return -1;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n > max) {
            free (b);
            return s_fail (self, "answer body over %zu bytes", max);
        }
    }
    b[n] = '\0';
    *out = b;
    *len = n;
    return 0;
}

static int
s_acc_add (httpc_t *self, const char *p, size_t n, size_t max)
{
    if (self->acc_len + n > max)
        return s_fail (self, "an event over %zu bytes", max);
    if (self->acc_len + n + 1 > self->acc_cap) {
        size_t cap = self->acc_cap ? self->acc_cap : 4096;
        while (cap < self->acc_len + n + 1)
            cap *= 2;
        char *na = realloc (self->acc, cap);
        if (!na)
            return s_fail (self, "out of memory");
        self->acc = na;
        self->acc_cap = cap;
    }
    memcpy (self->acc + self->acc_len, p, n);
    self->acc_len += n;
    self->acc[self->acc_len] = '\0';
    return 0;
}

/* The next body line (without its LF or CRLF) into self->acc starting at
 *start. 1 for a line, 0 at the end of the body, -1 on error. */
static int
s_body_line (httpc_t *self, size_t start, size_t max)
{
    self->acc_len = start;
    for (;;) {
        /* fast path: scan the raw buffer for a newline, within this chunk */
        char tmp[16 * 1024];
        ssize_t r = s_body_read (self, tmp, sizeof tmp);
        if (r < 0)
            return -1;
        if (r == 0) {
            if (self->acc_len > start)
                return 1; /* a last line without a newline */
            return 0;
        }
        char *nl = memchr (tmp, '\n', (size_t)r);
        size_t take = nl ? (size_t)(nl - tmp) : (size_t)r;
        if (s_acc_add (self, tmp, take, max) < 0)
            return -1;
        if (nl) {
            /* give back what follows the newline */
            size_t back = (size_t)r - take - 1;
            if (back > 0) {
                /* the bytes came from buf[off - r .. off): step back */
                self->off -= back;
                if (self->content_length >= 0 || self->chunked)
                    self->body_left += (int64_t)back;
                self->body_done = false;
            }
            if (self->acc_len > start && self->acc[self->acc_len - 1] == '\r')
                self->acc[--self->acc_len] = '\0';
            return 1;
        }
    }
}

int
httpc_sse_next (httpc_t *self, char *name, size_t namelen, char **data, size_t *len, size_t max)
{
    /* acc holds the data of the event being assembled, then the line being
       read after it (from data_len on). */
    size_t data_len = 0;
    bool have_data = false, have_name = false;
    snprintf (name, namelen, "message");
    for (;;) {
        int r = s_body_line (self, data_len, max);
        if (r < 0)
            return -1;
        if (r == 0) {
            if (have_data || have_name)
                break; /* an unterminated last event still counts */
            return 0;
        }
        char *line = self->acc + data_len;
        size_t ll = self->acc_len - data_len;
        if (ll == 0) {
            if (have_data || have_name)
                break;
            continue;
        }
        if (line[0] == ':') {
            self->acc_len = data_len;
            continue;
        }
        char *colon = memchr (line, ':', ll);
        size_t fl = colon ? (size_t)(colon - line) : ll;
        char *v = colon ? colon + 1 : line + ll;
        if (colon && *v == ' ')
            v++;
        size_t vl = (size_t)(line + ll - v);
        if (fl == 5 && !memcmp (line, "event", 5)) {
            size_t k = vl < namelen - 1 ? vl : namelen - 1;
            memmove (name, v, k);
            name[k] = '\0';
            have_name = true;
            self->acc_len = data_len;
        }
        else if (fl == 4 && !memcmp (line, "data", 4)) {
            /* move the value to the end of the data, joined by '\n' */
            if (have_data)
                self->acc[data_len++] = '\n';
            memmove (self->acc + data_len, v, vl);
            data_len += vl;
            self->acc_len = data_len;
            have_data = true;
        }
        else {
            self->acc_len = data_len;
        }
    }
    if (!self->acc && s_acc_add (self, "", 0, max) < 0)
        return -1;
    self->acc[data_len] = '\0';
    *data = self->acc;
    *len = data_len;
    return 1;
}
