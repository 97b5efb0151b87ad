/* test_ws.c - WebSocket framing for the gateway: SHA-1 and the handshake
   key (RFC 3174 and RFC 6455 vectors), client frames fed in every split,
   fragments joined, control frames between fragments, and every protocol
   violation a hostile client can commit refused with the right close
   code; server frames read back in all three length forms. */
#include "ws.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tap.h"

static void
s_hex (const unsigned char *d, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf (out + 2 * i, "%02x", d[i]);
}

static void
test_sha1 (void)
{
    unsigned char d[20];
    char hex[41];
    ws_sha1 ("abc", 3, d);
    s_hex (d, 20, hex);
    ok (!strcmp (hex, "a9993e364706816aba3e25717850c26c9cd0d89d"), "SHA-1 of abc");
    ws_sha1 ("", 0, d);
    s_hex (d, 20, hex);
    ok (!strcmp (hex, "da39a3ee5e6b4b0d3255bfef95601890afd80709"), "SHA-1 of the empty string");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    ws_sha1 (two, strlen (two), d);
    s_hex (d, 20, hex);
    ok (!strcmp (hex, "84983e441c3bd26ebaae4aa1f95129e5e54670f1"), "SHA-1 of the 448-bit vector");
    char *million = malloc (1000000);
    memset (million, 'a', 1000000);
    ws_sha1 (million, 1000000, d);
    free (million);
    s_hex (d, 20, hex);
    ok (!strcmp (hex, "34aa973cd4c4daa4f61eeb2bdbad27316534016f"), "SHA-1 of a million a's");
    char acc[29];
    ok (ws_accept_key ("dGhlIHNhbXBsZSBub25jZQ==", acc) == 0
            && !strcmp (acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "the RFC 6455 handshake example gives its accept key");
    ok (ws_accept_key ("short", acc) < 0, "a key that is not 16 bytes of base64 is refused");
    ok (ws_accept_key ("dGhlIHNhbXBsZSBub25jZQ=!", acc) < 0, "a key with a bad character too");
    ok (ws_accept_key (NULL, acc) < 0, "and a missing key");
}

/* A client frame: masked with a fixed key. */
static size_t
s_frame (unsigned char *out, int fin, int op, const void *payload, size_t len, int masked)
{
    size_t h = 0;
    out[h++] = (unsigned char)((fin ? 0x80 : 0) | op);
    unsigned char m = masked ? 0x80 : 0;
    if (len < 126)
        out[h++] = (unsigned char)(m | len);
    else if (len <= 0xFFFF) {
        out[h++] = m | 126;
        out[h++] = (unsigned char)(len >> 8);
        out[h++] = (unsigned char)len;
    }
    else {
        out[h++] = m | 127;
        for (int i = 7; i >= 0; i--)
            out[h++] = (unsigned char)((uint64_t)len >> (8 * i));
    }
    const unsigned char key[4] = { 0x37, 0xfa, 0x21, 0x3d };
    if (masked) {
        memcpy (out + h, key, 4);
        h += 4;
    }
    const unsigned char *p = payload;
    for (size_t i = 0; i < len; i++)
        out[h + i] = masked ? p[i] ^ key[i & 3] : p[i];
    return h + len;
}

/* Feed buf in pieces of step bytes and collect what ws_next gives. */
static int
s_feed_all (ws_t *ws, const unsigned char *buf, size_t len, size_t step, int *ops, char out[][64],
            int max, int *close_code)
{
    int n = 0;
    for (size_t off = 0; off < len;) {
        size_t k = len - off < step ? len - off : step;
        ws_feed (ws, buf + off, k);
        off += k;
        int op;
        const unsigned char *d;
        size_t dl;
        int r;
        while ((r = ws_next (ws, &op, &d, &dl, close_code)) == 1 && n < max) {
            ops[n] = op;
            snprintf (out[n], 64, "%.*s", (int)dl, d);
            n++;
        }
        if (r < 0)
            return -1;
    }
    return n;
}

static void
test_client_frames (void)
{
    unsigned char buf[4096];
    size_t len = 0;
    len += s_frame (buf + len, 1, WS_OP_TEXT, "hello", 5, 1);
    len += s_frame (buf + len, 0, WS_OP_TEXT, "frag", 4, 1);
    len += s_frame (buf + len, 1, WS_OP_PING, "p", 1, 1);
    len += s_frame (buf + len, 0, WS_OP_CONT, "men", 3, 1);
    len += s_frame (buf + len, 1, WS_OP_CONT, "ted", 3, 1);
    char big[300];
    memset (big, 'x', sizeof big);
    len += s_frame (buf + len, 1, WS_OP_BINARY, big, sizeof big, 1);
    len += s_frame (buf + len, 1, WS_OP_CLOSE, "\x03\xe8", 2, 1);
    bool all = true;
    for (size_t step = 1; step <= len; step = step < 8 ? step + 1 : step * 3) {
        ws_t *ws = ws_new (-1, 1 << 20);
        int ops[8], code = 0;
        char out[8][64];
        int n = s_feed_all (ws, buf, len, step, ops, out, 8, &code);
        bool good = n == 5 && ops[0] == WS_OP_TEXT && !strcmp (out[0], "hello")
                    && ops[1] == WS_OP_PING && !strcmp (out[1], "p") && ops[2] == WS_OP_TEXT
                    && !strcmp (out[2], "fragmented") && ops[3] == WS_OP_BINARY
                    && strlen (out[3]) == 63 && ops[4] == WS_OP_CLOSE;
        if (!good) {
            printf ("# split every %zu bytes: %d messages\n", step, n);
            all = false;
        }
        ws_destroy (&ws);
    }
    ok (all, "text, a ping between fragments, a fragmented text, a 16-bit-length binary and a "
             "close come out whole in every split");
}

static int
s_violation (const unsigned char *buf, size_t len, size_t max)
{
    ws_t *ws = ws_new (-1, max);
    ws_feed (ws, buf, len);
    int op, code = 0;
    const unsigned char *d;
    size_t dl;
    int r;
    while ((r = ws_next (ws, &op, &d, &dl, &code)) == 1)
        ;
    ws_destroy (&ws);
    return r < 0 ? code : 0;
}

static void
test_violations (void)
{
    unsigned char buf[1024];
    size_t len = s_frame (buf, 1, WS_OP_TEXT, "hi", 2, 0);
    ok (s_violation (buf, len, 1024) == 1002, "an unmasked client frame: 1002");
    len = s_frame (buf, 1, WS_OP_TEXT, "hi", 2, 1);
    buf[0] |= 0x40;
    ok (s_violation (buf, len, 1024) == 1002, "a reserved bit set: 1002");
    len = s_frame (buf, 1, 0x3, "hi", 2, 1);
    ok (s_violation (buf, len, 1024) == 1002, "an unknown data opcode: 1002");
    len = s_frame (buf, 1, 0xB, "hi", 2, 1);
    ok (s_violation (buf, len, 1024) == 1002, "an unknown control opcode: 1002");
    len = s_frame (buf, 0, WS_OP_PING, "hi", 2, 1);
    ok (s_violation (buf, len, 1024) == 1002, "a fragmented control frame: 1002");
    char c200[200] = { 0 };
    len = s_frame (buf, 1, WS_OP_PING, c200, sizeof c200, 1);
    ok (s_violation (buf, len, 1024) == 1002, "a control frame over 125 bytes: 1002");
    len = s_frame (buf, 1, WS_OP_CONT, "hi", 2, 1);
    ok (s_violation (buf, len, 1024) == 1002, "a continuation of nothing: 1002");
    len = s_frame (buf, 0, WS_OP_TEXT, "hi", 2, 1);
    len += s_frame (buf + len, 1, WS_OP_TEXT, "hi", 2, 1);
    ok (s_violation (buf, len, 1024) == 1002, "a new message in the middle of one: 1002");
    len = s_frame (buf, 1, WS_OP_TEXT, c200, sizeof c200, 1);
    ok (s_violation (buf, len, 100) == 1009, "a message over the limit: 1009");
    len = s_frame (buf, 0, WS_OP_TEXT, c200, 80, 1);
    len += s_frame (buf + len, 1, WS_OP_CONT, c200, 80, 1);
    ok (s_violation (buf, len, 100) == 1009, "fragments that together exceed it: 1009");
    /* A 64-bit length near 2^64: refused from the header alone. */
    unsigned char huge[14]
        = { 0x81, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xF0, 1, 2, 3, 4 };
    ok (s_violation (huge, sizeof huge, 1 << 20) == 1009,
        "a header claiming an 18-exabyte payload: 1009 before any of it is read");
}

static void
test_server_frames (void)
{
    int sv[2];
    ok (socketpair (AF_UNIX, SOCK_STREAM, 0, sv) == 0, "socketpair");
    ws_t *ws = ws_new (sv[0], 1 << 20);
    size_t sizes[3] = { 5, 300, 70000 };
    char *payload = malloc (70000);
    memset (payload, 'y', 70000);
    bool all = true;
    for (int i = 0; i < 3; i++) {
        pid_t pid = fork ();
        if (pid == 0) {
            _exit (ws_send (ws, WS_OP_BINARY, payload, sizes[i], 5000) == 0 ? 0 : 1);
        }
        size_t want = sizes[i] + (sizes[i] < 126 ? 2 : sizes[i] <= 0xFFFF ? 4 : 10);
        unsigned char *got = malloc (want);
        size_t have = 0;
        while (have < want) {
            ssize_t k = read (sv[1], got + have, want - have);
            if (k <= 0)
                break;
            have += (size_t)k;
        }
        int st;
        waitpid (pid, &st, 0);
        size_t h = sizes[i] < 126 ? 2 : sizes[i] <= 0xFFFF ? 4 : 10;
        uint64_t l = got[1] & 0x7F;
        if (l == 126)
            l = (uint64_t)got[2] << 8 | got[3];
        else if (l == 127) {
            l = 0;
            for (int j = 0; j < 8; j++)
                l = l << 8 | got[2 + j];
        }
        if (have != want || got[0] != 0x82 || (got[1] & 0x80) || l != sizes[i]
            || memcmp (got + h, payload, sizes[i]))
            all = false;
        free (got);
    }
    ok (all, "server frames are unmasked, FIN set, with 7-, 16- and 64-bit lengths");
    ok (ws_send_close (ws, 1009, "message too big") == 0, "a close frame goes out");
    unsigned char c[32];
    ssize_t k = read (sv[1], c, sizeof c);
    ok (k == 2 + 2 + 15 && c[0] == 0x88 && c[2] == 0x03 && c[3] == 0xF1, "with its code 1009");
    close (sv[1]);
    ok (ws_fill (ws) < 0, "a peer that closed is reported by ws_fill");
    ws_destroy (&ws);
    close (sv[0]);
    free (payload);
}

int
main (void)
{
    test_sha1 ();
    test_client_frames ();
    test_violations ();
    test_server_frames ();
    return tap_done ();
}
