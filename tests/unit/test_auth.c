/* test_auth.c - tokens files and bearer-token lookup. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "auth.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tap.h"

#define ALICE "tok_alice_0123456789abcdef"
#define BOB   "tok_bob_ZYXWVUTSRQPONMLK_42"
#define CAROL "tok_carol_0123456789abcdef"

static char s_tmp[] = "/tmp/test_auth.XXXXXX";
static char s_file[600];

static const char *
s_tokens (const char *text, mode_t mode)
{
    snprintf (s_file, sizeof s_file, "%s/tokens", s_tmp);
    FILE *f = fopen (s_file, "w");
    if (f) {
        fputs (text, f);
        fclose (f);
    }
    chmod (s_file, mode);
    return s_file;
}

static bool
s_is (const char *got, const char *want)
{
    return got && want && strcmp (got, want) == 0;
}

static void
test_load_and_lookup (void)
{
    err_t err;
    err_clear (&err);
    const char *path = s_tokens ("# sandboxd tokens: TOKEN TENANT\n"
                                 "\n" ALICE " alice\n"
                                 "   \t\n"
                                 "# " CAROL " carol\n"
                                 "\t" BOB "\t  bob   # the build bot\r\n",
                                 0600);
    auth_t *a = auth_load (path, &err);
    ok (a != NULL, "tokens file with two tenants loads: %s", err.message);
    if (!a)
        return;
    ok (auth_count (a) == 2, "two tokens loaded (comments and blank lines skipped)");
    ok (!auth_is_open (a), "not open");

    ok (s_is (auth_tenant (a, "Bearer " ALICE), "alice"), "alice's token gives alice");
    ok (s_is (auth_tenant (a, "Bearer " BOB), "bob"), "bob's token gives bob");
    ok (s_is (auth_tenant (a, "bearer " ALICE), "alice"), "scheme is case-insensitive (bearer)");
    ok (s_is (auth_tenant (a, "BEARER " BOB), "bob"), "scheme is case-insensitive (BEARER)");
    ok (s_is (auth_tenant (a, "Bearer    " ALICE "  "), "alice"),
        "extra spaces around the token are ignored");

    ok (auth_tenant (a, "Bearer " CAROL) == NULL, "a commented-out token is not accepted");
    ok (auth_tenant (a, "Bearer tok_mallory_0123456789ab") == NULL, "wrong token gives NULL");
    ok (auth_tenant (a, NULL) == NULL, "missing header gives NULL");
    ok (auth_tenant (a, "") == NULL, "empty header gives NULL");
    ok (auth_tenant (a, "Bearer") == NULL && auth_tenant (a, "Bearer ") == NULL
            && auth_tenant (a, "Bearer     ") == NULL,
        "scheme without a token gives NULL");
    ok (auth_tenant (a, ALICE) == NULL, "token without the Bearer scheme gives NULL");
    ok (s_is (auth_tenant (a, "token " ALICE), "alice")
            && s_is (auth_tenant (a, "Token " BOB), "bob"),
        "the 'token' scheme Jupyter's gateway client sends works too");
    ok (auth_tenant (a, "token " CAROL) == NULL && auth_tenant (a, "Basic " ALICE) == NULL
            && auth_tenant (a, "tokens " ALICE) == NULL,
        "but not for a wrong token, another scheme or a longer scheme name");
    ok (auth_tenant (a, "Basic " ALICE) == NULL, "Basic scheme gives NULL");
    ok (auth_tenant (a, "Bearer" ALICE) == NULL, "scheme glued to the token gives NULL");

    char prefix[sizeof ALICE + 8];
    snprintf (prefix, sizeof prefix, "Bearer %.*s", (int)strlen (ALICE) - 1, ALICE);
    ok (auth_tenant (a, prefix) == NULL, "a prefix of a valid token gives NULL");
    ok (auth_tenant (a, "Bearer " ALICE "x") == NULL, "valid token plus one character gives NULL");
    ok (auth_tenant (a, "Bearer " ALICE " " ALICE) == NULL, "token repeated gives NULL");
    ok (auth_tenant (a, "Bearer x" ALICE) == NULL, "one character plus valid token gives NULL");
    ok (auth_tenant (a, "Bearer alice") == NULL, "the tenant name is not a token");

    char huge[2048];
    int n = snprintf (huge, sizeof huge, "Bearer " ALICE);
    memset (huge + n, ' ', sizeof huge - (size_t)n - 1);
    huge[sizeof huge - 1] = '\0';
    ok (s_is (auth_tenant (a, huge), "alice"), "trailing whitespace of any length is trimmed");
    memset (huge + 7, 'A', sizeof huge - 8);
    ok (auth_tenant (a, huge) == NULL, "a 2 KiB token gives NULL");

    auth_destroy (&a);
    ok (a == NULL, "auth_destroy clears the caller's pointer");
    auth_destroy (&a);
    auth_destroy (NULL);
    ok (true, "auth_destroy accepts NULL");
}

static void
test_rejected_files (void)
{
    err_t err;
    auth_t *a;

    err_clear (&err);
    a = auth_load (s_tokens ("# ok\n" ALICE " alice\nshort123456789 bob\n", 0600), &err);
    ok (!a && err.status == 500 && strcmp (err.code, "invalid_config") == 0
            && strstr (err.message, ":3:"),
        "a 14-character token is rejected with its line number: %s", err.message);
    auth_destroy (&a);

    err_clear (&err);
    a = auth_load (s_tokens ("0123456789abcdef sixteen\n", 0600), &err);
    ok (a && s_is (auth_tenant (a, "Bearer 0123456789abcdef"), "sixteen"),
        "a 16-character token is accepted");
    auth_destroy (&a);
    err_clear (&err);
    a = auth_load (s_tokens ("0123456789abcde fifteen\n", 0600), &err);
    ok (!a && strstr (err.message, ":1:"), "a 15-character token is rejected");
    auth_destroy (&a);

    const char *bad_lines[] = {
        ALICE "\n",             /* no tenant */
        ALICE " ../etc\n",      /* tenant not an identifier */
        ALICE " alice extra\n", /* trailing junk */
        ALICE " -alice\n",      /* tenant starting with '-' */
    };
    for (size_t i = 0; i < sizeof bad_lines / sizeof bad_lines[0]; i++) {
        err_clear (&err);
        a = auth_load (s_tokens (bad_lines[i], 0600), &err);
        ok (!a && strstr (err.message, ":1:"), "malformed line #%zu rejected: %s", i, err.message);
        auth_destroy (&a);
    }

    err_clear (&err);
    a = auth_load (s_tokens (ALICE " alice\n", 0666), &err);
    ok (!a && strstr (err.message, "world-writable"), "a world-writable file is refused: %s",
        err.message);
    auth_destroy (&a);
    err_clear (&err);
    a = auth_load (s_tokens (ALICE " alice\n", 0602), &err);
    ok (!a && strstr (err.message, "world-writable"), "mode 0602 is refused too");
    auth_destroy (&a);

    err_clear (&err);
    a = auth_load (s_tokens ("# nothing yet\n\n", 0600), &err);
    ok (!a && strstr (err.message, "no tokens"), "a file without tokens is refused: %s",
        err.message);
    auth_destroy (&a);

    err_clear (&err);
    a = auth_load ("/nonexistent/sandboxd/tokens", &err);
    ok (!a && strstr (err.message, "/nonexistent/sandboxd/tokens"),
        "a missing file is an error naming it");

    /* A long comment must stay a comment: a commented-out (revoked) token at
       the end of a long comment line must not become valid. */
    char text[4096];
    memset (text, 'x', sizeof text);
    text[0] = '#';
    snprintf (text + 1023, sizeof text - 1023, " " CAROL " carol\n" ALICE " alice\n");
    err_clear (&err);
    a = auth_load (s_tokens (text, 0600), &err);
    ok (a && auth_count (a) == 1 && auth_tenant (a, "Bearer " CAROL) == NULL,
        "a token at the end of a comment line longer than 1 KiB stays disabled (count %zu)",
        a ? auth_count (a) : 0);
    auth_destroy (&a);
}

static void
test_open (void)
{
    auth_t *a = auth_new_open ();
    ok (a && auth_is_open (a), "auth_new_open is open");
    ok (s_is (auth_tenant (a, NULL), "default") && s_is (auth_tenant (a, ""), "default")
            && s_is (auth_tenant (a, "Bearer whatever"), "default")
            && s_is (auth_tenant (a, "Basic abc"), "default"),
        "every caller is tenant 'default'");
    ok (auth_count (a) == 0, "no tokens");
    auth_destroy (&a);
}

int
main (void)
{
    if (sodium_init () < 0 || !mkdtemp (s_tmp)) {
        printf ("Bail out! setup failed\n");
        return 1;
    }
    test_load_and_lookup ();
    test_rejected_files ();
    test_open ();
    unlink (s_file);
    ok (rmdir (s_tmp) == 0, "temporary directory cleaned up");
    return tap_done ();
}
