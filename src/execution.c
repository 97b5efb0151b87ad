/* execution.c - assembling one runCode Execution from the kernel's iopub and
   shell messages, with every field type-checked and every size bounded. */
#include "execution.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jsonv.h"
#include "mime.h"

/* Error names are class names; a longer one is not a name any more. */
#define S_MAX_ERROR_NAME 1024

struct _execution_t {
    size_t max_bytes;
    bool check_images;
    mime_image_opts_t img;
    size_t used;          /* bytes held in results and logs, as counted by s_value_bytes */
    bool truncated;       /* output was dropped since the last clear */
    bool error_cut;       /* the error was cut to its own budget */
    bool clear_pending;   /* clear_output(wait=True): clear before the next output */
    json_t *results;      /* array of result objects */
    size_t *result_bytes; /* bytes each result holds, parallel to results */
    size_t result_cap;
    json_t *out_log;     /* array of stdout strings */
    json_t *err_log;     /* array of stderr strings */
    json_t *error;       /* {name, value, traceback} or NULL */
    json_t *reply_error; /* execute_reply's error, held until idle says iopub has none */
    bool aborted;        /* the kernel skipped the cell without running it */
    json_int_t count;
    bool has_count;
    bool idle;
    bool reply;
};

/* MIME types with a field of their own, in the order "formats" lists them. */
static const struct {
    const char *mime;
    const char *field;
} s_mimes[] = {
    { "text/plain", "text" },
    { "text/html", "html" },
    { "text/markdown", "markdown" },
    { "image/svg+xml", "svg" },
    { "image/png", "png" },
    { "image/jpeg", "jpeg" },
    { "application/pdf", "pdf" },
    { "text/latex", "latex" },
    { "application/json", "json" },
    { "application/javascript", "javascript" },
    /* made by kernels/python/sandboxd_display.py (docs/charts.md) */
    { "application/vnd.sandboxd.data+json", "data" },
    { "application/vnd.sandboxd.chart+json", "chart" },
};
#define S_NMIMES (sizeof s_mimes / sizeof s_mimes[0])

/* ---- small helpers ----------------------------------------------------- */

/* Append value (stolen) to array; a NULL value is skipped. */
static void
s_push (json_t *array, json_t *value)
{
    if (value)
        json_array_append_new (array, value);
}

/* Append {"event": name, "data": data} (data stolen) to events. */
static void
s_emit (json_t *events, const char *name, json_t *data)
{
    if (!data)
        return;
    s_push (events, json_pack ("{s:s, s:o}", "event", name, "data", data));
}

/* The largest n' <= n that does not split a UTF-8 sequence of the
   len-byte valid UTF-8 string s. */
static size_t
s_utf8_floor (const char *s, size_t len, size_t n)
{
    if (n >= len)
        return len;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--;
    return n;
}

/* A copy of JSON string v cut to at most max bytes on a character
   boundary; *cut tells whether anything was left out. */
static json_t *
s_string_prefix (json_t *v, size_t max, bool *cut)
{
    const char *s = json_string_value (v);
    size_t len = json_string_length (v);
    size_t n = s_utf8_floor (s, len, max);
    *cut = n < len;
    return json_stringn_nocheck (s, n);
}

typedef struct {
    size_t n;
    size_t limit;
} s_counter_t;

static int
s_count_cb (const char *buf, size_t size, void *data)
{
    s_counter_t *c = data;
    c->n += size;
    return c->n > c->limit ? -1 : 0;
}

/* The bytes a kept value costs: a string its length, any other JSON its
   compact serialisation. False when that exceeds limit (the count stops
   there, so a huge value is never serialised whole just to be refused). */
static bool
s_value_bytes (const json_t *v, size_t limit, size_t *out)
{
    if (json_is_string (v)) {
        *out = json_string_length (v);
        return *out <= limit;
    }
    s_counter_t c = { 0, limit };
    if (json_dump_callback (v, s_count_cb, &c, JSON_COMPACT | JSON_ENCODE_ANY) != 0)
        return false;
    *out = c.n;
    return c.n <= limit;
}

/* ---- MIME bundles ------------------------------------------------------ */

