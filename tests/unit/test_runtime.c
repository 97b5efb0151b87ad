/* test_runtime.c - the OCI config a sandbox gets, and a real runc container on an overlay.

   Compiled with -DSANDBOXD_TEST_AGENT this same file is the stand-in agent
   that the integration test runs in the container (see the end). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#ifndef SANDBOXD_TEST_AGENT

#include "../../src/runtime.h"
#include "tap.h"

#include <dirent.h>
#include <sys/statfs.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* tap.h's ok(), as a function that also returns the verdict. */
static bool
s_ok (bool cond, const char *fmt, ...)
{
    va_list ap;
    va_start (ap, fmt);
    printf ("%sok %d - ", cond ? "" : "not ", ++tap_n);
    vprintf (fmt, ap);
    printf ("\n");
    va_end (ap);
    fflush (stdout);
    if (!cond)
        tap_failed++;
    return cond;
}

static void
s_skip (const char *why, const char *what)
{
    printf ("ok %d - %s # SKIP %s\n", ++tap_n, what, why);
}

/* ---- walking the generated config ------------------------------------ */

static json_t *
s_at (json_t *root, const char *path)
{
    char buf[256];
    snprintf (buf, sizeof buf, "%s", path);
    json_t *cur = root;
    for (char *save = NULL, *tok = strtok_r (buf, ".", &save); tok && cur;
         tok = strtok_r (NULL, ".", &save))
        cur = json_object_get (cur, tok);
    return cur;
}

static json_int_t
s_int (json_t *root, const char *path)
{
    json_t *v = s_at (root, path);
    return json_is_integer (v) ? json_integer_value (v) : -12345;
}

static bool
s_array_has (json_t *arr, const char *s)
{
    size_t i;
    json_t *v;
    json_array_foreach (arr, i, v) if (json_is_string (v)
                                       && strcmp (json_string_value (v), s) == 0) return true;
    return false;
}

static json_t *
s_mount (json_t *config, const char *dest)
{
    size_t i;
    json_t *m;
    json_array_foreach (s_at (config, "mounts"), i,
                        m) if (strcmp (json_string_value (json_object_get (m, "destination")), dest)
                               == 0) return m;
    return NULL;
}

/* What the kernel would answer for name(args) under the config's seccomp
   profile: 0 (allowed) or the errno. Mirrors runc 1.1: conditions of one
   entry are ANDed unless an argument index repeats, then each is a rule of
   its own (ORed). */
static int
s_seccomp_errno (json_t *config, const char *name, const uint64_t args[6])
{
    json_t *sc = s_at (config, "linux.seccomp");
    size_t i, j;
    json_t *rule, *cond;
    json_array_foreach (json_object_get (sc, "syscalls"), i, rule)
    {
        if (!s_array_has (json_object_get (rule, "names"), name))
            continue;
        json_t *conds = json_object_get (rule, "args");
        int per_index[6] = { 0 };
        json_array_foreach (conds, j, cond)
            per_index[json_integer_value (json_object_get (cond, "index")) % 6]++;
        bool ored = false;
        for (int k = 0; k < 6; k++)
            ored |= per_index[k] > 1;
        bool match = !ored;
        json_array_foreach (conds, j, cond)
        {
            uint64_t a = args[json_integer_value (json_object_get (cond, "index")) % 6];
            uint64_t v = (uint64_t)json_integer_value (json_object_get (cond, "value"));
            uint64_t v2 = (uint64_t)json_integer_value (json_object_get (cond, "valueTwo"));
            const char *op = json_string_value (json_object_get (cond, "op"));
            bool r = strcmp (op, "SCMP_CMP_EQ") == 0          ? a == v
                     : strcmp (op, "SCMP_CMP_NE") == 0        ? a != v
                     : strcmp (op, "SCMP_CMP_GT") == 0        ? a > v
                     : strcmp (op, "SCMP_CMP_GE") == 0        ? a >= v
                     : strcmp (op, "SCMP_CMP_LT") == 0        ? a < v
                     : strcmp (op, "SCMP_CMP_LE") == 0        ? a <= v
                     : strcmp (op, "SCMP_CMP_MASKED_EQ") == 0 ? (a & v) == v2
                                                              : false;
            match = ored ? (match || r) : (match && r);
        }
        if (json_array_size (conds) == 0)
            match = true;
        if (match)
            return (int)json_integer_value (json_object_get (rule, "errnoRet"));
    }
    return 0;
}

static int
s_sc1 (json_t *config, const char *name, uint64_t arg0)
{
    uint64_t args[6] = { arg0, 0, 0, 0, 0, 0 };
    return s_seccomp_errno (config, name, args);
}

