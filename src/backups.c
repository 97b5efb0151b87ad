/* backups.c - directory backups: tar inside the sandbox, archives kept by
   the broker per tenant, restore by extracting inside a sandbox. */
#include "backups.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "agent_link.h"
#include "files.h"
#include "jsonv.h"

#define S_ID_HEX     24 /* hex digits after "bk-" */
#define S_GRACE_MS   10000
#define S_META_MAX   (64 * 1024)
#define S_STDERR_CAP 400
#define S_CHUNK      (256 * 1024)
#define S_DAY_MS     (86400LL * 1000)
#define S_PATH       2048
#define S_DIRBUF     1500

/* Exit codes of the backup script that are not tar's. */
#define S_EXIT_MISSING 100
#define S_EXIT_NOTDIR  101

struct _backups_t {
    const config_t *cfg;
    sandbox_mgr_t *mgr;
    char root[1100]; /* <state>/backups */
    /* Guards the backup directories (commit, delete, prune, count) and the
       in-flight table, so a tenant's count never overshoots its limit. */
    pthread_mutex_t lock;
    char inflight[BACKUPS_MAX_INFLIGHT][64]; /* tenant of each backup being made, "" = free */
    pthread_t sweeper;
    pthread_cond_t cond;
    bool stop, sweeping;
};

/* The backup script, run by bash inside the sandbox as the sandbox user.
   Every value comes in through the environment, so nothing the client
   sent is ever parsed by the shell, and each exclude pattern is one argv
   element "--exclude=PATTERN" (tar cannot take it for another option).
   The archive goes through head so that it never exceeds the limit by
   more than a byte even inside the sandbox; its own temporary name is
   excluded in case dir is /tmp. */

/* An error writing under the backup dir: a full disk is 507, a read-only
   one 503 (both the operator's to fix), anything else 500. */
static int
s_write_err (err_t *err, const char *what, const char *path)
{
    int e = errno;
    if (e == ENOSPC || e == EDQUOT)
        return err_set (err, 507, "insufficient_storage", "%s %s: the broker's disk is full", what,
                        path);
    if (e == EROFS)
        return err_set (err, 503, "read_only", "%s %s: the broker's disk is read-only", what, path);
    return err_set (err, 500, "internal", "%s %s: %s", what, path, strerror (e));
}

static const char s_backup_script[]
    = "if [ ! -e \"$SBX_DIR\" ]; then exit 100; fi\n"
      "if [ ! -d \"$SBX_DIR\" ]; then exit 101; fi\n"
      "umask 077\n"
      "set -o noclobber\n"
      "ex=()\n"
      "i=0\n"
      "while [ \"$i\" -lt \"$SBX_NEX\" ]; do\n"
      "  v=\"SBX_EX_$i\"\n"
      "  ex+=(\"--exclude=${!v}\")\n"
      "  i=$((i + 1))\n"
      "done\n"
      "tar -C \"$SBX_DIR\" --exclude=\"./$SBX_TMPNAME\" \"${ex[@]}\" -czf - . "
      "| head -c \"$SBX_LIMIT\" > \"$SBX_TMP\"\n"
      "st=(\"${PIPESTATUS[@]}\")\n"
      "if [ \"${st[1]}\" != 0 ]; then exit 102; fi\n"
      "exit \"${st[0]}\"\n";

/* The restore script: make dir, extract (permissions kept, owners not:
   everything belongs to the sandbox user), remove the archive. */
static const char s_restore_script[]
    = "mkdir -p -- \"$SBX_DIR\" && tar -xzpf \"$SBX_ARCHIVE\" -C \"$SBX_DIR\"\n"
      "rc=$?\n"
      "rm -f -- \"$SBX_ARCHIVE\"\n"
      "exit $rc\n";

/* --- small helpers -------------------------------------------------------- */

