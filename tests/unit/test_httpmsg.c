/* test_httpmsg.c - the proxy's parsers: preview Host names (strict, no
   suffix confusion), upstream response heads, chunked bodies fed in every
   split, and hop-by-hop header names. */
#include "httpmsg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"

#define TOK "0123456789abcdef0123456789abcdef"

static int
s_host (const char *host, const char *domain, int *port, char *label, char *token)
{
    return httpmsg_preview_host (host, domain, port, label, token);
}

static void
test_preview_host (void)
{
    int port = 0;
    char label[64], token[HTTPMSG_TOKEN_LEN + 1];
    ok (s_host ("8000-box-" TOK ".localhost:8080", "localhost", &port, label, token) == 1
            && port == 8000 && !strcmp (label, "box") && !strcmp (token, TOK),
        "port-id-token.localhost:8080 matches with port 8000, label box and the token");
    ok (s_host ("8000-box-" TOK ".localhost", "localhost", &port, label, token) == 1,
        "without a port suffix it matches too");
    ok (s_host ("8000-My-Box-2-0123456789ABCDEF0123456789abcdef.LOCALHOST", "localhost", &port,
                label, token)
                == 1
            && !strcmp (label, "my-box-2") && !strcmp (token, TOK),
        "case is ignored; a label with dashes is kept whole and lowercased");
    ok (s_host ("8000-box-" TOK ".preview.example.com", "preview.example.com", &port, label, token)
            == 1,
        "a multi-label preview domain matches");
    ok (s_host ("localhost:8080", "localhost", &port, label, token) == 0,
        "the bare domain is not a preview name (the API)");
    ok (s_host ("127.0.0.1:8080", "localhost", &port, label, token) == 0,
        "an address is not a preview name");
    ok (s_host ("8000-box-" TOK ".evillocalhost", "localhost", &port, label, token) == 0,
        "a name that only ends with the domain's letters is not under it");
    ok (s_host ("8000-box-" TOK ".localhost.evil.com", "localhost", &port, label, token) == 0,
        "the domain followed by more labels is not under it");
    ok (s_host ("a.8000-box-" TOK ".localhost", "localhost", &port, label, token) == -1,
        "a deeper name under the domain is refused");
    ok (s_host (".localhost", "localhost", &port, label, token) == 0,
        "an empty first label is not a preview name");
    ok (s_host ("8000-box-" TOK ".localhost:80x", "localhost", &port, label, token) == 0,
        "a non-numeric port suffix is not accepted");
    ok (s_host ("8000-box-" TOK ".localhost:", "localhost", &port, label, token) == 0,
        "an empty port suffix is not accepted");
    ok (s_host ("[::1]:8080", "localhost", &port, label, token) == 0, "an IPv6 literal is not one");
    ok (s_host ("0-box-" TOK ".localhost", "localhost", &port, label, token) == -1,
        "port 0 is refused");
    ok (s_host ("65536-box-" TOK ".localhost", "localhost", &port, label, token) == -1,
        "port 65536 is refused");
    ok (s_host ("08000-box-" TOK ".localhost", "localhost", &port, label, token) == -1,
        "a port with a leading zero is refused");
    ok (s_host ("8000-" TOK ".localhost", "localhost", &port, label, token) == -1,
        "a name without an id label is refused");
    ok (s_host ("8000-box-0123456789abcdef0123456789abcdeg.localhost", "localhost", &port, label,
                token)
            == -1,
        "a token with a non-hex character is refused");
    ok (s_host ("8000-box-" TOK "0.localhost", "localhost", &port, label, token) == -1,
        "a token one character too long leaves no dash before it: refused");
    ok (s_host ("8000-box_x-" TOK ".localhost", "localhost", &port, label, token) == -1,
        "an underscore (not valid in a host name) is refused");
    ok (s_host ("8000-box-" TOK ".localhost", "", &port, label, token) == 0,
        "an empty domain matches nothing");
    ok (s_host (NULL, "localhost", &port, label, token) == 0, "no Host header matches nothing");

    httpmsg_id_label ("My_Box.v2", label);
    ok (!strcmp (label, "my-box-v2"), "the label of id My_Box.v2 is my-box-v2");
}

