/* registry.h - the sandbox registry in SQLite: what exists, for whom, until
   when. It survives broker restarts; everything else is rebuilt from it. */
#ifndef SANDBOXD_REGISTRY_H
#define SANDBOXD_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "runtime.h"
#include "util.h"

typedef struct _registry_t registry_t;

typedef struct {
    char tenant[64];
    char id[64];        /* the client-visible id, unique per tenant */
    char cid[64];       /* the container id, unique per broker */
    int64_t created_at; /* epoch ms */
    int64_t expires_at; /* epoch ms */
    char status[16];    /* creating, running, deleting */
    char *env_json;     /* JSON object text, owned (free with registry_rec_clear) */
    limits_t limits;
    char lower[1024]; /* image rootfs the sandbox was created on */
} registry_rec_t;

/* Open (creating if needed) the registry database at path. Caller owns it. */
registry_t *registry_open (const char *path, err_t *err);
void registry_destroy (registry_t **self_p);

/* Insert a new record. 409 "conflict" when (tenant, id) exists. */
int registry_insert (registry_t *self, const registry_rec_t *rec, err_t *err);

/* Fetch one record; 404 when absent. rec must be cleared by the caller. */
int registry_get (registry_t *self, const char *tenant, const char *id, registry_rec_t *rec,
                  err_t *err);

/* All records of a tenant (or of every tenant when tenant is NULL), oldest
   first. *out is a malloc'd array the caller frees with registry_list_free. */
int registry_list (registry_t *self, const char *tenant, registry_rec_t **out, size_t *count,
                   err_t *err);
void registry_list_free (registry_rec_t *list, size_t count);

/* Records whose expires_at <= now_ms, any tenant. */
int registry_expired (registry_t *self, int64_t now_ms, registry_rec_t **out, size_t *count,
                      err_t *err);

int registry_count (registry_t *self, const char *tenant, int64_t *count, err_t *err);
int registry_set_expiry (registry_t *self, const char *tenant, const char *id, int64_t expires_at,
                         err_t *err);
int registry_set_status (registry_t *self, const char *tenant, const char *id, const char *status,
                         err_t *err);
int registry_delete (registry_t *self, const char *tenant, const char *id, err_t *err);
int registry_set_env (registry_t *self, const char *tenant, const char *id, const char *env_json,
                      err_t *err);

/* Hand the running sandbox (from_tenant, from_id) over to `to` in one
   statement: tenant, id, times, env and limits are replaced, the cid and
   image stay. 0 on success, 404 when it is gone (another request took it),
   409 when `to` names an existing (tenant, id). */
int registry_adopt (registry_t *self, const char *from_tenant, const char *from_id,
                    const registry_rec_t *to, err_t *err);

void registry_rec_clear (registry_rec_t *rec);

#endif
