/* notebooks.c - running nbformat 4 notebooks through a code context, cell by
   cell, and turning what the kernel sent into nbformat outputs. */
#include "notebooks.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "execution.h"
#include "jsonv.h"

#define S_DEFAULT_TIMEOUT_MS 600000

/* ---- the request ----------------------------------------------------------- */

static const char *const s_wrapper_keys[]
    = { "notebook", "language", "stop_on_error", "timeout_ms", "context_id", NULL };

/* The joined length of a source (string or array of strings), or -1 when it
   has neither shape. */
static long long
s_source_len (json_t *src)
{
    if (json_is_string (src))
        return (long long)json_string_length (src);
    if (!json_is_array (src))
        return -1;
    long long total = 0;
    size_t i;
    json_t *part;
    json_array_foreach (src, i, part)
    {
        if (!json_is_string (part))
            return -1;
        total += (long long)json_string_length (part);
    }
    return total;
}

/* True when a source (already checked by s_source_len) holds a NUL: the
   kernel gets C strings. */
static bool
s_has_nul (json_t *src)
{
    if (json_is_string (src))
        return strlen (json_string_value (src)) != json_string_length (src);
    size_t i;
    json_t *part;
    json_array_foreach (src, i, part)
    {
        if (strlen (json_string_value (part)) != json_string_length (part))
            return true;
    }
    return false;
}

char *
notebooks_source (json_t *cell)
{
    json_t *src = json_object_get (cell, "source");
    long long len = s_source_len (src);
    if (len < 0)
        return NULL;
    char *buf = malloc ((size_t)len + 1);
    if (!buf)
        return NULL;
    if (json_is_string (src))
        memcpy (buf, json_string_value (src), (size_t)len);
    else {
        size_t o = 0, i;
        json_t *part;
        json_array_foreach (src, i, part)
        {
            memcpy (buf + o, json_string_value (part), json_string_length (part));
            o += json_string_length (part);
        }
    }
    buf[len] = '\0';
    return buf;
}

/* Check the parts of a notebook this service relies on; p prefixes field
   names ("notebook." in the wrapper form). */
static int
s_validate (json_t *nb, const char *p, size_t max_source, err_t *err)
{
    json_t *v = json_object_get (nb, "nbformat");
    if (!json_is_integer (v) || json_integer_value (v) != 4)
        return err_set (err, 400, "invalid_field",
                        "field '%snbformat': must be 4 (only nbformat 4 notebooks run)", p);
    v = json_object_get (nb, "nbformat_minor");
    if (v && (!json_is_integer (v) || json_integer_value (v) < 0))
        return err_set (err, 400, "invalid_field",
                        "field '%snbformat_minor': must be a non-negative integer", p);
    v = json_object_get (nb, "metadata");
    if (v && !json_is_object (v))
        return err_set (err, 400, "invalid_field", "field '%smetadata': must be an object", p);
    json_t *cells = json_object_get (nb, "cells");
    if (!json_is_array (cells))
        return err_set (err, 400, "invalid_field", "field '%scells': must be an array of cells", p);
    if (json_array_size (cells) > NOTEBOOKS_MAX_CELLS)
        return err_set (err, 400, "invalid_field", "field '%scells': more than %d cells", p,
                        NOTEBOOKS_MAX_CELLS);
    size_t i;
    json_t *cell;
    json_array_foreach (cells, i, cell)
    {
        if (!json_is_object (cell))
            return err_set (err, 400, "invalid_field", "field '%scells[%zu]': must be an object", p,
                            i);
        const char *type = json_string_value (json_object_get (cell, "cell_type"));
        if (!type)
            return err_set (err, 400, "invalid_field",
                            "field '%scells[%zu].cell_type': must be a string", p, i);
        bool code = !strcmp (type, "code");
        if (!code && strcmp (type, "markdown") && strcmp (type, "raw"))
            continue; /* not ours to judge: returned as it came */
        long long len = s_source_len (json_object_get (cell, "source"));
        if (len < 0)
            return err_set (err, 400, "invalid_field",
                            "field '%scells[%zu].source': must be a string or an array of strings",
                            p, i);
        if (code && (size_t)len > max_source)
            return err_set (err, 400, "invalid_field",
                            "field '%scells[%zu].source': longer than %zu bytes", p, i, max_source);
        if (code && s_has_nul (json_object_get (cell, "source")))
            return err_set (err, 400, "invalid_field",
                            "field '%scells[%zu].source': must not contain NUL", p, i);
    }
    return 0;
}

