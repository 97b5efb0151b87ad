/* compat.h - the compatibility surfaces: thin adapters that speak the REST
   shapes of existing sandbox services (docs/compat.md) and call the native
   modules underneath. HTTP-library free: http_api.c hands each request
   over as a compat_request_t, buffered and bounded, and sends back the
   compat_response_t a surface fills in. */
#ifndef SANDBOXD_COMPAT_H
#define SANDBOXD_COMPAT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth.h"
#include "config.h"
#include "contexts.h"
#include "sandbox.h"
#include "util.h"

/* What a surface may use. Borrowed; all outlive every request. */
typedef struct {
    const config_t *cfg;
    auth_t *auth;
    sandbox_mgr_t *mgr;
    contexts_t *ctxs;
    struct _mounts_t *mounts; /* bucket mounts (mounts.h) */
} compat_env_t;

typedef struct {
    const char *method;
    const char *path; /* below the surface prefix, starting with '/' ("/" at least) */
    const char *body; /* the whole request body (NUL-terminated), or NULL */
    size_t len;
    int too_large; /* the body was over cfg->max_body_bytes and was dropped */
    /* A request header (case-insensitive name) or a query argument, NULL
       when absent. */
    const char *(*header) (void *cls, const char *name);
    const char *(*query) (void *cls, const char *name);
    void *cls;
} compat_request_t;

#define COMPAT_MAX_HEADERS 16

typedef struct {
    unsigned status;
    char content_type[96]; /* "" = application/json */
    char *body;            /* malloc'd, owned by the response; may be NULL */
    size_t len;
    int nheaders; /* extra response headers (CORS, Content-Disposition, ...) */
    /* Instead of body: send body_fd's first body_fd_len bytes (a file,
       streamed, never held in memory). Owned by the response. */
    bool has_body_fd;
    int body_fd;
    int64_t body_fd_len;
    struct {
        char name[64];
        char value[256];
    } headers[COMPAT_MAX_HEADERS];
} compat_response_t;

/* The surfaces, by the name used in /compat/<name> and in compat_root. */
typedef int (compat_handler_fn) (const compat_env_t *env, const compat_request_t *req,
                                 compat_response_t *resp);

/* Which surface serves url: for "/compat/NAME/rest" the handler of NAME
   with *rest pointing at "/rest" ("/" when empty); otherwise, when
   cfg->compat_root names a surface and url is not a native one (/v1/...),
   that surface with *rest = url. NULL when url is not a compat URL. */
compat_handler_fn *compat_lookup (const config_t *cfg, const char *url, const char **rest);

/* True when method is one of list, a ", "-separated list of methods. */
bool compat_method_allowed (const char *list, const char *method);

/* Response helpers for the surfaces. Each sets resp and returns 0. */
int compat_json (compat_response_t *resp, unsigned status, json_t *body); /* steals body */
int compat_bytes (compat_response_t *resp, unsigned status, const char *ctype, const void *data,
                  size_t len);
/* The body is the open file fd (stolen, closed when the response is done),
   len bytes from its start. */
int compat_file (compat_response_t *resp, unsigned status, const char *ctype, int fd, int64_t len);
void compat_add_header (compat_response_t *resp, const char *name, const char *value);
void compat_response_clear (compat_response_t *resp);

/* The surfaces (compat_<name>.c). */
compat_handler_fn compat_acontext_handle;
compat_handler_fn compat_kapin_handle;
compat_handler_fn compat_lifecycle_handle;
compat_handler_fn compat_artifact_handle;

#endif
