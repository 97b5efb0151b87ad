/* runtime.c - one sandbox = one OCI bundle on an overlayfs rootfs, run by runc. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* statx, posix_spawn_file_actions_addclosefrom_np */
#endif
#include "runtime.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <linux/loop.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef OVERLAYFS_SUPER_MAGIC
#define OVERLAYFS_SUPER_MAGIC 0x794c7630
#endif

#define S_UID            1000
#define S_GID            1000
#define S_CPU_PERIOD     100000
#define S_OOM_SCORE_ADJ  500
#define S_AGENT_PATH     "/opt/sandboxd/agent"
#define S_CTL_PATH       "/run/sandboxd"
#define S_KERNELS_PATH   "/run/kernels"
#define S_DEFAULT_PARENT "/sandboxd"
#define S_ERR_TAIL       400

extern char **environ;

static const char *const s_env[]
    = { "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/workspace",
        "USER=sandbox", "LANG=C.UTF-8", NULL };

/* Docker's defaults (moby oci/defaults.go), which also cover runc spec's. */
static const char *const s_masked_paths[] = { "/proc/asound",
                                              "/proc/acpi",
                                              "/proc/kcore",
                                              "/proc/keys",
                                              "/proc/latency_stats",
                                              "/proc/timer_list",
                                              "/proc/timer_stats",
                                              "/proc/sched_debug",
                                              "/proc/scsi",
                                              "/sys/firmware",
                                              "/sys/devices/virtual/powercap",
                                              NULL };

static const char *const s_readonly_paths[]
    = { "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger", NULL };

/* Denied with EPERM regardless of arguments: what Docker's default profile
   leaves out of its allow list for a container without capabilities, plus
   the new mount API and io_uring. Names this libseccomp does not know are
   skipped by runc (checked with runc 1.1.5 / libseccomp 2.5.4, which knows
   every name here). */
static const char *const s_denied_syscalls[] = { "acct",
                                                 "add_key",
                                                 "bpf",
                                                 "chroot",
                                                 "clock_adjtime",
                                                 "clock_adjtime64",
                                                 "clock_settime",
                                                 "clock_settime64",
                                                 "create_module",
                                                 "delete_module",
                                                 "fanotify_init",
                                                 "finit_module",
                                                 "fsconfig",
                                                 "fsmount",
                                                 "fsopen",
                                                 "fspick",
                                                 "get_kernel_syms",
                                                 "get_mempolicy",
                                                 "init_module",
                                                 "io_uring_enter",
                                                 "io_uring_register",
                                                 "io_uring_setup",
                                                 "ioperm",
                                                 "iopl",
                                                 "kcmp",
                                                 "kexec_file_load",
                                                 "kexec_load",
                                                 "keyctl",
                                                 "lookup_dcookie",
                                                 "mbind",
                                                 "migrate_pages",
                                                 "mount",
                                                 "mount_setattr",
                                                 "move_mount",
                                                 "move_pages",
                                                 "name_to_handle_at",
                                                 "nfsservctl",
                                                 "open_by_handle_at",
                                                 "open_tree",
                                                 "perf_event_open",
                                                 "pidfd_getfd",
                                                 "pivot_root",
                                                 "process_vm_readv",
                                                 "process_vm_writev",
                                                 "ptrace",
                                                 "query_module",
                                                 "quotactl",
                                                 "quotactl_fd",
                                                 "reboot",
                                                 "request_key",
                                                 "set_mempolicy",
                                                 "setns",
                                                 "settimeofday",
                                                 "stime",
                                                 "swapoff",
                                                 "swapon",
                                                 "_sysctl",
                                                 "sysfs",
                                                 "syslog",
                                                 "umount",
                                                 "umount2",
                                                 "unshare",
                                                 "uselib",
                                                 "userfaultfd",
                                                 "ustat",
                                                 "vm86",
                                                 "vm86old",
                                                 NULL };

/* clone(2) flags that create namespaces: NEWNS, NEWCGROUP, NEWUTS, NEWIPC,
   NEWUSER, NEWPID, NEWNET (Docker's 0x7E020000). */
#define S_CLONE_NS_FLAGS 0x7E020000ULL

/* personality(2) values Docker allows: PER_LINUX, PER_LINUX32, UNAME26,
   UNAME26|PER_LINUX32 and the 0xffffffff query. */
#define S_PERSONA_BITS 0x20008ULL

static bool
s_valid_cid (const char *cid)
{
    size_t n = cid ? strlen (cid) : 0;
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = cid[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
            return false;
    }
    return true;
}

/* A directory we create, mount on or delete: absolute, no "..", no
   characters that overlayfs mount options cannot carry. */
static bool
s_valid_dir (const char *dir)
{
    if (!dir || dir[0] != '/' || strlen (dir) > 3000 || strcmp (dir, "/") == 0)
        return false;
    if (strpbrk (dir, ",:\\\n"))
        return false;
    for (const char *p = dir; (p = strstr (p, "..")); p += 2)
        if ((p == dir || p[-1] == '/') && (p[2] == '/' || p[2] == '\0'))
            return false;
    return true;
}

static int
s_path (char *buf, size_t size, const char *dir, const char *rel)
{
    if (snprintf (buf, size, "%s/%s", dir, rel) >= (int)size) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return 0;
}

static const char *
s_runtime (const runtime_config_t *cfg)
{
    return cfg->runtime && *cfg->runtime ? cfg->runtime : "runc";
}