/* application/json and application/<anything>+json carry any JSON value. */
static bool
s_is_json_mime (const char *mime)
{
    if (strcmp (mime, "application/json") == 0)
        return true;
    size_t n = strlen (mime);
    return strncmp (mime, "application/", 12) == 0 && n > 12 + 5
           && strcmp (mime + n - 5, "+json") == 0;
}

/* The kept form of one bundle value: any JSON (copied) for JSON types; for
   the others a string, or an nbformat-style array of strings joined. NULL
   when the value has the wrong type. */
static json_t *
s_mime_value (const char *mime, json_t *v)
{
    if (s_is_json_mime (mime))
        return json_deep_copy (v);
    if (json_is_string (v))
        return json_stringn_nocheck (json_string_value (v), json_string_length (v));
    if (!json_is_array (v))
        return NULL;
    size_t total = 0, i;
    json_t *part;
    json_array_foreach (v, i, part)
    {
        if (!json_is_string (part))
            return NULL;
        total += json_string_length (part);
    }
    char *buf = malloc (total + 1);
    if (!buf)
        return NULL;
    size_t o = 0;
    json_array_foreach (v, i, part)
    {
        memcpy (buf + o, json_string_value (part), json_string_length (part));
        o += json_string_length (part);
    }
    json_t *s = json_stringn_nocheck (buf, o);
    free (buf);
    return s;
}

/* Build a result from bundle data (an object) and count the bytes it
   holds into *bytes. NULL when it would hold more than limit bytes, or on
   allocation failure. */
/* Check an image value (png or jpeg) the way mime/ does, downscaling PNGs
   as img asks. Returns the value to keep (v itself or a re-encoded PNG; v
   is consumed), or NULL when the image is bad, with the reason recorded in
   *errors[field]; the image's size goes to *meta[field]. */
static json_t *
s_check_image (const char *field, json_t *v, const mime_image_opts_t *img, json_t *meta,
               json_t *errors)
{
    err_t err = { 0 };
    const char *b64 = json_string_value (v);
    if (!b64) {
        json_object_set_new (errors, field, json_string ("not a base64 string"));
        json_decref (v);
        return NULL;
    }
    if (!strcmp (field, "png")) {
        mime_image_t im = { 0 };
        if (mime_png_process (b64, json_string_length (v), img, &im, &err) < 0) {
            json_object_set_new (errors, field, json_string (err.message));
            json_decref (v);
            return NULL;
        }
        json_object_set_new (meta, field,
                             json_pack ("{s:i, s:i, s:i, s:i, s:b}", "width", im.width, "height",
                                        im.height, "original_width", im.original_width,
                                        "original_height", im.original_height, "resized",
                                        im.resized));
        if (im.base64) {
            json_decref (v);
            v = json_string (im.base64);
        }
        mime_image_clear (&im);
        return v;
    }
    int w = 0, h = 0;
    if (mime_jpeg_info (b64, json_string_length (v), &w, &h, &err) < 0) {
        json_object_set_new (errors, field, json_string (err.message));
        json_decref (v);
        return NULL;
    }
    json_object_set_new (meta, field, json_pack ("{s:i, s:i}", "width", w, "height", h));
    return v;
}

