/* test_files.c - the sandbox file API on a fake root: every operation, and
   every way a tenant could try to lead the broker out of the root. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "files.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tap.h"

static char s_tmp[] = "/tmp/test_files.XXXXXX";
static char s_buf[8192];
static bool s_root_user;
static files_root_t *s_r;

/* ---- helpers, independent of the code under test ---------------------- */

/* s_tmp + "/" + rel, in one of a few rotating buffers. */
static const char *
P (const char *fmt, ...)
{
    static char bufs[8][4200];
    static int next;
    char *b = bufs[next++ % 8];
    char rel[4096];
    va_list ap;
    va_start (ap, fmt);
    vsnprintf (rel, sizeof rel, fmt, ap);
    va_end (ap);
    snprintf (b, 4200, "%s/%s", s_tmp, rel);
    return b;
}

static void
s_put (const char *path, const char *data, mode_t mode)
{
    int fd = open (path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    if (fd >= 0) {
        if (write (fd, data, strlen (data)) < 0)
            perror ("write");
        fchmod (fd, mode);
        close (fd);
    }
}

/* Contents of a host file (NULL if it cannot be read). */
static const char *
s_get (const char *path)
{
    int fd = open (path, O_RDONLY);
    if (fd < 0)
        return NULL;
    ssize_t n = read (fd, s_buf, sizeof s_buf - 1);
    close (fd);
    if (n < 0)
        return NULL;
    s_buf[n] = '\0';
    return s_buf;
}

static bool
s_exists (const char *path)
{
    struct stat st;
    return lstat (path, &st) == 0;
}

static bool
s_is_link (const char *path)
{
    struct stat st;
    return lstat (path, &st) == 0 && S_ISLNK (st.st_mode);
}

static bool
s_is_reg (const char *path)
{
    struct stat st;
    return lstat (path, &st) == 0 && S_ISREG (st.st_mode);
}

static unsigned
s_mode (const char *path)
{
    struct stat st;
    return lstat (path, &st) == 0 ? (unsigned)(st.st_mode & 07777) : 0;
}

static bool
s_owned_by_sandbox (const char *path)
{
    struct stat st;
    if (!s_root_user)
        return true; /* only root can give files away */
    return lstat (path, &st) == 0 && st.st_uid == 1000 && st.st_gid == 1000;
}

/* Number of entries in a host directory, -1 if it cannot be read. */
static int
s_count (const char *path)
{
    DIR *d = opendir (path);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir (d)))
        if (strcmp (de->d_name, ".") && strcmp (de->d_name, ".."))
            n++;
    closedir (d);
    return n;
}

/* Any ".sbx-upload-" temp file left in a host directory? */
static bool
s_has_temp (const char *path)
{
    DIR *d = opendir (path);
    if (!d)
        return false;
    bool found = false;
    struct dirent *de;
    while ((de = readdir (d)))
        if (strncmp (de->d_name, ".sbx-upload-", 12) == 0)
            found = true;
    closedir (d);
    return found;
}

static int
s_rm_entry (const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove (path);
}

