/* test_backups.c - directory validation, backup ids, and the archive store:
   what an interrupted backup leaves is removed at start-up, expired backups
   go, list/get/delete see only the tenant's own. (Making and restoring
   archives needs real sandboxes: tests/e2e/test_backups.py.) */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "backups.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "files.h"
#include "tap.h"

static char s_tmp[] = "/tmp/test_backups.XXXXXX";

static void
s_touch (const char *tenant, const char *name, const char *text)
{
    char path[1024];
    snprintf (path, sizeof path, "%s/backups/%s/%s", s_tmp, tenant, name);
    FILE *f = fopen (path, "w");
    if (f) {
        fputs (text, f);
        fclose (f);
    }
}

static bool
s_exists (const char *tenant, const char *name)
{
    char path[1024];
    snprintf (path, sizeof path, "%s/backups/%s/%s", s_tmp, tenant, name);
    return access (path, F_OK) == 0;
}

static void
test_check_dir (void)
{
    char out[FILES_MAX_PATH + 1];
    err_t err = { 0 };
    ok (backups_check_dir ("dir", "/workspace/proj", out, sizeof out, &err) == 0
            && !strcmp (out, "/workspace/proj"),
        "a plain absolute dir is kept");
    ok (backups_check_dir ("dir", "/workspace//a/./b/../c/", out, sizeof out, &err) == 0
            && !strcmp (out, "/workspace/a/c"),
        "//, ., .. and a trailing slash are resolved lexically (%s)", out);
    ok (backups_check_dir ("dir", "/../../workspace", out, sizeof out, &err) == 0
            && !strcmp (out, "/workspace"),
        ".. above / stays at /");
    static const char *const bad[] = { "workspace", "",      "/",
                                       "/..",       "/proc", "/proc/1/root",
                                       "/sys/x",    "/dev",  "/workspace/../dev/shm",
                                       "/a\nb" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err_clear (&err);
        int rc = backups_check_dir ("dir", bad[i], out, sizeof out, &err);
        char shown[64];
        snprintf (shown, sizeof shown, "%s", bad[i]);
        for (char *p = shown; *p; p++)
            *p = *p < 0x20 ? '?' : *p;
        ok (rc < 0 && err.status == 400 && strstr (err.message, "'dir'"),
            "refused with 400 naming the field: \"%s\"", shown);
    }
    char *long_dir = malloc (FILES_MAX_PATH + 10);
    memset (long_dir, 'a', FILES_MAX_PATH + 9);
    long_dir[0] = '/';
    long_dir[FILES_MAX_PATH + 9] = '\0';
    err_clear (&err);
    ok (backups_check_dir ("dir", long_dir, out, sizeof out, &err) < 0 && err.status == 400,
        "a dir over %d bytes is refused", FILES_MAX_PATH);
    free (long_dir);
    ok (backups_check_dir ("dir", "/proco", out, sizeof out, &err) == 0 && !strcmp (out, "/proco"),
        "/proco is not /proc");
}

static void
test_ids (void)
{
    ok (backups_valid_id ("bk-0123456789abcdef01234567"), "bk- and 24 hex digits is an id");
    ok (!backups_valid_id ("bk-0123456789ABCDEF01234567"), "upper-case hex is not");
    ok (!backups_valid_id ("bk-0123456789abcdef0123456"), "23 digits is not");
    ok (!backups_valid_id ("../../etc/passwd"), "a path is not");
    ok (!backups_valid_id (NULL), "NULL is not");
}

