/* config.h - broker settings: defaults, a `key = value` config file, and
   command-line overrides. Every limit a client can run into lives here. */
#ifndef SANDBOXD_CONFIG_H
#define SANDBOXD_CONFIG_H

#include <stdint.h>

#include "util.h"

typedef struct {
    char listen[128];     /* ADDR:PORT, port 0 picks a free one */
    char state_dir[1024]; /* registry, runc root, per-sandbox dirs */
    char tokens[1024];    /* tokens file; empty = no auth, loopback only */
    char image_dir[1024]; /* image cache: <image_dir>/current/rootfs */
    char agent_path[1024];
    char kernel_lib_dir[1024]; /* kernels/python: IPython start-up code */
    char runtime[256];         /* OCI runtime binary */
    char cgroup_parent[128];
    log_level_t log_level;

    int64_t max_sandboxes_per_tenant;
    int64_t default_keepalive_seconds;
    int64_t max_keepalive_seconds;
    int64_t max_body_bytes;
    int64_t max_output_bytes;
    int64_t exec_default_timeout_ms;
    int64_t exec_max_timeout_ms;
    int64_t default_memory_mb, max_memory_mb;
    double default_cpus, max_cpus;
    int64_t default_pids, max_pids;
    int64_t default_disk_mb, max_disk_mb; /* writable layer size; 0 = unlimited */
    int64_t disk_reserve_mb;              /* host space never promised to sandboxes */
    int64_t max_connections;
    int64_t reap_interval_ms;
    int64_t warm_kernels_python, warm_kernels_javascript, warm_kernels_typescript;
    int64_t max_contexts_per_sandbox;
    int64_t max_result_bytes;
    int64_t warm_sandboxes;
    int64_t max_upload_bytes;                 /* one raw PUT to /files */
    int64_t max_image_pixels, max_image_side; /* 0 = keep images as they are */
    /* backups (docs/operations.md, "Backups") */
    int64_t backup_max_bytes;       /* one archive */
    int64_t max_backups_per_tenant; /* kept at once */
    int64_t backup_retention_days;  /* deleted when older */
    int64_t backup_timeout_seconds; /* tar inside the sandbox */
    int64_t backup_min_free_mb;     /* left free on the state dir's disk */
    char compat_root[32];           /* a compat surface (docs/compat.md) also served at / */
    char preview_domain[128];       /* preview URLs: {port}-{id}-{token}.<domain> */
    int64_t max_ports_per_sandbox;  /* exposed ports */
    int64_t proxy_timeout_seconds;  /* a proxied upstream's silence before 504 */
    int64_t max_mounts_per_sandbox; /* bucket mounts (docs/operations.md) */
    int64_t mount_timeout_ms;
    int64_t
        gateway_idle_timeout_seconds; /* gateway kernels unused this long are culled; 0 = never */
    int64_t gateway_cull_interval_seconds;
    /* how often idle kernels are looked for */ /* s3fs must answer within this */
    char mount_credentials[1024];               /* root-only file of per-tenant keys; "" = none */
    char mount_endpoint_hosts[1024];            /* allowed endpoint hosts; "" = any */
} config_t;

/* Fill cfg with the built-in defaults. */
void config_defaults (config_t *cfg);

/* Set one setting by its config-file name. 0, or -1 with *err naming the key. */
int config_set (config_t *cfg, const char *key, const char *value, err_t *err);

/* Read a config file: `key = value` lines, `#` comments, blank lines.
   Unknown keys and bad values are errors (with the line number). */
int config_load_file (config_t *cfg, const char *path, err_t *err);

/* Check cross-field consistency after everything is loaded. */
int config_validate (const config_t *cfg, err_t *err);

#endif
