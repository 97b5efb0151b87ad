/* test_util.c - errors, identifiers, timestamps, randomness and file helpers. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tap.h"

static char s_tmp[] = "/tmp/test_util.XXXXXX";

/* ---- helpers, independent of the code under test ---------------------- */

static int
s_rm_entry (const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove (path);
}

static void
s_cleanup (void)
{
    nftw (s_tmp, s_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static const char *
s_path (char *buf, size_t size, const char *rel)
{
    snprintf (buf, size, "%s/%s", s_tmp, rel);
    return buf;
}

static void
s_write (const char *path, const char *data, size_t len)
{
    FILE *f = fopen (path, "w");
    if (f) {
        fwrite (data, 1, len, f);
        fclose (f);
    }
}

static bool
s_exists (const char *path)
{
    struct stat st;
    return lstat (path, &st) == 0;
}

static bool
s_is_dir (const char *path)
{
    struct stat st;
    return lstat (path, &st) == 0 && S_ISDIR (st.st_mode);
}

/* True when the file at path holds exactly the given bytes. */
static bool
s_file_is (const char *path, const char *data, size_t len)
{
    FILE *f = fopen (path, "r");
    if (!f)
        return false;
    char buf[256];
    size_t n = fread (buf, 1, sizeof buf, f);
    fclose (f);
    return n == len && memcmp (buf, data, len) == 0;
}

static int
s_count_entries (const char *dir, const char *containing)
{
    DIR *d = opendir (dir);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir (d)))
        if (strcmp (de->d_name, ".") != 0 && strcmp (de->d_name, "..") != 0
            && (!containing || strstr (de->d_name, containing)))
            n++;
    closedir (d);
    return n;
}

/* ---- errors ------------------------------------------------------------ */

