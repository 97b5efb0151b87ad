/* http_api.h - the HTTP server (libmicrohttpd) and request routing. The
   only module that sees libmicrohttpd types (with proxy.c, its helper for
   exposed ports); handlers stay thin and call into sandbox.c and exec.c. */
#ifndef SANDBOXD_HTTP_API_H
#define SANDBOXD_HTTP_API_H

#include "auth.h"
#include "config.h"
#include "contexts.h"
#include "ports.h"
#include "mounts.h"
#include "sandbox.h"
#include "util.h"

typedef struct _http_api_t http_api_t;

/* Parse cfg->listen and start serving. Without tokens (auth open) only a
   loopback address is accepted. ports is told the bound port. Caller owns
   the result and must destroy it (which stops the server). */
http_api_t *http_api_start (const config_t *cfg, auth_t *auth, sandbox_mgr_t *mgr, contexts_t *ctxs,
                            ports_t *ports, mounts_t *mounts, err_t *err);

/* The port actually bound (useful with port 0). */
int http_api_port (const http_api_t *self);

void http_api_destroy (http_api_t **self_p);

#endif
