/* ports.c - exposed ports, preview tokens and sandbox network namespaces. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "ports.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <sched.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "httpmsg.h"
#include "jsonv.h"

#define PORTS_FILE "ports.json"

typedef struct {
    int port;
    char name[65];
    bool has_name;
    char token[HTTPMSG_TOKEN_LEN + 1];
    int64_t created_at;
} port_t;

/* One started sandbox, keyed by container id. */
typedef struct sbx_s {
    char cid[64];
    char dir[1200];
    char tenant[64]; /* set by the first expose (or ports.json) */
    char id[64];
    int netns; /* /proc/<init>/ns/net, or -1 */
    port_t *ports;
    int nports;
    struct sbx_s *next;
} sbx_t;

struct _ports_t {
    sandbox_mgr_t *mgr;
    const config_t *cfg;
    int self_netns; /* the broker's own namespace, to return to */
    int listen_port;
    pthread_mutex_t lock;
    sbx_t *sandboxes;
};

static sbx_t *
s_find (ports_t *self, const char *cid)
{
    for (sbx_t *s = self->sandboxes; s; s = s->next)
        if (!strcmp (s->cid, cid))
            return s;
    return NULL;
}

static void
s_free (sbx_t *s)
{
    if (s->netns >= 0)
        close (s->netns);
    free (s->ports);
    free (s);
}

/* Read <dir>/ports.json (written by the broker only: the directory is not
   visible inside the sandbox), still checking its shape. */
static void
s_load (sbx_t *s)
{
    char path[1300];
    snprintf (path, sizeof path, "%s/%s", s->dir, PORTS_FILE);
    size_t len = 0;
    char *text = util_read_file (path, 1 << 20, &len);
    if (!text)
        return;
    json_t *root = json_loadb (text, len, 0, NULL);
    free (text);
    const char *tenant = json_string_value (json_object_get (root, "tenant"));
    const char *id = json_string_value (json_object_get (root, "id"));
    json_t *list = json_object_get (root, "ports");
    if (!tenant || !id || strlen (tenant) >= sizeof s->tenant || !util_valid_id (id)
        || !json_is_array (list) || json_array_size (list) > 65535) {
        if (root)
            log_warn ("sandbox %s: ignoring a malformed %s", s->cid, PORTS_FILE);
        json_decref (root);
        return;
    }
    snprintf (s->tenant, sizeof s->tenant, "%s", tenant);
    snprintf (s->id, sizeof s->id, "%s", id);
    s->ports = calloc (json_array_size (list) + 1, sizeof *s->ports);
    size_t i;
    json_t *e;
    json_array_foreach (list, i, e)
    {
        json_int_t port = json_integer_value (json_object_get (e, "port"));
        const char *token = json_string_value (json_object_get (e, "token"));
        const char *name = json_string_value (json_object_get (e, "name"));
        if (!s->ports || port < 1 || port > 65535 || !token || strlen (token) != HTTPMSG_TOKEN_LEN
            || (name && strlen (name) > 64))
            continue;
        port_t *p = &s->ports[s->nports++];
        p->port = (int)port;
        memcpy (p->token, token, sizeof p->token);
        if (name) {
            p->has_name = true;
            snprintf (p->name, sizeof p->name, "%s", name);
        }
        p->created_at = json_integer_value (json_object_get (e, "created_at"));
    }
    json_decref (root);
}

/* Write the ports of s to <dir>/ports.json atomically. Called locked. */
static int
s_save (sbx_t *s, err_t *err)
{
    json_t *list = json_array ();
    for (int i = 0; i < s->nports; i++) {
        port_t *p = &s->ports[i];
        json_array_append_new (list, json_pack ("{s:i, s:s, s:o, s:I}", "port", p->port, "token",
                                                p->token, "name",
                                                p->has_name ? json_string (p->name) : json_null (),
                                                "created_at", (json_int_t)p->created_at));
    }
    json_t *root = json_pack ("{s:s, s:s, s:o}", "tenant", s->tenant, "id", s->id, "ports", list);
    char *text = root ? json_dumps (root, JSON_COMPACT) : NULL;
    json_decref (root);
    char path[1300];
    snprintf (path, sizeof path, "%s/%s", s->dir, PORTS_FILE);
    int rc = text ? util_write_file_atomic (path, text, strlen (text), 0600) : -1;
    free (text);
    if (rc < 0)
        return err_set (err, 500, "internal", "saving the exposed ports: %s", strerror (errno));
    return 0;
}

