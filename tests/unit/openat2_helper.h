/* openat2_helper.h - for unit tests that use the file API under valgrind.
   Included by one test file each (static functions). */
#ifndef SANDBOXD_TEST_OPENAT2_HELPER_H
#define SANDBOXD_TEST_OPENAT2_HELPER_H

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "../../src/files.h"

/* ---- openat2 through a helper process --------------------------------- */

/* valgrind 3.19 does not know openat2 and fails it with ENOSYS. Then the
   test re-executes itself as a helper outside valgrind (it does not trace
   exec'd children) and sends each openat2 there: the resolving is still
   the kernel's, only the call is made by another process. */

typedef struct {
    int has_fd;
    struct open_how how;
    char path[FILES_MAX_PATH + 64];
} s_req_t;

typedef struct {
    long rc;
    int err;
} s_resp_t;

static int s_helper = -1;
static pthread_mutex_t s_helper_lock = PTHREAD_MUTEX_INITIALIZER;

static int
s_send (int sock, const void *data, size_t len, int fd)
{
    struct iovec iov = { (void *)data, len };
    union {
        char buf[CMSG_SPACE (sizeof (int))];
        struct cmsghdr align;
    } u;
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
    memset (&u, 0, sizeof u);
    if (fd >= 0) {
        msg.msg_control = u.buf;
        msg.msg_controllen = sizeof u.buf;
        struct cmsghdr *c = CMSG_FIRSTHDR (&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN (sizeof (int));
        memcpy (CMSG_DATA (c), &fd, sizeof fd);
    }
    return sendmsg (sock, &msg, 0) < 0 ? -1 : 0;
}

static ssize_t
s_recv (int sock, void *data, size_t len, int *fd)
{
    struct iovec iov = { data, len };
    union {
        char buf[CMSG_SPACE (sizeof (int))];
        struct cmsghdr align;
    } u;
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf
    };
    ssize_t n = recvmsg (sock, &msg, MSG_CMSG_CLOEXEC);
    *fd = -1;
    struct cmsghdr *c = n > 0 ? CMSG_FIRSTHDR (&msg) : NULL;
    if (c && c->cmsg_type == SCM_RIGHTS)
        memcpy (fd, CMSG_DATA (c), sizeof *fd);
    return n;
}

static int
s_helper_main (void)
{
    for (;;) {
        s_req_t req;
        int dirfd;
        ssize_t n = s_recv (3, &req, sizeof req, &dirfd);
        if (n <= 0)
            return 0;
        long rc = syscall (SYS_openat2, req.has_fd ? dirfd : AT_FDCWD, req.path, &req.how,
                           sizeof req.how);
        s_resp_t resp = { rc, rc < 0 ? errno : 0 };
        if (dirfd >= 0)
            close (dirfd);
        s_send (3, &resp, sizeof resp, rc >= 0 ? (int)rc : -1);
        if (rc >= 0)
            close ((int)rc);
    }
}

static long
s_openat2_helper (int dirfd, const char *path, const void *how, size_t size)
{
    s_req_t req = { .has_fd = dirfd != AT_FDCWD };
    memcpy (&req.how, how, sizeof req.how);
    snprintf (req.path, sizeof req.path, "%s", path);
    s_resp_t resp;
    int fd = -1;
    pthread_mutex_lock (&s_helper_lock);
    int rc = s_send (s_helper, &req, sizeof req, req.has_fd ? dirfd : -1);
    ssize_t n = rc < 0 ? -1 : s_recv (s_helper, &resp, sizeof resp, &fd);
    pthread_mutex_unlock (&s_helper_lock);
    if (n != (ssize_t)sizeof resp) {
        errno = EIO;
        return -1;
    }
    if (resp.rc < 0) {
        errno = resp.err;
        return -1;
    }
    return fd;
}

/* If this process cannot make the openat2 call (valgrind), start the
   helper: the test's main must answer "--openat2-helper" with
   s_helper_main (). 1 when a helper serves the calls now, else 0. */
static int
s_start_openat2_helper (const char *self_exe)
{
    struct open_how how = { .flags = O_PATH | O_CLOEXEC };
    long fd = syscall (SYS_openat2, AT_FDCWD, "/", &how, sizeof how);
    if (fd >= 0) {
        close ((int)fd);
        return 0;
    }
    if (errno != ENOSYS)
        return 0;
    int sv[2];
    if (socketpair (AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return 0;
    pid_t pid = fork ();
    if (pid == 0) {
        dup2 (sv[1], 3);
        execl (self_exe, self_exe, "--openat2-helper", (char *)NULL);
        _exit (127);
    }
    close (sv[1]);
    s_helper = sv[0];
    printf ("# openat2 unknown to this process (valgrind?): served by helper pid %d\n", (int)pid);
    return 1;
}

#endif
