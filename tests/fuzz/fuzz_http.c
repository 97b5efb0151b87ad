/* fuzz_http.c - every route's request handling, native and compatibility
   surfaces, through the real HTTP server: the whole broker runs in this
   process (registry, agent link, sandbox manager, contexts, ports,
   backups, the compat adapters) on 127.0.0.1 with a scratch state dir and
   no image, so a create fails after validation instead of starting a
   container. The first input byte picks a route, the bytes up to the first
   newline fill its path parameter (percent-encoded), the rest is the
   body. Each answer must be a complete HTTP response; sanitizers catch the
   rest. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sodium.h>

#include "auth.h"
#include "config.h"
#include "contexts.h"
#include "http_api.h"
#include "mounts.h"
#include "ports.h"
#include "registry.h"
#include "sandbox.h"

static const struct {
    const char *method;
    const char *path; /* %s: the path parameter */
} s_routes[] = {
    { "POST", "/v1/sandboxes" },
    { "GET", "/v1/sandboxes/%s" },
    { "PATCH", "/v1/sandboxes/%s" },
    { "POST", "/v1/sandboxes/fz/exec" },
    { "POST", "/v1/sandboxes/fz/code" },
    { "POST", "/v1/sandboxes/fz/contexts" },
    { "POST", "/v1/sandboxes/fz/contexts/%s/restart" },
    { "POST", "/v1/sandboxes/fz/env" },
    { "POST", "/v1/sandboxes/fz/git/checkout" },
    { "POST", "/v1/sandboxes/fz/sessions" },
    { "POST", "/v1/sandboxes/fz/processes" },
    { "DELETE", "/v1/sandboxes/fz/processes?signal=%s" },
    { "GET", "/v1/sandboxes/fz/processes/%s/logs" },
    { "PUT", "/v1/sandboxes/fz/files/%s" },
    { "GET", "/v1/sandboxes/fz/files/%s" },
    { "GET", "/v1/sandboxes/fz/files:list?path=%s" },
    { "POST", "/v1/sandboxes/fz/files:mkdir" },
    { "POST", "/v1/sandboxes/fz/files:move" },
    { "POST", "/v1/sandboxes/fz/backups" },
    { "POST", "/v1/sandboxes/fz/backups/%s/restore" },
    { "POST", "/v1/sandboxes/fz/ports" },
    { "POST", "/v1/sandboxes/fz/mounts" },
    { "DELETE", "/v1/sandboxes/fz/mounts?path=%s" },
    { "GET", "/v1/sandboxes/fz/ports/%s/" },
    { "POST", "/compat/acontext/sandbox/create" },
    { "POST", "/compat/acontext/sandbox/%s/exec" },
    { "POST", "/compat/acontext/sandbox/%s/upload" },
    { "POST", "/compat/acontext/sandbox/%s/update" },
    { "POST", "/compat/kapin/sandboxes/%s" },
    { "POST", "/compat/kapin/sandboxes/fz/exec" },
    { "PUT", "/compat/kapin/sandboxes/fz/files/%s" },
    { "GET", "/compat/kapin/sandboxes/fz/ls?path=%s" },
    { "POST", "/compat/kapin/sandboxes/fz/clone" },
    { "POST", "/compat/lifecycle/lifecycle" },
    { "POST", "/compat/lifecycle/exec" },
    { "POST", "/compat/lifecycle/session?id=%s" },
    { "POST", "/compat/lifecycle/session/exec" },
    { "POST", "/compat/lifecycle/mount-bucket" },
    { "DELETE", "/compat/lifecycle/unmount-bucket?mountPath=%s" },
    { "POST", "/compat/artifact/sandbox" },
    { "POST", "/compat/artifact/session" },
    { "POST", "/compat/artifact/run" },
    { "PUT", "/compat/artifact/file?path=%s&sandbox_id=fz" },
    { "GET", "/compat/artifact/file?path=%s&mode=download&sandbox_id=fz" },
    { "POST", "/api/kernels" },
    { "GET", "/api/kernels/%s" },
    { "POST", "/api/kernels/%s/restart" },
    { "GET", "/api/kernelspecs/%s" },
    { "GET", "/api/kernels/%s/channels" },
};
#define NROUTES (sizeof s_routes / sizeof s_routes[0])

static int s_port;
static int s_fd = -1;

