/* httpmsg.c - preview Host matching, upstream response heads, chunked bodies. */
#include "httpmsg.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int
httpmsg_preview_host (const char *host, const char *domain, int *port, char *label, char *token)
{
    if (!host || !domain || !*domain)
        return 0;
    size_t n = strlen (host), dl = strlen (domain);
    /* An optional ":port" suffix; anything else after a colon (an IPv6
       literal, a stray colon) is not a preview name. */
    const char *colon = memchr (host, ':', n);
    if (colon) {
        const char *p = colon + 1;
        if (!*p || strlen (p) > 5)
            return 0;
        for (; *p; p++)
            if (!isdigit ((unsigned char)*p))
                return 0;
        n = (size_t)(colon - host);
    }
    /* "{first}.{domain}": exactly one label in front of the domain. */
    if (n < dl + 2 || host[n - dl - 1] != '.' || strncasecmp (host + n - dl, domain, dl) != 0)
        return 0;
    size_t fl = n - dl - 1;
    if (memchr (host, '.', fl))
        return -1; /* deeper names under the domain are never previews */
    if (fl > 5 + 1 + 63 + 1 + HTTPMSG_TOKEN_LEN)
        return -1;
    char first[128];
    for (size_t i = 0; i < fl; i++) {
        char c = (char)tolower ((unsigned char)host[i]);
        if (!(isdigit ((unsigned char)c) || (c >= 'a' && c <= 'z') || c == '-'))
            return -1;
        first[i] = c;
    }
    first[fl] = '\0';
    /* {port}: 1-5 digits without a leading zero. */
    size_t i = 0;
    while (i < fl && isdigit ((unsigned char)first[i]))
        i++;
    if (i == 0 || i > 5 || first[0] == '0' || first[i] != '-')
        return -1;
    long p = strtol (first, NULL, 10);
    if (p < 1 || p > 65535)
        return -1;
    /* {token}: the last HTTPMSG_TOKEN_LEN characters, hex, after a '-'. */
    if (fl < i + 1 + 1 + 1 + HTTPMSG_TOKEN_LEN)
        return -1;
    const char *tok = first + fl - HTTPMSG_TOKEN_LEN;
    if (tok[-1] != '-')
        return -1;
    for (int k = 0; k < HTTPMSG_TOKEN_LEN; k++)
        if (!isxdigit ((unsigned char)tok[k]))
            return -1;
    size_t ll = (size_t)(tok - 1 - (first + i + 1));
    if (ll == 0 || ll > 63)
        return -1;
    memcpy (label, first + i + 1, ll);
    label[ll] = '\0';
    memcpy (token, tok, HTTPMSG_TOKEN_LEN + 1);
    *port = (int)p;
    return 1;
}

void
httpmsg_id_label (const char *id, char *out)
{
    size_t i = 0;
    for (; id[i] && i < 63; i++) {
        char c = (char)tolower ((unsigned char)id[i]);
        out[i] = c == '_' || c == '.' ? '-' : c;
    }
    out[i] = '\0';
}

size_t
httpmsg_head_end (const char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (buf[i] != '\n')
            continue;
        if (i + 1 < len && buf[i + 1] == '\n')
            return i + 2;
        if (i + 2 < len && buf[i + 1] == '\r' && buf[i + 2] == '\n')
            return i + 3;
    }
    return 0;
}

static bool
s_token_char (char c)
{
    return isalnum ((unsigned char)c) || strchr ("!#$%&'*+-.^_`|~", c);
}

static int
s_why (char *why, size_t size, const char *msg)
{
    snprintf (why, size, "%s", msg);
    return -1;
}

int
httpmsg_parse_response (char *buf, size_t len, httpmsg_head_t *h, char *why, size_t whysize)
{
    memset (h, 0, sizeof *h);
    h->content_length = -1;
    char *end = buf + len;
    char *line = buf;
    int lineno = 0;
    while (line < end) {
        char *nl = memchr (line, '\n', (size_t)(end - line));
        if (!nl)
            return s_why (why, whysize, "truncated head");
        char *le = nl;
        if (le > line && le[-1] == '\r')
            le--;
        *le = '\0';
        *nl = '\0';
        if (memchr (line, '\0', (size_t)(le - line)) || memchr (line, '\r', (size_t)(le - line)))
            return s_why (why, whysize, "a control character in the head");
        if (lineno++ == 0) {
            /* HTTP/1.x NNN reason */
            if (strncmp (line, "HTTP/1.", 7) != 0 || !isdigit ((unsigned char)line[7])
                || line[8] != ' ' || !isdigit ((unsigned char)line[9])
                || !isdigit ((unsigned char)line[10]) || !isdigit ((unsigned char)line[11])
                || (line[12] != ' ' && line[12] != '\0'))
                return s_why (why, whysize, "not an HTTP/1.x status line");
            h->minor = line[7] - '0';
            h->status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
            if (h->status < 100 || h->status > 599)
                return s_why (why, whysize, "status code out of range");
        }
        else if (line == le) {
            break; /* the blank line */
        }
        else {
            if (*line == ' ' || *line == '\t')
                return s_why (why, whysize, "folded header line");
            char *colon = strchr (line, ':');
            if (!colon || colon == line)
                return s_why (why, whysize, "a header line without a name");
            for (char *p = line; p < colon; p++)
                if (!s_token_char (*p))
                    return s_why (why, whysize, "an invalid header name");
            *colon = '\0';
            char *v = colon + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            char *ve = v + strlen (v);
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                *--ve = '\0';
            if (h->nheaders == HTTPMSG_MAX_HEADERS)
                return s_why (why, whysize, "too many headers");
            h->headers[h->nheaders].name = line;
            h->headers[h->nheaders].value = v;
            h->nheaders++;
            if (!strcasecmp (line, "Content-Length")) {
                char *e;
                if (!isdigit ((unsigned char)*v))
                    return s_why (why, whysize, "invalid Content-Length");
                long long cl = strtoll (v, &e, 10);
                if (*e || cl < 0 || (h->content_length >= 0 && h->content_length != cl))
                    return s_why (why, whysize, "invalid or conflicting Content-Length");
                h->content_length = cl;
            }
            else if (!strcasecmp (line, "Transfer-Encoding")) {
                /* chunked must be the last coding; anything else leaves
                   the body delimited by the close of the connection. */
                const char *last = strrchr (v, ',');
                last = last ? last + 1 : v;
                while (*last == ' ' || *last == '\t')
                    last++;
                if (!strcasecmp (last, "chunked")) {
                    h->chunked = true;
                    h->other_coding = false;
                }
                else {
                    h->chunked = false;
                    h->other_coding = true;
                }
            }
        }
        line = nl + 1;
    }
    if (lineno == 0)
        return s_why (why, whysize, "empty head");
    if (h->chunked || h->other_coding)
        h->content_length = -1; /* Transfer-Encoding wins (RFC 9112 6.3) */
    return 0;
}

