/* proxy.h - HTTP (and WebSocket) proxying from the broker's libmicrohttpd
   server to an exposed port inside a sandbox, in both forms: the path form
   /v1/sandboxes/{id}/ports/{port}/... (bearer token) and the preview-host
   form {port}-{id}-{token}.{preview_domain} (the token is the credential).
   Bodies stream both ways through fixed buffers. Part of the HTTP layer. */
#ifndef SANDBOXD_PROXY_H
#define SANDBOXD_PROXY_H

#include <microhttpd.h>

#include "auth.h"
#include "config.h"
#include "ports.h"

typedef struct _proxy_t proxy_t;
typedef struct _proxy_req_t proxy_req_t;

/* cfg, auth and ports are borrowed. */
proxy_t *proxy_new (const config_t *cfg, auth_t *auth, ports_t *ports);
void proxy_destroy (proxy_t **self_p);

/* On the first access-handler call of a request, before its body is read:
   0 when the request is not for the proxy (route it as usual). 1 when it
   is: then either *out is a proxied request (feed its body to proxy_body,
   then call proxy_finish), or an answer (an error) was queued already and
   *rc is what the access handler returns. raw_uri is the request target as
   received, before any unescaping. */
int proxy_begin (proxy_t *self, struct MHD_Connection *conn, const char *method,
                 const char *raw_uri, proxy_req_t **out, enum MHD_Result *rc);

/* The next piece of the request body: sent upstream as it comes. */
void proxy_body (proxy_req_t *p, const char *data, size_t n);

/* The request body is complete: read the upstream's answer head and queue
   a response whose body streams from upstream (or a 101 whose connection
   is then relayed both ways). Takes *p_p. */
enum MHD_Result proxy_finish (proxy_req_t **p_p, struct MHD_Connection *conn);

/* Drop a proxied request that will not finish (NULL is fine). */
void proxy_req_free (proxy_req_t **p_p);

#endif
