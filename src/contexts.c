/* contexts.c - code contexts, the per-sandbox warm pool, and runCode.

   One mutex (self->lock) guards the tables: sandboxes, their contexts and
   pools, and every kernel pointer swap. Kernel work (start, execute,
   destroy) never happens under it. Each context also has a FIFO ticket
   lock that serialises its runs, restarts and deletion in arrival order.
   Contexts and sandbox entries are reference counted, so a sandbox or a
   context can go away while a run on it is still finishing. */
#include "contexts.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jsonv.h"

#define MAX_LANGS       3
#define STATE_FILE      "contexts.json"
#define STATE_MAX_BYTES (8 * 1024 * 1024)
#define FILL_WAIT_S     5 /* longest wait for a warm kernel being started */

typedef struct ctx ctx_t;
typedef struct sbox sbox_t;

struct ctx {
    char id[64];
    kernel_lang_t lang;
    char cwd[4096];
    json_t *env;
    int64_t created_at;
    kernel_t *kernel; /* NULL: dead or never started; started on next use */
    uint64_t gen;     /* bumped each time kernel is set to a new kernel */
    bool restarted;
    bool busy;
    bool deleted;
    int refs;
    sbox_t *box;
    /* FIFO ticket lock */
    pthread_cond_t turn;
    unsigned long next_ticket, serving;
};

struct sbox {
    char cid[64];
    char dir[1200];
    ctx_t **ctxs;
    size_t nctxs;
    kernel_t **pool[MAX_LANGS];
    size_t npool[MAX_LANGS];
    int filling[MAX_LANGS]; /* kernels being started for the pool */
    /* contexts.json writes: snapshots are numbered under self->lock and
       written under save_lock, an older one never over a newer one. */
    pthread_mutex_t save_lock;
    uint64_t save_gen, saved_gen;
    bool recovering; /* contexts being given back after a restart: callers wait */
    bool gone;
    int refs;
    sbox_t *next;
};

struct _contexts_t {
    sandbox_mgr_t *mgr;
    const config_t *cfg;
    pthread_mutex_t lock;
    pthread_cond_t filled; /* a pool start finished (with or without a kernel) */
    int fills;             /* pool start threads running */
    int runs;              /* code runs prepared and not yet freed */
    bool closing;
    sbox_t *boxes;
};

struct _code_run_t {
    contexts_t *owner;
    ctx_t *ctx;
    char *code;
    int64_t timeout_ms;
    mime_image_opts_t img;
};

/* --- tables (all under self->lock) ----------------------------------------- */

static sbox_t *
s_box_find (contexts_t *self, const char *cid)
{
    for (sbox_t *b = self->boxes; b; b = b->next)
        if (!b->gone && !strcmp (b->cid, cid))
            return b;
    return NULL;
}

static sbox_t *
s_box_get (contexts_t *self, const char *cid)
{
    sbox_t *b = s_box_find (self, cid);
    if (b)
        return b;
    b = calloc (1, sizeof *b);
    if (!b)
        return NULL;
    snprintf (b->cid, sizeof b->cid, "%s", cid);
    sandbox_mgr_dir (self->mgr, cid, b->dir, sizeof b->dir);
    pthread_mutex_init (&b->save_lock, NULL);
    b->refs = 1; /* the table's */
    b->next = self->boxes;
    self->boxes = b;
    return b;
}

static void
s_box_unref (contexts_t *self, sbox_t *b)
{
    if (--b->refs > 0)
        return;
    for (sbox_t **p = &self->boxes; *p; p = &(*p)->next)
        if (*p == b) {
            *p = b->next;
            break;
        }
    for (int l = 0; l < MAX_LANGS; l++)
        free (b->pool[l]);
    pthread_mutex_destroy (&b->save_lock);
    free (b->ctxs);
    free (b);
}

static ctx_t *
s_ctx_find (sbox_t *b, const char *id)
{
    for (size_t i = 0; i < b->nctxs; i++)
        if (!strcmp (b->ctxs[i]->id, id))
            return b->ctxs[i];
    return NULL;
}

/* Drop a reference; the last one frees the context (and its kernel, which
   the caller must have taken out first if it wants to destroy it outside
   the lock). */
static kernel_t *
s_ctx_unref (contexts_t *self, ctx_t *c)
{
    if (--c->refs > 0)
        return NULL;
    kernel_t *k = c->kernel;
    sbox_t *b = c->box;
    json_decref (c->env);
    pthread_cond_destroy (&c->turn);
    free (c);
    s_box_unref (self, b);
    return k;
}

static void
s_ctx_detach (sbox_t *b, ctx_t *c)
{
    for (size_t i = 0; i < b->nctxs; i++)
        if (b->ctxs[i] == c) {
            b->ctxs[i] = b->ctxs[--b->nctxs];
            return;
        }
}

static json_t *
s_ctx_json (const ctx_t *c)
{
    char ts[40];
    const char *status = c->busy ? "busy" : c->kernel ? "idle" : "stopped";
    return json_pack ("{s:s, s:s, s:s, s:s, s:b, s:s, s:O}", "id", c->id, "language",
                      kernel_lang_name (c->lang), "cwd", c->cwd, "status", status, "restarted",
                      c->restarted, "created_at", util_iso8601 (c->created_at, ts, sizeof ts),
                      "env", c->env);
}

/* --- persistence: <sandbox dir>/contexts.json ------------------------------------ */