static void
test_config (void)
{
    runtime_config_t cfg
        = { "runc", "/tmp/x/runc", "/usr/libexec/sandboxd/sandbox-agent", "/sandboxd", NULL };
    runtime_spec_t spec
        = { "sbx-1", "/tmp/x/sandboxes/sbx-1", "/img/rootfs", "box", { 256, 0.5, 64, 0 }, NULL };
    json_t *c = runtime_build_config (&cfg, &spec);
    if (!s_ok (c != NULL, "config builds for a valid spec"))
        return;

    s_ok (s_int (c, "process.user.uid") == 1000 && s_int (c, "process.user.gid") == 1000
              && !s_at (c, "process.user.additionalGids"),
          "runs as uid 1000 gid 1000 without additional groups");
    json_t *args = s_at (c, "process.args");
    s_ok (json_array_size (args) == 1 && s_array_has (args, "/opt/sandboxd/agent")
              && json_is_false (s_at (c, "process.terminal")),
          "process is the agent, no terminal");
    s_ok (json_is_string (s_at (c, "process.cwd"))
              && strcmp (json_string_value (s_at (c, "process.cwd")), "/workspace") == 0,
          "cwd is /workspace");
    json_t *env = s_at (c, "process.env");
    s_ok (json_array_size (env) == 4
              && s_array_has (env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:"
                                   "/sbin:/bin")
              && s_array_has (env, "HOME=/workspace") && s_array_has (env, "USER=sandbox")
              && s_array_has (env, "LANG=C.UTF-8"),
          "environment is PATH, HOME, USER, LANG");

    static const char *sets[] = { "bounding", "effective", "inheritable", "permitted", "ambient" };
    bool caps_empty = json_is_object (s_at (c, "process.capabilities"));
    for (int i = 0; i < 5; i++) {
        json_t *set = json_object_get (s_at (c, "process.capabilities"), sets[i]);
        caps_empty = caps_empty && json_is_array (set) && json_array_size (set) == 0;
    }
    s_ok (caps_empty, "all five capability sets present and empty");
    s_ok (json_is_true (s_at (c, "process.noNewPrivileges")), "noNewPrivileges");
    s_ok (s_int (c, "process.oomScoreAdj") == 500, "oomScoreAdj 500");

    bool nofile = false, core = false;
    size_t i;
    json_t *v;
    json_array_foreach (s_at (c, "process.rlimits"), i, v)
    {
        const char *t = json_string_value (json_object_get (v, "type"));
        if (strcmp (t, "RLIMIT_NOFILE") == 0)
            nofile = s_int (v, "soft") == 4096 && s_int (v, "hard") == 4096;
        if (strcmp (t, "RLIMIT_CORE") == 0)
            core = s_int (v, "soft") == 0 && s_int (v, "hard") == 0;
    }
    s_ok (nofile && core, "rlimits NOFILE 4096/4096 and CORE 0/0");

    s_ok (strcmp (json_string_value (s_at (c, "root.path")), "rootfs") == 0
              && json_is_false (s_at (c, "root.readonly"))
              && strcmp (json_string_value (s_at (c, "hostname")), "box") == 0,
          "root is the writable rootfs overlay, hostname from spec");

    bool ns_ok = true;
    static const char *want_ns[] = { "pid", "mount", "ipc", "uts", "network" };
    for (int k = 0; k < 5; k++) {
        bool found = false;
        json_array_foreach (
            s_at (c, "linux.namespaces"), i,
            v) if (strcmp (json_string_value (json_object_get (v, "type")), want_ns[k]) == 0
                   && !json_object_get (v, "path")) found
            = true;
        ns_ok = ns_ok && found;
    }
    s_ok (ns_ok, "new pid, mount, ipc, uts and network namespaces");

    s_ok (strcmp (json_string_value (s_at (c, "linux.cgroupsPath")), "/sandboxd/sbx-1") == 0,
          "cgroupsPath is parent/cid");
    s_ok (s_int (c, "linux.resources.memory.limit") == 268435456
              && s_int (c, "linux.resources.memory.swap") == 268435456,
          "memory 256 MiB -> 268435456, swap equal (no swap)");
    s_ok (s_int (c, "linux.resources.cpu.quota") == 50000
              && s_int (c, "linux.resources.cpu.period") == 100000,
          "cpus 0.5 -> quota 50000 / period 100000");
    s_ok (s_int (c, "linux.resources.pids.limit") == 64, "pids limit 64");

    json_t *devs = s_at (c, "linux.resources.devices");
    json_t *d0 = json_array_get (devs, 0);
    bool dev_ok = json_is_false (json_object_get (d0, "allow")) && !json_object_get (d0, "type")
                  && !json_object_get (d0, "major");
    static const int want_dev[][2]
        = { { 1, 3 }, { 1, 5 }, { 1, 7 }, { 1, 8 }, { 1, 9 }, { 5, 0 }, { 5, 2 } };
    for (int k = 0; k < 7; k++) {
        bool found = false;
        json_array_foreach (devs, i, v) found |= json_is_true (json_object_get (v, "allow"))
                                                 && s_int (v, "major") == want_dev[k][0]
                                                 && s_int (v, "minor") == want_dev[k][1];
        dev_ok = dev_ok && found;
    }
    s_ok (dev_ok, "devices: deny all, then allow null zero full random urandom tty ptmx");

    int binds = 0, host_paths = 0;
    json_array_foreach (s_at (c, "mounts"), i, v)
    {
        const char *src = json_string_value (json_object_get (v, "source"));
        if (strcmp (json_string_value (json_object_get (v, "type")), "bind") == 0)
            binds++;
        if (src[0] == '/')
            host_paths++;
    }
    json_t *ctl = s_mount (c, "/run/sandboxd"), *agent = s_mount (c, "/opt/sandboxd/agent");
    json_t *kern = s_mount (c, "/run/kernels"), *mnt = s_mount (c, RUNTIME_MOUNTS_PATH);
    json_t *ctl_opts = json_object_get (ctl, "options");
    s_ok (binds == 4 && host_paths == 4 && ctl && agent && kern && mnt,
          "exactly four host paths, all binds: ctl, agent, kernels, mnt");
    json_t *mnt_opts = json_object_get (mnt, "options");
    s_ok (mnt
              && strcmp (json_string_value (json_object_get (mnt, "source")),
                         "/tmp/x/sandboxes/sbx-1/mnt")
                     == 0
              && s_array_has (mnt_opts, "rslave") && s_array_has (mnt_opts, "rbind")
              && s_array_has (mnt_opts, "ro") && s_array_has (mnt_opts, "nosuid")
              && s_array_has (mnt_opts, "nodev") && !s_array_has (mnt_opts, "rshared")
              && strcmp (json_string_value (s_at (c, "linux.rootfsPropagation")), "rslave") == 0,
          "mnt dir bound read-only as a slave (host mounts propagate in, none out); "
          "rootfs propagation rslave so that runc keeps it a slave");
    s_ok (kern
              && strcmp (json_string_value (json_object_get (kern, "source")),
                         "/tmp/x/sandboxes/sbx-1/kernels")
                     == 0
              && s_array_has (json_object_get (kern, "options"), "noexec")
              && s_array_has (json_object_get (kern, "options"), "nosuid")
              && !s_array_has (json_object_get (kern, "options"), "ro"),
          "kernels dir: the sandbox's own, writable, noexec, nosuid");
    s_ok (strcmp (json_string_value (json_object_get (ctl, "source")), "/tmp/x/sandboxes/sbx-1/ctl")
                  == 0
              && s_array_has (ctl_opts, "ro") && s_array_has (ctl_opts, "nosuid")
              && s_array_has (ctl_opts, "nodev") && s_array_has (ctl_opts, "noexec")
              && s_array_has (ctl_opts, "rbind"),
          "ctl dir bound read-only, nosuid, nodev, noexec at /run/sandboxd");
    s_ok (strcmp (json_string_value (json_object_get (agent, "source")), cfg.agent_path) == 0
              && s_array_has (json_object_get (agent, "options"), "ro"),
          "agent binary bound read-only at /opt/sandboxd/agent");
    json_t *sys = s_mount (c, "/sys"), *pts = s_mount (c, "/dev/pts");
    s_ok (s_mount (c, "/proc") && s_mount (c, "/dev") && s_mount (c, "/dev/shm")
              && s_mount (c, "/dev/mqueue") && sys
              && s_array_has (json_object_get (sys, "options"), "ro") && pts
              && s_array_has (json_object_get (pts, "options"), "newinstance"),
          "proc, dev, devpts (newinstance), shm, mqueue, read-only sysfs");

    json_t *masked = s_at (c, "linux.maskedPaths"), *ro = s_at (c, "linux.readonlyPaths");
    s_ok (s_array_has (masked, "/proc/kcore") && s_array_has (masked, "/proc/keys")
              && s_array_has (masked, "/proc/sched_debug") && s_array_has (masked, "/sys/firmware")
              && s_array_has (masked, "/proc/timer_list") && s_array_has (masked, "/proc/scsi")
              && s_array_has (ro, "/proc/sys") && s_array_has (ro, "/proc/sysrq-trigger")
              && s_array_has (ro, "/proc/irq") && s_array_has (ro, "/proc/bus"),
          "masked and read-only /proc and /sys paths as in Docker");

    s_ok (strcmp (json_string_value (s_at (c, "linux.seccomp.defaultAction")), "SCMP_ACT_ALLOW")
                  == 0
              && s_array_has (s_at (c, "linux.seccomp.architectures"), "SCMP_ARCH_X86_64"),
          "seccomp: allow by default on x86_64/x86/x32");
    static const char *denied[] = { "mount",
                                    "umount2",
                                    "ptrace",
                                    "unshare",
                                    "setns",
                                    "keyctl",
                                    "bpf",
                                    "pivot_root",
                                    "chroot",
                                    "io_uring_setup",
                                    "open_by_handle_at",
                                    "kexec_load",
                                    "userfaultfd",
                                    "perf_event_open",
                                    "fsopen",
                                    "move_mount" };
    bool deny_ok = true;
    for (size_t k = 0; k < sizeof denied / sizeof denied[0]; k++)
        if (s_sc1 (c, denied[k], 0) != EPERM) {
            deny_ok = false;
            printf ("# %s not denied\n", denied[k]);
        }
    s_ok (deny_ok, "seccomp denies mount, ptrace, unshare, setns, keyctl, bpf, ... with EPERM");
    s_ok (s_sc1 (c, "read", 0) == 0 && s_sc1 (c, "execve", 0) == 0, "seccomp allows the rest");
    s_ok (s_sc1 (c, "clone3", 0) == ENOSYS, "clone3 answers ENOSYS");

    /* glibc fork and pthread_create flags, then each namespace flag. */
    bool clone_ok = s_sc1 (c, "clone", 0x01200011) == 0 && s_sc1 (c, "clone", 0x003d0f00) == 0;
    static const uint64_t ns_flags[]
        = { 0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000 };
    for (int k = 0; k < 7; k++)
        clone_ok = clone_ok && s_sc1 (c, "clone", ns_flags[k] | 0x11) == EPERM;
    s_ok (clone_ok, "clone allowed without namespace flags, EPERM with any of them");

    /* personality: exactly Docker's allowed values pass. */
    static const uint64_t allowed[] = { 0, 8, 0x20000, 0x20008, 0xffffffff };
    bool pers_ok = true;
    for (int k = 0; k < 5; k++)
        pers_ok = pers_ok && s_sc1 (c, "personality", allowed[k]) == 0;
    /* Every single bit, every value below 100000, then pseudo-random values
       of all magnitudes, a third of them cut to 32 bits. */
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    for (int k = 0; k < 200000 && pers_ok; k++) {
        uint64_t val = (uint64_t)k;
        if (k < 64)
            val = 1ULL << k;
        else if (k >= 100000) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            val = x >> (k % 64);
            if (k % 3 == 0)
                val &= 0xffffffff;
        }
        bool allow = val == 0 || val == 8 || val == 0x20000 || val == 0x20008 || val == 0xffffffff;
        int e = s_sc1 (c, "personality", val);
        if ((e == 0) != allow) {
            printf ("# personality(0x%llx) -> %d\n", (unsigned long long)val, e);
            pers_ok = false;
        }
    }
    for (int k = 0; k < 32 && pers_ok; k++)
        pers_ok = s_sc1 (c, "personality", 0xffffffffULL & ~(1ULL << k)) == EPERM;
    s_ok (pers_ok, "personality allows only 0, 8, 0x20000, 0x20008, 0xffffffff");
    s_ok (s_sc1 (c, "socket", 17) == EPERM && s_sc1 (c, "socket", 16) == 0
              && s_sc1 (c, "socket", 2) == 0 && s_sc1 (c, "socket", 1) == 0,
          "socket: AF_PACKET denied; netlink, inet and unix allowed");
    json_decref (c);

    runtime_config_t cfg2 = { "runc", NULL, "/a", "sandboxd/", NULL };
    runtime_spec_t spec2 = { "c2", "/tmp/x/c2", "/img", NULL, { 1024, 2, 0, 0 }, "k3y" };
    c = runtime_build_config (&cfg2, &spec2);
    s_ok (c && strcmp (json_string_value (s_at (c, "linux.cgroupsPath")), "/sandboxd/c2") == 0
              && s_int (c, "linux.resources.memory.limit") == 1073741824
              && s_int (c, "linux.resources.cpu.quota") == 200000
              && !s_at (c, "linux.resources.pids")
              && strcmp (json_string_value (s_at (c, "hostname")), "c2") == 0,
          "parent normalised, 1 GiB, 2 cpus -> 200000, no pids limit, hostname defaults to cid");
    s_ok (c && json_array_size (s_at (c, "process.env")) == 5
              && s_array_has (s_at (c, "process.env"), "SANDBOXD_AGENT_KEY=k3y"),
          "the agent key is passed in the agent's environment");
    json_decref (c);

    static const char *bad_cids[] = {
        "",    "UPPER", "../x",
        "a/b", "a b",   "01234567890123456789012345678901234567890123456789012345678901234"
    }; /* 65 */
    bool bad_ok = true;
    for (int k = 0; k < 6; k++) {
        spec2.cid = bad_cids[k];
        c = runtime_build_config (&cfg2, &spec2);
        bad_ok = bad_ok && c == NULL;
        json_decref (c);
    }
    spec2.cid = "c2";
    spec2.dir = "relative/dir";
    c = runtime_build_config (&cfg2, &spec2);
    bad_ok = bad_ok && c == NULL;
    spec2.dir = "/tmp/../etc";
    c = runtime_build_config (&cfg2, &spec2);
    bad_ok = bad_ok && c == NULL;
    s_ok (bad_ok, "invalid container ids and unsafe directories are refused");

    err_t err;
    err_clear (&err);
    spec2.cid = "../../etc";
    spec2.dir = "/tmp/x/c2";
    s_ok (runtime_prepare (&cfg2, &spec2, &err) < 0 && err.status == 500 && err.message[0],
          "prepare returns an error for a bad cid: %s", err.message);
}