bool
backups_valid_id (const char *s)
{
    if (!s || strncmp (s, "bk-", 3) != 0 || strlen (s) != 3 + S_ID_HEX)
        return false;
    for (const char *p = s + 3; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return false;
    return true;
}

int
backups_check_dir (const char *field, const char *dir, char *out, size_t size, err_t *err)
{
    if (!dir || dir[0] != '/')
        return err_set (err, 400, "invalid_field", "field '%s': must be an absolute path", field);
    if (strlen (dir) > FILES_MAX_PATH || size < 2)
        return err_set (err, 400, "invalid_field", "field '%s': longer than %d bytes", field,
                        FILES_MAX_PATH);
    for (const char *p = dir; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return err_set (err, 400, "invalid_field",
                            "field '%s': must not contain control characters", field);
    /* Resolve "." and ".." lexically into out. */
    size_t n = 0;
    const char *p = dir;
    while (*p) {
        while (*p == '/')
            p++;
        const char *end = strchr (p, '/');
        size_t len = end ? (size_t)(end - p) : strlen (p);
        if (len == 0)
            break;
        if (len == 1 && p[0] == '.') {
        }
        else if (len == 2 && p[0] == '.' && p[1] == '.') {
            while (n > 0 && out[n - 1] != '/')
                n--;
            if (n > 0)
                n--;
        }
        else {
            if (n + 1 + len + 1 > size)
                return err_set (err, 400, "invalid_field", "field '%s': path too long", field);
            out[n++] = '/';
            memcpy (out + n, p, len);
            n += len;
        }
        p += len;
    }
    out[n] = '\0';
    if (n == 0)
        return err_set (err, 400, "invalid_field",
                        "field '%s': the whole file system cannot be backed up or restored; "
                        "name a directory",
                        field);
    static const char *const pseudo[] = { "/proc", "/sys", "/dev" };
    for (size_t i = 0; i < sizeof pseudo / sizeof pseudo[0]; i++) {
        size_t l = strlen (pseudo[i]);
        if (!strncmp (out, pseudo[i], l) && (out[l] == '\0' || out[l] == '/'))
            return err_set (err, 400, "invalid_field", "field '%s': %s is not a real directory",
                            field, pseudo[i]);
    }
    return 0;
}

static void
s_tenant_dir (backups_t *self, const char *tenant, char *buf, size_t size)
{
    snprintf (buf, size, "%s/%s", self->root, tenant);
}

static void
s_file (backups_t *self, const char *tenant, const char *bid, const char *ext, char *buf,
        size_t size)
{
    snprintf (buf, size, "%s/%s/%s%s", self->root, tenant, bid, ext);
}

static void
s_fsync_dir (const char *dir)
{
    int fd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync (fd);
        close (fd);
    }
}

static int64_t
s_free_bytes (backups_t *self)
{
    struct statvfs sv;
    if (statvfs (self->root, &sv) < 0)
        return -1;
    return (int64_t)sv.f_bavail * (int64_t)sv.f_frsize;
}

static int64_t
s_retention_ms (backups_t *self)
{
    return self->cfg->backup_retention_days * S_DAY_MS;
}

/* Copy up to max bytes of stderr into buf as a printable one-liner. */
static void
s_stderr_text (const char *data, size_t len, char *buf, size_t size)
{
    size_t n = 0;
    for (size_t i = 0; i < len && n + 1 < size; i++) {
        unsigned char c = (unsigned char)data[i];
        buf[n++] = c == '\n' ? ' ' : (c < 0x20 || c >= 0x7f) ? '?' : (char)c;
    }
    while (n > 0 && buf[n - 1] == ' ')
        n--;
    buf[n] = '\0';
}

/* --- records -------------------------------------------------------------- */

/* Load the record of tenant's backup bid: a new object (caller owns) with
   backup_id, sandbox_id, dir, excludes, size, created_at (epoch ms). NULL
   with a 404 when there is none or it does not read back as one. */
static json_t *
s_meta_load (backups_t *self, const char *tenant, const char *bid, err_t *err)
{
    char path[S_PATH];
    s_file (self, tenant, bid, ".json", path, sizeof path);
    size_t len = 0;
    char *text = util_read_file (path, S_META_MAX, &len);
    json_t *meta = text ? json_loadb (text, len, JSON_REJECT_DUPLICATES, NULL) : NULL;
    free (text);
    if (!meta || !json_is_string (json_object_get (meta, "sandbox_id"))
        || !json_is_string (json_object_get (meta, "dir"))
        || !json_is_integer (json_object_get (meta, "size"))
        || !json_is_integer (json_object_get (meta, "created_at"))
        || !json_is_array (json_object_get (meta, "excludes"))) {
        json_decref (meta);
        err_set (err, 404, "not_found", "backup %s not found", bid);
        return NULL;
    }
    json_object_set_new (meta, "backup_id", json_string (bid));
    return meta;
}

/* The record as a client sees it: times as ISO 8601, expires_at added. */
static json_t *
s_meta_public (backups_t *self, json_t *meta)
{
    int64_t created = json_integer_value (json_object_get (meta, "created_at"));
    char c[40], e[40];
    return json_pack (
        "{s:O, s:O, s:O, s:O, s:O, s:s, s:s}", "backup_id", json_object_get (meta, "backup_id"),
        "sandbox_id", json_object_get (meta, "sandbox_id"), "dir", json_object_get (meta, "dir"),
        "excludes", json_object_get (meta, "excludes"), "size", json_object_get (meta, "size"),
        "created_at", util_iso8601 (created, c, sizeof c), "expires_at",
        util_iso8601 (created + s_retention_ms (self), e, sizeof e));
}

/* Remove a backup's archive and record. Called with the lock held. */
static void
s_remove_locked (backups_t *self, const char *tenant, const char *bid)
{
    char path[S_PATH], dir[S_DIRBUF];
    s_file (self, tenant, bid, ".json", path, sizeof path);
    unlink (path);
    s_file (self, tenant, bid, ".tgz", path, sizeof path);
    unlink (path);
    s_tenant_dir (self, tenant, dir, sizeof dir);
    s_fsync_dir (dir);
}

/* The ids of tenant's backups (those with a record), as a new array
   (caller owns). Called with the lock held. */
static json_t *
s_ids_locked (backups_t *self, const char *tenant)
{
    json_t *ids = json_array ();
    char dir[S_DIRBUF];
    s_tenant_dir (self, tenant, dir, sizeof dir);
    DIR *d = opendir (dir);
    if (!d)
        return ids;
    struct dirent *de;
    while ((de = readdir (d))) {
        size_t n = strlen (de->d_name);
        if (n != 3 + S_ID_HEX + 5 || strcmp (de->d_name + 3 + S_ID_HEX, ".json"))
            continue;
        char bid[64];
        memcpy (bid, de->d_name, 3 + S_ID_HEX);
        bid[3 + S_ID_HEX] = '\0';
        if (backups_valid_id (bid))
            json_array_append_new (ids, json_string (bid));
    }
    closedir (d);
    return ids;
}

/* Delete tenant's expired backups. Called with the lock held. */
static int
s_prune_tenant_locked (backups_t *self, const char *tenant, int64_t now)
{
    int gone = 0;
    json_t *ids = s_ids_locked (self, tenant);
    size_t i;
    json_t *v;
    json_array_foreach (ids, i, v)
    {
        const char *bid = json_string_value (v);
        err_t err;
        json_t *meta = s_meta_load (self, tenant, bid, &err);
        int64_t created = meta ? json_integer_value (json_object_get (meta, "created_at")) : 0;
        json_decref (meta);
        if (created + s_retention_ms (self) <= now) {
            s_remove_locked (self, tenant, bid);
            log_info ("backup %s of tenant %s: deleted (past backup_retention_days)", bid, tenant);
            gone++;
        }
    }
    json_decref (ids);
    return gone;
}

int
backups_prune (backups_t *self)
{
    int gone = 0;
    int64_t now = util_now_ms ();
    pthread_mutex_lock (&self->lock);
    DIR *d = opendir (self->root);
    struct dirent *de;
    while (d && (de = readdir (d)))
        if (util_valid_id (de->d_name))
            gone += s_prune_tenant_locked (self, de->d_name, now);
    if (d)
        closedir (d);
    pthread_mutex_unlock (&self->lock);
    return gone;
}

/* At start-up, nothing is in flight: remove partial archives, temporary
   records, and archives or records without their other half. */
static void
s_clean_leftovers (backups_t *self)
{
    DIR *d = opendir (self->root);
    struct dirent *de;
    while (d && (de = readdir (d))) {
        if (!util_valid_id (de->d_name))
            continue;
        char dir[S_DIRBUF];
        s_tenant_dir (self, de->d_name, dir, sizeof dir);
        DIR *t = opendir (dir);
        struct dirent *fe;
        while (t && (fe = readdir (t))) {
            if (!strcmp (fe->d_name, ".") || !strcmp (fe->d_name, ".."))
                continue;
            char bid[64] = "", other[S_PATH], path[S_PATH];
            size_t n = strlen (fe->d_name);
            bool keep = false;
            if (n == 3 + S_ID_HEX + 4 || n == 3 + S_ID_HEX + 5) {
                memcpy (bid, fe->d_name, 3 + S_ID_HEX);
                bid[3 + S_ID_HEX] = '\0';
                const char *ext = fe->d_name + 3 + S_ID_HEX;
                if (backups_valid_id (bid) && (!strcmp (ext, ".tgz") || !strcmp (ext, ".json"))) {
                    s_file (self, de->d_name, bid, !strcmp (ext, ".tgz") ? ".json" : ".tgz", other,
                            sizeof other);
                    keep = access (other, F_OK) == 0;
                }
            }
            if (keep)
                continue;
            snprintf (path, sizeof path, "%s/%s", dir, fe->d_name);
            if (unlinkat (dirfd (t), fe->d_name, 0) == 0)
                log_warn ("backups: removed %s, left by an interrupted backup", path);
        }
        if (t)
            closedir (t);
    }
    if (d)
        closedir (d);
}

/* --- running a script in a sandbox ---------------------------------------- */

/* Run script with bash as the sandbox user in container cid, with env
   (borrowed) on top of the agent's clean base environment (nothing the
   tenant set with /env: no TAR_OPTIONS or PATH of theirs). The agent kills
   it after timeout_ms. 0 with *exit_code, *timed_out and the start of its
   stderr in errtext; -1 with *err when the sandbox did not answer. */
static int
s_run (backups_t *self, const char *cid, const char *script, json_t *env, int64_t timeout_ms,
       int *exit_code, bool *timed_out, char *errtext, size_t errsize, err_t *err)
{
    agent_link_t *link = sandbox_mgr_link (self->mgr);
    json_t *req = json_pack ("{s:s, s:s, s:s, s:O, s:I, s:I}", "op", "exec", "command", script,
                             "cwd", "/", "env", env, "timeout_ms", (json_int_t)timeout_ms,
                             "max_output", (json_int_t)16384);
    agent_call_t *call = req ? agent_call_new (link, cid, req, NULL, 0, 3000, err) : NULL;
    json_decref (req);
    if (!call)
        return -1;
    char errbuf[S_STDERR_CAP];
    size_t elen = 0;
    int pid = -1, rc = -1;
    int64_t deadline = util_mono_ms () + timeout_ms + S_GRACE_MS;
    errtext[0] = '\0';
    for (;;) {
        int64_t left = deadline - util_mono_ms ();
        if (left <= 0) {
            err_set (err, 504, "backup_timeout", "the sandbox did not finish in time");
            break;
        }
        json_t *h = NULL;
        char *data = NULL;
        size_t len = 0;
        int got = agent_call_recv (call, left > 1000 ? 1000 : (int)left, &h, &data, &len, err);
        if (got < 0)
            break;
        if (got == 0)
            continue;
        const char *ev = json_string_value (json_object_get (h, "ev"));
        bool done = false;
        if (!strcmp (ev, "start")) {
            json_t *p = json_object_get (h, "pid");
            pid = json_is_integer (p) ? (int)json_integer_value (p) : -1;
        }
        else if (!strcmp (ev, "stderr") && data) {
            size_t n = len < sizeof errbuf - elen ? len : sizeof errbuf - elen;
            memcpy (errbuf + elen, data, n);
            elen += n;
        }
        else if (!strcmp (ev, "exit")) {
            json_t *code = json_object_get (h, "exit_code");
            *exit_code = json_is_integer (code) ? (int)json_integer_value (code) : -1;
            *timed_out = json_is_true (json_object_get (h, "timed_out"));
            rc = 0;
            done = true;
        }
        else if (!strcmp (ev, "error")) {
            agent_error_to_err (h, err);
            done = true;
        }
        json_decref (h);
        free (data);
        if (done)
            break;
    }
    if (rc < 0 && pid > 0) {
        json_t *kill = json_pack ("{s:s, s:i, s:s}", "op", "signal", "pid", pid, "signal", "KILL");
        err_t kerr;
        json_decref (agent_link_request (link, cid, kill, 1000, &kerr));
        json_decref (kill);
    }
    agent_call_destroy (&call);
    s_stderr_text (errbuf, elen, errtext, errsize);
    return rc;
}

static files_root_t *
s_root_open (backups_t *self, const char *cid, err_t *err)
{
    char dir[1200], rootfs[1300];
    sandbox_mgr_dir (self->mgr, cid, dir, sizeof dir);
    snprintf (rootfs, sizeof rootfs, "%s/bundle/rootfs", dir);
    return files_root_open (rootfs, err);
}

/* --- create --------------------------------------------------------------- */

/* Take an in-flight slot for tenant if its kept plus in-flight backups are
   under the limit. The slot index, or -1 with *err. */
static int
s_reserve (backups_t *self, const char *tenant, err_t *err)
{
    pthread_mutex_lock (&self->lock);
    s_prune_tenant_locked (self, tenant, util_now_ms ());
    json_t *ids = s_ids_locked (self, tenant);
    int64_t count = (int64_t)json_array_size (ids);
    json_decref (ids);
    int slot = -1;
    for (int i = 0; i < BACKUPS_MAX_INFLIGHT; i++) {
        if (!strcmp (self->inflight[i], tenant))
            count++;
        else if (!self->inflight[i][0] && slot < 0)
            slot = i;
    }
    if (count >= self->cfg->max_backups_per_tenant)
        slot = err_set (err, 429, "quota_exceeded",
                        "tenant has %lld backups (kept or being made), the limit is %lld: delete "
                        "one first",
                        (long long)count, (long long)self->cfg->max_backups_per_tenant);
    else if (slot < 0)
        err_set (err, 429, "busy", "%d backups are being made already: try again later",
                 BACKUPS_MAX_INFLIGHT);
    else
        snprintf (self->inflight[slot], sizeof self->inflight[slot], "%s", tenant);
    pthread_mutex_unlock (&self->lock);
    return slot;
}

static void
s_release (backups_t *self, int slot)
{
    pthread_mutex_lock (&self->lock);
    self->inflight[slot][0] = '\0';
    pthread_mutex_unlock (&self->lock);
}

/* Check that keeping need more bytes leaves backup_min_free_mb free. */
static int
s_check_space (backups_t *self, int64_t need, err_t *err)
{
    int64_t avail = s_free_bytes (self);
    int64_t reserve = self->cfg->backup_min_free_mb * 1048576;
    if (avail < 0 || avail - need < reserve)
        return err_set (err, 507, "insufficient_storage",
                        "the broker has too little disk space left to keep this backup");
    return 0;
}

static int
s_parse_excludes (json_t *body, json_t **out, err_t *err)
{
    json_t *ex = json_object_get (body, "excludes");
    *out = json_array ();
    if (!ex || json_is_null (ex))
        return 0;
    if (!json_is_array (ex))
        return err_set (err, 400, "invalid_field", "field 'excludes': must be an array of strings");
    if (json_array_size (ex) > BACKUPS_MAX_EXCLUDES)
        return err_set (err, 400, "invalid_field", "field 'excludes': more than %d patterns",
                        BACKUPS_MAX_EXCLUDES);
    size_t i;
    json_t *v;
    json_array_foreach (ex, i, v)
    {
        const char *s = json_string_value (v);
        size_t n = json_is_string (v) ? json_string_length (v) : 0;
        if (!s || n == 0 || n > BACKUPS_MAX_EXCLUDE_LEN || strlen (s) != n)
            return err_set (err, 400, "invalid_field",
                            "field 'excludes[%zu]': must be a non-empty string of at most %d "
                            "bytes without NUL",
                            i, BACKUPS_MAX_EXCLUDE_LEN);
        json_array_append (*out, v);
    }
    return 0;
}

/* Copy the archive at tmp in the sandbox into part (created exclusively),
   at most max bytes. 0, or -1 with *err (413 when it is larger). */
static int
s_copy_out (backups_t *self, files_root_t *root, const char *tmp, const char *part, int64_t max,
            int64_t *size, err_t *err)
{
    int in = -1;
    files_stat_t st;
    if (files_open_read (root, tmp, &in, &st, err) < 0)
        return err_prefix (err, "reading the archive");
    if (st.size > max) {
        close (in);
        return err_set (err, 413, "backup_too_large",
                        "the archive is larger than backup_max_bytes (%lld bytes): nothing kept; "
                        "exclude something or back up less",
                        (long long)max);
    }
    if (s_check_space (self, st.size, err) < 0) {
        close (in);
        return -1;
    }
    int out = open (part, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (out < 0) {
        close (in);
        return s_write_err (err, "creating", part);
    }
    char *buf = malloc (S_CHUNK);
    int64_t total = 0;
    int rc = buf ? 0 : err_set (err, 500, "internal", "out of memory");
    while (rc == 0) {
        ssize_t n = read (in, buf, S_CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = err_set (err, 500, "internal", "reading the archive: %s", strerror (errno));
            break;
        }
        if (n == 0)
            break;
        total += n;
        if (total > max) /* it grew while being copied */
            rc = err_set (err, 413, "backup_too_large",
                          "the archive is larger than backup_max_bytes (%lld bytes): nothing "
                          "kept",
                          (long long)max);
        for (ssize_t off = 0; rc == 0 && off < n;) {
            ssize_t w = write (out, buf + off, (size_t)(n - off));
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0)
                rc = errno == ENOSPC || errno == EDQUOT
                         ? err_set (err, 507, "insufficient_storage",
                                    "the broker ran out of disk space while keeping the backup")
                         : err_set (err, 500, "internal", "writing %s: %s", part, strerror (errno));
            else
                off += w;
        }
    }
    free (buf);
    close (in);
    if (rc == 0 && fsync (out) < 0)
        rc = err_set (err, 507, "insufficient_storage", "keeping the backup: %s", strerror (errno));
    close (out);
    if (rc == 0 && s_check_space (self, 0, err) < 0)
        rc = -1;
    if (rc < 0)
        unlink (part);
    *size = total;
    return rc;
}

int
backups_create (backups_t *self, const char *tenant, const char *id, json_t *body, json_t **out,
                err_t *err)
{
    static const char *const keys[] = { "dir", "excludes", NULL };
    const char *dir_in = NULL;
    char dir[FILES_MAX_PATH + 1];
    json_t *excludes = NULL;
    if (jsonv_only_keys (body, "", keys, err) < 0
        || jsonv_string (body, "", "dir", true, FILES_MAX_PATH, &dir_in, err) < 0
        || backups_check_dir ("dir", dir_in, dir, sizeof dir, err) < 0
        || s_parse_excludes (body, &excludes, err) < 0) {
        json_decref (excludes);
        return -1;
    }
    char cid[64];
    if (sandbox_resolve (self->mgr, tenant, id, cid, NULL, err) < 0) {
        json_decref (excludes);
        return -1;
    }
    char tenant_dir[S_DIRBUF];
    s_tenant_dir (self, tenant, tenant_dir, sizeof tenant_dir);
    if (util_mkdir_p (tenant_dir, 0700) < 0) {
        json_decref (excludes);
        return s_write_err (err, "creating", tenant_dir);
    }
    int slot = s_reserve (self, tenant, err);
    if (slot < 0) {
        json_decref (excludes);
        return -1;
    }
    files_root_t *root = NULL;
    int rc = s_check_space (self, 0, err);

    char rnd[33], bid[64], tmpname[80], tmp[96], part[S_PATH], final[S_PATH], meta_path[S_PATH];
    util_random_hex (rnd, S_ID_HEX / 2);
    snprintf (bid, sizeof bid, "bk-%s", rnd);
    util_random_hex (rnd, 16);
    snprintf (tmpname, sizeof tmpname, ".sandboxd-backup-%s.tgz", rnd);
    snprintf (tmp, sizeof tmp, "/tmp/%s", tmpname);
    snprintf (part, sizeof part, "%s/.%s.part", tenant_dir, bid);
    s_file (self, tenant, bid, ".tgz", final, sizeof final);
    s_file (self, tenant, bid, ".json", meta_path, sizeof meta_path);

    int64_t max = self->cfg->backup_max_bytes, size = 0;
    char limit[32], nex[16];
    snprintf (limit, sizeof limit, "%lld", (long long)max + 1);
    snprintf (nex, sizeof nex, "%zu", json_array_size (excludes));
    json_t *env = json_pack ("{s:s, s:s, s:s, s:s, s:s}", "SBX_DIR", dir, "SBX_TMP", tmp,
                             "SBX_TMPNAME", tmpname, "SBX_LIMIT", limit, "SBX_NEX", nex);
    size_t i;
    json_t *v;
    json_array_foreach (excludes, i, v)
    {
        char name[32];
        snprintf (name, sizeof name, "SBX_EX_%zu", i);
        json_object_set (env, name, v);
    }

    int64_t t0 = util_mono_ms ();
    int code = -1;
    bool timed_out = false;
    char errtext[S_STDERR_CAP + 1] = "";
    if (rc == 0)
        rc = s_run (self, cid, s_backup_script, env, self->cfg->backup_timeout_seconds * 1000,
                    &code, &timed_out, errtext, sizeof errtext, err);
    json_decref (env);
    /* Opened whatever happened, to remove the temporary archive that a
       failed or overrun tar may have left. */
    err_t rerr = { 0 };
    root = s_root_open (self, cid, &rerr);
    if (rc == 0 && !root) {
        *err = rerr;
        rc = -1;
    }
    if (rc == 0) {
        files_stat_t st;
        err_t serr = { 0 };
        bool too_big = files_stat (root, tmp, &st, &serr) == 0 && st.size > max;
        if (timed_out)
            rc = err_set (err, 504, "backup_timeout",
                          "tar did not finish within backup_timeout_seconds (%lld s)",
                          (long long)self->cfg->backup_timeout_seconds);
        else if (code == S_EXIT_MISSING)
            rc = err_set (err, 404, "not_found", "directory %s not found in sandbox %s", dir, id);
        else if (code == S_EXIT_NOTDIR)
            rc = err_set (err, 422, "not_a_directory", "%s is not a directory", dir);
        else if (too_big)
            rc = err_set (err, 413, "backup_too_large",
                          "the archive is larger than backup_max_bytes (%lld bytes): nothing "
                          "kept; exclude something or back up less",
                          (long long)max);
        /* tar: 0 is success, 1 that some file changed while it was read
           (the archive is still complete). */
        else if (code != 0 && code != 1)
            rc = err_set (err, 422, "backup_failed", "tar failed (exit %d): %s", code,
                          errtext[0] ? errtext : "no message");
    }
    if (rc == 0)
        rc = s_copy_out (self, root, tmp, part, max, &size, err);
    if (root) {
        err_t derr;
        files_delete (root, tmp, false, &derr);
        files_root_close (&root);
    }
    int64_t created = util_now_ms ();
    if (rc == 0) {
        json_t *meta
            = json_pack ("{s:s, s:s, s:O, s:I, s:I}", "sandbox_id", id, "dir", dir, "excludes",
                         excludes, "size", (json_int_t)size, "created_at", (json_int_t)created);
        char *text = meta ? jsonv_dumps (meta) : NULL;
        pthread_mutex_lock (&self->lock);
        if (!text || rename (part, final) < 0
            || util_write_file_atomic (meta_path, text, strlen (text), 0600) < 0) {
            rc = s_write_err (err, "keeping the backup", final);
            unlink (part);
            unlink (final);
        }
        s_fsync_dir (tenant_dir);
        pthread_mutex_unlock (&self->lock);
        free (text);
        json_decref (meta);
    }
    s_release (self, slot);
    json_decref (excludes);
    if (rc < 0) {
        log_info ("backup of %s in sandbox %s (tenant %s) failed: %s", dir, id, tenant,
                  err->message);
        return -1;
    }
    log_info ("backup %s of %s in sandbox %s (tenant %s): %lld bytes in %lld ms", bid, dir, id,
              tenant, (long long)size, (long long)(util_mono_ms () - t0));
    return backups_get (self, tenant, bid, out, err);
}

/* --- list, get, delete ---------------------------------------------------- */

static int
s_by_created (const void *a, const void *b)
{
    json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    int64_t cx = json_integer_value (json_object_get (x, "created_at"));
    int64_t cy = json_integer_value (json_object_get (y, "created_at"));
    if (cx != cy)
        return cx < cy ? -1 : 1;
    return strcmp (json_string_value (json_object_get (x, "backup_id")),
                   json_string_value (json_object_get (y, "backup_id")));
}

int
backups_list (backups_t *self, const char *tenant, json_t **out, err_t *err)
{
    pthread_mutex_lock (&self->lock);
    s_prune_tenant_locked (self, tenant, util_now_ms ());
    json_t *ids = s_ids_locked (self, tenant);
    size_t n = json_array_size (ids), count = 0;
    json_t **metas = calloc (n ? n : 1, sizeof *metas);
    for (size_t i = 0; metas && i < n; i++) {
        err_t e;
        json_t *m = s_meta_load (self, tenant, json_string_value (json_array_get (ids, i)), &e);
        if (m)
            metas[count++] = m;
    }
    pthread_mutex_unlock (&self->lock);
    json_decref (ids);
    if (!metas)
        return err_set (err, 500, "internal", "out of memory");
    qsort (metas, count, sizeof *metas, s_by_created);
    json_t *list = json_array ();
    for (size_t i = 0; i < count; i++) {
        json_array_append_new (list, s_meta_public (self, metas[i]));
        json_decref (metas[i]);
    }
    free (metas);
    *out = json_pack ("{s:o}", "backups", list);
    return 0;
}

int
backups_get (backups_t *self, const char *tenant, const char *bid, json_t **out, err_t *err)
{
    if (!backups_valid_id (bid))
        return err_set (err, 404, "not_found", "backup %s not found", bid);
    pthread_mutex_lock (&self->lock);
    s_prune_tenant_locked (self, tenant, util_now_ms ());
    json_t *meta = s_meta_load (self, tenant, bid, err);
    pthread_mutex_unlock (&self->lock);
    if (!meta)
        return -1;
    *out = s_meta_public (self, meta);
    json_decref (meta);
    return 0;
}

int
backups_delete (backups_t *self, const char *tenant, const char *bid, err_t *err)
{
    if (!backups_valid_id (bid))
        return err_set (err, 404, "not_found", "backup %s not found", bid);
    pthread_mutex_lock (&self->lock);
    json_t *meta = s_meta_load (self, tenant, bid, err);
    if (meta)
        s_remove_locked (self, tenant, bid);
    pthread_mutex_unlock (&self->lock);
    if (!meta)
        return -1;
    json_decref (meta);
    log_info ("backup %s of tenant %s: deleted", bid, tenant);
    return 0;
}

/* --- restore -------------------------------------------------------------- */

/* Copy the archive (fd) into the sandbox at tmp, owned by the sandbox user,
   0600. */
static int
s_copy_in (files_root_t *root, int fd, const char *tmp, err_t *err)
{
    files_writer_t *w = files_write_begin (root, tmp, false, 0600, err);
    if (!w)
        return err_prefix (err, "copying the archive into the sandbox");
    char *buf = malloc (S_CHUNK);
    int rc = buf ? 0 : err_set (err, 500, "internal", "out of memory");
    while (rc == 0) {
        ssize_t n = read (fd, buf, S_CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            rc = err_set (err, 500, "internal", "reading the backup: %s", strerror (errno));
        if (n <= 0)
            break;
        rc = files_write_chunk (w, buf, (size_t)n, err);
    }
    free (buf);
    if (rc == 0)
        return files_write_commit (&w, err);
    files_write_abort (&w);
    return -1;
}

int
backups_restore (backups_t *self, const char *tenant, const char *id, const char *bid, json_t *body,
                 json_t **out, err_t *err)
{
    static const char *const keys[] = { "dir", NULL };
    const char *dir_in = NULL;
    char dir[FILES_MAX_PATH + 1];
    if (jsonv_only_keys (body, "", keys, err) < 0
        || jsonv_string (body, "", "dir", false, FILES_MAX_PATH, &dir_in, err) < 0
        || (dir_in && backups_check_dir ("dir", dir_in, dir, sizeof dir, err) < 0))
        return -1;
    if (!backups_valid_id (bid))
        return err_set (err, 404, "not_found", "backup %s not found", bid);

    /* The archive is opened under the lock, so a delete meanwhile cannot
       take it away half way. */
    char path[S_PATH];
    s_file (self, tenant, bid, ".tgz", path, sizeof path);
    pthread_mutex_lock (&self->lock);
    s_prune_tenant_locked (self, tenant, util_now_ms ());
    json_t *meta = s_meta_load (self, tenant, bid, err);
    int fd = meta ? open (path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) : -1;
    pthread_mutex_unlock (&self->lock);
    if (!meta)
        return -1;
    if (fd < 0) {
        json_decref (meta);
        return err_set (err, 404, "not_found", "backup %s not found", bid);
    }
    if (!dir_in)
        snprintf (dir, sizeof dir, "%s", json_string_value (json_object_get (meta, "dir")));

    char cid[64];
    files_root_t *root = NULL;
    int rc = sandbox_resolve (self->mgr, tenant, id, cid, NULL, err);
    if (rc == 0 && !(root = s_root_open (self, cid, err)))
        rc = -1;
    char rnd[33], tmp[96];
    util_random_hex (rnd, 16);
    snprintf (tmp, sizeof tmp, "/tmp/.sandboxd-restore-%s.tgz", rnd);
    if (rc == 0)
        rc = s_copy_in (root, fd, tmp, err);
    close (fd);
    int64_t t0 = util_mono_ms ();
    if (rc == 0) {
        json_t *env = json_pack ("{s:s, s:s}", "SBX_DIR", dir, "SBX_ARCHIVE", tmp);
        int code = -1;
        bool timed_out = false;
        char errtext[S_STDERR_CAP + 1] = "";
        rc = s_run (self, cid, s_restore_script, env, self->cfg->backup_timeout_seconds * 1000,
                    &code, &timed_out, errtext, sizeof errtext, err);
        json_decref (env);
        if (rc == 0 && timed_out)
            rc = err_set (err, 504, "backup_timeout",
                          "tar did not finish within backup_timeout_seconds (%lld s)",
                          (long long)self->cfg->backup_timeout_seconds);
        else if (rc == 0 && code != 0)
            rc = err_set (err, 422, "restore_failed", "restoring into %s failed (exit %d): %s", dir,
                          code, errtext[0] ? errtext : "no message");
    }
    if (root) {
        err_t derr;
        files_delete (root, tmp, false, &derr); /* after a kill, or a failed copy */
        files_root_close (&root);
    }
    if (rc == 0) {
        log_info ("backup %s of tenant %s restored into %s of sandbox %s in %lld ms", bid, tenant,
                  dir, id, (long long)(util_mono_ms () - t0));
        *out = json_pack ("{s:s, s:s, s:s, s:O, s:b}", "backup_id", bid, "sandbox_id", id, "dir",
                          dir, "size", json_object_get (meta, "size"), "restored", 1);
    }
    json_decref (meta);
    return rc;
}

/* --- life ----------------------------------------------------------------- */

static void *
s_sweeper (void *arg)
{
    backups_t *self = arg;
    pthread_mutex_lock (&self->lock);
    while (!self->stop) {
        struct timespec ts;
        clock_gettime (CLOCK_REALTIME, &ts);
        ts.tv_sec += BACKUPS_SWEEP_MS / 1000;
        pthread_cond_timedwait (&self->cond, &self->lock, &ts);
        if (self->stop)
            break;
        pthread_mutex_unlock (&self->lock);
        backups_prune (self);
        pthread_mutex_lock (&self->lock);
    }
    pthread_mutex_unlock (&self->lock);
    return NULL;
}

backups_t *
backups_new (const config_t *cfg, sandbox_mgr_t *mgr, err_t *err)
{
    backups_t *self = calloc (1, sizeof *self);
    if (!self) {
        err_set (err, 500, "internal", "out of memory");
        return NULL;
    }
    self->cfg = cfg;
    self->mgr = mgr;
    snprintf (self->root, sizeof self->root, "%s/backups", cfg->state_dir);
    if (util_mkdir_p (self->root, 0700) < 0 || chmod (self->root, 0700) < 0) {
        err_set (err, 500, "internal", "creating %s: %s", self->root, strerror (errno));
        free (self);
        return NULL;
    }
    pthread_mutex_init (&self->lock, NULL);
    pthread_cond_init (&self->cond, NULL);
    s_clean_leftovers (self);
    backups_prune (self);
    self->sweeping = pthread_create (&self->sweeper, NULL, s_sweeper, self) == 0;
    return self;
}

void
backups_destroy (backups_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    backups_t *self = *self_p;
    pthread_mutex_lock (&self->lock);
    self->stop = true;
    pthread_cond_signal (&self->cond);
    pthread_mutex_unlock (&self->lock);
    if (self->sweeping)
        pthread_join (self->sweeper, NULL);
    pthread_mutex_destroy (&self->lock);
    pthread_cond_destroy (&self->cond);
    free (self);
    *self_p = NULL;
}
