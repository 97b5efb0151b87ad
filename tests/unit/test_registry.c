/* test_registry.c - the SQLite sandbox registry: records, tenants, expiry, persistence. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "registry.h"

#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tap.h"

static char s_tmp[] = "/tmp/test_registry.XXXXXX";
static char s_db[600];

static int
s_rm_entry (const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove (path);
}

/* A record with every field set; env_json points at a literal (the caller
   does not clear it). */
static registry_rec_t
s_rec (const char *tenant, const char *id, const char *cid, int64_t created, int64_t expires)
{
    registry_rec_t r;
    memset (&r, 0, sizeof r);
    snprintf (r.tenant, sizeof r.tenant, "%s", tenant);
    snprintf (r.id, sizeof r.id, "%s", id);
    snprintf (r.cid, sizeof r.cid, "%s", cid);
    r.created_at = created;
    r.expires_at = expires;
    snprintf (r.status, sizeof r.status, "running");
    r.env_json = (char *)"{\"A\":\"1\"}";
    r.limits = (limits_t){ .memory_mb = 1024, .cpus = 1.0, .pids = 512 };
    snprintf (r.lower, sizeof r.lower, "/var/cache/sandboxd/images/current/rootfs");
    return r;
}

static bool
s_same (const registry_rec_t *a, const registry_rec_t *b)
{
    return strcmp (a->tenant, b->tenant) == 0 && strcmp (a->id, b->id) == 0
           && strcmp (a->cid, b->cid) == 0 && a->created_at == b->created_at
           && a->expires_at == b->expires_at && strcmp (a->status, b->status) == 0 && a->env_json
           && b->env_json && strcmp (a->env_json, b->env_json) == 0
           && a->limits.memory_mb == b->limits.memory_mb && a->limits.cpus == b->limits.cpus
           && a->limits.pids == b->limits.pids && strcmp (a->lower, b->lower) == 0;
}

static int64_t
s_count (registry_t *r, const char *tenant)
{
    int64_t n = -1;
    err_t err;
    if (registry_count (r, tenant, &n, &err) < 0)
        return -1;
    return n;
}

/* Comma-separated "tenant/id" of a list, for order checks. */
static const char *
s_ids (const registry_rec_t *list, size_t n, char *buf, size_t size)
{
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && o < size; i++)
        o += (size_t)snprintf (buf + o, size - o, "%s%s/%s", i ? "," : "", list[i].tenant,
                               list[i].id);
    return buf;
}

static registry_rec_t s_full;

static void
test_round_trip (registry_t *r)
{
    err_t err;
    s_full = s_rec ("alice", "sb-1", "c-0001", 1700000000123LL, 1700000600456LL);
    s_full.env_json
        = (char *)"{\"PATH\":\"/usr/bin\",\"MSG\":\"two words, \\\"quoted\\\" \\u00e9\"}";
    s_full.limits = (limits_t){ .memory_mb = 2048, .cpus = 1.5, .pids = 256 };
    snprintf (s_full.status, sizeof s_full.status, "creating");
    snprintf (s_full.lower, sizeof s_full.lower, "/srv/images/python-3.12/rootfs");

    err_clear (&err);
    ok (registry_insert (r, &s_full, &err) == 0, "insert succeeds: %s", err.message);
    registry_rec_t got;
    memset (&got, 0, sizeof got);
    ok (registry_get (r, "alice", "sb-1", &got, &err) == 0, "get succeeds");
    ok (s_same (&got, &s_full), "every field round-trips (env %s, cpus %g, lower %s)",
        got.env_json ? got.env_json : "(null)", got.limits.cpus, got.lower);
    registry_rec_clear (&got);
    ok (got.env_json == NULL && got.id[0] == '\0', "registry_rec_clear frees and zeroes");

    registry_rec_t noenv = s_rec ("alice", "sb-noenv", "c-0002", 1, 2);
    noenv.env_json = NULL;
    registry_insert (r, &noenv, &err);
    ok (registry_get (r, "alice", "sb-noenv", &got, &err) == 0 && got.env_json
            && strcmp (got.env_json, "{}") == 0,
        "a record without env reads back as {}");
    registry_rec_clear (&got);
    registry_delete (r, "alice", "sb-noenv", &err);

    err_clear (&err);
    registry_rec_t dup = s_rec ("alice", "sb-1", "c-0099", 5, 6);
    ok (registry_insert (r, &dup, &err) == -1 && err.status == 409
            && strcmp (err.code, "conflict") == 0 && strstr (err.message, "sb-1"),
        "duplicate (tenant, id) is 409 conflict: %s", err.message);
    ok (registry_get (r, "alice", "sb-1", &got, &err) == 0 && s_same (&got, &s_full),
        "the original record is unchanged");
    registry_rec_clear (&got);

    registry_rec_t bob = s_rec ("bob", "sb-1", "c-0003", 1700000000200LL, 1700000000300LL);
    err_clear (&err);
    ok (registry_insert (r, &bob, &err) == 0, "same id for another tenant is fine: %s",
        err.message);
    ok (registry_get (r, "bob", "sb-1", &got, &err) == 0 && strcmp (got.cid, "c-0003") == 0,
        "each tenant sees its own record");
    registry_rec_clear (&got);

    registry_rec_t cid_clash = s_rec ("carol", "x", "c-0003", 1, 2);
    ok (registry_insert (r, &cid_clash, &err) == -1, "a container id is unique across tenants");

    err_clear (&err);
    ok (registry_get (r, "alice", "nope", &got, &err) == -1 && err.status == 404
            && strcmp (err.code, "not_found") == 0,
        "get of a missing id is 404 not_found");
    registry_rec_t only = s_rec ("alice", "only-alice", "c-0004", 10, 20);
    registry_insert (r, &only, &err);
    err_clear (&err);
    ok (registry_get (r, "bob", "only-alice", &got, &err) == -1 && err.status == 404,
        "another tenant's sandbox is 404, not visible");
    registry_delete (r, "alice", "only-alice", &err);
}