/* ---- integration: real runc, real overlay, real cgroups --------------- */

typedef struct {
    char tmp[256];
    char lower[512];
    char agent[512];
    char parent[64];
    char dir[2][512];
    char cid[2][32];
    runtime_config_t cfg;
    char root[512];
} it_t;

static char *
s_read (const char *path)
{
    return util_read_file (path, 1 << 20, NULL);
}

/* Value of key in a key=value report, copied into buf; "" if absent. */
static const char *
s_report (const char *report, const char *key, char *buf, size_t size)
{
    buf[0] = '\0';
    size_t klen = strlen (key);
    for (const char *p = report; p && *p; p = strchr (p, '\n') ? strchr (p, '\n') + 1 : NULL)
        if (strncmp (p, key, klen) == 0 && p[klen] == '=') {
            size_t n = strcspn (p + klen + 1, "\n");
            snprintf (buf, size, "%.*s", (int)n, p + klen + 1);
            break;
        }
    return buf;
}

static bool
s_report_is (const char *report, const char *key, const char *want)
{
    char buf[256];
    s_report (report, key, buf, sizeof buf);
    if (strcmp (buf, want) != 0) {
        printf ("# %s=%s, want %s\n", key, buf, want);
        return false;
    }
    return true;
}

/* Number of mounts at exactly path in our mount namespace. */
static int
s_mounts_at (const char *path)
{
    char *mi = s_read ("/proc/self/mountinfo");
    int n = 0;
    for (char *line = mi; line && *line;) {
        char *nl = strchr (line, '\n');
        if (nl)
            *nl = '\0';
        char mp[4096];
        if (sscanf (line, "%*s %*s %*s %*s %4095s", mp) == 1 && strcmp (mp, path) == 0)
            n++;
        line = nl ? nl + 1 : NULL;
    }
    free (mi);
    return n;
}