static int
s_query_bool (const char *v, const char *name, bool *out, err_t *err)
{
    if (!v)
        return 0;
    if (!*v || !strcmp (v, "1") || !strcmp (v, "true"))
        *out = true;
    else if (!strcmp (v, "0") || !strcmp (v, "false"))
        *out = false;
    else
        return err_set (err, 400, "invalid_field", "query '%s': must be true or false", name);
    return 0;
}

static int
s_query_int (const char *v, const char *name, int64_t min, int64_t max, int64_t *out, err_t *err)
{
    if (!v)
        return 0;
    char *end = NULL;
    long long n = *v ? strtoll (v, &end, 10) : 0;
    if (!*v || *end || n < min || n > max)
        return err_set (err, 400, "invalid_field",
                        "query '%s': must be an integer from %lld to %lld", name, (long long)min,
                        (long long)max);
    *out = n;
    return 0;
}

static int
s_set_language (const char *language, const char *what, notebooks_request_t *req, err_t *err)
{
    if (!language)
        return 0;
    if (kernel_lang_parse (language, &req->language) < 0)
        return err_set (err, 400, "invalid_field",
                        "%s 'language': must be python, javascript or typescript", what);
    req->has_language = true;
    return 0;
}

static int
s_set_context (const char *id, const char *what, notebooks_request_t *req, err_t *err)
{
    if (!id)
        return 0;
    if (!*id || strlen (id) >= sizeof req->context_id)
        return err_set (err, 400, "invalid_field", "%s 'context_id': must be a context id", what);
    snprintf (req->context_id, sizeof req->context_id, "%s", id);
    return 0;
}

int
notebooks_request_parse (json_t *body, const notebooks_query_t *q, size_t max_source,
                         int64_t max_timeout_ms, notebooks_request_t *req, err_t *err)
{
    memset (req, 0, sizeof *req);
    req->stop_on_error = true;
    req->timeout_ms = S_DEFAULT_TIMEOUT_MS < max_timeout_ms ? S_DEFAULT_TIMEOUT_MS : max_timeout_ms;
    if (!json_is_object (body))
        return err_set (err, 400, "invalid_json", "request body must be a JSON object");

    /* The query string first; a wrapper's own fields win over it. */
    if (q
        && (s_set_language (q->language, "query", req, err) < 0
            || s_query_bool (q->stop_on_error, "stop_on_error", &req->stop_on_error, err) < 0
            || s_query_int (q->timeout_ms, "timeout_ms", 1, max_timeout_ms, &req->timeout_ms, err)
                   < 0
            || s_set_context (q->context_id, "query", req, err) < 0))
        return -1;

    json_t *nb = body;
    const char *p = "";
    if (json_object_get (body, "notebook")) {
        const char *language = NULL, *ctx = NULL;
        if (jsonv_only_keys (body, "", s_wrapper_keys, err) < 0
            || jsonv_string (body, "", "language", false, 32, &language, err) < 0
            || jsonv_bool (body, "", "stop_on_error", &req->stop_on_error, err) < 0
            || jsonv_int (body, "", "timeout_ms", false, 1, max_timeout_ms, &req->timeout_ms, err)
                   < 0
            || jsonv_string (body, "", "context_id", false, 63, &ctx, err) < 0
            || s_set_language (language, "field", req, err) < 0
            || s_set_context (ctx, "field", req, err) < 0)
            return -1;
        nb = json_object_get (body, "notebook");
        if (!json_is_object (nb))
            return err_set (err, 400, "invalid_field",
                            "field 'notebook': must be an nbformat 4 notebook object");
        p = "notebook.";
    }
    else if (!json_object_get (body, "cells") && !json_object_get (body, "nbformat"))
        return err_set (err, 400, "invalid_field",
                        "field 'notebook': required (or send the notebook itself as the body)");
    if (s_validate (nb, p, max_source, err) < 0)
        return -1;
    req->notebook = json_deep_copy (nb);
    if (!req->notebook)
        return err_set (err, 500, "internal", "out of memory");
    return 0;
}

