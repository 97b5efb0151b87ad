/* backups.h - backups of a directory of a sandbox. The archive (tar + gzip)
   is made inside the sandbox as the sandbox user, copied out by the broker
   into <state>/backups/<tenant>/<backup id>.tgz (root only, 0700/0600) next
   to its record <backup id>.json, and restored into any running sandbox of
   the same tenant by copying it into that sandbox and extracting it there.
   The broker never parses an archive: it only moves bytes, so a hostile
   archive meets tar only inside a sandbox. Backups outlive the sandbox they
   came from and broker restarts; they are deleted by DELETE or once older
   than backup_retention_days. Knows nothing of HTTP. */
#ifndef SANDBOXD_BACKUPS_H
#define SANDBOXD_BACKUPS_H

#include <jansson.h>

#include "config.h"
#include "sandbox.h"
#include "util.h"

#define BACKUPS_MAX_EXCLUDES    64    /* patterns in one backup */
#define BACKUPS_MAX_EXCLUDE_LEN 512   /* bytes in one pattern */
#define BACKUPS_MAX_INFLIGHT    32    /* backups being made at once, all tenants */
#define BACKUPS_SWEEP_MS        60000 /* how often expired backups are looked for */

typedef struct _backups_t backups_t;

/* Make <state>/backups (0700), remove what an interrupted backup left
   there and the backups past their retention, and start the thread that
   keeps removing expired ones. cfg and mgr are borrowed and must outlive
   it. Caller owns the result. NULL with *err. */
backups_t *backups_new (const config_t *cfg, sandbox_mgr_t *mgr, err_t *err);
void backups_destroy (backups_t **self_p);

/* POST /v1/sandboxes/{id}/backups, body {dir, excludes?}. *out (caller
   owns) is the new backup's record. Errors: 400 naming the field, 404 (no
   such sandbox, or dir missing in it), 413 backup_too_large (nothing
   kept), 422 not_a_directory / backup_failed, 429 quota_exceeded or busy,
   504 backup_timeout, 507 insufficient_storage. */
int backups_create (backups_t *self, const char *tenant, const char *id, json_t *body, json_t **out,
                    err_t *err);

/* All backups of tenant, oldest first: *out = {"backups": [...]}. */
int backups_list (backups_t *self, const char *tenant, json_t **out, err_t *err);

/* One backup's record; 404 when tenant has no backup bid. */
int backups_get (backups_t *self, const char *tenant, const char *bid, json_t **out, err_t *err);

/* POST /v1/sandboxes/{id}/backups/{bid}/restore, body {dir?}: extract the
   backup into dir (default: the directory it was made from) of sandbox id,
   creating dir as needed. Existing files of the same name are replaced,
   others are left alone. 422 restore_failed when tar fails in there. */
int backups_restore (backups_t *self, const char *tenant, const char *id, const char *bid,
                     json_t *body, json_t **out, err_t *err);

/* Delete a backup (its archive and its record). 404 when absent. */
int backups_delete (backups_t *self, const char *tenant, const char *bid, err_t *err);

/* Delete every backup past its retention. Returns how many went. */
int backups_prune (backups_t *self);

/* Validate and normalise a directory given in field: absolute, at most
   4096 bytes, "." and ".." resolved lexically, not "/" nor under /proc,
   /sys or /dev. The result goes to out (size >= 4097). 400 naming field. */
int backups_check_dir (const char *field, const char *dir, char *out, size_t size, err_t *err);

/* True when s has the shape of a backup id ("bk-" and 24 hex digits). */
bool backups_valid_id (const char *s);

#endif
