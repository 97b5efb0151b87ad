/* test_mounts.c - what a bucket mount request may name: mount paths
   (normalised, system directories refused) and endpoints (http(s) URLs
   whose host cannot smuggle another s3fs option). The mounting itself is
   covered end to end by tests/e2e/test_mounts.py against s3rver. */
#include "mounts.h"

#include <stdio.h>
#include <string.h>

#include "tap.h"

static void
test_paths (void)
{
    static const struct {
        const char *in, *want;
    } good[] = {
        { "/data", "/data" },
        { "/workspace/bucket", "/workspace/bucket" },
        { "//workspace///b/", "/workspace/b" },
        { "/mnt/x", "/mnt/x" },
        { "/tmp/cache", "/tmp/cache" },
        { "/opt/data", "/opt/data" },
        { "/var/tmp/x", "/var/tmp/x" },
        { "/etcetera", "/etcetera" },
        { "/a b/ü", "/a b/ü" },
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char buf[1100];
        err_t err = { 0 };
        int rc = mounts_check_path (good[i].in, buf, sizeof buf, &err);
        ok (rc == 0 && strcmp (buf, good[i].want) == 0, "mount path '%s' -> '%s' (%s)", good[i].in,
            good[i].want, rc == 0 ? buf : err.message);
    }
    static const char *bad[] = { "",
                                 "data",
                                 "/",
                                 "/etc",
                                 "/etc/x",
                                 "/proc/1",
                                 "/sys",
                                 "/dev/shm/x",
                                 "/usr/lib",
                                 "/bin/x",
                                 "/lib64/x",
                                 "/run/x",
                                 "/opt/sandboxd",
                                 "/opt/sandboxd/x",
                                 "/tmp",
                                 "/workspace",
                                 "/home",
                                 "/var",
                                 "/var/lib/x",
                                 "/a/../etc",
                                 "/a/./b",
                                 "/a/\x01b",
                                 "//",
                                 "/boot/x" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char buf[1100];
        err_t err = { 0 };
        int rc = mounts_check_path (bad[i], buf, sizeof buf, &err);
        ok (rc < 0 && err.status == 400 && strstr (err.message, "mount_path"),
            "mount path '%s' refused with 400 naming mount_path (%s)", bad[i], err.message);
    }
    char deep[2048] = "";
    for (int i = 0; i < 40; i++)
        strcat (deep, "/d");
    char buf[1100];
    err_t err = { 0 };
    ok (mounts_check_path (deep, buf, sizeof buf, &err) < 0 && err.status == 400,
        "a path 40 levels deep is refused");
}

static void
test_endpoints (void)
{
    static const struct {
        const char *in, *url, *host;
    } good[] = {
        { "http://127.0.0.1:9000", "http://127.0.0.1:9000", "127.0.0.1" },
        { "https://s3.amazonaws.com/", "https://s3.amazonaws.com", "s3.amazonaws.com" },
        { "HTTPS://Acc.R2.cloudflarestorage.com", "HTTPS://Acc.R2.cloudflarestorage.com",
          "acc.r2.cloudflarestorage.com" },
        { "http://[::1]:9000", "http://[::1]:9000", "[::1]" },
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char url[300], host[300];
        err_t err = { 0 };
        int rc = mounts_check_endpoint (good[i].in, url, sizeof url, host, sizeof host, &err);
        ok (rc == 0 && !strcmp (url, good[i].url) && !strcmp (host, good[i].host),
            "endpoint '%s' -> '%s', host '%s' (%s)", good[i].in, good[i].url, good[i].host,
            rc == 0 ? host : err.message);
    }
    static const char *bad[] = { "",
                                 "ftp://h",
                                 "h:9000",
                                 "http://",
                                 "http://h,passwd_file=/etc/shadow",
                                 "http://user:pw@h",
                                 "http://h/bucket",
                                 "http://h?x=1",
                                 "http://h:0",
                                 "http://h:65536",
                                 "http://h:",
                                 "http://-h",
                                 "http://h x",
                                 "http://[::1",
                                 "file:///etc/passwd" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char url[300], host[300];
        err_t err = { 0 };
        int rc = mounts_check_endpoint (bad[i], url, sizeof url, host, sizeof host, &err);
        ok (rc < 0 && err.status == 400 && strstr (err.message, "endpoint"),
            "endpoint '%s' refused with 400 naming endpoint (%s)", bad[i], err.message);
    }
}

int
main (void)
{
    test_paths ();
    test_endpoints ();
    return tap_done ();
}
