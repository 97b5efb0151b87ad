/* files.c - the sandbox file API on the sandbox's root filesystem, every
   path resolved by the kernel (openat2 RESOLVE_IN_ROOT) so that nothing the
   tenant plants in the tree can lead the broker outside it. */
#include "files.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "jsonv.h"

/* How every user path is resolved: "/" and ".." stop at the sandbox root,
   absolute symlinks start from it, /proc-style magic links are refused and
   so is stepping onto another mount. */
#define S_RESOLVE (RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)
/* How a walk (delete, list) steps into one child directory: that name
   only, never a symlink, never a mount point. */
#define S_RESOLVE_CHILD (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV)

#define S_WORKSPACE  "/workspace"
#define S_UID        1000
#define S_GID        1000
#define S_DIR_MODE   0755
#define S_FILE_MODE  0644
#define S_TMP_PREFIX ".sbx-upload-"
#define S_RETRIES    32                     /* openat2 EAGAIN: a rename raced a ".." */
#define S_MAX_DEPTH  256                    /* directory levels a walk descends */
#define S_MAX_DELETE 1000000                /* entries one recursive delete removes */
#define S_MAX_SCAN   (FILES_MAX_LIST * 100) /* entries one list reads */
#define S_PATH_BUF   (FILES_MAX_PATH + sizeof S_WORKSPACE + 2)

struct _files_root_t {
    int fd; /* O_PATH descriptor of the rootfs mount */
    dev_t dev;
};

struct _files_writer_t {
    int dirfd; /* the target's directory */
    int fd;    /* the temporary file, -1 once closed */
    int mode;  /* requested mode, or -1 to keep the old file's */
    char tmp[sizeof S_TMP_PREFIX + 32];
    char *name; /* final component of the target */
    char *path; /* as the user gave it, for messages */
};

/* A user path made absolute and cut into parent directory and final name.
   The kernel does all the resolving; this only splits the string. */
typedef struct {
    char full[S_PATH_BUF];
    char parent[S_PATH_BUF];
    const char *name; /* into full; "" for the root itself */
    bool slash;       /* given with a trailing '/' */
} s_split_t;

static files_openat2_fn s_openat2_fn;

void
files_set_openat2_fn (files_openat2_fn fn)
{
    s_openat2_fn = fn;
}

/* ---- errors ------------------------------------------------------------ */

static const char *
s_strerror (int e)
{
    const char *s = strerrordesc_np (e);
    return s ? s : "unknown error";
}

/* Turn errno e into the error a client sees, naming `what` (the path as
   the user gave it). Returns -1. */
static int
s_fail (err_t *err, int e, const char *what)
{
    int status = 500;
    const char *code = "internal";
    switch (e) {
    case ENOENT:
        status = 404, code = "not_found";
        break;
    case EEXIST:
        status = 409, code = "exists";
        break;
    case ENOTEMPTY:
        status = 409, code = "not_empty";
        break;
    case EBUSY:
        status = 409, code = "busy";
        break;
    case EISDIR:
        status = 422, code = "is_a_directory";
        break;
    case ENOTDIR:
        status = 422, code = "not_a_directory";
        break;
    case EXDEV:
        status = 422, code = "cross_device";
        break;
    case EACCES:
    case EPERM:
    case EROFS:
        status = 403, code = "forbidden";
        break;
    case ENOSPC:
    case EDQUOT:
        status = 507, code = "no_space";
        break;
    case ENAMETOOLONG:
    case ELOOP:
    case EINVAL:
        status = 400, code = "invalid_path";
        break;
    case ENOSYS:
        return err_set (err, 500, "internal", "%s: openat2 is not available (Linux 5.6 or later)",
                        what);
    }
    return err_set (err, status, code, "%s: %s", what, s_strerror (e));
}

/* ---- paths ------------------------------------------------------------- */

/* Absolute form of a user path: as given when it starts with '/', else
   under /workspace. A C string cannot hold a NUL, so callers that decode
   paths from requests must refuse embedded NULs before calling in. */
static int
s_path_make (const char *path, char *out, size_t size, err_t *err)
{
    if (!path || !*path)
        return err_set (err, 400, "invalid_path", "path is empty");
    if (strnlen (path, FILES_MAX_PATH + 1) > FILES_MAX_PATH)
        return err_set (err, 400, "invalid_path", "path is longer than %d bytes", FILES_MAX_PATH);
    if (path[0] == '/')
        snprintf (out, size, "%s", path);
    else
        snprintf (out, size, "%s/%s", S_WORKSPACE, path);
    return 0;
}

