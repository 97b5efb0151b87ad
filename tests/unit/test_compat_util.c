/* test_compat_util.c - the helpers of the acontext and kapin surfaces:
   base64 both ways (bounds, whitespace, garbage), shell quoting checked by
   a real shell, timestamps read back, and whole-file reads and writes on a
   fake sandbox root (bounds, parents, atomic replace). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "compat_util.h"

#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "openat2_helper.h"
#include "tap.h"

static char s_tmp[] = "/tmp/test_compat_util.XXXXXX";

static int
s_rm (const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove (path);
}

/* Run `printf %s WORD` through /bin/sh with word quoted; what it printed. */
static char *
s_shell_echo (const char *word)
{
    char *cmd = compat_shell_quote ("printf %s ", word);
    if (!cmd)
        return NULL;
    FILE *p = popen (cmd, "r");
    free (cmd);
    if (!p)
        return NULL;
    static char out[4096];
    size_t n = fread (out, 1, sizeof out - 1, p);
    out[n] = '\0';
    pclose (p);
    return out;
}

static void
test_base64 (void)
{
    err_t err;
    unsigned char bin[256];
    for (int i = 0; i < 256; i++)
        bin[i] = (unsigned char)i;
    char *text = compat_base64_encode (bin, sizeof bin);
    ok (text && strlen (text) == 344, "256 bytes encode to 344 characters");
    unsigned char *back = NULL;
    size_t len = 0;
    ok (compat_base64_decode (text, strlen (text), "content", &back, &len, &err) == 0 && len == 256
            && !memcmp (back, bin, 256),
        "and decode back to the same bytes");
    free (back);
    free (text);

    back = NULL;
    ok (compat_base64_decode ("SGVs\nbG8g V29y\r\nbGQ=", 20, "content", &back, &len, &err) == 0
            && len == 11 && !memcmp (back, "Hello World", 11),
        "whitespace and line breaks are skipped");
    free (back);
    back = NULL;
    ok (compat_base64_decode ("", 0, "content", &back, &len, &err) == 0 && len == 0,
        "the empty string decodes to nothing");
    free (back);

    static const char *const bad[]
        = { "SGVsbG8gV29ybGQ",     "SGVsbG8@V29ybGQ=", "not base64!!", "SGVsbG8gV29ybGQ=x", "====",
            "SGVsbG8gV29ybGQ=====" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        back = NULL;
        memset (&err, 0, sizeof err);
        int rc = compat_base64_decode (bad[i], strlen (bad[i]), "content", &back, &len, &err);
        ok (rc == -1 && back == NULL && err.status == 400 && strstr (err.message, "'content'"),
            "'%s' is refused with a 400 naming the field", bad[i]);
        free (back);
    }
    /* An embedded NUL is not whitespace: the text ends early, so refuse. */
    back = NULL;
    ok (compat_base64_decode ("SGVs\0bG8=", 9, "content", &back, &len, &err) == -1,
        "a NUL inside the text is refused");
    free (back);
}

static void
test_shell_quote (void)
{
    static const char *const words[]
        = { "/workspace", "it's", "a b\tc",  "$(touch /tmp/pwned)`id`;|&><*?",
            "''''",       "-la",  "\\n\\\\", "" };
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        char *got = s_shell_echo (words[i]);
        ok (got && !strcmp (got, words[i]), "the shell reads back [%s] unchanged", words[i]);
    }
    ok (access ("/tmp/pwned", F_OK) != 0, "nothing in a quoted word ran");
    char *q = compat_shell_quote ("ls -la -- ", "it's");
    ok (q && !strcmp (q, "ls -la -- 'it'\\''s'"), "the prefix comes first, then the word (%s)",
        q ? q : "NULL");
    free (q);
}