/* What a restarted broker needs to give every context back, kernel
   included (see s_recover). Called with the lock held. */
static json_t *
s_state_json (const sbox_t *b)
{
    json_t *arr = json_array ();
    for (size_t i = 0; i < b->nctxs; i++) {
        const ctx_t *c = b->ctxs[i];
        json_t *k = c->kernel
                        ? json_pack ("{s:s, s:i, s:s}", "id", kernel_id (c->kernel), "pid",
                                     kernel_pid (c->kernel), "key", kernel_key_hex (c->kernel))
                        : json_null ();
        json_array_append_new (
            arr, json_pack ("{s:s, s:s, s:s, s:O, s:I, s:b, s:o}", "id", c->id, "language",
                            kernel_lang_name (c->lang), "cwd", c->cwd, "env", c->env, "created_at",
                            (json_int_t)c->created_at, "restarted", c->restarted, "kernel", k));
    }
    return json_pack ("{s:i, s:o}", "version", 1, "contexts", arr);
}

static int
s_write_error (err_t *err, int errnum, const char *what)
{
    if (errnum == ENOSPC || errnum == EDQUOT)
        return err_set (err, 507, "insufficient_storage", "%s: the state directory is full", what);
    if (errnum == EROFS)
        return err_set (err, 503, "read_only", "%s: the state directory is read-only", what);
    return err_set (err, 500, "internal", "%s: %s", what, strerror (errnum));
}

/* Write b's contexts to its state file (root-only, in the sandbox's host
   directory, never inside the container). Called without the lock. */
static int
s_save (contexts_t *self, sbox_t *b, err_t *err)
{
    pthread_mutex_lock (&self->lock);
    if (b->gone) {
        pthread_mutex_unlock (&self->lock);
        return 0;
    }
    json_t *st = s_state_json (b);
    uint64_t gen = ++b->save_gen;
    b->refs++;
    pthread_mutex_unlock (&self->lock);
    char *text = json_dumps (st, JSON_COMPACT);
    json_decref (st);
    char path[1300];
    snprintf (path, sizeof path, "%s/%s", b->dir, STATE_FILE);
    int rc = 0;
    pthread_mutex_lock (&b->save_lock);
    if (!text)
        rc = err_set (err, 500, "internal", "out of memory");
    else if (gen > b->saved_gen) {
        if (util_write_file_atomic (path, text, strlen (text), 0600) == 0)
            b->saved_gen = gen;
        else {
            int e = errno;
            rc = s_write_error (err, e, "saving the contexts");
            log_warn ("sandbox cid=%s: writing %s: %s", b->cid, path, strerror (e));
        }
    }
    pthread_mutex_unlock (&b->save_lock);
    free (text);
    pthread_mutex_lock (&self->lock);
    s_box_unref (self, b);
    pthread_mutex_unlock (&self->lock);
    return rc;
}

/* The same where nothing can be undone: a failure is logged only. */
static void
s_save_quiet (contexts_t *self, sbox_t *b)
{
    err_t err = { 0 };
    s_save (self, b, &err);
}

/* --- FIFO turn per context ---------------------------------------------------- */

static void
s_turn_take (contexts_t *self, ctx_t *c)
{
    unsigned long ticket = c->next_ticket++;
    while (c->serving != ticket)
        pthread_cond_wait (&c->turn, &self->lock);
}

static void
s_turn_give (ctx_t *c)
{
    c->serving++;
    pthread_cond_broadcast (&c->turn);
}

/* --- kernels: pool and starts --------------------------------------------------- */

typedef struct {
    contexts_t *self;
    sbox_t *box;
    kernel_lang_t lang;
} fill_t;

static int64_t
s_pool_target (contexts_t *self, kernel_lang_t lang)
{
    switch (lang) {
    case KERNEL_PYTHON:
        return self->cfg->warm_kernels_python;
    case KERNEL_JAVASCRIPT:
        return self->cfg->warm_kernels_javascript;
    case KERNEL_TYPESCRIPT:
        return self->cfg->warm_kernels_typescript;
    }
    return 0;
}

static void *
s_fill_thread (void *arg)
{
    fill_t *f = arg;
    contexts_t *self = f->self;
    err_t err = { 0 };
    kernel_t *k
        = kernel_start (sandbox_mgr_link (self->mgr), f->box->cid, f->box->dir, f->lang, &err);
    if (!k)
        log_warn ("sandbox cid=%s: warm %s kernel failed: %s", f->box->cid,
                  kernel_lang_name (f->lang), err.message);
    pthread_mutex_lock (&self->lock);
    f->box->filling[f->lang]--;
    self->fills--;
    pthread_cond_broadcast (&self->filled);
    if (k && !f->box->gone) {
        kernel_t **grown
            = realloc (f->box->pool[f->lang], (f->box->npool[f->lang] + 1) * sizeof *grown);
        if (grown) {
            f->box->pool[f->lang] = grown;
            grown[f->box->npool[f->lang]++] = k;
            k = NULL;
        }
    }
    s_box_unref (self, f->box);
    pthread_mutex_unlock (&self->lock);
    kernel_destroy (&k);
    free (f);
    return NULL;
}

/* Start background kernels until the pool of lang is at its target
   (called with the lock held). */