/* Split a user path into parent and final name. Trailing slashes are
   dropped (and remembered); "/" gives name "". A final "." or ".." is
   refused: it names no entry a create, delete or move could act on. */
static int
s_split (const char *path, s_split_t *sp, err_t *err)
{
    if (s_path_make (path, sp->full, sizeof sp->full, err) < 0)
        return -1;
    size_t len = strlen (sp->full);
    sp->slash = false;
    while (len > 1 && sp->full[len - 1] == '/') {
        sp->full[--len] = '\0';
        sp->slash = true;
    }
    if (strcmp (sp->full, "/") == 0) {
        snprintf (sp->parent, sizeof sp->parent, "/");
        sp->name = sp->full + 1;
        return 0;
    }
    char *slash = strrchr (sp->full, '/');
    size_t plen = (size_t)(slash - sp->full);
    if (plen == 0)
        plen = 1;
    memcpy (sp->parent, sp->full, plen);
    sp->parent[plen] = '\0';
    sp->name = slash + 1;
    if (strcmp (sp->name, ".") == 0 || strcmp (sp->name, "..") == 0)
        return err_set (err, 400, "invalid_path", "%s: must not end in \".\" or \"..\"", path);
    return 0;
}

/* ---- resolution -------------------------------------------------------- */

static long
s_sys_openat2 (int dirfd, const char *path, const void *how, size_t size)
{
    if (s_openat2_fn)
        return s_openat2_fn (dirfd, path, how, size);
    return syscall (SYS_openat2, dirfd, path, how, size);
}

/* openat2 with the given resolve flags, retried while the kernel reports
   that a concurrent rename made a ".." walk unsafe (EAGAIN). */
static int
s_openat2 (int dirfd, const char *path, int flags, unsigned long long resolve)
{
    struct open_how how = {
        .flags = (unsigned long long)(flags | O_CLOEXEC),
        .resolve = resolve,
    };
    for (int i = 0;; i++) {
        long fd = s_sys_openat2 (dirfd, path, &how, sizeof how);
        if (fd >= 0)
            return (int)fd;
        if ((errno != EAGAIN && errno != EINTR) || i >= S_RETRIES)
            return -1;
    }
}

/* Resolve an absolute sandbox path from the root. */
static int
s_resolve (files_root_t *self, const char *full, int flags)
{
    return s_openat2 (self->fd, full, flags, S_RESOLVE);
}

/* Open the child directory `name` of dirfd for reading, refusing a
   symlink, a mount point and anything on another device. */