static bool
s_file_is (const char *path, const char *want)
{
    char *s = s_read (path);
    bool ok = s && strtoll (s, NULL, 10) == strtoll (want, NULL, 10);
    if (!ok)
        printf ("# %s: %s, want %s\n", path, s ? s : strerror (errno), want);
    free (s);
    return ok;
}

/* True once pid has exited: no such process, or a zombie waiting for the
   host's init to reap it. */
static bool
s_gone (int pid)
{
    char path[64];
    snprintf (path, sizeof path, "/proc/%d/stat", pid);
    char *stat = s_read (path);
    char *rp = stat ? strrchr (stat, ')') : NULL;
    bool gone = !stat || (rp && (rp[2] == 'Z' || rp[2] == 'X'));
    if (!gone)
        printf ("# pid %d still there: %.60s\n", pid, stat);
    free (stat);
    return gone;
}

/* Any directory for cid left in a cgroup hierarchy. */
static bool
s_cgroup_left (const char *parent, const char *cid)
{
    DIR *d = opendir ("/sys/fs/cgroup");
    struct dirent *de;
    bool left = false;
    while (d && (de = readdir (d))) {
        char p[1024];
        struct stat st;
        snprintf (p, sizeof p, "/sys/fs/cgroup/%s%s/%s", de->d_name, parent, cid);
        if (de->d_name[0] != '.' && lstat (p, &st) == 0) {
            printf ("# left behind: %s\n", p);
            left = true;
        }
    }
    if (d)
        closedir (d);
    return left;
}

static int
s_setup_lower (it_t *it)
{
    const char *env = getenv ("SANDBOXD_TEST_LOWER");
    struct stat st;
    if (env && *env) {
        snprintf (it->lower, sizeof it->lower, "%s", env);
        return stat (env, &st) == 0 && S_ISDIR (st.st_mode) ? 0 : -1;
    }
    const char *img = "/var/cache/sandboxd/images/current/rootfs";
    if (stat (img, &st) == 0 && S_ISDIR (st.st_mode)) {
        /* Resolve the symlink once: the overlay keeps the real path. */
        if (!realpath (img, it->lower))
            return -1;
        return 0;
    }
    /* A bare lower layer: runc creates mount points; the agent is static. */
    snprintf (it->lower, sizeof it->lower, "%s/lower", it->tmp);
    static const char *dirs[] = { "", "/proc", "/dev", "/sys", "/run", "/opt", "/etc" };
    char p[1024];
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        snprintf (p, sizeof p, "%s%s", it->lower, dirs[i]);
        if (mkdir (p, 0755) < 0)
            return -1;
    }
    snprintf (p, sizeof p, "%s/tmp", it->lower);
    if (mkdir (p, 01777) < 0 || chmod (p, 01777) < 0)
        return -1;
    snprintf (p, sizeof p, "%s/workspace", it->lower);
    if (mkdir (p, 0755) < 0 || chown (p, 1000, 1000) < 0)
        return -1;
    return 0;
}