static void
s_pool_fill (contexts_t *self, sbox_t *b, kernel_lang_t lang)
{
    int64_t want = s_pool_target (self, lang);
    while (!b->gone && !self->closing && (int64_t)b->npool[lang] + b->filling[lang] < want) {
        fill_t *f = calloc (1, sizeof *f);
        pthread_t t;
        pthread_attr_t attr;
        if (!f)
            return;
        f->self = self;
        f->box = b;
        f->lang = lang;
        b->refs++;
        b->filling[lang]++;
        self->fills++;
        pthread_attr_init (&attr);
        pthread_attr_setdetachstate (&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create (&t, &attr, s_fill_thread, f) != 0) {
            b->refs--;
            b->filling[lang]--;
            self->fills--;
            free (f);
            pthread_attr_destroy (&attr);
            return;
        }
        pthread_attr_destroy (&attr);
    }
}

/* A kernel for context c: from the pool when one is ready, else started
   now. Then moved to c's cwd and env. Called without the lock, holding
   c's turn. */
static kernel_t *
s_kernel_for (contexts_t *self, ctx_t *c, err_t *err)
{
    kernel_t *k = NULL;
    pthread_mutex_lock (&self->lock);
    sbox_t *b = c->box;
    struct timespec until;
    clock_gettime (CLOCK_REALTIME, &until);
    until.tv_sec += FILL_WAIT_S;
    for (;;) {
        while (b->npool[c->lang] > 0 && !k) {
            k = b->pool[c->lang][--b->npool[c->lang]];
            pthread_mutex_unlock (&self->lock);
            if (!kernel_heartbeat (k, 1000))
                kernel_destroy (&k);
            pthread_mutex_lock (&self->lock);
        }
        /* A warm kernel already on its way beats starting a second one. */
        if (k || b->filling[c->lang] == 0 || b->gone)
            break;
        /* ... unless it takes unusually long (a sandbox restarting under
           it): then this run starts its own. */
        if (pthread_cond_timedwait (&self->filled, &self->lock, &until) == ETIMEDOUT)
            break;
    }
    s_pool_fill (self, b, c->lang);
    bool gone = b->gone;
    pthread_mutex_unlock (&self->lock);
    if (gone) {
        kernel_destroy (&k);
        err_set (err, 404, "not_found", "the sandbox was deleted");
        return NULL;
    }
    if (!k)
        k = kernel_start (sandbox_mgr_link (self->mgr), b->cid, b->dir, c->lang, err);
    if (!k)
        return NULL;

    /* Every context starts in its own cwd and env, pooled kernel or not;
       kernels start in /workspace with the base environment already. */
    if (!strcmp (c->cwd, "/workspace") && json_object_size (c->env) == 0)
        return k;
    json_t *cwd_str = json_string (c->cwd);
    char *cwd_lit = json_dumps (cwd_str, JSON_ENCODE_ANY | JSON_COMPACT);
    json_decref (cwd_str);
    char *env_lit = json_dumps (c->env, JSON_COMPACT);
    size_t n = (cwd_lit ? strlen (cwd_lit) : 0) + (env_lit ? strlen (env_lit) : 0) + 256;
    char *code = malloc (n);
    if (!cwd_lit || !env_lit || !code) {
        free (cwd_lit);
        free (env_lit);
        free (code);
        kernel_destroy (&k);
        err_set (err, 500, "internal", "out of memory");
        return NULL;
    }
    if (c->lang == KERNEL_PYTHON)
        snprintf (
            code, n,
            "import os as _sbx_os\n_sbx_os.chdir(%s)\n_sbx_os.environ.update(%s)\ndel _sbx_os\n",
            cwd_lit, env_lit);
    else
        snprintf (code, n, "process.chdir(%s); Object.assign(process.env, %s);", cwd_lit, env_lit);
    free (cwd_lit);
    free (env_lit);
    json_t *res = kernel_execute (k, code, true, 30000, 1 << 20, NULL, NULL, NULL, err);
    free (code);
    json_t *error = res ? json_object_get (res, "error") : NULL;
    if (!res || (error && !json_is_null (error))) {
        const char *v = error ? json_string_value (json_object_get (error, "value")) : NULL;
        if (res)
            err_set (err, 422, "bad_cwd", "cannot enter cwd %s: %s", c->cwd, v ? v : "error");
        json_decref (res);
        kernel_destroy (&k);
        return NULL;
    }
    json_decref (res);
    return k;
}

/* --- sandbox hooks --------------------------------------------------------------- */

static void s_recover (contexts_t *self, sbox_t *b);

typedef struct {
    contexts_t *self;
    sbox_t *box;
} recover_t;

/* Give a sandbox's contexts back in the background, so that the broker
   listens at once; requests on that sandbox's contexts wait meanwhile.
   Warm kernels come after: recovery kills every kernel it does not know. */
static void *
s_recover_thread (void *arg)
{
    recover_t *r = arg;
    contexts_t *self = r->self;
    s_recover (self, r->box);
    pthread_mutex_lock (&self->lock);
    r->box->recovering = false;
    for (int l = 0; l < MAX_LANGS; l++)
        s_pool_fill (self, r->box, (kernel_lang_t)l);
    s_box_unref (self, r->box);
    self->fills--;
    pthread_cond_broadcast (&self->filled);
    pthread_mutex_unlock (&self->lock);
    free (r);
    return NULL;
}