static void
test_list_count (registry_t *r)
{
    err_t err;
    /* alice already has sb-1 (created 1700000000123), bob has sb-1. */
    registry_rec_t recs[] = {
        s_rec ("alice", "c", "c-1003", 3000, 9000), s_rec ("alice", "z", "c-1001", 1000, 9000),
        s_rec ("alice", "a", "c-1002", 2000, 9000), s_rec ("alice", "b", "c-1004", 1000, 9000),
        s_rec ("carol", "m", "c-1005", 1500, 9000),
    };
    bool all = true;
    for (size_t i = 0; i < sizeof recs / sizeof recs[0]; i++)
        all = all && registry_insert (r, &recs[i], &err) == 0;
    ok (all, "five more records inserted");

    registry_rec_t *list = NULL;
    size_t n = 0;
    char buf[512];
    ok (registry_list (r, "alice", &list, &n, &err) == 0 && n == 5,
        "alice has five records (got %zu)", n);
    ok (strcmp (s_ids (list, n, buf, sizeof buf), "alice/b,alice/z,alice/a,alice/c,alice/sb-1")
            == 0,
        "listed oldest first, ties by id: %s", buf);
    registry_list_free (list, n);

    ok (registry_list (r, NULL, &list, &n, &err) == 0 && n == 7, "all tenants: seven records");
    ok (strcmp (s_ids (list, n, buf, sizeof buf),
                "alice/b,alice/z,carol/m,alice/a,alice/c,alice/sb-1,bob/sb-1")
            == 0,
        "all tenants oldest first: %s", buf);
    registry_list_free (list, n);

    list = NULL;
    ok (registry_list (r, "nobody", &list, &n, &err) == 0 && n == 0,
        "a tenant without sandboxes lists nothing");
    registry_list_free (list, n);

    ok (s_count (r, "alice") == 5 && s_count (r, "bob") == 1 && s_count (r, "carol") == 1
            && s_count (r, "nobody") == 0,
        "counts per tenant");
}

static void
test_updates (registry_t *r)
{
    err_t err;
    registry_rec_t got;
    ok (registry_set_expiry (r, "alice", "c", 123456, &err) == 0
            && registry_get (r, "alice", "c", &got, &err) == 0 && got.expires_at == 123456,
        "set_expiry persists the new expiry");
    registry_rec_clear (&got);
    ok (registry_set_expiry (r, "alice", "c", 123456, &err) == 0,
        "setting the same expiry again is not a 404");
    ok (registry_set_status (r, "alice", "c", "deleting", &err) == 0
            && registry_get (r, "alice", "c", &got, &err) == 0
            && strcmp (got.status, "deleting") == 0,
        "set_status persists the new status");
    registry_rec_clear (&got);

    err_clear (&err);
    ok (registry_set_expiry (r, "alice", "missing", 1, &err) == -1 && err.status == 404,
        "set_expiry on a missing id is 404");
    err_clear (&err);
    ok (registry_set_status (r, "alice", "missing", "running", &err) == -1 && err.status == 404,
        "set_status on a missing id is 404");
    err_clear (&err);
    ok (registry_set_status (r, "bob", "c", "running", &err) == -1 && err.status == 404
            && registry_get (r, "alice", "c", &got, &err) == 0
            && strcmp (got.status, "deleting") == 0,
        "another tenant cannot change alice's record");
    registry_rec_clear (&got);
    err_clear (&err);
    ok (registry_delete (r, "bob", "c", &err) == -1 && err.status == 404
            && s_count (r, "alice") == 5,
        "another tenant cannot delete alice's record");

    ok (registry_delete (r, "alice", "c", &err) == 0 && s_count (r, "alice") == 4,
        "delete removes the record");
    err_clear (&err);
    ok (registry_get (r, "alice", "c", &got, &err) == -1 && err.status == 404,
        "a deleted record is 404");
    err_clear (&err);
    ok (registry_delete (r, "alice", "c", &err) == -1 && err.status == 404
            && strcmp (err.code, "not_found") == 0,
        "deleting twice is 404");
}

