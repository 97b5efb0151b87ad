/* registry.c - SQLite-backed sandbox registry. One connection guarded by a
   mutex: every statement is short, and WAL keeps readers cheap. */
#include "registry.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct _registry_t {
    sqlite3 *db;
    pthread_mutex_t lock;
};

static const char *s_schema
    = "CREATE TABLE IF NOT EXISTS sandboxes ("
      " tenant TEXT NOT NULL,"
      " id TEXT NOT NULL,"
      " cid TEXT NOT NULL UNIQUE,"
      " created_at INTEGER NOT NULL,"
      " expires_at INTEGER NOT NULL,"
      " status TEXT NOT NULL,"
      " env TEXT NOT NULL DEFAULT '{}',"
      " memory_mb INTEGER NOT NULL,"
      " cpus REAL NOT NULL,"
      " pids INTEGER NOT NULL,"
      " lower TEXT NOT NULL,"
      " disk_mb INTEGER NOT NULL DEFAULT 0,"
      " PRIMARY KEY (tenant, id));"
      "CREATE INDEX IF NOT EXISTS sandboxes_expiry ON sandboxes (expires_at);";

static int
s_db_error (registry_t *self, err_t *err, const char *what)
{
    log_error ("registry: %s: %s", what, sqlite3_errmsg (self->db));
    /* A full or read-only state dir is the operator's to fix, not a bug:
       SQLite rolls the statement back, so the registry stays consistent. */
    switch (sqlite3_errcode (self->db)) {
    case SQLITE_FULL:
        return err_set (err, 507, "insufficient_storage",
                        "registry: %s failed: the state directory is full", what);
    case SQLITE_READONLY:
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
        return err_set (err, 503, "state_unavailable",
                        "registry: %s failed: the state directory cannot be written (%s)", what,
                        sqlite3_errmsg (self->db));
    }
    return err_set (err, 500, "internal", "registry: %s failed", what);
}

/* Registries made before a column existed get it with its default:
   disk_mb 0 = a writable layer without a size limit, as they were made. */
static int
s_migrate (registry_t *self, char **msg)
{
    sqlite3_stmt *st = NULL;
    bool has_disk = false;
    if (sqlite3_prepare_v2 (self->db, "PRAGMA table_info(sandboxes)", -1, &st, NULL) != SQLITE_OK)
        return -1;
    while (sqlite3_step (st) == SQLITE_ROW) {
        const unsigned char *name = sqlite3_column_text (st, 1);
        if (name && !strcmp ((const char *)name, "disk_mb"))
            has_disk = true;
    }
    sqlite3_finalize (st);
    if (!has_disk
        && sqlite3_exec (self->db,
                         "ALTER TABLE sandboxes ADD COLUMN disk_mb INTEGER NOT NULL DEFAULT 0",
                         NULL, NULL, msg)
               != SQLITE_OK)
        return -1;
    return 0;
}

registry_t *
registry_open (const char *path, err_t *err)
{
    registry_t *self = calloc (1, sizeof *self);
    if (!self) {
        err_set (err, 500, "internal", "out of memory");
        return NULL;
    }
    pthread_mutex_init (&self->lock, NULL);
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX;
    if (sqlite3_open_v2 (path, &self->db, flags, NULL) != SQLITE_OK) {
        err_set (err, 500, "internal", "opening registry %s: %s", path,
                 self->db ? sqlite3_errmsg (self->db) : "out of memory");
        registry_destroy (&self);
        return NULL;
    }
    sqlite3_busy_timeout (self->db, 5000);
    /* WAL with synchronous=NORMAL survives a killed broker (only an OS crash
       can lose the last transactions), and writers never block readers. */
    char *msg = NULL;
    if (sqlite3_exec (self->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", NULL, NULL,
                      &msg)
            != SQLITE_OK
        || sqlite3_exec (self->db, s_schema, NULL, NULL, &msg) != SQLITE_OK
        || s_migrate (self, &msg) < 0) {
        err_set (err, 500, "internal", "initialising registry %s: %s", path, msg ? msg : "?");
        sqlite3_free (msg);
        registry_destroy (&self);
        return NULL;
    }
    return self;
}