static void
s_on_started (void *arg, const char *cid, const char *dir, bool recovered)
{
    contexts_t *self = arg;
    pthread_mutex_lock (&self->lock);
    sbox_t *b = s_box_get (self, cid);
    recover_t *r = recovered && b ? calloc (1, sizeof *r) : NULL;
    if (r) {
        pthread_t t;
        pthread_attr_t attr;
        r->self = self;
        r->box = b;
        b->refs++;
        b->recovering = true;
        self->fills++;
        pthread_attr_init (&attr);
        pthread_attr_setdetachstate (&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create (&t, &attr, s_recover_thread, r) != 0) {
            b->refs--;
            b->recovering = false;
            self->fills--;
            free (r);
            r = NULL;
        }
        pthread_attr_destroy (&attr);
        if (r) {
            pthread_mutex_unlock (&self->lock);
            return;
        }
    }
    if (b)
        for (int l = 0; l < MAX_LANGS; l++)
            s_pool_fill (self, b, (kernel_lang_t)l);
    pthread_mutex_unlock (&self->lock);
}

/* Forget sandbox cid. Pool kernels are killed; contexts' kernels too, or
   with keep (the broker shutting down) only let go of, so that the next
   broker process re-attaches them. */
static void
s_drop_box (contexts_t *self, const char *cid, bool keep)
{
    pthread_mutex_lock (&self->lock);
    sbox_t *b = s_box_find (self, cid);
    if (!b) {
        pthread_mutex_unlock (&self->lock);
        return;
    }
    b->gone = true;
    pthread_cond_broadcast (&self->filled); /* runs waiting for a warm kernel */
    /* Pool kernels and idle contexts' kernels die with the container; free
       what we hold. Running contexts release theirs when their run ends. */
    kernel_t **doomed = NULL, **kept = NULL;
    size_t ndoomed = 0, nkept = 0;
    for (int l = 0; l < MAX_LANGS; l++) {
        for (size_t i = 0; i < b->npool[l]; i++) {
            kernel_t **g = realloc (doomed, (ndoomed + 1) * sizeof *g);
            if (g) {
                doomed = g;
                doomed[ndoomed++] = b->pool[l][i];
            }
        }
        b->npool[l] = 0;
    }
    while (b->nctxs > 0) {
        ctx_t *c = b->ctxs[0];
        c->deleted = true;
        s_ctx_detach (b, c);
        kernel_t *k = s_ctx_unref (self, c);
        if (k) {
            kernel_t ***list = keep ? &kept : &doomed;
            size_t *n = keep ? &nkept : &ndoomed;
            kernel_t **g = realloc (*list, (*n + 1) * sizeof *g);
            if (g) {
                *list = g;
                g[(*n)++] = k;
            }
        }
    }
    s_box_unref (self, b);
    pthread_mutex_unlock (&self->lock);
    for (size_t i = 0; i < ndoomed; i++)
        kernel_destroy_now (&doomed[i]);
    for (size_t i = 0; i < nkept; i++)
        kernel_close (&kept[i]);
    free (doomed);
    free (kept);
}

static void
s_on_stopped (void *arg, const char *cid, const char *dir, bool recovered)
{
    s_drop_box (arg, cid, false);
}

contexts_t *
contexts_new (sandbox_mgr_t *mgr, const config_t *cfg, err_t *err)
{
    contexts_t *self = calloc (1, sizeof *self);
    if (!self) {
        err_set (err, 500, "internal", "out of memory");
        return NULL;
    }
    self->mgr = mgr;
    self->cfg = cfg;
    pthread_mutex_init (&self->lock, NULL);
    pthread_cond_init (&self->filled, NULL);
    sandbox_mgr_add_hooks (mgr, s_on_started, s_on_stopped, self);
    return self;
}

void
contexts_destroy (contexts_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    contexts_t *self = *self_p;
    sandbox_mgr_remove_hooks (self->mgr, self);
    /* Wait for kernel starts and streamed runs in flight (their clients are
       gone, so they are being interrupted), then let every kernel go: pool
       kernels are killed, contexts' kernels keep running for the next
       broker process (contexts.json says how to reach them), and every
       socket is closed before the ZeroMQ context can end. Requests are no
       longer being served. */
    pthread_mutex_lock (&self->lock);
    self->closing = true;
    while (self->fills > 0 || self->runs > 0)
        pthread_cond_wait (&self->filled, &self->lock);
    char (*cids)[64] = NULL;
    size_t n = 0;
    for (sbox_t *b = self->boxes; b; b = b->next) {
        char (*g)[64] = realloc (cids, (n + 1) * sizeof *g);
        if (g) {
            cids = g;
            snprintf (cids[n++], 64, "%s", b->cid);
        }
    }
    pthread_mutex_unlock (&self->lock);
    for (size_t i = 0; i < n; i++)
        s_drop_box (self, cids[i], true);
    free (cids);
    pthread_cond_destroy (&self->filled);
    pthread_mutex_destroy (&self->lock);
    free (self);
    *self_p = NULL;
}

/* --- lookups ---------------------------------------------------------------------- */

/* Resolve (tenant, sid) to its sandbox entry with a reference taken. */
static sbox_t *
s_box_for_env (contexts_t *self, const char *tenant, const char *sid, json_t **env, err_t *err)
{
    char cid[64];
    if (sandbox_resolve (self->mgr, tenant, sid, cid, env, err) < 0)
        return NULL;
    pthread_mutex_lock (&self->lock);
    sbox_t *b = s_box_get (self, cid);
    if (b) {
        b->refs++;
        while (b->recovering)
            pthread_cond_wait (&self->filled, &self->lock);
    }
    pthread_mutex_unlock (&self->lock);
    if (!b)
        err_set (err, 500, "internal", "out of memory");
    return b;
}

