/* jsonv.h - validating JSON request bodies field by field, with errors that
   name the offending field, and making untrusted bytes safe for JSON. */
#ifndef SANDBOXD_JSONV_H
#define SANDBOXD_JSONV_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "util.h"

/* Parse a request body that must be a JSON object. An empty body counts as
   {} when allow_empty. Caller owns the result. NULL with a 400 on error. */
json_t *jsonv_parse_object (const char *buf, size_t len, bool allow_empty, err_t *err);

/* Fail with 400 invalid_field naming the first key of obj that is not in
   the NULL-terminated list. `path` prefixes nested names ("limits."). */
int jsonv_only_keys (json_t *obj, const char *path, const char *const keys[], err_t *err);

/* Each getter: absent or null → *out untouched and 0 (unless required, then
   400); wrong type or out of range → 400 naming path+key. */
int jsonv_string (json_t *obj, const char *path, const char *key, bool required, size_t max_len,
                  const char **out, err_t *err);
int jsonv_int (json_t *obj, const char *path, const char *key, bool required, int64_t min,
               int64_t max, int64_t *out, err_t *err);
int jsonv_number (json_t *obj, const char *path, const char *key, bool required, double min,
                  double max, double *out, err_t *err);
int jsonv_bool (json_t *obj, const char *path, const char *key, bool *out, err_t *err);

/* An environment map: object of string → string, at most max_entries,
   names matching [A-Za-z_][A-Za-z0-9_]*, values without NUL, total size
   at most max_bytes. *out is borrowed from obj (NULL when absent). */
int jsonv_env (json_t *obj, const char *path, const char *key, size_t max_entries, size_t max_bytes,
               json_t **out, err_t *err);

/* A copy of buf with every byte that does not start a valid UTF-8 sequence
   (overlong forms, surrogates and code points past U+10FFFF included)
   replaced by U+FFFD, or NULL when buf is valid UTF-8 already (or memory
   ran out). Caller frees. */
char *jsonv_utf8_scrub (const char *buf, size_t len, size_t *out_len);

/* A new JSON string from arbitrary bytes: invalid UTF-8 sequences become
   U+FFFD, NUL bytes are kept (\u0000). Caller owns the reference. */
json_t *jsonv_string_from_bytes (const char *buf, size_t len);

/* A file's bytes as a JSON string for a response: base64 (standard
   alphabet) when base64, else the text itself, which must be UTF-8 without
   NUL: otherwise NULL with *not_utf8 set. NULL with *not_utf8 clear when
   memory ran out. Caller owns the result. */
json_t *jsonv_file_content (const char *buf, size_t len, bool base64, bool *not_utf8);

/* Serialise compactly; caller frees. */
char *jsonv_dumps (const json_t *value);

#endif
