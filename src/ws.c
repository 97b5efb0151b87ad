/* ws.c - WebSocket framing (RFC 6455), server side. See ws.h. */
#include "ws.h"

#include <errno.h>
#include <poll.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "util.h"

#define WS_GUID     "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define WS_READ_MAX (64 * 1024) /* bytes read per recv */

/* --- SHA-1 --------------------------------------------------------------------------- */

static uint32_t
s_rol (uint32_t x, int n)
{
    return (x << n) | (x >> (32 - n));
}

static void
s_sha1_block (uint32_t h[5], const unsigned char *p)
{
    uint32_t w[80];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8
               | (uint32_t)p[4 * i + 3];
    for (int i = 16; i < 80; i++)
        w[i] = s_rol (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) {
            f = (b & c) | (~b & d);
            k = 0x5A827999;
        }
        else if (i < 40) {
            f = b ^ c ^ d;
            k = 0x6ED9EBA1;
        }
        else if (i < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8F1BBCDC;
        }
        else {
            f = b ^ c ^ d;
            k = 0xCA62C1D6;
        }
        uint32_t t = s_rol (a, 5) + f + e + k + w[i];
        e = d;
        d = c;
        c = s_rol (b, 30);
        b = a;
        a = t;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
}

void
ws_sha1 (const void *data, size_t len, unsigned char out[20])
{
    uint32_t h[5] = { 0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0 };
    const unsigned char *p = data;
    size_t left = len;
    while (left >= 64) {
        s_sha1_block (h, p);
        p += 64;
        left -= 64;
    }
    unsigned char tail[128] = { 0 };
    memcpy (tail, p, left);
    tail[left] = 0x80;
    size_t tlen = left + 1 + 8 <= 64 ? 64 : 128;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++)
        tail[tlen - 1 - i] = (unsigned char)(bits >> (8 * i));
    s_sha1_block (h, tail);
    if (tlen == 128)
        s_sha1_block (h, tail + 64);
    for (int i = 0; i < 5; i++) {
        out[4 * i] = (unsigned char)(h[i] >> 24);
        out[4 * i + 1] = (unsigned char)(h[i] >> 16);
        out[4 * i + 2] = (unsigned char)(h[i] >> 8);
        out[4 * i + 3] = (unsigned char)h[i];
    }
}

int
ws_accept_key (const char *client_key, char out[29])
{
    if (!client_key)
        return -1;
    size_t klen = strlen (client_key);
    unsigned char raw[32];
    size_t rawlen = 0;
    if (klen != 24
        || sodium_base642bin (raw, sizeof raw, client_key, klen, NULL, &rawlen, NULL,
                              sodium_base64_VARIANT_ORIGINAL)
               != 0
        || rawlen != 16)
        return -1;
    char buf[24 + sizeof WS_GUID];
    memcpy (buf, client_key, 24);
    memcpy (buf + 24, WS_GUID, sizeof WS_GUID - 1);
    unsigned char digest[20];
    ws_sha1 (buf, 24 + sizeof WS_GUID - 1, digest);
    sodium_bin2base64 (out, 29, digest, sizeof digest, sodium_base64_VARIANT_ORIGINAL);
    return 0;
}

/* --- framing ---------------------------------------------------------------------------- */

struct _ws_t {
    int fd;
    size_t max;
    unsigned char *rbuf; /* bytes read, not yet parsed */
    size_t rlen, rcap;
    unsigned char *msg; /* the data message being joined from fragments */
    size_t mlen, mcap;
    int mop;        /* its opcode, or -1 when none is open */
    bool mdone;     /* msg was handed out: start over on the next call */
    size_t consume; /* bytes of rbuf handed out last time, dropped next time */
};

ws_t *
ws_new (int fd, size_t max_message)
{
    ws_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->fd = fd;
    self->max = max_message;
    self->mop = -1;
    return self;
}

void
ws_destroy (ws_t **self_p)
{
    ws_t *self = *self_p;
    if (!self)
        return;
    *self_p = NULL;
    free (self->rbuf);
    free (self->msg);
    free (self);
}

static int
s_reserve (unsigned char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 4096;
    while (n < need)
        n *= 2;
    unsigned char *g = realloc (*buf, n);
    if (!g)
        return -1;
    *buf = g;
    *cap = n;
    return 0;
}

static void
s_drop_consumed (ws_t *self)
{
    if (self->consume) {
        memmove (self->rbuf, self->rbuf + self->consume, self->rlen - self->consume);
        self->rlen -= self->consume;
        self->consume = 0;
    }
}

int
ws_feed (ws_t *self, const void *data, size_t len)
{
    s_drop_consumed (self);
    if (s_reserve (&self->rbuf, &self->rcap, self->rlen + len) < 0)
        return -1;
    memcpy (self->rbuf + self->rlen, data, len);
    self->rlen += len;
    return 0;
}

int
ws_fill (ws_t *self)
{
    s_drop_consumed (self);
    /* Never hold more than one message plus a frame header unparsed. */
    if (self->rlen >= self->max + 16)
        return 0;
    if (s_reserve (&self->rbuf, &self->rcap, self->rlen + WS_READ_MAX) < 0)
        return -1;
    ssize_t k = recv (self->fd, self->rbuf + self->rlen, WS_READ_MAX, MSG_DONTWAIT);
    if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return 0;
    if (k <= 0)
        return -1;
    self->rlen += (size_t)k;
    return 0;
}

