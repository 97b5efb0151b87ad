/* ports.h - exposed ports of sandboxes: which ports a tenant exposed, their
   preview tokens, and the way into each sandbox's network namespace. The
   sandbox keeps its loopback-only namespace: the broker reaches a port by
   creating its socket inside that namespace, never by giving the sandbox a
   route. Knows nothing of HTTP. */
#ifndef SANDBOXD_PORTS_H
#define SANDBOXD_PORTS_H

#include <jansson.h>

#include "config.h"
#include "sandbox.h"
#include "util.h"

typedef struct _ports_t ports_t;

/* Watch sandboxes start (open their network namespace, load their exposed
   ports from <dir>/ports.json) and stop (forget both). Must be created
   before sandbox_mgr_recover so that recovered sandboxes are seen. mgr and
   cfg are borrowed. NULL with *err on failure. */
ports_t *ports_new (sandbox_mgr_t *mgr, const config_t *cfg, err_t *err);
void ports_destroy (ports_t **self_p);

/* The port the broker listens on, for the preview URLs it hands out. */
void ports_set_listen_port (ports_t *self, int port);

/* POST /v1/sandboxes/{id}/ports {port, name?}. *out (caller owns) is
   {port, name, url, path, token, created_at}; *created is 0 when the port
   was already exposed (the existing entry is returned unchanged). */
int ports_expose (ports_t *self, const char *tenant, const char *id, json_t *body, json_t **out,
                  int *created, err_t *err);

/* GET /v1/sandboxes/{id}/ports: {"ports": [...]} (caller owns). */
int ports_list (ports_t *self, const char *tenant, const char *id, json_t **out, err_t *err);

/* DELETE /v1/sandboxes/{id}/ports/{port}; port is the URL segment. */
int ports_unexpose (ports_t *self, const char *tenant, const char *id, const char *port,
                    json_t **out, err_t *err);

/* Parse a port number from a URL segment or a JSON integer: 1..65535.
   -1 with a 400 naming field otherwise. */
int ports_parse (const char *s, const char *field, err_t *err);

/* Where a proxied request goes: a sandbox (by container id) and a port. */
typedef struct {
    int port;
    char cid[64];
    char tenant[64];
    char id[64];
} ports_target_t;

/* Path form: the tenant's sandbox id and an exposed port. 404 for another
   tenant's sandbox, an unexposed port or no sandbox. */
int ports_target_by_path (ports_t *self, const char *tenant, const char *id, int port,
                          ports_target_t *t, err_t *err);

/* Preview-host form: the token is the credential; port and label must be
   those of the exposed port it belongs to (label compared with the id's
   preview label, see httpmsg_id_label). 404 otherwise. */
int ports_target_by_host (ports_t *self, int port, const char *label, const char *token,
                          ports_target_t *t, err_t *err);

/* A TCP socket connected to 127.0.0.1:t->port inside the sandbox's network
   namespace (blocking, close-on-exec; a receive times out every second so
   that a waiting reader can look around). -1 with a 502 when nothing
   listens there or the sandbox is gone. */
int ports_connect (ports_t *self, const ports_target_t *t, err_t *err);

#endif
