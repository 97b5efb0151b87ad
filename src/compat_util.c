/* compat_util.c - helpers shared by the acontext and kapin surfaces. */
#include "compat_util.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

files_root_t *
compat_files_root (const compat_env_t *env, const char *tenant, const char *id, err_t *err)
{
    char cid[64], dir[1200], rootfs[1300];
    if (sandbox_resolve (env->mgr, tenant, id, cid, NULL, err) < 0)
        return NULL;
    sandbox_mgr_dir (env->mgr, cid, dir, sizeof dir);
    snprintf (rootfs, sizeof rootfs, "%s/bundle/rootfs", dir);
    return files_root_open (rootfs, err);
}

int
compat_files_write (files_root_t *root, const char *path, const void *data, size_t len,
                    bool mkdir_parents, err_t *err)
{
    files_writer_t *w = files_write_begin (root, path, mkdir_parents, -1, err);
    if (!w)
        return -1;
    if (len && files_write_chunk (w, data, len, err) < 0) {
        files_write_abort (&w);
        return -1;
    }
    return files_write_commit (&w, err);
}

char *
compat_base64_encode (const void *data, size_t len)
{
    size_t n = sodium_base64_encoded_len (len, sodium_base64_VARIANT_ORIGINAL);
    char *out = malloc (n);
    if (out)
        sodium_bin2base64 (out, n, data, len, sodium_base64_VARIANT_ORIGINAL);
    return out;
}

int
compat_base64_decode (const char *text, size_t text_len, const char *field, unsigned char **out,
                      size_t *len, err_t *err)
{
    /* libsodium's ignore list would let a NUL through as whitespace. */
    if (memchr (text, 0, text_len))
        return err_set (err, 400, "invalid_field", "field '%s': not valid base64", field);
    size_t cap = text_len / 4 * 3 + 3;
    unsigned char *bin = malloc (cap);
    if (!bin)
        return err_set (err, 500, "internal", "out of memory");
    const char *end = NULL;
    if (sodium_base642bin (bin, cap, text, text_len, " \t\r\n", len, &end,
                           sodium_base64_VARIANT_ORIGINAL)
            != 0
        || end != text + text_len) {
        free (bin);
        return err_set (err, 400, "invalid_field", "field '%s': not valid base64", field);
    }
    *out = bin;
    return 0;
}

char *
compat_shell_quote (const char *prefix, const char *s)
{
    size_t quotes = 0, plen = strlen (prefix), slen = strlen (s);
    for (const char *p = s; *p; p++)
        quotes += *p == '\'';
    char *out = malloc (plen + slen + quotes * 3 + 3);
    if (!out)
        return NULL;
    char *o = out;
    memcpy (o, prefix, plen);
    o += plen;
    *o++ = '\'';
    for (const char *p = s; *p; p++) {
        if (*p == '\'') {
            memcpy (o, "'\\''", 4);
            o += 4;
        }
        else
            *o++ = *p;
    }
    *o++ = '\'';
    *o = '\0';
    return out;
}

int
compat_parse_iso8601 (const char *s, int64_t *ms)
{
    struct tm tm;
    memset (&tm, 0, sizeof tm);
    int frac = 0, nfrac = 0;
    const char *p = s ? strptime (s, "%Y-%m-%dT%H:%M:%S", &tm) : NULL;
    if (!p)
        return -1;
    if (*p == '.') {
        p++;
        while (*p >= '0' && *p <= '9') {
            if (nfrac < 3) {
                frac = frac * 10 + (*p - '0');
                nfrac++;
            }
            p++;
        }
        if (nfrac == 0)
            return -1;
        while (nfrac < 3) {
            frac *= 10;
            nfrac++;
        }
    }
    if (strcmp (p, "Z") != 0)
        return -1;
    time_t t = timegm (&tm);
    if (t == (time_t)-1)
        return -1;
    *ms = (int64_t)t * 1000 + frac;
    return 0;
}
