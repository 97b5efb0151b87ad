/* main.c - sandboxd: parse options, wire the modules, serve until SIGTERM. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "agent_link.h"
#include "auth.h"
#include "config.h"
#include "contexts.h"
#include "http_api.h"
#include "ports.h"
#include "mounts.h"
#include "registry.h"
#include "sandbox.h"

static void
s_usage (FILE *out)
{
    fprintf (out, "usage: sandboxd [--listen ADDR:PORT] [--state-dir DIR] [--tokens FILE]\n"
                  "                [--image-dir DIR] [--config FILE] [--agent-path FILE]\n"
                  "                [--kernel-lib-dir DIR]\n"
                  "                [--log-level debug|info|warn|error]\n"
                  "Every option can also be set in the config file as `key = value`\n"
                  "(listen, state_dir, tokens, image_dir, agent_path, log_level, ...);\n"
                  "the command line wins. See docs/operations.md.\n");
}

static const struct option s_options[] = {
    { "listen", required_argument, NULL, 'l' },
    { "state-dir", required_argument, NULL, 's' },
    { "tokens", required_argument, NULL, 't' },
    { "image-dir", required_argument, NULL, 'i' },
    { "config", required_argument, NULL, 'c' },
    { "agent-path", required_argument, NULL, 'a' },
    { "log-level", required_argument, NULL, 'L' },
    { "kernel-lib-dir", required_argument, NULL, 'K' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
};

static const char *
s_key_of (int opt)
{
    switch (opt) {
    case 'l':
        return "listen";
    case 's':
        return "state_dir";
    case 't':
        return "tokens";
    case 'i':
        return "image_dir";
    case 'a':
        return "agent_path";
    case 'K':
        return "kernel_lib_dir";
    case 'L':
        return "log_level";
    }
    return NULL;
}

typedef struct {
    sandbox_mgr_t *mgr;
    int64_t interval_ms;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int stop;
} reaper_t;

/* Reap expired sandboxes every interval until told to stop. */
static void *
s_reaper (void *arg)
{
    reaper_t *r = arg;
    pthread_mutex_lock (&r->lock);
    while (!r->stop) {
        struct timespec ts;
        clock_gettime (CLOCK_REALTIME, &ts);
        ts.tv_sec += r->interval_ms / 1000;
        ts.tv_nsec += (r->interval_ms % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait (&r->cond, &r->lock, &ts);
        if (r->stop)
            break;
        pthread_mutex_unlock (&r->lock);
        sandbox_mgr_reap (r->mgr);
        pthread_mutex_lock (&r->lock);
    }
    pthread_mutex_unlock (&r->lock);
    return NULL;
}

/* Each sandbox holds about 42 descriptors in the broker (its agent link
   and its kernels' ZeroMQ sockets) and each connection one more: the usual
   soft limit of 1024 runs out at about 20 sandboxes under load. Take what
   the hard limit allows (docs/operations.md "Under load"). */
static void
s_raise_nofile (void)
{
    struct rlimit rl;
    if (getrlimit (RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= rl.rlim_max)
        return;
    unsigned long long was = (unsigned long long)rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit (RLIMIT_NOFILE, &rl) < 0)
        log_warn ("cannot raise the open files limit from %llu: %s", was, strerror (errno));
    else
        log_info ("open files limit raised from %llu to %llu", was,
                  (unsigned long long)rl.rlim_cur);
}

int
main (int argc, char **argv)
{
    config_t cfg;
    config_defaults (&cfg);
    err_t err = { 0 };

    /* The config file first, so that the command line overrides it. */
    int opt;
    while ((opt = getopt_long (argc, argv, "h", s_options, NULL)) != -1) {
        if (opt == 'c' && config_load_file (&cfg, optarg, &err) < 0) {
            fprintf (stderr, "sandboxd: %s\n", err.message);
            return 2;
        }
        if (opt == 'h') {
            s_usage (stdout);
            return 0;
        }
        if (opt == '?') {
            s_usage (stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf (stderr, "sandboxd: unexpected argument '%s'\n", argv[optind]);
        s_usage (stderr);
        return 2;
    }
    optind = 1;
    while ((opt = getopt_long (argc, argv, "h", s_options, NULL)) != -1) {
        const char *key = s_key_of (opt);
        if (key && config_set (&cfg, key, optarg, &err) < 0) {
            fprintf (stderr, "sandboxd: --%s: %s\n", key, err.message);
            return 2;
        }
    }
    if (config_validate (&cfg, &err) < 0) {
        fprintf (stderr, "sandboxd: %s\n", err.message);
        return 2;
    }
    log_set_level (cfg.log_level);
    if (geteuid () != 0) {
        fprintf (stderr, "sandboxd: must run as root (it mounts overlays and runs runc)\n");
        return 2;
    }
    if (sodium_init () < 0) {
        fprintf (stderr, "sandboxd: libsodium failed to initialise\n");
        return 1;
    }
    if (access (cfg.agent_path, X_OK) < 0) {
        fprintf (stderr, "sandboxd: agent binary %s: %s (set agent_path)\n", cfg.agent_path,
                 strerror (errno));
        return 2;
    }

    /* Signals are taken synchronously by the main thread only; every thread
       created from here on inherits the mask. */
    sigset_t sigs;
    sigemptyset (&sigs);
    sigaddset (&sigs, SIGINT);
    sigaddset (&sigs, SIGTERM);
    pthread_sigmask (SIG_BLOCK, &sigs, NULL);
    signal (SIGPIPE, SIG_IGN);
    s_raise_nofile ();

    if (util_mkdir_p (cfg.state_dir, 0700) < 0) {
        fprintf (stderr, "sandboxd: creating %s: %s\n", cfg.state_dir, strerror (errno));
        return 1;
    }
    auth_t *auth = cfg.tokens[0] ? auth_load (cfg.tokens, &err) : auth_new_open ();
    if (!auth) {
        fprintf (stderr, "sandboxd: %s\n", err.message);
        return 2;
    }
    char dbpath[1200];
    snprintf (dbpath, sizeof dbpath, "%s/registry.db", cfg.state_dir);
    registry_t *reg = registry_open (dbpath, &err);
    agent_link_t *link
        = reg ? agent_link_new ((size_t)cfg.max_output_bytes * 2 + (1 << 20), &err) : NULL;
    sandbox_mgr_t *mgr = link ? sandbox_mgr_new (&cfg, reg, link, &err) : NULL;
    contexts_t *ctxs = mgr ? contexts_new (mgr, &cfg, &err) : NULL;
    ports_t *ports = ctxs ? ports_new (mgr, &cfg, &err) : NULL;
    /* Before recovery: its hooks check and clean up bucket mounts. */
    mounts_t *mounts = ports ? mounts_new (mgr, &cfg, &err) : NULL;
    if (!mounts || sandbox_mgr_recover (mgr, &err) < 0) {
        fprintf (stderr, "sandboxd: %s\n", err.message);
        return 1;
    }
    reaper_t reaper = { .mgr = mgr, .interval_ms = cfg.reap_interval_ms };
    pthread_mutex_init (&reaper.lock, NULL);
    pthread_cond_init (&reaper.cond, NULL);
    pthread_t reaper_thread;
    pthread_create (&reaper_thread, NULL, s_reaper, &reaper);

    sandbox_mgr_start_pool (mgr);
    sandbox_mgr_start_watchdog (mgr);
    http_api_t *http = http_api_start (&cfg, auth, mgr, ctxs, ports, mounts, &err);
    if (!http) {
        fprintf (stderr, "sandboxd: %s\n", err.message);
        return 1;
    }
    char host[128];
    snprintf (host, sizeof host, "%s", cfg.listen);
    char *colon = strrchr (host, ':');
    if (colon)
        *colon = '\0';
    log_info ("sandboxd listening on http://%s:%d (%s)", host, http_api_port (http),
              auth_is_open (auth) ? "no tokens: loopback only, tenant 'default'" : "bearer tokens");

    int sig = 0;
    sigwait (&sigs, &sig);
    log_info ("signal %d: shutting down (sandboxes keep running)", sig);
    http_api_destroy (&http);
    sandbox_mgr_stop_watchdog (mgr);
    sandbox_mgr_stop_pool (mgr);
    pthread_mutex_lock (&reaper.lock);
    reaper.stop = 1;
    pthread_cond_signal (&reaper.cond);
    pthread_mutex_unlock (&reaper.lock);
    pthread_join (reaper_thread, NULL);
    ports_destroy (&ports);
    mounts_destroy (&mounts);
    contexts_destroy (&ctxs);
    sandbox_mgr_destroy (&mgr);
    agent_link_destroy (&link);
    registry_destroy (&reg);
    auth_destroy (&auth);
    return 0;
}
