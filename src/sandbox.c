/* sandbox.c - sandbox lifecycle on top of registry, runtime and agent link. */
#include "sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sodium.h>
#include <unistd.h>

#include "jsonv.h"

#define AGENT_READY_MS 10000

struct _sandbox_mgr_t {
    const config_t *cfg;
    registry_t *reg;
    agent_link_t *link;
    runtime_config_t rt;
    char runtime_root[1100];
    char sandboxes_dir[1100];
    /* Serialises the check-then-act steps of create and delete (quota,
       existence, status changes); container work happens outside it. */
    pthread_mutex_t lock;
    /* observers of sandbox life, in the order they were added */
    struct {
        sandbox_hook_fn *started, *stopped;
        void *arg;
    } hooks[SANDBOX_MAX_HOOKS];
    /* the pool of ready sandboxes (tenant POOL_TENANT, id = cid) */
    pthread_t pool_thread;
    bool pool_started, pool_stop;
    pthread_cond_t pool_cond;
    /* the watchdog: notices containers whose init (the agent) died */
    pthread_t watch_thread;
    bool watch_started, watch_stop;
    pthread_cond_t watch_cond;
};

/* No client tenant can be named this: tenant names start alphanumeric. */
#define POOL_TENANT "_pool"

static int s_disk_admit (sandbox_mgr_t *self, int64_t disk_mb, err_t *err);

/* After an internal error: if the state dir cannot take a small file (full
   or read-only), say that instead (507 / 503), for the operator to fix. */
static void
s_state_fault (sandbox_mgr_t *self, err_t *err)
{
    if (err->status != 500)
        return;
    char probe[1200];
    snprintf (probe, sizeof probe, "%s/.write-probe", self->cfg->state_dir);
    if (util_write_file_atomic (probe, "ok", 2, 0600) == 0) {
        unlink (probe);
        return;
    }
    int e = errno;
    char was[512];
    snprintf (was, sizeof was, "%s", err->message);
    if (e == ENOSPC || e == EDQUOT)
        err_set (err, 507, "insufficient_storage", "the state directory is full (%.400s)", was);
    else if (e == EROFS)
        err_set (err, 503, "read_only", "the state directory is read-only (%.400s)", was);
}

static void
s_dir_of (sandbox_mgr_t *self, const char *cid, char *buf, size_t size)
{
    snprintf (buf, size, "%s/%s", self->sandboxes_dir, cid);
}

static int
s_sock_of (sandbox_mgr_t *self, const char *cid, char *buf, size_t size, err_t *err)
{
    /* sun_path holds 108 bytes including the NUL. */
    int n = snprintf (buf, size, "%s/%s/ctl/agent.sock", self->sandboxes_dir, cid);
    if (n < 0 || (size_t)n >= size || n > 107)
        return err_set (err, 500, "internal",
                        "state_dir is too long for a unix socket path (%d > 107 bytes)", n);
    return 0;
}

sandbox_mgr_t *
sandbox_mgr_new (const config_t *cfg, registry_t *reg, agent_link_t *link, err_t *err)
{
    sandbox_mgr_t *self = calloc (1, sizeof *self);
    if (!self) {
        err_set (err, 500, "internal", "out of memory");
        return NULL;
    }
    self->cfg = cfg;
    self->reg = reg;
    self->link = link;
    pthread_mutex_init (&self->lock, NULL);
    pthread_cond_init (&self->pool_cond, NULL);
    pthread_cond_init (&self->watch_cond, NULL);
    snprintf (self->runtime_root, sizeof self->runtime_root, "%s/runc", cfg->state_dir);
    snprintf (self->sandboxes_dir, sizeof self->sandboxes_dir, "%s/sandboxes", cfg->state_dir);
    if (util_mkdir_p (self->runtime_root, 0700) < 0
        || util_mkdir_p (self->sandboxes_dir, 0711) < 0) {
        err_set (err, 500, "internal", "creating %s: %m", self->sandboxes_dir);
        free (self);
        return NULL;
    }
    self->rt.runtime = cfg->runtime;
    self->rt.runtime_root = self->runtime_root;
    self->rt.agent_path = cfg->agent_path;
    self->rt.cgroup_parent = cfg->cgroup_parent;
    self->rt.kernel_lib_dir = cfg->kernel_lib_dir;
    return self;
}

void
sandbox_mgr_destroy (sandbox_mgr_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pthread_mutex_destroy (&(*self_p)->lock);
    free (*self_p);
    *self_p = NULL;
}

int
sandbox_mgr_pid (sandbox_mgr_t *self, const char *cid)
{
    return runtime_pid (&self->rt, cid);
}

agent_link_t *
sandbox_mgr_link (sandbox_mgr_t *self)
{
    return self->link;
}

const config_t *
sandbox_mgr_config (sandbox_mgr_t *self)
{
    return self->cfg;
}

static json_t *
s_to_json (const registry_rec_t *rec)
{
    char created[40], expires[40];
    json_t *env = json_loads (rec->env_json ? rec->env_json : "{}", 0, NULL);
    /* Unset variables are kept as null for the sessions' sake: not shown. */
    const char *name;
    json_t *v;
    void *tmp;
    if (json_is_object (env))
        json_object_foreach_safe (env, tmp, name, v)
        {
            if (!json_is_string (v))
                json_object_del (env, name);
        }
    return json_pack (
        "{s:s, s:s, s:s, s:s, s:o, s:{s:I, s:f, s:I, s:I}}", "id", rec->id, "status", rec->status,
        "created_at", util_iso8601 (rec->created_at, created, sizeof created), "expires_at",
        util_iso8601 (rec->expires_at, expires, sizeof expires), "env", env ? env : json_object (),
        "limits", "memory_mb", (json_int_t)rec->limits.memory_mb, "cpus", rec->limits.cpus, "pids",
        (json_int_t)rec->limits.pids, "disk_mb", (json_int_t)rec->limits.disk_mb);
}