void
notebooks_request_clear (notebooks_request_t *req)
{
    if (!req)
        return;
    json_decref (req->notebook);
    req->notebook = NULL;
}

/* ---- language ---------------------------------------------------------------- */

static int
s_lang_of (const char *name, kernel_lang_t *out)
{
    static const struct {
        const char *name;
        kernel_lang_t lang;
    } map[] = {
        { "python", KERNEL_PYTHON },         { "python3", KERNEL_PYTHON },
        { "ipython", KERNEL_PYTHON },        { "javascript", KERNEL_JAVASCRIPT },
        { "jslab", KERNEL_JAVASCRIPT },      { "js", KERNEL_JAVASCRIPT },
        { "typescript", KERNEL_TYPESCRIPT }, { "tslab", KERNEL_TYPESCRIPT },
        { "ts", KERNEL_TYPESCRIPT },
    };
    if (!name)
        return -1;
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (!strcasecmp (name, map[i].name)) {
            *out = map[i].lang;
            return 0;
        }
    return -1;
}

int
notebooks_language (json_t *notebook, kernel_lang_t *out, err_t *err)
{
    json_t *meta = json_object_get (notebook, "metadata");
    json_t *spec = json_object_get (meta, "kernelspec");
    if (json_is_object (spec)) {
        const char *name = json_string_value (json_object_get (spec, "name"));
        const char *language = json_string_value (json_object_get (spec, "language"));
        if (s_lang_of (name, out) == 0 || s_lang_of (language, out) == 0)
            return 0;
        if (name || language)
            return err_set (err, 400, "invalid_field",
                            "field 'metadata.kernelspec': kernel '%.64s' (language '%.64s') is "
                            "not one this service runs (python, javascript, typescript); give "
                            "'language' to override",
                            name ? name : "", language ? language : "");
    }
    json_t *info = json_object_get (meta, "language_info");
    const char *name = json_string_value (json_object_get (info, "name"));
    if (name) {
        if (s_lang_of (name, out) == 0)
            return 0;
        return err_set (err, 400, "invalid_field",
                        "field 'metadata.language_info.name': '%.64s' is not python, javascript "
                        "or typescript; give 'language' to override",
                        name);
    }
    *out = KERNEL_PYTHON;
    return 0;
}

void
notebooks_reset (json_t *notebook, kernel_lang_t lang)
{
    size_t i;
    json_t *cell;
    json_array_foreach (json_object_get (notebook, "cells"), i, cell)
    {
        const char *type = json_string_value (json_object_get (cell, "cell_type"));
        if (!type || strcmp (type, "code"))
            continue;
        json_object_set_new (cell, "outputs", json_array ());
        json_object_set_new (cell, "execution_count", json_null ());
    }
    json_t *meta = json_object_get (notebook, "metadata");
    if (!meta) {
        meta = json_object ();
        json_object_set_new (notebook, "metadata", meta);
    }
    json_t *info = json_object_get (meta, "language_info");
    if (!info) {
        info = json_object ();
        json_object_set_new (meta, "language_info", info);
    }
    if (json_is_object (info) && !json_object_get (info, "name"))
        json_object_set_new (info, "name", json_string (kernel_lang_name (lang)));
}