static void
s_started (void *arg, const char *cid, const char *dir, bool recovered)
{
    ports_t *self = arg;
    (void)recovered;
    int netns = -1;
    int pid = sandbox_mgr_pid (self->mgr, cid);
    if (pid > 0) {
        char path[64];
        snprintf (path, sizeof path, "/proc/%d/ns/net", pid);
        netns = open (path, O_RDONLY | O_CLOEXEC);
    }
    if (netns < 0)
        log_warn ("sandbox %s: cannot open its network namespace (pid %d): %s; its exposed ports "
                  "will answer 502",
                  cid, pid, strerror (errno));
    sbx_t *s = calloc (1, sizeof *s);
    if (!s) {
        if (netns >= 0)
            close (netns);
        return;
    }
    snprintf (s->cid, sizeof s->cid, "%s", cid);
    snprintf (s->dir, sizeof s->dir, "%s", dir);
    s->netns = netns;
    s_load (s);
    pthread_mutex_lock (&self->lock);
    sbx_t **pp = &self->sandboxes;
    for (; *pp; pp = &(*pp)->next)
        if (!strcmp ((*pp)->cid, cid)) {
            /* Started again (a restarted container): a new namespace. */
            sbx_t *old = *pp;
            *pp = old->next;
            s_free (old);
            break;
        }
    s->next = self->sandboxes;
    self->sandboxes = s;
    pthread_mutex_unlock (&self->lock);
    if (s->nports)
        log_info ("sandbox %s: %d exposed port(s) restored", cid, s->nports);
}

static void
s_stopped (void *arg, const char *cid, const char *dir, bool recovered)
{
    ports_t *self = arg;
    (void)dir;
    (void)recovered;
    pthread_mutex_lock (&self->lock);
    for (sbx_t **pp = &self->sandboxes; *pp; pp = &(*pp)->next)
        if (!strcmp ((*pp)->cid, cid)) {
            sbx_t *old = *pp;
            *pp = old->next;
            s_free (old);
            break;
        }
    pthread_mutex_unlock (&self->lock);
}

ports_t *
ports_new (sandbox_mgr_t *mgr, const config_t *cfg, err_t *err)
{
    ports_t *self = calloc (1, sizeof *self);
    if (!self) {
        err_set (err, 500, "internal", "out of memory");
        return NULL;
    }
    self->mgr = mgr;
    self->cfg = cfg;
    self->self_netns = open ("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    if (self->self_netns < 0) {
        err_set (err, 500, "internal", "opening /proc/self/ns/net: %s", strerror (errno));
        free (self);
        return NULL;
    }
    pthread_mutex_init (&self->lock, NULL);
    if (sandbox_mgr_add_hooks (mgr, s_started, s_stopped, self) < 0) {
        err_set (err, 500, "internal", "too many sandbox observers");
        close (self->self_netns);
        free (self);
        return NULL;
    }
    return self;
}

void
ports_destroy (ports_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ports_t *self = *self_p;
    sandbox_mgr_remove_hooks (self->mgr, self);
    while (self->sandboxes) {
        sbx_t *s = self->sandboxes;
        self->sandboxes = s->next;
        s_free (s);
    }
    close (self->self_netns);
    pthread_mutex_destroy (&self->lock);
    free (self);
    *self_p = NULL;
}

void
ports_set_listen_port (ports_t *self, int port)
{
    self->listen_port = port;
}

