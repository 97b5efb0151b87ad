/* gateway.h - the subset of the Jupyter Server REST and websocket API that
   a Jupyter server in gateway mode (`--gateway-url`) uses: kernelspecs,
   kernels (create, list, get, delete, interrupt, restart) and the
   /api/kernels/{id}/channels websocket. Each gateway kernel is a code
   context (contexts.h) whose id is the kernel id, in a sandbox of the
   caller's tenant: a sandbox of its own (`gw-<kernel id>`, deleted with the
   kernel) unless the create request names one. Idle kernels are culled.
   Knows nothing of libmicrohttpd: http_api.c hands it requests and the
   upgraded socket. */
#ifndef SANDBOXD_GATEWAY_H
#define SANDBOXD_GATEWAY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "contexts.h"
#include "sandbox.h"
#include "util.h"

/* Largest websocket message accepted from a front end. */
#define GATEWAY_MAX_MESSAGE (16u << 20)

typedef struct _gateway_t gateway_t;

/* Loads the kernel table from <state_dir>/gateway.json and starts the cull
   thread. All arguments are borrowed. Caller owns the result. */
gateway_t *gateway_new (const config_t *cfg, sandbox_mgr_t *mgr, contexts_t *ctxs, err_t *err);
/* Make open websockets close (1001) within half a second and stop culling:
   before the HTTP server stops, which waits for them. */
void gateway_shutdown (gateway_t *self);
void gateway_destroy (gateway_t **self_p);

/* True for the paths served here: /api, /api/... and /kernelspecs/... */
bool gateway_owns (const char *url);

/* A REST request (the websocket path excepted) of an authenticated
   tenant. Returns the HTTP status; *out is the JSON body (caller owns;
   NULL for 204) or, for statuses >= 400, NULL with *err filled. */
int gateway_handle (gateway_t *self, const char *tenant, const char *method, const char *url,
                    const char *body, size_t len, json_t **out, err_t *err);

/* If url is a kernel's channels path: 1 with the kernel id copied to kid
   (37 bytes), else 0. */
int gateway_channels_url (const char *url, char kid[37]);

/* Check that tenant may open kernel kid's channels. A prepared relay
   (caller owns, passes it to gateway_ws_run or gateway_ws_free), or NULL
   with 404. */
typedef struct _gateway_ws_t gateway_ws_t;
gateway_ws_t *gateway_ws_prepare (gateway_t *self, const char *tenant, const char *kid, err_t *err);
void gateway_ws_free (gateway_ws_t **ws_p);

/* Relay Jupyter messages between the upgraded socket fd (borrowed; extra
   holds bytes read past the request) and the kernel until either side
   goes away. Blocks; frees ws. */
void gateway_ws_run (gateway_ws_t *ws, int fd, const char *extra, size_t extra_len);

#endif