/* ---- one cell's outputs ------------------------------------------------------ */

typedef struct {
    char *display_id; /* the transient display_id, or NULL */
    size_t bytes;
} s_out_t;

struct _notebooks_cell_t {
    size_t max_bytes;
    size_t used;
    json_t *outputs; /* nbformat outputs; execute_result counts set at the end */
    s_out_t *info;   /* parallel to outputs */
    size_t cap;
    bool clear_pending;
    bool truncated;
    bool failed;
    json_int_t count;
};

typedef struct {
    size_t n, limit;
} s_counter_t;

static int
s_count_cb (const char *buf, size_t size, void *data)
{
    (void)buf;
    s_counter_t *c = data;
    c->n += size;
    return 0;
}

/* The bytes a value costs once serialised. */
static size_t
s_bytes (const json_t *v)
{
    s_counter_t c = { 0, 0 };
    json_dump_callback (v, s_count_cb, &c, JSON_COMPACT | JSON_ENCODE_ANY);
    return c.n;
}

notebooks_cell_t *
notebooks_cell_new (size_t max_bytes)
{
    notebooks_cell_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->max_bytes = max_bytes;
    self->count = -1;
    self->outputs = json_array ();
    if (!self->outputs) {
        free (self);
        return NULL;
    }
    return self;
}

static void
s_clear (notebooks_cell_t *self)
{
    for (size_t i = 0; i < json_array_size (self->outputs); i++)
        free (self->info[i].display_id);
    json_array_clear (self->outputs);
    self->used = 0;
    self->clear_pending = false;
}

void
notebooks_cell_destroy (notebooks_cell_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    notebooks_cell_t *self = *self_p;
    s_clear (self);
    json_decref (self->outputs);
    free (self->info);
    free (self);
    *self_p = NULL;
}

/* Bytes still allowed (errors kept past the budget can overdraw it). */
static size_t
s_room (const notebooks_cell_t *self)
{
    return self->used < self->max_bytes ? self->max_bytes - self->used : 0;
}

/* Append out (stolen) with its display id; always when force (errors must
   be seen), else only within the budget. False when it was dropped. */
static bool
s_append (notebooks_cell_t *self, json_t *out, const char *display_id, bool force)
{
    size_t n = json_array_size (self->outputs);
    size_t bytes = s_bytes (out);
    if (!force && (self->truncated || bytes > s_room (self))) {
        self->truncated = true;
        json_decref (out);
        return false;
    }
    if (n == self->cap) {
        size_t cap = self->cap ? self->cap * 2 : 8;
        s_out_t *grown = realloc (self->info, cap * sizeof *grown);
        if (!grown) {
            json_decref (out);
            return false;
        }
        self->info = grown;
        self->cap = cap;
    }
    if (json_array_append_new (self->outputs, out) != 0)
        return false;
    self->info[n].display_id = display_id ? strdup (display_id) : NULL;
    self->info[n].bytes = bytes;
    self->used += bytes;
    return true;
}

static json_t *
s_on_stream (notebooks_cell_t *self, const char *name, json_t *data)
{
    json_t *text = json_object_get (data, "text");
    if (!json_is_string (text))
        return NULL;
    json_t *chunk
        = json_pack ("{s:s, s:s, s:O}", "output_type", "stream", "name", name, "text", text);
    if (!chunk)
        return NULL;
    size_t n = json_array_size (self->outputs);
    json_t *last = n ? json_array_get (self->outputs, n - 1) : NULL;
    const char *last_type = json_string_value (json_object_get (last, "output_type"));
    const char *last_name = json_string_value (json_object_get (last, "name"));
    if (last_type && !strcmp (last_type, "stream") && last_name && !strcmp (last_name, name)) {
        size_t add = json_string_length (text);
        if (self->truncated || add > s_room (self)) {
            self->truncated = true;
            json_decref (chunk);
            return NULL;
        }
        json_t *old = json_object_get (last, "text");
        size_t oldn = json_string_length (old);
        char *buf = malloc (oldn + add + 1);
        if (!buf) {
            json_decref (chunk);
            return NULL;
        }
        memcpy (buf, json_string_value (old), oldn);
        memcpy (buf + oldn, json_string_value (text), add);
        json_object_set_new (last, "text", json_stringn_nocheck (buf, oldn + add));
        free (buf);
        self->info[n - 1].bytes += add;
        self->used += add;
        return chunk;
    }
    json_t *kept = json_copy (chunk);
    if (!kept || !s_append (self, kept, NULL, false)) {
        json_decref (chunk);
        return NULL;
    }
    return chunk;
}