static void
s_start (void)
{
    static config_t cfg;
    static char base[256];
    err_t err = { 0 };
    if (sodium_init () < 0)
        abort ();
    signal (SIGPIPE, SIG_IGN);
    log_set_level (LOG_LVL_ERROR);
    const char *tmp = getenv ("TMPDIR");
    snprintf (base, sizeof base, "%s/fuzz-http-XXXXXX", tmp ? tmp : "/tmp");
    if (!mkdtemp (base))
        abort ();
    config_defaults (&cfg);
    snprintf (cfg.listen, sizeof cfg.listen, "127.0.0.1:0");
    snprintf (cfg.state_dir, sizeof cfg.state_dir, "%s/state", base);
    snprintf (cfg.image_dir, sizeof cfg.image_dir, "%s/no-image", base); /* creates fail */
    snprintf (cfg.agent_path, sizeof cfg.agent_path, "/bin/false");
    snprintf (cfg.runtime, sizeof cfg.runtime, "/bin/false");
    cfg.warm_sandboxes = 0;
    cfg.default_disk_mb = 0;
    cfg.max_disk_mb = 0;
    cfg.max_body_bytes = 1 << 16;
    if (util_mkdir_p (cfg.state_dir, 0700) < 0)
        abort ();
    char db[600];
    snprintf (db, sizeof db, "%s/registry.db", cfg.state_dir);
    auth_t *auth = auth_new_open ();
    registry_t *reg = registry_open (db, &err);
    agent_link_t *link = reg ? agent_link_new (1 << 20, &err) : NULL;
    sandbox_mgr_t *mgr = link ? sandbox_mgr_new (&cfg, reg, link, &err) : NULL;
    contexts_t *ctxs = mgr ? contexts_new (mgr, &cfg, &err) : NULL;
    ports_t *ports = ctxs ? ports_new (mgr, &cfg, &err) : NULL;
    mounts_t *mounts = ports ? mounts_new (mgr, &cfg, &err) : NULL;
    http_api_t *http = mounts ? http_api_start (&cfg, auth, mgr, ctxs, ports, mounts, &err) : NULL;
    if (!http) {
        fprintf (stderr, "fuzz_http: cannot start the broker: %s\n", err.message);
        abort ();
    }
    s_port = http_api_port (http);
}

static int
s_connect (void)
{
    int fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons ((uint16_t)s_port) };
    a.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    int one = 1;
    setsockopt (fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval tv = { 10, 0 };
    setsockopt (fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect (fd, (struct sockaddr *)&a, sizeof a) < 0)
        abort ();
    return fd;
}

static int
s_send_all (int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send (fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Read one whole response (headers + Content-Length body). 1 when the
   server keeps the connection, 0 when it closed it, -1 on a timeout or a
   malformed answer. */
static int
s_read_response (int fd)
{
    static char buf[1 << 20];
    size_t have = 0;
    char *end = NULL;
    while (!end) {
        if (have == sizeof buf - 1)
            return -1;
        ssize_t r = recv (fd, buf + have, sizeof buf - 1 - have, 0);
        if (r == 0)
            return have == 0 ? 0 : -1;
        if (r < 0)
            return errno == EAGAIN ? -1 : 0;
        have += (size_t)r;
        buf[have] = '\0';
        end = strstr (buf, "\r\n\r\n");
    }
    if (strncmp (buf, "HTTP/1.1 ", 9) != 0)
        return -1;
    long status = strtol (buf + 9, NULL, 10);
    if (status < 100 || status > 599)
        return -1;
    const char *cl = strcasestr (buf, "\r\ncontent-length:");
    size_t want = cl && cl < end ? (size_t)strtoull (cl + 17, NULL, 10) : 0;
    size_t got = have - (size_t)(end + 4 - buf);
    while (got < want) {
        char sink[65536];
        ssize_t r = recv (fd, sink, sizeof sink, 0);
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return strcasestr (buf, "\r\nconnection: close")
                   && strcasestr (buf, "\r\nconnection: close") < end
               ? 0
               : 1;
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    if (!s_port)
        s_start ();
    if (size < 1 || size > 60000)
        return 0;
    size_t r = data[0] % NROUTES;
    const char *rest = (const char *)data + 1;
    size_t n = size - 1;
    const char *nl = memchr (rest, '\n', n);
    size_t plen = nl ? (size_t)(nl - rest) : 0;
    if (plen > 512)
        plen = 512;
    const char *body = nl ? nl + 1 : rest;
    size_t blen = nl ? n - (size_t)(nl + 1 - rest) : n;

    /* Percent-encode the parameter, keeping '/' so paths stay paths. */
    char param[512 * 3 + 1];
    size_t k = 0;
    for (size_t i = 0; i < plen; i++) {
        unsigned char c = (unsigned char)rest[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '/'
            || c == '.' || c == '-' || c == '_')
            param[k++] = (char)c;
        else
            k += (size_t)snprintf (param + k, 4, "%%%02X", c);
    }
    param[k] = '\0';
    if (!k)
        snprintf (param, sizeof param, "x");

    char path[2048], head[2600];
    snprintf (path, sizeof path, s_routes[r].path, param);
    int hl = snprintf (head, sizeof head,
                       "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: %s\r\n"
                       "Content-Length: %zu\r\n\r\n",
                       s_routes[r].method, path,
                       (data[0] & 0x80) ? "application/octet-stream" : "application/json", blen);
    for (int attempt = 0; attempt < 2; attempt++) {
        if (s_fd < 0)
            s_fd = s_connect ();
        if (s_send_all (s_fd, head, (size_t)hl) < 0 || s_send_all (s_fd, body, blen) < 0) {
            close (s_fd);
            s_fd = -1;
            continue;
        }
        int rc = s_read_response (s_fd);
        if (rc < 0) {
            fprintf (stderr, "fuzz_http: no complete answer to %s %s\n", s_routes[r].method, path);
            abort ();
        }
        if (rc == 0) {
            close (s_fd);
            s_fd = -1;
        }
        break;
    }
    return 0;
}