void
registry_destroy (registry_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    registry_t *self = *self_p;
    if (self->db)
        sqlite3_close (self->db);
    pthread_mutex_destroy (&self->lock);
    free (self);
    *self_p = NULL;
}

void
registry_rec_clear (registry_rec_t *rec)
{
    if (!rec)
        return;
    free (rec->env_json);
    memset (rec, 0, sizeof *rec);
}

#define COLUMNS                                                                                    \
    "tenant, id, cid, created_at, expires_at, status, env, memory_mb, cpus, pids, lower, disk_mb"

static void
s_copy_text (char *dst, size_t size, sqlite3_stmt *st, int col)
{
    const unsigned char *t = sqlite3_column_text (st, col);
    snprintf (dst, size, "%s", t ? (const char *)t : "");
}

static void
s_row (sqlite3_stmt *st, registry_rec_t *rec)
{
    memset (rec, 0, sizeof *rec);
    s_copy_text (rec->tenant, sizeof rec->tenant, st, 0);
    s_copy_text (rec->id, sizeof rec->id, st, 1);
    s_copy_text (rec->cid, sizeof rec->cid, st, 2);
    rec->created_at = sqlite3_column_int64 (st, 3);
    rec->expires_at = sqlite3_column_int64 (st, 4);
    s_copy_text (rec->status, sizeof rec->status, st, 5);
    const unsigned char *env = sqlite3_column_text (st, 6);
    rec->env_json = strdup (env ? (const char *)env : "{}");
    rec->limits.memory_mb = sqlite3_column_int64 (st, 7);
    rec->limits.cpus = sqlite3_column_double (st, 8);
    rec->limits.pids = sqlite3_column_int64 (st, 9);
    s_copy_text (rec->lower, sizeof rec->lower, st, 10);
    rec->limits.disk_mb = sqlite3_column_int64 (st, 11);
}

int
registry_insert (registry_t *self, const registry_rec_t *rec, err_t *err)
{
    sqlite3_stmt *st = NULL;
    int rc = -1;
    pthread_mutex_lock (&self->lock);
    if (sqlite3_prepare_v2 (self->db,
                            "INSERT INTO sandboxes (" COLUMNS ") VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                            -1, &st, NULL)
        != SQLITE_OK) {
        s_db_error (self, err, "insert");
        goto out;
    }
    sqlite3_bind_text (st, 1, rec->tenant, -1, SQLITE_STATIC);
    sqlite3_bind_text (st, 2, rec->id, -1, SQLITE_STATIC);
    sqlite3_bind_text (st, 3, rec->cid, -1, SQLITE_STATIC);
    sqlite3_bind_int64 (st, 4, rec->created_at);
    sqlite3_bind_int64 (st, 5, rec->expires_at);
    sqlite3_bind_text (st, 6, rec->status, -1, SQLITE_STATIC);
    sqlite3_bind_text (st, 7, rec->env_json ? rec->env_json : "{}", -1, SQLITE_STATIC);
    sqlite3_bind_int64 (st, 8, rec->limits.memory_mb);
    sqlite3_bind_double (st, 9, rec->limits.cpus);
    sqlite3_bind_int64 (st, 10, rec->limits.pids);
    sqlite3_bind_text (st, 11, rec->lower, -1, SQLITE_STATIC);
    sqlite3_bind_int64 (st, 12, rec->limits.disk_mb);
    int step = sqlite3_step (st);
    if (step == SQLITE_CONSTRAINT)
        err_set (err, 409, "conflict", "sandbox %s already exists", rec->id);
    else if (step != SQLITE_DONE)
        s_db_error (self, err, "insert");
    else
        rc = 0;
out:
    sqlite3_finalize (st);
    pthread_mutex_unlock (&self->lock);
    return rc;
}

/* Run a SELECT with up to two text parameters (NULLs skipped) and an
   optional int64 parameter, collecting every row. */
static int
s_select (registry_t *self, const char *sql, const char *p1, const char *p2, const int64_t *p3,
          registry_rec_t **out, size_t *count, err_t *err)
{
    sqlite3_stmt *st = NULL;
    registry_rec_t *list = NULL;
    size_t n = 0, cap = 0;
    int rc = -1;
    pthread_mutex_lock (&self->lock);
    if (sqlite3_prepare_v2 (self->db, sql, -1, &st, NULL) != SQLITE_OK) {
        s_db_error (self, err, "select");
        goto out;
    }
    int idx = 1;
    if (p1)
        sqlite3_bind_text (st, idx++, p1, -1, SQLITE_STATIC);
    if (p2)
        sqlite3_bind_text (st, idx++, p2, -1, SQLITE_STATIC);
    if (p3)
        sqlite3_bind_int64 (st, idx++, *p3);
    int step;
    while ((step = sqlite3_step (st)) == SQLITE_ROW) {
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            registry_rec_t *grown = realloc (list, cap * sizeof *grown);
            if (!grown) {
                err_set (err, 500, "internal", "out of memory");
                goto out;
            }
            list = grown;
        }
        s_row (st, &list[n++]);
    }
    if (step != SQLITE_DONE) {
        s_db_error (self, err, "select");
        goto out;
    }
    rc = 0;
out:
    sqlite3_finalize (st);
    pthread_mutex_unlock (&self->lock);
    if (rc < 0) {
        registry_list_free (list, n);
        return rc;
    }
    *out = list;
    *count = n;
    return 0;
}