int
ports_parse (const char *s, const char *field, err_t *err)
{
    long v = 0;
    size_t i = 0;
    for (; s && s[i] && i < 6; i++) {
        if (s[i] < '0' || s[i] > '9')
            break;
        v = v * 10 + (s[i] - '0');
    }
    if (!s || i == 0 || s[i] || s[0] == '0' || v < 1 || v > 65535)
        return err_set (err, 400, "invalid_field", "%s: must be an integer from 1 to 65535", field);
    return (int)v;
}

static json_t *
s_port_json (ports_t *self, const sbx_t *s, const port_t *p)
{
    char label[64], url[512], path[256], ts[40];
    httpmsg_id_label (s->id, label);
    snprintf (url, sizeof url, "http://%d-%s-%s.%s:%d/", p->port, label, p->token,
              self->cfg->preview_domain, self->listen_port);
    snprintf (path, sizeof path, "/v1/sandboxes/%s/ports/%d/", s->id, p->port);
    return json_pack ("{s:i, s:o, s:s, s:s, s:s, s:s}", "port", p->port, "name",
                      p->has_name ? json_string (p->name) : json_null (), "url", url, "path", path,
                      "token", p->token, "created_at", util_iso8601 (p->created_at, ts, sizeof ts));
}

/* Find (or, when the started hook has not seen it, add) the entry of the
   tenant's sandbox id. Returns it locked; NULL with *err (unlocked). */
static sbx_t *
s_lock_sandbox (ports_t *self, const char *tenant, const char *id, bool add, err_t *err)
{
    char cid[64];
    if (sandbox_resolve (self->mgr, tenant, id, cid, NULL, err) < 0)
        return NULL;
    pthread_mutex_lock (&self->lock);
    sbx_t *s = s_find (self, cid);
    if (!s && add) {
        s = calloc (1, sizeof *s);
        if (!s) {
            pthread_mutex_unlock (&self->lock);
            err_set (err, 500, "internal", "out of memory");
            return NULL;
        }
        snprintf (s->cid, sizeof s->cid, "%s", cid);
        sandbox_mgr_dir (self->mgr, cid, s->dir, sizeof s->dir);
        s->netns = -1;
        s->next = self->sandboxes;
        self->sandboxes = s;
    }
    if (!s) {
        pthread_mutex_unlock (&self->lock);
        return NULL;
    }
    if (strcmp (s->tenant, tenant) || strcmp (s->id, id)) {
        /* Ports belong to the sandbox as its owner named it: a pooled
           sandbox handed over has none yet. */
        snprintf (s->tenant, sizeof s->tenant, "%s", tenant);
        snprintf (s->id, sizeof s->id, "%s", id);
        s->nports = 0;
    }
    return s;
}

static const char *const s_expose_keys[] = { "port", "name", NULL };

int
ports_expose (ports_t *self, const char *tenant, const char *id, json_t *body, json_t **out,
              int *created, err_t *err)
{
    int64_t port = 0;
    const char *name = NULL;
    if (jsonv_only_keys (body, "", s_expose_keys, err) < 0
        || jsonv_int (body, "", "port", true, 1, 65535, &port, err) < 0
        || jsonv_string (body, "", "name", false, 64, &name, err) < 0)
        return -1;
    if (name)
        for (const char *c = name; *c; c++)
            if ((unsigned char)*c < 0x20 || *c == 0x7f)
                return err_set (err, 400, "invalid_field",
                                "field 'name': must not contain control characters");
    sbx_t *s = s_lock_sandbox (self, tenant, id, true, err);
    if (!s)
        return -1;
    for (int i = 0; i < s->nports; i++)
        if (s->ports[i].port == port) {
            *out = s_port_json (self, s, &s->ports[i]);
            *created = 0;
            pthread_mutex_unlock (&self->lock);
            return 0;
        }
    if (s->nports >= self->cfg->max_ports_per_sandbox) {
        pthread_mutex_unlock (&self->lock);
        return err_set (err, 409, "too_many_ports",
                        "sandbox %s already exposes %d ports (max_ports_per_sandbox)", id,
                        s->nports);
    }
    port_t *grown = realloc (s->ports, (size_t)(s->nports + 1) * sizeof *grown);
    if (!grown) {
        pthread_mutex_unlock (&self->lock);
        return err_set (err, 500, "internal", "out of memory");
    }
    s->ports = grown;
    port_t *p = &s->ports[s->nports];
    memset (p, 0, sizeof *p);
    p->port = (int)port;
    if (name) {
        p->has_name = true;
        snprintf (p->name, sizeof p->name, "%s", name);
    }
    util_random_hex (p->token, HTTPMSG_TOKEN_LEN / 2);
    p->created_at = util_now_ms ();
    s->nports++;
    if (s_save (s, err) < 0) {
        s->nports--;
        pthread_mutex_unlock (&self->lock);
        return -1;
    }
    *out = s_port_json (self, s, p);
    *created = 1;
    pthread_mutex_unlock (&self->lock);
    log_info ("tenant %s sandbox %s: exposed port %d", tenant, id, (int)port);
    return 0;
}

