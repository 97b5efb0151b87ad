/* runtime.h - one sandbox = one OCI bundle on an overlayfs rootfs, run by
   an OCI runtime binary (runc by default). Knows nothing of HTTP, tenants
   or the registry. */
#ifndef SANDBOXD_RUNTIME_H
#define SANDBOXD_RUNTIME_H

#include <stdint.h>

#include "util.h"

/* Where the container sees <dir>/mnt, the shared mount point below which
   the broker mounts buckets (see mounts.h). */
#define RUNTIME_MOUNTS_PATH "/run/sandboxd-mounts"

typedef struct {
    int64_t memory_mb; /* memory limit; swap limited to the same value */
    double cpus;       /* CPU quota in cores (cfs quota / period) */
    int64_t pids;      /* pids.max */
    int64_t disk_mb;   /* size of the writable layer; 0 = unlimited (upper on the host fs) */
} limits_t;

typedef struct {
    const char *runtime;        /* runtime binary, e.g. "runc" */
    const char *runtime_root;   /* its --root directory, e.g. <state>/runc */
    const char *agent_path;     /* host path of the sandbox-agent binary */
    const char *cgroup_parent;  /* e.g. "/sandboxd"; cgroupsPath = parent/cid */
    const char *kernel_lib_dir; /* kernel start-up code, mounted read-only at
                                   /opt/sandboxd/python; NULL or "" for none */
} runtime_config_t;

typedef struct {
    const char *cid;   /* container id, unique per runtime root: [a-z0-9-]{1,64} */
    const char *dir;   /* per-sandbox directory <state>/sandboxes/<cid> */
    const char *lower; /* image rootfs, the read-only overlay lower layer */
    const char *hostname;
    limits_t limits;
    const char *agent_key; /* the agent's secret, passed as SANDBOXD_AGENT_KEY in its
                              environment (docs/agent-protocol.md); NULL for none */
} runtime_spec_t;

typedef enum {
    RUNTIME_MISSING = 0, /* the runtime does not know the container */
    RUNTIME_RUNNING,
    RUNTIME_STOPPED, /* created, stopped or paused: not serving */
} runtime_state_t;

/* Lay out spec->dir: bundle/config.json (written atomically), bundle/rootfs
   (overlay of lower + upper + work, mounted here if not mounted already),
   upper/, work/, ctl/ (mode 0755, owned by root: the broker binds the
   agent socket there; it is bind-mounted read-only at /run/sandboxd), and
   mnt/ (0700, a bind mount of itself with shared propagation, seen by the
   container as a slave at RUNTIME_MOUNTS_PATH).
   With limits.disk_mb > 0 the writable layer has that size: upper/ and
   work/ live in layer/, an ext4 filesystem in the sparse file layer.img
   (made once, loop-mounted with autoclear), so a sandbox that fills it gets
   ENOSPC and the host only spends the blocks actually written.
   Idempotent, so a broker restart can call it again on an existing
   sandbox. 0 or -1 with *err. */
int runtime_prepare (const runtime_config_t *cfg, const runtime_spec_t *spec, err_t *err);

/* Start the container detached (`runtime --root R run -d --bundle B cid`),
   its stdio going to <dir>/agent.log. Any stale container of that id is
   deleted first. 0 or -1 with *err. */
int runtime_start (const runtime_config_t *cfg, const runtime_spec_t *spec, err_t *err);

/* Ask the runtime for the state of cid. */
runtime_state_t runtime_state (const runtime_config_t *cfg, const char *cid);

/* Kill and delete the container (if any), unmount the overlay and mnt/
   (with anything still mounted below it) and remove
   dir entirely. Tolerates every part already being gone, so it can finish
   an interrupted destroy. 0 or -1 with *err. */
int runtime_destroy (const runtime_config_t *cfg, const char *cid, const char *dir, err_t *err);

/* Build the OCI config.json for spec as a jansson object (exposed for unit
   tests). Caller owns the returned reference. */
struct json_t;
struct json_t *runtime_build_config (const runtime_config_t *cfg, const runtime_spec_t *spec);

/* Change the cgroup limits of a running container (`runtime update`). */
int runtime_update (const runtime_config_t *cfg, const char *cid, const limits_t *limits,
                    err_t *err);

/* PID of the container's init process on the host, or -1. */
int runtime_pid (const runtime_config_t *cfg, const char *cid);

#endif