/* Build the stand-in agent: this file, static, with SANDBOXD_TEST_AGENT.
   __FILE__ is the path the compiler was given, relative to the directory
   it ran in, which is where tests run from too (make check, or by hand
   from the top of the tree). */
static int
s_build_agent (it_t *it)
{
    snprintf (it->agent, sizeof it->agent, "%s/agent", it->tmp);
    char out[4096];
    char *argv[] = { "gcc", "-std=gnu11", "-static", "-O1", "-pthread", "-DSANDBOXD_TEST_AGENT",
                     "-o",  it->agent,    __FILE__,  NULL };
    if (access (__FILE__, R_OK) < 0 || util_run (argv, out, sizeof out) != 0) {
        printf ("# building the test agent from %s failed: %s\n", __FILE__, out);
        return -1;
    }
    return 0;
}

static void
s_cleanup (it_t *it)
{
    err_t err;
    for (int k = 0; k < 2; k++)
        if (it->cid[k][0])
            runtime_destroy (&it->cfg, it->cid[k], it->dir[k], &err);
    /* The test's cgroup parent: runc creates it, nobody else removes it. */
    DIR *d = opendir ("/sys/fs/cgroup");
    struct dirent *de;
    while (d && (de = readdir (d))) {
        char p[1024];
        snprintf (p, sizeof p, "/sys/fs/cgroup/%s%s", de->d_name, it->parent);
        if (de->d_name[0] != '.')
            rmdir (p);
    }
    if (d)
        closedir (d);
    util_rm_rf (it->tmp);
}