static void
test_store (void)
{
    const char *good = "bk-aaaaaaaaaaaaaaaaaaaaaaaa";
    const char *old = "bk-bbbbbbbbbbbbbbbbbbbbbbbb";
    char dir[1024], rec[512];
    snprintf (dir, sizeof dir, "%s/backups/alice", s_tmp);
    util_mkdir_p (dir, 0755);
    int64_t now = util_now_ms ();
    snprintf (rec, sizeof rec,
              "{\"sandbox_id\":\"s1\",\"dir\":\"/workspace\",\"excludes\":[],\"size\":5,"
              "\"created_at\":%lld}",
              (long long)now);
    s_touch ("alice", "bk-aaaaaaaaaaaaaaaaaaaaaaaa.tgz", "12345");
    s_touch ("alice", "bk-aaaaaaaaaaaaaaaaaaaaaaaa.json", rec);
    snprintf (rec, sizeof rec,
              "{\"sandbox_id\":\"s1\",\"dir\":\"/workspace\",\"excludes\":[],\"size\":5,"
              "\"created_at\":%lld}",
              (long long)(now - 8 * 86400000LL));
    s_touch ("alice", "bk-bbbbbbbbbbbbbbbbbbbbbbbb.tgz", "12345");
    s_touch ("alice", "bk-bbbbbbbbbbbbbbbbbbbbbbbb.json", rec);
    s_touch ("alice", ".bk-cccccccccccccccccccccccc.part", "partial");
    s_touch ("alice", "bk-dddddddddddddddddddddddd.tgz", "no record");
    s_touch ("alice", "bk-eeeeeeeeeeeeeeeeeeeeeeee.json", "{}");
    s_touch ("alice", "bk-ffffffffffffffffffffffff.json.tmp-0011223344556677", "{");

    config_t cfg;
    config_defaults (&cfg);
    snprintf (cfg.state_dir, sizeof cfg.state_dir, "%s", s_tmp);
    err_t err = { 0 };
    backups_t *b = backups_new (&cfg, NULL, &err);
    ok (b != NULL, "backups_new on a state dir (%s)", err.message);
    if (!b)
        return;
    struct stat st;
    char root[1024];
    snprintf (root, sizeof root, "%s/backups", s_tmp);
    ok (stat (root, &st) == 0 && (st.st_mode & 0777) == 0700, "<state>/backups is 0700");
    ok (s_exists ("alice", "bk-aaaaaaaaaaaaaaaaaaaaaaaa.tgz")
            && s_exists ("alice", "bk-aaaaaaaaaaaaaaaaaaaaaaaa.json"),
        "a complete backup is kept");
    ok (!s_exists ("alice", ".bk-cccccccccccccccccccccccc.part"), "a partial archive is removed");
    ok (!s_exists ("alice", "bk-dddddddddddddddddddddddd.tgz"),
        "an archive without its record is removed");
    ok (!s_exists ("alice", "bk-eeeeeeeeeeeeeeeeeeeeeeee.json"),
        "a record without its archive is removed");
    ok (!s_exists ("alice", "bk-ffffffffffffffffffffffff.json.tmp-0011223344556677"),
        "a half-written record is removed");
    ok (!s_exists ("alice", "bk-bbbbbbbbbbbbbbbbbbbbbbbb.tgz")
            && !s_exists ("alice", "bk-bbbbbbbbbbbbbbbbbbbbbbbb.json"),
        "a backup older than backup_retention_days is removed");

    json_t *out = NULL;
    ok (backups_list (b, "alice", &out, &err) == 0
            && json_array_size (json_object_get (out, "backups")) == 1,
        "alice lists one backup");
    json_t *first = json_array_get (json_object_get (out, "backups"), 0);
    ok (first && !strcmp (json_string_value (json_object_get (first, "backup_id")), good)
            && json_integer_value (json_object_get (first, "size")) == 5
            && json_is_string (json_object_get (first, "expires_at")),
        "with its id, size and expiry");
    json_decref (out);
    out = NULL;
    ok (backups_list (b, "bob", &out, &err) == 0
            && json_array_size (json_object_get (out, "backups")) == 0,
        "bob lists none");
    json_decref (out);
    out = NULL;
    err_clear (&err);
    ok (backups_get (b, "bob", good, &out, &err) < 0 && err.status == 404, "bob: get is 404");
    err_clear (&err);
    ok (backups_delete (b, "bob", good, &err) < 0 && err.status == 404, "bob: delete is 404");
    ok (s_exists ("alice", "bk-aaaaaaaaaaaaaaaaaaaaaaaa.tgz"), "alice's archive is still there");
    err_clear (&err);
    ok (backups_get (b, "alice", old, &out, &err) < 0 && err.status == 404,
        "the expired backup is 404");
    err_clear (&err);
    ok (backups_delete (b, "alice", good, &err) == 0, "alice deletes hers");
    ok (!s_exists ("alice", "bk-aaaaaaaaaaaaaaaaaaaaaaaa.tgz")
            && !s_exists ("alice", "bk-aaaaaaaaaaaaaaaaaaaaaaaa.json"),
        "archive and record are gone");
    err_clear (&err);
    ok (backups_delete (b, "alice", good, &err) < 0 && err.status == 404, "deleting again: 404");
    backups_destroy (&b);
    ok (b == NULL, "destroy nulls the pointer");
}

int
main (void)
{
    if (!mkdtemp (s_tmp)) {
        printf ("1..0 # SKIP cannot make a temp dir\n");
        return 0;
    }
    log_set_level (LOG_LVL_ERROR);
    test_check_dir ();
    test_ids ();
    test_store ();
    util_rm_rf (s_tmp);
    return tap_done ();
}
