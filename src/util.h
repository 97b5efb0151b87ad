/* util.h - errors that carry an HTTP status, logging, small helpers. */
#ifndef SANDBOXD_UTIL_H
#define SANDBOXD_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* An error as it travels up from a module to the HTTP layer: the status a
   client will see, a stable machine code ("not_found", "bad_request", ...)
   and a human message. Modules fill it; only http_api.c turns it into the
   JSON body {"error": {"code", "message"}}. */
typedef struct {
    int status;
    char code[32];
    char message[512];
} err_t;

/* Fill *err (if not NULL) and return -1, so callers can write
   `return err_set (err, 404, "not_found", "sandbox %s not found", id);` */
int err_set (err_t *err, int status, const char *code, const char *fmt, ...)
    __attribute__ ((format (printf, 4, 5)));

/* Prefix context to an existing message: "creating bundle: <old message>". */
int err_prefix (err_t *err, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));

void err_clear (err_t *err);

typedef enum { LOG_LVL_DEBUG = 0, LOG_LVL_INFO, LOG_LVL_WARN, LOG_LVL_ERROR } log_level_t;

/* One line per event to stderr: "2026-11-21T10:00:00.123Z INFO  message".
   Never log a token or a secret. Thread-safe. */
void log_msg (log_level_t level, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));
void log_set_level (log_level_t level);
int log_parse_level (const char *name, log_level_t *out);

#define log_debug(...) log_msg (LOG_LVL_DEBUG, __VA_ARGS__)
#define log_info(...)  log_msg (LOG_LVL_INFO, __VA_ARGS__)
#define log_warn(...)  log_msg (LOG_LVL_WARN, __VA_ARGS__)
#define log_error(...) log_msg (LOG_LVL_ERROR, __VA_ARGS__)

/* Wall clock in milliseconds since the epoch, and a monotonic clock in
   milliseconds and microseconds. */
int64_t util_now_ms (void);
int64_t util_mono_ms (void);
int64_t util_mono_us (void);

/* Format epoch milliseconds as RFC 3339 UTC with milliseconds into buf
   (at least 32 bytes). Returns buf. */
char *util_iso8601 (int64_t epoch_ms, char *buf, size_t size);

/* Fill buf with 2*nbytes lowercase hex characters of fresh randomness plus
   a NUL; buf must hold 2*nbytes+1 bytes. */
void util_random_hex (char *buf, size_t nbytes);

/* True if s is a valid client-chosen identifier: 1..63 characters from
   [A-Za-z0-9_.-], starting with a letter or digit. */
bool util_valid_id (const char *s);

/* True if s is a valid environment variable name: [A-Za-z_][A-Za-z0-9_]*,
   at most 256 characters. */
bool util_valid_env_name (const char *s);

/* mkdir -p with the given mode for each created component. 0 or -1/errno. */
int util_mkdir_p (const char *path, unsigned mode);

/* Remove a directory tree without following symlinks and without crossing
   into other mounts (it refuses to descend into a mount point). 0 on
   success (also when path does not exist), -1 with errno otherwise. */
int util_rm_rf (const char *path);

/* Write a whole file atomically (temp file + fsync + rename). 0 or -1. */
int util_write_file_atomic (const char *path, const void *data, size_t len, unsigned mode);

/* Read a whole small file (at most max bytes) into a NUL-terminated malloc'd
   buffer. Caller frees. NULL with errno on failure (EFBIG if larger). */
char *util_read_file (const char *path, size_t max, size_t *len_out);

/* Run argv (no shell) with stdin from /dev/null, capturing combined
   stdout+stderr (first `cap` bytes) into out (may be NULL). Returns the exit
   status as from waitpid decoded: exit code, or 128+signal; -1 if it could
   not start. */
int util_run (char *const argv[], char *out, size_t cap);

/* GCC cleanup helpers, in the manner of crun. */
void util_freep (void *p);
void util_closep (int *fd);
#define cleanup_free  __attribute__ ((cleanup (util_freep)))
#define cleanup_close __attribute__ ((cleanup (util_closep)))

/* Append s to the NUL-terminated buf (size bytes in all) in single quotes,
   safe as one bash word ('\'' for each quote). Truncates when buf is too
   small: size it for the worst case, 4 bytes per byte of s plus 3. */
void util_shell_quote_append (char *buf, size_t size, const char *s);

/* Start argv[0] (looked up in PATH) with envp: stdin /dev/null, stdout
   and stderr to logfd, no other descriptor of ours, default signal
   dispositions and an empty mask; in a session of its own when
   new_session. 0 with *pid, or the posix_spawn error number. */
int util_spawn_logged (const char *const argv[], char *const envp[], int logfd, bool new_session,
                       pid_t *pid);

#endif