int
ports_list (ports_t *self, const char *tenant, const char *id, json_t **out, err_t *err)
{
    err_t lerr = { 0 };
    sbx_t *s = s_lock_sandbox (self, tenant, id, false, &lerr);
    if (!s && lerr.status) {
        *err = lerr;
        return -1;
    }
    json_t *list = json_array ();
    if (s) {
        for (int i = 0; i < s->nports; i++)
            json_array_append_new (list, s_port_json (self, s, &s->ports[i]));
        pthread_mutex_unlock (&self->lock);
    }
    *out = json_pack ("{s:o}", "ports", list);
    return 0;
}

int
ports_unexpose (ports_t *self, const char *tenant, const char *id, const char *port_s, json_t **out,
                err_t *err)
{
    err_t lerr = { 0 };
    sbx_t *s = s_lock_sandbox (self, tenant, id, false, &lerr);
    if (!s && lerr.status) {
        *err = lerr;
        return -1;
    }
    int port = ports_parse (port_s, "port", err);
    if (port < 0) {
        if (s)
            pthread_mutex_unlock (&self->lock);
        return -1;
    }
    int found = -1;
    for (int i = 0; s && i < s->nports; i++)
        if (s->ports[i].port == port)
            found = i;
    if (found < 0) {
        if (s)
            pthread_mutex_unlock (&self->lock);
        return err_set (err, 404, "not_found", "port %d of sandbox %s is not exposed", port, id);
    }
    port_t saved = s->ports[found];
    memmove (&s->ports[found], &s->ports[found + 1],
             (size_t)(s->nports - found - 1) * sizeof *s->ports);
    s->nports--;
    if (s_save (s, err) < 0) {
        /* Keep memory and disk in agreement. */
        memmove (&s->ports[found + 1], &s->ports[found],
                 (size_t)(s->nports - found) * sizeof *s->ports);
        s->ports[found] = saved;
        s->nports++;
        pthread_mutex_unlock (&self->lock);
        return -1;
    }
    pthread_mutex_unlock (&self->lock);
    log_info ("tenant %s sandbox %s: unexposed port %d", tenant, id, port);
    *out = json_pack ("{s:i, s:b}", "port", port, "deleted", 1);
    return 0;
}

/* Fill t from s (locked). */
static int
s_fill_target (const sbx_t *s, int port, ports_target_t *t, err_t *err)
{
    memset (t, 0, sizeof *t);
    t->port = port;
    snprintf (t->cid, sizeof t->cid, "%s", s->cid);
    snprintf (t->tenant, sizeof t->tenant, "%s", s->tenant);
    snprintf (t->id, sizeof t->id, "%s", s->id);
    if (s->netns < 0)
        return err_set (err, 502, "sandbox_unreachable",
                        "the network of sandbox %s cannot be reached", s->id);
    return 0;
}