static void
test_expired (registry_t *r)
{
    err_t err;
    registry_rec_t e1 = s_rec ("dave", "old", "c-2001", 1, 5000);
    registry_rec_t e2 = s_rec ("erin", "edge", "c-2002", 1, 6000);
    registry_rec_t e3 = s_rec ("dave", "fresh", "c-2003", 1, 6001);
    registry_insert (r, &e1, &err);
    registry_insert (r, &e2, &err);
    registry_insert (r, &e3, &err);
    /* Records from earlier tests expire at 9000 or at 1700000000300 and later. */
    registry_rec_t *list = NULL;
    size_t n = 0;
    ok (registry_expired (r, 6000, &list, &n, &err) == 0 && n == 2,
        "two records expired at 6000 (got %zu)", n);
    bool old = false, edge = false;
    for (size_t i = 0; i < n; i++) {
        old = old || (strcmp (list[i].tenant, "dave") == 0 && strcmp (list[i].id, "old") == 0);
        edge = edge || (strcmp (list[i].tenant, "erin") == 0 && strcmp (list[i].id, "edge") == 0);
    }
    ok (old && edge, "the expired ones across tenants, including expires_at == now");
    registry_list_free (list, n);
    ok (registry_expired (r, 4999, &list, &n, &err) == 0 && n == 0, "nothing expired at 4999");
    registry_list_free (list, n);
    registry_delete (r, "dave", "old", &err);
    registry_delete (r, "erin", "edge", &err);
    registry_delete (r, "dave", "fresh", &err);
}

/* ---- concurrency ------------------------------------------------------- */

#define THREADS    4
#define PER_THREAD 25

typedef struct {
    registry_t *r;
    int index;
    int failures;
} worker_t;

static void *
s_worker (void *arg)
{
    worker_t *w = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        char id[32], cid[32];
        snprintf (id, sizeof id, "t%d-%d", w->index, i);
        snprintf (cid, sizeof cid, "cc-%d-%d", w->index, i);
        registry_rec_t rec = s_rec ("load", id, cid, i, 100000);
        err_t err;
        if (registry_insert (w->r, &rec, &err) < 0)
            w->failures++;
    }
    return NULL;
}

static void
test_concurrent (registry_t *r)
{
    pthread_t th[THREADS];
    worker_t w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (worker_t){ .r = r, .index = i };
        pthread_create (&th[i], NULL, s_worker, &w[i]);
    }
    int failures = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join (th[i], NULL);
        failures += w[i].failures;
    }
    ok (failures == 0, "concurrent inserts from %d threads all succeed (%d failed)", THREADS,
        failures);
    ok (s_count (r, "load") == THREADS * PER_THREAD, "all %d records landed", THREADS * PER_THREAD);
}

static void
test_persistence (registry_t **rp)
{
    err_t err;
    int64_t before = s_count (*rp, "alice");
    registry_destroy (rp);
    ok (*rp == NULL, "registry_destroy clears the caller's pointer");
    registry_destroy (rp);

    err_clear (&err);
    *rp = registry_open (s_db, &err);
    ok (*rp != NULL, "reopen succeeds: %s", err.message);
    if (!*rp)
        return;
    registry_rec_t got;
    ok (registry_get (*rp, "alice", "sb-1", &got, &err) == 0 && s_same (&got, &s_full),
        "a record survives close and reopen with every field");
    registry_rec_clear (&got);
    ok (s_count (*rp, "alice") == before && s_count (*rp, "load") == THREADS * PER_THREAD,
        "counts survive close and reopen");
    registry_rec_t dup = s_rec ("alice", "sb-1", "c-7777", 1, 2);
    err_clear (&err);
    ok (registry_insert (*rp, &dup, &err) == -1 && err.status == 409,
        "uniqueness still enforced after reopen");
}

int
main (void)
{
    if (!mkdtemp (s_tmp)) {
        printf ("Bail out! mkdtemp failed\n");
        return 1;
    }
    snprintf (s_db, sizeof s_db, "%s/registry.db", s_tmp);
    err_t err;
    err_clear (&err);

    char bad[700];
    snprintf (bad, sizeof bad, "%s/no/such/dir/registry.db", s_tmp);
    registry_t *r = registry_open (bad, &err);
    ok (!r && err.status == 500 && strstr (err.message, bad),
        "open in a missing directory fails naming the path");

    err_clear (&err);
    r = registry_open (s_db, &err);
    ok (r != NULL, "open creates a new registry: %s", err.message);
    if (!r) {
        printf ("Bail out! cannot open registry\n");
        return 1;
    }
    ok (s_count (r, "alice") == 0, "a new registry is empty");
    test_round_trip (r);
    test_list_count (r);
    test_updates (r);
    test_expired (r);
    test_concurrent (r);
    test_persistence (&r);
    registry_destroy (&r);

    nftw (s_tmp, s_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    ok (access (s_tmp, F_OK) != 0, "temporary directory cleaned up");
    return tap_done ();
}
