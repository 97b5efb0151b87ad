/* auth.h - bearer tokens to tenants, from a tokens file. */
#ifndef SANDBOXD_AUTH_H
#define SANDBOXD_AUTH_H

#include "util.h"

typedef struct _auth_t auth_t;

/* Load a tokens file: one `TOKEN TENANT` pair a line, `#` comments. Tokens
   are at least 16 characters; tenants are identifiers (util_valid_id). A
   world-writable file is refused. Caller owns the result; NULL with *err. */
auth_t *auth_load (const char *path, err_t *err);

/* Without a tokens file every caller is tenant "default". */
auth_t *auth_new_open (void);

void auth_destroy (auth_t **self_p);

/* True when the broker runs without tokens (loopback-only mode). */
int auth_is_open (const auth_t *self);

/* The tenant for an `Authorization` header value ("Bearer TOKEN", or
   "token TOKEN" as Jupyter's gateway client sends it), or NULL.
   The token is compared against every entry in constant time. The returned
   string lives as long as self. */
const char *auth_tenant (const auth_t *self, const char *authorization);

/* Number of tokens loaded. */
size_t auth_count (const auth_t *self);

#endif