static sbox_t *
s_box_for (contexts_t *self, const char *tenant, const char *sid, err_t *err)
{
    return s_box_for_env (self, tenant, sid, NULL, err);
}

/* Find a context with a reference taken, or 404. */
static ctx_t *
s_ctx_for (contexts_t *self, const char *tenant, const char *sid, const char *ctx_id, err_t *err)
{
    sbox_t *b = s_box_for (self, tenant, sid, err);
    if (!b)
        return NULL;
    pthread_mutex_lock (&self->lock);
    ctx_t *c = s_ctx_find (b, ctx_id);
    if (c)
        c->refs++;
    s_box_unref (self, b);
    pthread_mutex_unlock (&self->lock);
    if (!c)
        err_set (err, 404, "not_found", "context %.64s not found", ctx_id);
    return c;
}

static void
s_ctx_release (contexts_t *self, ctx_t *c)
{
    pthread_mutex_lock (&self->lock);
    kernel_t *k = s_ctx_unref (self, c);
    pthread_mutex_unlock (&self->lock);
    kernel_destroy (&k);
}

/* Make a new context (not started) in b, holding one reference for the
   caller. NULL with 409/429 when the id exists or the sandbox is full. */
static ctx_t *
s_ctx_new (contexts_t *self, sbox_t *b, const char *id, kernel_lang_t lang, const char *cwd,
           json_t *env, err_t *err)
{
    if ((int64_t)b->nctxs >= self->cfg->max_contexts_per_sandbox) {
        err_set (err, 429, "quota_exceeded", "the sandbox already has %zu contexts", b->nctxs);
        return NULL;
    }
    if (id && s_ctx_find (b, id)) {
        err_set (err, 409, "conflict", "context %.64s already exists", id);
        return NULL;
    }
    ctx_t *c = calloc (1, sizeof *c);
    ctx_t **grown = realloc (b->ctxs, (b->nctxs + 1) * sizeof *grown);
    if (!c || !grown) {
        free (c);
        if (grown)
            b->ctxs = grown;
        err_set (err, 500, "internal", "out of memory");
        return NULL;
    }
    b->ctxs = grown;
    if (id)
        snprintf (c->id, sizeof c->id, "%s", id);
    else {
        char rnd[17];
        util_random_hex (rnd, 8);
        snprintf (c->id, sizeof c->id, "ctx-%s", rnd);
    }
    c->lang = lang;
    snprintf (c->cwd, sizeof c->cwd, "%s", cwd);
    c->env = env ? json_deep_copy (env) : json_object ();
    c->created_at = util_now_ms ();
    pthread_cond_init (&c->turn, NULL);
    c->box = b;
    b->refs++;
    c->refs = 2; /* the table's and the caller's */
    b->ctxs[b->nctxs++] = c;
    return c;
}

/* After a broker restart: give back sandbox cid's contexts from its state
   file. Kernels that still run and answer are re-attached with their state;
   the others are killed and their contexts start a fresh kernel on next
   use, reporting restarted: true. Every other kernel (the pool's, ones
   being started when the broker died) is killed. */
static void
s_recover (contexts_t *self, sbox_t *b)
{
    const char *cid = b->cid, *dir = b->dir;
    char path[1300];
    snprintf (path, sizeof path, "%s/%s", dir, STATE_FILE);
    size_t len = 0;
    char *text = util_read_file (path, STATE_MAX_BYTES, &len);
    json_t *st = text ? json_loadb (text, len, 0, NULL) : NULL;
    free (text);
    json_t *arr = json_object_get (st, "contexts");
    if (text && !json_is_array (arr))
        log_warn ("sandbox cid=%s: %s is unreadable; its contexts are lost", cid, path);
    size_t n = json_is_array (arr) ? json_array_size (arr) : 0;
    const char **keep = calloc (n + 1, sizeof *keep);
    size_t nkeep = 0;
    for (size_t i = 0; keep && i < n; i++) {
        const char *kid = json_string_value (
            json_object_get (json_object_get (json_array_get (arr, i), "kernel"), "id"));
        if (kid)
            keep[nkeep++] = kid;
    }
    err_t err = { 0 };
    agent_link_t *link = sandbox_mgr_link (self->mgr);
    if (kernel_cleanup_stale (link, cid, keep, nkeep, &err) < 0)
        log_warn ("sandbox cid=%s: removing stale kernels: %s", cid, err.message);
    free (keep);
    size_t kept = 0, lost = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get (arr, i), *k = json_object_get (e, "kernel");
        const char *id = json_string_value (json_object_get (e, "id"));
        const char *language = json_string_value (json_object_get (e, "language"));
        const char *cwd = json_string_value (json_object_get (e, "cwd"));
        json_t *env = json_object_get (e, "env");
        kernel_lang_t lang;
        if (!id || strlen (id) > 63 || !language || kernel_lang_parse (language, &lang) < 0 || !cwd
            || cwd[0] != '/' || strlen (cwd) >= 4096 || !json_is_object (env)) {
            log_warn ("sandbox cid=%s: skipping a malformed context in %s", cid, path);
            continue;
        }
        kernel_t *kernel = NULL;
        if (json_is_object (k)) {
            err_t kerr = { 0 };
            json_t *pid = json_object_get (k, "pid");
            kernel = kernel_reattach (link, cid, dir, lang,
                                      json_string_value (json_object_get (k, "id")),
                                      json_is_integer (pid) ? (int)json_integer_value (pid) : -1,
                                      json_string_value (json_object_get (k, "key")), &kerr);
            if (!kernel)
                log_warn ("sandbox cid=%s context=%s: kernel lost (%s); a fresh one starts on "
                          "next use",
                          cid, id, kerr.message);
        }
        pthread_mutex_lock (&self->lock);
        ctx_t *c
            = b->gone || s_ctx_find (b, id) ? NULL : s_ctx_new (self, b, id, lang, cwd, env, &err);
        if (c) {
            json_t *created = json_object_get (e, "created_at");
            if (json_is_integer (created))
                c->created_at = json_integer_value (created);
            c->restarted = json_is_true (json_object_get (e, "restarted")) || !kernel;
            c->kernel = kernel;
            c->gen++;
            kernel = NULL;
            c->refs--; /* the caller's */
            kept += c->kernel != NULL;
            lost += c->kernel == NULL;
        }
        pthread_mutex_unlock (&self->lock);
        kernel_destroy_now (&kernel);
    }
    json_decref (st);
    s_save_quiet (self, b);
    if (n)
        log_info ("sandbox cid=%s: %zu contexts recovered, %zu of them with a fresh kernel", cid,
                  kept + lost, lost);
}

