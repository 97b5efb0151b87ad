/* compat.c - dispatch to the compatibility surfaces and response helpers. */
#include "compat.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const struct {
    const char *name;
    compat_handler_fn *fn;
} s_surfaces[] = {
    { "acontext", compat_acontext_handle },
    { "kapin", compat_kapin_handle },
    { "lifecycle", compat_lifecycle_handle },
    { "artifact", compat_artifact_handle },
};

static compat_handler_fn *
s_by_name (const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof s_surfaces / sizeof s_surfaces[0]; i++)
        if (strlen (s_surfaces[i].name) == len && !strncmp (s_surfaces[i].name, name, len))
            return s_surfaces[i].fn;
    return NULL;
}

compat_handler_fn *
compat_lookup (const config_t *cfg, const char *url, const char **rest)
{
    static const char prefix[] = "/compat/";
    if (!strncmp (url, prefix, sizeof prefix - 1)) {
        const char *name = url + sizeof prefix - 1;
        const char *slash = strchr (name, '/');
        size_t len = slash ? (size_t)(slash - name) : strlen (name);
        compat_handler_fn *fn = s_by_name (name, len);
        if (fn)
            *rest = slash ? slash : "/";
        return fn;
    }
    if (cfg->compat_root[0] && strncmp (url, "/v1/", 4) && strcmp (url, "/v1")) {
        compat_handler_fn *fn = s_by_name (cfg->compat_root, strlen (cfg->compat_root));
        if (fn)
            *rest = url;
        return fn;
    }
    return NULL;
}

/* A body set earlier gives way to the new one. */
static void
s_drop_fd (compat_response_t *resp)
{
    if (resp->has_body_fd)
        close (resp->body_fd);
    resp->has_body_fd = false;
}

int
compat_json (compat_response_t *resp, unsigned status, json_t *body)
{
    s_drop_fd (resp);
    char *text = body ? json_dumps (body, JSON_COMPACT) : NULL;
    json_decref (body);
    free (resp->body);
    resp->status = status;
    resp->content_type[0] = '\0';
    resp->body = text;
    resp->len = text ? strlen (text) : 0;
    return 0;
}

int
compat_bytes (compat_response_t *resp, unsigned status, const char *ctype, const void *data,
              size_t len)
{
    s_drop_fd (resp);
    free (resp->body);
    resp->body = NULL;
    resp->len = 0;
    resp->status = status;
    snprintf (resp->content_type, sizeof resp->content_type, "%s",
              ctype ? ctype : "application/octet-stream");
    if (len) {
        resp->body = malloc (len);
        if (!resp->body) {
            resp->status = 500;
            return 0;
        }
        memcpy (resp->body, data, len);
        resp->len = len;
    }
    return 0;
}

int
compat_file (compat_response_t *resp, unsigned status, const char *ctype, int fd, int64_t len)
{
    compat_bytes (resp, status, ctype, NULL, 0);
    resp->has_body_fd = true;
    resp->body_fd = fd;
    resp->body_fd_len = len;
    return 0;
}

void
compat_add_header (compat_response_t *resp, const char *name, const char *value)
{
    if (resp->nheaders >= COMPAT_MAX_HEADERS)
        return;
    snprintf (resp->headers[resp->nheaders].name, sizeof resp->headers[0].name, "%s", name);
    snprintf (resp->headers[resp->nheaders].value, sizeof resp->headers[0].value, "%s", value);
    resp->nheaders++;
}

void
compat_response_clear (compat_response_t *resp)
{
    free (resp->body);
    s_drop_fd (resp);
    memset (resp, 0, sizeof *resp);
}

bool
compat_method_allowed (const char *list, const char *method)
{
    size_t n = strlen (method);
    for (const char *p = list; n && *p;) {
        const char *end = strchr (p, ',');
        size_t len = end ? (size_t)(end - p) : strlen (p);
        if (len == n && !strncmp (p, method, n))
            return true;
        p = end ? end + 2 : p + len;
    }
    return false;
}
