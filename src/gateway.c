/* gateway.c - Jupyter Server-compatible kernel API for gateway clients.
   See gateway.h.

   The kernel table (id, tenant, sandbox, kernelspec name, whether the
   sandbox is the kernel's own) lives in memory and in
   <state_dir>/gateway.json (0600), rewritten on every create and delete, so
   that gateway kernels, like the contexts under them, survive a broker
   restart. Activity, connection counts and execution state are kept in
   memory only. */
#include "gateway.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "jsonv.h"
#include "jupyter.h"
#include "kernel.h"
#include "ws.h"

#define GW_CHECK_MS       1000  /* how often a relay checks its kernel is still there */
#define GW_SEND_TIMEOUT   30000 /* a front end that takes no data this long is dropped */
#define GW_EXTEND_EVERY   60000 /* own sandboxes' expiry pushed on at most this often */
#define GW_MAX_RELAY_MSGS 64    /* kernel messages relayed per wake-up before reading again */
#define GW_HANDSHAKE_MS   5000  /* a new channel must answer kernel_info within this */

typedef struct gk {
    char id[37];
    char tenant[64];
    char sid[64];
    char name[16];
    bool owned; /* sid is the kernel's own sandbox */
    bool deleting;
    int64_t last_activity; /* epoch ms */
    int64_t extended_at;   /* mono ms of the last expiry push */
    int connections;
    unsigned restarts; /* REST restarts: open relays reopen their channel at once */
    char state[16];
    struct gk *next;
} gk_t;

struct _gateway_t {
    const config_t *cfg;
    sandbox_mgr_t *mgr;
    contexts_t *ctxs;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool closing;
    pthread_t culler;
    bool culler_started;
    gk_t *kernels;
    char path[1100];
};

struct _gateway_ws_t {
    gateway_t *gw;
    char id[37];
    char tenant[64];
    char sid[64];
};

static const struct {
    const char *name;
    const char *language;
    const char *display;
    kernel_lang_t lang;
} s_specs[] = {
    { "python3", "python", "Python 3 (sandboxd)", KERNEL_PYTHON },
    { "javascript", "javascript", "JavaScript (TSLab, sandboxd)", KERNEL_JAVASCRIPT },
    { "typescript", "typescript", "TypeScript (TSLab, sandboxd)", KERNEL_TYPESCRIPT },
};
#define NSPECS (sizeof s_specs / sizeof s_specs[0])

/* --- small helpers -------------------------------------------------------------------- */

static int
s_spec_index (const char *name)
{
    static const struct {
        const char *alias;
        int index;
    } aliases[] = { { "python", 0 }, { "jslab", 1 }, { "tslab", 2 } };
    for (size_t i = 0; i < NSPECS; i++)
        if (!strcmp (name, s_specs[i].name))
            return (int)i;
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        if (!strcmp (name, aliases[i].alias))
            return aliases[i].index;
    return -1;
}