static json_t *
s_result_new (json_t *data, bool is_main, const char *display_id, size_t limit, size_t *bytes,
              const mime_image_opts_t *img)
{
    json_t *result = json_object ();
    json_t *formats = json_array ();
    json_t *extra = json_object ();
    json_t *meta = json_object ();
    json_t *errors = json_object ();
    size_t total = display_id ? strlen (display_id) : 0;
    bool fits = result && formats && extra && meta && errors && total <= limit;

    for (size_t i = 0; fits && i < S_NMIMES; i++) {
        json_t *raw = json_object_get (data, s_mimes[i].mime);
        json_t *v = raw ? s_mime_value (s_mimes[i].mime, raw) : NULL;
        if (v && img && (!strcmp (s_mimes[i].field, "png") || !strcmp (s_mimes[i].field, "jpeg")))
            v = s_check_image (s_mimes[i].field, v, img, meta, errors);
        if (!v)
            continue;
        size_t n;
        fits = s_value_bytes (v, limit - total, &n);
        total += fits ? n : 0;
        json_object_set_new (result, s_mimes[i].field, v);
        s_push (formats, json_string (s_mimes[i].field));
    }

    const char *mime;
    json_t *raw;
    json_object_foreach (data, mime, raw)
    {
        if (!fits)
            break;
        bool known = false;
        for (size_t i = 0; i < S_NMIMES && !known; i++)
            known = strcmp (mime, s_mimes[i].mime) == 0;
        json_t *v = known ? NULL : s_mime_value (mime, raw);
        if (!v)
            continue;
        size_t n = strlen (mime);
        fits = n <= limit - total;
        total += fits ? n : 0;
        if (fits) {
            fits = s_value_bytes (v, limit - total, &n);
            total += fits ? n : 0;
        }
        json_object_set_new (extra, mime, v);
    }

    if (!fits) {
        json_decref (result);
        json_decref (formats);
        json_decref (extra);
        json_decref (meta);
        json_decref (errors);
        return NULL;
    }
    if (json_object_size (extra) > 0)
        json_object_set (result, "extra", extra);
    json_decref (extra);
    if (json_object_size (meta) > 0)
        json_object_set (result, "metadata", meta);
    json_decref (meta);
    if (json_object_size (errors) > 0)
        json_object_set (result, "errors", errors);
    json_decref (errors);
    json_object_set_new (result, "formats", formats);
    json_object_set_new (result, "is_main_result", json_boolean (is_main));
    json_object_set_new (result, "display_id",
                         display_id ? json_string (display_id) : json_null ());
    *bytes = total;
    return result;
}

json_t *
execution_result_from_bundle (json_t *data, bool is_main, const char *display_id)
{
    if (!json_is_object (data))
        return NULL;
    size_t bytes;
    return s_result_new (data, is_main, display_id, SIZE_MAX, &bytes, NULL);
}

json_t *
execution_result_to_bundle (json_t *result)
{
    if (!json_is_object (result))
        return NULL;
    json_t *bundle = json_object ();
    if (!bundle)
        return NULL;
    for (size_t i = 0; i < S_NMIMES; i++) {
        json_t *v = json_object_get (result, s_mimes[i].field);
        if (v)
            json_object_set (bundle, s_mimes[i].mime, v);
    }
    const char *mime;
    json_t *v;
    json_object_foreach (json_object_get (result, "extra"), mime, v)
    {
        if (!json_object_get (bundle, mime))
            json_object_set (bundle, mime, v);
    }
    return bundle;
}

/* ---- the execution ----------------------------------------------------- */

execution_t *
execution_new (size_t max_bytes, const mime_image_opts_t *img)
{
    execution_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->max_bytes = max_bytes;
    if (img) {
        self->check_images = true;
        self->img = *img;
    }
    self->results = json_array ();
    self->out_log = json_array ();
    self->err_log = json_array ();
    if (!self->results || !self->out_log || !self->err_log) {
        execution_destroy (&self);
        return NULL;
    }
    return self;
}

void
execution_destroy (execution_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    execution_t *self = *self_p;
    json_decref (self->results);
    json_decref (self->out_log);
    json_decref (self->err_log);
    json_decref (self->error);
    json_decref (self->reply_error);
    free (self->result_bytes);
    free (self);
    *self_p = NULL;
}

bool
execution_done (const execution_t *self)
{
    return self && self->idle && self->reply;
}

/* Forget results and logs. Whatever output was dropped came before this
   clear and would have been cleared by it, so the budget and the
   truncated flag start afresh too: a progress bar redrawn with
   clear_output(wait=True) can run for as long as it likes. */
static void
s_clear (execution_t *self)
{
    json_array_clear (self->results);
    json_array_clear (self->out_log);
    json_array_clear (self->err_log);
    self->used = 0;
    self->truncated = false;
    self->clear_pending = false;
}

/* Called before output is kept: honours a pending clear, then says whether
   output is still accepted. */
static bool
s_begin_output (execution_t *self)
{
    if (self->clear_pending)
        s_clear (self);
    return !self->truncated;
}

/* The first execution count seen is kept (and announced); the later ones
   of the same execution repeat it. */