int
ports_target_by_path (ports_t *self, const char *tenant, const char *id, int port,
                      ports_target_t *t, err_t *err)
{
    err_t lerr = { 0 };
    sbx_t *s = s_lock_sandbox (self, tenant, id, false, &lerr);
    if (!s && lerr.status) {
        *err = lerr;
        return -1;
    }
    for (int i = 0; s && i < s->nports; i++)
        if (s->ports[i].port == port) {
            int rc = s_fill_target (s, port, t, err);
            pthread_mutex_unlock (&self->lock);
            return rc;
        }
    if (s)
        pthread_mutex_unlock (&self->lock);
    return err_set (err, 404, "not_found", "port %d of sandbox %s is not exposed", port, id);
}

int
ports_target_by_host (ports_t *self, int port, const char *label, const char *token,
                      ports_target_t *t, err_t *err)
{
    /* Every token is compared in full, in constant time, whatever matched
       before: how long this takes says nothing about any token. */
    pthread_mutex_lock (&self->lock);
    const sbx_t *hit_s = NULL;
    const port_t *hit_p = NULL;
    for (const sbx_t *s = self->sandboxes; s; s = s->next)
        for (int i = 0; i < s->nports; i++)
            if (sodium_memcmp (s->ports[i].token, token, HTTPMSG_TOKEN_LEN) == 0) {
                hit_s = s;
                hit_p = &s->ports[i];
            }
    char want[64];
    if (hit_s)
        httpmsg_id_label (hit_s->id, want);
    if (!hit_s || hit_p->port != port || strcmp (want, label)) {
        pthread_mutex_unlock (&self->lock);
        return err_set (err, 404, "not_found", "no such preview");
    }
    int rc = s_fill_target (hit_s, port, t, err);
    pthread_mutex_unlock (&self->lock);
    return rc;
}

int
ports_connect (ports_t *self, const ports_target_t *t, err_t *err)
{
    /* setns changes the calling thread only; the socket keeps the namespace
       it was made in, so the connect can happen back home. Under the lock,
       so that a delete cannot close the namespace descriptor meanwhile. */
    pthread_mutex_lock (&self->lock);
    sbx_t *s = s_find (self, t->cid);
    if (!s || s->netns < 0) {
        pthread_mutex_unlock (&self->lock);
        return err_set (err, 502, "sandbox_unreachable",
                        "the network of sandbox %s cannot be reached", t->id);
    }
    if (setns (s->netns, CLONE_NEWNET) < 0) {
        pthread_mutex_unlock (&self->lock);
        return err_set (err, 502, "sandbox_unreachable", "entering the network of sandbox %s: %s",
                        t->id, strerror (errno));
    }
    int fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int saved = errno;
    if (setns (self->self_netns, CLONE_NEWNET) < 0) {
        /* This thread would make every later socket inside the sandbox. */
        log_error ("cannot return to the broker's network namespace: %s", strerror (errno));
        abort ();
    }
    pthread_mutex_unlock (&self->lock);
    if (fd < 0)
        return err_set (err, 502, "sandbox_unreachable", "socket: %s", strerror (saved));
    int one = 1;
    setsockopt (fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval tv = { .tv_sec = (time_t)self->cfg->proxy_timeout_seconds };
    setsockopt (fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct timeval slice = { .tv_sec = 1 };
    setsockopt (fd, SOL_SOCKET, SO_RCVTIMEO, &slice, sizeof slice);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons ((uint16_t)t->port) };
    a.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    if (connect (fd, (struct sockaddr *)&a, sizeof a) < 0) {
        saved = errno;
        close (fd);
        if (saved == ECONNREFUSED)
            return err_set (err, 502, "port_not_listening",
                            "nothing listens on port %d in sandbox %s", t->port, t->id);
        return err_set (err, 502, "sandbox_unreachable", "connecting to port %d in sandbox %s: %s",
                        t->port, t->id, strerror (saved));
    }
    return fd;
}