bool
httpmsg_hop_by_hop (const char *name)
{
    static const char *const hop[] = { "Connection",
                                       "Keep-Alive",
                                       "Proxy-Connection",
                                       "Proxy-Authenticate",
                                       "Proxy-Authorization",
                                       "TE",
                                       "Trailer",
                                       "Transfer-Encoding",
                                       "Upgrade",
                                       NULL };
    for (int i = 0; hop[i]; i++)
        if (!strcasecmp (name, hop[i]))
            return true;
    return !strncasecmp (name, "Proxy-", 6);
}

bool
httpmsg_has_token (const char *value, const char *token)
{
    size_t tl = strlen (token);
    const char *p = value;
    while (p && *p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        const char *te = e;
        while (te > p && (te[-1] == ' ' || te[-1] == '\t'))
            te--;
        if ((size_t)(te - p) == tl && !strncasecmp (p, token, tl))
            return true;
        p = e;
    }
    return false;
}

enum {
    C_SIZE = 0,
    C_EXT,
    C_SIZE_LF,
    C_DATA,
    C_DATA_CR,
    C_DATA_LF,
    C_TRAILER_START,
    C_TRAILER,
    C_END_LF,
    C_DONE
};

#define CHUNK_LINE_MAX    4096
#define CHUNK_TRAILER_MAX 65536

static int
s_hex (char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)tolower ((unsigned char)c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

ssize_t
httpmsg_chunked_decode (httpmsg_chunked_t *d, char *buf, size_t n, size_t *used)
{
    size_t in = 0, out = 0;
    while (in < n && d->state != C_DONE) {
        char c = buf[in];
        switch (d->state) {
        case C_SIZE: {
            int v = s_hex (c);
            if (v >= 0) {
                if (++d->digits > 15)
                    return -1;
                d->left = d->left * 16 + (uint64_t)v;
            }
            else if (d->digits == 0)
                return -1;
            else if (c == ';' || c == ' ' || c == '\t')
                d->state = C_EXT;
            else if (c == '\r')
                d->state = C_SIZE_LF;
            else if (c == '\n')
                d->state = d->left ? C_DATA : C_TRAILER_START;
            else
                return -1;
            in++;
            if (++d->line > CHUNK_LINE_MAX)
                return -1;
            break;
        }
        case C_EXT:
            if (c == '\n')
                d->state = d->left ? C_DATA : C_TRAILER_START;
            in++;
            if (++d->line > CHUNK_LINE_MAX)
                return -1;
            break;
        case C_SIZE_LF:
            if (c != '\n')
                return -1;
            d->state = d->left ? C_DATA : C_TRAILER_START;
            in++;
            break;
        case C_DATA: {
            size_t k = n - in;
            if ((uint64_t)k > d->left)
                k = (size_t)d->left;
            memmove (buf + out, buf + in, k);
            out += k;
            in += k;
            d->left -= k;
            if (d->left == 0)
                d->state = C_DATA_CR;
            break;
        }
        case C_DATA_CR:
        case C_DATA_LF:
            if (c == '\r' && d->state == C_DATA_CR)
                d->state = C_DATA_LF;
            else if (c == '\n') {
                d->state = C_SIZE;
                d->digits = 0;
                d->line = 0;
                d->left = 0;
            }
            else
                return -1;
            in++;
            break;
        case C_TRAILER_START:
            if (c == '\r')
                d->state = C_END_LF;
            else if (c == '\n')
                d->state = C_DONE;
            else
                d->state = C_TRAILER;
            in++;
            if (++d->trailers > CHUNK_TRAILER_MAX)
                return -1;
            break;
        case C_TRAILER:
            if (c == '\n')
                d->state = C_TRAILER_START;
            in++;
            if (++d->trailers > CHUNK_TRAILER_MAX)
                return -1;
            break;
        case C_END_LF:
            if (c != '\n')
                return -1;
            d->state = C_DONE;
            in++;
            break;
        }
    }
    d->done = d->state == C_DONE;
    *used = in;
    return (ssize_t)out;
}