static void
s_spec (sandbox_mgr_t *self, const registry_rec_t *rec, char *dir, size_t dirsize,
        runtime_spec_t *spec)
{
    s_dir_of (self, rec->cid, dir, dirsize);
    memset (spec, 0, sizeof *spec);
    spec->cid = rec->cid;
    spec->dir = dir;
    spec->lower = rec->lower;
    spec->hostname = "sandbox";
    spec->limits = rec->limits;
}

/* The secret cid's agent authenticates with (docs/agent-protocol.md):
   <dir>/agent.key, root-only and outside ctl/, so it survives a broker
   restart and never enters the container as a file. Made on first use.
   key receives AGENT_KEY_HEX + 1 bytes. 0 or -1 with *err. */
static int
s_agent_key (const char *dir, char *key, err_t *err)
{
    char path[1300];
    snprintf (path, sizeof path, "%s/agent.key", dir);
    if (util_mkdir_p (dir, 0700) < 0)
        return err_set (err, 500, "internal", "creating %s: %m", dir);
    int fd = open (path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read (fd, key, AGENT_KEY_HEX + 1);
        close (fd);
        bool hex = n == AGENT_KEY_HEX;
        for (ssize_t i = 0; hex && i < n; i++)
            hex = (key[i] >= '0' && key[i] <= '9') || (key[i] >= 'a' && key[i] <= 'f');
        key[hex ? AGENT_KEY_HEX : 0] = '\0';
        if (hex)
            return 0;
        log_warn ("%s is malformed: making a new agent key", path);
        unlink (path);
    }
    else if (errno != ENOENT)
        return err_set (err, 500, "internal", "opening %s: %m", path);
    util_random_hex (key, AGENT_KEY_HEX / 2);
    fd = open (path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return err_set (err, 500, "internal", "creating %s: %m", path);
    bool ok = write (fd, key, AGENT_KEY_HEX) == AGENT_KEY_HEX && fsync (fd) == 0;
    close (fd);
    if (!ok) {
        unlink (path);
        return err_set (err, 500, "internal", "writing %s: %m", path);
    }
    return 0;
}

/* Bring the container of rec up and wait until its agent answers. */
static int
s_start (sandbox_mgr_t *self, const registry_rec_t *rec, bool start_container, err_t *err)
{
    char dir[1200], sock[1200], key[AGENT_KEY_HEX + 1];
    runtime_spec_t spec;
    s_spec (self, rec, dir, sizeof dir, &spec);
    if (s_sock_of (self, rec->cid, sock, sizeof sock, err) < 0)
        return -1;
    if (s_agent_key (dir, key, err) < 0)
        return -1;
    spec.agent_key = key;
    int rc = runtime_prepare (&self->rt, &spec, err);
    /* Bind before the container starts, so the agent's first connect works. */
    if (rc == 0)
        rc = agent_link_attach (self->link, rec->cid, sock, key, err);
    sodium_memzero (key, sizeof key);
    if (rc < 0)
        return -1;
    if (start_container && runtime_start (&self->rt, &spec, err) < 0)
        return -1;
    return 0;
}

int
sandbox_mgr_add_hooks (sandbox_mgr_t *self, sandbox_hook_fn *started, sandbox_hook_fn *stopped,
                       void *arg)
{
    for (int i = 0; i < SANDBOX_MAX_HOOKS; i++)
        if (!self->hooks[i].arg) {
            self->hooks[i].started = started;
            self->hooks[i].stopped = stopped;
            self->hooks[i].arg = arg;
            return 0;
        }
    return -1;
}

void
sandbox_mgr_remove_hooks (sandbox_mgr_t *self, void *arg)
{
    for (int i = 0; i < SANDBOX_MAX_HOOKS; i++)
        if (self->hooks[i].arg == arg)
            memset (&self->hooks[i], 0, sizeof self->hooks[i]);
}

void
sandbox_mgr_dir (sandbox_mgr_t *self, const char *cid, char *buf, size_t size)
{
    s_dir_of (self, cid, buf, size);
}

/* Tell every observer; started in the order they were added, stopped in
   the reverse order (the last one set up is the first torn down). */
static void
s_notify (sandbox_mgr_t *self, bool started, const char *cid, bool recovered)
{
    char dir[1200];
    s_dir_of (self, cid, dir, sizeof dir);
    for (int k = 0; k < SANDBOX_MAX_HOOKS; k++) {
        int i = started ? k : SANDBOX_MAX_HOOKS - 1 - k;
        sandbox_hook_fn *fn = started ? self->hooks[i].started : self->hooks[i].stopped;
        if (fn)
            fn (self->hooks[i].arg, cid, dir, recovered);
    }
}

static void
s_destroy_container (sandbox_mgr_t *self, const char *cid)
{
    char dir[1200];
    err_t err = { 0 };
    s_notify (self, false, cid, false);
    agent_link_detach (self->link, cid);
    s_dir_of (self, cid, dir, sizeof dir);
    if (runtime_destroy (&self->rt, cid, dir, &err) < 0)
        log_error ("sandbox %s: destroy: %s", cid, err.message);
}

/* Resolve <image_dir>/current to the image rootfs this sandbox will use. */
static int
s_current_image (sandbox_mgr_t *self, char *out, size_t size, err_t *err)
{
    char current[1200], real[PATH_MAX];
    snprintf (current, sizeof current, "%s/current", self->cfg->image_dir);
    if (!realpath (current, real))
        return err_set (err, 503, "image_missing",
                        "no sandbox image in %s: build it with kernels/build-image.sh",
                        self->cfg->image_dir);
    if ((size_t)snprintf (out, size, "%s/rootfs", real) >= size)
        return err_set (err, 500, "internal", "image path too long");
    struct stat st;
    if (stat (out, &st) < 0 || !S_ISDIR (st.st_mode))
        return err_set (err, 503, "image_missing", "sandbox image %s has no rootfs", real);
    return 0;
}

/* --- pool of ready sandboxes ---------------------------------------------- */

static int64_t
s_pool_count (sandbox_mgr_t *self)
{
    int64_t n = 0;
    registry_count (self->reg, POOL_TENANT, &n, NULL);
    return n;
}

/* Create one pooled sandbox with the default limits; 0 or -1. */
static int
s_pool_create_one (sandbox_mgr_t *self)
{
    registry_rec_t rec;
    memset (&rec, 0, sizeof rec);
    err_t err = { 0 };
    char rnd[17];
    util_random_hex (rnd, 8);
    snprintf (rec.tenant, sizeof rec.tenant, POOL_TENANT);
    snprintf (rec.cid, sizeof rec.cid, "sbx-%s", rnd);
    snprintf (rec.id, sizeof rec.id, "%s", rec.cid);
    rec.created_at = util_now_ms ();
    rec.expires_at = INT64_MAX / 2;
    snprintf (rec.status, sizeof rec.status, "creating");
    rec.env_json = strdup ("{}");
    rec.limits.memory_mb = self->cfg->default_memory_mb;
    rec.limits.cpus = self->cfg->default_cpus;
    rec.limits.pids = self->cfg->default_pids;
    rec.limits.disk_mb = self->cfg->default_disk_mb;
    int rc = -1;
    pthread_mutex_lock (&self->lock); /* admission and insert as one step */
    int admitted = s_disk_admit (self, rec.limits.disk_mb, &err) == 0
                   && s_current_image (self, rec.lower, sizeof rec.lower, &err) == 0
                   && registry_insert (self->reg, &rec, &err) == 0;
    pthread_mutex_unlock (&self->lock);
    if (admitted) {
        if (s_start (self, &rec, true, &err) == 0
            && agent_link_ping (self->link, rec.cid, AGENT_READY_MS, &err) == 0) {
            registry_set_status (self->reg, POOL_TENANT, rec.id, "running", NULL);
            s_notify (self, true, rec.cid, false);
            rc = 0;
        }
        else {
            s_destroy_container (self, rec.cid);
            registry_delete (self->reg, POOL_TENANT, rec.id, NULL);
        }
    }
    if (rc < 0)
        log_warn ("warm sandbox pool: %s", err.message);
    registry_rec_clear (&rec);
    return rc;
}

static void *
s_pool_thread (void *arg)
{
    sandbox_mgr_t *self = arg;
    int failures = 0;
    pthread_mutex_lock (&self->lock);
    while (!self->pool_stop) {
        pthread_mutex_unlock (&self->lock);
        bool want = s_pool_count (self) < self->cfg->warm_sandboxes;
        int rc = want ? s_pool_create_one (self) : 0;
        failures = rc < 0 ? failures + 1 : 0;
        pthread_mutex_lock (&self->lock);
        if (self->pool_stop)
            break;
        if (!want || failures > 0) {
            /* Sleep until asked to refill (or back off after a failure). */
            struct timespec ts;
            clock_gettime (CLOCK_REALTIME, &ts);
            ts.tv_sec += failures > 0 ? (failures < 6 ? 1 << failures : 60) : 60;
            pthread_cond_timedwait (&self->pool_cond, &self->lock, &ts);
        }
    }
    pthread_mutex_unlock (&self->lock);
    return NULL;
}

/* --- watchdog ------------------------------------------------------------------ */

#define WATCH_INTERVAL_MS 500

typedef struct {
    char cid[64];
    int pid;
    unsigned long long start; /* field 22 of /proc/<pid>/stat: tells reuse apart */
    bool seen;
} watched_t;

/* State and start time of a host process: 1 alive, 0 gone (or a zombie). */
static int
s_proc_alive (int pid, unsigned long long *start)
{
    char path[64], buf[1024];
    snprintf (path, sizeof path, "/proc/%d/stat", pid);
    int fd = open (path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read (fd, buf, sizeof buf - 1);
    close (fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    char *p = strrchr (buf, ')'); /* the command may hold spaces and parens */
    if (!p || p[1] != ' ')
        return 0;
    char state = p[2];
    unsigned long long st = 0;
    /* fields 3 (state) .. 22 (starttime): skip 19 fields after the state. */
    p += 3;
    for (int f = 0; f < 19 && p; f++) {
        p = strchr (p, ' ');
        if (p)
            p++;
    }
    if (p)
        st = strtoull (p, NULL, 10);
    *start = st;
    return state != 'Z' && state != 'X';
}

/* The container of rec lost its init (the sandbox agent, PID 1): every
   process in it is gone, its files are not (the rootfs layer is on the
   host). Calls in flight end now (sandbox_unavailable, 503), observers drop
   what lived inside (sessions, processes, kernels), and the container is
   started again on the same rootfs; if that fails the sandbox is deleted.
   Called with self->lock held, so no delete or create interleaves. */
static void
s_revive (sandbox_mgr_t *self, const registry_rec_t *rec)
{
    log_warn ("tenant=%s sandbox=%s cid=%s: the container's init process died; restarting it "
              "(files are kept, processes, sessions and kernel state are lost)",
              rec->tenant, rec->id, rec->cid);
    agent_link_detach (self->link, rec->cid);
    s_notify (self, false, rec->cid, true); /* the sandbox lives on */
    err_t err = { 0 };
    if (s_start (self, rec, true, &err) < 0) {
        log_error ("tenant=%s sandbox=%s cid=%s: restart failed (%s); deleting it", rec->tenant,
                   rec->id, rec->cid, err.message);
        registry_set_status (self->reg, rec->tenant, rec->id, "deleting", NULL);
        pthread_mutex_unlock (&self->lock);
        s_destroy_container (self, rec->cid);
        registry_delete (self->reg, rec->tenant, rec->id, NULL);
        pthread_mutex_lock (&self->lock);
        return;
    }
    /* recovered: observers re-read what they keep on disk (contexts come
       back with fresh kernels and restarted: true). */
    s_notify (self, true, rec->cid, true);
    log_info ("tenant=%s sandbox=%s cid=%s: restarted after its init died", rec->tenant, rec->id,
              rec->cid);
}

static void *
s_watch_thread (void *arg)
{
    sandbox_mgr_t *self = arg;
    watched_t *w = NULL;
    size_t nw = 0;
    pthread_mutex_lock (&self->lock);
    while (!self->watch_stop) {
        registry_rec_t *list = NULL;
        size_t n = 0;
        if (registry_list (self->reg, NULL, &list, &n, NULL) < 0)
            n = 0;
        for (size_t k = 0; k < nw; k++)
            w[k].seen = false;
        for (size_t i = 0; i < n && !self->watch_stop; i++) {
            registry_rec_t *rec = &list[i];
            if (strcmp (rec->status, "running") != 0)
                continue;
            watched_t *e = NULL;
            for (size_t k = 0; k < nw && !e; k++)
                if (!strcmp (w[k].cid, rec->cid))
                    e = &w[k];
            if (!e) {
                watched_t *g = realloc (w, (nw + 1) * sizeof *g);
                if (!g)
                    continue;
                w = g;
                e = &w[nw++];
                memset (e, 0, sizeof *e);
                snprintf (e->cid, sizeof e->cid, "%s", rec->cid);
                e->pid = -1;
            }
            e->seen = true;
            unsigned long long start = 0;
            if (e->pid <= 0) {
                /* First sight: learn the init's pid (runc state). A
                   container the runtime does not run is left to create
                   and recovery, which own it at that point. */
                e->pid = runtime_pid (&self->rt, rec->cid);
                if (e->pid > 0 && !s_proc_alive (e->pid, &e->start))
                    e->pid = -1;
                continue;
            }
            if (s_proc_alive (e->pid, &start) && start == e->start)
                continue;
            /* Re-read under the lock: a delete may have begun meanwhile. */
            registry_rec_t cur;
            if (registry_get (self->reg, rec->tenant, rec->id, &cur, NULL) == 0) {
                if (!strcmp (cur.status, "running") && !strcmp (cur.cid, rec->cid))
                    s_revive (self, &cur);
                registry_rec_clear (&cur);
            }
            e->pid = -1;
        }
        registry_list_free (list, n);
        /* Forget sandboxes that are gone. */
        for (size_t k = 0; k < nw;)
            if (!w[k].seen)
                w[k] = w[--nw];
            else
                k++;
        if (self->watch_stop)
            break;
        struct timespec ts;
        clock_gettime (CLOCK_REALTIME, &ts);
        ts.tv_nsec += WATCH_INTERVAL_MS * 1000000L;
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait (&self->watch_cond, &self->lock, &ts);
    }
    pthread_mutex_unlock (&self->lock);
    free (w);
    return NULL;
}

void
sandbox_mgr_start_watchdog (sandbox_mgr_t *self)
{
    if (self->watch_started)
        return;
    self->watch_stop = false;
    if (pthread_create (&self->watch_thread, NULL, s_watch_thread, self) == 0)
        self->watch_started = true;
}

void
sandbox_mgr_stop_watchdog (sandbox_mgr_t *self)
{
    if (!self->watch_started)
        return;
    pthread_mutex_lock (&self->lock);
    self->watch_stop = true;
    pthread_cond_broadcast (&self->watch_cond);
    pthread_mutex_unlock (&self->lock);
    pthread_join (self->watch_thread, NULL);
    self->watch_started = false;
}

void
sandbox_mgr_start_pool (sandbox_mgr_t *self)
{
    if (self->cfg->warm_sandboxes <= 0 || self->pool_started)
        return;
    self->pool_stop = false;
    if (pthread_create (&self->pool_thread, NULL, s_pool_thread, self) == 0)
        self->pool_started = true;
}

void
sandbox_mgr_stop_pool (sandbox_mgr_t *self)
{
    if (self->pool_started) {
        pthread_mutex_lock (&self->lock);
        self->pool_stop = true;
        pthread_cond_broadcast (&self->pool_cond);
        pthread_mutex_unlock (&self->lock);
        pthread_join (self->pool_thread, NULL);
        self->pool_started = false;
    }
    /* Pooled sandboxes hold nobody's state: they go with the broker. */
    registry_rec_t *list = NULL;
    size_t n = 0;
    if (registry_list (self->reg, POOL_TENANT, &list, &n, NULL) == 0)
        for (size_t i = 0; i < n; i++) {
            s_destroy_container (self, list[i].cid);
            registry_delete (self->reg, POOL_TENANT, list[i].id, NULL);
        }
    registry_list_free (list, n);
}

/* Hand a pooled sandbox over to rec (tenant, id, times, env, limits set).
   1 when adopted (rec.cid and rec.lower filled), 0 when none was ready.
   Called with self->lock held. */
static int
s_pool_adopt (sandbox_mgr_t *self, registry_rec_t *rec)
{
    if (!self->pool_started)
        return 0;
    registry_rec_t *list = NULL;
    size_t n = 0;
    int adopted = 0;
    if (registry_list (self->reg, POOL_TENANT, &list, &n, NULL) < 0)
        return 0;
    for (size_t i = 0; i < n && !adopted; i++) {
        if (strcmp (list[i].status, "running") != 0)
            continue;
        err_t err = { 0 };
        if (list[i].limits.disk_mb != rec->limits.disk_mb)
            continue; /* a filesystem's size does not change */
        bool same = list[i].limits.memory_mb == rec->limits.memory_mb
                    && list[i].limits.cpus == rec->limits.cpus
                    && list[i].limits.pids == rec->limits.pids;
        if (!same) {
            if (runtime_update (&self->rt, list[i].cid, &rec->limits, &err) < 0) {
                log_warn ("warm sandbox %s: %s", list[i].cid, err.message);
                continue;
            }
        }
        if (registry_adopt (self->reg, POOL_TENANT, list[i].id, rec, &err) == 0) {
            snprintf (rec->cid, sizeof rec->cid, "%s", list[i].cid);
            snprintf (rec->lower, sizeof rec->lower, "%s", list[i].lower);
            adopted = 1;
            /* Rewrite config.json with the new limits, for restarts. */
            if (!same) {
                runtime_spec_t spec;
                char dir[1200], key[AGENT_KEY_HEX + 1];
                s_spec (self, rec, dir, sizeof dir, &spec);
                if (s_agent_key (dir, key, &err) == 0) {
                    spec.agent_key = key;
                    runtime_prepare (&self->rt, &spec, &err);
                    sodium_memzero (key, sizeof key);
                }
            }
        }
    }
    registry_list_free (list, n);
    if (adopted)
        pthread_cond_broadcast (&self->pool_cond); /* refill; the caller holds the lock */
    return adopted;
}

static const char *const s_create_keys[] = { "id", "keepalive_seconds", "env", "limits", NULL };
static const char *const s_limit_keys[] = { "memory_mb", "cpus", "pids", "disk_mb", NULL };

/* Admit a new writable layer of disk_mb only if the host can hold it and
   everything already promised: free space minus disk_reserve_mb must cover
   what every live sandbox may still write (its size minus what it uses)
   plus disk_mb. So no tenant can fill the broker's disk. */
static int
s_disk_admit (sandbox_mgr_t *self, int64_t disk_mb, err_t *err)
{
    if (disk_mb <= 0)
        return 0;
    struct statvfs vfs;
    if (statvfs (self->sandboxes_dir, &vfs) < 0)
        return err_set (err, 500, "internal", "statvfs %s: %s", self->sandboxes_dir,
                        strerror (errno));
    int64_t free_mb = (int64_t)((unsigned long long)vfs.f_bavail * vfs.f_frsize >> 20);
    int64_t promised_mb = 0;
    registry_rec_t *list = NULL;
    size_t n = 0;
    if (registry_list (self->reg, NULL, &list, &n, err) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (list[i].limits.disk_mb <= 0)
            continue;
        char layer[1300];
        s_dir_of (self, list[i].cid, layer, sizeof layer);
        strncat (layer, "/layer", sizeof layer - strlen (layer) - 1);
        struct statvfs lv;
        int64_t used_mb = 0;
        if (statvfs (layer, &lv) == 0 && lv.f_frsize > 0)
            used_mb = (int64_t)((unsigned long long)(lv.f_blocks - lv.f_bfree) * lv.f_frsize >> 20);
        if (used_mb < list[i].limits.disk_mb)
            promised_mb += list[i].limits.disk_mb - used_mb;
    }
    registry_list_free (list, n);
    if (free_mb - self->cfg->disk_reserve_mb < promised_mb + disk_mb)
        return err_set (err, 507, "insufficient_storage",
                        "the broker's disk cannot hold another %lld MiB sandbox: %lld MiB free, "
                        "%lld MiB promised to running sandboxes, %lld MiB kept in reserve",
                        (long long)disk_mb, (long long)free_mb, (long long)promised_mb,
                        (long long)self->cfg->disk_reserve_mb);
    return 0;
}

int
sandbox_create (sandbox_mgr_t *self, const char *tenant, json_t *body, json_t **out, int *created,
                err_t *err)
{
    const config_t *cfg = self->cfg;
    const char *id = NULL;
    int64_t keepalive = cfg->default_keepalive_seconds;
    json_t *env = NULL, *limits_obj = NULL;
    registry_rec_t rec;
    memset (&rec, 0, sizeof rec);
    rec.limits.memory_mb = cfg->default_memory_mb;
    rec.limits.cpus = cfg->default_cpus;
    rec.limits.pids = cfg->default_pids;
    rec.limits.disk_mb = cfg->default_disk_mb;

    if (jsonv_only_keys (body, "", s_create_keys, err) < 0
        || jsonv_string (body, "", "id", false, 63, &id, err) < 0
        || jsonv_int (body, "", "keepalive_seconds", false, 1, cfg->max_keepalive_seconds,
                      &keepalive, err)
               < 0
        || jsonv_env (body, "", "env", 256, 64 * 1024, &env, err) < 0)
        return -1;
    if (id && !util_valid_id (id))
        return err_set (err, 400, "invalid_field",
                        "field 'id': 1 to 63 characters of [A-Za-z0-9_.-], starting with a "
                        "letter or digit");
    limits_obj = json_object_get (body, "limits");
    if (limits_obj && !json_is_null (limits_obj)) {
        if (!json_is_object (limits_obj))
            return err_set (err, 400, "invalid_field", "field 'limits': must be an object");
        if (jsonv_only_keys (limits_obj, "limits.", s_limit_keys, err) < 0
            || jsonv_int (limits_obj, "limits.", "memory_mb", false, 64, cfg->max_memory_mb,
                          &rec.limits.memory_mb, err)
                   < 0
            || jsonv_number (limits_obj, "limits.", "cpus", false, 0.1, cfg->max_cpus,
                             &rec.limits.cpus, err)
                   < 0
            || jsonv_int (limits_obj, "limits.", "pids", false, 16, cfg->max_pids, &rec.limits.pids,
                          err)
                   < 0)
            return -1;
        json_t *disk = json_object_get (limits_obj, "disk_mb");
        if (disk && cfg->default_disk_mb == 0)
            return err_set (err, 400, "invalid_field",
                            "field 'limits.disk_mb': this broker does not limit disk size "
                            "(default_disk_mb = 0)");
        if (jsonv_int (limits_obj, "limits.", "disk_mb", false, 64, cfg->max_disk_mb,
                       &rec.limits.disk_mb, err)
            < 0)
            return -1;
    }

    /* Get: an id this tenant already has answers with that sandbox. A
       concurrent create of the same id may still be starting it. */
    if (id) {
        for (int waited = 0;; waited += 50) {
            registry_rec_t existing;
            err_t gerr = { 0 };
            if (registry_get (self->reg, tenant, id, &existing, &gerr) < 0) {
                if (gerr.status != 404) {
                    *err = gerr;
                    return -1;
                }
                break;
            }
            if (strcmp (existing.status, "running") == 0) {
                *out = s_to_json (&existing);
                *created = 0;
                registry_rec_clear (&existing);
                return 0;
            }
            registry_rec_clear (&existing);
            if (waited > AGENT_READY_MS + 5000)
                return err_set (err, 409, "conflict", "sandbox %s is being created or deleted", id);
            usleep (50000);
        }
    }

    snprintf (rec.tenant, sizeof rec.tenant, "%s", tenant);
    char rnd[17];
    util_random_hex (rnd, 8);
    snprintf (rec.cid, sizeof rec.cid, "sbx-%s", rnd);
    if (id)
        snprintf (rec.id, sizeof rec.id, "%s", id);
    else
        snprintf (rec.id, sizeof rec.id, "sbx-%s", rnd);
    rec.created_at = util_now_ms ();
    rec.expires_at = rec.created_at + keepalive * 1000;
    snprintf (rec.status, sizeof rec.status, "creating");
    rec.env_json = env ? jsonv_dumps (env) : strdup ("{}");
    if (s_current_image (self, rec.lower, sizeof rec.lower, err) < 0) {
        registry_rec_clear (&rec);
        return -1;
    }

    pthread_mutex_lock (&self->lock);
    int64_t count = 0;
    int adopted = 0;
    int rc = registry_count (self->reg, tenant, &count, err);
    if (rc == 0 && count >= cfg->max_sandboxes_per_tenant)
        rc = err_set (err, 429, "quota_exceeded",
                      "tenant has %lld sandboxes, the limit is %lld: delete one first",
                      (long long)count, (long long)cfg->max_sandboxes_per_tenant);
    if (rc == 0) {
        snprintf (rec.status, sizeof rec.status, "running");
        adopted = s_pool_adopt (self, &rec);
        if (!adopted) {
            snprintf (rec.status, sizeof rec.status, "creating");
            rc = s_disk_admit (self, rec.limits.disk_mb, err);
            if (rc == 0)
                rc = registry_insert (self->reg, &rec, err);
        }
    }
    pthread_mutex_unlock (&self->lock);
    if (adopted) {
        log_info ("tenant=%s sandbox=%s cid=%s: created from the warm pool", tenant, rec.id,
                  rec.cid);
        *out = s_to_json (&rec);
        *created = 1;
        registry_rec_clear (&rec);
        return 0;
    }
    if (rc < 0) {
        registry_rec_clear (&rec);
        /* Lost a race with a create of the same id: answer with that one. */
        if (err->status == 409 && id)
            return sandbox_create (self, tenant, body, out, created, err);
        return -1;
    }

    int64_t t0 = util_mono_ms ();
    if (s_start (self, &rec, true, err) < 0
        || agent_link_ping (self->link, rec.cid, AGENT_READY_MS, err) < 0) {
        log_error ("tenant=%s sandbox=%s cid=%s: create failed: %s", tenant, rec.id, rec.cid,
                   err->message);
        s_destroy_container (self, rec.cid);
        registry_delete (self->reg, tenant, rec.id, NULL);
        registry_rec_clear (&rec);
        if (err->status < 500)
            err->status = 503;
        s_state_fault (self, err);
        return -1;
    }
    registry_set_status (self->reg, tenant, rec.id, "running", NULL);
    snprintf (rec.status, sizeof rec.status, "running");
    s_notify (self, true, rec.cid, false);
    log_info ("tenant=%s sandbox=%s cid=%s: created in %lld ms", tenant, rec.id, rec.cid,
              (long long)(util_mono_ms () - t0));
    *out = s_to_json (&rec);
    *created = 1;
    registry_rec_clear (&rec);
    return 0;
}

int
sandbox_get (sandbox_mgr_t *self, const char *tenant, const char *id, json_t **out, err_t *err)
{
    registry_rec_t rec;
    if (registry_get (self->reg, tenant, id, &rec, err) < 0)
        return -1;
    *out = s_to_json (&rec);
    registry_rec_clear (&rec);
    return 0;
}

int
sandbox_list (sandbox_mgr_t *self, const char *tenant, json_t **out, err_t *err)
{
    registry_rec_t *list = NULL;
    size_t n = 0;
    if (registry_list (self->reg, tenant, &list, &n, err) < 0)
        return -1;
    json_t *arr = json_array ();
    for (size_t i = 0; i < n; i++)
        json_array_append_new (arr, s_to_json (&list[i]));
    registry_list_free (list, n);
    *out = json_pack ("{s:o}", "sandboxes", arr);
    return 0;
}

static const char *const s_extend_keys[] = { "keepalive_longer_by_seconds", NULL };

int
sandbox_extend (sandbox_mgr_t *self, const char *tenant, const char *id, json_t *body, json_t **out,
                err_t *err)
{
    int64_t by = 0;
    if (jsonv_only_keys (body, "", s_extend_keys, err) < 0
        || jsonv_int (body, "", "keepalive_longer_by_seconds", true, 1, 31536000, &by, err) < 0)
        return -1;
    registry_rec_t rec;
    pthread_mutex_lock (&self->lock);
    int rc = registry_get (self->reg, tenant, id, &rec, err);
    if (rc == 0) {
        int64_t cap = util_now_ms () + self->cfg->max_keepalive_seconds * 1000;
        int64_t next = rec.expires_at + by * 1000;
        rec.expires_at = next > cap ? cap : next;
        rc = registry_set_expiry (self->reg, tenant, id, rec.expires_at, err);
    }
    pthread_mutex_unlock (&self->lock);
    if (rc < 0)
        return -1;
    *out = s_to_json (&rec);
    registry_rec_clear (&rec);
    return 0;
}

/* Mark (tenant, id) deleting under the lock, then tear it down. */
static int
s_delete (sandbox_mgr_t *self, const char *tenant, const char *id, const char *why, err_t *err)
{
    registry_rec_t rec;
    pthread_mutex_lock (&self->lock);
    int rc = registry_get (self->reg, tenant, id, &rec, err);
    if (rc == 0 && strcmp (rec.status, "running") != 0 && strcmp (why, "recovery") != 0) {
        rc = err_set (err, 409, "conflict", "sandbox %s is %s", id, rec.status);
        registry_rec_clear (&rec);
    }
    if (rc == 0)
        registry_set_status (self->reg, tenant, id, "deleting", NULL);
    pthread_mutex_unlock (&self->lock);
    if (rc < 0)
        return -1;
    s_destroy_container (self, rec.cid);
    registry_delete (self->reg, tenant, id, NULL);
    log_info ("tenant=%s sandbox=%s cid=%s: deleted (%s)", tenant, id, rec.cid, why);
    registry_rec_clear (&rec);
    return 0;
}

int
sandbox_delete (sandbox_mgr_t *self, const char *tenant, const char *id, err_t *err)
{
    return s_delete (self, tenant, id, "request", err);
}

int
sandbox_mgr_reap (sandbox_mgr_t *self)
{
    registry_rec_t *list = NULL;
    size_t n = 0;
    err_t err = { 0 };
    if (registry_expired (self->reg, util_now_ms (), &list, &n, &err) < 0)
        return 0;
    int reaped = 0;
    for (size_t i = 0; i < n; i++) {
        if (strcmp (list[i].status, "running") != 0)
            continue;
        err_t derr = { 0 };
        if (s_delete (self, list[i].tenant, list[i].id, "expired", &derr) == 0)
            reaped++;
    }
    registry_list_free (list, n);
    return reaped;
}

int
sandbox_mgr_recover (sandbox_mgr_t *self, err_t *err)
{
    registry_rec_t *list = NULL;
    size_t n = 0;
    if (registry_list (self->reg, NULL, &list, &n, err) < 0)
        return -1;
    int64_t now = util_now_ms ();
    for (size_t i = 0; i < n; i++) {
        registry_rec_t *rec = &list[i];
        err_t rerr = { 0 };
        if (!strcmp (rec->tenant, POOL_TENANT)) {
            /* A pool from before a crash: start afresh. */
            s_destroy_container (self, rec->cid);
            registry_delete (self->reg, POOL_TENANT, rec->id, NULL);
            continue;
        }
        if (strcmp (rec->status, "running") != 0 || rec->expires_at <= now) {
            /* Interrupted create or delete, or expired while we were down. */
            s_delete (self, rec->tenant, rec->id, "recovery", &rerr);
            continue;
        }
        bool running = runtime_state (&self->rt, rec->cid) == RUNTIME_RUNNING;
        /* A container started by a broker from before agent keys has an
           agent that cannot authenticate: restart it on its files. */
        char keypath[1300];
        s_dir_of (self, rec->cid, keypath, sizeof keypath);
        strncat (keypath, "/agent.key", sizeof keypath - strlen (keypath) - 1);
        if (running && access (keypath, F_OK) < 0) {
            log_warn ("tenant=%s sandbox=%s cid=%s: started without an agent key: restarting it",
                      rec->tenant, rec->id, rec->cid);
            running = false;
        }
        if (s_start (self, rec, !running, &rerr) < 0) {
            log_error ("tenant=%s sandbox=%s cid=%s: recovery failed: %s", rec->tenant, rec->id,
                       rec->cid, rerr.message);
            continue;
        }
        s_notify (self, true, rec->cid, true);
        log_info ("tenant=%s sandbox=%s cid=%s: recovered (%s)", rec->tenant, rec->id, rec->cid,
                  running ? "re-attached" : "restarted");
    }
    registry_list_free (list, n);
    return 0;
}

int
sandbox_resolve_env (sandbox_mgr_t *self, const char *tenant, const char *id, char *cid,
                     json_t **env, json_t **unset, err_t *err)
{
    registry_rec_t rec;
    if (registry_get (self->reg, tenant, id, &rec, err) < 0)
        return -1;
    if (strcmp (rec.status, "running") != 0) {
        err_set (err, 409, "conflict", "sandbox %s is %s", id, rec.status);
        registry_rec_clear (&rec);
        return -1;
    }
    snprintf (cid, 64, "%s", rec.cid);
    json_t *stored = json_loads (rec.env_json ? rec.env_json : "{}", 0, NULL);
    if (!json_is_object (stored)) {
        json_decref (stored);
        stored = json_object ();
    }
    /* Unset variables stay in the registry as null, so sessions that
       exported them earlier can be told to drop them. */
    if (env)
        *env = json_object ();
    if (unset)
        *unset = json_array ();
    const char *name;
    json_t *v;
    json_object_foreach (stored, name, v)
    {
        if (json_is_string (v) && env)
            json_object_set (*env, name, v);
        else if (json_is_null (v) && unset)
            json_array_append_new (*unset, json_string (name));
    }
    json_decref (stored);
    registry_rec_clear (&rec);
    return 0;
}

int
sandbox_resolve (sandbox_mgr_t *self, const char *tenant, const char *id, char *cid, json_t **env,
                 err_t *err)
{
    return sandbox_resolve_env (self, tenant, id, cid, env, NULL, err);
}

int
sandbox_set_env (sandbox_mgr_t *self, const char *tenant, const char *id, json_t *body,
                 json_t **out, err_t *err)
{
    /* Validate the new values as an env map, with nulls taken out first. */
    json_t *sets = json_object (), *unsets = json_array ();
    const char *name;
    json_t *v;
    json_object_foreach (body, name, v)
    {
        if (json_is_null (v))
            json_array_append_new (unsets, json_string (name));
        else
            json_object_set (sets, name, v);
    }
    json_t *wrap = json_pack ("{s:O}", "env", sets), *checked = NULL;
    int rc = jsonv_env (wrap, "", "env", 256, 64 * 1024, &checked, err);
    size_t i;
    json_array_foreach (unsets, i, v)
    {
        if (rc == 0 && !util_valid_env_name (json_string_value (v)))
            rc = err_set (err, 400, "invalid_field", "field 'env.%.64s': invalid variable name",
                          json_string_value (v));
    }
    registry_rec_t rec;
    memset (&rec, 0, sizeof rec);
    pthread_mutex_lock (&self->lock);
    if (rc == 0)
        rc = registry_get (self->reg, tenant, id, &rec, err);
    json_t *env = NULL;
    if (rc == 0) {
        env = json_loads (rec.env_json ? rec.env_json : "{}", 0, NULL);
        if (!json_is_object (env)) {
            json_decref (env);
            env = json_object ();
        }
        json_object_update (env, sets);
        json_array_foreach (unsets, i, v)
            json_object_set_new (env, json_string_value (v), json_null ()); /* tombstone */
        json_t *live = json_object ();
        const char *k;
        json_t *val;
        json_object_foreach (env, k, val)
        {
            if (json_is_string (val))
                json_object_set (live, k, val);
        }
        json_t *wrap2 = json_pack ("{s:O}", "env", live), *ok = NULL;
        rc = jsonv_env (wrap2, "", "env", 256, 64 * 1024, &ok, err);
        json_decref (wrap2);
        if (json_object_size (env) > 1024)
            rc = err_set (err, 400, "invalid_field", "too many variables set and unset");
        char *text = rc == 0 ? jsonv_dumps (env) : NULL;
        json_decref (env);
        env = live;
        if (rc == 0)
            rc = registry_set_env (self->reg, tenant, id, text, err);
        free (text);
    }
    pthread_mutex_unlock (&self->lock);
    registry_rec_clear (&rec);
    json_decref (wrap);
    json_decref (sets);
    json_decref (unsets);
    if (rc < 0) {
        json_decref (env);
        return -1;
    }
    *out = json_pack ("{s:o}", "env", env);
    return 0;
}