static int
s_open_child_dir (files_root_t *self, int dirfd, const char *name)
{
    int fd = s_openat2 (dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, S_RESOLVE_CHILD);
    if (fd < 0)
        return -1;
    struct stat st;
    int e = fstat (fd, &st) < 0 ? errno : st.st_dev != self->dev ? EXDEV : 0;
    if (e) {
        close (fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* Give the just-created directory dirfd/name to the sandbox user with
   S_DIR_MODE (whatever the broker's umask). Opened without following, so
   a symlink swapped in meanwhile is not chowned through. */
static int
s_own_dir (int dirfd, const char *name)
{
    cleanup_close int fd = openat (dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -1;
    if (fchown (fd, S_UID, S_GID) < 0 && geteuid () == 0)
        return -1;
    return fchmod (fd, S_DIR_MODE);
}

/* Open (O_PATH) the directory at the absolute sandbox path `full`,
   creating missing components on the way (mkdir -p). Each prefix is
   resolved afresh from the root, so a component swapped for a symlink
   while we walk still resolves inside the root. A final component that
   exists but is not a directory is EEXIST. -1 with errno. */
static int
s_mkdir_walk (files_root_t *self, const char *full)
{
    char buf[S_PATH_BUF];
    snprintf (buf, sizeof buf, "%s", full);
    size_t len = strlen (buf);
    int cur = fcntl (self->fd, F_DUPFD_CLOEXEC, 0);
    size_t i = 0;
    while (cur >= 0) {
        while (i < len && buf[i] == '/')
            i++;
        if (i >= len)
            break;
        size_t end = i;
        while (end < len && buf[end] != '/')
            end++;
        char saved = buf[end];
        buf[end] = '\0';
        int next = s_resolve (self, buf, O_PATH | O_DIRECTORY);
        if (next < 0 && errno == ENOENT) {
            if (mkdirat (cur, buf + i, S_DIR_MODE) == 0) {
                if (s_own_dir (cur, buf + i) < 0) {
                    int e = errno;
                    close (cur);
                    errno = e;
                    return -1;
                }
            }
            else if (errno != EEXIST) {
                int e = errno;
                close (cur);
                errno = e;
                return -1;
            }
            next = s_resolve (self, buf, O_PATH | O_DIRECTORY);
        }
        int e = errno;
        close (cur);
        if (next < 0) {
            errno = (e == ENOTDIR && end >= len) ? EEXIST : e;
            return -1;
        }
        cur = next;
        buf[end] = saved;
        i = end;
    }
    return cur;
}

static void
s_fill_stat (const struct stat *st, files_stat_t *out)
{
    const char *type = S_ISREG (st->st_mode)   ? "file"
                       : S_ISDIR (st->st_mode) ? "dir"
                       : S_ISLNK (st->st_mode) ? "symlink"
                                               : "other";
    snprintf (out->type, sizeof out->type, "%s", type);
    out->size = (int64_t)st->st_size;
    out->mode = (unsigned)(st->st_mode & 07777);
    out->mtime_ms = (int64_t)st->st_mtim.tv_sec * 1000 + st->st_mtim.tv_nsec / 1000000;
}

/* ---- root -------------------------------------------------------------- */

files_root_t *
files_root_open (const char *rootfs, err_t *err)
{
    int fd = open (rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat (fd, &st) < 0) {
        err_set (err, 500, "internal", "opening sandbox root %s: %s", rootfs, s_strerror (errno));
        if (fd >= 0)
            close (fd);
        return NULL;
    }
    files_root_t *self = calloc (1, sizeof *self);
    if (!self) {
        close (fd);
        err_set (err, 500, "internal", "out of memory");
        return NULL;
    }
    self->fd = fd;
    self->dev = st.st_dev;
    return self;
}

void
files_root_close (files_root_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    close ((*self_p)->fd);
    free (*self_p);
    *self_p = NULL;
}

/* ---- stat and read ----------------------------------------------------- */

int
files_stat (files_root_t *self, const char *path, files_stat_t *st, err_t *err)
{
    char full[S_PATH_BUF];
    if (s_path_make (path, full, sizeof full, err) < 0)
        return -1;
    cleanup_close int fd = s_resolve (self, full, O_PATH);
    struct stat sb;
    if (fd < 0 || fstat (fd, &sb) < 0)
        return s_fail (err, errno, path);
    s_fill_stat (&sb, st);
    return 0;
}

int
files_open_read (files_root_t *self, const char *path, int *fd, files_stat_t *st, err_t *err)
{
    char full[S_PATH_BUF];
    if (s_path_make (path, full, sizeof full, err) < 0)
        return -1;
    /* O_PATH first: opening a FIFO for reading would block, a device node
       could read the host's device. Only a regular file is opened for
       real, and through its O_PATH descriptor, so nothing can be swapped
       in between the check and the open. */
    cleanup_close int pfd = s_resolve (self, full, O_PATH);
    struct stat sb;
    if (pfd < 0 || fstat (pfd, &sb) < 0)
        return s_fail (err, errno, path);
    if (S_ISDIR (sb.st_mode))
        return s_fail (err, EISDIR, path);
    if (!S_ISREG (sb.st_mode))
        return err_set (err, 422, "not_a_file", "%s: not a regular file", path);
    char proc[64];
    snprintf (proc, sizeof proc, "/proc/self/fd/%d", pfd);
    int rfd = open (proc, O_RDONLY | O_NOCTTY | O_CLOEXEC);
    if (rfd < 0)
        return s_fail (err, errno, path);
    if (fstat (rfd, &sb) < 0) {
        int e = errno;
        close (rfd);
        return s_fail (err, e, path);
    }
    s_fill_stat (&sb, st);
    *fd = rfd;
    return 0;
}

/* ---- write ------------------------------------------------------------- */

static void
s_writer_free (files_writer_t *w)
{
    if (w->fd >= 0)
        close (w->fd);
    if (w->dirfd >= 0)
        close (w->dirfd);
    free (w->name);
    free (w->path);
    free (w);
}

/* Open (O_PATH) the parent directory of a split path; mkdir_parents
   creates it and its missing ancestors. */
static int
s_open_parent (files_root_t *self, const s_split_t *sp, bool mkdir_parents, const char *path,
               err_t *err)
{
    int fd = s_resolve (self, sp->parent, O_PATH | O_DIRECTORY);
    if (fd < 0 && errno == ENOENT && mkdir_parents) {
        fd = s_mkdir_walk (self, sp->parent);
        if (fd < 0 && errno == EEXIST)
            errno = ENOTDIR; /* the parent exists as something else */
    }
    if (fd < 0)
        return s_fail (err, errno, path);
    return fd;
}

files_writer_t *
files_write_begin (files_root_t *self, const char *path, bool mkdir_parents, int mode, err_t *err)
{
    s_split_t sp;
    if (s_split (path, &sp, err) < 0)
        return NULL;
    if (!*sp.name) {
        s_fail (err, EISDIR, path);
        return NULL;
    }
    if (sp.slash) {
        err_set (err, 400, "invalid_path", "%s: a file path must not end in '/'", path);
        return NULL;
    }
    if (mode > 07777) {
        err_set (err, 400, "invalid_mode", "mode %o is not a permission mode", (unsigned)mode);
        return NULL;
    }
    files_writer_t *w = calloc (1, sizeof *w);
    if (!w) {
        err_set (err, 500, "internal", "out of memory");
        return NULL;
    }
    w->fd = -1;
    w->mode = mode < 0 ? -1 : mode;
    w->name = strdup (sp.name);
    w->path = strdup (path);
    w->dirfd = s_open_parent (self, &sp, mkdir_parents, path, err);
    if (!w->name || !w->path || w->dirfd < 0) {
        if (w->dirfd >= 0)
            err_set (err, 500, "internal", "out of memory");
        s_writer_free (w);
        return NULL;
    }
    struct stat st;
    if (fstatat (w->dirfd, w->name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR (st.st_mode)) {
        s_fail (err, EISDIR, path);
        s_writer_free (w);
        return NULL;
    }
    for (int tries = 0; w->fd < 0 && tries < 8; tries++) {
        char rnd[17];
        util_random_hex (rnd, 8);
        snprintf (w->tmp, sizeof w->tmp, "%s%s", S_TMP_PREFIX, rnd);
        w->fd
            = openat (w->dirfd, w->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (w->fd < 0 && errno != EEXIST)
            break;
    }
    if (w->fd < 0) {
        s_fail (err, errno, path);
        s_writer_free (w);
        return NULL;
    }
    /* A broker that is not root (unit tests) cannot give files away. */
    if (fchown (w->fd, S_UID, S_GID) < 0 && geteuid () == 0) {
        s_fail (err, errno, path);
        files_write_abort (&w);
        return NULL;
    }
    return w;
}

int
files_write_chunk (files_writer_t *w, const void *data, size_t len, err_t *err)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = write (w->fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return s_fail (err, errno, w->path);
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int
files_write_commit (files_writer_t **w_p, err_t *err)
{
    files_writer_t *w = *w_p;
    *w_p = NULL;
    int mode = w->mode;
    struct stat st;
    if (mode < 0) {
        bool old
            = fstatat (w->dirfd, w->name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG (st.st_mode);
        mode = old ? (int)(st.st_mode & 07777) : S_FILE_MODE;
    }
    int rc = 0;
    if (fchmod (w->fd, (mode_t)mode) < 0 || fsync (w->fd) < 0)
        rc = -1;
    if (close (w->fd) < 0 && rc == 0)
        rc = -1;
    w->fd = -1;
    /* renameat replaces the final name itself: a symlink planted there is
       replaced, never written through. */
    if (rc == 0 && renameat (w->dirfd, w->tmp, w->dirfd, w->name) < 0)
        rc = -1;
    if (rc < 0) {
        int e = errno;
        unlinkat (w->dirfd, w->tmp, 0);
        s_fail (err, e, w->path);
    }
    s_writer_free (w);
    return rc;
}

void
files_write_abort (files_writer_t **w_p)
{
    if (!w_p || !*w_p)
        return;
    files_writer_t *w = *w_p;
    *w_p = NULL;
    if (w->fd >= 0)
        unlinkat (w->dirfd, w->tmp, 0);
    s_writer_free (w);
}

/* ---- delete ------------------------------------------------------------ */

typedef struct {
    size_t count;
    int error; /* first errno met */
    bool too_deep, too_many;
} s_rm_t;

static void
s_rm_note (s_rm_t *rm, int e)
{
    if (!rm->error)
        rm->error = e;
}

/* Empty the directory open at fd (consumed): every entry is looked at
   without following it, subdirectories are entered by name only through
   s_open_child_dir, so a symlink is removed as a link and a mount point
   is left alone. */
static void
s_rm_children (files_root_t *self, int fd, int depth, s_rm_t *rm)
{
    DIR *dir = fdopendir (fd);
    if (!dir) {
        s_rm_note (rm, errno);
        close (fd);
        return;
    }
    struct dirent *de;
    while ((de = readdir (dir))) {
        const char *name = de->d_name;
        if (strcmp (name, ".") == 0 || strcmp (name, "..") == 0)
            continue;
        if (++rm->count > S_MAX_DELETE) {
            rm->too_many = true;
            break;
        }
        struct stat st;
        if (fstatat (dirfd (dir), name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
            if (errno != ENOENT)
                s_rm_note (rm, errno);
            continue;
        }
        if (!S_ISDIR (st.st_mode)) {
            if (unlinkat (dirfd (dir), name, 0) < 0 && errno != ENOENT)
                s_rm_note (rm, errno);
            continue;
        }
        if (depth >= S_MAX_DEPTH) {
            rm->too_deep = true;
            continue;
        }
        int sub = s_open_child_dir (self, dirfd (dir), name);
        if (sub < 0) {
            s_rm_note (rm, errno);
            continue;
        }
        s_rm_children (self, sub, depth + 1, rm);
        if (rm->too_many)
            break;
        if (unlinkat (dirfd (dir), name, AT_REMOVEDIR) < 0 && errno != ENOENT)
            s_rm_note (rm, errno);
    }
    closedir (dir);
}

int
files_delete (files_root_t *self, const char *path, bool recursive, err_t *err)
{
    s_split_t sp;
    if (s_split (path, &sp, err) < 0)
        return -1;
    if (!*sp.name)
        return err_set (err, 400, "invalid_path", "refusing to delete the root directory");
    cleanup_close int pfd = s_open_parent (self, &sp, false, path, err);
    if (pfd < 0)
        return -1;
    struct stat st;
    if (fstatat (pfd, sp.name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return s_fail (err, errno, path);
    if (!S_ISDIR (st.st_mode)) {
        if (sp.slash)
            return s_fail (err, ENOTDIR, path);
        if (unlinkat (pfd, sp.name, 0) < 0)
            return s_fail (err, errno, path);
        return 0;
    }
    if (recursive) {
        int fd = s_open_child_dir (self, pfd, sp.name);
        if (fd < 0)
            return s_fail (err, errno, path);
        s_rm_t rm = { 0 };
        s_rm_children (self, fd, 1, &rm);
        if (rm.too_many)
            return err_set (err, 422, "too_many_entries",
                            "%s: more than %d entries, deleted only some of them", path,
                            S_MAX_DELETE);
        if (rm.too_deep)
            return err_set (err, 422, "too_deep",
                            "%s: nested deeper than %d levels, deleted only some of it", path,
                            S_MAX_DEPTH);
        if (rm.error)
            return s_fail (err, rm.error, path);
    }
    if (unlinkat (pfd, sp.name, AT_REMOVEDIR) < 0)
        return s_fail (err, errno == EEXIST ? ENOTEMPTY : errno, path);
    return 0;
}

/* ---- mkdir and move ---------------------------------------------------- */

int
files_mkdir (files_root_t *self, const char *path, bool recursive, err_t *err)
{
    s_split_t sp;
    if (s_split (path, &sp, err) < 0)
        return -1;
    if (!*sp.name)
        return recursive ? 0 : s_fail (err, EEXIST, path);
    if (recursive) {
        int fd = s_mkdir_walk (self, sp.full);
        if (fd < 0)
            return s_fail (err, errno, path);
        close (fd);
        return 0;
    }
    cleanup_close int pfd = s_open_parent (self, &sp, false, path, err);
    if (pfd < 0)
        return -1;
    if (mkdirat (pfd, sp.name, S_DIR_MODE) < 0 || s_own_dir (pfd, sp.name) < 0)
        return s_fail (err, errno, path);
    return 0;
}

int
files_move (files_root_t *self, const char *from, const char *to, err_t *err)
{
    s_split_t *f = malloc (sizeof *f), *t = malloc (sizeof *t);
    int rc = -1;
    int fdir = -1, tdir = -1;
    if (!f || !t) {
        err_set (err, 500, "internal", "out of memory");
        goto out;
    }
    if (s_split (from, f, err) < 0 || s_split (to, t, err) < 0)
        goto out;
    if (!*f->name || !*t->name) {
        err_set (err, 400, "invalid_path", "cannot move the root directory or onto it");
        goto out;
    }
    fdir = s_open_parent (self, f, false, from, err);
    if (fdir < 0)
        goto out;
    tdir = s_open_parent (self, t, false, to, err);
    if (tdir < 0)
        goto out;
    struct stat st;
    if (fstatat (fdir, f->name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        s_fail (err, errno, from);
        goto out;
    }
    if ((f->slash || t->slash) && !S_ISDIR (st.st_mode)) {
        s_fail (err, ENOTDIR, from);
        goto out;
    }
    if (renameat (fdir, f->name, tdir, t->name) < 0) {
        /* Both parents are on the root's mount, so EXDEV here is
           overlayfs refusing to rename a directory that has entries in a
           lower layer (without redirect_dir). */
        if (errno == EXDEV) {
            err_set (err, 422, "cross_device",
                     "%s: a directory from the sandbox image cannot be renamed (copy it instead)",
                     from);
            goto out;
        }
        char what[2 * 256 + 8];
        snprintf (what, sizeof what, "%.256s -> %.256s", from, to);
        s_fail (err, errno, what);
        goto out;
    }
    rc = 0;
out:
    if (fdir >= 0)
        close (fdir);
    if (tdir >= 0)
        close (tdir);
    free (f);
    free (t);
    return rc;
}

/* ---- list -------------------------------------------------------------- */

typedef struct {
    char *path;
    json_t *obj;
} s_entry_t;

typedef struct {
    s_entry_t *v;
    size_t n, cap, scanned;
    bool recursive, hidden;
    bool truncated; /* stop: the limit is reached */
    bool deep;      /* a directory too deep was not entered */
    bool oom;
} s_list_t;

static json_t *
s_entry_json (const char *name, const char *path, const struct stat *st)
{
    files_stat_t fs;
    s_fill_stat (st, &fs);
    char mode[8], mtime[40];
    snprintf (mode, sizeof mode, "%04o", fs.mode);
    int64_t ms = fs.mtime_ms;
    if (ms < 0 && ms % 1000)
        ms -= 1000 + ms % 1000; /* whole seconds before 1970 format cleanly */
    util_iso8601 (ms, mtime, sizeof mtime);
    json_t *o = json_object ();
    if (!o)
        return NULL;
    if (json_object_set_new (o, "name", jsonv_string_from_bytes (name, strlen (name))) < 0
        || json_object_set_new (o, "path", jsonv_string_from_bytes (path, strlen (path))) < 0
        || json_object_set_new (o, "type", json_string (fs.type)) < 0
        || json_object_set_new (o, "size", json_integer (fs.size)) < 0
        || json_object_set_new (o, "mode", json_string (mode)) < 0
        || json_object_set_new (o, "mtime", json_string (mtime)) < 0) {
        json_decref (o);
        return NULL;
    }
    return o;
}

/* Add the entries of the directory open at fd (consumed) whose sandbox
   path is `base`, descending into subdirectories by name only. */
static void
s_list_dir (files_root_t *self, int fd, const char *base, int depth, s_list_t *ls)
{
    DIR *dir = fdopendir (fd);
    if (!dir) {
        close (fd);
        return;
    }
    struct dirent *de;
    while (!ls->truncated && !ls->oom && (de = readdir (dir))) {
        const char *name = de->d_name;
        if (strcmp (name, ".") == 0 || strcmp (name, "..") == 0)
            continue;
        if (++ls->scanned > S_MAX_SCAN) {
            ls->truncated = true;
            break;
        }
        if (!ls->hidden && name[0] == '.')
            continue;
        if (ls->n >= FILES_MAX_LIST) {
            ls->truncated = true;
            break;
        }
        struct stat st;
        if (fstatat (dirfd (dir), name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue; /* removed under us */
        char *path = NULL;
        if (asprintf (&path, "%s/%s", strcmp (base, "/") == 0 ? "" : base, name) < 0) {
            ls->oom = true;
            break;
        }
        if (ls->n == ls->cap) {
            size_t cap = ls->cap ? ls->cap * 2 : 64;
            s_entry_t *v = realloc (ls->v, cap * sizeof *v);
            if (!v) {
                free (path);
                ls->oom = true;
                break;
            }
            ls->v = v, ls->cap = cap;
        }
        json_t *obj = s_entry_json (name, path, &st);
        if (!obj) {
            free (path);
            ls->oom = true;
            break;
        }
        ls->v[ls->n++] = (s_entry_t){ path, obj };
        if (ls->recursive && S_ISDIR (st.st_mode)) {
            if (depth >= S_MAX_DEPTH) {
                ls->deep = true;
                continue;
            }
            int sub = s_open_child_dir (self, dirfd (dir), name);
            if (sub >= 0)
                s_list_dir (self, sub, path, depth + 1, ls);
        }
    }
    closedir (dir);
}

static int
s_entry_cmp (const void *a, const void *b)
{
    return strcmp (((const s_entry_t *)a)->path, ((const s_entry_t *)b)->path);
}

int
files_list (files_root_t *self, const char *path, bool recursive, bool hidden, json_t **out,
            bool *truncated, err_t *err)
{
    char full[S_PATH_BUF];
    if (s_path_make (path, full, sizeof full, err) < 0)
        return -1;
    int fd = s_resolve (self, full, O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return s_fail (err, errno, path);
    /* Entry paths are built on the path as given; only a trailing "/" or
       "/." is dropped, which names the same directory just opened. */
    size_t len = strlen (full);
    for (;;) {
        if (len > 1 && full[len - 1] == '/')
            full[--len] = '\0';
        else if (len > 2 && full[len - 1] == '.' && full[len - 2] == '/')
            full[len -= 2] = '\0';
        else
            break;
    }
    if (len == 0)
        snprintf (full, sizeof full, "/");
    s_list_t ls = { .recursive = recursive, .hidden = hidden };
    s_list_dir (self, fd, full, 1, &ls);
    json_t *arr = ls.oom ? NULL : json_array ();
    if (arr && ls.n > 0) /* qsort must not get a NULL array, even empty */
        qsort (ls.v, ls.n, sizeof *ls.v, s_entry_cmp);
    for (size_t i = 0; i < ls.n; i++) {
        if (arr && json_array_append (arr, ls.v[i].obj) < 0) {
            json_decref (arr);
            arr = NULL;
        }
        json_decref (ls.v[i].obj);
        free (ls.v[i].path);
    }
    free (ls.v);
    if (!arr)
        return err_set (err, 500, "internal", "%s: out of memory", path);
    *out = arr;
    if (truncated)
        *truncated = ls.truncated || ls.deep;
    return 0;
}

int
files_read_all (files_root_t *self, const char *path, int64_t max, char **buf, size_t *len,
                err_t *err)
{
    int fd = -1;
    files_stat_t st;
    if (files_open_read (self, path, &fd, &st, err) < 0)
        return -1;
    if (st.size > max) {
        close (fd);
        return err_set (err, 413, "file_too_large", "%s is larger than %lld bytes", path,
                        (long long)max);
    }
    /* Read one byte past the size seen, to notice a file that grew. */
    size_t cap = (size_t)st.size + 1, n = 0;
    char *data = malloc (cap + 1);
    if (!data) {
        close (fd);
        return err_set (err, 500, "internal", "out of memory");
    }
    while (n < cap) {
        ssize_t r = read (fd, data + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            close (fd);
            free (data);
            return err_set (err, 500, "internal", "reading %s: %s", path, strerror (e));
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close (fd);
    if (n > (size_t)st.size && (int64_t)n > max) {
        free (data);
        return err_set (err, 413, "file_too_large", "%s is larger than %lld bytes", path,
                        (long long)max);
    }
    data[n] = '\0';
    *buf = data;
    *len = n;
    return 0;
}