static void
test_integration (void)
{
    static const char *what = "container lifecycle with real runc";
    char out[256];
    char *ver[] = { "runc", "--version", NULL };
    if (geteuid () != 0) {
        s_skip ("not root", what);
        return;
    }
    if (util_run (ver, out, sizeof out) != 0) {
        s_skip ("runc not found", what);
        return;
    }

    it_t it;
    memset (&it, 0, sizeof it);
    snprintf (it.tmp, sizeof it.tmp, "/tmp/sandboxd-test-runtime-XXXXXX");
    if (!mkdtemp (it.tmp)) {
        s_ok (false, "mkdtemp: %s", strerror (errno));
        return;
    }
    char rnd[9];
    util_random_hex (rnd, 4);
    snprintf (it.parent, sizeof it.parent, "/sandboxd-test-%s", rnd);
    snprintf (it.root, sizeof it.root, "%s/runc", it.tmp);
    for (int k = 0; k < 2; k++) {
        snprintf (it.cid[k], sizeof it.cid[k], "rt%d-%s", k, rnd);
        snprintf (it.dir[k], sizeof it.dir[k], "%s/sandboxes/%s", it.tmp, it.cid[k]);
    }
    if (s_setup_lower (&it) < 0) {
        s_skip ("no image rootfs and could not make a lower layer", what);
        util_rm_rf (it.tmp);
        return;
    }
    if (s_build_agent (&it) < 0) {
        s_skip ("cannot build a static test agent (gcc -static)", what);
        util_rm_rf (it.tmp);
        return;
    }
    printf ("# lower layer: %s\n", it.lower);
    it.cfg = (runtime_config_t){ "runc", it.root, it.agent, it.parent, NULL };
    runtime_spec_t spec = { it.cid[0], it.dir[0], it.lower, "sbx-host", { 256, 0.5, 64, 0 }, NULL };
    err_t err;
    err_clear (&err);
    char path[1024], rootfs[1024];
    snprintf (rootfs, sizeof rootfs, "%s/bundle/rootfs", it.dir[0]);

    s_ok (runtime_prepare (&it.cfg, &spec, &err) == 0, "prepare: %s", err.message);
    s_ok (runtime_prepare (&it.cfg, &spec, &err) == 0 && s_mounts_at (rootfs) == 1,
          "prepare again is idempotent: one overlay mount (%d)", s_mounts_at (rootfs));
    struct stat st;
    snprintf (path, sizeof path, "%s/ctl", it.dir[0]);
    bool ctl_ok = stat (path, &st) == 0 && (st.st_mode & 07777) == 0755 && st.st_uid == 0;
    s_ok (ctl_ok && stat (it.dir[0], &st) == 0 && (st.st_mode & 0777) == 0700,
          "sandbox dir 0700, ctl/ 0755 root");

    int64_t t0 = util_mono_us ();
    int rc = runtime_start (&it.cfg, &spec, &err);
    int64_t ms = (util_mono_us () - t0) / 1000;
    s_ok (rc == 0, "start: %s", rc == 0 ? "ok" : err.message);
    printf ("# runtime_start (delete + run -d) took %lld ms\n", (long long)ms);
    if (rc != 0) {
        s_cleanup (&it);
        return;
    }
    s_ok (runtime_state (&it.cfg, it.cid[0]) == RUNTIME_RUNNING, "state is RUNNING");
    int pid = runtime_pid (&it.cfg, it.cid[0]);
    snprintf (path, sizeof path, "%s/init.pid", it.dir[0]);
    char *pidfile = s_read (path);
    s_ok (pid > 0 && pidfile && atoi (pidfile) == pid, "pid %d matches init.pid", pid);
    free (pidfile);

    /* The shared point: a mount made on the host below <dir>/mnt after the
       container started shows up inside it at RUNTIME_MOUNTS_PATH. */
    char mnt[1024], sub[1100], marker[1200], inside[1200];
    snprintf (mnt, sizeof mnt, "%s/mnt", it.dir[0]);
    snprintf (sub, sizeof sub, "%s/p0", mnt);
    s_ok (s_mounts_at (mnt) == 1, "mnt/ is one mount of its own after two prepares (%d)",
          s_mounts_at (mnt));
    bool propagated = false;
    if (mkdir (sub, 0700) == 0 && mount ("tmpfs", sub, "tmpfs", 0, "size=64k") == 0) {
        snprintf (marker, sizeof marker, "%s/marker", sub);
        FILE *f = fopen (marker, "w");
        if (f)
            fclose (f);
        snprintf (inside, sizeof inside, "/proc/%d/root%s/p0/marker", pid, RUNTIME_MOUNTS_PATH);
        propagated = access (inside, F_OK) == 0;
    }
    s_ok (propagated, "a host mount below mnt/ propagates into the running container");
    /* Left mounted on purpose: destroy must clean it up. */

    snprintf (path, sizeof path, "/sys/fs/cgroup/memory%s/%s/memory.limit_in_bytes", it.parent,
              it.cid[0]);
    bool cg_ok = s_file_is (path, "268435456");
    snprintf (path, sizeof path, "/sys/fs/cgroup/memory%s/%s/memory.memsw.limit_in_bytes",
              it.parent, it.cid[0]);
    cg_ok = cg_ok && s_file_is (path, "268435456");
    s_ok (cg_ok, "memory cgroup: 256 MiB, memsw equal");
    snprintf (path, sizeof path, "/sys/fs/cgroup/pids%s/%s/pids.max", it.parent, it.cid[0]);
    s_ok (s_file_is (path, "64"), "pids cgroup: pids.max 64");
    snprintf (path, sizeof path, "/sys/fs/cgroup/cpu%s/%s/cpu.cfs_quota_us", it.parent, it.cid[0]);
    s_ok (s_file_is (path, "50000"), "cpu cgroup: quota 50000");

    /* What the agent saw from inside. */
    char report_path[1024];
    snprintf (report_path, sizeof report_path, "%s/upper/tmp/report", it.dir[0]);
    char *rep = NULL;
    for (int i = 0; i < 300 && !(rep = s_read (report_path)); i++) {
        struct timespec ts = { 0, 10 * 1000 * 1000 };
        nanosleep (&ts, NULL);
    }
    if (s_ok (rep != NULL, "agent wrote its report")) {
        s_ok (s_report_is (rep, "uid", "1000") && s_report_is (rep, "gid", "1000")
                  && s_report_is (rep, "groups", "0") && s_report_is (rep, "pid", "1")
                  && s_report_is (rep, "cwd", "/workspace"),
              "inside: uid/gid 1000, no extra groups, PID 1, cwd /workspace");
        s_ok (s_report_is (rep, "CapInh", "0000000000000000")
                  && s_report_is (rep, "CapPrm", "0000000000000000")
                  && s_report_is (rep, "CapEff", "0000000000000000")
                  && s_report_is (rep, "CapBnd", "0000000000000000")
                  && s_report_is (rep, "CapAmb", "0000000000000000")
                  && s_report_is (rep, "NoNewPrivs", "1") && s_report_is (rep, "Seccomp", "2"),
              "inside: no capabilities, no_new_privs, seccomp filter");
        s_ok (s_report_is (rep, "nofile", "4096/4096") && s_report_is (rep, "core", "0/0")
                  && s_report_is (rep, "oom", "500"),
              "inside: rlimits and oom_score_adj");
        s_ok (s_report_is (rep, "hostname", "sbx-host") && s_report_is (rep, "netifs", "lo,")
                  && s_report_is (rep, "lo_up", "1"),
              "inside: hostname, only loopback and it is up");
        s_ok (s_report_is (rep, "memcg", "/"), "inside: own cgroup namespace");
        s_ok (s_report_is (rep, "mount", "1") && s_report_is (rep, "unshare_user", "1")
                  && s_report_is (rep, "clone_newuser", "1")
                  && s_report_is (rep, "clone_newnet", "1") && s_report_is (rep, "clone_plain", "0")
                  && s_report_is (rep, "clone3", "38") && s_report_is (rep, "thread", "0"),
              "inside: mount/unshare/namespace clone EPERM, clone3 ENOSYS, fork and threads work");
        s_ok (s_report_is (rep, "ptrace", "1") && s_report_is (rep, "keyctl", "1")
                  && s_report_is (rep, "io_uring", "1") && s_report_is (rep, "af_packet", "1")
                  && s_report_is (rep, "af_netlink", "0"),
              "inside: ptrace, keyctl, io_uring, AF_PACKET EPERM; netlink works");
        s_ok (s_report_is (rep, "pers_query", "0") && s_report_is (rep, "pers_linux32", "0")
                  && s_report_is (rep, "pers_bad", "1"),
              "inside: personality query/PER_LINUX32 allowed, ADDR_NO_RANDOMIZE EPERM");
        s_ok (s_report_is (rep, "ctl_flags", "1111") && s_report_is (rep, "ctl_mkdir", "30")
                  && s_report_is (rep, "agent_flags", "111"),
              "inside: /run/sandboxd ro,nosuid,nodev,noexec; agent ro,nosuid,nodev");
        s_ok (s_report_is (rep, "keys_masked", "1") && s_report_is (rep, "firmware_entries", "0")
                  && s_report_is (rep, "devnull", "0"),
              "inside: /proc/keys and /sys/firmware masked, /dev/null usable");
        free (rep);
    }
    snprintf (path, sizeof path, "%s/agent.log", it.dir[0]);
    char *log = s_read (path);
    s_ok (log && strstr (log, "test-agent: report written"), "agent stdout goes to agent.log");
    free (log);

    /* Starting again replaces the running container. */
    rc = runtime_start (&it.cfg, &spec, &err);
    int pid2 = runtime_pid (&it.cfg, it.cid[0]);
    s_ok (rc == 0 && runtime_state (&it.cfg, it.cid[0]) == RUNTIME_RUNNING && pid2 > 0
              && pid2 != pid,
          "start again replaces the stale container (pid %d -> %d)", pid, pid2);

    /* A start that fails says why. */
    runtime_config_t bad = it.cfg;
    bad.agent_path = "/nonexistent/sandbox-agent";
    /* This one also has a size-limited writable layer (64 MiB). */
    runtime_spec_t spec1 = { it.cid[1], it.dir[1], it.lower, NULL, { 64, 0.1, 16, 64 }, NULL };
    char layer1[1100], upper1[1100], image1[1100];
    snprintf (layer1, sizeof layer1, "%s/layer", it.dir[1]);
    snprintf (upper1, sizeof upper1, "%s/layer/upper", it.dir[1]);
    snprintf (image1, sizeof image1, "%s/layer.img", it.dir[1]);
    rc = runtime_prepare (&bad, &spec1, &err);
    struct statfs lfs;
    bool layer_ok = rc == 0 && s_mounts_at (layer1) == 1 && statfs (layer1, &lfs) == 0
                    && lfs.f_type == 0xEF53 /* ext4 */
                    && (int64_t)lfs.f_blocks * lfs.f_bsize <= 64LL << 20
                    && (int64_t)lfs.f_blocks * lfs.f_bsize > 48LL << 20 && stat (upper1, &st) == 0
                    && (st.st_mode & 0777) == 0755;
    s_ok (layer_ok, "disk_mb 64: upper/ on a 64 MiB ext4 layer (%s)", err.message);
    s_ok (rc == 0 && runtime_prepare (&bad, &spec1, &err) == 0 && s_mounts_at (layer1) == 1,
          "prepare again keeps one layer mount");
    if (stat (image1, &st) == 0)
        s_ok (st.st_blocks * 512 < (8LL << 20), "the layer image is sparse (%lld KiB on disk)",
              (long long)st.st_blocks / 2);
    else
        s_ok (false, "layer.img exists");
    if (rc == 0)
        rc = runtime_start (&bad, &spec1, &err);
    s_ok (rc < 0 && err.status == 500 && strstr (err.message, "nonexistent"),
          "failed start carries runc's message: %s", err.message);
    s_ok (runtime_state (&bad, it.cid[1]) == RUNTIME_MISSING, "failed start leaves no container");
    err_clear (&err);
    s_ok (runtime_destroy (&bad, it.cid[1], it.dir[1], &err) == 0, "destroy after failed start: %s",
          err.message);
    s_ok (s_mounts_at (layer1) == 0 && stat (it.dir[1], &st) < 0,
          "destroy unmounts the layer and removes its image");
    bool loop_left = false;
    DIR *blocks = opendir ("/sys/block");
    for (struct dirent *e; blocks && (e = readdir (blocks));) {
        char bf[512];
        snprintf (bf, sizeof bf, "/sys/block/%s/loop/backing_file", e->d_name);
        char *b = strncmp (e->d_name, "loop", 4) ? NULL : s_read (bf);
        loop_left |= b && strstr (b, it.dir[1]);
        free (b);
    }
    if (blocks)
        closedir (blocks);
    s_ok (!loop_left, "no loop device left on the layer image");

    t0 = util_mono_us ();
    rc = runtime_destroy (&it.cfg, it.cid[0], it.dir[0], &err);
    ms = (util_mono_us () - t0) / 1000;
    s_ok (rc == 0, "destroy: %s", rc == 0 ? "ok" : err.message);
    printf ("# runtime_destroy took %lld ms\n", (long long)ms);
    s_ok (s_mounts_at (rootfs) == 0, "no mount left at bundle/rootfs");
    s_ok (s_mounts_at (mnt) == 0 && s_mounts_at (sub) == 0,
          "no mount left at mnt/ nor below it (destroy unmounts leftovers)");
    s_ok (stat (it.dir[0], &st) < 0 && errno == ENOENT, "sandbox dir removed");
    char *list[] = { "runc", "--root", it.root, "list", "-q", NULL };
    char listed[1024];
    util_run (list, listed, sizeof listed);
    s_ok (listed[0] == '\0', "runc list is empty%s%s", listed[0] ? ": " : "", listed);
    s_ok (!s_cgroup_left (it.parent, it.cid[0]) && !s_cgroup_left (it.parent, it.cid[1]),
          "no cgroup left for the containers");
    s_ok (s_gone (pid) && s_gone (pid2), "container processes are gone");
    s_ok (runtime_state (&it.cfg, it.cid[0]) == RUNTIME_MISSING
              && runtime_pid (&it.cfg, it.cid[0]) == -1,
          "state MISSING, pid -1 after destroy");
    s_ok (runtime_destroy (&it.cfg, it.cid[0], it.dir[0], &err) == 0,
          "destroy again tolerates everything gone");
    s_cleanup (&it);
}

