/* test_config.c - defaults, `key = value` files, overrides and consistency checks. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tap.h"

static char s_tmp[] = "/tmp/test_config.XXXXXX";
static char s_file[600];

static const char *
s_write_config (const char *text)
{
    snprintf (s_file, sizeof s_file, "%s/sandboxd.conf", s_tmp);
    FILE *f = fopen (s_file, "w");
    if (f) {
        fputs (text, f);
        fclose (f);
    }
    return s_file;
}

static bool
s_err_is (const err_t *err, const char *needle)
{
    return err->status == 400 && strcmp (err->code, "invalid_config") == 0
           && strstr (err->message, needle);
}

static void
test_defaults (void)
{
    config_t c;
    memset (&c, 0x5a, sizeof c);
    config_defaults (&c);
    err_t err;
    ok (strcmp (c.listen, "127.0.0.1:8080") == 0, "listens on 127.0.0.1:8080 by default");
    ok (c.tokens[0] == '\0', "no tokens file by default (loopback-only open mode)");
    ok (c.state_dir[0] == '/' && c.image_dir[0] == '/', "state and image dirs are absolute");
    ok (c.runtime[0] != '\0' && c.agent_path[0] == '/', "runtime and agent path set");
    ok (c.log_level == LOG_LVL_INFO, "log level info");
    ok (c.max_sandboxes_per_tenant > 0 && c.max_connections > 0 && c.max_body_bytes >= 1024,
        "per-tenant, connection and body limits are positive");
    ok (c.default_memory_mb >= 16 && c.default_memory_mb <= c.max_memory_mb && c.default_pids >= 8
            && c.default_pids <= c.max_pids && c.default_cpus > 0 && c.default_cpus <= c.max_cpus,
        "default limits are within their maxima");
    ok (c.default_keepalive_seconds > 0 && c.default_keepalive_seconds <= c.max_keepalive_seconds
            && c.exec_default_timeout_ms > 0 && c.exec_default_timeout_ms <= c.exec_max_timeout_ms,
        "default keepalive and exec timeout are within their maxima");
    ok (c.max_cpus >= 1.0, "max_cpus is at least one core");
    ok (config_validate (&c, &err) == 0, "the defaults validate");
}

static void
test_set (void)
{
    config_t c;
    config_defaults (&c);
    err_t err;

    ok (config_set (&c, "listen", "0.0.0.0:9000", &err) == 0
            && strcmp (c.listen, "0.0.0.0:9000") == 0,
        "string setting");
    char big[300];
    memset (big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    err_clear (&err);
    ok (config_set (&c, "listen", big, &err) == -1 && s_err_is (&err, "listen")
            && strcmp (c.listen, "0.0.0.0:9000") == 0,
        "too long a string rejected, old value kept: %s", err.message);

    ok (config_set (&c, "max_pids", "2048", &err) == 0 && c.max_pids == 2048, "integer setting");
    ok (config_set (&c, "max_pids", "8", &err) == 0 && c.max_pids == 8, "integer minimum accepted");
    const char *bad_ints[]
        = { "abc", "", "100x", "7", "1000001", "99999999999999999999", "1.5", "0x100" };
    for (size_t i = 0; i < sizeof bad_ints / sizeof bad_ints[0]; i++) {
        c.max_pids = 4096;
        err_clear (&err);
        ok (config_set (&c, "max_pids", bad_ints[i], &err) == -1 && s_err_is (&err, "max_pids")
                && c.max_pids == 4096,
            "max_pids '%s' rejected, value kept", bad_ints[i]);
    }

    ok (config_set (&c, "default_cpus", "0.5", &err) == 0 && c.default_cpus == 0.5,
        "number setting");
    const char *bad_nums[] = { "0", "abc", "", "nan", "inf", "2000", "1.5cores" };
    for (size_t i = 0; i < sizeof bad_nums / sizeof bad_nums[0]; i++) {
        c.default_cpus = 1.0;
        err_clear (&err);
        ok (config_set (&c, "default_cpus", bad_nums[i], &err) == -1
                && s_err_is (&err, "default_cpus") && c.default_cpus == 1.0,
            "default_cpus '%s' rejected, value kept", bad_nums[i]);
    }

    ok (config_set (&c, "log_level", "debug", &err) == 0 && c.log_level == LOG_LVL_DEBUG,
        "log_level debug");
    ok (config_set (&c, "log_level", "error", &err) == 0 && c.log_level == LOG_LVL_ERROR,
        "log_level error");
    err_clear (&err);
    ok (config_set (&c, "log_level", "verbose", &err) == -1 && s_err_is (&err, "log_level")
            && c.log_level == LOG_LVL_ERROR,
        "unknown log level rejected: %s", err.message);

    err_clear (&err);
    ok (config_set (&c, "max_pid", "100", &err) == -1
            && s_err_is (&err, "unknown setting 'max_pid'"),
        "unknown key rejected: %s", err.message);
}

static void
test_load_file (void)
{
    config_t c;
    config_defaults (&c);
    err_t err;
    err_clear (&err);
    const char *path = s_write_config ("# sandboxd configuration\n"
                                       "\n"
                                       "listen = 0.0.0.0:9999\n"
                                       "   max_pids=2048   \n"
                                       "\tdefault_cpus =\t0.5\n"
                                       "  # indented comment = not a setting\n"
                                       "log_level = warn\r\n"
                                       "agent_path = /opt/my agent/sandbox-agent\n"
                                       "   \t  \n"
                                       "state_dir = /srv/sandboxd");
    ok (config_load_file (&c, path, &err) == 0,
        "file with comments, blanks and whitespace loads: %s", err.message);
    ok (strcmp (c.listen, "0.0.0.0:9999") == 0, "listen set");
    ok (c.max_pids == 2048, "surrounding whitespace trimmed");
    ok (c.default_cpus == 0.5, "tabs around '=' trimmed");
    ok (c.log_level == LOG_LVL_WARN, "CRLF line ending accepted");
    ok (strcmp (c.agent_path, "/opt/my agent/sandbox-agent") == 0, "inner spaces kept in values");
    ok (strcmp (c.state_dir, "/srv/sandboxd") == 0, "last line without newline read");
    ok (c.max_memory_mb == 8192, "settings not in the file keep their defaults");

    config_defaults (&c);
    err_clear (&err);
    path = s_write_config ("# c\nlisten = 1.2.3.4:1\nmax_pids = lots\n");
    ok (config_load_file (&c, path, &err) == -1 && s_err_is (&err, ":3:")
            && strstr (err.message, "max_pids") && strstr (err.message, path),
        "bad value names file, line 3 and key: %s", err.message);

    err_clear (&err);
    path = s_write_config ("\njust some words\n");
    ok (config_load_file (&c, path, &err) == -1 && s_err_is (&err, ":2:")
            && strstr (err.message, "key = value"),
        "line without '=' names line 2: %s", err.message);

    err_clear (&err);
    path = s_write_config ("# a\n# b\n\nmax_pidz = 5\n");
    ok (config_load_file (&c, path, &err) == -1 && s_err_is (&err, ":4:")
            && strstr (err.message, "max_pidz"),
        "unknown key names line 4: %s", err.message);

    err_clear (&err);
    ok (config_load_file (&c, "/nonexistent/sandboxd.conf", &err) == -1
            && s_err_is (&err, "/nonexistent/sandboxd.conf"),
        "missing file names the path: %s", err.message);

    /* A long comment must stay a comment: its tail must not be read as a
       setting of its own. */
    char text[4096];
    int n = snprintf (text, sizeof text, "# ");
    while (n < 2100)
        n += snprintf (text + n, sizeof text - (size_t)n, "long explanation ");
    snprintf (text + n, sizeof text - (size_t)n, "max_pids = 9\nlisten = 127.0.0.1:1\n");
    config_defaults (&c);
    err_clear (&err);
    path = s_write_config (text);
    int rc = config_load_file (&c, path, &err);
    ok (rc == 0 && c.max_pids == 4096 && strcmp (c.listen, "127.0.0.1:1") == 0,
        "a comment line longer than 2 KiB is ignored entirely (rc %d, max_pids %lld, %s)", rc,
        (long long)c.max_pids, err.message);

    memset (text, 'x', sizeof text);
    text[0] = '#';
    snprintf (text + 2047, sizeof text - 2047, " max_pids = 9\n");
    config_defaults (&c);
    err_clear (&err);
    path = s_write_config (text);
    rc = config_load_file (&c, path, &err);
    ok (rc == 0 && c.max_pids == 4096,
        "a setting at the end of a long comment line stays commented out (rc %d, max_pids %lld)",
        rc, (long long)c.max_pids);
}