void
registry_list_free (registry_rec_t *list, size_t count)
{
    for (size_t i = 0; i < count; i++)
        registry_rec_clear (&list[i]);
    free (list);
}

int
registry_get (registry_t *self, const char *tenant, const char *id, registry_rec_t *rec, err_t *err)
{
    registry_rec_t *list = NULL;
    size_t n = 0;
    if (s_select (self, "SELECT " COLUMNS " FROM sandboxes WHERE tenant = ? AND id = ?", tenant, id,
                  NULL, &list, &n, err)
        < 0)
        return -1;
    if (n == 0) {
        registry_list_free (list, n);
        return err_set (err, 404, "not_found", "sandbox %s not found", id);
    }
    *rec = list[0];
    free (list);
    return 0;
}

int
registry_list (registry_t *self, const char *tenant, registry_rec_t **out, size_t *count,
               err_t *err)
{
    if (tenant)
        return s_select (
            self, "SELECT " COLUMNS " FROM sandboxes WHERE tenant = ? ORDER BY created_at, id",
            tenant, NULL, NULL, out, count, err);
    return s_select (self, "SELECT " COLUMNS " FROM sandboxes ORDER BY created_at, id", NULL, NULL,
                     NULL, out, count, err);
}

int
registry_expired (registry_t *self, int64_t now_ms, registry_rec_t **out, size_t *count, err_t *err)
{
    return s_select (self, "SELECT " COLUMNS " FROM sandboxes WHERE expires_at <= ?", NULL, NULL,
                     &now_ms, out, count, err);
}

/* Run an UPDATE/DELETE/SELECT COUNT keyed by tenant and id. */
static int
s_exec (registry_t *self, const char *sql, const char *text, const int64_t *num, const char *tenant,
        const char *id, int64_t *count_out, err_t *err)
{
    sqlite3_stmt *st = NULL;
    int rc = -1;
    pthread_mutex_lock (&self->lock);
    if (sqlite3_prepare_v2 (self->db, sql, -1, &st, NULL) != SQLITE_OK) {
        s_db_error (self, err, "statement");
        goto out;
    }
    int idx = 1;
    if (text)
        sqlite3_bind_text (st, idx++, text, -1, SQLITE_STATIC);
    if (num)
        sqlite3_bind_int64 (st, idx++, *num);
    if (tenant)
        sqlite3_bind_text (st, idx++, tenant, -1, SQLITE_STATIC);
    if (id)
        sqlite3_bind_text (st, idx++, id, -1, SQLITE_STATIC);
    int step = sqlite3_step (st);
    if (count_out && step == SQLITE_ROW) {
        *count_out = sqlite3_column_int64 (st, 0);
        rc = 0;
    }
    else if (step == SQLITE_DONE) {
        if (!count_out && id && sqlite3_changes (self->db) == 0)
            err_set (err, 404, "not_found", "sandbox %s not found", id);
        else
            rc = 0;
    }
    else
        s_db_error (self, err, "statement");
out:
    sqlite3_finalize (st);
    pthread_mutex_unlock (&self->lock);
    return rc;
}

