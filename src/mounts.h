/* mounts.h - S3-compatible buckets mounted into a sandbox with s3fs.

   The broker runs s3fs on the host, below the sandbox's shared mount point
   <dir>/mnt (see runtime.h); the mount propagates into the container at
   RUNTIME_MOUNTS_PATH/<n>, and a bind made inside the container's mount
   namespace puts it at the path the client asked for. Credentials stay
   with the broker: a root-only passwd file, removed once s3fs has read it.
   Mounts are recorded in <dir>/mounts.json so that a restarted broker still
   lists and unmounts them. Knows nothing of HTTP. */
#ifndef SANDBOXD_MOUNTS_H
#define SANDBOXD_MOUNTS_H

#include <jansson.h>

#include "config.h"
#include "sandbox.h"
#include "util.h"

typedef struct _mounts_t mounts_t;

/* Watch mgr's sandboxes (unmount before a sandbox is torn down, check
   mounts after a restart): create it before sandbox_mgr_recover. mgr and
   cfg are borrowed. NULL with *err on failure. */
mounts_t *mounts_new (sandbox_mgr_t *mgr, const config_t *cfg, err_t *err);
void mounts_destroy (mounts_t **self_p);

/* POST /v1/sandboxes/{id}/mounts: mount a bucket. *out (caller owns) is
   the mount as GET lists it. */
int mounts_create (mounts_t *self, const char *tenant, const char *id, json_t *body, json_t **out,
                   err_t *err);

/* GET /v1/sandboxes/{id}/mounts: {"mounts": [...]}, never a secret. */
int mounts_list (mounts_t *self, const char *tenant, const char *id, json_t **out, err_t *err);

/* DELETE /v1/sandboxes/{id}/mounts?path=P: unmount the bucket at P. */
int mounts_delete (mounts_t *self, const char *tenant, const char *id, const char *path,
                   json_t **out, err_t *err);

/* Exposed for unit tests: validate and normalise a mount path (absolute,
   no "." or "..", not a system directory) into buf. 0 or -1 with a 400. */
int mounts_check_path (const char *path, char *buf, size_t size, err_t *err);

/* Exposed for unit tests: validate an endpoint URL (http or https, a
   host, an optional port, no path) into buf without a trailing slash, and
   its host into host. 0 or -1 with a 400. */
int mounts_check_endpoint (const char *url, char *buf, size_t size, char *host, size_t hsize,
                           err_t *err);

#endif
