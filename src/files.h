/* files.h - the sandbox file API, done by the broker directly on the
   sandbox's root filesystem (the overlay mounted at <dir>/bundle/rootfs).
   Every path is resolved with openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS
   | RESOLVE_NO_XDEV) from a descriptor of that root, so "..", absolute
   symlinks and relative ones all stay inside it, and a final component is
   never followed where that could be raced. Files and directories the
   broker creates belong to the sandbox user (uid/gid 1000). Knows nothing
   of HTTP. */
#ifndef SANDBOXD_FILES_H
#define SANDBOXD_FILES_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "util.h"

#define FILES_MAX_PATH 4096
#define FILES_MAX_LIST 10000 /* entries one list call returns at most */

typedef struct _files_root_t files_root_t;

typedef struct {
    char type[8]; /* "file", "dir", "symlink", "other" */
    int64_t size;
    unsigned mode;    /* permission bits, e.g. 0644 */
    int64_t mtime_ms; /* epoch milliseconds */
} files_stat_t;

/* Open the root directory of a sandbox (its rootfs mount point). Caller
   owns the result. NULL with a 500 on failure. */
files_root_t *files_root_open (const char *rootfs, err_t *err);
void files_root_close (files_root_t **self_p);

/* Paths are absolute as seen inside the sandbox ("/workspace/a.txt");
   a relative one is taken relative to /workspace. Empty, NUL-containing or
   longer than FILES_MAX_PATH: 400 "invalid_path". Missing: 404 "not_found". */

/* stat following symlinks (inside the root). */
int files_stat (files_root_t *self, const char *path, files_stat_t *st, err_t *err);

/* Open a regular file for reading; *fd (caller closes) and its stat. A
   directory: 422 "is_a_directory". */
int files_open_read (files_root_t *self, const char *path, int *fd, files_stat_t *st, err_t *err);

/* Read a whole regular file of at most max bytes into *buf (malloc'd, NUL
   added after the data; caller frees). Larger (also one that grows while
   read): 413 "file_too_large"; the errors of files_open_read otherwise. */
int files_read_all (files_root_t *self, const char *path, int64_t max, char **buf, size_t *len,
                    err_t *err);

/* Atomic writes: data goes to a temporary file in the target's directory,
   and commit renames it over the target (fsync first), so a dropped
   upload leaves any old file intact. mode < 0 keeps the old file's mode,
   or 0644 for a new file. mkdir_parents creates missing directories
   (0755). The target being a directory: 422 "is_a_directory". */
typedef struct _files_writer_t files_writer_t;
files_writer_t *files_write_begin (files_root_t *self, const char *path, bool mkdir_parents,
                                   int mode, err_t *err);
int files_write_chunk (files_writer_t *w, const void *data, size_t len, err_t *err);
/* Commit and free w (also on failure). */
int files_write_commit (files_writer_t **w_p, err_t *err);
/* Discard and free w; the target is untouched. Accepts NULL. */
void files_write_abort (files_writer_t **w_p);

/* Remove a file or symlink; a directory only with recursive (else 409
   "not_empty" if it has entries, or removed if empty). Never follows a
   symlink while removing. Removing "/" is refused (400). */
int files_delete (files_root_t *self, const char *path, bool recursive, err_t *err);

/* Create a directory (0755); with recursive, its missing parents too and
   an existing directory is fine; without, an existing path is 409
   "exists" and a missing parent 404. */
int files_mkdir (files_root_t *self, const char *path, bool recursive, err_t *err);

/* Rename/move from → to (renameat, replacing a file at `to`; moving into
   an existing directory is not implied: `to` is the new path). */
int files_move (files_root_t *self, const char *from, const char *to, err_t *err);

/* List a directory: an array (caller owns) of {name, path, type, size,
   mode, mtime} (mode as an octal string like "0644", mtime as ISO 8601),
   sorted by path. recursive descends (not through symlinks); hidden
   includes dot-files. More than FILES_MAX_LIST entries: the first ones
   and *truncated = true. */
int files_list (files_root_t *self, const char *path, bool recursive, bool hidden, json_t **out,
                bool *truncated, err_t *err);

/* For tests only: route the openat2 system call through fn (NULL restores
   the real call), so the module can run under a tool that does not know
   openat2 (valgrind 3.19) with the resolving still done by the kernel,
   e.g. in a helper process. how points to a struct open_how. */
typedef long (*files_openat2_fn) (int dirfd, const char *path, const void *how, size_t size);
void files_set_openat2_fn (files_openat2_fn fn);

#endif
