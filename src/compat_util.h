/* compat_util.h - small pieces the acontext and kapin compatibility
   surfaces share: whole (bounded) files in and out of a sandbox, base64,
   shell quoting and RFC 3339 timestamps. Knows nothing of HTTP. */
#ifndef SANDBOXD_COMPAT_UTIL_H
#define SANDBOXD_COMPAT_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "compat.h"
#include "files.h"
#include "util.h"

/* The root filesystem of the tenant's sandbox id, for the files module.
   404 when the tenant has no such sandbox. Caller closes the result. */
files_root_t *compat_files_root (const compat_env_t *env, const char *tenant, const char *id,
                                 err_t *err);

/* Write data as the whole content of path (atomically: a failure leaves an
   old file as it was), creating missing parent directories when
   mkdir_parents. */
int compat_files_write (files_root_t *root, const char *path, const void *data, size_t len,
                        bool mkdir_parents, err_t *err);

/* Standard base64 (RFC 4648 alphabet, padded). Encode: a new NUL-terminated
   string, NULL when out of memory. Decode: whitespace is skipped; *out
   (caller frees, at most 3/4 of the text's length) and *len; 400
   "invalid_field" naming field when text is not base64. */
char *compat_base64_encode (const void *data, size_t len);
int compat_base64_decode (const char *text, size_t text_len, const char *field, unsigned char **out,
                          size_t *len, err_t *err);

/* s as one single-quoted POSIX shell word ('it'\''s'), appended to a new
   string after prefix. Caller frees; NULL when out of memory. */
char *compat_shell_quote (const char *prefix, const char *s);

/* Parse "YYYY-MM-DDTHH:MM:SS[.fff]Z" (what util_iso8601 writes) to epoch
   milliseconds. 0, or -1 when s is not such a timestamp. */
int compat_parse_iso8601 (const char *s, int64_t *ms);

#endif