static void
s_cleanup (void)
{
    nftw (s_tmp, s_rm_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

/* Write data to a sandbox path through the module. */
static int
s_write (const char *path, const char *data, bool parents, int mode, err_t *err)
{
    files_writer_t *w = files_write_begin (s_r, path, parents, mode, err);
    if (!w)
        return -1;
    if (files_write_chunk (w, data, strlen (data), err) < 0) {
        files_write_abort (&w);
        return -1;
    }
    return files_write_commit (&w, err);
}

/* Read a sandbox path through the module (NULL on error). */
static const char *
s_read (const char *path, err_t *err)
{
    int fd = -1;
    files_stat_t st;
    if (files_open_read (s_r, path, &fd, &st, err) < 0)
        return NULL;
    ssize_t n = read (fd, s_buf, sizeof s_buf - 1);
    close (fd);
    if (n < 0)
        return NULL;
    s_buf[n] = '\0';
    return s_buf;
}

static bool
s_code (const err_t *err, int status, const char *code)
{
    bool ok = err->status == status && strcmp (err->code, code) == 0;
    if (!ok)
        printf ("# got %d %s: %s\n", err->status, err->code, err->message);
    return ok;
}

/* The list entry whose path is `path`, or NULL. */
static json_t *
s_find (json_t *arr, const char *path)
{
    size_t i;
    json_t *e;
    json_array_foreach (arr, i, e)
    {
        if (strcmp (json_string_value (json_object_get (e, "path")), path) == 0)
            return e;
    }
    return NULL;
}

static bool
s_any_path_contains (json_t *arr, const char *needle)
{
    size_t i;
    json_t *e;
    json_array_foreach (arr, i, e)
    {
        if (strstr (json_string_value (json_object_get (e, "path")), needle))
            return true;
    }
    return false;
}

static bool
s_sorted (json_t *arr)
{
    for (size_t i = 1; i < json_array_size (arr); i++) {
        const char *a = json_string_value (json_object_get (json_array_get (arr, i - 1), "path"));
        const char *b = json_string_value (json_object_get (json_array_get (arr, i), "path"));
        if (strcmp (a, b) >= 0)
            return false;
    }
    return true;
}

#include "openat2_helper.h"

static atomic_long s_eagain;

/* Counts how often the kernel asked for a retry (EAGAIN). */
static long
s_openat2_counting (int dirfd, const char *path, const void *how, size_t size)
{
    long rc = s_helper >= 0 ? s_openat2_helper (dirfd, path, how, size)
                            : syscall (SYS_openat2, dirfd, path, how, size);
    if (rc < 0 && errno == EAGAIN)
        atomic_fetch_add (&s_eagain, 1);
    return rc;
}

static void
s_setup_openat2 (const char *self_exe)
{
    s_start_openat2_helper (self_exe);
    files_set_openat2_fn (s_openat2_counting);
}

/* ---- the fake root ----------------------------------------------------- */

static void
s_make_tree (void)
{
    mkdir (P ("root"), 0755);
    mkdir (P ("root/workspace"), 0755);
    mkdir (P ("root/etc"), 0755);
    s_put (P ("root/etc/passwd"), "fake passwd\n", 0644);
    s_put (P ("root/workspace/hello.txt"), "hello\n", 0640);
    mkdir (P ("root/workspace/tree"), 0755);
    s_put (P ("root/workspace/tree/a.txt"), "a", 0644);
    s_put (P ("root/workspace/tree/.hidden"), "h", 0600);
    mkdir (P ("root/workspace/tree/sub"), 0755);
    s_put (P ("root/workspace/tree/sub/b.txt"), "bb", 0644);
    mkdir (P ("root/workspace/tree/sub/deeper"), 0700);
    s_put (P ("root/workspace/tree/sub/deeper/c.txt"), "ccc", 0644);
    /* outside the root: what a tenant would love to reach */
    s_put (P ("secret"), "SECRET\n", 0600);
    mkdir (P ("secretdir"), 0755);
    s_put (P ("secretdir/keep.txt"), "keep\n", 0644);
    mkdir (P ("outside"), 0755);
}

/* ---- plain operations -------------------------------------------------- */

static void
test_root_and_paths (void)
{
    err_t err = { 0 };
    files_root_t *r = files_root_open (P ("no-such-root"), &err);
    ok (!r && err.status == 500, "opening a missing root fails with 500");

    files_stat_t st;
    ok (files_stat (s_r, "", &st, &err) < 0 && s_code (&err, 400, "invalid_path"),
        "empty path: 400 invalid_path");
    ok (files_stat (s_r, NULL, &st, &err) < 0 && s_code (&err, 400, "invalid_path"),
        "NULL path: 400 invalid_path");
    char *longp = malloc (FILES_MAX_PATH + 2);
    memset (longp, 'a', FILES_MAX_PATH + 1);
    longp[0] = '/';
    longp[FILES_MAX_PATH + 1] = '\0';
    ok (files_stat (s_r, longp, &st, &err) < 0 && s_code (&err, 400, "invalid_path"),
        "path longer than FILES_MAX_PATH: 400 invalid_path");
    free (longp);
    char name[300];
    memset (name, 'n', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    ok (files_stat (s_r, name, &st, &err) < 0 && s_code (&err, 400, "invalid_path"),
        "a component longer than NAME_MAX: 400 invalid_path");
}

static void
test_stat_read (void)
{
    err_t err = { 0 };
    files_stat_t st;
    ok (files_stat (s_r, "/workspace/hello.txt", &st, &err) == 0 && strcmp (st.type, "file") == 0
            && st.size == 6 && st.mode == 0640 && st.mtime_ms > 1000000000000LL,
        "stat a file: type, size, mode, mtime");
    ok (files_stat (s_r, "tree", &st, &err) == 0 && strcmp (st.type, "dir") == 0,
        "stat a relative path: taken under /workspace, a dir");
    ok (files_stat (s_r, "/workspace/nope", &st, &err) < 0 && s_code (&err, 404, "not_found")
            && strstr (err.message, "/workspace/nope"),
        "stat a missing path: 404 naming the path");
    ok (files_stat (s_r, "/workspace/hello.txt/x", &st, &err) < 0
            && s_code (&err, 422, "not_a_directory"),
        "a file used as a directory: 422 not_a_directory");

    const char *got = s_read ("/workspace/hello.txt", &err);
    ok (got && strcmp (got, "hello\n") == 0, "read a file's content");
    got = s_read ("hello.txt", &err);
    ok (got && strcmp (got, "hello\n") == 0, "read a relative path");
    int fd = -1;
    ok (files_open_read (s_r, "/workspace/tree", &fd, &st, &err) < 0 && fd == -1
            && s_code (&err, 422, "is_a_directory"),
        "reading a directory: 422 is_a_directory");
    ok (files_open_read (s_r, "/workspace/nope", &fd, &st, &err) < 0
            && s_code (&err, 404, "not_found"),
        "reading a missing file: 404");
    mkfifo (P ("root/workspace/fifo"), 0644);
    ok (files_open_read (s_r, "/workspace/fifo", &fd, &st, &err) < 0
            && s_code (&err, 422, "not_a_file"),
        "reading a FIFO: 422 not_a_file, without blocking");
    ok (files_stat (s_r, "/workspace/fifo", &st, &err) == 0 && strcmp (st.type, "other") == 0,
        "stat a FIFO: type other, without blocking");
    symlink ("tree/a.txt", P ("root/workspace/rel-link"));
    ok (files_stat (s_r, "/workspace/rel-link", &st, &err) == 0 && strcmp (st.type, "file") == 0
            && st.size == 1,
        "stat follows a symlink inside the root");
    symlink ("loop2", P ("root/workspace/loop1"));
    symlink ("loop1", P ("root/workspace/loop2"));
    ok (files_stat (s_r, "/workspace/loop1", &st, &err) < 0 && s_code (&err, 400, "invalid_path"),
        "a symlink loop: 400 invalid_path");
}

static void
test_write (void)
{
    err_t err = { 0 };
    ok (s_write ("/workspace/new.txt", "new content", false, -1, &err) == 0
            && strcmp (s_get (P ("root/workspace/new.txt")), "new content") == 0,
        "write a new file");
    ok (s_mode (P ("root/workspace/new.txt")) == 0644, "a new file gets 0644 (umask 077 aside)");
    ok (s_owned_by_sandbox (P ("root/workspace/new.txt")), "a new file belongs to 1000:1000%s",
        s_root_user ? "" : " # SKIP not root");
    ok (s_write ("/workspace/hello.txt", "replaced\n", false, -1, &err) == 0
            && strcmp (s_get (P ("root/workspace/hello.txt")), "replaced\n") == 0
            && s_mode (P ("root/workspace/hello.txt")) == 0640,
        "replacing a file keeps its mode with mode < 0");
    ok (s_write ("/workspace/hello.txt", "x", false, 0600, &err) == 0
            && s_mode (P ("root/workspace/hello.txt")) == 0600,
        "an explicit mode is applied");
    ok (s_write ("rel.txt", "r", false, 0755, &err) == 0 && s_is_reg (P ("root/workspace/rel.txt"))
            && s_mode (P ("root/workspace/rel.txt")) == 0755,
        "write a relative path under /workspace");
    ok (s_write ("/workspace/a/b/c.txt", "deep", false, -1, &err) < 0
            && s_code (&err, 404, "not_found"),
        "write into a missing directory without mkdir_parents: 404");
    ok (s_write ("/workspace/a/b/c.txt", "deep", true, -1, &err) == 0
            && strcmp (s_get (P ("root/workspace/a/b/c.txt")), "deep") == 0,
        "write with mkdir_parents creates the directories");
    ok (s_mode (P ("root/workspace/a")) == 0755 && s_mode (P ("root/workspace/a/b")) == 0755
            && s_owned_by_sandbox (P ("root/workspace/a"))
            && s_owned_by_sandbox (P ("root/workspace/a/b")),
        "created parents are 0755 and belong to the sandbox user");
    ok (s_write ("/workspace/hello.txt/x", "x", true, -1, &err) < 0
            && s_code (&err, 422, "not_a_directory"),
        "mkdir_parents through a file: 422 not_a_directory");
    ok (s_write ("/workspace/tree", "x", false, -1, &err) < 0
            && s_code (&err, 422, "is_a_directory"),
        "writing onto a directory: 422 is_a_directory");
    ok (s_write ("/", "x", false, -1, &err) < 0 && s_code (&err, 422, "is_a_directory"),
        "writing onto /: 422 is_a_directory");
    ok (s_write ("/workspace/newdir/", "x", true, -1, &err) < 0
            && s_code (&err, 400, "invalid_path"),
        "a file path ending in '/': 400 invalid_path");
    ok (s_write ("/workspace/..", "x", false, -1, &err) < 0 && s_code (&err, 400, "invalid_path"),
        "a file path ending in '..': 400 invalid_path");
    ok (s_write ("/workspace/m.txt", "x", false, 010000, &err) < 0
            && s_code (&err, 400, "invalid_mode"),
        "a mode beyond 07777: 400 invalid_mode");

    /* chunks, and atomicity */
    files_writer_t *w = files_write_begin (s_r, "/workspace/hello.txt", false, -1, &err);
    ok (w != NULL, "begin replacing a file");
    files_write_chunk (w, "part", 4, &err);
    ok (strcmp (s_get (P ("root/workspace/hello.txt")), "x") == 0
            && s_has_temp (P ("root/workspace")),
        "during an upload the old file is intact and the data is in a temp file");
    files_write_abort (&w);
    ok (!w && strcmp (s_get (P ("root/workspace/hello.txt")), "x") == 0
            && !s_has_temp (P ("root/workspace")),
        "an aborted upload leaves the old file intact and no temp file");
    files_write_abort (NULL);
    files_write_abort (&w);

    w = files_write_begin (s_r, "/workspace/big.bin", false, -1, &err);
    char chunk[65536];
    memset (chunk, 'z', sizeof chunk);
    int rc = 0;
    for (int i = 0; i < 32 && rc == 0; i++)
        rc = files_write_chunk (w, chunk, sizeof chunk, &err);
    ok (rc == 0 && files_write_commit (&w, &err) == 0 && !w, "a 2 MiB upload in 32 chunks");
    struct stat sb;
    ok (stat (P ("root/workspace/big.bin"), &sb) == 0 && sb.st_size == 32 * 65536
            && !s_has_temp (P ("root/workspace")),
        "it has the full size and no temp file is left");

    /* the target turned into a directory during the upload */
    w = files_write_begin (s_r, "/workspace/became-dir", false, -1, &err);
    mkdir (P ("root/workspace/became-dir"), 0755);
    s_put (P ("root/workspace/became-dir/f"), "f", 0644);
    ok (w && files_write_commit (&w, &err) < 0 && !w && s_code (&err, 422, "is_a_directory")
            && !s_has_temp (P ("root/workspace")),
        "commit over a directory: 422 is_a_directory, temp file removed");
}

static void
test_mkdir (void)
{
    err_t err = { 0 };
    ok (files_mkdir (s_r, "/workspace/d1", false, &err) == 0
            && s_mode (P ("root/workspace/d1")) == 0755
            && s_owned_by_sandbox (P ("root/workspace/d1")),
        "mkdir: 0755, owned by the sandbox user");
    ok (files_mkdir (s_r, "/workspace/d1", false, &err) < 0 && s_code (&err, 409, "exists"),
        "mkdir of an existing path: 409 exists");
    ok (files_mkdir (s_r, "/workspace/x1/x2", false, &err) < 0 && s_code (&err, 404, "not_found"),
        "mkdir with a missing parent: 404");
    ok (files_mkdir (s_r, "x1/x2/x3/", true, &err) == 0
            && s_mode (P ("root/workspace/x1/x2/x3")) == 0755
            && s_owned_by_sandbox (P ("root/workspace/x1/x2")),
        "mkdir -p of a relative path with a trailing slash");
    ok (files_mkdir (s_r, "/workspace/x1/x2", true, &err) == 0,
        "mkdir -p of an existing directory is fine");
    ok (files_mkdir (s_r, "/workspace/new.txt", true, &err) < 0 && s_code (&err, 409, "exists"),
        "mkdir -p onto a file: 409 exists");
    ok (files_mkdir (s_r, "/workspace/new.txt/sub", true, &err) < 0
            && s_code (&err, 422, "not_a_directory"),
        "mkdir -p through a file: 422 not_a_directory");
    ok (files_mkdir (s_r, "/", true, &err) == 0, "mkdir -p / is fine");
    ok (files_mkdir (s_r, "/", false, &err) < 0 && s_code (&err, 409, "exists"),
        "mkdir / : 409 exists");
    ok (files_mkdir (s_r, "/workspace/x1/.", false, &err) < 0 && s_code (&err, 400, "invalid_path"),
        "mkdir of a path ending in '.': 400 invalid_path");
}

static void
test_move (void)
{
    err_t err = { 0 };
    s_put (P ("root/workspace/m1.txt"), "m1", 0644);
    s_put (P ("root/workspace/m2.txt"), "m2", 0644);
    ok (files_move (s_r, "/workspace/m1.txt", "/workspace/d1/moved.txt", &err) == 0
            && !s_exists (P ("root/workspace/m1.txt"))
            && strcmp (s_get (P ("root/workspace/d1/moved.txt")), "m1") == 0,
        "move a file into another directory");
    ok (files_move (s_r, "d1/moved.txt", "m2.txt", &err) == 0
            && strcmp (s_get (P ("root/workspace/m2.txt")), "m1") == 0,
        "move with relative paths replaces the target file");
    ok (files_move (s_r, "/workspace/nope", "/workspace/x", &err) < 0
            && s_code (&err, 404, "not_found") && strstr (err.message, "/workspace/nope"),
        "moving a missing path: 404 naming it");
    ok (files_move (s_r, "/workspace/m2.txt", "/workspace/nodir/x", &err) < 0
            && s_code (&err, 404, "not_found"),
        "moving into a missing directory: 404");
    ok (files_move (s_r, "/workspace/x1", "/workspace/x1/x2/x3/x4", &err) < 0
            && s_code (&err, 400, "invalid_path"),
        "moving a directory into itself: 400");
    ok (files_move (s_r, "/workspace/m2.txt", "/workspace/tree", &err) < 0
            && s_code (&err, 422, "is_a_directory"),
        "moving a file onto a directory: 422 is_a_directory");
    ok (files_move (s_r, "/workspace/d1", "/workspace/tree", &err) < 0
            && s_code (&err, 409, "not_empty"),
        "moving a directory onto a non-empty one: 409 not_empty");
    ok (files_move (s_r, "/", "/workspace/root", &err) < 0 && s_code (&err, 400, "invalid_path"),
        "moving / : 400");
    ok (files_move (s_r, "/workspace/x1/", "/workspace/y1", &err) == 0
            && s_exists (P ("root/workspace/y1/x2/x3")),
        "move a directory (trailing slash on from)");
    ok (files_move (s_r, "/workspace/m2.txt/", "/workspace/m3", &err) < 0
            && s_code (&err, 422, "not_a_directory"),
        "a file given with a trailing slash: 422 not_a_directory");
}

static void
test_delete (void)
{
    err_t err = { 0 };
    s_put (P ("root/workspace/del.txt"), "d", 0644);
    ok (files_delete (s_r, "/workspace/del.txt", false, &err) == 0
            && !s_exists (P ("root/workspace/del.txt")),
        "delete a file");
    ok (files_delete (s_r, "/workspace/del.txt", false, &err) < 0
            && s_code (&err, 404, "not_found"),
        "delete a missing file: 404");
    mkdir (P ("root/workspace/empty"), 0755);
    ok (files_delete (s_r, "empty", false, &err) == 0 && !s_exists (P ("root/workspace/empty")),
        "delete an empty directory (relative path)");
    ok (files_delete (s_r, "/workspace/y1", false, &err) < 0 && s_code (&err, 409, "not_empty")
            && s_exists (P ("root/workspace/y1/x2/x3")),
        "delete a non-empty directory without recursive: 409 not_empty, untouched");
    s_put (P ("root/workspace/y1/x2/f"), "f", 0644);
    s_put (P ("root/workspace/y1/.h"), "h", 0644);
    ok (files_delete (s_r, "/workspace/y1/", true, &err) == 0
            && !s_exists (P ("root/workspace/y1")),
        "delete a tree with recursive");
    ok (files_delete (s_r, "/", true, &err) < 0 && s_code (&err, 400, "invalid_path")
            && s_exists (P ("root/workspace")),
        "deleting / is refused");
    ok (files_delete (s_r, "/workspace/..", true, &err) < 0 && s_code (&err, 400, "invalid_path")
            && s_exists (P ("root/workspace")),
        "deleting a path ending in '..' is refused");
    ok (files_delete (s_r, "/workspace/../", true, &err) < 0 && s_code (&err, 400, "invalid_path"),
        "deleting a path ending in '../' is refused");
    ok (files_delete (s_r, "/workspace/new.txt/", false, &err) < 0
            && s_code (&err, 422, "not_a_directory") && s_exists (P ("root/workspace/new.txt")),
        "a file given with a trailing slash is not deleted");
}

static void
test_list (void)
{
    err_t err = { 0 };
    json_t *arr = NULL;
    bool trunc = true;
    ok (files_list (s_r, "/workspace/tree", false, false, &arr, &trunc, &err) == 0 && !trunc
            && json_array_size (arr) == 2,
        "list: two visible entries");
    json_t *a = s_find (arr, "/workspace/tree/a.txt");
    json_t *sub = s_find (arr, "/workspace/tree/sub");
    ok (a && sub && s_sorted (arr), "entries by absolute path, sorted");
    ok (a && strcmp (json_string_value (json_object_get (a, "name")), "a.txt") == 0
            && strcmp (json_string_value (json_object_get (a, "type")), "file") == 0
            && json_integer_value (json_object_get (a, "size")) == 1
            && strcmp (json_string_value (json_object_get (a, "mode")), "0644") == 0,
        "a file entry: name, type, size, mode");
    const char *mt = a ? json_string_value (json_object_get (a, "mtime")) : NULL;
    ok (mt && strlen (mt) == 24 && mt[4] == '-' && mt[10] == 'T' && mt[23] == 'Z',
        "mtime is ISO 8601 (%s)", mt ? mt : "null");
    ok (sub && strcmp (json_string_value (json_object_get (sub, "type")), "dir") == 0,
        "a directory entry has type dir");
    json_decref (arr);

    ok (files_list (s_r, "/workspace/tree", false, true, &arr, &trunc, &err) == 0
            && json_array_size (arr) == 3 && s_find (arr, "/workspace/tree/.hidden"),
        "hidden includes dot-files");
    json_decref (arr);

    ok (files_list (s_r, "tree/", true, false, &arr, &trunc, &err) == 0 && !trunc
            && json_array_size (arr) == 5 && s_sorted (arr)
            && s_find (arr, "/workspace/tree/sub/deeper/c.txt")
            && s_find (arr, "/workspace/tree/sub/deeper"),
        "recursive list of a relative path: the whole tree, sorted");
    json_t *d = s_find (arr, "/workspace/tree/sub/deeper");
    ok (d && strcmp (json_string_value (json_object_get (d, "mode")), "0700") == 0,
        "mode as an octal string (0700)");
    json_decref (arr);

    ok (files_list (s_r, ".", false, false, &arr, &trunc, &err) == 0
            && s_find (arr, "/workspace/tree"),
        "list \".\" is /workspace");
    json_decref (arr);
    ok (files_list (s_r, "/", false, false, &arr, &trunc, &err) == 0 && s_find (arr, "/workspace")
            && s_find (arr, "/etc"),
        "list / gives /workspace and /etc");
    json_decref (arr);

    symlink ("/workspace/tree", P ("root/workspace/treelink"));
    ok (files_list (s_r, "/workspace", true, false, &arr, &trunc, &err) == 0,
        "recursive list of /workspace");
    json_t *tl = s_find (arr, "/workspace/treelink");
    ok (tl && strcmp (json_string_value (json_object_get (tl, "type")), "symlink") == 0
            && !s_find (arr, "/workspace/treelink/a.txt"),
        "a symlink is listed as one and not descended into");
    json_decref (arr);
    ok (files_list (s_r, "/workspace/treelink", false, false, &arr, &trunc, &err) == 0
            && s_find (arr, "/workspace/treelink/a.txt"),
        "listing a symlink to a directory inside the root lists that directory");
    json_decref (arr);

    arr = NULL;
    ok (files_list (s_r, "/workspace/hello.txt", false, false, &arr, &trunc, &err) < 0 && !arr
            && s_code (&err, 422, "not_a_directory"),
        "listing a file: 422 not_a_directory");
    ok (files_list (s_r, "/workspace/nope", false, false, &arr, &trunc, &err) < 0
            && s_code (&err, 404, "not_found"),
        "listing a missing directory: 404");

    /* truncation: FILES_MAX_LIST + 3 files */
    mkdir (P ("root/workspace/many"), 0755);
    int dfd = open (P ("root/workspace/many"), O_RDONLY | O_DIRECTORY);
    for (int i = 0; i < FILES_MAX_LIST + 3; i++) {
        char name[32];
        snprintf (name, sizeof name, "f%05d", i);
        int fd = openat (dfd, name, O_WRONLY | O_CREAT, 0644);
        if (fd >= 0)
            close (fd);
    }
    close (dfd);
    ok (files_list (s_r, "/workspace/many", false, false, &arr, &trunc, &err) == 0 && trunc
            && json_array_size (arr) == FILES_MAX_LIST && s_sorted (arr),
        "more than FILES_MAX_LIST entries: the first %d, sorted, truncated", FILES_MAX_LIST);
    json_decref (arr);
    ok (files_delete (s_r, "/workspace/many", true, &err) == 0
            && !s_exists (P ("root/workspace/many")),
        "recursive delete of %d files", FILES_MAX_LIST + 3);
}

/* ---- escapes ----------------------------------------------------------- */

static void
test_escape_read (void)
{
    err_t err = { 0 };
    files_stat_t st;
    symlink ("/etc/passwd", P ("root/workspace/l-abs"));
    const char *got = s_read ("/workspace/l-abs", &err);
    ok (got && strcmp (got, "fake passwd\n") == 0,
        "an absolute symlink resolves inside the root (ROOT/etc/passwd)");

    symlink ("../../../../../../../../secret", P ("root/workspace/l-rel"));
    ok (!s_read ("/workspace/l-rel", &err) && s_code (&err, 404, "not_found"),
        "a relative symlink with many '..' stops at the root: 404, not the secret");
    s_put (P ("root/secret"), "inner\n", 0644);
    got = s_read ("/workspace/l-rel", &err);
    ok (got && strcmp (got, "inner\n") == 0, "... and reads ROOT/secret when that exists");
    unlink (P ("root/secret"));

    symlink (P ("secret"), P ("root/workspace/l-host"));
    ok (!s_read ("/workspace/l-host", &err) && s_code (&err, 404, "not_found"),
        "a symlink to the secret's host path resolves under the root: 404");
    ok (files_stat (s_r, "/workspace/l-host", &st, &err) < 0 && s_code (&err, 404, "not_found"),
        "stat through it: 404");

    ok (!s_read ("/../../../../../../secret", &err) && s_code (&err, 404, "not_found"),
        "'..' in the path stops at the root");
    ok (!s_read ("../../../../../../secret", &err) && s_code (&err, 404, "not_found"),
        "'..' in a relative path stops at the root");
    got = s_read ("/../../../etc/passwd", &err);
    ok (got && strcmp (got, "fake passwd\n") == 0, "/../../../etc/passwd is ROOT/etc/passwd");

    symlink ("../../../secretdir", P ("root/workspace/mid"));
    ok (!s_read ("/workspace/mid/keep.txt", &err) && s_code (&err, 404, "not_found"),
        "a symlinked directory in the middle of a path pointing outside: 404");
    symlink ("/workspace/tree", P ("root/workspace/mid-in"));
    got = s_read ("/workspace/mid-in/sub/b.txt", &err);
    ok (got && strcmp (got, "bb") == 0, "a symlinked directory inside the root is followed");

    /* /proc magic links: the fake root has no /proc of its own */
    symlink ("/proc/self/root/etc", P ("root/workspace/p"));
    ok (!s_read ("/workspace/p/passwd", &err) && s_code (&err, 404, "not_found"),
        "p -> /proc/self/root/etc resolves inside the root (404), not to the host's /etc");
    ok (!s_read ("/proc/self/root/etc/passwd", &err) && s_code (&err, 404, "not_found"),
        "/proc/self/root/etc/passwd as a path: 404");
    symlink ("/proc/self/cwd", P ("root/workspace/pcwd"));
    ok (files_stat (s_r, "/workspace/pcwd", &st, &err) < 0 && s_code (&err, 404, "not_found"),
        "a symlink to /proc/self/cwd: 404");
}

static void
test_escape_write (void)
{
    err_t err = { 0 };
    /* a symlink as the final component: replaced, never written through */
    symlink ("../../../secret", P ("root/workspace/wl"));
    ok (s_write ("/workspace/wl", "pwned", false, -1, &err) == 0,
        "write onto a symlink to the outside secret succeeds");
    ok (strcmp (s_get (P ("secret")), "SECRET\n") == 0 && s_mode (P ("secret")) == 0600,
        "the outside file is unchanged");
    ok (s_is_reg (P ("root/workspace/wl")) && strcmp (s_get (P ("root/workspace/wl")), "pwned") == 0
            && s_mode (P ("root/workspace/wl")) == 0644,
        "the symlink itself was replaced by a regular 0644 file");
    symlink (P ("secret"), P ("root/workspace/wl-host"));
    ok (s_write ("/workspace/wl-host", "pwned", false, 0666, &err) == 0
            && strcmp (s_get (P ("secret")), "SECRET\n") == 0
            && s_is_reg (P ("root/workspace/wl-host")),
        "same for an absolute symlink to the host path");

    /* a symlinked parent pointing outside */
    ok (s_write ("/workspace/mid/new.txt", "x", false, -1, &err) < 0
            && s_code (&err, 404, "not_found") && !s_exists (P ("secretdir/new.txt")),
        "write through a symlinked parent pointing outside: 404, nothing outside");
    ok (s_write ("/workspace/mid/new.txt", "x", true, -1, &err) < 0
            && !s_exists (P ("secretdir/new.txt")) && s_count (P ("secretdir")) == 1,
        "... also with mkdir_parents");
    ok (s_write ("/../../secretdir/new.txt", "x", true, -1, &err) == 0
            && s_exists (P ("root/secretdir/new.txt")) && !s_exists (P ("secretdir/new.txt")),
        "write to /../../secretdir/new.txt with parents lands in ROOT/secretdir");

    /* mkdir -p through a symlinked parent */
    symlink ("../../../../secretdir", P ("root/workspace/ml"));
    int rc = files_mkdir (s_r, "/workspace/ml/a/b", true, &err);
    ok (s_count (P ("secretdir")) == 1 && !s_exists (P ("secretdir/a")),
        "mkdir -p through a symlink pointing outside leaves the outside untouched (%s)",
        rc == 0 ? "created inside" : err.code);
    ok (rc < 0 || s_exists (P ("root/secretdir/a/b")), "... it errs or stays inside");
    ok (files_delete (s_r, "/secretdir", true, &err) == 0 && !s_exists (P ("root/secretdir"))
            && s_exists (P ("secretdir/keep.txt")),
        "recursive delete of /secretdir removes ROOT/secretdir, not the outside one");
    ok (files_mkdir (s_r, "/workspace/ml/a/b", true, &err) < 0 && s_code (&err, 404, "not_found")
            && !s_exists (P ("secretdir/a")) && !s_exists (P ("root/secretdir")),
        "with ROOT/secretdir gone, mkdir -p through the symlink: 404, created nothing");
    symlink (P ("secretdir"), P ("root/workspace/ml-host"));
    files_mkdir (s_r, "/workspace/ml-host/c", true, &err);
    ok (!s_exists (P ("secretdir/c")), "mkdir -p through an absolute host-path symlink: outside "
                                       "untouched");
    ok (files_mkdir (s_r, "/workspace/ml-host", false, &err) < 0 && s_code (&err, 409, "exists"),
        "mkdir onto a symlink: 409 exists");
    symlink ("/workspace/tree", P ("root/workspace/ml-in"));
    ok (files_mkdir (s_r, "/workspace/ml-in/x/y", true, &err) == 0
            && s_exists (P ("root/workspace/tree/x/y")),
        "mkdir -p through a symlink inside the root creates inside its target");
}

static void
test_escape_delete_move_list (void)
{
    err_t err = { 0 };
    symlink ("../../../secretdir", P ("root/workspace/dl"));
    symlink (P ("secretdir"), P ("root/workspace/dl-host"));
    ok (files_delete (s_r, "/workspace/dl", false, &err) == 0 && !s_exists (P ("root/workspace/dl"))
            && s_exists (P ("secretdir/keep.txt")),
        "delete a symlink to an outside dir: the link only");
    ok (files_delete (s_r, "/workspace/dl-host", true, &err) == 0
            && !s_exists (P ("root/workspace/dl-host")) && s_exists (P ("secretdir/keep.txt")),
        "recursive delete of a symlink to an outside dir: the link only");

    mkdir (P ("root/workspace/rd"), 0755);
    mkdir (P ("root/workspace/rd/inner"), 0755);
    s_put (P ("root/workspace/rd/inner/x.txt"), "x", 0644);
    symlink ("../../../../secretdir", P ("root/workspace/rd/inner/rel"));
    symlink (P ("secretdir"), P ("root/workspace/rd/abs"));
    symlink (P ("secret"), P ("root/workspace/rd/file-link"));
    ok (files_delete (s_r, "/workspace/rd", true, &err) == 0 && !s_exists (P ("root/workspace/rd"))
            && s_exists (P ("secretdir/keep.txt")) && s_count (P ("secretdir")) == 1
            && s_exists (P ("secret")),
        "recursive delete of a tree holding symlinks to outside: outside intact");

    symlink ("/workspace/tree", P ("root/workspace/del-in"));
    ok (files_delete (s_r, "/workspace/del-in", true, &err) == 0
            && s_exists (P ("root/workspace/tree/a.txt")),
        "recursive delete of a symlink to a dir inside: the link only");

    s_put (P ("root/workspace/mv.txt"), "mv", 0644);
    ok (files_move (s_r, "../../../../workspace/mv.txt", "../../../../../../escaped.txt", &err) == 0
            && s_exists (P ("root/escaped.txt")) && !s_exists (P ("escaped.txt"))
            && !s_exists ("/tmp/escaped.txt"),
        "move with '..' in from and to stays inside the root");
    symlink ("../../../secretdir", P ("root/workspace/mvl"));
    ok (files_move (s_r, "/escaped.txt", "/workspace/mvl/escaped.txt", &err) < 0
            && s_code (&err, 404, "not_found") && s_count (P ("secretdir")) == 1,
        "move into a symlinked dir pointing outside: 404, nothing outside");
    ok (files_move (s_r, "/workspace/mvl/keep.txt", "/workspace/stolen.txt", &err) < 0
            && s_exists (P ("secretdir/keep.txt")) && !s_exists (P ("root/workspace/stolen.txt")),
        "move out of a symlinked dir pointing outside: fails, outside intact");
    ok (files_move (s_r, "/workspace/mvl", "/workspace/mvl2", &err) == 0
            && s_is_link (P ("root/workspace/mvl2")) && s_exists (P ("secretdir/keep.txt")),
        "moving a symlink moves the link itself");

    json_t *arr = NULL;
    bool trunc;
    symlink ("../../../secretdir", P ("root/workspace/ld"));
    symlink (P ("secretdir"), P ("root/workspace/ld-host"));
    ok (files_list (s_r, "/workspace/ld", false, true, &arr, &trunc, &err) < 0
            && s_code (&err, 404, "not_found"),
        "list a dir that is a relative symlink to outside: 404");
    ok (files_list (s_r, "/workspace/ld-host", true, true, &arr, &trunc, &err) < 0
            && s_code (&err, 404, "not_found"),
        "list a dir that is an absolute symlink to outside: 404");
    ok (files_list (s_r, "/", true, true, &arr, &trunc, &err) == 0
            && !s_any_path_contains (arr, "keep.txt") && s_find (arr, "/workspace/ld")
            && s_sorted (arr),
        "recursive list of / never shows what is outside");
    json_decref (arr);
}

/* ---- the race: a path component swapped under us ---------------------- */

/* The tenant: another process swapping a path component between a
   directory and symlinks to the outside, as fast as it can, until killed.
   A process rather than a thread, so that under valgrind (which runs one
   thread at a time) it still races the broker truly in parallel. */
static void
s_swapper (atomic_long *swaps)
{
    int dfd = open (P ("root/workspace/race"), O_RDONLY | O_DIRECTORY);
    const char *links[] = { "swl", "swl", "swa", "swa" }; /* "sw": link, dir, link, dir */
    for (int i = 0;; i++)
        if (renameat2 (dfd, "sw", dfd, links[i % 4], RENAME_EXCHANGE) == 0)
            atomic_fetch_add (swaps, 1);
}

static void
test_race (void)
{
    mkdir (P ("root/workspace/race"), 0755);
    mkdir (P ("root/workspace/race/sw"), 0755);
    symlink ("../../../outside", P ("root/workspace/race/swl")); /* naively: s_tmp/outside */
    symlink (P ("outside"), P ("root/workspace/race/swa"));
    int before = s_count (s_tmp);
    long eagain0 = atomic_load (&s_eagain);
    atomic_long *swaps
        = mmap (NULL, sizeof *swaps, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    *swaps = 0;
    pid_t pid = fork ();
    if (pid == 0)
        s_swapper (swaps);
    for (int i = 0; i < 10000 && atomic_load (swaps) < 1000; i++)
        usleep (1000); /* until the swapper is in full swing */
    int wrote = 0, failed = 0, other = 0, server_errors = 0;
    for (int i = 0; i < 2000; i++) {
        err_t err = { 0 };
        char path[128];
        switch (i % 4) {
        case 0:
            snprintf (path, sizeof path, "/workspace/race/sw/f%d", i);
            break;
        case 1:
            snprintf (path, sizeof path, "/workspace/race/sw/../sw/g%d", i);
            break;
        case 2:
            snprintf (path, sizeof path, "race/sw/h%d", i);
            break;
        default:
            snprintf (path, sizeof path, "/workspace/race/sw/d%d/e", i);
            break;
        }
        if (s_write (path, "x", i % 4 == 3, -1, &err) == 0)
            wrote++;
        else
            failed++, server_errors += err.status >= 500;

        if (i % 8 == 0) {
            char dir[128];
            snprintf (dir, sizeof dir, "/workspace/race/sw/m%d/n", i);
            if (files_mkdir (s_r, dir, true, &err) == 0)
                other++;
            snprintf (dir, sizeof dir, "/workspace/race/sw/m%d", i);
            files_delete (s_r, dir, true, &err);
        }
    }
    kill (pid, SIGKILL);
    waitpid (pid, NULL, 0);
    long nswaps = atomic_load (swaps);
    munmap (swaps, sizeof *swaps);
    ok (s_count (P ("outside")) == 0, "2000 writes through a component swapped with symlinks to "
                                      "outside: the outside dir got nothing");
    ok (s_count (s_tmp) == before, "nothing new appeared next to the root");
    ok (server_errors == 0, "writes refused in the race were refused as client errors (%d 5xx)",
        server_errors);
    ok (wrote > 0 && nswaps > 0, "the race ran: %d written, %d refused, %d mkdirs, %ld swaps",
        wrote, failed, other, nswaps);
    printf ("# openat2 EAGAIN retried %ld times during the race\n",
            (long)(atomic_load (&s_eagain) - eagain0));
}

/* ---- mounts: a real overlay root, and mounts inside a root ------------ */

static void
test_overlay (void)
{
    if (!s_root_user) {
        ok (1, "# SKIP overlay root needs root");
        return;
    }
    mkdir (P ("ovl"), 0755);
    mkdir (P ("ovl/lower"), 0755);
    mkdir (P ("ovl/lower/workspace"), 0755);
    mkdir (P ("ovl/lower/workspace/ldir"), 0755);
    mkdir (P ("ovl/lower/workspace/ldir/sub"), 0755);
    s_put (P ("ovl/lower/workspace/ldir/sub/f"), "f", 0644);
    s_put (P ("ovl/lower/workspace/low.txt"), "low\n", 0644);
    mkdir (P ("ovl/upper"), 0755);
    mkdir (P ("ovl/work"), 0755);
    mkdir (P ("ovl/merged"), 0755);
    char opts[1024];
    snprintf (opts, sizeof opts, "lowerdir=%s,upperdir=%s,workdir=%s", P ("ovl/lower"),
              P ("ovl/upper"), P ("ovl/work"));
    if (mount ("overlay", P ("ovl/merged"), "overlay", 0, opts) < 0) {
        ok (1, "# SKIP cannot mount an overlay: %s", strerror (errno));
        return;
    }
    err_t err = { 0 };
    files_root_t *r = files_root_open (P ("ovl/merged"), &err);
    files_root_t *saved = s_r;
    s_r = r;
    const char *got = s_read ("/workspace/low.txt", &err);
    ok (got && strcmp (got, "low\n") == 0, "overlay root: read a lower-layer file");
    symlink ("/workspace/low.txt", P ("ovl/merged/workspace/abs"));
    got = s_read ("/workspace/abs", &err);
    ok (got && strcmp (got, "low\n") == 0,
        "overlay root: an absolute symlink back to the root (RESOLVE_NO_XDEV is fine)");
    got = s_read ("/workspace/../../workspace/low.txt", &err);
    ok (got && strcmp (got, "low\n") == 0, "overlay root: '..' at the root");
    ok (s_write ("/workspace/low.txt", "new\n", false, -1, &err) == 0
            && strcmp (s_get (P ("ovl/merged/workspace/low.txt")), "new\n") == 0
            && strcmp (s_get (P ("ovl/lower/workspace/low.txt")), "low\n") == 0,
        "overlay root: replace a lower file (upper gets it)");
    ok (s_write ("/workspace/n/o/p.txt", "p", true, -1, &err) == 0,
        "overlay root: write with mkdir_parents");
    ok (files_mkdir (s_r, "/workspace/ldir/sub/q", true, &err) == 0,
        "overlay root: mkdir -p under a lower directory");
    ok (files_move (s_r, "/workspace/ldir", "/workspace/moved", &err) < 0
            && s_code (&err, 422, "cross_device") && s_exists (P ("ovl/merged/workspace/ldir")),
        "overlay root: a lower directory cannot be renamed (no redirect_dir): 422, intact");
    ok (files_move (s_r, "/workspace/ldir/sub/f", "/workspace/f", &err) == 0
            && files_move (s_r, "/workspace/n", "/workspace/m", &err) == 0,
        "overlay root: move a lower file, and an upper directory");
    json_t *arr = NULL;
    bool trunc;
    ok (files_list (s_r, "/", true, false, &arr, &trunc, &err) == 0
            && s_find (arr, "/workspace/ldir/sub/q") && s_find (arr, "/workspace/m/o/p.txt")
            && s_find (arr, "/workspace/f") && !s_find (arr, "/workspace/ldir/sub/f"),
        "overlay root: recursive list");
    json_decref (arr);
    ok (files_delete (s_r, "/workspace/ldir", true, &err) == 0
            && !s_exists (P ("ovl/merged/workspace/ldir"))
            && s_exists (P ("ovl/lower/workspace/ldir/sub/f")),
        "overlay root: recursive delete of a lower tree (whiteouts)");
    files_root_close (&r);
    s_r = saved;
    umount2 (P ("ovl/merged"), MNT_DETACH);
}

static void
test_mounts_inside (void)
{
    if (!s_root_user) {
        ok (1, "# SKIP mounts need root");
        return;
    }
    err_t err = { 0 };
    mkdir (P ("root/workspace/hasmnt"), 0755);
    mkdir (P ("root/workspace/hasmnt/mnt"), 0755);
    s_put (P ("root/workspace/hasmnt/file"), "f", 0644);
    if (mount ("tmpfs", P ("root/workspace/hasmnt/mnt"), "tmpfs", 0, "size=1m") < 0) {
        ok (1, "# SKIP cannot mount tmpfs: %s", strerror (errno));
        return;
    }
    s_put (P ("root/workspace/hasmnt/mnt/inner.txt"), "inner", 0644);
    files_stat_t st;
    ok (files_stat (s_r, "/workspace/hasmnt/mnt/inner.txt", &st, &err) < 0
            && s_code (&err, 422, "cross_device"),
        "a path onto another mount: 422 cross_device");
    ok (s_write ("/workspace/hasmnt/mnt/w.txt", "w", false, -1, &err) < 0
            && s_code (&err, 422, "cross_device")
            && !s_exists (P ("root/workspace/hasmnt/mnt/w.txt")),
        "writing into another mount: 422 cross_device");
    json_t *arr = NULL;
    bool trunc;
    ok (files_list (s_r, "/workspace/hasmnt", true, false, &arr, &trunc, &err) == 0
            && s_find (arr, "/workspace/hasmnt/mnt")
            && !s_find (arr, "/workspace/hasmnt/mnt/inner.txt"),
        "recursive list does not descend into a mount");
    json_decref (arr);
    ok (files_delete (s_r, "/workspace/hasmnt", true, &err) < 0
            && s_code (&err, 422, "cross_device")
            && s_exists (P ("root/workspace/hasmnt/mnt/inner.txt")),
        "recursive delete refuses to enter a mount: 422, its content intact");
    umount2 (P ("root/workspace/hasmnt/mnt"), MNT_DETACH);
    ok (files_delete (s_r, "/workspace/hasmnt", true, &err) == 0, "and works once it is gone");

    /* a real /proc inside the root: its magic links stay out of reach */
    mkdir (P ("root/proc"), 0555);
    if (mount ("proc", P ("root/proc"), "proc", 0, NULL) < 0) {
        ok (1, "# SKIP cannot mount proc: %s", strerror (errno));
        return;
    }
    bool host_reached = s_read ("/workspace/p/passwd", &err) != NULL;
    ok (!host_reached && err.status >= 400 && err.status < 500,
        "with a real /proc in the root, p -> /proc/self/root/etc fails (%s)", err.code);
    ok (!s_read ("/proc/self/root/etc/passwd", &err), "so does /proc/self/root/etc/passwd (%s)",
        err.code);
    umount2 (P ("root/proc"), MNT_DETACH);
}

int
main (int argc, char **argv)
{
    if (argc > 1 && strcmp (argv[1], "--openat2-helper") == 0)
        return s_helper_main ();
    char *self_exe = realpath (argv[0], NULL);
    if (sodium_init () < 0 || !self_exe || !mkdtemp (s_tmp)) {
        printf ("Bail out! setup failed\n");
        return 1;
    }
    s_root_user = geteuid () == 0;
    umask (077); /* modes must not depend on the broker's umask */
    s_setup_openat2 (self_exe);
    free (self_exe);
    s_make_tree ();
    err_t err = { 0 };
    s_r = files_root_open (P ("root"), &err);
    if (!s_r) {
        printf ("Bail out! %s\n", err.message);
        return 1;
    }

    test_root_and_paths ();
    test_stat_read ();
    test_write ();
    test_mkdir ();
    test_move ();
    test_delete ();
    test_list ();
    test_escape_read ();
    test_escape_write ();
    test_escape_delete_move_list ();
    test_race ();
    test_overlay ();
    test_mounts_inside ();

    files_root_close (&s_r);
    files_root_close (&s_r);
    if (s_helper >= 0)
        close (s_helper);
    while (wait (NULL) > 0)
        ;
    s_cleanup ();
    return tap_done ();
}