static void
s_record_count (execution_t *self, json_t *v, json_t *events)
{
    if (self->has_count || !json_is_integer (v) || json_integer_value (v) < 0)
        return;
    self->count = json_integer_value (v);
    self->has_count = true;
    s_emit (events, "execution_count", json_pack ("{s:I}", "execution_count", self->count));
}

/* transient.display_id when it is a string, else NULL. */
static const char *
s_display_id (json_t *content)
{
    json_t *transient = json_object_get (content, "transient");
    return json_string_value (json_object_get (transient, "display_id"));
}

/* An error object built from kernel fields ename, evalue (strings) and
   traceback (array; non-strings dropped), within EXECUTION_MAX_ERROR_BYTES.
   NULL when ename or evalue is not a string. */
static json_t *
s_error_from (execution_t *self, json_t *ename, json_t *evalue, json_t *traceback)
{
    if (!json_is_string (ename) || !json_is_string (evalue))
        return NULL;
    size_t budget = EXECUTION_MAX_ERROR_BYTES;
    bool cut_name, cut_value, cut = false;
    json_t *name = s_string_prefix (ename, S_MAX_ERROR_NAME, &cut_name);
    budget -= json_string_length (name);
    json_t *value = s_string_prefix (evalue, budget, &cut_value);
    budget -= json_string_length (value);
    json_t *lines = json_array ();
    size_t i;
    json_t *line;
    json_array_foreach (traceback, i, line)
    {
        if (!json_is_string (line))
            continue;
        /* An empty line still costs a byte, so the count of lines is bounded
           by the budget as well as by EXECUTION_MAX_TRACEBACK. */
        size_t n = json_string_length (line) + 1;
        if (n > budget || json_array_size (lines) >= EXECUTION_MAX_TRACEBACK) {
            cut = true;
            break;
        }
        budget -= n;
        s_push (lines, json_stringn_nocheck (json_string_value (line), n - 1));
    }
    if (cut_name || cut_value || cut)
        self->error_cut = true;
    return json_pack ("{s:o, s:o, s:o}", "name", name, "value", value, "traceback", lines);
}

static void
s_on_stream (execution_t *self, json_t *content, json_t *events)
{
    const char *name = json_string_value (json_object_get (content, "name"));
    json_t *text = json_object_get (content, "text");
    if (!name || !json_is_string (text))
        return;
    json_t *log;
    if (strcmp (name, "stdout") == 0)
        log = self->out_log;
    else if (strcmp (name, "stderr") == 0)
        log = self->err_log;
    else
        return;
    if (!s_begin_output (self))
        return;
    if (json_array_size (self->out_log) + json_array_size (self->err_log)
        >= EXECUTION_MAX_LOG_ENTRIES) {
        self->truncated = true;
        return;
    }
    /* A stream message larger than what is left keeps its beginning: the
       first screen of a huge print is what a reader wants. */
    bool cut;
    json_t *kept = s_string_prefix (text, self->max_bytes - self->used, &cut);
    if (!kept)
        return;
    if (cut)
        self->truncated = true;
    if (cut && json_string_length (kept) == 0) {
        json_decref (kept);
        return;
    }
    self->used += json_string_length (kept);
    if (json_array_append_new (log, kept) != 0)
        return;
    s_emit (events, name, json_pack ("{s:o}", "text", json_deep_copy (kept)));
}

/* Room for one more result in the parallel byte counts. */
static bool
s_reserve_result (execution_t *self)
{
    size_t n = json_array_size (self->results);
    if (n < self->result_cap)
        return true;
    size_t cap = self->result_cap ? self->result_cap * 2 : 16;
    size_t *grown = realloc (self->result_bytes, cap * sizeof *grown);
    if (!grown)
        return false;
    self->result_bytes = grown;
    self->result_cap = cap;
    return true;
}