static json_t *
s_on_result (notebooks_cell_t *self, json_t *data)
{
    json_t *bundle = execution_result_to_bundle (data);
    if (!bundle)
        return NULL;
    bool is_main = json_is_true (json_object_get (data, "is_main_result"));
    const char *display_id = json_string_value (json_object_get (data, "display_id"));
    json_t *out = is_main ? json_pack ("{s:s, s:o, s:{}, s:o}", "output_type", "execute_result",
                                       "data", bundle, "metadata", "execution_count",
                                       self->count >= 0 ? json_integer (self->count) : json_null ())
                          : json_pack ("{s:s, s:o, s:{}}", "output_type", "display_data", "data",
                                       bundle, "metadata");
    if (!out)
        return NULL;
    json_t *kept = json_copy (out);
    if (!kept || !s_append (self, kept, display_id, false)) {
        json_decref (out);
        return NULL;
    }
    return out;
}

static void
s_on_update (notebooks_cell_t *self, json_t *data)
{
    const char *display_id = json_string_value (json_object_get (data, "display_id"));
    json_t *bundle = execution_result_to_bundle (json_object_get (data, "result"));
    if (!display_id || !bundle) {
        json_decref (bundle);
        return;
    }
    size_t bytes = s_bytes (bundle);
    for (size_t i = 0; i < json_array_size (self->outputs); i++) {
        if (!self->info[i].display_id || strcmp (self->info[i].display_id, display_id))
            continue;
        json_t *out = json_array_get (self->outputs, i);
        size_t old = s_bytes (json_object_get (out, "data"));
        if (bytes > old && bytes - old > s_room (self)) {
            self->truncated = true;
            continue;
        }
        json_object_set (out, "data", bundle);
        self->used = self->used - old + bytes;
        self->info[i].bytes = self->info[i].bytes - old + bytes;
    }
    json_decref (bundle);
}

static json_t *
s_on_error (notebooks_cell_t *self, json_t *data)
{
    json_t *name = json_object_get (data, "name"), *value = json_object_get (data, "value");
    json_t *tb = json_object_get (data, "traceback");
    if (!json_is_string (name) || !json_is_string (value))
        return NULL;
    json_t *out
        = json_pack ("{s:s, s:O, s:O, s:o}", "output_type", "error", "ename", name, "evalue", value,
                     "traceback", json_is_array (tb) ? json_deep_copy (tb) : json_array ());
    if (!out)
        return NULL;
    self->failed = true;
    for (size_t i = json_array_size (self->outputs); i-- > 0;) {
        json_t *o = json_array_get (self->outputs, i);
        if (strcmp (json_string_value (json_object_get (o, "output_type")), "error"))
            continue;
        /* One error per cell: the later one tells what ended it. */
        size_t bytes = s_bytes (out);
        self->used = self->used - self->info[i].bytes + bytes;
        self->info[i].bytes = bytes;
        json_array_set_new (self->outputs, i, json_copy (out));
        return out;
    }
    json_t *kept = json_copy (out);
    if (kept)
        s_append (self, kept, NULL, true);
    return out;
}