static bool
s_valid_kid (const char *s)
{
    if (strlen (s) != 36)
        return false;
    for (int i = 0; i < 36; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        char c = s[i];
        if (dash ? c != '-' : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
    }
    return true;
}

static void
s_new_kid (char out[37])
{
    char hex[33];
    util_random_hex (hex, 16);
    hex[12] = '4';                     /* version 4 */
    hex[16] = "89ab"[(hex[16] & 0x3)]; /* variant 10xx */
    snprintf (out, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16, hex + 20);
}

/* Jupyter's timestamp shape: %Y-%m-%dT%H:%M:%S.%fZ (jupyter_server parses
   it with exactly that format). */
static void
s_jupyter_time (int64_t ms, char *buf, size_t size)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r (&t, &tm);
    char base[32];
    strftime (base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf (buf, size, "%s.%06dZ", base, (int)(ms % 1000) * 1000);
}

static json_t *
s_model (const gk_t *k)
{
    char when[48];
    s_jupyter_time (k->last_activity, when, sizeof when);
    return json_pack ("{s:s, s:s, s:s, s:s, s:i, s:s}", "id", k->id, "name", k->name,
                      "last_activity", when, "execution_state", k->state, "connections",
                      k->connections, "sandbox_id", k->sid);
}

static gk_t *
s_find (gateway_t *self, const char *tenant, const char *id)
{
    for (gk_t *k = self->kernels; k; k = k->next)
        if (!k->deleting && !strcmp (k->id, id) && !strcmp (k->tenant, tenant))
            return k;
    return NULL;
}

static void
s_unlink (gateway_t *self, gk_t *gone)
{
    for (gk_t **pp = &self->kernels; *pp; pp = &(*pp)->next)
        if (*pp == gone) {
            *pp = gone->next;
            free (gone);
            return;
        }
}

/* --- the table on disk (under self->lock) ------------------------------------------------ */

static void
s_save (gateway_t *self)
{
    json_t *arr = json_array ();
    for (gk_t *k = self->kernels; k; k = k->next)
        if (!k->deleting)
            json_array_append_new (arr, json_pack ("{s:s, s:s, s:s, s:s, s:b}", "id", k->id,
                                                   "tenant", k->tenant, "sandbox", k->sid, "name",
                                                   k->name, "owned", k->owned));
    char *text = jsonv_dumps (arr);
    json_decref (arr);
    if (!text || util_write_file_atomic (self->path, text, strlen (text), 0600) < 0)
        log_warn ("gateway: cannot save %s: %s", self->path, strerror (errno));
    free (text);
}

static void
s_load (gateway_t *self)
{
    json_error_t jerr;
    json_t *arr = json_load_file (self->path, JSON_REJECT_DUPLICATES, &jerr);
    if (!arr)
        return;
    size_t i;
    json_t *e;
    int64_t now = util_now_ms ();
    json_array_foreach (arr, i, e)
    {
        const char *id = json_string_value (json_object_get (e, "id"));
        const char *tenant = json_string_value (json_object_get (e, "tenant"));
        const char *sid = json_string_value (json_object_get (e, "sandbox"));
        const char *name = json_string_value (json_object_get (e, "name"));
        if (!id || !s_valid_kid (id) || !tenant || strlen (tenant) >= 64 || !sid
            || !util_valid_id (sid) || !name || s_spec_index (name) < 0)
            continue;
        gk_t *k = calloc (1, sizeof *k);
        if (!k)
            break;
        snprintf (k->id, sizeof k->id, "%s", id);
        snprintf (k->tenant, sizeof k->tenant, "%s", tenant);
        snprintf (k->sid, sizeof k->sid, "%s", sid);
        snprintf (k->name, sizeof k->name, "%s", name);
        k->owned = json_is_true (json_object_get (e, "owned"));
        k->last_activity = now;
        snprintf (k->state, sizeof k->state, "idle");
        k->next = self->kernels;
        self->kernels = k;
    }
    json_decref (arr);
}

/* --- kernels ---------------------------------------------------------------------------- */

/* Mark activity on kernel id (and, for an own sandbox, push its expiry on
   now and then). state: a new execution state, or NULL. */
static void
s_touch (gateway_t *self, const char *tenant, const char *id, const char *state)
{
    bool extend = false;
    char sid[64] = "";
    pthread_mutex_lock (&self->lock);
    gk_t *k = s_find (self, tenant, id);
    if (k) {
        k->last_activity = util_now_ms ();
        if (state)
            snprintf (k->state, sizeof k->state, "%s", state);
        int64_t mono = util_mono_ms ();
        if (k->owned && mono - k->extended_at >= GW_EXTEND_EVERY) {
            k->extended_at = mono;
            extend = true;
            snprintf (sid, sizeof sid, "%s", k->sid);
        }
    }
    pthread_mutex_unlock (&self->lock);
    if (extend) {
        json_t *body = json_pack ("{s:I}", "keepalive_longer_by_seconds",
                                  (json_int_t)(GW_EXTEND_EVERY / 1000));
        json_t *out = NULL;
        err_t err = { 0 };
        if (sandbox_extend (self->mgr, tenant, sid, body, &out, &err) < 0)
            log_debug ("gateway kernel %s: extending sandbox %s: %s", id, sid, err.message);
        json_decref (out);
        json_decref (body);
    }
}

/* Delete the kernel's context and, if it has its own, its sandbox. The
   entry must be marked deleting by the caller; it is removed here. */
static int
s_kernel_delete (gateway_t *self, gk_t *k, err_t *err)
{
    err_t e = { 0 };
    int rc = 0;
    if (contexts_delete (self->ctxs, k->tenant, k->sid, k->id, &e) < 0 && e.status != 404) {
        *err = e;
        rc = -1;
    }
    if (rc == 0 && k->owned) {
        err_t se = { 0 };
        if (sandbox_delete (self->mgr, k->tenant, k->sid, &se) < 0 && se.status != 404) {
            *err = se;
            rc = -1;
        }
    }
    pthread_mutex_lock (&self->lock);
    if (rc == 0) {
        s_unlink (self, k);
        s_save (self);
    }
    else
        k->deleting = false;
    pthread_cond_broadcast (&self->wake);
    pthread_mutex_unlock (&self->lock);
    return rc;
}

/* The entry for tenant's kernel id with its context checked to exist
   (entries whose context went away, e.g. with its sandbox, are dropped).
   Copies it to *copy. 404 otherwise. */
static int
s_lookup (gateway_t *self, const char *tenant, const char *id, gk_t *copy, err_t *err)
{
    pthread_mutex_lock (&self->lock);
    gk_t *k = s_valid_kid (id) ? s_find (self, tenant, id) : NULL;
    if (k)
        *copy = *k;
    pthread_mutex_unlock (&self->lock);
    if (!k)
        return err_set (err, 404, "not_found", "no kernel %.64s", id);
    json_t *ctx = NULL;
    err_t cerr = { 0 };
    int rc = contexts_get (self->ctxs, tenant, copy->sid, id, &ctx, &cerr);
    json_decref (ctx);
    if (rc < 0 && cerr.status == 404) {
        pthread_mutex_lock (&self->lock);
        k = s_find (self, tenant, id);
        if (k) {
            s_unlink (self, k);
            s_save (self);
        }
        pthread_mutex_unlock (&self->lock);
        log_info ("gateway kernel %s: its context is gone; dropped", id);
        return err_set (err, 404, "not_found", "no kernel %.64s", id);
    }
    if (rc < 0) {
        *err = cerr;
        return -1;
    }
    return 0;
}

static const char *
s_env_string (json_t *env, const char *key)
{
    json_t *v = json_is_object (env) ? json_object_get (env, key) : NULL;
    return json_is_string (v) ? json_string_value (v) : NULL;
}

static int
s_kernel_create (gateway_t *self, const char *tenant, json_t *body, json_t **out, err_t *err)
{
    const char *name = "python3", *sandbox = NULL;
    if (jsonv_string (body, "", "name", false, 64, &name, err) < 0
        || jsonv_string (body, "", "sandbox_id", false, 63, &sandbox, err) < 0)
        return -1;
    int spec = s_spec_index (name);
    if (spec < 0)
        return err_set (err, 404, "not_found",
                        "field 'name': no kernelspec %.64s (python3, javascript, typescript)",
                        name);
    json_t *env = json_object_get (body, "env");
    if (env && !json_is_object (env) && !json_is_null (env))
        return err_set (err, 400, "invalid_field", "field 'env': must be an object");
    if (!sandbox)
        sandbox = s_env_string (env, "KERNEL_SANDBOX_ID");
    if (sandbox && !util_valid_id (sandbox))
        return err_set (err, 400, "invalid_field",
                        "field 'env.KERNEL_SANDBOX_ID': not a sandbox id");

    /* What reaches the kernel: the front end's variables, minus the ones
       that only describe the front end's own machine. */
    json_t *kenv = json_object ();
    if (json_is_object (env)) {
        const char *key;
        json_t *v;
        json_object_foreach (env, key, v)
        {
            if (!strcmp (key, "KERNEL_SANDBOX_ID") || !strcmp (key, "KERNEL_WORKING_DIR"))
                continue;
            json_object_set (kenv, key, v);
        }
    }

    char kid[37];
    s_new_kid (kid);
    char sid[64];
    bool owned = !sandbox;
    if (owned) {
        snprintf (sid, sizeof sid, "gw-%s", kid);
        int64_t keep = self->cfg->max_keepalive_seconds;
        json_t *sbody = json_pack ("{s:s, s:I}", "id", sid, "keepalive_seconds", (json_int_t)keep);
        json_t *sout = NULL;
        int created = 0;
        int rc = sandbox_create (self->mgr, tenant, sbody, &sout, &created, err);
        json_decref (sbody);
        json_decref (sout);
        if (rc < 0) {
            json_decref (kenv);
            return -1;
        }
    }
    else {
        json_t *sout = NULL;
        int rc = sandbox_get (self->mgr, tenant, sandbox, &sout, err);
        json_decref (sout);
        if (rc < 0) {
            json_decref (kenv);
            return -1;
        }
        snprintf (sid, sizeof sid, "%s", sandbox);
    }

    json_t *cbody
        = json_pack ("{s:s, s:o}", "language", kernel_lang_name (s_specs[spec].lang), "env", kenv);
    json_t *cout = NULL;
    int rc = contexts_create_as (self->ctxs, tenant, sid, cbody, kid, &cout, err);
    json_decref (cbody);
    json_decref (cout);
    if (rc < 0) {
        if (owned) {
            err_t derr = { 0 };
            sandbox_delete (self->mgr, tenant, sid, &derr);
        }
        return -1;
    }

    gk_t *k = calloc (1, sizeof *k);
    if (!k) {
        err_t derr = { 0 };
        contexts_delete (self->ctxs, tenant, sid, kid, &derr);
        if (owned)
            sandbox_delete (self->mgr, tenant, sid, &derr);
        return err_set (err, 500, "internal", "out of memory");
    }
    snprintf (k->id, sizeof k->id, "%s", kid);
    snprintf (k->tenant, sizeof k->tenant, "%s", tenant);
    snprintf (k->sid, sizeof k->sid, "%s", sid);
    snprintf (k->name, sizeof k->name, "%s", s_specs[spec].name);
    k->owned = owned;
    k->last_activity = util_now_ms ();
    k->extended_at = util_mono_ms ();
    snprintf (k->state, sizeof k->state, "idle");
    pthread_mutex_lock (&self->lock);
    k->next = self->kernels;
    self->kernels = k;
    s_save (self);
    *out = s_model (k);
    pthread_mutex_unlock (&self->lock);
    log_info ("gateway kernel %s (%s) started for tenant %s in sandbox %s", kid, k->name, tenant,
              sid);
    return 0;
}

static json_t *
s_kernelspecs (void)
{
    json_t *specs = json_object ();
    for (size_t i = 0; i < NSPECS; i++)
        json_object_set_new (specs, s_specs[i].name,
                             json_pack ("{s:s, s:{s:[], s:s, s:s, s:s, s:{}, s:{}}, s:{}}", "name",
                                        s_specs[i].name, "spec", "argv", "display_name",
                                        s_specs[i].display, "language", s_specs[i].language,
                                        "interrupt_mode", "signal", "env", "metadata",
                                        "resources"));
    return json_pack ("{s:s, s:o}", "default", "python3", "kernelspecs", specs);
}

/* --- REST ------------------------------------------------------------------------------- */

bool
gateway_owns (const char *url)
{
    return !strcmp (url, "/api") || !strcmp (url, "/api/") || !strncmp (url, "/api/", 5)
           || !strncmp (url, "/kernelspecs/", 13);
}

/* Split url into at most max segments (empty ones dropped). */
static int
s_segments (const char *url, char seg[][64], int max)
{
    int n = 0;
    const char *p = url;
    while (*p) {
        while (*p == '/')
            p++;
        if (!*p)
            break;
        const char *e = strchr (p, '/');
        size_t len = e ? (size_t)(e - p) : strlen (p);
        if (n == max || len >= 64)
            return -1;
        memcpy (seg[n], p, len);
        seg[n][len] = '\0';
        n++;
        p += len;
    }
    return n;
}

int
gateway_channels_url (const char *url, char kid[37])
{
    char seg[5][64];
    int n = s_segments (url, seg, 5);
    if (n != 4 || strcmp (seg[0], "api") || strcmp (seg[1], "kernels")
        || strcmp (seg[3], "channels") || !s_valid_kid (seg[2]))
        return 0;
    snprintf (kid, 37, "%.36s", seg[2]);
    return 1;
}

static int
s_method (const char *method, const char *allowed, err_t *err)
{
    if (strstr (allowed, method))
        return 0;
    err_set (err, 405, "method_not_allowed", "use %s", allowed);
    return -1;
}

int
gateway_handle (gateway_t *self, const char *tenant, const char *method, const char *url,
                const char *body, size_t len, json_t **out, err_t *err)
{
    char seg[6][64];
    int n = s_segments (url, seg, 6);
    *out = NULL;
    if (n < 1)
        goto not_found;
    if (!strcmp (seg[0], "kernelspecs")) /* kernelspec resources (logos): none here */
        goto not_found;
    if (strcmp (seg[0], "api"))
        goto not_found;
    if (n == 1) {
        if (s_method (method, "GET", err) < 0)
            return err->status;
        *out = json_pack ("{s:s}", "version", PACKAGE_VERSION);
        return 200;
    }
    if (!strcmp (seg[1], "kernelspecs")) {
        if (n > 3)
            goto not_found;
        if (s_method (method, "GET", err) < 0)
            return err->status;
        json_t *all = s_kernelspecs ();
        if (n == 2) {
            *out = all;
            return 200;
        }
        json_t *one = json_object_get (json_object_get (all, "kernelspecs"), seg[2]);
        if (!one) {
            json_decref (all);
            err_set (err, 404, "not_found", "no kernelspec %.64s", seg[2]);
            return 404;
        }
        *out = json_incref (one);
        json_decref (all);
        return 200;
    }
    if (strcmp (seg[1], "kernels"))
        goto not_found;

    if (n == 2) {
        if (s_method (method, "GET, POST", err) < 0)
            return err->status;
        if (!strcmp (method, "GET")) {
            /* Drop entries whose context went away, then list. */
            char ids[256][37];
            int nids = 0;
            pthread_mutex_lock (&self->lock);
            for (gk_t *k = self->kernels; k && nids < 256; k = k->next)
                if (!k->deleting && !strcmp (k->tenant, tenant))
                    snprintf (ids[nids++], 37, "%s", k->id);
            pthread_mutex_unlock (&self->lock);
            json_t *arr = json_array ();
            for (int i = 0; i < nids; i++) {
                gk_t copy;
                err_t lerr = { 0 };
                if (s_lookup (self, tenant, ids[i], &copy, &lerr) == 0)
                    json_array_append_new (arr, s_model (&copy));
            }
            *out = arr;
            return 200;
        }
        json_t *req = jsonv_parse_object (body, len, true, err);
        if (!req)
            return err->status;
        int rc = s_kernel_create (self, tenant, req, out, err);
        json_decref (req);
        return rc < 0 ? err->status : 201;
    }

    if (!s_valid_kid (seg[2]) || n > 4)
        goto not_found;
    const char *id = seg[2];
    gk_t copy;
    if (n == 4 && !strcmp (seg[3], "channels")) {
        if (s_method (method, "GET", err) < 0)
            return err->status;
        if (s_lookup (self, tenant, id, &copy, err) < 0)
            return err->status;
        err_set (err, 400, "upgrade_required",
                 "the channels endpoint is a websocket: send Upgrade: websocket");
        return 400;
    }
    if (n == 4 && strcmp (seg[3], "interrupt") && strcmp (seg[3], "restart"))
        goto not_found;
    if (s_method (method, n == 3 ? "GET, DELETE" : "POST", err) < 0)
        return err->status;
    if (s_lookup (self, tenant, id, &copy, err) < 0)
        return err->status;

    if (n == 3 && !strcmp (method, "GET")) {
        *out = s_model (&copy);
        return 200;
    }
    if (n == 3) { /* DELETE */
        pthread_mutex_lock (&self->lock);
        gk_t *k = s_find (self, tenant, id);
        if (k)
            k->deleting = true;
        pthread_mutex_unlock (&self->lock);
        if (!k)
            goto not_found;
        if (s_kernel_delete (self, k, err) < 0)
            return err->status;
        log_info ("gateway kernel %s deleted by tenant %s", id, tenant);
        return 204;
    }
    s_touch (self, tenant, id, NULL);
    if (!strcmp (seg[3], "interrupt")) {
        if (contexts_interrupt (self->ctxs, tenant, copy.sid, id, err) < 0)
            return err->status;
        return 204;
    }
    /* restart */
    json_t *ctx = NULL;
    if (contexts_restart (self->ctxs, tenant, copy.sid, id, &ctx, err) < 0)
        return err->status;
    json_decref (ctx);
    pthread_mutex_lock (&self->lock);
    gk_t *k = s_find (self, tenant, id);
    if (k)
        k->restarts++;
    pthread_mutex_unlock (&self->lock);
    s_touch (self, tenant, id, "idle");
    if (s_lookup (self, tenant, id, &copy, err) < 0)
        return err->status;
    *out = s_model (&copy);
    return 200;

not_found:
    err_set (err, 404, "not_found", "no such route");
    return 404;
}

/* --- culling ---------------------------------------------------------------------------- */

static void *
s_cull_thread (void *arg)
{
    gateway_t *self = arg;
    pthread_mutex_lock (&self->lock);
    while (!self->closing) {
        struct timespec until;
        clock_gettime (CLOCK_REALTIME, &until);
        until.tv_sec += self->cfg->gateway_cull_interval_seconds;
        pthread_cond_timedwait (&self->wake, &self->lock, &until);
        if (self->closing || self->cfg->gateway_idle_timeout_seconds <= 0)
            continue;
        int64_t limit = util_now_ms () - self->cfg->gateway_idle_timeout_seconds * 1000;
        gk_t *victim = NULL;
        for (gk_t *k = self->kernels; k; k = k->next)
            if (!k->deleting && k->connections == 0 && k->last_activity < limit) {
                victim = k;
                break;
            }
        if (!victim)
            continue;
        victim->deleting = true;
        char id[37], tenant[64];
        snprintf (id, sizeof id, "%s", victim->id);
        snprintf (tenant, sizeof tenant, "%s", victim->tenant);
        pthread_mutex_unlock (&self->lock);
        err_t err = { 0 };
        if (s_kernel_delete (self, victim, &err) < 0)
            log_warn ("gateway kernel %s: culling failed: %s", id, err.message);
        else
            log_info ("gateway kernel %s of tenant %s culled after %lld s idle", id, tenant,
                      (long long)self->cfg->gateway_idle_timeout_seconds);
        pthread_mutex_lock (&self->lock);
        /* Look again at once: there may be more. */
        pthread_cond_signal (&self->wake);
    }
    pthread_mutex_unlock (&self->lock);
    return NULL;
}

gateway_t *
gateway_new (const config_t *cfg, sandbox_mgr_t *mgr, contexts_t *ctxs, err_t *err)
{
    gateway_t *self = calloc (1, sizeof *self);
    if (!self) {
        err_set (err, 500, "internal", "out of memory");
        return NULL;
    }
    self->cfg = cfg;
    self->mgr = mgr;
    self->ctxs = ctxs;
    pthread_mutex_init (&self->lock, NULL);
    pthread_cond_init (&self->wake, NULL);
    snprintf (self->path, sizeof self->path, "%s/gateway.json", cfg->state_dir);
    s_load (self);
    if (pthread_create (&self->culler, NULL, s_cull_thread, self) == 0)
        self->culler_started = true;
    else
        log_warn ("gateway: cannot start the cull thread");
    return self;
}

void
gateway_shutdown (gateway_t *self)
{
    pthread_mutex_lock (&self->lock);
    __atomic_store_n (&self->closing, true, __ATOMIC_RELAXED);
    pthread_cond_broadcast (&self->wake);
    pthread_mutex_unlock (&self->lock);
}

void
gateway_destroy (gateway_t **self_p)
{
    gateway_t *self = *self_p;
    if (!self)
        return;
    *self_p = NULL;
    gateway_shutdown (self);
    if (self->culler_started)
        pthread_join (self->culler, NULL);
    while (self->kernels) {
        gk_t *k = self->kernels;
        self->kernels = k->next;
        free (k);
    }
    pthread_cond_destroy (&self->wake);
    pthread_mutex_destroy (&self->lock);
    free (self);
}

/* --- the channels websocket ------------------------------------------------------------ */

gateway_ws_t *
gateway_ws_prepare (gateway_t *self, const char *tenant, const char *kid, err_t *err)
{
    gk_t copy;
    if (s_lookup (self, tenant, kid, &copy, err) < 0)
        return NULL;
    gateway_ws_t *ws = calloc (1, sizeof *ws);
    if (!ws) {
        err_set (err, 500, "internal", "out of memory");
        return NULL;
    }
    ws->gw = self;
    snprintf (ws->id, sizeof ws->id, "%s", kid);
    snprintf (ws->tenant, sizeof ws->tenant, "%s", tenant);
    snprintf (ws->sid, sizeof ws->sid, "%s", copy.sid);
    return ws;
}

void
gateway_ws_free (gateway_ws_t **ws_p)
{
    free (*ws_p);
    *ws_p = NULL;
}

static void
s_connections (gateway_t *self, const char *tenant, const char *id, int delta)
{
    pthread_mutex_lock (&self->lock);
    gk_t *k = s_find (self, tenant, id);
    if (k) {
        k->connections += delta;
        k->last_activity = util_now_ms ();
    }
    pthread_mutex_unlock (&self->lock);
}

/* A channel to the kernel, live once returned (or NULL with *err). */
static kernel_chan_t *
s_open_chan (gateway_ws_t *ws, uint64_t *gen, err_t *err)
{
    kernel_chan_t *chan
        = contexts_channel_open (ws->gw->ctxs, ws->tenant, ws->sid, ws->id, gen, err);
    if (chan && kernel_chan_handshake (chan, GW_HANDSHAKE_MS) < 0)
        log_warn ("gateway kernel %s: no kernel_info answer within %d ms; relaying anyway", ws->id,
                  GW_HANDSHAKE_MS);
    return chan;
}

static unsigned
s_restarts (gateway_t *self, const char *tenant, const char *id)
{
    pthread_mutex_lock (&self->lock);
    gk_t *k = s_find (self, tenant, id);
    unsigned n = k ? k->restarts : 0;
    pthread_mutex_unlock (&self->lock);
    return n;
}

/* jupyter_server's binary websocket message: u32 count of parts, u32
   offsets of each part, then the parts: the JSON message, then buffers. */
static json_t *
s_parse_binary (const unsigned char *p, size_t len, jupyter_msg_t *m, err_t *err)
{
    if (len < 8)
        goto bad;
    uint32_t nparts = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    if (nparts < 1 || nparts > JUPYTER_MAX_BUFFERS + 1 || len < 4 + 4 * (size_t)nparts)
        goto bad;
    size_t off[JUPYTER_MAX_BUFFERS + 2];
    for (uint32_t i = 0; i < nparts; i++) {
        const unsigned char *q = p + 4 + 4 * i;
        off[i] = (uint32_t)q[0] << 24 | (uint32_t)q[1] << 16 | (uint32_t)q[2] << 8 | q[3];
        if (off[i] < 4 + 4 * (size_t)nparts || off[i] > len || (i && off[i] < off[i - 1]))
            goto bad;
    }
    off[nparts] = len;
    json_error_t jerr;
    json_t *msg
        = json_loadb ((const char *)p + off[0], off[1] - off[0], JSON_REJECT_DUPLICATES, &jerr);
    if (!msg)
        goto bad;
    for (uint32_t i = 1; i < nparts; i++) {
        size_t blen = off[i + 1] - off[i];
        void *b = malloc (blen ? blen : 1);
        if (!b) {
            json_decref (msg);
            err_set (err, 500, "internal", "out of memory");
            return NULL;
        }
        memcpy (b, p + off[i], blen);
        m->buffers[m->nbuffers] = b;
        m->buffers_len[m->nbuffers++] = blen;
    }
    return msg;
bad:
    err_set (err, 400, "invalid_message", "malformed binary websocket message");
    return NULL;
}

/* One message from the front end: checked, signed, sent to the kernel.
   -1 only for failures that end the connection (none so far: bad messages
   are dropped and logged, as a Jupyter server does). */
static void
s_from_front (gateway_ws_t *ws, kernel_chan_t *chan, int op, const unsigned char *data, size_t len)
{
    jupyter_msg_t m;
    memset (&m, 0, sizeof m);
    err_t err = { 0 };
    json_t *msg = NULL;
    if (op == WS_OP_TEXT) {
        json_error_t jerr;
        msg = json_loadb ((const char *)data, len, JSON_REJECT_DUPLICATES, &jerr);
        if (!msg)
            err_set (&err, 400, "invalid_message", "not JSON: %s", jerr.text);
    }
    else
        msg = s_parse_binary (data, len, &m, &err);
    const char *channel = NULL, *msg_id = NULL, *msg_type = NULL;
    json_t *header = NULL;
    if (msg && !json_is_object (msg))
        err_set (&err, 400, "invalid_message", "a message must be a JSON object");
    else if (msg) {
        header = json_object_get (msg, "header");
        channel = json_string_value (json_object_get (msg, "channel"));
        if (!channel
            || (strcmp (channel, "shell") && strcmp (channel, "control")
                && strcmp (channel, "stdin")))
            err_set (&err, 400, "invalid_message",
                     "field 'channel': must be shell, control or stdin");
        else if (!json_is_object (header)
                 || !(msg_id = json_string_value (json_object_get (header, "msg_id")))
                 || !(msg_type = json_string_value (json_object_get (header, "msg_type")))
                 || strlen (msg_id) > 256 || strlen (msg_type) > 64)
            err_set (&err, 400, "invalid_message",
                     "field 'header': an object with string msg_id and msg_type");
        else {
            static const char *const parts[] = { "parent_header", "metadata", "content" };
            json_t **slots[] = { &m.parent_header, &m.metadata, &m.content };
            m.header = json_incref (header);
            for (int i = 0; i < 3 && !err.status; i++) {
                json_t *v = json_object_get (msg, parts[i]);
                if (v && !json_is_object (v) && !json_is_null (v))
                    err_set (&err, 400, "invalid_message", "field '%s': must be an object",
                             parts[i]);
                else
                    *slots[i] = json_is_object (v) ? json_incref (v) : json_object ();
            }
        }
    }
    if (!err.status && kernel_chan_send (chan, channel, &m, &err) == 0)
        s_touch (ws->gw, ws->tenant, ws->id, NULL);
    if (err.status)
        log_info ("gateway kernel %s: a front-end message was dropped: %s", ws->id, err.message);
    json_decref (msg);
    json_decref (m.header);
    json_decref (m.parent_header);
    json_decref (m.metadata);
    json_decref (m.content);
    for (int i = 0; i < m.nbuffers; i++)
        free (m.buffers[i]);
}

/* One kernel message to the front end, as JSON text (binary form when it
   has buffers). -1 when the front end does not take it. */
static int
s_to_front (gateway_ws_t *ws, ws_t *sock, const char *channel, jupyter_msg_t *m)
{
    json_t *msg = json_pack ("{s:O, s:O, s:O, s:O, s:s, s:s, s:s, s:[]}", "header", m->header,
                             "parent_header", m->parent_header, "metadata", m->metadata, "content",
                             m->content, "channel", channel, "msg_id", jupyter_msg_id (m),
                             "msg_type", jupyter_msg_type (m), "buffers");
    char *text = msg ? jsonv_dumps (msg) : NULL;
    json_decref (msg);
    if (!text)
        return 0; /* nothing sensible to send; drop it */
    int rc;
    size_t tlen = strlen (text);
    if (m->nbuffers == 0)
        rc = ws_send (sock, WS_OP_TEXT, text, tlen, GW_SEND_TIMEOUT);
    else {
        int nparts = m->nbuffers + 1;
        size_t total = 4 + 4 * (size_t)nparts + tlen;
        for (int i = 0; i < m->nbuffers; i++)
            total += m->buffers_len[i];
        unsigned char *buf = malloc (total);
        if (!buf) {
            free (text);
            return 0;
        }
        size_t off = 4 + 4 * (size_t)nparts, pos = off;
        buf[0] = (unsigned char)(nparts >> 24);
        buf[1] = (unsigned char)(nparts >> 16);
        buf[2] = (unsigned char)(nparts >> 8);
        buf[3] = (unsigned char)nparts;
        for (int i = 0; i < nparts; i++) {
            size_t plen = i == 0 ? tlen : m->buffers_len[i - 1];
            const void *src = i == 0 ? (const void *)text : m->buffers[i - 1];
            unsigned char *o = buf + 4 + 4 * i;
            o[0] = (unsigned char)(pos >> 24);
            o[1] = (unsigned char)(pos >> 16);
            o[2] = (unsigned char)(pos >> 8);
            o[3] = (unsigned char)pos;
            memcpy (buf + pos, src, plen);
            pos += plen;
        }
        rc = ws_send (sock, WS_OP_BINARY, buf, total, GW_SEND_TIMEOUT);
        free (buf);
    }
    free (text);
    if (!strcmp (channel, "iopub") && !strcmp (jupyter_msg_type (m), "status")) {
        const char *state = json_string_value (json_object_get (m->content, "execution_state"));
        if (state && strlen (state) < 16)
            s_touch (ws->gw, ws->tenant, ws->id, state);
    }
    else
        s_touch (ws->gw, ws->tenant, ws->id, NULL);
    return rc;
}

/* An iopub status message of the broker's own (the kernel's restarter in
   a Jupyter server sends these when a kernel dies). */
static int
s_send_status (gateway_ws_t *ws, ws_t *sock, const char *state)
{
    char mid[33], date[48];
    util_random_hex (mid, 16);
    s_jupyter_time (util_now_ms (), date, sizeof date);
    json_t *msg = json_pack ("{s:{s:s, s:s, s:s, s:s, s:s, s:s}, s:{}, s:{}, s:{s:s}, s:s, s:s, "
                             "s:s, s:[]}",
                             "header", "msg_id", mid, "msg_type", "status", "session", ws->id,
                             "username", "sandboxd", "date", date, "version", "5.3",
                             "parent_header", "metadata", "content", "execution_state", state,
                             "channel", "iopub", "msg_id", mid, "msg_type", "status", "buffers");
    char *text = msg ? jsonv_dumps (msg) : NULL;
    json_decref (msg);
    int rc = text ? ws_send (sock, WS_OP_TEXT, text, strlen (text), GW_SEND_TIMEOUT) : 0;
    free (text);
    s_touch (ws->gw, ws->tenant, ws->id, !strcmp (state, "starting") ? "idle" : state);
    return rc;
}

void
gateway_ws_run (gateway_ws_t *ws, int fd, const char *extra, size_t extra_len)
{
    gateway_t *self = ws->gw;
    int fl = fcntl (fd, F_GETFL);
    if (fl >= 0)
        fcntl (fd, F_SETFL, fl | O_NONBLOCK);
    ws_t *sock = ws_new (fd, GATEWAY_MAX_MESSAGE);
    if (!sock) {
        gateway_ws_free (&ws);
        return;
    }
    if (extra_len)
        ws_feed (sock, extra, extra_len);
    s_connections (self, ws->tenant, ws->id, +1);
    log_info ("gateway kernel %s: websocket connected", ws->id);

    uint64_t gen = 0;
    err_t err = { 0 };
    kernel_chan_t *chan = s_open_chan (ws, &gen, &err);
    int close_code = 1000;
    const char *why = "kernel closed";
    if (!chan) {
        close_code = 1011;
        why = "kernel unavailable";
        log_warn ("gateway kernel %s: %s", ws->id, err.message);
    }
    unsigned restarts = s_restarts (self, ws->tenant, ws->id);
    int64_t next_check = util_mono_ms () + GW_CHECK_MS;
    bool open = chan != NULL, peer_closed = false;
    while (open) {
        if (__atomic_load_n (&self->closing, __ATOMIC_RELAXED)) {
            close_code = 1001;
            why = "broker stopping";
            break;
        }
        int mask = kernel_chan_poll (chan, fd, GW_CHECK_MS / 2);
        if (mask & 1 || extra_len) {
            extra_len = 0;
            if (ws_fill (sock) < 0) {
                peer_closed = true;
                break;
            }
            int op, code = 0;
            const unsigned char *data;
            size_t len;
            int r;
            while (open && (r = ws_next (sock, &op, &data, &len, &code)) == 1) {
                /* A restart through the REST API has finished before its
                   client sends more: follow it before relaying anything. */
                if (s_restarts (self, ws->tenant, ws->id) != restarts) {
                    restarts = s_restarts (self, ws->tenant, ws->id);
                    kernel_chan_close (&chan);
                    chan = s_open_chan (ws, &gen, &err);
                    if (!chan) {
                        close_code = 1011;
                        why = "kernel unavailable";
                        open = false;
                        break;
                    }
                }
                if (op == WS_OP_CLOSE) {
                    close_code = len >= 2 ? (data[0] << 8 | data[1]) : 1000;
                    if (close_code < 1000 || close_code >= 5000)
                        close_code = 1000;
                    why = "";
                    open = false;
                }
                else if (op == WS_OP_PING)
                    open = ws_send (sock, WS_OP_PONG, data, len, GW_SEND_TIMEOUT) == 0;
                else if (op == WS_OP_TEXT || op == WS_OP_BINARY)
                    s_from_front (ws, chan, op, data, len);
            }
            if (open && r < 0) {
                close_code = code;
                why = code == 1009 ? "message too big" : "protocol error";
                log_info ("gateway kernel %s: closing the websocket: %s", ws->id, why);
                open = false;
            }
        }
        for (int i = 0; open && i < GW_MAX_RELAY_MSGS; i++) {
            const char *channel = NULL;
            jupyter_msg_t *m = kernel_chan_recv (chan, &channel, &err);
            if (!m)
                break;
            if (s_to_front (ws, sock, channel, m) < 0) {
                peer_closed = true;
                open = false;
            }
            jupyter_msg_destroy (&m);
        }
        if (open && util_mono_ms () >= next_check) {
            next_check = util_mono_ms () + GW_CHECK_MS;
            int st = contexts_channel_check (self->ctxs, ws->tenant, ws->sid, ws->id, gen);
            if (st < 0) {
                why = "kernel deleted";
                open = false;
            }
            else if (st > 0) {
                /* Restarted, or died and is started again: follow it. A
                   restart the front end asked for through REST needs no
                   word; for anything else, say what Jupyter's restarter
                   says ("restarting", then "starting"), so that the front
                   end shows the kernel died and asks for kernel_info. */
                unsigned now_restarts = s_restarts (self, ws->tenant, ws->id);
                bool announce = now_restarts == restarts;
                restarts = now_restarts;
                if (announce && s_send_status (ws, sock, "restarting") < 0) {
                    peer_closed = true;
                    break;
                }
                kernel_chan_close (&chan);
                chan = s_open_chan (ws, &gen, &err);
                if (!chan) {
                    close_code = 1011;
                    why = "kernel unavailable";
                    open = false;
                }
                else {
                    log_info ("gateway kernel %s: websocket follows the new kernel", ws->id);
                    if (announce && s_send_status (ws, sock, "starting") < 0) {
                        peer_closed = true;
                        break;
                    }
                }
            }
        }
    }
    if (!peer_closed)
        ws_send_close (sock, close_code, why);
    kernel_chan_close (&chan);
    ws_destroy (&sock);
    s_connections (self, ws->tenant, ws->id, -1);
    log_info ("gateway kernel %s: websocket closed", ws->id);
    gateway_ws_free (&ws);
}
