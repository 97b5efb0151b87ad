/* httpc.h - a small blocking HTTP/1.1 client over TCP for sandboxd-run:
   one request per connection, Content-Length, chunked and read-to-close
   bodies, Server-Sent Events, bounded sizes and idle timeouts. */
#ifndef SANDBOXD_RUN_HTTPC_H
#define SANDBOXD_RUN_HTTPC_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A parsed http:// URL: host (without brackets), port, and a path prefix
   without a trailing slash ("" or "/base"). */
typedef struct {
    char host[256];
    char port[8];
    char prefix[1024];
} httpc_url_t;

/* Parse "http://host[:port][/prefix]". 0, or -1 with a message in err. */
int httpc_url_parse (const char *url, httpc_url_t *u, char *err, size_t errlen);

typedef struct _httpc_t httpc_t;

/* Called about every 200 ms while a call waits for the network. */
typedef void (httpc_tick_fn) (void *cls);

/* A connection to u. timeout_ms bounds the connect and every wait for the
   network (no byte moving for that long is an error). stop, if not NULL,
   is polled while waiting: when it becomes non-zero the call fails with
   "interrupted". NULL with a message in err when the connection fails.
   Caller owns return value and must destroy it when done. */
httpc_t *httpc_connect (const httpc_url_t *u, int timeout_ms, volatile sig_atomic_t *stop,
                        char *err, size_t errlen);

/* Close the connection and free it. Accepts NULL; nulls the pointer. */
void httpc_destroy (httpc_t **self_p);

/* Change the idle timeout for the calls that follow. */
void httpc_set_timeout (httpc_t *self, int timeout_ms);

/* Call tick(cls) about every 200 ms while waiting (NULL: never). */
void httpc_set_tick (httpc_t *self, httpc_tick_fn *tick, void *cls);

/* The message of the last failure. */
const char *httpc_error (httpc_t *self);

/* Send a request. path starts with '/' and is sent after the URL's prefix.
   headers is "Name: value\r\n" lines (or NULL); token, if not NULL, is sent
   as a bearer token. The body is body[0..len) or, with body_fd >= 0, len
   bytes read from body_fd. 0, or -1 (httpc_error says why). */
int httpc_request (httpc_t *self, const char *method, const char *path, const char *headers,
                   const char *token, const void *body, int body_fd, int64_t len);

/* Read the status line and headers (at most 64 KiB). The status, or -1. */
int httpc_read_head (httpc_t *self);

/* The response's Content-Type ("" if none). */
const char *httpc_content_type (httpc_t *self);

/* Read the whole body into a NUL-terminated buffer the caller frees; more
   than max bytes is an error. 0, or -1. */
int httpc_read_body (httpc_t *self, size_t max, char **out, size_t *len);

/* The next Server-Sent Event of the body: its name (in name, "message" when
   the event has none; longer names are cut) and its data lines joined by
   '\n' in *data (NUL-terminated, valid until the next call, at most max
   bytes). Comment lines are skipped. 1 for an event, 0 at the end of the
   stream, -1 on error. */
int httpc_sse_next (httpc_t *self, char *name, size_t namelen, char **data, size_t *len,
                    size_t max);

#endif
