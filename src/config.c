/* config.c - defaults, config file parsing and validation. */
#include "config.h"

#include <ctype.h>
#include <stdbool.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef PKGLIBEXECDIR
#define PKGLIBEXECDIR "/usr/local/libexec/sandboxd"
#endif
#ifndef PKGDATADIR
#define PKGDATADIR "/usr/local/share/sandboxd"
#endif
#ifndef DEFAULT_RUNTIME
#define DEFAULT_RUNTIME "runc"
#endif

void
config_defaults (config_t *cfg)
{
    memset (cfg, 0, sizeof *cfg);
    snprintf (cfg->listen, sizeof cfg->listen, "127.0.0.1:8080");
    snprintf (cfg->state_dir, sizeof cfg->state_dir, "/var/lib/sandboxd");
    snprintf (cfg->image_dir, sizeof cfg->image_dir, "/var/cache/sandboxd/images");
    snprintf (cfg->agent_path, sizeof cfg->agent_path, "%s/sandbox-agent", PKGLIBEXECDIR);
    snprintf (cfg->kernel_lib_dir, sizeof cfg->kernel_lib_dir, "%s/kernels/python", PKGDATADIR);
    snprintf (cfg->runtime, sizeof cfg->runtime, "%s", DEFAULT_RUNTIME);
    snprintf (cfg->cgroup_parent, sizeof cfg->cgroup_parent, "/sandboxd");
    cfg->log_level = LOG_LVL_INFO;
    cfg->max_sandboxes_per_tenant = 20;
    cfg->default_keepalive_seconds = 600;
    cfg->max_keepalive_seconds = 86400;
    cfg->max_body_bytes = 1 << 20;
    cfg->max_notebook_bytes = 16 << 20;
    cfg->max_output_bytes = 1 << 20;
    cfg->exec_default_timeout_ms = 60000;
    cfg->exec_max_timeout_ms = 3600000;
    cfg->default_memory_mb = 1024;
    cfg->max_memory_mb = 8192;
    cfg->default_cpus = 1.0;
    long ncpu = sysconf (_SC_NPROCESSORS_ONLN);
    cfg->max_cpus = ncpu > 0 ? (double)ncpu : 1.0;
    cfg->default_pids = 512;
    cfg->max_pids = 4096;
    cfg->default_disk_mb = 2048;
    cfg->max_disk_mb = 65536;
    cfg->disk_reserve_mb = 1024;
    cfg->max_connections = 256;
    cfg->reap_interval_ms = 1000;
    cfg->warm_kernels_python = 1;
    cfg->warm_kernels_javascript = 0;
    cfg->warm_kernels_typescript = 0;
    cfg->max_contexts_per_sandbox = 16;
    cfg->max_result_bytes = 32 << 20;
    cfg->warm_sandboxes = 1;
    cfg->max_upload_bytes = 8LL << 30;
    cfg->max_image_pixels = 0;
    cfg->max_image_side = 0;
    cfg->backup_max_bytes = 1LL << 30;
    cfg->max_backups_per_tenant = 20;
    cfg->backup_retention_days = 7;
    cfg->backup_timeout_seconds = 1800;
    cfg->backup_min_free_mb = 1024;
    snprintf (cfg->preview_domain, sizeof cfg->preview_domain, "localhost");
    cfg->max_ports_per_sandbox = 16;
    cfg->proxy_timeout_seconds = 300;
    cfg->max_mounts_per_sandbox = 4;
    cfg->mount_timeout_ms = 15000;
}

typedef enum { K_STR, K_INT, K_NUM, K_LOG } kind_t;

typedef struct {
    const char *name;
    kind_t kind;
    size_t offset;
    size_t size; /* for strings */
    double min, max;
} key_t_;