/* Start c's kernel if it has none, holding c's turn. A new kernel is
   saved to the state file; a failure to save is an error only when
   save_err is given (else it is logged). */
static int
s_ensure_kernel (contexts_t *self, ctx_t *c, err_t *err, err_t *save_err)
{
    pthread_mutex_lock (&self->lock);
    kernel_t *k = c->kernel;
    pthread_mutex_unlock (&self->lock);
    if (k && kernel_alive (k))
        return 0;
    bool was_started = k != NULL;
    pthread_mutex_lock (&self->lock);
    c->kernel = NULL;
    pthread_mutex_unlock (&self->lock);
    kernel_destroy (&k);
    k = s_kernel_for (self, c, err);
    if (!k)
        return -1;
    pthread_mutex_lock (&self->lock);
    if (c->deleted) {
        pthread_mutex_unlock (&self->lock);
        kernel_destroy (&k);
        return err_set (err, 404, "not_found", "context %s was deleted", c->id);
    }
    c->kernel = k;
    c->gen++;
    if (was_started)
        c->restarted = true;
    sbox_t *b = c->box;
    pthread_mutex_unlock (&self->lock);
    if (save_err)
        return s_save (self, b, save_err);
    s_save_quiet (self, b);
    return 0;
}

/* --- API ------------------------------------------------------------------------------ */

static const char *const s_create_keys[] = { "language", "cwd", "env", NULL };

int
contexts_create (contexts_t *self, const char *tenant, const char *sid, json_t *body, json_t **out,
                 err_t *err)
{
    return contexts_create_as (self, tenant, sid, body, NULL, out, err);
}

int
contexts_create_as (contexts_t *self, const char *tenant, const char *sid, json_t *body,
                    const char *id, json_t **out, err_t *err)
{
    const char *language = "python", *cwd = "/workspace";
    json_t *env = NULL;
    kernel_lang_t lang;
    if (jsonv_only_keys (body, "", s_create_keys, err) < 0
        || jsonv_string (body, "", "language", false, 32, &language, err) < 0
        || jsonv_string (body, "", "cwd", false, 4000, &cwd, err) < 0
        || jsonv_env (body, "", "env", 256, 64 * 1024, &env, err) < 0)
        return -1;
    if (kernel_lang_parse (language, &lang) < 0)
        return err_set (err, 400, "invalid_field",
                        "field 'language': must be python, javascript or typescript");
    if (cwd[0] != '/')
        return err_set (err, 400, "invalid_field", "field 'cwd': must be an absolute path");
    /* The sandbox-wide env (POST /env) first, the context's own on top. */
    json_t *merged = NULL;
    sbox_t *b = s_box_for_env (self, tenant, sid, &merged, err);
    if (!b)
        return -1;
    if (env)
        json_object_update (merged, env);
    pthread_mutex_lock (&self->lock);
    ctx_t *c = s_ctx_new (self, b, id, lang, cwd, merged, err);
    json_decref (merged);
    s_box_unref (self, b);
    if (c)
        s_turn_take (self, c);
    pthread_mutex_unlock (&self->lock);
    if (!c)
        return -1;
    int rc = s_ensure_kernel (self, c, err, err);
    pthread_mutex_lock (&self->lock);
    s_turn_give (c);
    kernel_t *unsaved = NULL;
    if (rc < 0 && !c->deleted) {
        /* Not on disk: it would not survive a restart, so it is not made. */
        unsaved = c->kernel;
        c->kernel = NULL;
        c->deleted = true;
        s_ctx_detach (c->box, c);
        c->refs--; /* the table's */
    }
    if (rc == 0)
        *out = s_ctx_json (c);
    pthread_mutex_unlock (&self->lock);
    kernel_destroy (&unsaved);
    s_ctx_release (self, c);
    return rc;
}