static void
s_on_display (execution_t *self, json_t *content, bool is_main, json_t *events)
{
    json_t *data = json_object_get (content, "data");
    if (!json_is_object (data))
        return;
    if (is_main)
        s_record_count (self, json_object_get (content, "execution_count"), events);
    if (!s_begin_output (self))
        return;
    if (json_array_size (self->results) >= EXECUTION_MAX_RESULTS) {
        self->truncated = true;
        return;
    }
    if (!s_reserve_result (self))
        return;
    size_t bytes;
    json_t *result
        = s_result_new (data, is_main, s_display_id (content), self->max_bytes - self->used, &bytes,
                        self->check_images ? &self->img : NULL);
    if (!result) {
        self->truncated = true;
        return;
    }
    if (json_array_append_new (self->results, result) != 0)
        return;
    self->result_bytes[json_array_size (self->results) - 1] = bytes;
    self->used += bytes;
    s_emit (events, "result", json_deep_copy (result));
}

static void
s_on_update (execution_t *self, json_t *content, json_t *events)
{
    json_t *data = json_object_get (content, "data");
    const char *display_id = s_display_id (content);
    if (!json_is_object (data) || !display_id)
        return;

    size_t matches = 0, old_bytes = 0, i;
    json_t *result;
    json_array_foreach (self->results, i, result)
    {
        const char *id = json_string_value (json_object_get (result, "display_id"));
        if (id && strcmp (id, display_id) == 0) {
            matches++;
            old_bytes += self->result_bytes[i];
        }
    }
    if (matches == 0 || self->truncated)
        return;

    size_t room = self->max_bytes - (self->used - old_bytes);
    size_t bytes;
    json_t *fresh = s_result_new (data, false, display_id, room / matches, &bytes,
                                  self->check_images ? &self->img : NULL);
    if (!fresh) {
        self->truncated = true;
        return;
    }
    json_t *first = NULL;
    json_array_foreach (self->results, i, result)
    {
        const char *id = json_string_value (json_object_get (result, "display_id"));
        if (!id || strcmp (id, display_id) != 0)
            continue;
        json_t *replaced = json_deep_copy (fresh);
        if (!replaced)
            continue;
        json_object_set (replaced, "is_main_result", json_object_get (result, "is_main_result"));
        self->used = self->used - self->result_bytes[i] + bytes;
        self->result_bytes[i] = bytes;
        json_array_set_new (self->results, i, replaced);
        if (!first)
            first = replaced;
    }
    json_decref (fresh);
    if (first)
        s_emit (
            events, "display_update",
            json_pack ("{s:s, s:o}", "display_id", display_id, "result", json_deep_copy (first)));
}

static void
s_on_clear (execution_t *self, json_t *content, json_t *events)
{
    json_t *w = json_object_get (content, "wait");
    if (w && !json_is_null (w) && !json_is_boolean (w))
        return;
    bool wait = json_is_true (w);
    if (wait)
        self->clear_pending = true;
    else
        s_clear (self);
    s_emit (events, "clear_output", json_pack ("{s:b}", "wait", wait));
}

static void
s_on_error (execution_t *self, json_t *content, json_t *events)
{
    json_t *error = s_error_from (self, json_object_get (content, "ename"),
                                  json_object_get (content, "evalue"),
                                  json_object_get (content, "traceback"));
    if (!error)
        return;
    if (self->error) {
        json_decref (error);
        return;
    }
    self->error = error;
    s_emit (events, "error", json_deep_copy (error));
}

/* Both the reply and idle are in. iopub is ordered, so an iopub error would
   have come before idle: if there was none, the reply's error stands. */
static void
s_finish (execution_t *self, json_t *events)
{
    if (!execution_done (self) || !self->reply_error)
        return;
    if (!self->error) {
        self->error = self->reply_error;
        s_emit (events, "error", json_deep_copy (self->error));
    }
    else
        json_decref (self->reply_error);
    self->reply_error = NULL;
}

/* The first non-empty line the run wrote to stderr ("Error: boom" for a
   TSLab throw), or a fixed text when it wrote none. New reference. */
static json_t *
s_stderr_summary (execution_t *self)
{
    size_t i;
    json_t *entry;
    json_array_foreach (self->err_log, i, entry)
    {
        const char *text = json_string_value (entry);
        while (text && *text) {
            size_t n = strcspn (text, "\n");
            size_t lead = strspn (text, " \t\r");
            if (n > lead)
                return json_stringn (text + lead, n - lead > 1000 ? 1000 : n - lead);
            text += n + (text[n] == '\n');
        }
    }
    return json_string ("the cell failed (the kernel reported no details)");
}

