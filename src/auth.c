/* auth.c - tokens file loading and constant-time token lookup. */
#include "auth.h"

#include <ctype.h>
#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define HASH_LEN 32

typedef struct {
    unsigned char hash[HASH_LEN];
    char tenant[64];
} entry_t;

struct _auth_t {
    int open;
    entry_t *entries;
    size_t count;
};

/* Tokens are hashed on load and on lookup, so every comparison has the same
   length and the same cost whatever the token looks like. */
static void
s_hash (const char *token, size_t len, unsigned char out[HASH_LEN])
{
    crypto_generichash (out, HASH_LEN, (const unsigned char *)token, len, NULL, 0);
}

auth_t *
auth_new_open (void)
{
    auth_t *self = calloc (1, sizeof *self);
    if (self)
        self->open = 1;
    return self;
}

auth_t *
auth_load (const char *path, err_t *err)
{
    FILE *f = fopen (path, "re");
    if (!f) {
        err_set (err, 500, "invalid_config", "cannot open tokens file %s: %s", path,
                 strerror (errno));
        return NULL;
    }
    struct stat st;
    if (fstat (fileno (f), &st) == 0 && (st.st_mode & S_IWOTH)) {
        fclose (f);
        err_set (err, 500, "invalid_config", "tokens file %s is world-writable", path);
        return NULL;
    }
    auth_t *self = calloc (1, sizeof *self);
    if (!self) {
        fclose (f);
        err_set (err, 500, "internal", "out of memory");
        return NULL;
    }
    char *line = NULL;
    size_t cap = 0;
    int lineno = 0;
    while (getline (&line, &cap, f) != -1) {
        lineno++;
        char *save = NULL;
        char *token = strtok_r (line, " \t\r\n", &save);
        if (!token || token[0] == '#')
            continue;
        char *tenant = strtok_r (NULL, " \t\r\n", &save);
        char *extra = tenant ? strtok_r (NULL, " \t\r\n", &save) : NULL;
        if (!tenant || (extra && extra[0] != '#') || strlen (token) < 16 || strlen (token) > 512
            || !util_valid_id (tenant)) {
            err_set (err, 500, "invalid_config",
                     "%s:%d: expected 'TOKEN TENANT' (token of 16 to 512 characters, tenant of "
                     "[A-Za-z0-9_.-])",
                     path, lineno);
            goto fail;
        }
        entry_t *grown = realloc (self->entries, (self->count + 1) * sizeof *grown);
        if (!grown) {
            err_set (err, 500, "internal", "out of memory");
            goto fail;
        }
        self->entries = grown;
        entry_t *e = &self->entries[self->count++];
        s_hash (token, strlen (token), e->hash);
        snprintf (e->tenant, sizeof e->tenant, "%s", tenant);
    }
    if (line)
        sodium_memzero (line, cap);
    free (line);
    fclose (f);
    if (self->count == 0) {
        err_set (err, 500, "invalid_config", "tokens file %s holds no tokens", path);
        auth_destroy (&self);
        return NULL;
    }
    return self;
fail:
    if (line)
        sodium_memzero (line, cap);
    free (line);
    fclose (f);
    auth_destroy (&self);
    return NULL;
}

void
auth_destroy (auth_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    auth_t *self = *self_p;
    if (self->entries)
        sodium_memzero (self->entries, self->count * sizeof *self->entries);
    free (self->entries);
    free (self);
    *self_p = NULL;
}

int
auth_is_open (const auth_t *self)
{
    return self->open;
}

size_t
auth_count (const auth_t *self)
{
    return self->count;
}

const char *
auth_tenant (const auth_t *self, const char *authorization)
{
    if (self->open)
        return "default";
    /* "token" is the scheme Jupyter's gateway client sends. */
    const char *token;
    if (authorization && !strncasecmp (authorization, "Bearer ", 7))
        token = authorization + 7;
    else if (authorization && !strncasecmp (authorization, "token ", 6))
        token = authorization + 6;
    else
        return NULL;
    while (*token == ' ')
        token++;
    size_t len = strlen (token);
    while (len > 0 && isspace ((unsigned char)token[len - 1]))
        len--;
    if (len == 0 || len > 512)
        return NULL;
    unsigned char hash[HASH_LEN];
    s_hash (token, len, hash);
    const char *found = NULL;
    /* Visit every entry whatever matches, so timing says nothing of which. */
    for (size_t i = 0; i < self->count; i++) {
        int eq = sodium_memcmp (hash, self->entries[i].hash, HASH_LEN) == 0;
        if (eq && !found)
            found = self->entries[i].tenant;
    }
    return found;
}