int
contexts_list (contexts_t *self, const char *tenant, const char *sid, json_t **out, err_t *err)
{
    sbox_t *b = s_box_for (self, tenant, sid, err);
    if (!b)
        return -1;
    json_t *arr = json_array ();
    pthread_mutex_lock (&self->lock);
    for (size_t i = 0; i < b->nctxs; i++)
        json_array_append_new (arr, s_ctx_json (b->ctxs[i]));
    s_box_unref (self, b);
    pthread_mutex_unlock (&self->lock);
    *out = json_pack ("{s:o}", "contexts", arr);
    return 0;
}

int
contexts_get (contexts_t *self, const char *tenant, const char *sid, const char *ctx_id,
              json_t **out, err_t *err)
{
    ctx_t *c = s_ctx_for (self, tenant, sid, ctx_id, err);
    if (!c)
        return -1;
    pthread_mutex_lock (&self->lock);
    *out = s_ctx_json (c);
    pthread_mutex_unlock (&self->lock);
    s_ctx_release (self, c);
    return 0;
}

int
contexts_delete (contexts_t *self, const char *tenant, const char *sid, const char *ctx_id,
                 err_t *err)
{
    ctx_t *c = s_ctx_for (self, tenant, sid, ctx_id, err);
    if (!c)
        return -1;
    pthread_mutex_lock (&self->lock);
    if (!c->deleted) {
        c->deleted = true;
        s_ctx_detach (c->box, c);
        c->refs--; /* the table's */
    }
    pthread_mutex_unlock (&self->lock);
    /* A run in progress ends (KernelDied) when its kernel is killed; the
       last reference frees the kernel object. */
    pthread_mutex_lock (&self->lock);
    kernel_t *k = c->busy ? c->kernel : NULL;
    pthread_mutex_unlock (&self->lock);
    if (k)
        kernel_kill (k);
    s_save_quiet (self, c->box);
    s_ctx_release (self, c);
    return 0;
}

int
contexts_interrupt (contexts_t *self, const char *tenant, const char *sid, const char *ctx_id,
                    err_t *err)
{
    ctx_t *c = s_ctx_for (self, tenant, sid, ctx_id, err);
    if (!c)
        return -1;
    /* kernel_interrupt only reads immutable fields, and our reference keeps
       the context (and so its current kernel, freed only under its turn or
       at the last reference) alive. */
    pthread_mutex_lock (&self->lock);
    kernel_t *k = c->kernel;
    pthread_mutex_unlock (&self->lock);
    int rc = k ? kernel_interrupt (k, err) : 0;
    s_ctx_release (self, c);
    return rc;
}

int
contexts_restart (contexts_t *self, const char *tenant, const char *sid, const char *ctx_id,
                  json_t **out, err_t *err)
{
    ctx_t *c = s_ctx_for (self, tenant, sid, ctx_id, err);
    if (!c)
        return -1;
    /* A run in progress ends now (KernelDied), not when it would finish. */
    pthread_mutex_lock (&self->lock);
    kernel_t *running = c->busy ? c->kernel : NULL;
    pthread_mutex_unlock (&self->lock);
    if (running)
        kernel_kill (running);
    pthread_mutex_lock (&self->lock);
    s_turn_take (self, c);
    kernel_t *old = c->kernel;
    c->kernel = NULL;
    c->restarted = true;
    pthread_mutex_unlock (&self->lock);
    kernel_destroy (&old);
    int rc = s_ensure_kernel (self, c, err, NULL);
    pthread_mutex_lock (&self->lock);
    s_turn_give (c);
    if (rc == 0)
        *out = s_ctx_json (c);
    pthread_mutex_unlock (&self->lock);
    s_ctx_release (self, c);
    return rc;
}

static const char *const s_run_keys[] = { "code",       "context_id",       "language",
                                          "timeout_ms", "max_image_pixels", "max_image_side",
                                          NULL };

