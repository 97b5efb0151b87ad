/* jsonv.c - request field validation and UTF-8 repair for output bytes. */
#include "jsonv.h"

#include <math.h>
#include <sodium.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

json_t *
jsonv_parse_object (const char *buf, size_t len, bool allow_empty, err_t *err)
{
    if (len == 0 || !buf) {
        if (allow_empty)
            return json_object ();
        err_set (err, 400, "invalid_json", "request body must be a JSON object");
        return NULL;
    }
    json_error_t jerr;
    json_t *root = json_loadb (buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        err_set (err, 400, "invalid_json", "invalid JSON at line %d column %d: %s", jerr.line,
                 jerr.column, jerr.text);
        return NULL;
    }
    if (!json_is_object (root)) {
        json_decref (root);
        err_set (err, 400, "invalid_json", "request body must be a JSON object");
        return NULL;
    }
    return root;
}

int
jsonv_only_keys (json_t *obj, const char *path, const char *const keys[], err_t *err)
{
    const char *key;
    json_t *value;
    json_object_foreach (obj, key, value)
    {
        bool known = false;
        for (size_t i = 0; keys[i]; i++)
            if (strcmp (key, keys[i]) == 0) {
                known = true;
                break;
            }
        if (!known)
            return err_set (err, 400, "invalid_field", "unknown field '%s%.64s'", path, key);
    }
    return 0;
}

/* Look up key; 1 when present and not null, 0 when absent (error if
   required), -1 on error. */
static int
s_lookup (json_t *obj, const char *path, const char *key, bool required, json_t **out, err_t *err)
{
    json_t *v = obj ? json_object_get (obj, key) : NULL;
    if (!v || json_is_null (v)) {
        if (required)
            return err_set (err, 400, "invalid_field", "field '%s%s' is required", path, key);
        return 0;
    }
    *out = v;
    return 1;
}

int
jsonv_string (json_t *obj, const char *path, const char *key, bool required, size_t max_len,
              const char **out, err_t *err)
{
    json_t *v = NULL;
    int rc = s_lookup (obj, path, key, required, &v, err);
    if (rc <= 0)
        return rc;
    if (!json_is_string (v))
        return err_set (err, 400, "invalid_field", "field '%s%s': must be a string", path, key);
    size_t n = json_string_length (v);
    if (n > max_len)
        return err_set (err, 400, "invalid_field", "field '%s%s': longer than %zu bytes", path, key,
                        max_len);
    if (strlen (json_string_value (v)) != n)
        return err_set (err, 400, "invalid_field", "field '%s%s': must not contain NUL", path, key);
    *out = json_string_value (v);
    return 0;
}

int
jsonv_int (json_t *obj, const char *path, const char *key, bool required, int64_t min, int64_t max,
           int64_t *out, err_t *err)
{
    json_t *v = NULL;
    int rc = s_lookup (obj, path, key, required, &v, err);
    if (rc <= 0)
        return rc;
    json_int_t n;
    if (json_is_integer (v))
        n = json_integer_value (v);
    else if (json_is_real (v) && json_real_value (v) == floor (json_real_value (v))
             && fabs (json_real_value (v)) < 9e15)
        n = (json_int_t)json_real_value (v);
    else
        return err_set (err, 400, "invalid_field",
                        "field '%s%s': must be an integer from %lld to %lld", path, key,
                        (long long)min, (long long)max);
    if (n < min || n > max)
        return err_set (err, 400, "invalid_field",
                        "field '%s%s': must be an integer from %lld to %lld", path, key,
                        (long long)min, (long long)max);
    *out = n;
    return 0;
}

int
jsonv_number (json_t *obj, const char *path, const char *key, bool required, double min, double max,
              double *out, err_t *err)
{
    json_t *v = NULL;
    int rc = s_lookup (obj, path, key, required, &v, err);
    if (rc <= 0)
        return rc;
    if (!json_is_number (v) || !(json_number_value (v) >= min && json_number_value (v) <= max))
        return err_set (err, 400, "invalid_field", "field '%s%s': must be a number from %g to %g",
                        path, key, min, max);
    *out = json_number_value (v);
    return 0;
}

