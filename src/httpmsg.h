/* httpmsg.h - the small HTTP/1.1 parsers the preview proxy needs, kept apart
   from any socket so that they can be tested on their own: the preview
   Host header, an upstream response head, and a chunked body decoder.
   Every input is hostile (it comes from a client or from tenant code). */
#ifndef SANDBOXD_HTTPMSG_H
#define SANDBOXD_HTTPMSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* A preview token: 16 random bytes as 32 lowercase hex characters. */
#define HTTPMSG_TOKEN_LEN 32

/* Match a Host header value against the preview domain. The only accepted
   shape is "{port}-{label}-{token}.{domain}" with an optional ":digits"
   suffix, compared without regard to case; {label} is one or more of
   [a-z0-9-]. Returns 0 when host is not a name under domain at all (the
   request is for the API), 1 when it matched (port, label and token are
   filled, label and token lowercased), and -1 when it is under domain but
   not a well-formed preview name. label must hold 64 bytes and token
   HTTPMSG_TOKEN_LEN + 1. */
int httpmsg_preview_host (const char *host, const char *domain, int *port, char *label,
                          char *token);

/* The preview label of a sandbox id: lowercased, with '_' and '.' (not
   valid in a host name) turned into '-'. out must hold 64 bytes. */
void httpmsg_id_label (const char *id, char *out);

#define HTTPMSG_MAX_HEADERS 256

typedef struct {
    const char *name, *value;
} httpmsg_header_t;

/* A parsed response head. Names and values point into the buffer given to
   httpmsg_parse_response, which must outlive it. */
typedef struct {
    int status;
    int minor; /* HTTP/1.<minor> */
    httpmsg_header_t headers[HTTPMSG_MAX_HEADERS];
    int nheaders;
    int64_t content_length; /* -1 when absent */
    bool chunked;           /* Transfer-Encoding ends with chunked */
    bool other_coding;      /* a Transfer-Encoding that is not chunked: close-delimited */
} httpmsg_head_t;

/* Length of the head at the start of buf (status line up to and including
   the blank line, CRLF or bare LF line ends), or 0 while incomplete. */
size_t httpmsg_head_end (const char *buf, size_t len);

/* Parse the head buf[0..len) (as found by httpmsg_head_end) in place: line
   ends and colons become NULs. 0, or -1 with a reason in why. */
int httpmsg_parse_response (char *buf, size_t len, httpmsg_head_t *h, char *why, size_t whysize);

/* True for the hop-by-hop headers a proxy must not forward. */
bool httpmsg_hop_by_hop (const char *name);

/* True when the comma-separated list value has token (case-insensitive). */
bool httpmsg_has_token (const char *value, const char *token);

/* A chunked-body decoder that works in place, so memory stays bounded. */
typedef struct {
    int state;
    uint64_t left;   /* data bytes left in the current chunk */
    size_t line;     /* bytes of the current size or trailer line */
    size_t trailers; /* bytes of trailers so far */
    int digits;
    bool done; /* the last chunk and the trailers have been read */
} httpmsg_chunked_t;

/* Decode buf[0..n) as the next bytes of a chunked body: the data bytes are
   moved to the front of buf and their count returned; *used tells how many
   input bytes were consumed (less than n only once done). -1 on a framing
   error. */
ssize_t httpmsg_chunked_decode (httpmsg_chunked_t *d, char *buf, size_t n, size_t *used);

#endif
