/* fuzz_paths.c - path resolution of the file API. A sandbox root holds
   symlinks that point out of it (absolute, relative, through ..), and a
   canary directory sits beside it. Whatever path the input names, every
   operation must stay inside the root: a file it opens resolves under the
   root, and nothing beside it is created, changed or removed. The input is
   an operation byte, then one or two NUL-separated paths. */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "files.h"

static char s_base[PATH_MAX], s_root[PATH_MAX], s_canary[PATH_MAX];

static void
s_make_fixture (void)
{
    char p[PATH_MAX + 64];
    mkdir (s_root, 0755);
    mkdir (s_canary, 0755);
    snprintf (p, sizeof p, "%s/secret", s_canary);
    FILE *f = fopen (p, "w");
    if (f) {
        fputs ("canary\n", f);
        fclose (f);
    }
    snprintf (p, sizeof p, "%s/workspace", s_root);
    mkdir (p, 0755);
    snprintf (p, sizeof p, "%s/workspace/a.txt", s_root);
    f = fopen (p, "w");
    if (f) {
        fputs ("inside\n", f);
        fclose (f);
    }
    snprintf (p, sizeof p, "%s/abs", s_root);
    symlink (s_canary, p); /* absolute host path: must resolve in the root */
    snprintf (p, sizeof p, "%s/up", s_root);
    symlink ("../../../../..", p);
    snprintf (p, sizeof p, "%s/workspace/rootlink", s_root);
    symlink ("/", p);
    snprintf (p, sizeof p, "%s/workspace/loop", s_root);
    symlink ("loop", p);
    snprintf (p, sizeof p, "%s/proc", s_root);
    symlink ("/proc/self/root", p);
}

/* The canary directory must hold exactly its one file, unchanged. */
static void
s_check_canary (void)
{
    DIR *d = opendir (s_canary);
    if (!d)
        abort ();
    int n = 0;
    struct dirent *e;
    while ((e = readdir (d)))
        if (strcmp (e->d_name, ".") && strcmp (e->d_name, ".."))
            n++;
    closedir (d);
    char p[PATH_MAX + 16], buf[16] = { 0 };
    snprintf (p, sizeof p, "%s/secret", s_canary);
    FILE *f = fopen (p, "r");
    if (n != 1 || !f || !fgets (buf, sizeof buf, f) || strcmp (buf, "canary\n"))
        abort ();
    fclose (f);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    static files_root_t *root;
    if (!root) {
        const char *tmp = getenv ("TMPDIR");
        snprintf (s_base, sizeof s_base, "%s/fuzz-paths-XXXXXX", tmp ? tmp : "/tmp");
        if (!mkdtemp (s_base))
            abort ();
        snprintf (s_root, sizeof s_root, "%s/root", s_base);
        snprintf (s_canary, sizeof s_canary, "%s/canary", s_base);
        s_make_fixture ();
        err_t err = { 0 };
        root = files_root_open (s_root, &err);
        if (!root)
            abort ();
    }
    if (size < 2 || size > 8192)
        return 0;
    char *buf = calloc (1, size + 2);
    if (!buf)
        return 0;
    memcpy (buf, data + 1, size - 1);
    const char *a = buf, *b = buf + strlen (buf) + 1;
    if (b > buf + size - 1)
        b = "/workspace/b";
    err_t err = { 0 };
    files_stat_t st;
    int fd = -1;
    switch (data[0] % 8) {
    case 0:
        files_stat (root, a, &st, &err);
        break;
    case 1:
        if (files_open_read (root, a, &fd, &st, &err) == 0) {
            char link[64], target[PATH_MAX];
            snprintf (link, sizeof link, "/proc/self/fd/%d", fd);
            ssize_t n = readlink (link, target, sizeof target - 1);
            if (n < 0)
                abort ();
            target[n] = '\0';
            if (strncmp (target, s_root, strlen (s_root)) || target[strlen (s_root)] != '/')
                abort ();
            close (fd);
        }
        break;
    case 2: {
        json_t *out = NULL;
        bool truncated = false;
        if (files_list (root, a, data[0] & 8, true, &out, &truncated, &err) == 0)
            json_decref (out);
        break;
    }
    case 3:
        files_mkdir (root, a, data[0] & 8, &err);
        break;
    case 4: {
        files_writer_t *w = files_write_begin (root, a, data[0] & 8, -1, &err);
        if (w && files_write_chunk (w, "x", 1, &err) == 0)
            files_write_commit (&w, &err);
        files_write_abort (&w);
        break;
    }
    case 5:
        files_delete (root, a, data[0] & 8, &err);
        break;
    case 6:
        files_move (root, a, b, &err);
        break;
    default:
        files_stat (root, b, &st, &err);
        break;
    }
    free (buf);
    s_check_canary ();
    s_make_fixture (); /* put back what a delete or move took away */
    return 0;
}