int
ws_next (ws_t *self, int *op, const unsigned char **data, size_t *len, int *close_code)
{
    s_drop_consumed (self);
    if (self->mdone) {
        self->mlen = 0;
        self->mop = -1;
        self->mdone = false;
    }
    for (;;) {
        unsigned char *p = self->rbuf;
        size_t have = self->rlen;
        if (have < 2)
            return 0;
        bool fin = p[0] & 0x80;
        int opcode = p[0] & 0x0F;
        bool masked = p[1] & 0x80;
        uint64_t plen = p[1] & 0x7F;
        size_t hlen = 2;
        if (p[0] & 0x70 || !masked) { /* no extensions were agreed; clients must mask */
            *close_code = 1002;
            return -1;
        }
        if (plen == 126) {
            if (have < 4)
                return 0;
            plen = (uint64_t)p[2] << 8 | p[3];
            hlen = 4;
        }
        else if (plen == 127) {
            if (have < 10)
                return 0;
            plen = 0;
            for (int i = 0; i < 8; i++)
                plen = plen << 8 | p[2 + i];
            hlen = 10;
        }
        hlen += 4; /* the mask */
        bool control = opcode >= 0x8;
        if (control && (!fin || plen > 125)) {
            *close_code = 1002;
            return -1;
        }
        if (!control && opcode != WS_OP_CONT && opcode != WS_OP_TEXT && opcode != WS_OP_BINARY) {
            *close_code = 1002;
            return -1;
        }
        if (control ? (opcode != WS_OP_CLOSE && opcode != WS_OP_PING && opcode != WS_OP_PONG)
                    : plen > self->max - (self->mop >= 0 ? self->mlen : 0)) {
            *close_code = control ? 1002 : 1009;
            return -1;
        }
        if (have < hlen || have - hlen < plen)
            return 0;
        unsigned char *mask = p + hlen - 4, *payload = p + hlen;
        for (uint64_t i = 0; i < plen; i++)
            payload[i] ^= mask[i & 3];
        size_t frame = hlen + (size_t)plen;
        if (control) {
            *op = opcode;
            *data = payload;
            *len = (size_t)plen;
            self->consume = frame;
            return 1;
        }
        if ((opcode == WS_OP_CONT) != (self->mop >= 0)) {
            *close_code = 1002; /* a continuation of nothing, or a new message mid-message */
            return -1;
        }
        if (fin && self->mop < 0) { /* the common case: one unfragmented frame */
            *op = opcode;
            *data = payload;
            *len = (size_t)plen;
            self->consume = frame;
            return 1;
        }
        if (self->mop < 0)
            self->mop = opcode;
        if (s_reserve (&self->msg, &self->mcap, self->mlen + (size_t)plen + 1) < 0) {
            *close_code = 1009;
            return -1;
        }
        memcpy (self->msg + self->mlen, payload, (size_t)plen);
        self->mlen += (size_t)plen;
        memmove (self->rbuf, self->rbuf + frame, self->rlen - frame);
        self->rlen -= frame;
        if (fin) {
            *op = self->mop;
            *data = self->msg;
            *len = self->mlen;
            self->mdone = true;
            return 1;
        }
    }
}

static int
s_send_all (int fd, struct iovec *iov, int iovcnt, int timeout_ms)
{
    int64_t deadline = util_mono_ms () + timeout_ms;
    while (iovcnt > 0) {
        ssize_t k = writev (fd, iov, iovcnt);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int64_t left = deadline - util_mono_ms ();
            struct pollfd p = { .fd = fd, .events = POLLOUT };
            if (left <= 0 || poll (&p, 1, (int)left) <= 0)
                return -1;
            continue;
        }
        if (k < 0)
            return -1;
        size_t n = (size_t)k;
        while (iovcnt > 0 && n >= iov->iov_len) {
            n -= iov->iov_len;
            iov++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            iov->iov_base = (char *)iov->iov_base + n;
            iov->iov_len -= n;
        }
    }
    return 0;
}

int
ws_send (ws_t *self, int op, const void *data, size_t len, int timeout_ms)
{
    unsigned char h[10];
    size_t hlen = 2;
    h[0] = (unsigned char)(0x80 | (op & 0x0F));
    if (len < 126)
        h[1] = (unsigned char)len;
    else if (len <= 0xFFFF) {
        h[1] = 126;
        h[2] = (unsigned char)(len >> 8);
        h[3] = (unsigned char)len;
        hlen = 4;
    }
    else {
        h[1] = 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (unsigned char)((uint64_t)len >> (8 * (7 - i)));
        hlen = 10;
    }
    struct iovec iov[2] = { { h, hlen }, { (void *)data, len } };
    return s_send_all (self->fd, iov, len ? 2 : 1, timeout_ms);
}

int
ws_send_close (ws_t *self, int code, const char *reason)
{
    unsigned char buf[125];
    size_t rlen = reason ? strlen (reason) : 0;
    if (rlen > sizeof buf - 2)
        rlen = sizeof buf - 2;
    buf[0] = (unsigned char)(code >> 8);
    buf[1] = (unsigned char)code;
    if (rlen)
        memcpy (buf + 2, reason, rlen);
    return ws_send (self, WS_OP_CLOSE, buf, 2 + rlen, 1000);
}