static void
s_on_reply (execution_t *self, json_t *content, json_t *events)
{
    if (self->reply)
        return;
    self->reply = true;
    s_record_count (self, json_object_get (content, "execution_count"), events);
    const char *status = json_string_value (json_object_get (content, "status"));
    if (status && strcmp (status, "error") == 0) {
        self->reply_error = s_error_from (self, json_object_get (content, "ename"),
                                          json_object_get (content, "evalue"),
                                          json_object_get (content, "traceback"));
        if (!self->reply_error) {
            /* TSLab fails a cell with a bare status and writes the error to
               stderr: the client must still see that the run failed. */
            json_t *name = json_string ("Error");
            json_t *value = s_stderr_summary (self);
            self->reply_error = s_error_from (self, name, value, self->err_log);
            json_decref (name);
            json_decref (value);
        }
    }
    else if (status && (strcmp (status, "aborted") == 0 || strcmp (status, "abort") == 0)) {
        /* IPython says "aborted", TSLab "abort": the cell never ran. */
        self->aborted = true;
        self->reply_error
            = json_pack ("{s:s, s:s, s:[]}", "name", "ExecutionAborted", "value",
                         "the kernel aborted this execution without running it", "traceback");
    }
    s_finish (self, events);
}

bool
execution_aborted (const execution_t *self)
{
    return self->aborted;
}

json_t *
execution_apply (execution_t *self, const char *channel, const char *msg_type, json_t *content)
{
    json_t *events = json_array ();
    if (!events || !self || !channel || !msg_type || !json_is_object (content))
        return events;
    if (strcmp (channel, "shell") == 0) {
        if (strcmp (msg_type, "execute_reply") == 0)
            s_on_reply (self, content, events);
        return events;
    }
    if (strcmp (channel, "iopub") != 0)
        return events;
    if (strcmp (msg_type, "stream") == 0)
        s_on_stream (self, content, events);
    else if (strcmp (msg_type, "display_data") == 0)
        s_on_display (self, content, false, events);
    else if (strcmp (msg_type, "execute_result") == 0)
        s_on_display (self, content, true, events);
    else if (strcmp (msg_type, "update_display_data") == 0)
        s_on_update (self, content, events);
    else if (strcmp (msg_type, "clear_output") == 0)
        s_on_clear (self, content, events);
    else if (strcmp (msg_type, "error") == 0)
        s_on_error (self, content, events);
    else if (strcmp (msg_type, "execute_input") == 0)
        s_record_count (self, json_object_get (content, "execution_count"), events);
    else if (strcmp (msg_type, "status") == 0) {
        const char *state = json_string_value (json_object_get (content, "execution_state"));
        if (state && strcmp (state, "idle") == 0) {
            self->idle = true;
            s_finish (self, events);
        }
    }
    return events;
}

json_t *
execution_fail (execution_t *self, const char *name, const char *value, bool force)
{
    if (!self || (self->error && !force))
        return NULL;
    name = name ? name : "Error";
    value = value ? value : "";
    json_t *n = jsonv_string_from_bytes (name, strlen (name));
    json_t *v = jsonv_string_from_bytes (value, strlen (value));
    json_t *lines = json_array ();
    if (!n || !v || !lines) {
        json_decref (n);
        json_decref (v);
        json_decref (lines);
        return NULL;
    }
    json_t *error = s_error_from (self, n, v, lines);
    json_decref (n);
    json_decref (v);
    json_decref (lines);
    if (!error)
        return NULL;
    json_decref (self->error);
    self->error = error;
    return json_pack ("{s:s, s:o}", "event", "error", "data", json_deep_copy (error));
}

json_t *
execution_to_json (const execution_t *self)
{
    if (!self)
        return NULL;
    return json_pack (
        "{s:o, s:{s:o, s:o}, s:o, s:o, s:b}", "results", json_deep_copy (self->results), "logs",
        "stdout", json_deep_copy (self->out_log), "stderr", json_deep_copy (self->err_log), "error",
        self->error ? json_deep_copy (self->error) : json_null (), "execution_count",
        self->has_count ? json_integer (self->count) : json_null (), "truncated",
        self->truncated || self->error_cut);
}