int
registry_count (registry_t *self, const char *tenant, int64_t *count, err_t *err)
{
    return s_exec (self, "SELECT COUNT(*) FROM sandboxes WHERE tenant = ?", NULL, NULL, tenant,
                   NULL, count, err);
}

int
registry_set_expiry (registry_t *self, const char *tenant, const char *id, int64_t expires_at,
                     err_t *err)
{
    return s_exec (self, "UPDATE sandboxes SET expires_at = ? WHERE tenant = ? AND id = ?", NULL,
                   &expires_at, tenant, id, NULL, err);
}

int
registry_set_status (registry_t *self, const char *tenant, const char *id, const char *status,
                     err_t *err)
{
    return s_exec (self, "UPDATE sandboxes SET status = ? WHERE tenant = ? AND id = ?", status,
                   NULL, tenant, id, NULL, err);
}

int
registry_delete (registry_t *self, const char *tenant, const char *id, err_t *err)
{
    return s_exec (self, "DELETE FROM sandboxes WHERE tenant = ? AND id = ?", NULL, NULL, tenant,
                   id, NULL, err);
}

int
registry_adopt (registry_t *self, const char *from_tenant, const char *from_id,
                const registry_rec_t *to, err_t *err)
{
    sqlite3_stmt *st = NULL;
    int rc = -1;
    pthread_mutex_lock (&self->lock);
    if (sqlite3_prepare_v2 (
            self->db,
            "UPDATE sandboxes SET tenant = ?, id = ?, created_at = ?, expires_at = ?,"
            " env = ?, memory_mb = ?, cpus = ?, pids = ?"
            " WHERE tenant = ? AND id = ? AND status = 'running'",
            -1, &st, NULL)
        != SQLITE_OK) {
        s_db_error (self, err, "adopt");
        goto out;
    }
    sqlite3_bind_text (st, 1, to->tenant, -1, SQLITE_STATIC);
    sqlite3_bind_text (st, 2, to->id, -1, SQLITE_STATIC);
    sqlite3_bind_int64 (st, 3, to->created_at);
    sqlite3_bind_int64 (st, 4, to->expires_at);
    sqlite3_bind_text (st, 5, to->env_json ? to->env_json : "{}", -1, SQLITE_STATIC);
    sqlite3_bind_int64 (st, 6, to->limits.memory_mb);
    sqlite3_bind_double (st, 7, to->limits.cpus);
    sqlite3_bind_int64 (st, 8, to->limits.pids);
    sqlite3_bind_text (st, 9, from_tenant, -1, SQLITE_STATIC);
    sqlite3_bind_text (st, 10, from_id, -1, SQLITE_STATIC);
    int step = sqlite3_step (st);
    if (step == SQLITE_CONSTRAINT)
        err_set (err, 409, "conflict", "sandbox %s already exists", to->id);
    else if (step != SQLITE_DONE)
        s_db_error (self, err, "adopt");
    else if (sqlite3_changes (self->db) == 0)
        err_set (err, 404, "not_found", "pooled sandbox %s is gone", from_id);
    else
        rc = 0;
out:
    sqlite3_finalize (st);
    pthread_mutex_unlock (&self->lock);
    return rc;
}

int
registry_set_env (registry_t *self, const char *tenant, const char *id, const char *env_json,
                  err_t *err)
{
    return s_exec (self, "UPDATE sandboxes SET env = ? WHERE tenant = ? AND id = ?", env_json, NULL,
                   tenant, id, NULL, err);
}
