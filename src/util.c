/* util.c - errors, logging, clocks, randomness and file helpers. */
#include "util.h"

#include <spawn.h>

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int
err_set (err_t *err, int status, const char *code, const char *fmt, ...)
{
    if (!err)
        return -1;
    err->status = status;
    snprintf (err->code, sizeof err->code, "%s", code);
    va_list ap;
    va_start (ap, fmt);
    vsnprintf (err->message, sizeof err->message, fmt, ap);
    va_end (ap);
    return -1;
}

int
err_prefix (err_t *err, const char *fmt, ...)
{
    if (!err)
        return -1;
    char old[sizeof err->message];
    memcpy (old, err->message, sizeof old);
    va_list ap;
    va_start (ap, fmt);
    int n = vsnprintf (err->message, sizeof err->message, fmt, ap);
    va_end (ap);
    if (n >= 0 && (size_t)n < sizeof err->message)
        snprintf (err->message + n, sizeof err->message - (size_t)n, ": %.*s",
                  (int)(sizeof err->message - (size_t)n), old);
    return -1;
}

void
err_clear (err_t *err)
{
    if (err)
        memset (err, 0, sizeof *err);
}

static log_level_t s_level = LOG_LVL_INFO;
static pthread_mutex_t s_log_lock = PTHREAD_MUTEX_INITIALIZER;

void
log_set_level (log_level_t level)
{
    s_level = level;
}

int
log_parse_level (const char *name, log_level_t *out)
{
    static const char *names[] = { "debug", "info", "warn", "error" };
    for (int i = 0; i < 4; i++)
        if (strcmp (name, names[i]) == 0) {
            *out = (log_level_t)i;
            return 0;
        }
    return -1;
}

void
log_msg (log_level_t level, const char *fmt, ...)
{
    static const char *tags[] = { "DEBUG", "INFO ", "WARN ", "ERROR" };
    if (level < s_level)
        return;
    char ts[40], line[2048];
    util_iso8601 (util_now_ms (), ts, sizeof ts);
    va_list ap;
    va_start (ap, fmt);
    vsnprintf (line, sizeof line, fmt, ap);
    va_end (ap);
    /* One event, one line: control characters from untrusted input must not
       forge extra log lines. */
    for (char *p = line; *p; p++)
        if ((unsigned char)*p < 0x20)
            *p = ' ';
    pthread_mutex_lock (&s_log_lock);
    fprintf (stderr, "%s %s %s\n", ts, tags[level], line);
    pthread_mutex_unlock (&s_log_lock);
}

int64_t
util_now_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
util_mono_ms (void)
{
    return util_mono_us () / 1000;
}

int64_t
util_mono_us (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

char *
util_iso8601 (int64_t epoch_ms, char *buf, size_t size)
{
    time_t secs = (time_t)(epoch_ms / 1000);
    struct tm tm;
    gmtime_r (&secs, &tm);
    char base[24];
    strftime (base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf (buf, size, "%s.%03dZ", base, (int)(epoch_ms % 1000));
    return buf;
}

void
util_random_hex (char *buf, size_t nbytes)
{
    unsigned char raw[64];
    if (nbytes > sizeof raw)
        nbytes = sizeof raw;
    randombytes_buf (raw, nbytes);
    sodium_bin2hex (buf, nbytes * 2 + 1, raw, nbytes);
}

bool
util_valid_id (const char *s)
{
    size_t n = s ? strlen (s) : 0;
    if (n == 0 || n > 63 || !isalnum ((unsigned char)s[0]))
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!isalnum (c) && c != '_' && c != '.' && c != '-')
            return false;
    }
    return true;
}