json_t *
notebooks_cell_apply (notebooks_cell_t *self, json_t *event)
{
    const char *name = json_string_value (json_object_get (event, "event"));
    json_t *data = json_object_get (event, "data");
    if (!self || !name || !json_is_object (data))
        return NULL;
    if (!strcmp (name, "execution_count")) {
        json_t *c = json_object_get (data, "execution_count");
        if (self->count < 0 && json_is_integer (c) && json_integer_value (c) >= 0)
            self->count = json_integer_value (c);
        return NULL;
    }
    if (!strcmp (name, "clear_output")) {
        if (json_is_true (json_object_get (data, "wait")))
            self->clear_pending = true;
        else
            s_clear (self);
        return NULL;
    }
    if (!strcmp (name, "display_update")) {
        s_on_update (self, data);
        return NULL;
    }
    bool stream = !strcmp (name, "stdout") || !strcmp (name, "stderr");
    if (!stream && strcmp (name, "result") && strcmp (name, "error"))
        return NULL;
    /* clear_output(wait=True): the old outputs go when the next one comes. */
    if (self->clear_pending)
        s_clear (self);
    if (stream)
        return s_on_stream (self, name, data);
    if (!strcmp (name, "result"))
        return s_on_result (self, data);
    return s_on_error (self, data);
}

json_t *
notebooks_cell_outputs (notebooks_cell_t *self, json_int_t count)
{
    json_t *outs = json_deep_copy (self->outputs);
    if (!outs)
        return NULL;
    size_t i;
    json_t *o;
    json_array_foreach (outs, i, o)
    {
        if (!strcmp (json_string_value (json_object_get (o, "output_type")), "execute_result"))
            json_object_set_new (o, "execution_count",
                                 count >= 0 ? json_integer (count) : json_null ());
    }
    if (self->truncated)
        json_array_append_new (
            outs, json_pack ("{s:s, s:s, s:s}", "output_type", "stream", "name", "stderr", "text",
                             "[sandboxd: output truncated: the notebook's outputs reached "
                             "max_result_bytes; later output was dropped]\n"));
    return outs;
}

json_int_t
notebooks_cell_count (const notebooks_cell_t *self)
{
    return self->count;
}

bool
notebooks_cell_failed (const notebooks_cell_t *self)
{
    return self->failed;
}

bool
notebooks_cell_truncated (const notebooks_cell_t *self)
{
    return self->truncated;
}

size_t
notebooks_cell_bytes (const notebooks_cell_t *self)
{
    return self->used;
}

/* ---- running ----------------------------------------------------------------- */

struct _notebooks_job_t {
    contexts_t *ctxs;
    const config_t *cfg;
    char *tenant;
    char *sid;
    char ctx_id[64];
    bool own_ctx; /* created for this run: deleted after it */
    kernel_lang_t lang;
    notebooks_request_t req;
};

void
notebooks_job_free (notebooks_job_t *job)
{
    if (!job)
        return;
    if (job->own_ctx) {
        err_t err = { 0 };
        if (contexts_delete (job->ctxs, job->tenant, job->sid, job->ctx_id, &err) < 0
            && err.status != 404)
            log_warn ("tenant=%s sandbox=%s context=%s: deleting the notebook's context: %s",
                      job->tenant, job->sid, job->ctx_id, err.message);
    }
    notebooks_request_clear (&job->req);
    free (job->tenant);
    free (job->sid);
    free (job);
}

