/* mounts.c - S3-compatible buckets mounted into sandboxes with s3fs. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* setns, statx, posix_spawn_file_actions_addclosefrom_np */
#endif
#include "mounts.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "jsonv.h"
#include "runtime.h"

#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#endif
#ifndef MOVE_MOUNT_T_EMPTY_PATH
#define MOVE_MOUNT_T_EMPTY_PATH 0x00000040
#endif

#define S_UID       1000
#define S_GID       1000
#define S_MAX_BUSY  64
#define S_MAX_COMPS 32
#define S_MAX_PATH  1024
#define S_RECORDS   "mounts.json"
#define S_OWN_DIR   "s3fs" /* <dir>/s3fs: passwd files and logs, root only */
#define S_LOG_TAIL  4096
#define S_STOP_MS   5000
#define S_S3FS_PATH "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define S_S3FS_BIN  "s3fs"

struct _mounts_t {
    sandbox_mgr_t *mgr;
    const config_t *cfg;
    /* One operation per sandbox at a time: busy holds the cids being
       worked on, cond wakes those waiting for one. */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    char busy[S_MAX_BUSY][64];
};

/* --- validation ------------------------------------------------------------ */

/* Whole trees a bucket may not cover, and directories that may not be
   covered themselves (a mount below them is fine). */
static const char *const s_system_trees[]
    = { "/proc", "/sys",          "/dev",     "/etc",     "/usr",    "/bin",
        "/sbin", "/lib",          "/lib32",   "/lib64",   "/libx32", "/boot",
        "/run",  "/opt/sandboxd", "/var/lib", "/var/run", NULL };
static const char *const s_system_dirs[]
    = { "/", "/tmp", "/workspace", "/home", "/opt", "/var", "/root", "/srv", "/mnt", NULL };

int
mounts_check_path (const char *path, char *buf, size_t size, err_t *err)
{
    if (!path || path[0] != '/')
        return err_set (err, 400, "invalid_field", "field 'mount_path': must be an absolute path");
    if (strlen (path) > S_MAX_PATH)
        return err_set (err, 400, "invalid_field", "field 'mount_path': longer than %d bytes",
                        S_MAX_PATH);
    size_t n = 0;
    int comps = 0;
    buf[0] = '\0';
    for (const char *p = path; *p;) {
        while (*p == '/')
            p++;
        if (!*p)
            break;
        const char *e = strchr (p, '/');
        size_t len = e ? (size_t)(e - p) : strlen (p);
        if ((len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.'))
            return err_set (err, 400, "invalid_field",
                            "field 'mount_path': '.' and '..' are not allowed");
        if (len > 255)
            return err_set (err, 400, "invalid_field", "field 'mount_path': a name is too long");
        for (size_t i = 0; i < len; i++)
            if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f)
                return err_set (err, 400, "invalid_field",
                                "field 'mount_path': control characters are not allowed");
        if (++comps > S_MAX_COMPS || n + 1 + len + 1 > size)
            return err_set (err, 400, "invalid_field", "field 'mount_path': too deep");
        buf[n++] = '/';
        memcpy (buf + n, p, len);
        n += len;
        buf[n] = '\0';
        p += len;
    }
    if (n == 0)
        snprintf (buf, size, "/");
    for (const char *const *d = s_system_dirs; *d; d++)
        if (!strcmp (buf, *d))
            return err_set (err, 400, "invalid_field",
                            "field 'mount_path': %s is a system directory; mount below it", buf);
    for (const char *const *t = s_system_trees; *t; t++) {
        size_t tl = strlen (*t);
        if (!strncmp (buf, *t, tl) && (buf[tl] == '\0' || buf[tl] == '/'))
            return err_set (err, 400, "invalid_field",
                            "field 'mount_path': %s is inside the system directory %s", buf, *t);
    }
    return 0;
}

/* Host names as people write them: DNS letters, digits, '.', '-', and '_'
   (not valid DNS, but used in internal names and in documentation
   placeholders). Nothing that s3fs's option syntax gives meaning to. */
static bool
s_host_char (char c)
{
    return isalnum ((unsigned char)c) || c == '.' || c == '-' || c == '_';
}

int
mounts_check_endpoint (const char *url, char *buf, size_t size, char *host, size_t hsize,
                       err_t *err)
{
    const char *rest;
    if (!url || strlen (url) > 255)
        return err_set (err, 400, "invalid_field", "field 'endpoint': missing or too long");
    if (!strncasecmp (url, "http://", 7))
        rest = url + 7;
    else if (!strncasecmp (url, "https://", 8))
        rest = url + 8;
    else
        return err_set (err, 400, "invalid_field",
                        "field 'endpoint': must be an http:// or https:// URL");
    /* Host: a DNS name or IPv4 address, or [IPv6]. Nothing s3fs could read
       as another option (a comma) or userinfo (an @) gets through. */
    const char *h = rest, *p = rest;
    if (*p == '[') {
        p++;
        while (isxdigit ((unsigned char)*p) || *p == ':' || *p == '.')
            p++;
        if (*p != ']' || p == h + 1)
            return err_set (err, 400, "invalid_field", "field 'endpoint': bad IPv6 address");
        p++;
    }
    else {
        while (s_host_char (*p))
            p++;
        if (p == h || h[0] == '.' || h[0] == '-')
            return err_set (err, 400, "invalid_field", "field 'endpoint': missing host");
    }
    size_t hl = (size_t)(p - h);
    if (*p == ':') {
        const char *d = ++p;
        long port = 0;
        while (isdigit ((unsigned char)*p) && p - d < 6)
            port = port * 10 + (*p++ - '0');
        if (p == d || port < 1 || port > 65535)
            return err_set (err, 400, "invalid_field", "field 'endpoint': bad port");
    }
    size_t ul = (size_t)(p - url);
    if (*p == '/' && p[1] == '\0')
        p++;
    if (*p)
        return err_set (err, 400, "invalid_field",
                        "field 'endpoint': scheme://host[:port] only, without a path or query");
    if (ul + 1 > size || hl + 1 > hsize)
        return err_set (err, 400, "invalid_field", "field 'endpoint': too long");
    memcpy (buf, url, ul);
    buf[ul] = '\0';
    for (size_t i = 0; i < hl; i++)
        host[i] = (char)tolower ((unsigned char)h[i]);
    host[hl] = '\0';
    return 0;
}

static int
s_check_bucket (const char *b, err_t *err)
{
    size_t n = strlen (b);
    bool ok = n >= 3 && n <= 222 && isalnum ((unsigned char)b[0]);
    for (size_t i = 0; ok && i < n; i++)
        ok = islower ((unsigned char)b[i]) || isdigit ((unsigned char)b[i]) || b[i] == '.'
             || b[i] == '-' || b[i] == '_';
    if (!ok)
        return err_set (err, 400, "invalid_field",
                        "field 'bucket': 3 to 222 characters of [a-z0-9._-], starting with a "
                        "letter or digit");
    return 0;
}

/* A prefix becomes "bucket:/prefix" for s3fs: printable, no ':' ',' '\',
   no empty, '.' or '..' segments. Normalised without outer slashes. */
static int
s_check_prefix (const char *in, char *buf, size_t size, err_t *err)
{
    while (*in == '/')
        in++;
    size_t n = strlen (in);
    while (n > 0 && in[n - 1] == '/')
        n--;
    if (n == 0 || n >= size || n > 512)
        return err_set (err, 400, "invalid_field", "field 'prefix': 1 to 512 characters");
    memcpy (buf, in, n);
    buf[n] = '\0';
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)buf[i] < 0x21 || buf[i] == 0x7f || buf[i] == ':' || buf[i] == ','
            || buf[i] == '\\')
            return err_set (err, 400, "invalid_field",
                            "field 'prefix': no spaces, control characters, ':', ',' or '\\'");
    for (char *seg = buf; seg;) {
        char *e = strchr (seg, '/');
        size_t len = e ? (size_t)(e - seg) : strlen (seg);
        if (len == 0 || (len == 1 && seg[0] == '.') || (len == 2 && !strncmp (seg, "..", 2)))
            return err_set (err, 400, "invalid_field",
                            "field 'prefix': empty, '.' and '..' segments are not allowed");
        seg = e ? e + 1 : NULL;
    }
    return 0;
}