int
jsonv_bool (json_t *obj, const char *path, const char *key, bool *out, err_t *err)
{
    json_t *v = NULL;
    int rc = s_lookup (obj, path, key, false, &v, err);
    if (rc <= 0)
        return rc;
    if (!json_is_boolean (v))
        return err_set (err, 400, "invalid_field", "field '%s%s': must be true or false", path,
                        key);
    *out = json_is_true (v);
    return 0;
}

int
jsonv_env (json_t *obj, const char *path, const char *key, size_t max_entries, size_t max_bytes,
           json_t **out, err_t *err)
{
    json_t *v = NULL;
    int rc = s_lookup (obj, path, key, false, &v, err);
    if (rc <= 0)
        return rc;
    if (!json_is_object (v))
        return err_set (err, 400, "invalid_field",
                        "field '%s%s': must be an object of string values", path, key);
    if (json_object_size (v) > max_entries)
        return err_set (err, 400, "invalid_field", "field '%s%s': more than %zu variables", path,
                        key, max_entries);
    size_t total = 0;
    const char *name;
    json_t *val;
    json_object_foreach (v, name, val)
    {
        if (!util_valid_env_name (name) || strlen (name) > 256)
            return err_set (err, 400, "invalid_field",
                            "field '%s%s': invalid variable name '%.64s'", path, key, name);
        if (!json_is_string (val) || strlen (json_string_value (val)) != json_string_length (val))
            return err_set (err, 400, "invalid_field",
                            "field '%s%s.%.64s': must be a string without NUL", path, key, name);
        total += strlen (name) + json_string_length (val) + 2;
    }
    if (total > max_bytes)
        return err_set (err, 400, "invalid_field", "field '%s%s': larger than %zu bytes", path, key,
                        max_bytes);
    *out = v;
    return 0;
}

/* Length of the valid UTF-8 sequence at p (at most n bytes), or 0. */
static size_t
s_utf8_seq (const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    size_t len;
    unsigned min;
    unsigned cp;
    if (c < 0x80)
        return 1;
    else if ((c & 0xE0) == 0xC0)
        len = 2, min = 0x80, cp = c & 0x1F;
    else if ((c & 0xF0) == 0xE0)
        len = 3, min = 0x800, cp = c & 0x0F;
    else if ((c & 0xF8) == 0xF0)
        len = 4, min = 0x10000, cp = c & 0x07;
    else
        return 0;
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

char *
jsonv_utf8_scrub (const char *buf, size_t len, size_t *out_len)
{
    const unsigned char *p = (const unsigned char *)buf;
    size_t bad = 0;
    for (size_t i = 0; i < len;) {
        size_t n = s_utf8_seq (p + i, len - i);
        bad += n == 0;
        i += n ? n : 1;
    }
    if (bad == 0 || len > SIZE_MAX - 2 * bad)
        return NULL;
    char *out = malloc (len + 2 * bad);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        size_t n = s_utf8_seq (p + i, len - i);
        if (n == 0) {
            memcpy (out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i += 1;
        }
        else {
            memcpy (out + o, p + i, n);
            o += n;
            i += n;
        }
    }
    *out_len = o;
    return out;
}

json_t *
jsonv_string_from_bytes (const char *buf, size_t len)
{
    size_t clean_len = 0;
    char *clean = jsonv_utf8_scrub (buf, len, &clean_len);
    if (!clean)
        return json_stringn_nocheck (buf, len);
    json_t *s = json_stringn_nocheck (clean, clean_len);
    free (clean);
    return s;
}

char *
jsonv_dumps (const json_t *value)
{
    return json_dumps (value, JSON_COMPACT | JSON_ENCODE_ANY);
}

json_t *
jsonv_file_content (const char *buf, size_t len, bool base64, bool *not_utf8)
{
    *not_utf8 = false;
    if (base64) {
        size_t n = sodium_base64_encoded_len (len, sodium_base64_VARIANT_ORIGINAL);
        char *enc = malloc (n);
        if (!enc)
            return NULL;
        sodium_bin2base64 (enc, n, (const unsigned char *)buf, len, sodium_base64_VARIANT_ORIGINAL);
        json_t *s = json_string (enc);
        free (enc);
        return s;
    }
    json_t *s = memchr (buf, 0, len) ? NULL : json_stringn (buf, len);
    if (!s)
        *not_utf8 = true;
    return s;
}