/* cgroupsPath for cid: parent + "/" + cid, absolute, without doubled
   slashes. 0 or -1 if it does not fit or the parent is unsafe. */
static int
s_cgroups_path (const runtime_config_t *cfg, const char *cid, char *buf, size_t size)
{
    const char *parent
        = cfg->cgroup_parent && *cfg->cgroup_parent ? cfg->cgroup_parent : S_DEFAULT_PARENT;
    while (*parent == '/')
        parent++;
    size_t plen = strlen (parent);
    while (plen > 0 && parent[plen - 1] == '/')
        plen--;
    if (strstr (parent, "..") || strchr (parent, '\n'))
        return -1;
    int n = plen ? snprintf (buf, size, "/%.*s/%s", (int)plen, parent, cid)
                 : snprintf (buf, size, "/%s", cid);
    return n < 0 || n >= (int)size ? -1 : 0;
}

/* 1 if path is the root of a mount, 0 if not (or absent), -1 with errno. */
static int
s_is_mountpoint (const char *path)
{
    struct statx stx;
    if (statx (AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, STATX_TYPE, &stx) < 0)
        return errno == ENOENT ? 0 : -1;
    if (stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT)
        return (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT) ? 1 : 0;
    /* Kernels before 5.8: a mount of another filesystem changes st_dev. */
    char parent[4096];
    struct stat st, pst;
    if (s_path (parent, sizeof parent, path, "..") < 0 || lstat (path, &st) < 0
        || stat (parent, &pst) < 0)
        return -1;
    return st.st_dev != pst.st_dev ? 1 : 0;
}

static json_t *
s_strings (const char *const *v)
{
    json_t *a = json_array ();
    for (; v && *v; v++)
        json_array_append_new (a, json_string (*v));
    return a;
}

static void
s_add_mount (json_t *mounts, const char *dest, const char *type, const char *source,
             const char *const *options)
{
    json_t *m = json_pack ("{s:s, s:s, s:s}", "destination", dest, "type", type, "source", source);
    if (options)
        json_object_set_new (m, "options", s_strings (options));
    json_array_append_new (mounts, m);
}

static json_t *
s_rlimit (const char *type, uint64_t soft, uint64_t hard)
{
    return json_pack ("{s:s, s:I, s:I}", "type", type, "soft", (json_int_t)soft, "hard",
                      (json_int_t)hard);
}

static json_t *
s_device_rule (bool allow, const char *type, int major, int minor)
{
    json_t *d = json_pack ("{s:b, s:s}", "allow", allow, "access", "rwm");
    if (type)
        json_object_set_new (d, "type", json_string (type));
    if (major >= 0)
        json_object_set_new (d, "major", json_integer (major));
    if (minor >= 0)
        json_object_set_new (d, "minor", json_integer (minor));
    return d;
}

static json_t *
s_arg (const char *op, uint64_t value, uint64_t value_two)
{
    json_t *a = json_pack ("{s:i, s:I, s:s}", "index", 0, "value", (json_int_t)value, "op", op);
    if (value_two || strcmp (op, "SCMP_CMP_MASKED_EQ") == 0)
        json_object_set_new (a, "valueTwo", json_integer ((json_int_t)value_two));
    return a;
}

static json_t *
s_rule (const char *name, int errno_ret, json_t *args)
{
    json_t *r = json_pack ("{s:[s], s:s, s:i}", "names", name, "action", "SCMP_ACT_ERRNO",
                           "errnoRet", errno_ret);
    if (args)
        json_object_set_new (r, "args", args);
    return r;
}

/* The seccomp profile: allow by default, deny what a capability-less
   container has no business calling.

   Conditions must be written with one comparison per argument: when a rule
   compares the same argument more than once, runc adds each comparison as
   a rule of its own, so the conditions of one entry are ORed. Both rules
   with arguments below are built on that: "deny if any of these matches". */
static json_t *
s_seccomp (void)
{
    json_t *sc = json_pack ("{s:s, s:[s,s,s]}", "defaultAction", "SCMP_ACT_ALLOW", "architectures",
                            "SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32");
    json_t *rules = json_array ();

    json_t *deny = json_pack ("{s:o, s:s, s:i}", "names", s_strings (s_denied_syscalls), "action",
                              "SCMP_ACT_ERRNO", "errnoRet", EPERM);
    json_array_append_new (rules, deny);

    /* clone3 passes its flags in memory, out of seccomp's sight: answer
       ENOSYS so that libc falls back to clone, whose flags we can see. */
    json_array_append_new (rules, s_rule ("clone3", ENOSYS, NULL));

    /* clone: EPERM if any namespace flag is set. */
    json_t *args = json_array ();
    for (int bit = 0; bit < 32; bit++)
        if (S_CLONE_NS_FLAGS & (1ULL << bit))
            json_array_append_new (args, s_arg ("SCMP_CMP_MASKED_EQ", 1ULL << bit, 1ULL << bit));
    json_array_append_new (rules, s_rule ("clone", EPERM, args));

    /* personality: EPERM unless the argument is one of Docker's allowed
       values {0, 8, 0x20000, 0x20008, 0xffffffff}, i.e. unless it has no
       bit outside S_PERSONA_BITS or all 32 bits set. Deny therefore "some
       bit outside S_PERSONA_BITS set and some bit clear", which the ORed
       pairs (bit k set, bit k+1 clear) cover for k outside S_PERSONA_BITS,
       together with (k-1 set, k+1 clear) for k inside it: in any such value
       the run of set bits containing an outside bit ends on one of those
       pairs. Anything above 32 bits is denied as in Docker's EQ rules. */
    args = json_array ();
    for (int k = 0; k < 32; k++) {
        int lo = k, hi = (k + 1) % 32;
        if (S_PERSONA_BITS & (1ULL << k))
            lo = (k + 31) % 32;
        uint64_t set = 1ULL << lo, mask = set | (1ULL << hi);
        json_array_append_new (args, s_arg ("SCMP_CMP_MASKED_EQ", mask, set));
    }
    json_array_append_new (args, s_arg ("SCMP_CMP_GT", 0xffffffffULL, 0));
    json_array_append_new (rules, s_rule ("personality", EPERM, args));

    /* Raw packet sockets (AF_PACKET = 17). Netlink stays: `ip` needs it. */
    args = json_array ();
    json_array_append_new (args, s_arg ("SCMP_CMP_EQ", 17, 0));
    json_array_append_new (rules, s_rule ("socket", EPERM, args));

    json_object_set_new (sc, "syscalls", rules);
    return sc;
}