/* Access keys and secrets end up in "KEY:SECRET" lines: no ':', no
   whitespace or control characters. */
static int
s_check_secret (const char *v, const char *field, err_t *err)
{
    size_t n = strlen (v);
    bool ok = n >= 1 && n <= 256;
    for (size_t i = 0; ok && i < n; i++)
        ok = (unsigned char)v[i] > 0x20 && v[i] != 0x7f && v[i] != ':';
    if (!ok)
        return err_set (err, 400, "invalid_field",
                        "field 'credentials.%s': 1 to 256 printable characters without ':' or "
                        "spaces",
                        field);
    return 0;
}

/* True when host is allowed by the mount_endpoint_hosts list (empty: all).
   Entries are exact host names or addresses, or ".example.com" for the
   domain and every name below it. */
static bool
s_host_allowed (const char *list, const char *host)
{
    if (!list || !*list)
        return true;
    char copy[sizeof ((config_t *)0)->mount_endpoint_hosts];
    snprintf (copy, sizeof copy, "%s", list);
    char *save = NULL;
    for (char *t = strtok_r (copy, ", \t", &save); t; t = strtok_r (NULL, ", \t", &save)) {
        if (!strcasecmp (t, host))
            return true;
        size_t tl = strlen (t), hl = strlen (host);
        if (t[0] == '.'
            && (!strcasecmp (t + 1, host) || (hl > tl && !strcasecmp (host + hl - tl, t))))
            return true;
    }
    return false;
}

/* --- per-sandbox serialisation ---------------------------------------------- */

static void
s_acquire (mounts_t *self, const char *cid)
{
    pthread_mutex_lock (&self->lock);
    for (;;) {
        int free_slot = -1;
        bool taken = false;
        for (int i = 0; i < S_MAX_BUSY; i++) {
            if (!self->busy[i][0] && free_slot < 0)
                free_slot = i;
            else if (!strcmp (self->busy[i], cid))
                taken = true;
        }
        if (!taken && free_slot >= 0) {
            snprintf (self->busy[free_slot], sizeof self->busy[free_slot], "%s", cid);
            break;
        }
        pthread_cond_wait (&self->cond, &self->lock);
    }
    pthread_mutex_unlock (&self->lock);
}

static void
s_release (mounts_t *self, const char *cid)
{
    pthread_mutex_lock (&self->lock);
    for (int i = 0; i < S_MAX_BUSY; i++)
        if (!strcmp (self->busy[i], cid))
            self->busy[i][0] = '\0';
    pthread_cond_broadcast (&self->cond);
    pthread_mutex_unlock (&self->lock);
}

/* --- records --------------------------------------------------------------- */

/* <dir>/mounts.json: {"next": N, "mounts": [record...]}. A missing file is
   an empty list. Caller owns the result; NULL only when the file is
   unreadable or not ours. */
static json_t *
s_load (const char *dir)
{
    char path[1300];
    snprintf (path, sizeof path, "%s/%s", dir, S_RECORDS);
    size_t len = 0;
    char *text = util_read_file (path, 1 << 20, &len);
    if (!text)
        return errno == ENOENT ? json_pack ("{s:i, s:[]}", "next", 0, "mounts") : NULL;
    json_t *j = json_loads (text, 0, NULL);
    free (text);
    if (!json_is_object (j) || !json_is_array (json_object_get (j, "mounts"))) {
        json_decref (j);
        return NULL;
    }
    return j;
}

static int
s_save (const char *dir, json_t *recs, err_t *err)
{
    char path[1300];
    snprintf (path, sizeof path, "%s/%s", dir, S_RECORDS);
    char *text = json_dumps (recs, JSON_COMPACT);
    int rc = text ? util_write_file_atomic (path, text, strlen (text), 0600) : -1;
    free (text);
    if (rc < 0)
        return err_set (err, 500, "internal", "writing %s: %s", path, strerror (errno));
    return 0;
}

static json_t *
s_public (json_t *rec)
{
    char when[40];
    json_t *o = json_pack (
        "{s:O, s:O, s:O, s:O, s:O, s:s, s:O}", "path", json_object_get (rec, "path"), "bucket",
        json_object_get (rec, "bucket"), "endpoint", json_object_get (rec, "endpoint"), "provider",
        json_object_get (rec, "provider"), "read_only", json_object_get (rec, "read_only"),
        "created_at",
        util_iso8601 (json_integer_value (json_object_get (rec, "created_at")), when, sizeof when),
        "credentials_source", json_object_get (rec, "credentials"));
    json_t *prefix = json_object_get (rec, "prefix");
    json_object_set (o, "prefix", prefix ? prefix : json_null ());
    return o;
}

/* --- processes --------------------------------------------------------------- */

static void
s_sleep_ms (int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep (&ts, NULL);
}

/* True when pid is (still) an s3fs serving mountpoint: guards every signal
   against a recycled pid after a broker restart. */