bool
util_valid_env_name (const char *s)
{
    if (!s || !*s || strlen (s) > 256
        || !(*s == '_' || (*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z')))
        return false;
    for (; *s; s++)
        if (!(*s == '_' || (*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z')
              || (*s >= '0' && *s <= '9')))
            return false;
    return true;
}

int
util_mkdir_p (const char *path, unsigned mode)
{
    char tmp[4096];
    if (snprintf (tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir (tmp, mode) < 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir (tmp, mode) < 0 && errno != EEXIST)
        return -1;
    struct stat st;
    if (stat (tmp, &st) < 0)
        return -1;
    if (!S_ISDIR (st.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    return 0;
}

/* Remove everything below the directory open at dirfd, never following
   symlinks and never leaving the device the tree started on. */
static int
s_rm_children (int dirfd, dev_t dev)
{
    DIR *dir = fdopendir (dirfd);
    if (!dir) {
        close (dirfd);
        return -1;
    }
    int rc = 0;
    struct dirent *de;
    while ((de = readdir (dir))) {
        if (strcmp (de->d_name, ".") == 0 || strcmp (de->d_name, "..") == 0)
            continue;
        struct stat st;
        if (fstatat (dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
            rc = -1;
            continue;
        }
        if (S_ISDIR (st.st_mode)) {
            if (st.st_dev != dev) {
                errno = EBUSY; /* a mount point: never delete through it */
                rc = -1;
                continue;
            }
            int sub = openat (dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub < 0 || s_rm_children (sub, dev) < 0)
                rc = -1;
            if (unlinkat (dirfd, de->d_name, AT_REMOVEDIR) < 0)
                rc = -1;
        }
        else if (unlinkat (dirfd, de->d_name, 0) < 0)
            rc = -1;
    }
    closedir (dir);
    return rc;
}

int
util_rm_rf (const char *path)
{
    struct stat st;
    if (lstat (path, &st) < 0)
        return errno == ENOENT ? 0 : -1;
    if (!S_ISDIR (st.st_mode))
        return unlink (path);
    int fd = open (path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = s_rm_children (fd, st.st_dev);
    if (rmdir (path) < 0)
        rc = -1;
    return rc;
}

int
util_write_file_atomic (const char *path, const void *data, size_t len, unsigned mode)
{
    char tmp[4096];
    char rnd[17];
    util_random_hex (rnd, 8);
    if (snprintf (tmp, sizeof tmp, "%s.tmp-%s", path, rnd) >= (int)sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = open (tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0)
        return -1;
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t n = write (fd, p, left);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            goto fail;
        }
        p += n;
        left -= (size_t)n;
    }
    if (fsync (fd) < 0)
        goto fail;
    close (fd);
    if (rename (tmp, path) < 0) {
        unlink (tmp);
        return -1;
    }
    return 0;
fail:;
    int saved = errno;
    close (fd);
    unlink (tmp);
    errno = saved;
    return -1;
}

char *
util_read_file (const char *path, size_t max, size_t *len_out)
{
    int fd = open (path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    size_t cap = max < 4096 ? max : 4096, len = 0;
    /* One spare byte past max: reading into it proves the file is larger. */
    char *buf = malloc (cap + 2);
    if (!buf) {
        close (fd);
        return NULL;
    }
    for (;;) {
        if (len > max)
            break; /* the spare byte was filled: too large */
        if (len >= cap && cap < max) {
            cap = cap * 2 > max ? max : cap * 2;
            char *nb = realloc (buf, cap + 2);
            if (!nb) {
                free (buf);
                close (fd);
                return NULL;
            }
            buf = nb;
        }
        ssize_t n = read (fd, buf + len, cap + 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int saved = errno;
            free (buf);
            close (fd);
            errno = saved;
            return NULL;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close (fd);
    if (len > max) {
        free (buf);
        errno = EFBIG;
        return NULL;
    }
    buf[len] = '\0';
    if (len_out)
        *len_out = len;
    return buf;
}

int
util_run (char *const argv[], char *out, size_t cap)
{
    int pfd[2];
    if (pipe2 (pfd, O_CLOEXEC) < 0)
        return -1;
    pid_t pid = fork ();
    if (pid < 0) {
        close (pfd[0]);
        close (pfd[1]);
        return -1;
    }
    if (pid == 0) {
        sigset_t all;
        sigemptyset (&all);
        sigprocmask (SIG_SETMASK, &all, NULL);
        int devnull = open ("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2 (devnull, 0);
        dup2 (pfd[1], 1);
        dup2 (pfd[1], 2);
        execvp (argv[0], argv);
        _exit (127);
    }
    close (pfd[1]);
    size_t len = 0;
    char sink[4096];
    for (;;) {
        char *dst = (out && len + 1 < cap) ? out + len : sink;
        size_t room = (out && len + 1 < cap) ? cap - 1 - len : sizeof sink;
        ssize_t n = read (pfd[0], dst, room);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (dst != sink)
            len += (size_t)n;
    }
    close (pfd[0]);
    if (out && cap > 0)
        out[len] = '\0';
    int status;
    while (waitpid (pid, &status, 0) < 0)
        if (errno != EINTR)
            return -1;
    if (WIFEXITED (status))
        return WEXITSTATUS (status);
    return 128 + WTERMSIG (status);
}

void
util_freep (void *p)
{
    free (*(void **)p);
}

void
util_closep (int *fd)
{
    if (*fd >= 0)
        close (*fd);
}

void
util_shell_quote_append (char *buf, size_t size, const char *s)
{
    size_t n = strlen (buf);
    if (n + 1 < size)
        buf[n++] = '\'';
    for (; *s && n + 5 < size; s++) {
        if (*s == '\'') {
            memcpy (buf + n, "'\\''", 4);
            n += 4;
        }
        else
            buf[n++] = *s;
    }
    if (n + 1 < size)
        buf[n++] = '\'';
    buf[n < size ? n : size - 1] = '\0';
}

int
util_spawn_logged (const char *const argv[], char *const envp[], int logfd, bool new_session,
                   pid_t *pid)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init (&fa);
    posix_spawn_file_actions_addopen (&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2 (&fa, logfd, 1);
    posix_spawn_file_actions_adddup2 (&fa, logfd, 2);
    posix_spawn_file_actions_addclosefrom_np (&fa, 3);
    posix_spawnattr_init (&attr);
    sigset_t none, all;
    sigemptyset (&none);
    sigfillset (&all);
    posix_spawnattr_setsigmask (&attr, &none);
    posix_spawnattr_setsigdefault (&attr, &all);
    posix_spawnattr_setflags (&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF
                                         | (new_session ? POSIX_SPAWN_SETSID : 0));
    int rc = posix_spawnp (pid, argv[0], &fa, &attr, (char *const *)argv, envp);
    posix_spawn_file_actions_destroy (&fa);
    posix_spawnattr_destroy (&attr);
    return rc;
}