static void
test_errors (void)
{
    err_t e;
    err_clear (&e);
    int rc = err_set (&e, 404, "not_found", "sandbox %s not found", "abc");
    ok (rc == -1 && e.status == 404 && strcmp (e.code, "not_found") == 0
            && strcmp (e.message, "sandbox abc not found") == 0,
        "err_set fills status, code and formatted message and returns -1");
    ok (err_set (NULL, 500, "internal", "x") == -1, "err_set on NULL returns -1");

    rc = err_prefix (&e, "creating bundle %s", "b1");
    ok (rc == -1 && strcmp (e.message, "creating bundle b1: sandbox abc not found") == 0,
        "err_prefix prepends context: '%s'", e.message);
    err_prefix (&e, "starting");
    ok (strcmp (e.message, "starting: creating bundle b1: sandbox abc not found") == 0,
        "err_prefix composes outermost first: '%s'", e.message);
    ok (e.status == 404 && strcmp (e.code, "not_found") == 0, "err_prefix keeps status and code");
    ok (err_prefix (NULL, "x") == -1, "err_prefix on NULL returns -1");

    err_set (&e, 400, "bad_request", "%s", "100% done %s %n");
    err_prefix (&e, "ctx");
    ok (strcmp (e.message, "ctx: 100% done %s %n") == 0,
        "format characters in the old message are copied literally");

    /* Truncation: nothing may run past the struct. */
    struct {
        err_t e;
        char canary[16];
    } g;
    memset (g.canary, 'C', sizeof g.canary);
    char big[2000];
    memset (big, 'm', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    err_set (&g.e, 500, "a_code_that_is_much_longer_than_thirty_one_bytes", "%s", big);
    ok (strlen (g.e.code) == sizeof g.e.code - 1, "long code truncated and terminated");
    ok (strlen (g.e.message) == sizeof g.e.message - 1, "long message truncated and terminated");
    err_prefix (&g.e, "prefix");
    ok (strlen (g.e.message) == sizeof g.e.message - 1
            && strncmp (g.e.message, "prefix: mmm", 11) == 0,
        "prefix on a full message keeps the prefix and truncates the tail");
    err_prefix (&g.e, "%s", big);
    ok (strlen (g.e.message) == sizeof g.e.message - 1 && g.e.message[0] == 'm',
        "prefix longer than the buffer is truncated and terminated");
    bool intact = true;
    for (size_t i = 0; i < sizeof g.canary; i++)
        intact = intact && g.canary[i] == 'C';
    ok (intact, "no write past the err_t");

    err_clear (&e);
    ok (e.status == 0 && e.code[0] == '\0' && e.message[0] == '\0', "err_clear empties it");
}

/* ---- identifiers ------------------------------------------------------- */

static void
test_valid_id (void)
{
    char id63[64], id64[65];
    memset (id63, 'a', 63);
    id63[63] = '\0';
    memset (id64, 'a', 64);
    id64[64] = '\0';

    const char *good[] = { "a", "abc", "A1_b.c-d", "0day", "my-sandbox.v2", id63 };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        ok (util_valid_id (good[i]), "id '%.20s' (%zu chars) accepted", good[i], strlen (good[i]));

    const char *bad[] = { "",
                          id64,
                          "-abc",
                          ".abc",
                          "_abc",
                          "../x",
                          "a/b",
                          "..",
                          "a b",
                          "a\n",
                          "a:b",
                          "caf\xc3\xa9",
                          "\xc3\xa9t\xc3\xa9",
                          "a$b" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ok (!util_valid_id (bad[i]), "bad id #%zu (%zu chars) rejected", i, strlen (bad[i]));
    ok (!util_valid_id (NULL), "NULL id rejected");
}

/* ---- time and randomness ----------------------------------------------- */

static void
test_iso8601 (void)
{
    char buf[40];
    ok (strcmp (util_iso8601 (0, buf, sizeof buf), "1970-01-01T00:00:00.000Z") == 0,
        "epoch 0 formats as 1970-01-01T00:00:00.000Z");
    ok (strcmp (util_iso8601 (1700000000123LL, buf, sizeof buf), "2023-11-14T22:13:20.123Z") == 0,
        "1700000000123 formats as 2023-11-14T22:13:20.123Z (got %s)", buf);
    ok (strcmp (util_iso8601 (4102444799007LL, buf, sizeof buf), "2099-12-31T23:59:59.007Z") == 0,
        "milliseconds are zero-padded and dates past 2038 work (got %s)", buf);
    ok (util_iso8601 (1, buf, sizeof buf) == buf, "returns buf");

    int64_t now = util_now_ms ();
    ok (now > 1700000000000LL, "util_now_ms is epoch milliseconds");
    int64_t m1 = util_mono_ms ();
    int64_t m2 = util_mono_ms ();
    ok (m2 >= m1, "monotonic clock does not go backwards");
}

static void
test_random_hex (void)
{
    char a[33], b[33];
    memset (a, 'X', sizeof a);
    util_random_hex (a, 16);
    util_random_hex (b, 16);
    ok (strlen (a) == 32, "16 bytes give 32 characters");
    ok (strspn (a, "0123456789abcdef") == 32, "only lowercase hex: %s", a);
    ok (strcmp (a, b) != 0, "two calls differ");
    char small[3];
    util_random_hex (small, 1);
    ok (strlen (small) == 2 && strspn (small, "0123456789abcdef") == 2,
        "1 byte gives 2 hex characters");
}

/* ---- directories ------------------------------------------------------- */

static void
test_mkdir_p (void)
{
    char p[512], q[512];
    ok (util_mkdir_p (s_path (p, sizeof p, "m/a/b/c"), 0750) == 0 && s_is_dir (p),
        "nested directories created");
    ok (s_is_dir (s_path (q, sizeof q, "m/a")) && s_is_dir (s_path (q, sizeof q, "m/a/b")),
        "every intermediate component exists");
    ok (util_mkdir_p (s_path (p, sizeof p, "m/a/b/c"), 0750) == 0, "existing path succeeds");
    ok (util_mkdir_p (s_path (p, sizeof p, "m/x/y/"), 0750) == 0 && s_is_dir (p),
        "trailing slash accepted");

    s_write (s_path (q, sizeof q, "m/file"), "x", 1);
    errno = 0;
    ok (util_mkdir_p (s_path (p, sizeof p, "m/file/sub"), 0750) < 0 && errno == ENOTDIR,
        "a regular file in the middle of the path fails with ENOTDIR");
    /* mkdir -p fails when the path exists but is not a directory; the broker
       relies on this to reject a state_dir that is a file at startup. */
    ok (util_mkdir_p (s_path (p, sizeof p, "m/file"), 0750) < 0,
        "a path that exists as a regular file is an error, not success");
}

static void
test_rm_rf (void)
{
    char p[512], q[512];
    /* tree/ with nested files, and symlinks into outside/ */
    util_mkdir_p (s_path (p, sizeof p, "tree/a/b/c"), 0755);
    util_mkdir_p (s_path (p, sizeof p, "outside/deep"), 0755);
    s_write (s_path (p, sizeof p, "tree/top.txt"), "t", 1);
    s_write (s_path (p, sizeof p, "tree/a/b/c/f.txt"), "f", 1);
    s_write (s_path (p, sizeof p, "outside/keep.txt"), "keep", 4);
    s_write (s_path (p, sizeof p, "outside/deep/keep2.txt"), "keep2", 5);
    symlink (s_path (q, sizeof q, "outside"), s_path (p, sizeof p, "tree/a/dirlink"));
    symlink (s_path (q, sizeof q, "outside/keep.txt"), s_path (p, sizeof p, "tree/filelink"));
    symlink ("../../outside", s_path (p, sizeof p, "tree/a/b/rellink"));

    ok (util_rm_rf (s_path (p, sizeof p, "tree")) == 0, "rm_rf returns 0 on a tree with links");
    ok (!s_exists (p), "the tree is gone");
    ok (s_is_dir (s_path (p, sizeof p, "outside/deep")), "symlinked directory target survives");
    ok (s_file_is (s_path (p, sizeof p, "outside/keep.txt"), "keep", 4)
            && s_file_is (s_path (p, sizeof p, "outside/deep/keep2.txt"), "keep2", 5),
        "files behind the symlinks survive intact");

    /* A symlink given directly is removed, not its target. */
    symlink (s_path (q, sizeof q, "outside"), s_path (p, sizeof p, "toplink"));
    ok (util_rm_rf (p) == 0 && !s_exists (p), "a symlink to a directory is removed itself");
    ok (s_file_is (s_path (p, sizeof p, "outside/keep.txt"), "keep", 4),
        "and its target's files survive");

    ok (util_rm_rf (s_path (p, sizeof p, "no/such/path")) == 0, "a missing path is success");
    s_write (s_path (p, sizeof p, "single"), "s", 1);
    ok (util_rm_rf (p) == 0 && !s_exists (p), "a single file is removed");
}

/* ---- files ------------------------------------------------------------- */

static void
test_write_atomic (void)
{
    char p[512], q[512];
    util_mkdir_p (s_path (p, sizeof p, "w"), 0755);
    const char *path = s_path (p, sizeof p, "w/config.json");
    ok (util_write_file_atomic (path, "{\"a\":1}\n", 8, 0640) == 0, "write succeeds");
    ok (s_file_is (path, "{\"a\":1}\n", 8), "content is exact");
    struct stat st;
    ok (stat (path, &st) == 0 && (st.st_mode & 07777) == 0640, "mode is 0640 (got %o)",
        (unsigned)(st.st_mode & 07777));

    ok (util_write_file_atomic (path, "second", 6, 0600) == 0 && s_file_is (path, "second", 6),
        "overwrite replaces the content");
    ok (stat (path, &st) == 0 && (st.st_mode & 07777) == 0600, "and the mode");
    ok (util_write_file_atomic (s_path (q, sizeof q, "w/empty"), "", 0, 0600) == 0
            && stat (q, &st) == 0 && st.st_size == 0,
        "an empty file can be written");
    ok (s_count_entries (s_path (q, sizeof q, "w"), NULL) == 2 && s_count_entries (q, ".tmp") == 0,
        "no temporary files are left behind");

    /* A symlink planted at the destination is replaced, not written through. */
    s_write (s_path (q, sizeof q, "w/victim"), "orig", 4);
    symlink (q, s_path (p, sizeof p, "w/planted"));
    ok (util_write_file_atomic (p, "new", 3, 0600) == 0, "write over a symlink succeeds");
    ok (s_file_is (s_path (q, sizeof q, "w/victim"), "orig", 4), "the symlink target is untouched");
    struct stat lst;
    ok (lstat (p, &lst) == 0 && S_ISREG (lst.st_mode) && s_file_is (p, "new", 3),
        "the destination is now a regular file with the new content");

    errno = 0;
    ok (util_write_file_atomic (s_path (p, sizeof p, "w/missing/f"), "x", 1, 0600) < 0
            && errno == ENOENT,
        "writing into a missing directory fails with ENOENT");
}

static void
test_read_file (void)
{
    char p[512];
    const char *path = s_path (p, sizeof p, "r10000");
    char *data = malloc (10000);
    for (size_t i = 0; i < 10000; i++)
        data[i] = (char)('a' + i % 26);
    s_write (path, data, 10000);

    size_t len = 0;
    char *got = util_read_file (path, 1 << 20, &len);
    ok (got && len == 10000 && memcmp (got, data, 10000) == 0 && got[10000] == '\0',
        "whole file read and NUL-terminated");
    free (got);

    errno = 0;
    got = util_read_file (path, 9999, &len);
    ok (!got && errno == EFBIG, "one byte over the cap fails with EFBIG");
    free (got);

    errno = 0;
    got = util_read_file (path, 10000, &len);
    ok (got && len == 10000, "a file of exactly the cap is read (at most max bytes)");
    free (got);

    /* Caps below the initial 4 KiB buffer must be enforced too. */
    s_write (s_path (p, sizeof p, "r200"), data, 200);
    errno = 0;
    got = util_read_file (p, 100, &len);
    ok (!got && errno == EFBIG, "a 200-byte file with a 100-byte cap fails with EFBIG");
    free (got);

    s_write (s_path (p, sizeof p, "r4096"), data, 4096);
    got = util_read_file (p, 4096, &len);
    ok (got && len == 4096, "a 4096-byte file with a 4096-byte cap is read");
    free (got);
    free (data);

    s_write (s_path (p, sizeof p, "rempty"), "", 0);
    got = util_read_file (p, 16, &len);
    ok (got && len == 0 && got[0] == '\0', "an empty file reads as an empty string");
    free (got);

    errno = 0;
    got = util_read_file (s_path (p, sizeof p, "nope"), 16, NULL);
    ok (!got && errno == ENOENT, "a missing file fails with ENOENT");
}

/* ---- running programs -------------------------------------------------- */

static void
test_run (void)
{
    char out[256];
    char *t[] = { "true", NULL };
    ok (util_run (t, out, sizeof out) == 0 && out[0] == '\0', "true exits 0 with no output");
    char *f[] = { "false", NULL };
    ok (util_run (f, NULL, 0) == 1, "false exits 1 (out may be NULL)");
    char *e42[] = { "sh", "-c", "exit 42", NULL };
    ok (util_run (e42, out, sizeof out) == 42, "exit code 42 is returned");

    char *both[] = { "sh", "-c", "echo out; echo err >&2", NULL };
    ok (util_run (both, out, sizeof out) == 0 && strcmp (out, "out\nerr\n") == 0,
        "stdout and stderr are captured together");

    char *argv_lit[] = { "printf", "%s|", "a b", "$HOME", NULL };
    ok (util_run (argv_lit, out, sizeof out) == 0 && strcmp (out, "a b|$HOME|") == 0,
        "arguments are passed without a shell: '%s'", out);

    char small[4];
    char *long_out[] = { "sh", "-c", "echo abcdefgh", NULL };
    ok (util_run (long_out, small, sizeof small) == 0 && strcmp (small, "abc") == 0,
        "output is cut at cap-1 bytes and terminated");

    char *flood[] = { "head", "-c", "300000", "/dev/zero", NULL };
    ok (util_run (flood, small, sizeof small) == 0, "output beyond the cap is drained (no hang)");

    char *in[] = { "cat", NULL };
    ok (util_run (in, out, sizeof out) == 0 && out[0] == '\0', "stdin is /dev/null");

    char *kill9[] = { "sh", "-c", "kill -9 $$", NULL };
    ok (util_run (kill9, out, sizeof out) == 128 + 9, "SIGKILL gives 137");
    char *kill15[] = { "sh", "-c", "kill -TERM $$", NULL };
    ok (util_run (kill15, out, sizeof out) == 128 + 15, "SIGTERM gives 143");

    char *missing[] = { "/nonexistent/sandboxd-no-such-binary", NULL };
    ok (util_run (missing, out, sizeof out) == 127, "a missing program gives 127");
}

int
main (void)
{
    if (sodium_init () < 0 || !mkdtemp (s_tmp)) {
        printf ("Bail out! setup failed\n");
        return 1;
    }
    umask (022);
    test_errors ();
    test_valid_id ();
    test_iso8601 ();
    test_random_hex ();
    test_mkdir_p ();
    test_rm_rf ();
    test_write_atomic ();
    test_read_file ();
    test_run ();
    s_cleanup ();
    ok (!s_exists (s_tmp), "temporary directory cleaned up");
    return tap_done ();
}