static bool
s_is_our_s3fs (pid_t pid, const char *mountpoint)
{
    if (pid <= 1)
        return false;
    char path[64], buf[4096];
    snprintf (path, sizeof path, "/proc/%d/cmdline", (int)pid);
    int fd = open (path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read (fd, buf, sizeof buf - 1);
    close (fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    const char *base = strrchr (buf, '/');
    base = base ? base + 1 : buf;
    if (strcmp (base, S_S3FS_BIN) != 0)
        return false;
    for (ssize_t i = 0; i < n;) {
        if (!strcmp (buf + i, mountpoint))
            return true;
        i += (ssize_t)strlen (buf + i) + 1;
    }
    return false;
}

/* Wait until pid has exited (reaping it if it is our child) or deadline. */
static bool
s_wait_gone (pid_t pid, int64_t deadline, const char *mountpoint)
{
    for (;;) {
        int status;
        pid_t r = waitpid (pid, &status, WNOHANG);
        if (r == pid)
            return true;
        if (r < 0 && errno == ECHILD && !s_is_our_s3fs (pid, mountpoint))
            return true; /* not our child: gone, a zombie of someone else, or reused */
        if (util_mono_ms () >= deadline)
            return false;
        s_sleep_ms (20);
    }
}

/* True when something is mounted at path, from /proc/self/mountinfo:
   never touches the file system, so a hung s3fs cannot block it. */
static bool
s_mounted_at (const char *path)
{
    FILE *f = fopen ("/proc/self/mountinfo", "re");
    if (!f)
        return false;
    char *line = NULL, mp[4096];
    size_t cap = 0;
    bool found = false;
    while (!found && getline (&line, &cap, f) != -1) {
        if (sscanf (line, "%*s %*s %*s %*s %4095s", mp) != 1)
            continue;
        /* Unescape \ooo (space, tab, newline, backslash). */
        char *w = mp;
        for (const char *r = mp; *r; r++) {
            if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7'
                && r[3] >= '0' && r[3] <= '7') {
                *w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
                r += 3;
            }
            else
                *w++ = *r;
        }
        *w = '\0';
        found = strcmp (mp, path) == 0;
    }
    free (line);
    fclose (f);
    return found;
}

/* Unmount the host side and see s3fs out: unmounting ends it; TERM and
   then KILL if it lingers (verified to still be that s3fs first). */
static void
s_stop_s3fs (pid_t pid, const char *mountpoint)
{
    for (int i = 0; i < 4 && s_mounted_at (mountpoint); i++)
        if (umount2 (mountpoint, UMOUNT_NOFOLLOW) < 0
            && umount2 (mountpoint, UMOUNT_NOFOLLOW | MNT_DETACH) < 0)
            break;
    if (pid <= 1)
        return;
    if (s_wait_gone (pid, util_mono_ms () + S_STOP_MS / 2, mountpoint))
        return;
    if (s_is_our_s3fs (pid, mountpoint))
        kill (pid, SIGTERM);
    if (s_wait_gone (pid, util_mono_ms () + S_STOP_MS / 2, mountpoint))
        return;
    if (s_is_our_s3fs (pid, mountpoint))
        kill (pid, SIGKILL);
    s_wait_gone (pid, util_mono_ms () + S_STOP_MS, mountpoint);
}

/* --- inside the container's mount namespace ---------------------------------- */

typedef enum { OP_MOUNT, OP_UNMOUNT } op_kind_t;

/* Everything the forked child needs, prepared by the parent: the child of
   a multi-threaded process may only make system calls. */
typedef struct {
    op_kind_t kind;
    int nsfd, rootfd;
    char path[S_MAX_PATH + 2]; /* split in place into comps */
    char *comps[S_MAX_COMPS + 1];
    int ncomps;
    char src[256];       /* RUNTIME_MOUNTS_PATH/<n>, inside */
    char host_src[1300]; /* <dir>/mnt/<n>, on the host */
    unsigned dev_major, dev_minor;
} op_t;

enum {
    ST_OK = 0,
    ST_ENTER,   /* setns / chroot */
    ST_SOURCE,  /* the propagated mount is not there */
    ST_WALK,    /* a component is a symlink or not a directory */
    ST_MKDIR,   /* cannot create a component */
    ST_BUSY,    /* the target is already a mount point */
    ST_MOVE,    /* move_mount failed */
    ST_UNMOUNT, /* umount2 failed */
    ST_ALREADY, /* the target already is this mount */
};

static bool
s_is_dev (const struct statx *stx, const op_t *op)
{
    return stx->stx_dev_major == op->dev_major && stx->stx_dev_minor == op->dev_minor;
}

/* The child: enter, do op, report {stage, errno} on fd, exit. */
static void __attribute__ ((noreturn)) s_child (op_t *op, int fd)
{
    int res[2] = { ST_OK, 0 };
    int cur = -1;
    /* A clone of the host mount, taken before leaving the host's
       namespace: the way in for containers started before they had the
       shared point. */
    int host_tree = -1;
    if (op->kind == OP_MOUNT)
        host_tree = (int)syscall (SYS_open_tree, AT_FDCWD, op->host_src,
                                  OPEN_TREE_CLONE | AT_SYMLINK_NOFOLLOW | O_CLOEXEC);
    if (setns (op->nsfd, CLONE_NEWNS) < 0 || fchdir (op->rootfd) < 0 || chroot (".") < 0
        || chdir ("/") < 0) {
        res[0] = ST_ENTER;
        goto out;
    }
    cur = open ("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (cur < 0) {
        res[0] = ST_ENTER;
        goto out;
    }
    int last = op->ncomps - 1;
    for (int i = 0; i < last; i++) {
        int next = openat (cur, op->comps[i], O_PATH | O_NOFOLLOW | O_DIRECTORY | O_CLOEXEC);
        if (next < 0 && errno == ENOENT && op->kind == OP_MOUNT) {
            if (mkdirat (cur, op->comps[i], 0755) < 0 && errno != EEXIST) {
                res[0] = ST_MKDIR;
                goto out;
            }
            next = openat (cur, op->comps[i], O_PATH | O_NOFOLLOW | O_DIRECTORY | O_CLOEXEC);
            if (next >= 0)
                fchownat (next, "", S_UID, S_GID, AT_EMPTY_PATH);
        }
        if (next < 0) {
            res[0] = op->kind == OP_MOUNT ? ST_WALK : ST_OK; /* nothing to unmount */
            goto out;
        }
        close (cur);
        cur = next;
    }
    const char *name = op->comps[last];
    struct statx stx;
    if (op->kind == OP_UNMOUNT) {
        /* Only what is a mount root of this bucket's device (or a dead FUSE
           mount: tenants cannot make those) is unmounted, by name relative
           to the pinned parent, never following a link. */
        if (fchdir (cur) < 0) {
            res[0] = ST_ENTER;
            goto out;
        }
        for (int i = 0; i < 8; i++) {
            int r = statx (AT_FDCWD, name, AT_SYMLINK_NOFOLLOW | AT_STATX_DONT_SYNC,
                           STATX_BASIC_STATS, &stx);
            bool ours = (r < 0 && errno == ENOTCONN)
                        || (r == 0 && (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT)
                            && s_is_dev (&stx, op));
            if (!ours)
                break;
            if (umount2 (name, UMOUNT_NOFOLLOW | MNT_DETACH) < 0) {
                res[0] = ST_UNMOUNT;
                goto out;
            }
        }
        goto out;
    }

    int tree = (int)syscall (SYS_open_tree, AT_FDCWD, op->src,
                             OPEN_TREE_CLONE | AT_SYMLINK_NOFOLLOW | O_CLOEXEC);
    if (tree < 0
        || statx (tree, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_BASIC_STATS, &stx) < 0
        || !s_is_dev (&stx, op)) {
        tree = host_tree;
        if (tree < 0
            || statx (tree, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_BASIC_STATS, &stx) < 0
            || !s_is_dev (&stx, op)) {
            res[0] = ST_SOURCE;
            goto out;
        }
    }
    int target = openat (cur, name, O_PATH | O_NOFOLLOW | O_DIRECTORY | O_CLOEXEC);
    if (target < 0 && errno == ENOENT) {
        if (mkdirat (cur, name, 0755) < 0 && errno != EEXIST) {
            res[0] = ST_MKDIR;
            goto out;
        }
        target = openat (cur, name, O_PATH | O_NOFOLLOW | O_DIRECTORY | O_CLOEXEC);
        if (target >= 0)
            fchownat (target, "", S_UID, S_GID, AT_EMPTY_PATH);
    }
    if (target < 0) {
        res[0] = ST_WALK;
        goto out;
    }
    if (statx (target, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_BASIC_STATS, &stx) == 0
        && (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT)) {
        res[0] = s_is_dev (&stx, op) ? ST_ALREADY : ST_BUSY;
        goto out;
    }
    if (syscall (SYS_move_mount, tree, "", target, "",
                 MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH)
        < 0) {
        res[0] = ST_MOVE;
        goto out;
    }
out:
    res[1] = res[0] == ST_OK || res[0] == ST_ALREADY ? 0 : errno;
    if (write (fd, res, sizeof res) < 0)
        _exit (2);
    _exit (0);
}

/* The container's init pid from <dir>/init.pid, checked to be that
   container (its root is our rootfs), with its mount namespace and root
   opened. -1 if the container is not running. */
static int
s_enter_fds (const char *dir, int *nsfd, int *rootfd)
{
    char path[1300], want[1300];
    snprintf (path, sizeof path, "%s/init.pid", dir);
    char *text = util_read_file (path, 64, NULL);
    int pid = text ? atoi (text) : 0;
    free (text);
    if (pid <= 1)
        return -1;
    /* Its root is our overlay (a recycled pid's would not be). */
    snprintf (path, sizeof path, "/proc/%d/root", pid);
    snprintf (want, sizeof want, "%s/bundle/rootfs", dir);
    struct stat a, b;
    if (stat (path, &a) < 0 || stat (want, &b) < 0 || a.st_dev != b.st_dev || a.st_ino != b.st_ino)
        return -1;
    *rootfd = open (path, O_PATH | O_DIRECTORY | O_CLOEXEC);
    snprintf (path, sizeof path, "/proc/%d/ns/mnt", pid);
    *nsfd = open (path, O_RDONLY | O_CLOEXEC);
    if (*rootfd < 0 || *nsfd < 0) {
        if (*rootfd >= 0)
            close (*rootfd);
        if (*nsfd >= 0)
            close (*nsfd);
        return -1;
    }
    return 0;
}

/* Run op in the container of dir. The result stage (ST_*), with the
   child's errno in *eno; -1 when the container is not running. */
static int
s_in_container (const char *dir, op_t *op, int *eno)
{
    *eno = 0;
    op->ncomps = 0;
    for (char *p = op->path; *p;) {
        while (*p == '/')
            *p++ = '\0';
        if (!*p)
            break;
        if (op->ncomps < S_MAX_COMPS)
            op->comps[op->ncomps++] = p;
        while (*p && *p != '/')
            p++;
    }
    if (op->ncomps == 0)
        return ST_WALK;
    if (s_enter_fds (dir, &op->nsfd, &op->rootfd) < 0)
        return -1;
    int fds[2];
    if (pipe2 (fds, O_CLOEXEC) < 0) {
        close (op->nsfd);
        close (op->rootfd);
        *eno = errno;
        return ST_ENTER;
    }
    pid_t pid = fork ();
    if (pid == 0) {
        close (fds[0]);
        s_child (op, fds[1]);
    }
    close (fds[1]);
    close (op->nsfd);
    close (op->rootfd);
    int res[2] = { ST_ENTER, pid < 0 ? errno : EIO };
    if (pid > 0) {
        ssize_t n;
        while ((n = read (fds[0], res, sizeof res)) < 0 && errno == EINTR)
            ;
        if (n != (ssize_t)sizeof res) {
            res[0] = ST_ENTER;
            res[1] = EIO;
        }
        while (waitpid (pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    close (fds[0]);
    *eno = res[1];
    return res[0];
}

static void
s_own_path (const char *dir, const char *what, int n, char *buf, size_t size)
{
    snprintf (buf, size, "%s/%s/%s-%d", dir, S_OWN_DIR, what, n);
}

static void
s_mnt_path (const char *dir, int n, char *buf, size_t size)
{
    snprintf (buf, size, "%s/mnt/%d", dir, n);
}

static void
s_op_init (op_t *op, op_kind_t kind, const char *dir, json_t *rec)
{
    memset (op, 0, sizeof *op);
    op->kind = kind;
    snprintf (op->path, sizeof op->path, "%s", json_string_value (json_object_get (rec, "path")));
    int n = (int)json_integer_value (json_object_get (rec, "n"));
    snprintf (op->src, sizeof op->src, "%s/%d", RUNTIME_MOUNTS_PATH, n);
    s_mnt_path (dir, n, op->host_src, sizeof op->host_src);
    op->dev_major = (unsigned)json_integer_value (json_object_get (rec, "dev_major"));
    op->dev_minor = (unsigned)json_integer_value (json_object_get (rec, "dev_minor"));
}

/* --- one mount's host side ------------------------------------------------- */

/* Take everything of mount rec away: the bind in the container, the host
   mount, the s3fs process, its passwd file, log and directory. */
static void
s_teardown (const char *dir, json_t *rec)
{
    int n = (int)json_integer_value (json_object_get (rec, "n"));
    char mnt[1300], pw[1300], logp[1300];
    s_mnt_path (dir, n, mnt, sizeof mnt);
    s_own_path (dir, "passwd", n, pw, sizeof pw);
    s_own_path (dir, "log", n, logp, sizeof logp);
    op_t op;
    s_op_init (&op, OP_UNMOUNT, dir, rec);
    int eno;
    int st = s_in_container (dir, &op, &eno);
    if (st > 0)
        log_warn ("mounts: unmounting %s inside the container (stage %d): %s",
                  json_string_value (json_object_get (rec, "path")), st, strerror (eno));
    s_stop_s3fs ((pid_t)json_integer_value (json_object_get (rec, "pid")), mnt);
    unlink (pw);
    unlink (logp);
    rmdir (mnt);
}

/* What went wrong, from s3fs's own words (its log holds no secret). */
static int
s_classify (const char *log, err_t *err)
{
    char line[300] = "";
    /* The last [CRT] or [ERR] line, for the message. */
    for (const char *p = log; p && *p;) {
        const char *e = strchr (p, '\n');
        size_t len = e ? (size_t)(e - p) : strlen (p);
        if ((memmem (p, len, "[CRT]", 5) || memmem (p, len, "[ERR]", 5))
            && !memmem (p, len, "change debug level", 18)
            && !memmem (p, len, "retry to connect", 16)) {
            const char *m = memmem (p, len, "): ", 3);
            const char *from = m ? m + 3 : p;
            size_t l = len - (size_t)(from - p);
            if (l >= sizeof line)
                l = sizeof line - 1;
            memcpy (line, from, l);
            line[l] = '\0';
        }
        p = e ? e + 1 : NULL;
    }
    for (char *c = line; *c; c++)
        if ((unsigned char)*c < 0x20)
            *c = ' ';
    if (strstr (log, "invalid credentials") || strstr (log, "InvalidAccessKeyId")
        || strstr (log, "SignatureDoesNotMatch") || strstr (log, "AccessDenied"))
        return err_set (err, 422, "invalid_credentials",
                        "field 'credentials': the endpoint refused them (%s)", line);
    if (strstr (log, "bucket or key not found") || strstr (log, "NoSuchBucket"))
        return err_set (err, 422, "bucket_not_found",
                        "field 'bucket': no such bucket at the endpoint (%s)", line);
    if (strstr (log, "unable to connect") || strstr (log, "Could not resolve")
        || strstr (log, "Couldn't resolve") || strstr (log, "Timeout"))
        return err_set (err, 502, "endpoint_unreachable",
                        "field 'endpoint': cannot reach the endpoint (%s)", line);
    return err_set (err, 502, "mount_failed", "s3fs could not mount the bucket: %s",
                    line[0] ? line : "no message");
}

static void
s_read_tail (const char *path, char *buf, size_t size)
{
    buf[0] = '\0';
    int fd = open (path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return;
    struct stat st;
    off_t from = 0;
    if (fstat (fd, &st) == 0 && st.st_size > (off_t)size - 1)
        from = st.st_size - (off_t)size + 1;
    ssize_t n = pread (fd, buf, size - 1, from);
    buf[n > 0 ? n : 0] = '\0';
    close (fd);
}

/* Probe the mount: list its root in a child that can be killed if the
   endpoint hangs. 0 when the listing worked, -2 when it timed out. */
static int
s_probe (const char *mnt, int64_t deadline)
{
    pid_t pid = fork ();
    if (pid == 0) {
        /* System calls only: the child of a multi-threaded process. */
        char buf[8192];
        long n;
        int fd = open (mnt, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
            _exit (1);
        while ((n = syscall (SYS_getdents64, fd, buf, sizeof buf)) > 0)
            ;
        _exit (n == 0 ? 0 : 1);
    }
    if (pid < 0)
        return -1;
    int status;
    for (;;) {
        pid_t r = waitpid (pid, &status, WNOHANG);
        if (r == pid)
            return WIFEXITED (status) && WEXITSTATUS (status) == 0 ? 0 : -1;
        if (r < 0 && errno != EINTR)
            return -1;
        if (util_mono_ms () >= deadline) {
            kill (pid, SIGKILL);
            waitpid (pid, &status, 0);
            return -2;
        }
        s_sleep_ms (10);
    }
}

typedef struct {
    const char *bucket, *prefix, *endpoint, *provider, *ak, *sk;
    bool read_only, path_style;
} spec_t;

/* Start s3fs for spec at <dir>/mnt/<n> and wait until the bucket answers.
   Fills rec's pid and device. On failure nothing is left behind. */
static int
s_mount_host (mounts_t *self, const char *dir, int n, const spec_t *sp, json_t *rec, err_t *err)
{
    char own[1300], mnt[1300], pw[1300], logp[1300];
    snprintf (own, sizeof own, "%s/%s", dir, S_OWN_DIR);
    s_mnt_path (dir, n, mnt, sizeof mnt);
    s_own_path (dir, "passwd", n, pw, sizeof pw);
    s_own_path (dir, "log", n, logp, sizeof logp);
    if ((mkdir (own, 0700) < 0 && errno != EEXIST) || chmod (own, 0700) < 0)
        return err_set (err, 500, "internal", "creating %s: %s", own, strerror (errno));
    struct stat st;
    if (lstat (own, &st) < 0 || !S_ISDIR (st.st_mode) || st.st_uid != 0)
        return err_set (err, 500, "internal", "%s is not a root-owned directory", own);
    char parent[1300];
    snprintf (parent, sizeof parent, "%s/mnt", dir);
    if (lstat (parent, &st) < 0 || !S_ISDIR (st.st_mode))
        return err_set (err, 409, "unsupported",
                        "this sandbox was created before bucket mounts existed; create a new one");
    if (mkdir (mnt, 0700) < 0 && errno != EEXIST)
        return err_set (err, 500, "internal", "creating %s: %s", mnt, strerror (errno));

    /* The secret goes to a file only root can read, never to argv or env. */
    unlink (pw);
    int fd = open (pw, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        rmdir (mnt);
        return err_set (err, 500, "internal", "creating %s: %s", pw, strerror (errno));
    }
    char line[600];
    int ll = snprintf (line, sizeof line, "%s:%s\n", sp->ak, sp->sk);
    bool wrote = ll > 0 && write (fd, line, (size_t)ll) == ll;
    memset (line, 0, sizeof line);
    close (fd);
    if (!wrote) {
        unlink (pw);
        rmdir (mnt);
        return err_set (err, 500, "internal", "writing %s", pw);
    }

    char what[800], opts[2000];
    if (sp->prefix)
        snprintf (what, sizeof what, "%s:/%s", sp->bucket, sp->prefix);
    else
        snprintf (what, sizeof what, "%s", sp->bucket);
    int64_t timeout_ms = self->cfg->mount_timeout_ms;
    int connect_s = (int)(timeout_ms / 3000);
    if (connect_s < 1)
        connect_s = 1;
    if (connect_s > 10)
        connect_s = 10;
    snprintf (opts, sizeof opts,
              "passwd_file=%s,url=%s%s,allow_other,uid=%d,gid=%d,umask=0022,mp_umask=0022,"
              "retries=2,connect_timeout=%d,readwrite_timeout=60%s",
              pw, sp->endpoint, sp->path_style ? ",use_path_request_style" : "", S_UID, S_GID,
              connect_s, sp->read_only ? ",ro" : "");
    const char *argv[] = { S_S3FS_BIN, what, mnt, "-f", "-o", opts, NULL };
    char *envp[] = { (char *)S_S3FS_PATH, (char *)"HOME=/nonexistent", NULL };

    int logfd = open (logp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (logfd < 0) {
        unlink (pw);
        rmdir (mnt);
        return err_set (err, 500, "internal", "creating %s: %s", logp, strerror (errno));
    }
    /* Its own session: a signal to the broker's process group leaves the
       mounts alone, so that they survive a broker restart. */
    pid_t pid;
    int rc = util_spawn_logged (argv, envp, logfd, true, &pid);
    close (logfd);
    if (rc != 0) {
        unlink (pw);
        unlink (logp);
        rmdir (mnt);
        return err_set (err, 500, "s3fs_missing", "cannot run %s: %s (install the s3fs package)",
                        S_S3FS_BIN, strerror (rc));
    }

    /* s3fs reports a bad bucket, key or endpoint only in its log, and then
       exits (with status 0): watch for the mount, then list it. */
    int64_t deadline = util_mono_ms () + timeout_ms;
    bool up = false, exited = false;
    while (!up && !exited && util_mono_ms () < deadline) {
        int status;
        if (waitpid (pid, &status, WNOHANG) == pid) {
            exited = true;
            break;
        }
        up = s_mounted_at (mnt);
        if (!up)
            s_sleep_ms (10);
    }
    int probe = up ? s_probe (mnt, deadline) : -1;
    bool ok = probe == 0;
    if (ok) {
        s_sleep_ms (20);
        int status;
        ok = waitpid (pid, &status, WNOHANG) == 0;
        exited = !ok;
    }
    struct statx stx;
    if (ok
        && (statx (AT_FDCWD, mnt, AT_SYMLINK_NOFOLLOW | AT_STATX_DONT_SYNC, STATX_BASIC_STATS, &stx)
                < 0
            || !(stx.stx_attributes & STATX_ATTR_MOUNT_ROOT)))
        ok = false;
    /* s3fs read the file at start-up and never again. */
    unlink (pw);
    if (!ok) {
        /* Our own unreaped child: its pid cannot have been reused. A failed
           mount holds no data worth a clean shutdown. */
        if (!exited)
            kill (pid, SIGKILL);
        for (int i = 0; i < 4 && s_mounted_at (mnt); i++)
            umount2 (mnt, UMOUNT_NOFOLLOW | MNT_DETACH);
        if (!exited)
            while (waitpid (pid, NULL, 0) < 0 && errno == EINTR)
                ;
        char tail[S_LOG_TAIL];
        s_read_tail (logp, tail, sizeof tail);
        unlink (logp);
        rmdir (mnt);
        if (!exited && (!up || probe == -2))
            return err_set (err, 502, "endpoint_unreachable",
                            "field 'endpoint': no answer within %lld ms", (long long)timeout_ms);
        return s_classify (tail, err);
    }
    json_object_set_new (rec, "pid", json_integer (pid));
    json_object_set_new (rec, "dev_major", json_integer (stx.stx_dev_major));
    json_object_set_new (rec, "dev_minor", json_integer (stx.stx_dev_minor));
    return 0;
}

/* --- broker-side credentials ----------------------------------------------- */

/* Look up "tenant endpoint access_key_id secret_access_key" in the file
   named by mount_credentials. 1 when found (ak, sk filled), 0 when not,
   -1 with *err when the file is unusable. */
static int
s_broker_credentials (const config_t *cfg, const char *tenant, const char *endpoint, char *ak,
                      size_t aks, char *sk, size_t sks, err_t *err)
{
    if (!cfg->mount_credentials[0])
        return 0;
    int fd = open (cfg->mount_credentials, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    if (fd < 0 || fstat (fd, &st) < 0) {
        if (fd >= 0)
            close (fd);
        log_error ("mounts: mount_credentials %s: %s", cfg->mount_credentials, strerror (errno));
        return err_set (err, 500, "internal", "the broker's mount credentials are unreadable");
    }
    if (st.st_uid != 0 || (st.st_mode & 077)) {
        close (fd);
        log_error ("mounts: mount_credentials %s must be owned by root, mode 0600",
                   cfg->mount_credentials);
        return err_set (err, 500, "internal", "the broker's mount credentials are not private");
    }
    FILE *f = fdopen (fd, "r");
    if (!f) {
        close (fd);
        return err_set (err, 500, "internal", "the broker's mount credentials are unreadable");
    }
    char *line = NULL;
    size_t cap = 0;
    int found = 0;
    while (!found && getline (&line, &cap, f) != -1) {
        char *save = NULL, *t = strtok_r (line, " \t\r\n", &save);
        if (!t || t[0] == '#' || strcmp (t, tenant) != 0)
            continue;
        char *ep = strtok_r (NULL, " \t\r\n", &save);
        char *a = strtok_r (NULL, " \t\r\n", &save);
        char *s = strtok_r (NULL, " \t\r\n", &save);
        if (!ep || !a || !s)
            continue;
        size_t el = strlen (ep);
        while (el > 0 && ep[el - 1] == '/')
            ep[--el] = '\0';
        if (strcasecmp (ep, endpoint) != 0)
            continue;
        err_t e2;
        if (s_check_secret (a, "access_key_id", &e2) < 0
            || s_check_secret (s, "secret_access_key", &e2) < 0) {
            log_warn ("mounts: mount_credentials: a bad entry for tenant %s is skipped", tenant);
            continue;
        }
        snprintf (ak, aks, "%s", a);
        snprintf (sk, sks, "%s", s);
        found = 1;
    }
    if (line) {
        memset (line, 0, cap);
        free (line);
    }
    fclose (f);
    return found;
}

/* --- API ------------------------------------------------------------------- */

static const char *const s_keys[] = { "bucket",      "mount_path", "endpoint", "provider",
                                      "credentials", "read_only",  "prefix",   NULL };
static const char *const s_cred_keys[] = { "access_key_id", "secret_access_key", NULL };

/* Resolve (tenant, id) to its cid and directory and take the sandbox's
   mount lock; resolve again under it, so that a sandbox being deleted
   meanwhile is not mounted into. The caller releases cid. */
static int
s_enter (mounts_t *self, const char *tenant, const char *id, char *cid, char *dir, size_t dsize,
         err_t *err)
{
    if (sandbox_resolve (self->mgr, tenant, id, cid, NULL, err) < 0)
        return -1;
    s_acquire (self, cid);
    char again[64];
    if (sandbox_resolve (self->mgr, tenant, id, again, NULL, err) < 0 || strcmp (again, cid)) {
        s_release (self, cid);
        if (!err->status)
            err_set (err, 404, "not_found", "sandbox %s not found", id);
        return -1;
    }
    sandbox_mgr_dir (self->mgr, cid, dir, dsize);
    return 0;
}

static bool
s_path_overlaps (const char *a, const char *b)
{
    size_t la = strlen (a), lb = strlen (b);
    size_t l = la < lb ? la : lb;
    return !strncmp (a, b, l) && (la == lb || (la < lb ? b[la] == '/' : a[lb] == '/'));
}

int
mounts_create (mounts_t *self, const char *tenant, const char *id, json_t *body, json_t **out,
               err_t *err)
{
    const char *bucket = NULL, *mpath = NULL, *endpoint = NULL, *provider = NULL, *prefix_in = NULL,
               *ak = NULL, *sk = NULL;
    bool read_only = false;
    if (jsonv_only_keys (body, "", s_keys, err) < 0
        || jsonv_string (body, "", "bucket", true, 255, &bucket, err) < 0
        || jsonv_string (body, "", "mount_path", true, 4096, &mpath, err) < 0
        || jsonv_string (body, "", "endpoint", false, 4096, &endpoint, err) < 0
        || jsonv_string (body, "", "provider", false, 16, &provider, err) < 0
        || jsonv_string (body, "", "prefix", false, 4096, &prefix_in, err) < 0
        || jsonv_bool (body, "", "read_only", &read_only, err) < 0)
        return -1;
    json_t *creds = json_object_get (body, "credentials");
    if (creds && !json_is_null (creds)) {
        if (!json_is_object (creds))
            return err_set (err, 400, "invalid_field", "field 'credentials': must be an object");
        if (jsonv_only_keys (creds, "credentials.", s_cred_keys, err) < 0
            || jsonv_string (creds, "credentials.", "access_key_id", true, 4096, &ak, err) < 0
            || jsonv_string (creds, "credentials.", "secret_access_key", true, 4096, &sk, err) < 0
            || s_check_secret (ak, "access_key_id", err) < 0
            || s_check_secret (sk, "secret_access_key", err) < 0)
            return -1;
    }
    if (!provider)
        provider = "s3";
    if (strcmp (provider, "s3") && strcmp (provider, "r2") && strcmp (provider, "gcs"))
        return err_set (err, 400, "invalid_field", "field 'provider': one of s3, r2, gcs");
    if (!endpoint) {
        if (!strcmp (provider, "r2"))
            return err_set (err, 400, "invalid_field",
                            "field 'endpoint': required for r2 "
                            "(https://<account>.r2.cloudflarestorage.com)");
        endpoint = !strcmp (provider, "gcs") ? "https://storage.googleapis.com"
                                             : "https://s3.amazonaws.com";
    }
    char ep[300], host[300], mp[S_MAX_PATH + 2], prefix[600];
    if (s_check_bucket (bucket, err) < 0
        || mounts_check_endpoint (endpoint, ep, sizeof ep, host, sizeof host, err) < 0
        || mounts_check_path (mpath, mp, sizeof mp, err) < 0
        || (prefix_in && s_check_prefix (prefix_in, prefix, sizeof prefix, err) < 0))
        return -1;
    if (!s_host_allowed (self->cfg->mount_endpoint_hosts, host))
        return err_set (err, 403, "endpoint_not_allowed",
                        "field 'endpoint': host %s is not in this broker's mount_endpoint_hosts",
                        host);

    char cid[64], dir[1200];
    if (s_enter (self, tenant, id, cid, dir, sizeof dir, err) < 0)
        return -1;
    int rc = -1;
    json_t *recs = s_load (dir), *rec = NULL;
    char bak[300], bsk[300];
    const char *source = "request";
    if (!recs) {
        err_set (err, 500, "internal", "unreadable mount records in %s", dir);
        goto done;
    }
    json_t *list = json_object_get (recs, "mounts"), *m;
    size_t i;
    if ((int64_t)json_array_size (list) >= self->cfg->max_mounts_per_sandbox) {
        err_set (err, 429, "quota_exceeded", "the sandbox already has %zu mounts (max %lld)",
                 json_array_size (list), (long long)self->cfg->max_mounts_per_sandbox);
        goto done;
    }
    json_array_foreach (list, i, m)
    {
        const char *other = json_string_value (json_object_get (m, "path"));
        if (other && s_path_overlaps (other, mp)) {
            err_set (err, 409, "already_mounted", "field 'mount_path': %s %s the mount at %s", mp,
                     !strcmp (other, mp) ? "is already" : "overlaps", other);
            goto done;
        }
    }
    if (!ak) {
        int found
            = s_broker_credentials (self->cfg, tenant, ep, bak, sizeof bak, bsk, sizeof bsk, err);
        if (found < 0)
            goto done;
        if (!found) {
            err_set (err, 400, "invalid_field",
                     "field 'credentials': required (the broker has none for this tenant and "
                     "endpoint)");
            goto done;
        }
        ak = bak;
        sk = bsk;
        source = "broker";
    }
    int n = (int)json_integer_value (json_object_get (recs, "next"));
    if (n < 0 || n > 1000000)
        n = 0;
    rec = json_pack ("{s:i, s:s, s:s, s:s, s:s, s:b, s:I, s:s}", "n", n, "path", mp, "bucket",
                     bucket, "endpoint", ep, "provider", provider, "read_only", read_only,
                     "created_at", (json_int_t)util_now_ms (), "credentials", source);
    if (prefix_in)
        json_object_set_new (rec, "prefix", json_string (prefix));
    /* Path-style requests for everything but AWS itself, whose virtual
       host names need DNS-compatible buckets anyway. */
    size_t hl = strlen (host);
    bool aws = hl >= 14 && !strcmp (host + hl - 14, ".amazonaws.com");
    spec_t sp = { bucket, prefix_in ? prefix : NULL, ep, provider, ak, sk, read_only, !aws };
    json_object_set_new (recs, "next", json_integer (n + 1));
    /* Record the index first, so that a crash mid-mount never reuses it. */
    if (s_save (dir, recs, err) < 0)
        goto done;
    if (s_mount_host (self, dir, n, &sp, rec, err) < 0)
        goto done;

    op_t op;
    s_op_init (&op, OP_MOUNT, dir, rec);
    int eno = 0;
    int st = s_in_container (dir, &op, &eno);
    if (st != ST_OK && st != ST_ALREADY) {
        s_teardown (dir, rec);
        if (st < 0)
            err_set (err, 409, "conflict", "sandbox %s is not running", id);
        else if (st == ST_SOURCE)
            err_set (err, 500, "internal", "the bucket mount did not reach sandbox %s", id);
        else if (st == ST_WALK)
            err_set (err, 400, "invalid_field",
                     "field 'mount_path': %s has a part that is a symlink or not a directory", mp);
        else if (st == ST_MKDIR)
            err_set (err, 400, "invalid_field", "field 'mount_path': cannot create %s: %s", mp,
                     strerror (eno));
        else if (st == ST_BUSY)
            err_set (err, 409, "already_mounted",
                     "field 'mount_path': something is already mounted at %s", mp);
        else
            err_set (err, 500, "internal", "mounting at %s in the sandbox (stage %d): %s", mp, st,
                     strerror (eno));
        goto done;
    }
    json_array_append (list, rec);
    if (s_save (dir, recs, err) < 0) {
        json_array_remove (list, json_array_size (list) - 1);
        s_teardown (dir, rec);
        goto done;
    }
    log_info ("tenant=%s sandbox=%s cid=%s: mounted bucket %s at %s (%s%s)", tenant, id, cid,
              bucket, mp, ep, read_only ? ", read-only" : "");
    *out = s_public (rec);
    rc = 0;
done:
    memset (bsk, 0, sizeof bsk);
    json_decref (rec);
    json_decref (recs);
    s_release (self, cid);
    return rc;
}

int
mounts_list (mounts_t *self, const char *tenant, const char *id, json_t **out, err_t *err)
{
    char cid[64], dir[1200];
    if (s_enter (self, tenant, id, cid, dir, sizeof dir, err) < 0)
        return -1;
    json_t *recs = s_load (dir);
    s_release (self, cid);
    if (!recs)
        return err_set (err, 500, "internal", "unreadable mount records in %s", dir);
    json_t *arr = json_array (), *m;
    size_t i;
    json_array_foreach (json_object_get (recs, "mounts"), i, m)
        json_array_append_new (arr, s_public (m));
    json_decref (recs);
    *out = json_pack ("{s:o}", "mounts", arr);
    return 0;
}

int
mounts_delete (mounts_t *self, const char *tenant, const char *id, const char *path, json_t **out,
               err_t *err)
{
    if (!path || !*path)
        return err_set (err, 400, "invalid_field", "query 'path': the mount_path to unmount");
    char mp[S_MAX_PATH + 2];
    /* Normalised like mount_path, but a system path is simply not found. */
    err_t perr;
    if (mounts_check_path (path, mp, sizeof mp, &perr) < 0 && perr.message[0]
        && !strstr (perr.message, "system directory"))
        return err_set (err, 400, "invalid_field", "query 'path': %s",
                        strchr (perr.message, ':') ? strchr (perr.message, ':') + 2 : "invalid");
    char cid[64], dir[1200];
    if (s_enter (self, tenant, id, cid, dir, sizeof dir, err) < 0)
        return -1;
    int rc = -1;
    json_t *recs = s_load (dir), *m;
    size_t i;
    if (!recs) {
        err_set (err, 500, "internal", "unreadable mount records in %s", dir);
        goto done;
    }
    json_t *list = json_object_get (recs, "mounts");
    json_array_foreach (list, i, m)
    {
        if (strcmp (json_string_value (json_object_get (m, "path")), mp) != 0)
            continue;
        s_teardown (dir, m);
        json_array_remove (list, i);
        rc = s_save (dir, recs, err);
        if (rc == 0) {
            log_info ("tenant=%s sandbox=%s cid=%s: unmounted %s", tenant, id, cid, mp);
            *out = json_pack ("{s:s, s:s}", "path", mp, "status", "unmounted");
        }
        goto done;
    }
    err_set (err, 404, "not_found", "no mount at %s", mp);
done:
    json_decref (recs);
    s_release (self, cid);
    return rc;
}

/* --- sandbox life ---------------------------------------------------------- */

/* Before the container goes for good: unmount everything. When it is
   only being replaced (its init died and it restarts on the same files),
   the s3fs mounts on the host and their records stay: the started hook
   binds them into the new container. */
static void
s_on_stopped (void *arg, const char *cid, const char *dir, bool recovered)
{
    if (recovered)
        return;
    mounts_t *self = arg;
    s_acquire (self, cid);
    json_t *recs = s_load (dir), *m;
    size_t i;
    json_array_foreach (json_object_get (recs, "mounts"), i, m)
    {
        s_teardown (dir, m);
        log_info ("cid=%s: unmounted %s (sandbox stopping)", cid,
                  json_string_value (json_object_get (m, "path")));
    }
    if (recs && json_array_size (json_object_get (recs, "mounts"))) {
        json_array_clear (json_object_get (recs, "mounts"));
        s_save (dir, recs, NULL);
    }
    json_decref (recs);
    s_release (self, cid);
}

/* What a broker killed in the middle of a mount left: passwd files, and
   host mounts of indexes no record holds (s3fs ends once unmounted). */
static void
s_sweep (const char *dir, json_t *list)
{
    char path[1300];
    snprintf (path, sizeof path, "%s/%s", dir, S_OWN_DIR);
    DIR *d = opendir (path);
    struct dirent *de;
    while (d && (de = readdir (d)))
        if (!strncmp (de->d_name, "passwd-", 7) && unlinkat (dirfd (d), de->d_name, 0) == 0)
            log_warn ("mounts: removed a stale credentials file %s/%s", path, de->d_name);
    if (d)
        closedir (d);
    snprintf (path, sizeof path, "%s/mnt", dir);
    d = opendir (path);
    while (d && (de = readdir (d))) {
        char *end;
        long n = strtol (de->d_name, &end, 10);
        if (de->d_name[0] == '.' || *end)
            continue;
        bool known = false;
        json_t *m;
        size_t i;
        json_array_foreach (list, i, m) known |= json_integer_value (json_object_get (m, "n")) == n;
        if (known)
            continue;
        char mnt[1300];
        s_mnt_path (dir, (int)n, mnt, sizeof mnt);
        for (int k = 0; k < 4 && s_mounted_at (mnt); k++)
            umount2 (mnt, UMOUNT_NOFOLLOW | MNT_DETACH);
        if (rmdir (mnt) == 0)
            log_warn ("mounts: removed an unrecorded mount point %s", mnt);
    }
    if (d)
        closedir (d);
}

/* After a broker restart: keep the mounts whose s3fs still serves them
   (binding them into the container again if it was restarted), drop the
   others: their credentials are gone, so the client mounts them again. */
static void
s_on_started (void *arg, const char *cid, const char *dir, bool recovered)
{
    if (!recovered)
        return;
    mounts_t *self = arg;
    s_acquire (self, cid);
    json_t *recs = s_load (dir), *m;
    json_t *list = json_object_get (recs, "mounts");
    bool changed = false;
    for (size_t i = 0; i < json_array_size (list);) {
        m = json_array_get (list, i);
        int n = (int)json_integer_value (json_object_get (m, "n"));
        const char *path = json_string_value (json_object_get (m, "path"));
        char mnt[1300];
        s_mnt_path (dir, n, mnt, sizeof mnt);
        struct statx stx;
        bool alive = s_is_our_s3fs ((pid_t)json_integer_value (json_object_get (m, "pid")), mnt)
                     && statx (AT_FDCWD, mnt, AT_SYMLINK_NOFOLLOW | AT_STATX_DONT_SYNC,
                               STATX_BASIC_STATS, &stx)
                            == 0
                     && (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT)
                     && stx.stx_dev_major == json_integer_value (json_object_get (m, "dev_major"))
                     && stx.stx_dev_minor == json_integer_value (json_object_get (m, "dev_minor"));
        int st = -1, eno = 0;
        if (alive) {
            op_t op;
            s_op_init (&op, OP_MOUNT, dir, m);
            st = s_in_container (dir, &op, &eno);
        }
        if (st == ST_OK || st == ST_ALREADY) {
            log_info ("cid=%s: bucket mount at %s kept after restart%s", cid, path,
                      st == ST_OK ? " (bound into the container again)" : "");
            i++;
            continue;
        }
        log_warn ("cid=%s: bucket mount at %s dropped after restart: %s", cid, path,
                  alive ? "cannot bind it into the container" : "its s3fs is gone");
        s_teardown (dir, m);
        json_array_remove (list, i);
        changed = true;
    }
    if (changed)
        s_save (dir, recs, NULL);
    s_sweep (dir, list);
    json_decref (recs);
    s_release (self, cid);
}

mounts_t *
mounts_new (sandbox_mgr_t *mgr, const config_t *cfg, err_t *err)
{
    mounts_t *self = calloc (1, sizeof *self);
    if (!self) {
        err_set (err, 500, "internal", "out of memory");
        return NULL;
    }
    self->mgr = mgr;
    self->cfg = cfg;
    pthread_mutex_init (&self->lock, NULL);
    pthread_cond_init (&self->cond, NULL);
    if (sandbox_mgr_add_hooks (mgr, s_on_started, s_on_stopped, self) < 0) {
        err_set (err, 500, "internal", "too many sandbox observers");
        free (self);
        return NULL;
    }
    return self;
}

void
mounts_destroy (mounts_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    mounts_t *self = *self_p;
    sandbox_mgr_remove_hooks (self->mgr, self);
    pthread_mutex_destroy (&self->lock);
    pthread_cond_destroy (&self->cond);
    free (self);
    *self_p = NULL;
}
