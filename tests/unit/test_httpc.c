/* test_httpc.c - sandboxd-run's HTTP client against a real TCP server in a
   child process that sends canned answers: byte-at-a-time chunked bodies,
   SSE with comments, CRLF and multi-line data, and the hostile cases a
   client must refuse (huge chunk sizes, endless headers, early close). */
#include "../../src/run/httpc.h"
#include "tap.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* Serve one connection on a fresh listening socket: read the request head,
   then send answer in pieces of step bytes (0: at once). The URL in url. */
static pid_t
s_serve (const char *answer, size_t len, size_t step, char *url, size_t urllen)
{
    int ls = socket (AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
    socklen_t al = sizeof a;
    if (ls < 0 || bind (ls, (struct sockaddr *)&a, sizeof a) < 0 || listen (ls, 1) < 0
        || getsockname (ls, (struct sockaddr *)&a, &al) < 0)
        return -1;
    snprintf (url, urllen, "http://127.0.0.1:%d", ntohs (a.sin_port));
    pid_t pid = fork ();
    if (pid != 0) {
        close (ls);
        return pid;
    }
    int fd = accept (ls, NULL, NULL);
    int one = 1;
    setsockopt (fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char req[8192];
    size_t got = 0;
    while (got < sizeof req - 1) {
        ssize_t r = read (fd, req + got, sizeof req - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
        req[got] = '\0';
        if (strstr (req, "\r\n\r\n"))
            break;
    }
    for (size_t off = 0; off < len;) {
        size_t n = step && len - off > step ? step : len - off;
        if (write (fd, answer + off, n) != (ssize_t)n)
            _exit (1);
        off += n;
        if (step)
            usleep (200);
    }
    shutdown (fd, SHUT_WR);
    char sink[256];
    while (read (fd, sink, sizeof sink) > 0)
        ;
    _exit (0);
}

static httpc_t *
s_get (const char *answer, size_t step, pid_t *pid, int *status)
{
    char url[64], err[256];
    httpc_url_t u;
    *pid = s_serve (answer, strlen (answer), step, url, sizeof url);
    if (*pid < 0 || httpc_url_parse (url, &u, err, sizeof err) < 0)
        return NULL;
    httpc_t *h = httpc_connect (&u, 5000, NULL, err, sizeof err);
    if (!h)
        return NULL;
    if (httpc_request (h, "GET", "/x", NULL, "tok", NULL, -1, 0) < 0) {
        httpc_destroy (&h);
        return NULL;
    }
    *status = httpc_read_head (h);
    return h;
}

static void
s_reap (pid_t pid)
{
    if (pid > 0) {
        kill (pid, SIGKILL);
        waitpid (pid, NULL, 0);
    }
}

int
main (void)
{
    httpc_url_t u;
    char err[512];
    ok (httpc_url_parse ("http://example.org:8080/base/", &u, err, sizeof err) == 0
            && !strcmp (u.host, "example.org") && !strcmp (u.port, "8080")
            && !strcmp (u.prefix, "/base"),
        "a URL with port and prefix parses (trailing slash dropped)");
    ok (httpc_url_parse ("http://[::1]/", &u, err, sizeof err) == 0 && !strcmp (u.host, "::1")
            && !strcmp (u.port, "80"),
        "an IPv6 literal in brackets, default port 80");
    ok (httpc_url_parse ("https://x", &u, err, sizeof err) < 0 && strstr (err, "https"),
        "https is refused with a message saying so");
    ok (httpc_url_parse ("http://x:99999", &u, err, sizeof err) < 0 && strstr (err, "port"),
        "a port over 65535 is refused");
    ok (httpc_url_parse ("http://x/a b", &u, err, sizeof err) < 0,
        "white space in the path is refused");

    pid_t pid;
    int status = 0;
    char *body = NULL;
    size_t len = 0;

    /* Content-Length, sent one byte at a time. */
    httpc_t *h = s_get ("HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                        "Content-Length: 11\r\n\r\n{\"id\":\"a\"}\n",
                        1, &pid, &status);
    ok (h && status == 201 && !strcmp (httpc_content_type (h), "application/json"),
        "status and Content-Type of an answer sent byte by byte");
    ok (h && httpc_read_body (h, 1024, &body, &len) == 0 && len == 11
            && !strcmp (body, "{\"id\":\"a\"}\n"),
        "its Content-Length body");
    free (body);
    body = NULL;
    httpc_destroy (&h);
    s_reap (pid);

    /* Chunked, with an extension and a trailer, 3 bytes at a time. */
    h = s_get ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               "5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: y\r\n\r\n",
               3, &pid, &status);
    ok (h && status == 200 && httpc_read_body (h, 1024, &body, &len) == 0
            && !strcmp (body, "hello world"),
        "a chunked body with an extension and a trailer, in 3-byte pieces");
    free (body);
    body = NULL;
    httpc_destroy (&h);
    s_reap (pid);

    /* A body over the limit. */
    {
        char big[6000];
        int n = snprintf (big, sizeof big, "HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n");
        memset (big + n, 'a', 5000);
        big[n + 5000] = '\0';
        h = s_get (big, 0, &pid, &status);
        ok (h && httpc_read_body (h, 100, &body, &len) < 0 && strstr (httpc_error (h), "over 100"),
            "a body larger than the limit is an error: %s", h ? httpc_error (h) : "");
        httpc_destroy (&h);
        s_reap (pid);
    }

    /* A body cut short. */
    h = s_get ("HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort", 0, &pid, &status);
    ok (h && httpc_read_body (h, 1024, &body, &len) < 0 && strstr (httpc_error (h), "closed"),
        "a body shorter than its Content-Length is an error: %s", h ? httpc_error (h) : "");
    httpc_destroy (&h);
    s_reap (pid);

    /* Hostile chunk size. */
    h = s_get ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               "fffffffffffffffffffff\r\nxx",
               0, &pid, &status);
    ok (h && httpc_read_body (h, 1 << 20, &body, &len) < 0
            && strstr (httpc_error (h), "chunk size"),
        "an overflowing chunk size is refused: %s", h ? httpc_error (h) : "");
    httpc_destroy (&h);
    s_reap (pid);

    /* Endless headers. */
    {
        size_t n = 200 * 1024;
        char *a = malloc (n + 64);
        strcpy (a, "HTTP/1.1 200 OK\r\n");
        size_t o = strlen (a);
        while (o + 32 < n) {
            memcpy (a + o, "X-Pad: aaaaaaaaaaaaaaaaaaaaa\r\n", 30);
            o += 30;
        }
        a[o] = '\0';
        h = s_get (a, 0, &pid, &status);
        ok (status < 0 && h && strstr (httpc_error (h), "headers over"),
            "more than 64 KiB of headers is refused: %s", h ? httpc_error (h) : "");
        httpc_destroy (&h);
        s_reap (pid);
        free (a);
    }

    /* Not HTTP. */
    h = s_get ("SSH-2.0-OpenSSH\r\n\r\n", 0, &pid, &status);
    ok (status < 0 && h && strstr (httpc_error (h), "not an HTTP"), "a non-HTTP answer is named");
    httpc_destroy (&h);
    s_reap (pid);

    /* SSE over chunked, 7 bytes at a time: comments, CRLF, multi-line data,
       an event without a name, an unterminated last event. */
    const char *sse_body = ": keepalive\n\n"
                           "event: start\r\ndata: {\"cells\": 2}\r\n\r\n"
                           "event: output\ndata: {\"a\":\ndata: 1}\nid: 7\n\n"
                           "data: plain\n\n"
                           "event: done\ndata: {}";
    char chunked[2048];
    size_t o = 0, bl = strlen (sse_body);
    o += (size_t)snprintf (chunked + o, sizeof chunked - o,
                           "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                           "Transfer-Encoding: chunked\r\n\r\n");
    for (size_t i = 0; i < bl; i += 10) {
        size_t n = bl - i < 10 ? bl - i : 10;
        o += (size_t)snprintf (chunked + o, sizeof chunked - o, "%zx\r\n%.*s\r\n", n, (int)n,
                               sse_body + i);
    }
    snprintf (chunked + o, sizeof chunked - o, "0\r\n\r\n");
    h = s_get (chunked, 7, &pid, &status);
    char name[32];
    char *data;
    ok (h && status == 200 && strstr (httpc_content_type (h), "text/event-stream"),
        "an event stream answers 200 text/event-stream");
    int r = h ? httpc_sse_next (h, name, sizeof name, &data, &len, 1 << 20) : -1;
    ok (r == 1 && !strcmp (name, "start") && !strcmp (data, "{\"cells\": 2}"),
        "the first event after a comment, with CRLF line ends");
    r = h ? httpc_sse_next (h, name, sizeof name, &data, &len, 1 << 20) : -1;
    ok (r == 1 && !strcmp (name, "output") && !strcmp (data, "{\"a\":\n1}") && len == 8,
        "data lines are joined with a newline; other fields are ignored");
    r = h ? httpc_sse_next (h, name, sizeof name, &data, &len, 1 << 20) : -1;
    ok (r == 1 && !strcmp (name, "message") && !strcmp (data, "plain"),
        "an event without a name is 'message'");
    r = h ? httpc_sse_next (h, name, sizeof name, &data, &len, 1 << 20) : -1;
    ok (r == 1 && !strcmp (name, "done") && !strcmp (data, "{}"),
        "an unterminated last event still counts");
    r = h ? httpc_sse_next (h, name, sizeof name, &data, &len, 1 << 20) : -1;
    ok (r == 0, "then the end of the stream");
    httpc_destroy (&h);
    s_reap (pid);

    /* An event over the limit. */
    h = s_get ("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
               "event: done\ndata: 0123456789012345678901234567890123456789\n\n",
               0, &pid, &status);
    r = h ? httpc_sse_next (h, name, sizeof name, &data, &len, 16) : -1;
    ok (r < 0 && strstr (httpc_error (h), "event over"), "an event over the limit is refused: %s",
        h ? httpc_error (h) : "");
    httpc_destroy (&h);
    s_reap (pid);

    /* Nothing listening. */
    {
        int s = socket (AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a
            = { .sin_family = AF_INET, .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
        socklen_t al = sizeof a;
        bind (s, (struct sockaddr *)&a, sizeof a);
        getsockname (s, (struct sockaddr *)&a, &al);
        close (s);
        char url[64];
        snprintf (url, sizeof url, "http://127.0.0.1:%d", ntohs (a.sin_port));
        httpc_url_parse (url, &u, err, sizeof err);
        h = httpc_connect (&u, 2000, NULL, err, sizeof err);
        ok (!h && strstr (err, "cannot connect") && strstr (err, "refused"),
            "a closed port: 'cannot connect ...: Connection refused' (%s)", err);
        httpc_destroy (&h);
    }

    /* A stop flag interrupts a wait. */
    {
        char url[64];
        /* a server that answers nothing for a while */
        pid = s_serve ("", 0, 0, url, sizeof url);
        httpc_url_parse (url, &u, err, sizeof err);
        volatile sig_atomic_t stop = 0;
        h = httpc_connect (&u, 5000, &stop, err, sizeof err);
        stop = 1;
        ok (h && httpc_read_head (h) < 0
                && (strstr (httpc_error (h), "interrupted") || strstr (httpc_error (h), "closed")),
            "the stop flag ends a wait (%s)", h ? httpc_error (h) : err);
        httpc_destroy (&h);
        s_reap (pid);
    }
    return tap_done ();
}
