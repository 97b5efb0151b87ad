/* sandbox.h - sandbox lifecycle: create (or get), list, extend, delete,
   expiry and recovery after a broker restart. Ties the registry, the
   runtime and the agent link together; knows nothing of HTTP. */
#ifndef SANDBOXD_SANDBOX_H
#define SANDBOXD_SANDBOX_H

#include <jansson.h>

#include "agent_link.h"
#include "config.h"
#include "registry.h"
#include "runtime.h"
#include "util.h"

typedef struct _sandbox_mgr_t sandbox_mgr_t;

/* cfg, reg and link are borrowed and must outlive the manager. */
sandbox_mgr_t *sandbox_mgr_new (const config_t *cfg, registry_t *reg, agent_link_t *link,
                                err_t *err);
void sandbox_mgr_destroy (sandbox_mgr_t **self_p);

/* At start-up: finish interrupted creates and deletes, reap expired
   sandboxes, and re-attach (restarting containers when needed) the rest. */
int sandbox_mgr_recover (sandbox_mgr_t *self, err_t *err);

/* Keep cfg->warm_sandboxes ready sandboxes (default limits, kernels
   warming through the started hook) in the background; a create adopts one
   instead of starting a container. stop_pool ends the thread and destroys
   the pooled sandboxes, which hold no one's state. */
void sandbox_mgr_start_pool (sandbox_mgr_t *self);
void sandbox_mgr_stop_pool (sandbox_mgr_t *self);

/* Watch every running sandbox's container init (the agent, PID 1) every
   500 ms. When one dies, calls in flight to it end with a 503
   sandbox_unavailable, observers get stopped then started (recovered)
   notifications, and the container is started again on the same rootfs
   (files kept; processes, sessions and kernel state lost); if that fails
   the sandbox is deleted. stop ends the thread. */
void sandbox_mgr_start_watchdog (sandbox_mgr_t *self);
void sandbox_mgr_stop_watchdog (sandbox_mgr_t *self);

/* Reap every sandbox past its expiry. Returns how many were reaped. */
int sandbox_mgr_reap (sandbox_mgr_t *self);

/* POST /v1/sandboxes. *created is 1 for a new sandbox, 0 when the id named
   an existing one. *out (caller owns) is the sandbox object. */
int sandbox_create (sandbox_mgr_t *self, const char *tenant, json_t *body, json_t **out,
                    int *created, err_t *err);
int sandbox_get (sandbox_mgr_t *self, const char *tenant, const char *id, json_t **out, err_t *err);
int sandbox_list (sandbox_mgr_t *self, const char *tenant, json_t **out, err_t *err);
int sandbox_extend (sandbox_mgr_t *self, const char *tenant, const char *id, json_t *body,
                    json_t **out, err_t *err);
int sandbox_delete (sandbox_mgr_t *self, const char *tenant, const char *id, err_t *err);

/* POST /v1/sandboxes/{id}/env: body {VAR: "value" | null, ...} sets (or,
   with null, unsets) sandbox-wide variables for every later exec, process,
   session and new context. *out (caller owns) is {"env": {...}}. */
int sandbox_set_env (sandbox_mgr_t *self, const char *tenant, const char *id, json_t *body,
                     json_t **out, err_t *err);

/* Look up a running sandbox for an operation inside it: its container id
   (cid, 64 bytes) and its env as a new JSON object (caller owns). 404 when
   absent, 409 while it is being created or deleted. */
int sandbox_resolve (sandbox_mgr_t *self, const char *tenant, const char *id, char *cid,
                     json_t **env, err_t *err);

/* The same, also giving the names unset with POST /env (a new array,
   caller owns) so that sessions can drop them. */
int sandbox_resolve_env (sandbox_mgr_t *self, const char *tenant, const char *id, char *cid,
                         json_t **env, json_t **unset, err_t *err);

/* Observers of sandbox life: started is called (from the creating thread)
   once a sandbox's agent answers, after create (recovered false) and after
   a broker restart re-attached it or its dead container was started again
   (recovered true); stopped just before its container is torn down: for
   good (recovered false), or to be replaced by a new container of the same
   sandbox on the same files (recovered true: keep what lives outside the
   container, such as bucket mounts, exposed ports, context records). */
typedef void (sandbox_hook_fn) (void *arg, const char *cid, const char *dir, bool recovered);
#define SANDBOX_MAX_HOOKS 8
/* Add an observer (arg must be non-NULL and identifies it). -1 when
   SANDBOX_MAX_HOOKS are already set. Started hooks run in the order they
   were added, stopped hooks in the reverse order. */
int sandbox_mgr_add_hooks (sandbox_mgr_t *self, sandbox_hook_fn *started, sandbox_hook_fn *stopped,
                           void *arg);
void sandbox_mgr_remove_hooks (sandbox_mgr_t *self, void *arg);

/* The host directory of container cid (<state>/sandboxes/<cid>). */
void sandbox_mgr_dir (sandbox_mgr_t *self, const char *cid, char *buf, size_t size);

/* PID on the host of container cid's init process, or -1. */
int sandbox_mgr_pid (sandbox_mgr_t *self, const char *cid);

agent_link_t *sandbox_mgr_link (sandbox_mgr_t *self);
const config_t *sandbox_mgr_config (sandbox_mgr_t *self);

#endif