/* Build the OCI config.json for spec. Caller owns the returned reference;
   NULL if spec is invalid (bad cid, unsafe dir) or on allocation failure. */
json_t *
runtime_build_config (const runtime_config_t *cfg, const runtime_spec_t *spec)
{
    char ctl[4096], kernels[4096], mnt[4096], cgpath[512];
    if (!cfg || !spec || !s_valid_cid (spec->cid) || !s_valid_dir (spec->dir) || !cfg->agent_path
        || s_path (ctl, sizeof ctl, spec->dir, "ctl") < 0
        || s_path (kernels, sizeof kernels, spec->dir, "kernels") < 0
        || s_path (mnt, sizeof mnt, spec->dir, "mnt") < 0
        || s_cgroups_path (cfg, spec->cid, cgpath, sizeof cgpath) < 0)
        return NULL;

    json_t *process = json_pack (
        "{s:b, s:{s:i, s:i}, s:[s], s:o, s:s, s:b, s:i, s:{s:[], s:[], s:[], s:[], s:[]},"
        " s:[o, o]}",
        "terminal", 0, "user", "uid", S_UID, "gid", S_GID, "args", S_AGENT_PATH, "env",
        s_strings (s_env), "cwd", "/workspace", "noNewPrivileges", 1, "oomScoreAdj",
        S_OOM_SCORE_ADJ, "capabilities", "bounding", "effective", "inheritable", "permitted",
        "ambient", "rlimits", s_rlimit ("RLIMIT_NOFILE", 4096, 4096),
        s_rlimit ("RLIMIT_CORE", 0, 0));
    /* The agent reads its secret from here, wipes it from its environment
       block and drops it before it runs anything (it is not dumpable, so
       /proc/1/environ is closed to tenant code). config.json stays in the
       root-only bundle directory, outside the container's root. */
    if (spec->agent_key && *spec->agent_key) {
        char kv[256];
        snprintf (kv, sizeof kv, "SANDBOXD_AGENT_KEY=%s", spec->agent_key);
        json_array_append_new (json_object_get (process, "env"), json_string (kv));
    }

    json_t *mounts = json_array ();
    static const char *const proc_opts[] = { "nosuid", "noexec", "nodev", NULL };
    static const char *const dev_opts[]
        = { "nosuid", "strictatime", "mode=755", "size=65536k", NULL };
    static const char *const pts_opts[]
        = { "nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5", NULL };
    static const char *const shm_opts[]
        = { "nosuid", "noexec", "nodev", "mode=1777", "size=65536k", NULL };
    static const char *const mq_opts[] = { "nosuid", "noexec", "nodev", NULL };
    static const char *const sys_opts[] = { "nosuid", "noexec", "nodev", "ro", NULL };
    static const char *const ctl_opts[] = { "rbind", "ro", "nosuid", "nodev", "noexec", NULL };
    static const char *const agent_opts[] = { "rbind", "ro", "nosuid", "nodev", NULL };
    static const char *const kernels_opts[] = { "rbind", "rw", "nosuid", "nodev", "noexec", NULL };
    static const char *const mnt_opts[]
        = { "rbind", "rslave", "ro", "nosuid", "nodev", "noexec", NULL };
    s_add_mount (mounts, "/proc", "proc", "proc", proc_opts);
    s_add_mount (mounts, "/dev", "tmpfs", "tmpfs", dev_opts);
    s_add_mount (mounts, "/dev/pts", "devpts", "devpts", pts_opts);
    s_add_mount (mounts, "/dev/shm", "tmpfs", "shm", shm_opts);
    s_add_mount (mounts, "/dev/mqueue", "mqueue", "mqueue", mq_opts);
    s_add_mount (mounts, "/sys", "sysfs", "sysfs", sys_opts);
    s_add_mount (mounts, S_CTL_PATH, "bind", ctl, ctl_opts);
    s_add_mount (mounts, S_AGENT_PATH, "bind", cfg->agent_path, agent_opts);
    /* Kernels bind their sockets here; tenant code can write it, so the
       broker only ever reaches into it through O_NOFOLLOW descriptors. */
    s_add_mount (mounts, S_KERNELS_PATH, "bind", kernels, kernels_opts);
    if (cfg->kernel_lib_dir && *cfg->kernel_lib_dir)
        s_add_mount (mounts, "/opt/sandboxd/python", "bind", cfg->kernel_lib_dir, agent_opts);
    /* Bucket mounts made on the host under <dir>/mnt (a shared mount) reach
       the container here, as slaves: host mounts propagate in, nothing the
       container does propagates out. */
    s_add_mount (mounts, RUNTIME_MOUNTS_PATH, "bind", mnt, mnt_opts);

    /* A new network namespace without a path: runc configures and brings
       up loopback in it, and nothing else. */
    json_t *namespaces = json_pack ("[{s:s}, {s:s}, {s:s}, {s:s}, {s:s}]", "type", "pid", "type",
                                    "mount", "type", "ipc", "type", "uts", "type", "network");
    if (access ("/proc/self/ns/cgroup", F_OK) == 0)
        json_array_append_new (namespaces, json_pack ("{s:s}", "type", "cgroup"));

    json_t *resources = json_object ();
    json_t *devices = json_array ();
    json_array_append_new (devices, s_device_rule (false, NULL, -1, -1));
    static const int chr[][2]
        = { { 1, 3 }, { 1, 5 }, { 1, 7 }, { 1, 8 }, { 1, 9 }, { 5, 0 }, { 5, 2 } };
    for (size_t i = 0; i < sizeof chr / sizeof chr[0]; i++)
        json_array_append_new (devices, s_device_rule (true, "c", chr[i][0], chr[i][1]));
    json_object_set_new (resources, "devices", devices);
    const limits_t *lim = &spec->limits;
    if (lim->memory_mb > 0) {
        int64_t mb = lim->memory_mb > INT64_MAX / 1048576 ? INT64_MAX / 1048576 : lim->memory_mb;
        json_int_t bytes = (json_int_t)mb * 1048576;
        /* swap is memory+swap on cgroup v1: equal to the limit, no swap. */
        json_object_set_new (resources, "memory",
                             json_pack ("{s:I, s:I}", "limit", bytes, "swap", bytes));
    }
    if (lim->pids > 0)
        json_object_set_new (resources, "pids",
                             json_pack ("{s:I}", "limit", (json_int_t)lim->pids));
    if (lim->cpus > 0) {
        json_int_t quota = (json_int_t)(lim->cpus * S_CPU_PERIOD + 0.5);
        if (quota < 1000)
            quota = 1000; /* the kernel's minimum cfs quota (1 ms) */
        json_object_set_new (
            resources, "cpu",
            json_pack ("{s:I, s:I}", "quota", quota, "period", (json_int_t)S_CPU_PERIOD));
    }

    json_t *linux_ = json_pack (
        "{s:s, s:o, s:o, s:o, s:o, s:s, s:o}", "cgroupsPath", cgpath, "resources", resources,
        "namespaces", namespaces, "maskedPaths", s_strings (s_masked_paths), "readonlyPaths",
        s_strings (s_readonly_paths), "rootfsPropagation", "rslave", "seccomp", s_seccomp ());

    json_t *config
        = json_pack ("{s:s, s:o, s:{s:s, s:b}, s:s, s:o, s:o}", "ociVersion", "1.0.2", "process",
                     process, "root", "path", "rootfs", "readonly", 0, "hostname",
                     spec->hostname && *spec->hostname ? spec->hostname : spec->cid, "mounts",
                     mounts, "linux", linux_);
    return config;
}