notebooks_job_t *
notebooks_prepare (contexts_t *ctxs, const config_t *cfg, const char *tenant, const char *sid,
                   notebooks_request_t *req, err_t *err)
{
    notebooks_job_t *job = calloc (1, sizeof *job);
    if (job) {
        job->tenant = strdup (tenant);
        job->sid = strdup (sid);
    }
    if (!job || !job->tenant || !job->sid) {
        if (job) {
            free (job->tenant);
            free (job->sid);
            free (job);
        }
        err_set (err, 500, "internal", "out of memory");
        return NULL;
    }
    job->ctxs = ctxs;
    job->cfg = cfg;
    json_t *info = NULL;
    if (req->context_id[0]) {
        if (contexts_get (ctxs, tenant, sid, req->context_id, &info, err) < 0)
            goto fail;
        if (kernel_lang_parse (json_string_value (json_object_get (info, "language")), &job->lang)
            < 0) {
            err_set (err, 500, "internal", "context %s has no known language", req->context_id);
            goto fail;
        }
        if (req->has_language && req->language != job->lang) {
            err_set (err, 400, "invalid_field",
                     "field 'language': context %s runs %s, not %s; leave 'language' out to use "
                     "it",
                     req->context_id, kernel_lang_name (job->lang),
                     kernel_lang_name (req->language));
            goto fail;
        }
        snprintf (job->ctx_id, sizeof job->ctx_id, "%s", req->context_id);
    }
    else {
        if (req->has_language)
            job->lang = req->language;
        else if (notebooks_language (req->notebook, &job->lang, err) < 0)
            goto fail;
        json_t *body = json_pack ("{s:s}", "language", kernel_lang_name (job->lang));
        int rc = contexts_create (ctxs, tenant, sid, body, &info, err);
        json_decref (body);
        if (rc < 0)
            goto fail;
        const char *id = json_string_value (json_object_get (info, "id"));
        snprintf (job->ctx_id, sizeof job->ctx_id, "%s", id ? id : "");
        job->own_ctx = true;
    }
    json_decref (info);
    job->req = *req;
    memset (req, 0, sizeof *req);
    return job;
fail:
    json_decref (info);
    notebooks_job_free (job);
    return NULL;
}

/* What the kernel sink needs while one cell runs. */
typedef struct {
    notebooks_cell_t *cell;
    notebooks_sink_fn *sink;
    void *arg;
    size_t index;
    bool gone;
} s_run_t;

static bool
s_emit (notebooks_sink_fn *sink, void *arg, const char *event, json_t *data)
{
    if (!sink) {
        json_decref (data);
        return false;
    }
    return sink (arg, event, data) != 0;
}

static int
s_kernel_sink (void *arg, json_t *event)
{
    s_run_t *st = arg;
    if (!event) {
        if (st->sink && st->sink (st->arg, NULL, NULL))
            st->gone = true;
        return st->gone;
    }
    json_t *out = notebooks_cell_apply (st->cell, event);
    if (out && !st->gone
        && s_emit (st->sink, st->arg, "output",
                   json_pack ("{s:I, s:o}", "index", (json_int_t)st->index, "output", out)))
        st->gone = true;
    else if (out && st->gone)
        json_decref (out);
    return st->gone;
}

/* Whitespace only: nbclient skips such a cell. */
static bool
s_blank (const char *s)
{
    for (; *s; s++)
        if (!strchr (" \t\r\n\f\v", *s))
            return false;
    return true;
}