static void
test_response_head (void)
{
    char why[96];
    httpmsg_head_t h;
    char a[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n"
               "X-Multi: a\r\nX-Multi:  b  \r\n\r\nbody";
    size_t hl = httpmsg_head_end (a, strlen (a));
    ok (hl == strlen (a) - 4, "the head ends before the body");
    ok (httpmsg_parse_response (a, hl, &h, why, sizeof why) == 0 && h.status == 200 && h.minor == 1
            && h.content_length == 12 && !h.chunked && h.nheaders == 4,
        "a 200 with Content-Length 12 and four headers");
    ok (!strcmp (h.headers[3].name, "X-Multi") && !strcmp (h.headers[3].value, "b"),
        "repeated headers are kept, values trimmed");

    char b[] = "HTTP/1.0 404 Not Found\nTransfer-Encoding: gzip, chunked\nContent-Length: 5\n\n";
    hl = httpmsg_head_end (b, strlen (b));
    ok (hl == strlen (b) && httpmsg_parse_response (b, hl, &h, why, sizeof why) == 0
            && h.status == 404 && h.chunked && h.content_length == -1,
        "bare LF line ends; chunked last wins over Content-Length");
    char c[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n";
    ok (httpmsg_parse_response (c, strlen (c), &h, why, sizeof why) == 0 && !h.chunked
            && h.other_coding && h.content_length == -1,
        "a coding other than chunked: close-delimited");
    char d[] = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
    ok (httpmsg_parse_response (d, strlen (d), &h, why, sizeof why) < 0,
        "conflicting Content-Length is refused");
    char e[] = "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n";
    ok (httpmsg_parse_response (e, strlen (e), &h, why, sizeof why) < 0,
        "a negative Content-Length is refused");
    char f[] = "HTTP/1.1 200 OK\r\n folded: x\r\n\r\n";
    ok (httpmsg_parse_response (f, strlen (f), &h, why, sizeof why) < 0,
        "a folded header line is refused");
    char g[] = "ICY 200 OK\r\n\r\n";
    ok (httpmsg_parse_response (g, strlen (g), &h, why, sizeof why) < 0,
        "a status line that is not HTTP/1.x is refused");
    char i[] = "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n";
    ok (httpmsg_parse_response (i, strlen (i), &h, why, sizeof why) < 0,
        "a header name with a space is refused");
    char j[] = "HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n";
    ok (httpmsg_parse_response (j, strlen (j), &h, why, sizeof why) < 0,
        "a bare CR inside a header is refused");
    char k[] = "HTTP/1.1 099 Low\r\n\r\n";
    ok (httpmsg_parse_response (k, strlen (k), &h, why, sizeof why) < 0,
        "a status below 100 is refused");
    ok (httpmsg_head_end ("HTTP/1.1 200 OK\r\nX: y\r\n", 24) == 0,
        "an incomplete head has no end yet");

    /* Many headers, as a hostile server might send. */
    size_t cap = 64 * 1024;
    char *big = malloc (cap);
    size_t n = (size_t)snprintf (big, cap, "HTTP/1.1 200 OK\r\n");
    for (int m = 0; m < HTTPMSG_MAX_HEADERS + 1; m++)
        n += (size_t)snprintf (big + n, cap - n, "X-%d: v\r\n", m);
    n += (size_t)snprintf (big + n, cap - n, "\r\n");
    ok (httpmsg_parse_response (big, n, &h, why, sizeof why) < 0,
        "more than HTTPMSG_MAX_HEADERS headers are refused");
    free (big);

    ok (httpmsg_hop_by_hop ("connection") && httpmsg_hop_by_hop ("Keep-Alive")
            && httpmsg_hop_by_hop ("TE") && httpmsg_hop_by_hop ("Trailer")
            && httpmsg_hop_by_hop ("Transfer-Encoding") && httpmsg_hop_by_hop ("Upgrade")
            && httpmsg_hop_by_hop ("Proxy-Authorization") && httpmsg_hop_by_hop ("proxy-foo"),
        "hop-by-hop names are recognised in any case");
    ok (!httpmsg_hop_by_hop ("Content-Type") && !httpmsg_hop_by_hop ("Set-Cookie")
            && !httpmsg_hop_by_hop ("Sec-WebSocket-Accept"),
        "end-to-end names are not hop-by-hop");
    ok (httpmsg_has_token ("keep-alive, Upgrade", "upgrade")
            && !httpmsg_has_token ("keep-alive, Upgrader", "upgrade"),
        "list tokens match whole and without regard to case");
}

/* Decode all of in, fed in pieces of size step; the data into out. */
static ssize_t
s_dechunk (const char *in, size_t step, char *out, size_t cap, bool *done, size_t *left)
{
    httpmsg_chunked_t d = { 0 };
    size_t n = strlen (in), pos = 0, outlen = 0;
    char piece[4096];
    while (pos < n && !d.done) {
        size_t k = n - pos < step ? n - pos : step;
        memcpy (piece, in + pos, k);
        size_t used = 0;
        ssize_t got = httpmsg_chunked_decode (&d, piece, k, &used);
        if (got < 0)
            return -1;
        if (outlen + (size_t)got > cap)
            return -1;
        memcpy (out + outlen, piece, (size_t)got);
        outlen += (size_t)got;
        pos += used;
    }
    *done = d.done;
    *left = n - pos;
    return (ssize_t)outlen;
}

static void
test_chunked (void)
{
    const char *body = "5\r\nhello\r\n1;ext=1\r\n \r\nB\r\nworld, here\r\n0\r\nX-T: 1\r\n\r\nNEXT";
    char out[256];
    bool all = true, done = false;
    size_t left = 0;
    for (size_t step = 1; step <= strlen (body); step++) {
        ssize_t n = s_dechunk (body, step, out, sizeof out, &done, &left);
        if (n != 17 || memcmp (out, "hello world, here", 17) || !done || left != 4)
            all = false;
    }
    ok (all, "a chunked body with an extension and a trailer decodes alike in every split");
    ssize_t n = s_dechunk ("0\r\n\r\n", 3, out, sizeof out, &done, &left);
    ok (n == 0 && done, "an empty chunked body ends at once");
    ok (s_dechunk ("5\nhello\n0\n\n", 4, out, sizeof out, &done, &left) == 5 && done,
        "bare LF line ends are accepted");
    ok (s_dechunk ("zz\r\n", 4, out, sizeof out, &done, &left) < 0, "a non-hex size is refused");
    ok (s_dechunk ("5\r\nhelloXX", 64, out, sizeof out, &done, &left) < 0,
        "data not followed by CRLF is refused");
    ok (s_dechunk ("1000000000000000\r\n", 64, out, sizeof out, &done, &left) < 0,
        "a size of 16 hex digits is refused");
    char longext[6000] = "1;";
    memset (longext + 2, 'a', 5000);
    strcpy (longext + 5002, "\r\nx\r\n0\r\n\r\n");
    ok (s_dechunk (longext, 512, out, sizeof out, &done, &left) < 0,
        "a chunk-size line longer than 4 KiB is refused");
}

int
main (void)
{
    test_preview_host ();
    test_response_head ();
    test_chunked ();
    return tap_done ();
}