static void
test_iso8601 (void)
{
    char buf[40];
    int64_t ms = 0;
    int64_t now = 1795000000123LL;
    ok (compat_parse_iso8601 (util_iso8601 (now, buf, sizeof buf), &ms) == 0 && ms == now,
        "util_iso8601's output reads back to the same millisecond (%s)", buf);
    ok (compat_parse_iso8601 ("2025-01-15T10:30:00.000Z", &ms) == 0 && ms == 1736937000000LL,
        "the reference's example timestamp");
    ok (compat_parse_iso8601 ("2025-01-15T10:30:00Z", &ms) == 0 && ms == 1736937000000LL,
        "without milliseconds");
    ok (compat_parse_iso8601 ("2025-01-15T10:30:00.5Z", &ms) == 0 && ms == 1736937000500LL,
        "one fraction digit is tenths");
    static const char *const bad[] = { "",
                                       "2025-01-15",
                                       "2025-01-15T10:30:00.000",
                                       "2025-01-15T10:30:00.Z",
                                       "2025-01-15T10:30:00.000+01:00",
                                       "2025-01-15T10:30:00.000Zjunk",
                                       "yesterday" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ok (compat_parse_iso8601 (bad[i], &ms) == -1, "'%s' is not a timestamp", bad[i]);
    ok (compat_parse_iso8601 (NULL, &ms) == -1, "NULL is not a timestamp");
}

static void
test_files (void)
{
    err_t err = { 0 };
    files_root_t *root = files_root_open (s_tmp, &err);
    ok (root != NULL, "open a fake sandbox root");
    if (!root)
        return;
    ok (compat_files_write (root, "/workspace/a/b/c.txt", "hello", 5, false, &err) == -1
            && err.status == 404,
        "a write into missing directories without mkdir_parents is 404");
    ok (compat_files_write (root, "/workspace/a/b/c.txt", "hello", 5, true, &err) == 0,
        "with mkdir_parents the directories are made");
    char *buf = NULL;
    size_t len = 0;
    ok (files_read_all (root, "/workspace/a/b/c.txt", 100, &buf, &len, &err) == 0 && len == 5
            && !strcmp (buf, "hello"),
        "and the file reads back, NUL-terminated");
    free (buf);
    ok (compat_files_write (root, "/workspace/a/b/c.txt", "", 0, false, &err) == 0
            && files_read_all (root, "/workspace/a/b/c.txt", 100, &buf, &len, &err) == 0 && len == 0
            && buf[0] == '\0',
        "an empty write replaces the content with nothing");
    free (buf);
    buf = NULL;

    char big[4096];
    memset (big, 'x', sizeof big);
    compat_files_write (root, "/workspace/big", big, sizeof big, false, &err);
    memset (&err, 0, sizeof err);
    ok (files_read_all (root, "/workspace/big", 4095, &buf, &len, &err) == -1 && err.status == 413
            && buf == NULL,
        "a file over the bound is 413 and nothing is returned");
    ok (files_read_all (root, "/workspace/big", 4096, &buf, &len, &err) == 0 && len == 4096,
        "a file exactly at the bound reads");
    free (buf);
    buf = NULL;
    ok (files_read_all (root, "/workspace/nope", 10, &buf, &len, &err) == -1 && err.status == 404,
        "a missing file is 404");
    ok (files_read_all (root, "/workspace/a", 10, &buf, &len, &err) == -1 && err.status == 422,
        "a directory is 422");
    ok (compat_files_write (root, "/workspace/a", "x", 1, true, &err) == -1 && err.status == 422,
        "writing over a directory is 422");
    ok (compat_files_write (root, "../../../../outside.txt", "x", 1, true, &err) == 0
            && access ("/outside.txt", F_OK) != 0,
        "a path climbing with .. stays inside the root");
    files_root_close (&root);
}

int
main (int argc, char **argv)
{
    if (argc > 1 && strcmp (argv[1], "--openat2-helper") == 0)
        return s_helper_main ();
    char *self_exe = realpath (argv[0], NULL);
    if (self_exe && s_start_openat2_helper (self_exe))
        files_set_openat2_fn (s_openat2_helper);
    free (self_exe);
    if (!mkdtemp (s_tmp)) {
        perror ("mkdtemp");
        return 1;
    }
    char ws[sizeof s_tmp + 16];
    snprintf (ws, sizeof ws, "%s/workspace", s_tmp);
    mkdir (ws, 0755);
    test_base64 ();
    test_shell_quote ();
    test_iso8601 ();
    test_files ();
    nftw (s_tmp, s_rm, 16, FTW_DEPTH | FTW_PHYS);
    return tap_done ();
}