static int
s_mkdir (const char *path, mode_t mode, err_t *err)
{
    if (util_mkdir_p (path, mode) < 0)
        return err_set (err, 500, "internal", "creating %s: %s", path, strerror (errno));
    /* mkdir honours the umask; these modes are part of the contract. */
    if (chmod (path, mode) < 0)
        return err_set (err, 500, "internal", "chmod %s: %s", path, strerror (errno));
    return 0;
}

/* Make layer.img (disk_mb MiB, sparse, ext4 without a journal: the layer
   is scratch space and dies with the sandbox) under a temporary name and
   rename it into place, so a half-made image is never mounted. */
static int
s_make_layer_image (const char *image, int64_t disk_mb, err_t *err)
{
    char tmp[4200];
    snprintf (tmp, sizeof tmp, "%s.tmp", image);
    unlink (tmp);
    int fd = open (tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return err_set (err, 500, "internal", "creating %s: %s", tmp, strerror (errno));
    int rc = ftruncate (fd, (off_t)disk_mb * 1024 * 1024);
    int saved = errno;
    close (fd);
    if (rc < 0) {
        unlink (tmp);
        return err_set (err, 500, "internal", "sizing %s: %s", tmp, strerror (saved));
    }
    char out[512];
    const char *argv[] = { "mkfs.ext4",
                           "-q",
                           "-F",
                           "-O",
                           "^has_journal",
                           "-E",
                           "nodiscard,lazy_itable_init=1,lazy_journal_init=1",
                           "-m",
                           "0",
                           "-L",
                           "sandbox",
                           tmp,
                           NULL };
    if (util_run ((char *const *)argv, out, sizeof out) != 0) {
        unlink (tmp);
        return err_set (err, 500, "internal", "mkfs.ext4 %s: %.200s", tmp, out);
    }
    if (rename (tmp, image) < 0) {
        saved = errno;
        unlink (tmp);
        return err_set (err, 500, "internal", "renaming %s: %s", tmp, strerror (saved));
    }
    return 0;
}

/* Attach image to a free loop device (autoclear: it is released when the
   mount goes) and mount it on dir. */
static int
s_mount_layer (const char *image, const char *dir, err_t *err)
{
    int img = open (image, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (img < 0)
        return err_set (err, 500, "internal", "opening %s: %s", image, strerror (errno));
    int ctl = open ("/dev/loop-control", O_RDWR | O_CLOEXEC);
    if (ctl < 0) {
        close (img);
        return err_set (err, 500, "internal", "/dev/loop-control: %s", strerror (errno));
    }
    int rc = -1;
    for (int attempt = 0; attempt < 16 && rc < 0; attempt++) {
        int n = ioctl (ctl, LOOP_CTL_GET_FREE);
        if (n < 0) {
            err_set (err, 500, "internal", "no free loop device: %s", strerror (errno));
            break;
        }
        char dev[64];
        snprintf (dev, sizeof dev, "/dev/loop%d", n);
        int lfd = open (dev, O_RDWR | O_CLOEXEC);
        if (lfd < 0) {
            err_set (err, 500, "internal", "opening %s: %s", dev, strerror (errno));
            continue;
        }
        struct loop_config lc;
        memset (&lc, 0, sizeof lc);
        lc.fd = (unsigned)img;
        lc.info.lo_flags = LO_FLAGS_AUTOCLEAR;
        /* lo_file_name is informational (losetup -l); keep its tail. */
        size_t il = strlen (image), cap = sizeof lc.info.lo_file_name - 1;
        memcpy (lc.info.lo_file_name, image + (il > cap ? il - cap : 0), il > cap ? cap : il);
        if (ioctl (lfd, LOOP_CONFIGURE, &lc) < 0) {
            /* EBUSY: another attach took this device meanwhile. */
            err_set (err, 500, "internal", "configuring %s: %s", dev, strerror (errno));
            close (lfd);
            continue;
        }
        if (mount (dev, dir, "ext4", MS_NODEV | MS_NOSUID | MS_NOATIME, "discard") == 0)
            rc = 0;
        else
            err_set (err, 500, "internal", "mounting %s on %s: %s", dev, dir, strerror (errno));
        close (lfd); /* the mount holds the device now; without it, autoclear frees it.
                       discard: blocks freed in the sandbox are punched out of the
                       sparse image, so the host gets them back */
        if (rc < 0)
            break;
    }
    close (ctl);
    close (img);
    return rc;
}

/* Make path a mount of its own (a bind onto itself) with shared
   propagation, so that what is mounted below it later shows up in the
   container's slave copy. Idempotent. */
static int
s_share_point (const char *path, err_t *err)
{
    int m = s_is_mountpoint (path);
    if (m < 0)
        return err_set (err, 500, "internal", "checking %s: %s", path, strerror (errno));
    /* A fresh bind joins its parent's peer group when the host's / is
       shared (systemd): private first, so that it gets a group of its own
       and bucket mounts do not spread over the host. Never on an existing
       point: that would cut off the running container's slave copy. */
    if (m == 0
        && (mount (path, path, "none", MS_BIND, NULL) < 0
            || mount ("none", path, "none", MS_PRIVATE, NULL) < 0))
        return err_set (err, 500, "internal", "bind-mounting %s: %s", path, strerror (errno));
    /* "none": the kernel ignores source and type here; valgrind does not. */
    if (mount ("none", path, "none", MS_SHARED, NULL) < 0)
        return err_set (err, 500, "internal", "making %s shared: %s", path, strerror (errno));
    return 0;
}

/* Unmount what is left below the shared mount point dir/mnt (bucket
   mounts their module did not get to) and the point itself, so that the
   directory can be removed. Lazy: a dead FUSE mount cannot block it. */
static int
s_unshare_point (const char *dir, err_t *err)
{
    char mnt[4096], sub[4400];
    if (s_path (mnt, sizeof mnt, dir, "mnt") < 0)
        return err_set (err, 500, "internal", "sandbox path too long: %s", dir);
    DIR *d = opendir (mnt);
    struct dirent *de;
    while (d && (de = readdir (d))) {
        if (de->d_name[0] == '.')
            continue;
        snprintf (sub, sizeof sub, "%s/%s", mnt, de->d_name);
        for (int i = 0; i < 16 && s_is_mountpoint (sub) != 0; i++)
            if (umount2 (sub, MNT_DETACH | UMOUNT_NOFOLLOW) < 0)
                break;
    }
    if (d)
        closedir (d);
    for (int i = 0; i < 16; i++) {
        int m = s_is_mountpoint (mnt);
        if (m == 0)
            break;
        if (m < 0 || umount2 (mnt, MNT_DETACH | UMOUNT_NOFOLLOW) < 0)
            return err_set (err, 500, "internal", "unmounting %s: %s", mnt, strerror (errno));
    }
    return 0;
}

/* Lay out spec->dir and mount the overlay: see runtime.h. */
int
runtime_prepare (const runtime_config_t *cfg, const runtime_spec_t *spec, err_t *err)
{
    if (!cfg || !spec || !s_valid_cid (spec->cid))
        return err_set (err, 500, "internal", "invalid container id");
    if (!s_valid_dir (spec->dir) || !s_valid_dir (spec->lower))
        return err_set (err, 500, "internal", "unsafe sandbox or image path for %s", spec->cid);

    char upper[4096], work[4096], bundle[4096], rootfs[4096], ctl[4096], conf[4096], kernels[4096],
        mnt[4096];
    if (s_path (upper, sizeof upper, spec->dir, "upper") < 0
        || s_path (mnt, sizeof mnt, spec->dir, "mnt") < 0
        || s_path (work, sizeof work, spec->dir, "work") < 0
        || s_path (bundle, sizeof bundle, spec->dir, "bundle") < 0
        || s_path (rootfs, sizeof rootfs, spec->dir, "bundle/rootfs") < 0
        || s_path (ctl, sizeof ctl, spec->dir, "ctl") < 0
        || s_path (kernels, sizeof kernels, spec->dir, "kernels") < 0
        || s_path (conf, sizeof conf, spec->dir, "bundle/config.json") < 0)
        return err_set (err, 500, "internal", "sandbox path too long: %s", spec->dir);

    struct stat st;
    if (stat (spec->lower, &st) < 0)
        return err_set (err, 500, "internal", "image rootfs %s: %s", spec->lower, strerror (errno));

    /* A size-limited writable layer: upper/ and work/ move into layer/. */
    if (spec->limits.disk_mb > 0) {
        char layer[4096], image[4096];
        if (s_path (layer, sizeof layer, spec->dir, "layer") < 0
            || s_path (image, sizeof image, spec->dir, "layer.img") < 0
            || s_path (upper, sizeof upper, spec->dir, "layer/upper") < 0
            || s_path (work, sizeof work, spec->dir, "layer/work") < 0)
            return err_set (err, 500, "internal", "sandbox path too long: %s", spec->dir);
        if (s_mkdir (spec->dir, 0700, err) < 0 || s_mkdir (layer, 0700, err) < 0)
            return err_prefix (err, "preparing sandbox %s", spec->cid);
        int lm = s_is_mountpoint (layer);
        if (lm < 0)
            return err_set (err, 500, "internal", "checking %s: %s", layer, strerror (errno));
        if (!lm) {
            if (access (image, F_OK) < 0
                && s_make_layer_image (image, spec->limits.disk_mb, err) < 0)
                return -1;
            if (s_mount_layer (image, layer, err) < 0)
                return -1;
        }
    }
    if (!S_ISDIR (st.st_mode))
        return err_set (err, 500, "internal", "image rootfs %s is not a directory", spec->lower);

    /* upper/ becomes the root directory of the merged tree, hence 0755.
       rootfs/ is only created: once mounted, a chmod would reach the
       container's root instead. */
    if (s_mkdir (spec->dir, 0700, err) < 0 || s_mkdir (upper, 0755, err) < 0
        || s_mkdir (work, 0700, err) < 0 || s_mkdir (bundle, 0700, err) < 0
        || s_mkdir (ctl, 0755, err) < 0 || s_mkdir (kernels, 0700, err) < 0
        || s_mkdir (mnt, 0700, err) < 0)
        return err_prefix (err, "preparing sandbox %s", spec->cid);
    if (s_share_point (mnt, err) < 0)
        return err_prefix (err, "preparing sandbox %s", spec->cid);
    if (chown (kernels, S_UID, S_GID) < 0)
        return err_set (err, 500, "internal", "chown %s: %s", kernels, strerror (errno));
    if (util_mkdir_p (rootfs, 0755) < 0)
        return err_set (err, 500, "internal", "creating %s: %s", rootfs, strerror (errno));

    int mounted = s_is_mountpoint (rootfs);
    if (mounted < 0)
        return err_set (err, 500, "internal", "checking %s: %s", rootfs, strerror (errno));
    if (mounted) {
        struct statfs sfs;
        if (statfs (rootfs, &sfs) < 0)
            return err_set (err, 500, "internal", "statfs %s: %s", rootfs, strerror (errno));
        if (sfs.f_type != OVERLAYFS_SUPER_MAGIC)
            return err_set (err, 500, "internal", "%s is mounted but not an overlay", rootfs);
    }
    else {
        char opts[4096 * 3 + 64];
        snprintf (opts, sizeof opts, "lowerdir=%s,upperdir=%s,workdir=%s", spec->lower, upper,
                  work);
        if (mount ("overlay", rootfs, "overlay", MS_NODEV | MS_NOSUID, opts) < 0)
            return err_set (err, 500, "internal", "mounting overlay on %s: %s", rootfs,
                            strerror (errno));
    }

    json_t *config = runtime_build_config (cfg, spec);
    char *text = config ? json_dumps (config, JSON_INDENT (2)) : NULL;
    json_decref (config);
    if (!text)
        return err_set (err, 500, "internal", "building config for %s", spec->cid);
    int rc = util_write_file_atomic (conf, text, strlen (text), 0600);
    int saved = errno;
    free (text);
    if (rc < 0)
        return err_set (err, 500, "internal", "writing %s: %s", conf, strerror (saved));
    return 0;
}

/* Run `runtime [--root R] args...` through util_run; out may be NULL. */
static int
s_runtime_run (const runtime_config_t *cfg, char *out, size_t cap, const char *const *args)
{
    const char *argv[24];
    size_t n = 0;
    argv[n++] = s_runtime (cfg);
    if (cfg->runtime_root && *cfg->runtime_root) {
        argv[n++] = "--root";
        argv[n++] = cfg->runtime_root;
    }
    for (; *args && n < 23; args++)
        argv[n++] = *args;
    argv[n] = NULL;
    return util_run ((char *const *)argv, out, cap);
}

/* The last `max` bytes that fd received after offset `from`, on one line. */
static void
s_log_tail (int fd, off_t from, char *buf, size_t size, size_t max)
{
    buf[0] = '\0';
    struct stat st;
    if (size == 0 || fstat (fd, &st) < 0 || st.st_size <= from)
        return;
    if (max > size - 1)
        max = size - 1;
    off_t start = st.st_size - from > (off_t)max ? st.st_size - (off_t)max : from;
    ssize_t n = pread (fd, buf, (size_t)(st.st_size - start), start);
    if (n < 0)
        n = 0;
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    for (char *p = buf; *p; p++)
        if ((unsigned char)*p < 0x20)
            *p = ' ';
}

/* Start the container detached: see runtime.h. */
int
runtime_start (const runtime_config_t *cfg, const runtime_spec_t *spec, err_t *err)
{
    if (!cfg || !spec || !s_valid_cid (spec->cid) || !s_valid_dir (spec->dir))
        return err_set (err, 500, "internal", "invalid container id or directory");

    char bundle[4096], pidfile[4096], logpath[4096];
    if (s_path (bundle, sizeof bundle, spec->dir, "bundle") < 0
        || s_path (pidfile, sizeof pidfile, spec->dir, "init.pid") < 0
        || s_path (logpath, sizeof logpath, spec->dir, "agent.log") < 0)
        return err_set (err, 500, "internal", "sandbox path too long: %s", spec->dir);

    const char *del[] = { "delete", "--force", spec->cid, NULL };
    s_runtime_run (cfg, NULL, 0, del);
    unlink (pidfile);

    cleanup_close int logfd
        = open (logpath, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (logfd < 0)
        return err_set (err, 500, "internal", "opening %s: %s", logpath, strerror (errno));
    struct stat st;
    off_t log_start = fstat (logfd, &st) == 0 ? st.st_size : 0;

    const char *argv[24];
    size_t n = 0;
    argv[n++] = s_runtime (cfg);
    if (cfg->runtime_root && *cfg->runtime_root) {
        argv[n++] = "--root";
        argv[n++] = cfg->runtime_root;
    }
    argv[n++] = "run";
    argv[n++] = "-d";
    argv[n++] = "--bundle";
    argv[n++] = bundle;
    argv[n++] = "--pid-file";
    argv[n++] = pidfile;
    argv[n++] = spec->cid;
    argv[n] = NULL;

    /* runc hands its stdio to the container: stdin /dev/null, output to
       agent.log, no other descriptor of the broker, default signals. */
    int64_t t0 = util_mono_us ();
    pid_t pid;
    int rc = util_spawn_logged (argv, environ, logfd, false, &pid);
    if (rc != 0)
        return err_set (err, 500, "internal", "starting %s for %s: %s", argv[0], spec->cid,
                        strerror (rc));
    int status;
    while (waitpid (pid, &status, 0) < 0)
        if (errno != EINTR)
            return err_set (err, 500, "internal", "waiting for %s: %s", argv[0], strerror (errno));
    int64_t took = util_mono_us () - t0;

    if (!WIFEXITED (status) || WEXITSTATUS (status) != 0) {
        char tail[S_ERR_TAIL + 1];
        s_log_tail (logfd, log_start, tail, sizeof tail, S_ERR_TAIL);
        s_runtime_run (cfg, NULL, 0, del);
        return err_set (err, 500, "internal", "starting container %s: %s %s: %s", spec->cid,
                        argv[0], WIFEXITED (status) ? "failed" : "was killed", tail);
    }
    log_debug ("runtime: started %s in %lld ms", spec->cid, (long long)(took / 1000));
    return 0;
}

/* `runtime state cid` as parsed JSON, or NULL if the runtime does not
   know cid (or cannot be asked). Caller owns the reference. */
static json_t *
s_state_json (const runtime_config_t *cfg, const char *cid)
{
    if (!cfg || !s_valid_cid (cid))
        return NULL;
    char out[16384];
    const char *args[] = { "state", cid, NULL };
    if (s_runtime_run (cfg, out, sizeof out, args) != 0)
        return NULL;
    json_t *state = json_loads (out, 0, NULL);
    if (state && !json_is_object (state)) {
        json_decref (state);
        return NULL;
    }
    return state;
}

/* Ask the runtime for the state of cid: see runtime.h. */
runtime_state_t
runtime_state (const runtime_config_t *cfg, const char *cid)
{
    json_t *state = s_state_json (cfg, cid);
    if (!state)
        return RUNTIME_MISSING;
    const char *status = json_string_value (json_object_get (state, "status"));
    runtime_state_t result
        = status && strcmp (status, "running") == 0 ? RUNTIME_RUNNING : RUNTIME_STOPPED;
    json_decref (state);
    return result;
}

/* PID of the container's init on the host, from the runtime's state. */
int
runtime_pid (const runtime_config_t *cfg, const char *cid)
{
    json_t *state = s_state_json (cfg, cid);
    if (!state)
        return -1;
    json_int_t pid = json_integer_value (json_object_get (state, "pid"));
    json_decref (state);
    return pid > 0 && pid < INT32_MAX ? (int)pid : -1;
}

/* Remove what runc left of cid's cgroups in every hierarchy under
   /sys/fs/cgroup (v1 controllers, the hybrid unified tree, or a pure v2
   root). The kernel only removes empty cgroups, and tasks may still be on
   their way out after the kill, hence the short retry. */
static int
s_remove_cgroups (const runtime_config_t *cfg, const char *cid, err_t *err)
{
    char rel[512];
    if (s_cgroups_path (cfg, cid, rel, sizeof rel) < 0)
        return err_set (err, 500, "internal", "invalid cgroup parent");
    DIR *d = opendir ("/sys/fs/cgroup");
    if (!d)
        return 0;
    int rc = 0;
    char path[1024];
    struct dirent *de;
    int64_t deadline = util_mono_ms () + 1000;
    for (int pass = 0; pass < 2; pass++) {
        /* pass 0: the root itself (pure v2); pass 1: each hierarchy. */
        if (pass == 1)
            rewinddir (d);
        for (;;) {
            const char *sub = "";
            if (pass == 1) {
                if (!(de = readdir (d)))
                    break;
                if (de->d_name[0] == '.')
                    continue;
                sub = de->d_name;
            }
            snprintf (path, sizeof path, "/sys/fs/cgroup%s%s%s", *sub ? "/" : "", sub, rel);
            struct stat st;
            /* lstat on the hierarchy: cpu -> cpu,cpuacct links are visited once. */
            char top[600];
            snprintf (top, sizeof top, "/sys/fs/cgroup/%s", sub);
            if (*sub && (lstat (top, &st) < 0 || !S_ISDIR (st.st_mode)))
                continue;
            if (lstat (path, &st) == 0 && S_ISDIR (st.st_mode)) {
                while (rmdir (path) < 0 && errno == EBUSY && util_mono_ms () < deadline) {
                    struct timespec ts = { 0, 20 * 1000 * 1000 };
                    nanosleep (&ts, NULL);
                }
                if (lstat (path, &st) == 0 && rc == 0)
                    rc = err_set (err, 500, "internal", "removing cgroup %s: %s", path,
                                  strerror (errno));
            }
            if (pass == 0)
                break;
        }
    }
    closedir (d);
    return rc;
}

/* Kill and delete the container, unmount, remove dir: see runtime.h. */
int
runtime_destroy (const runtime_config_t *cfg, const char *cid, const char *dir, err_t *err)
{
    if (!cfg || !s_valid_cid (cid))
        return err_set (err, 500, "internal", "invalid container id");
    if (!s_valid_dir (dir))
        return err_set (err, 500, "internal", "unsafe sandbox directory for %s", cid);

    const char *kill_args[] = { "kill", cid, "KILL", NULL };
    s_runtime_run (cfg, NULL, 0, kill_args);
    char out[1024];
    const char *del[] = { "delete", "--force", cid, NULL };
    if (s_runtime_run (cfg, out, sizeof out, del) != 0
        && runtime_state (cfg, cid) != RUNTIME_MISSING) {
        for (char *p = out; *p; p++)
            if ((unsigned char)*p < 0x20)
                *p = ' ';
        return err_set (err, 500, "internal", "deleting container %s: %s", cid, out);
    }

    char rootfs[4096];
    if (s_path (rootfs, sizeof rootfs, dir, "bundle/rootfs") < 0)
        return err_set (err, 500, "internal", "sandbox path too long: %s", dir);
    /* Loop: an interrupted prepare may have stacked two overlays. */
    for (int i = 0; i < 16; i++) {
        int m = s_is_mountpoint (rootfs);
        if (m < 0)
            return err_set (err, 500, "internal", "checking %s: %s", rootfs, strerror (errno));
        if (m == 0)
            break;
        if (umount2 (rootfs, UMOUNT_NOFOLLOW) < 0
            && umount2 (rootfs, MNT_DETACH | UMOUNT_NOFOLLOW) < 0)
            return err_set (err, 500, "internal", "unmounting %s: %s", rootfs, strerror (errno));
    }

    /* The writable layer's filesystem, when it has one (its loop device
       goes with it: autoclear). */
    char layer[4096];
    if (s_path (layer, sizeof layer, dir, "layer") < 0)
        return err_set (err, 500, "internal", "sandbox path too long: %s", dir);
    for (int i = 0; i < 4 && s_is_mountpoint (layer) > 0; i++)
        if (umount2 (layer, UMOUNT_NOFOLLOW) < 0
            && umount2 (layer, MNT_DETACH | UMOUNT_NOFOLLOW) < 0)
            return err_set (err, 500, "internal", "unmounting %s: %s", layer, strerror (errno));

    if (s_unshare_point (dir, err) < 0)
        return -1;

    /* util_rm_rf neither follows links planted in upper/ nor crosses into a
       mount that is still there. */
    if (util_rm_rf (dir) < 0)
        return err_set (err, 500, "internal", "removing %s: %s", dir, strerror (errno));
    return s_remove_cgroups (cfg, cid, err);
}

/* Change the cgroup limits of a running container: see runtime.h. */
int
runtime_update (const runtime_config_t *cfg, const char *cid, const limits_t *limits, err_t *err)
{
    if (!cfg || !limits || !s_valid_cid (cid))
        return err_set (err, 500, "internal", "invalid container id");
    char mem[32], pids[32], quota[32], period[32];
    json_int_t q = (json_int_t)(limits->cpus * S_CPU_PERIOD + 0.5);
    snprintf (mem, sizeof mem, "%lld", (long long)limits->memory_mb * 1024 * 1024);
    snprintf (pids, sizeof pids, "%lld", (long long)limits->pids);
    snprintf (quota, sizeof quota, "%lld", (long long)(q < 1000 ? 1000 : q));
    snprintf (period, sizeof period, "%d", S_CPU_PERIOD);
    const char *args[] = { "update", "--memory",    mem,   "--memory-swap", mem,    "--pids-limit",
                           pids,     "--cpu-quota", quota, "--cpu-period",  period, cid,
                           NULL };
    char out[512];
    int rc = s_runtime_run (cfg, out, sizeof out, args);
    if (rc != 0)
        return err_set (err, 500, "internal", "updating limits of %s: %.300s", cid, out);
    return 0;
}