#define S(f)         #f, K_STR, offsetof(config_t, f), sizeof(((config_t *)0)->f), 0, 0
#define I(f, lo, hi) #f, K_INT, offsetof(config_t, f), 0, lo, hi
#define N(f, lo, hi) #f, K_NUM, offsetof(config_t, f), 0, lo, hi

static const key_t_ s_keys[] = {
    { S (listen) },
    { S (state_dir) },
    { S (tokens) },
    { S (image_dir) },
    { S (agent_path) },
    { S (kernel_lib_dir) },
    { S (runtime) },
    { S (cgroup_parent) },
    { "log_level", K_LOG, offsetof (config_t, log_level), 0, 0, 0 },
    { I (max_sandboxes_per_tenant, 1, 100000) },
    { I (default_keepalive_seconds, 1, 31536000) },
    { I (max_keepalive_seconds, 1, 31536000) },
    { I (max_body_bytes, 1024, 1073741824) },
    { I (max_notebook_bytes, 1024, 1073741824) },
    { I (max_output_bytes, 1024, 67108864) },
    { I (exec_default_timeout_ms, 1, 86400000) },
    { I (exec_max_timeout_ms, 1, 86400000) },
    { I (default_memory_mb, 16, 1048576) },
    { I (max_memory_mb, 16, 1048576) },
    { N (default_cpus, 0.01, 1024) },
    { N (max_cpus, 0.01, 1024) },
    { I (default_pids, 8, 1000000) },
    { I (max_pids, 8, 1000000) },
    { I (default_disk_mb, 0, 16777216) },
    { I (max_disk_mb, 0, 16777216) },
    { I (disk_reserve_mb, 0, 16777216) },
    { I (max_connections, 4, 100000) },
    { I (reap_interval_ms, 10, 3600000) },
    { I (warm_kernels_python, 0, 8) },
    { I (warm_kernels_javascript, 0, 8) },
    { I (warm_kernels_typescript, 0, 8) },
    { I (max_contexts_per_sandbox, 1, 256) },
    { I (max_result_bytes, 65536, 1073741824) },
    { I (warm_sandboxes, 0, 64) },
    { I (max_upload_bytes, 1024, 1LL << 40) },
    { I (max_image_pixels, 0, 100000000) },
    { I (max_image_side, 0, 65535) },
    { I (backup_max_bytes, 1024, 1LL << 40) },
    { I (max_backups_per_tenant, 1, 100000) },
    { I (backup_retention_days, 1, 3650) },
    { I (backup_timeout_seconds, 1, 86400) },
    { I (backup_min_free_mb, 0, 1LL << 40) },
    { S (compat_root) },
    { S (preview_domain) },
    { I (max_ports_per_sandbox, 1, 1024) },
    { I (proxy_timeout_seconds, 1, 86400) },
    { I (max_mounts_per_sandbox, 0, 64) },
    { I (mount_timeout_ms, 1000, 300000) },
    { S (mount_credentials) },
    { S (mount_endpoint_hosts) },
};

int
config_set (config_t *cfg, const char *key, const char *value, err_t *err)
{
    for (size_t i = 0; i < sizeof s_keys / sizeof s_keys[0]; i++) {
        const key_t_ *k = &s_keys[i];
        if (strcmp (k->name, key) != 0)
            continue;
        char *field = (char *)cfg + k->offset;
        char *end = NULL;
        switch (k->kind) {
        case K_STR:
            if (strlen (value) >= k->size)
                return err_set (err, 400, "invalid_config", "%s: value too long", key);
            memcpy (field, value, strlen (value) + 1);
            return 0;
        case K_LOG:
            if (log_parse_level (value, (log_level_t *)field) < 0)
                return err_set (err, 400, "invalid_config",
                                "%s: expected debug, info, warn or error", key);
            return 0;
        case K_INT: {
            errno = 0;
            long long n = strtoll (value, &end, 10);
            if (errno || !*value || *end || n < k->min || n > k->max)
                return err_set (err, 400, "invalid_config",
                                "%s: expected an integer from %.0f to %.0f", key, k->min, k->max);
            *(int64_t *)field = n;
            return 0;
        }
        case K_NUM: {
            errno = 0;
            double d = strtod (value, &end);
            if (errno || !*value || *end || !(d >= k->min && d <= k->max))
                return err_set (err, 400, "invalid_config", "%s: expected a number from %g to %g",
                                key, k->min, k->max);
            *(double *)field = d;
            return 0;
        }
        }
    }
    return err_set (err, 400, "invalid_config", "unknown setting '%.64s'", key);
}