code_run_t *
contexts_run_prepare (contexts_t *self, const char *tenant, const char *sid, json_t *body,
                      err_t *err)
{
    const char *code = NULL, *ctx_id = NULL, *language = NULL;
    int64_t timeout_ms = self->cfg->exec_default_timeout_ms;
    if (jsonv_only_keys (body, "", s_run_keys, err) < 0
        || jsonv_string (body, "", "code", true, (size_t)self->cfg->max_body_bytes, &code, err) < 0
        || jsonv_string (body, "", "context_id", false, 63, &ctx_id, err) < 0
        || jsonv_string (body, "", "language", false, 32, &language, err) < 0
        || jsonv_int (body, "", "timeout_ms", false, 1, self->cfg->exec_max_timeout_ms, &timeout_ms,
                      err)
               < 0)
        return NULL;
    int64_t max_pixels = self->cfg->max_image_pixels, max_side = self->cfg->max_image_side;
    if (jsonv_int (body, "", "max_image_pixels", false, 0, MIME_MAX_IMAGE_PIXELS, &max_pixels, err)
            < 0
        || jsonv_int (body, "", "max_image_side", false, 0, 65535, &max_side, err) < 0)
        return NULL;
    kernel_lang_t lang = KERNEL_PYTHON;
    if (language && kernel_lang_parse (language, &lang) < 0) {
        err_set (err, 400, "invalid_field",
                 "field 'language': must be python, javascript or typescript");
        return NULL;
    }
    if (ctx_id && language) {
        err_set (err, 400, "invalid_field", "give 'context_id' or 'language', not both");
        return NULL;
    }
    ctx_t *c = NULL;
    if (ctx_id)
        c = s_ctx_for (self, tenant, sid, ctx_id, err);
    else {
        char def[64];
        snprintf (def, sizeof def, "default-%s", kernel_lang_name (lang));
        json_t *env = NULL;
        sbox_t *b = s_box_for_env (self, tenant, sid, &env, err);
        if (!b)
            return NULL;
        pthread_mutex_lock (&self->lock);
        c = s_ctx_find (b, def);
        if (c)
            c->refs++;
        else
            c = s_ctx_new (self, b, def, lang, "/workspace", env, err);
        json_decref (env);
        s_box_unref (self, b);
        pthread_mutex_unlock (&self->lock);
    }
    if (!c)
        return NULL;
    code_run_t *run = calloc (1, sizeof *run);
    if (run)
        run->code = strdup (code);
    if (!run || !run->code) {
        free (run);
        s_ctx_release (self, c);
        err_set (err, 500, "internal", "out of memory");
        return NULL;
    }
    run->owner = self;
    run->ctx = c;
    run->img.max_pixels = max_pixels;
    run->img.max_side = (int)max_side;
    pthread_mutex_lock (&self->lock);
    self->runs++;
    pthread_mutex_unlock (&self->lock);
    run->timeout_ms = timeout_ms;
    return run;
}

void
contexts_run_free (code_run_t *run)
{
    if (!run)
        return;
    contexts_t *self = run->owner;
    s_ctx_release (self, run->ctx);
    pthread_mutex_lock (&self->lock);
    self->runs--;
    pthread_cond_broadcast (&self->filled);
    pthread_mutex_unlock (&self->lock);
    free (run->code);
    free (run);
}

json_t *
contexts_run_execute (code_run_t *run, kernel_sink_fn *sink, void *arg, err_t *err)
{
    contexts_t *self = run->owner;
    ctx_t *c = run->ctx;
    pthread_mutex_lock (&self->lock);
    s_turn_take (self, c);
    bool deleted = c->deleted;
    pthread_mutex_unlock (&self->lock);
    json_t *out = NULL;
    if (deleted)
        err_set (err, 404, "not_found", "context %s was deleted", c->id);
    else if (s_ensure_kernel (self, c, err, NULL) == 0) {
        pthread_mutex_lock (&self->lock);
        c->busy = true;
        kernel_t *k = c->kernel;
        pthread_mutex_unlock (&self->lock);
        out = kernel_execute (k, run->code, false, run->timeout_ms,
                              (size_t)self->cfg->max_result_bytes, &run->img, sink, arg, err);
        pthread_mutex_lock (&self->lock);
        c->busy = false;
        pthread_mutex_unlock (&self->lock);
        /* A kernel that died or was killed at a timeout is replaced now, so
           the next run does not pay for the start. */
        if (!kernel_alive (k) && !c->deleted) {
            err_t rerr = { 0 };
            s_ensure_kernel (self, c, &rerr, NULL);
        }
    }
    pthread_mutex_lock (&self->lock);
    s_turn_give (c);
    pthread_mutex_unlock (&self->lock);
    contexts_run_free (run);
    return out;
}

/* --- channels for gateway front ends ------------------------------------------------- */

kernel_chan_t *
contexts_channel_open (contexts_t *self, const char *tenant, const char *sid, const char *ctx_id,
                       uint64_t *gen, err_t *err)
{
    ctx_t *c = s_ctx_for (self, tenant, sid, ctx_id, err);
    if (!c)
        return NULL;
    pthread_mutex_lock (&self->lock);
    s_turn_take (self, c);
    pthread_mutex_unlock (&self->lock);
    kernel_chan_t *chan = NULL;
    if (s_ensure_kernel (self, c, err, NULL) == 0) {
        /* Holding the turn: the kernel cannot be replaced under us. */
        pthread_mutex_lock (&self->lock);
        kernel_t *k = c->kernel;
        *gen = c->gen;
        pthread_mutex_unlock (&self->lock);
        chan = k ? kernel_chan_open (k, err) : NULL;
        if (!k)
            err_set (err, 503, "kernel_unavailable", "context %s has no kernel", ctx_id);
    }
    pthread_mutex_lock (&self->lock);
    s_turn_give (c);
    pthread_mutex_unlock (&self->lock);
    s_ctx_release (self, c);
    return chan;
}

int
contexts_channel_check (contexts_t *self, const char *tenant, const char *sid, const char *ctx_id,
                        uint64_t gen)
{
    err_t err = { 0 };
    ctx_t *c = s_ctx_for (self, tenant, sid, ctx_id, &err);
    if (!c)
        return err.status == 404 ? -1 : 0; /* 409 while the sandbox changes: ask again */
    pthread_mutex_lock (&self->lock);
    int rc = c->deleted ? -1 : c->gen != gen || !c->kernel ? 1 : 0;
    kernel_t *k = rc == 0 && !c->busy ? c->kernel : NULL;
    pthread_mutex_unlock (&self->lock);
    /* A kernel that died between native runs is noticed here, not only on
       the next run (our reference keeps it from being freed). */
    if (k && !kernel_alive (k))
        rc = 1;
    s_ctx_release (self, c);
    return rc;
}