int
main (void)
{
    log_set_level (LOG_LVL_WARN);
    test_config ();
    test_integration ();
    return tap_done ();
}

#else /* SANDBOXD_TEST_AGENT */

/* The stand-in agent: probes its confinement from inside the container,
   writes key=value lines to /tmp/report (the test reads them from the
   upper layer), says so on stdout (agent.log) and waits, as PID 1, to be
   killed. Each probe records 0 or the errno it got. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

static FILE *s_out;

#define PROBE(name, expr)                                                                          \
    do {                                                                                           \
        errno = 0;                                                                                 \
        long r_ = (long)(expr);                                                                    \
        fprintf (s_out, "%s=%d\n", name, r_ < 0 ? errno : 0);                                      \
    } while (0)

static void *
s_thread (void *arg)
{
    return arg;
}

static void
s_status (const char *key)
{
    char line[256];
    size_t klen = strlen (key);
    FILE *f = fopen ("/proc/self/status", "r");
    while (f && fgets (line, sizeof line, f))
        if (strncmp (line, key, klen) == 0 && line[klen] == ':') {
            char *v = line + klen + 1;
            v += strspn (v, " \t");
            v[strcspn (v, "\n")] = '\0';
            fprintf (s_out, "%s=%s\n", key, v);
        }
    if (f)
        fclose (f);
}

/* Raw clone(2) with flags, as fork: 0 or the errno. */
static int
s_clone (unsigned long flags)
{
    long r = syscall (SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
    if (r == 0)
        _exit (0);
    if (r < 0)
        return errno;
    waitpid ((pid_t)r, NULL, 0);
    return 0;
}

static int
s_count_entries (const char *path, char *names, size_t size)
{
    int n = 0;
    DIR *d = opendir (path);
    struct dirent *de;
    if (names)
        names[0] = '\0';
    while (d && (de = readdir (d)))
        if (de->d_name[0] != '.') {
            n++;
            if (names && strlen (names) + strlen (de->d_name) + 2 < size) {
                strcat (names, de->d_name);
                strcat (names, ",");
            }
        }
    if (d)
        closedir (d);
    return n;
}

int
main (void)
{
    char buf[512];
    struct rlimit rl;
    struct statvfs sv;
    struct stat st;

    s_out = fopen ("/tmp/report.tmp", "w");
    if (!s_out) {
        perror ("test-agent: /tmp/report.tmp");
        return 1;
    }
    fprintf (s_out, "uid=%d\ngid=%d\ngroups=%d\npid=%d\n", (int)getuid (), (int)getgid (),
             getgroups (0, NULL), (int)getpid ());
    fprintf (s_out, "cwd=%s\n", getcwd (buf, sizeof buf) ? buf : "?");
    s_status ("CapInh");
    s_status ("CapPrm");
    s_status ("CapEff");
    s_status ("CapBnd");
    s_status ("CapAmb");
    s_status ("NoNewPrivs");
    s_status ("Seccomp");
    getrlimit (RLIMIT_NOFILE, &rl);
    fprintf (s_out, "nofile=%llu/%llu\n", (unsigned long long)rl.rlim_cur,
             (unsigned long long)rl.rlim_max);
    getrlimit (RLIMIT_CORE, &rl);
    fprintf (s_out, "core=%llu/%llu\n", (unsigned long long)rl.rlim_cur,
             (unsigned long long)rl.rlim_max);
    FILE *f = fopen ("/proc/self/oom_score_adj", "r");
    if (f && fgets (buf, sizeof buf, f))
        fprintf (s_out, "oom=%.*s\n", (int)strcspn (buf, "\n"), buf);
    if (f)
        fclose (f);
    gethostname (buf, sizeof buf);
    fprintf (s_out, "hostname=%s\n", buf);

    /* Network: a namespace of its own with only loopback, and that up. */
    s_count_entries ("/sys/class/net", buf, sizeof buf);
    fprintf (s_out, "netifs=%s\n", buf);
    struct ifreq ifr;
    memset (&ifr, 0, sizeof ifr);
    strcpy (ifr.ifr_name, "lo");
    int sock = socket (AF_INET, SOCK_DGRAM, 0);
    fprintf (s_out, "lo_up=%d\n",
             ioctl (sock, SIOCGIFFLAGS, &ifr) == 0 && (ifr.ifr_flags & IFF_UP));
    close (sock);

    /* With a cgroup namespace the container sees itself at the root. */
    f = fopen ("/proc/self/cgroup", "r");
    while (f && fgets (buf, sizeof buf, f))
        if (strstr (buf, ":memory:"))
            fprintf (s_out, "memcg=%.*s\n", (int)strcspn (strstr (buf, ":memory:") + 8, "\n"),
                     strstr (buf, ":memory:") + 8);
    if (f)
        fclose (f);

    /* seccomp. unshare(CLONE_NEWUSER), ptrace, keyctl and io_uring all work
       for an unprivileged user without it. */
    PROBE ("mount", mount ("none", "/tmp", "tmpfs", 0, NULL));
    PROBE ("unshare_user", unshare (CLONE_NEWUSER));
    fprintf (s_out, "clone_newuser=%d\n", s_clone (CLONE_NEWUSER));
    fprintf (s_out, "clone_newnet=%d\n", s_clone (CLONE_NEWNET));
    fprintf (s_out, "clone_plain=%d\n", s_clone (0));
    unsigned long long clone3_args[11] = { 0 };
    clone3_args[4] = SIGCHLD; /* exit_signal */
    PROBE ("clone3", syscall (435, clone3_args, sizeof clone3_args));
    pthread_t t;
    fprintf (s_out, "thread=%d\n", pthread_create (&t, NULL, s_thread, NULL));
    pthread_join (t, NULL);
    PROBE ("ptrace", ptrace (PTRACE_TRACEME, 0, NULL, NULL));
    PROBE ("keyctl", syscall (SYS_keyctl, 0 /* GET_KEYRING_ID */, -3 /* session */, 0));
    PROBE ("io_uring", syscall (425 /* io_uring_setup */, 1, buf));
    PROBE ("pers_query", personality (0xffffffff));
    PROBE ("pers_linux32", personality (PER_LINUX32));
    PROBE ("pers_bad", personality (ADDR_NO_RANDOMIZE));
    personality (PER_LINUX);
    PROBE ("af_packet", socket (AF_PACKET, SOCK_DGRAM, 0));
    PROBE ("af_netlink", socket (AF_NETLINK, SOCK_RAW, 0));

    /* The two host paths and how they are mounted. */
    if (statvfs ("/run/sandboxd", &sv) == 0)
        fprintf (s_out, "ctl_flags=%d%d%d%d\n", !!(sv.f_flag & ST_RDONLY),
                 !!(sv.f_flag & ST_NOSUID), !!(sv.f_flag & ST_NODEV), !!(sv.f_flag & ST_NOEXEC));
    if (statvfs ("/opt/sandboxd/agent", &sv) == 0)
        fprintf (s_out, "agent_flags=%d%d%d\n", !!(sv.f_flag & ST_RDONLY),
                 !!(sv.f_flag & ST_NOSUID), !!(sv.f_flag & ST_NODEV));
    PROBE ("ctl_mkdir", mkdir ("/run/sandboxd/x", 0755));

    /* Masked paths: files become /dev/null, directories an empty tmpfs. */
    fprintf (s_out, "keys_masked=%d\n",
             stat ("/proc/keys", &st) == 0 && S_ISCHR (st.st_mode) && st.st_rdev == makedev (1, 3));
    fprintf (s_out, "firmware_entries=%d\n", s_count_entries ("/sys/firmware", NULL, 0));
    PROBE ("devnull", open ("/dev/null", O_RDWR));

    fclose (s_out);
    rename ("/tmp/report.tmp", "/tmp/report");
    printf ("test-agent: report written\n");
    fflush (stdout);
    for (;;)
        pause ();
}

#endif /* SANDBOXD_TEST_AGENT */