static char *
s_trim (char *s)
{
    while (isspace ((unsigned char)*s))
        s++;
    size_t n = strlen (s);
    while (n > 0 && isspace ((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

int
config_load_file (config_t *cfg, const char *path, err_t *err)
{
    FILE *f = fopen (path, "re");
    if (!f)
        return err_set (err, 400, "invalid_config", "cannot open config file %s: %s", path,
                        strerror (errno));
    char *line = NULL;
    size_t cap = 0;
    int lineno = 0, rc = 0;
    while (rc == 0 && getline (&line, &cap, f) != -1) {
        lineno++;
        char *s = s_trim (line);
        if (*s == '\0' || *s == '#')
            continue;
        char *eq = strchr (s, '=');
        if (!eq) {
            rc = err_set (err, 400, "invalid_config", "%s:%d: expected 'key = value'", path,
                          lineno);
            break;
        }
        *eq = '\0';
        if (config_set (cfg, s_trim (s), s_trim (eq + 1), err) < 0)
            rc = err_prefix (err, "%s:%d", path, lineno);
    }
    free (line);
    fclose (f);
    return rc;
}

int
config_validate (const config_t *cfg, err_t *err)
{
    static const char *surfaces[] = { "", "acontext", "kapin", "lifecycle", "artifact" };
    bool known = false;
    for (size_t i = 0; i < sizeof surfaces / sizeof surfaces[0]; i++)
        known |= !strcmp (cfg->compat_root, surfaces[i]);
    if (!known)
        return err_set (err, 400, "invalid_config",
                        "compat_root: expected acontext, kapin, lifecycle or artifact");
    if (cfg->default_keepalive_seconds > cfg->max_keepalive_seconds)
        return err_set (err, 400, "invalid_config",
                        "default_keepalive_seconds exceeds max_keepalive_seconds");
    if (cfg->exec_default_timeout_ms > cfg->exec_max_timeout_ms)
        return err_set (err, 400, "invalid_config",
                        "exec_default_timeout_ms exceeds exec_max_timeout_ms");
    if (cfg->default_memory_mb > cfg->max_memory_mb || cfg->default_cpus > cfg->max_cpus
        || cfg->default_pids > cfg->max_pids || cfg->default_disk_mb > cfg->max_disk_mb)
        return err_set (err, 400, "invalid_config", "a default limit exceeds its maximum");
    if (cfg->default_disk_mb > 0 && cfg->default_disk_mb < 64)
        return err_set (err, 400, "invalid_config",
                        "default_disk_mb: at least 64, or 0 for writable layers without a limit");
    if (cfg->state_dir[0] != '/' || cfg->image_dir[0] != '/')
        return err_set (err, 400, "invalid_config", "state_dir and image_dir must be absolute");
    for (const char *c = cfg->preview_domain; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9')
              || *c == '-' || *c == '.'))
            return err_set (err, 400, "invalid_config",
                            "preview_domain: a host name like localhost or preview.example.com");
    if (!cfg->preview_domain[0] || cfg->preview_domain[0] == '.')
        return err_set (err, 400, "invalid_config",
                        "preview_domain: a host name like localhost or preview.example.com");
    if (!strchr (cfg->listen, ':'))
        return err_set (err, 400, "invalid_config", "listen: expected ADDR:PORT");
    return 0;
}