json_t *
notebooks_run (notebooks_job_t *job, notebooks_sink_fn *sink, void *arg, err_t *err)
{
    int64_t t0 = util_mono_ms ();
    json_t *nb = job->req.notebook;
    notebooks_reset (nb, job->lang);
    json_t *cells = json_object_get (nb, "cells");
    size_t ncells = json_array_size (cells), ncode = 0, i;
    json_t *cell;
    json_array_foreach (cells, i, cell)
    {
        const char *type = json_string_value (json_object_get (cell, "cell_type"));
        ncode += type && !strcmp (type, "code");
    }
    const char *lang = kernel_lang_name (job->lang);
    bool gone = s_emit (sink, arg, "start",
                        json_pack ("{s:I, s:I, s:s}", "cells", (json_int_t)ncells, "code_cells",
                                   (json_int_t)ncode, "language", lang));
    size_t limit = (size_t)job->cfg->max_result_bytes, used = 0, executed = 0, errors = 0, j = 0;
    long long failed = -1;
    bool truncated = false, broke = false;

    json_array_foreach (cells, i, cell)
    {
        const char *type = json_string_value (json_object_get (cell, "cell_type"));
        if (!type || strcmp (type, "code"))
            continue;
        if (!gone && sink && sink (arg, NULL, NULL))
            gone = true;
        if (gone || (job->req.stop_on_error && failed >= 0))
            break;
        int64_t c0 = util_mono_ms ();
        gone = s_emit (
            sink, arg, "cell_start",
            json_pack ("{s:I, s:I}", "index", (json_int_t)i, "code_index", (json_int_t)j));
        j++;
        if (gone)
            break;
        char *src = notebooks_source (cell);
        if (!src) {
            err_set (err, 500, "internal", "out of memory");
            broke = true;
            break;
        }
        if (s_blank (src)) {
            free (src);
            gone = s_emit (sink, arg, "cell_done",
                           json_pack ("{s:I, s:n, s:s, s:I}", "index", (json_int_t)i,
                                      "execution_count", "status", "skipped", "duration_ms",
                                      (json_int_t)(util_mono_ms () - c0)));
            continue;
        }
        json_t *body = json_pack ("{s:s, s:s, s:I}", "code", src, "context_id", job->ctx_id,
                                  "timeout_ms", (json_int_t)job->req.timeout_ms);
        free (src);
        s_run_t st = { notebooks_cell_new (used < limit ? limit - used : 0), sink, arg, i, false };
        code_run_t *run = body && st.cell
                              ? contexts_run_prepare (job->ctxs, job->tenant, job->sid, body, err)
                              : NULL;
        json_decref (body);
        json_t *out = run ? contexts_run_execute (run, s_kernel_sink, &st, err) : NULL;
        if (!out) {
            if (!st.cell || !body)
                err_set (err, 500, "internal", "out of memory");
            notebooks_cell_destroy (&st.cell);
            broke = true;
            break;
        }
        json_decref (out);
        gone = st.gone;
        json_int_t count = notebooks_cell_count (st.cell);
        json_object_set_new (cell, "execution_count",
                             count >= 0 ? json_integer (count) : json_null ());
        json_object_set_new (cell, "outputs", notebooks_cell_outputs (st.cell, count));
        bool cell_failed = notebooks_cell_failed (st.cell);
        used += notebooks_cell_bytes (st.cell);
        truncated = truncated || notebooks_cell_truncated (st.cell);
        notebooks_cell_destroy (&st.cell);
        executed++;
        if (cell_failed) {
            errors++;
            if (failed < 0)
                failed = (long long)i;
        }
        if (!gone)
            gone = s_emit (sink, arg, "cell_done",
                           json_pack ("{s:I, s:o, s:s, s:I}", "index", (json_int_t)i,
                                      "execution_count",
                                      count >= 0 ? json_integer (count) : json_null (), "status",
                                      cell_failed ? "error" : "ok", "duration_ms",
                                      (json_int_t)(util_mono_ms () - c0)));
    }

    int64_t ms = util_mono_ms () - t0;
    log_info ("tenant=%s sandbox=%s context=%s: notebook of %zu cells ran %zu (%zu failed) in %lld "
              "ms%s",
              job->tenant, job->sid, job->ctx_id, ncells, executed, errors, (long long)ms,
              broke  ? ", broken off"
              : gone ? ", client gone"
                     : "");
    json_t *result = NULL;
    if (!broke && gone)
        err_set (err, 499, "client_gone", "the client went away; the run was interrupted");
    else if (!broke)
        result
            = json_pack ("{s:O, s:{s:I, s:I, s:I, s:I, s:o, s:I, s:s, s:b}}", "notebook", nb,
                         "summary", "cells", (json_int_t)ncells, "code_cells", (json_int_t)ncode,
                         "executed", (json_int_t)executed, "errors", (json_int_t)errors,
                         "failed_cell", failed >= 0 ? json_integer (failed) : json_null (),
                         "duration_ms", (json_int_t)ms, "language", lang, "truncated", truncated);
    return result;
}