static void
test_validate (void)
{
    config_t c;
    err_t err;

    config_defaults (&c);
    c.default_memory_mb = c.max_memory_mb + 1;
    err_clear (&err);
    ok (config_validate (&c, &err) == -1 && s_err_is (&err, "exceeds"),
        "default_memory_mb > max_memory_mb rejected");
    config_defaults (&c);
    c.default_cpus = c.max_cpus + 1;
    ok (config_validate (&c, &err) == -1, "default_cpus > max_cpus rejected");
    config_defaults (&c);
    c.default_pids = c.max_pids + 1;
    ok (config_validate (&c, &err) == -1, "default_pids > max_pids rejected");
    config_defaults (&c);
    c.default_keepalive_seconds = c.max_keepalive_seconds + 1;
    err_clear (&err);
    ok (config_validate (&c, &err) == -1 && s_err_is (&err, "default_keepalive_seconds"),
        "default keepalive > max rejected: %s", err.message);
    config_defaults (&c);
    c.exec_default_timeout_ms = c.exec_max_timeout_ms + 1;
    err_clear (&err);
    ok (config_validate (&c, &err) == -1 && s_err_is (&err, "exec_default_timeout_ms"),
        "default exec timeout > max rejected");

    config_defaults (&c);
    c.default_memory_mb = c.max_memory_mb;
    ok (config_validate (&c, &err) == 0, "default equal to max is fine");

    config_defaults (&c);
    config_set (&c, "state_dir", "var/lib/sandboxd", &err);
    err_clear (&err);
    ok (config_validate (&c, &err) == -1 && s_err_is (&err, "absolute"),
        "relative state_dir rejected: %s", err.message);
    config_defaults (&c);
    config_set (&c, "state_dir", "", &err);
    ok (config_validate (&c, &err) == -1, "empty state_dir rejected");
    config_defaults (&c);
    config_set (&c, "image_dir", "./images", &err);
    ok (config_validate (&c, &err) == -1, "relative image_dir rejected");
    config_defaults (&c);
    config_set (&c, "listen", "8080", &err);
    err_clear (&err);
    ok (config_validate (&c, &err) == -1 && s_err_is (&err, "listen"),
        "listen without a port rejected");
}

int
main (void)
{
    if (!mkdtemp (s_tmp)) {
        printf ("Bail out! mkdtemp failed\n");
        return 1;
    }
    test_defaults ();
    test_set ();
    test_load_file ();
    test_validate ();
    unlink (s_file);
    ok (rmdir (s_tmp) == 0, "temporary directory cleaned up");
    return tap_done ();
}
