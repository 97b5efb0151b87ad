/* sandboxd-run - run a Jupyter notebook in a sandboxd sandbox and write
   the executed copy next to it (docs/api.md, "Command-line runner").

   Creates a sandbox (unless --sandbox names one), uploads files into its
   /workspace, runs the notebook through POST .../notebooks:run as an event
   stream while drawing progress on stderr, writes <name>.out.ipynb and
   deletes the sandbox it created, also when the run fails or is
   interrupted. Exit 0: every cell ran; 1: a cell failed (the executed
   notebook is still written); 2: usage, connection or HTTP errors. */
#include "httpc.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define EXIT_CELL_FAILED 1
#define EXIT_USAGE       2

#define MAX_NOTEBOOK_FILE    (256LL * 1024 * 1024) /* what we read from disk */
#define MAX_EVENT            (512UL * 1024 * 1024) /* the done event holds the notebook */
#define MAX_ANSWER           (1UL * 1024 * 1024)   /* any JSON answer but the stream */
#define MAX_UPLOADS          256
#define CALL_TIMEOUT_MS      120000
#define DELETE_TIMEOUT_MS    60000
#define STREAM_IDLE_SLACK_MS 120000 /* past the cell timeout, silence is a failure */
#define KEEPALIVE_SECONDS    600
#define EXTEND_EVERY_MS      300000
#define DEFAULT_URL          "http://127.0.0.1:8080"

static volatile sig_atomic_t s_stop;
static volatile sig_atomic_t s_signal;

static void
s_on_signal (int sig)
{
    s_stop = 1;
    s_signal = sig;
}

typedef struct {
    const char *local;
    char remote[PATH_MAX];
} upload_t;

typedef struct {
    /* options */
    httpc_url_t url;
    const char *url_text;
    const char *token;
    const char *sandbox;
    const char *language;
    long timeout_ms;
    bool no_stop_on_error;
    const char *output;
    bool quiet;
    const char *notebook_path;
    upload_t uploads[MAX_UPLOADS];
    int n_uploads;
    /* run state */
    char sandbox_id[128];
    bool created; /* we made the sandbox: delete it at the end */
    bool tty;
    int code_cells, done_cells, errors;
    int64_t t0_ms, last_draw_ms, last_extend_ms;
    bool bar_drawn;
    char cell_error[512];  /* "ename: evalue" of the current cell's last error */
    char first_error[512]; /* that of the first cell that failed */
} run_t;

static int64_t
s_mono_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
s_usage (FILE *f)
{
    fputs ("Usage: sandboxd-run [OPTION]... NOTEBOOK\n"
           "Run a Jupyter notebook (.ipynb) in a sandboxd sandbox and write the executed\n"
           "copy next to it as NAME.out.ipynb.\n"
           "\n"
           "  --url URL             the broker (default $SANDBOXD_URL, else " DEFAULT_URL ")\n"
           "  --token TOKEN         bearer token (default $SANDBOXD_TOKEN; required)\n"
           "  --sandbox ID          run in sandbox ID (created if missing, kept afterwards);\n"
           "                        without it a new sandbox is created and deleted at the end\n"
           "  --upload LOCAL[:REMOTE]\n"
           "                        put the file LOCAL into the sandbox before running, at\n"
           "                        REMOTE relative to /workspace (default: its basename);\n"
           "                        may be given several times\n"
           "  --language L          python, javascript or typescript (default: from the\n"
           "                        notebook's kernelspec, else python)\n"
           "  --timeout-ms N        limit for each cell, 1..3600000 (default 600000)\n"
           "  --no-stop-on-error    run the remaining cells after a failing one\n"
           "  -o, --output OUT      write the executed notebook to OUT ('-': stdout)\n"
           "  -q, --quiet           no progress, only errors\n"
           "  -h, --help            this text\n"
           "      --version         the version\n"
           "\n"
           "Progress goes to stderr: a bar on a terminal, else one line per code cell.\n"
           "Exit status: 0 every cell ran without error; 1 a cell failed (the executed\n"
           "notebook is still written, with the error in that cell's outputs); 2 usage,\n"
           "connection or HTTP errors (nothing written). On SIGINT or SIGTERM the run is\n"
           "stopped and the sandbox it created deleted before the program ends by the signal.\n",
           f);
}

/* Print "sandboxd-run: ..." on stderr, clearing a progress bar first. */
static run_t *s_run_for_msg;
static void
s_msg (const char *fmt, ...)
{
    if (s_run_for_msg && s_run_for_msg->bar_drawn) {
        fputs ("\r\033[K", stderr);
        s_run_for_msg->bar_drawn = false;
    }
    va_list ap;
    va_start (ap, fmt);
    fputs ("sandboxd-run: ", stderr);
    vfprintf (stderr, fmt, ap);
    fputc ('\n', stderr);
    va_end (ap);
}

/* Percent-encode a path for a URL; '/' stays. NULL if it does not fit. */
static char *
s_url_path (const char *in, char *out, size_t outlen)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p; p++) {
        bool keep = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')
                    || strchr ("-._~/", *p);
        if (o + 4 >= outlen)
            return NULL;
        if (keep) {
            out[o++] = (char)*p;
        }
        else {
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    out[o] = '\0';
    return out;
}

/* ---- one JSON call ------------------------------------------------------ */

/* Describe an error answer: "401 unauthorized: missing or unknown token". */
static void
s_describe_error (int status, const char *body, char *out, size_t outlen)
{
    json_t *j = json_loads (body, JSON_DECODE_ANY, NULL);
    json_t *e = json_object_get (j, "error");
    const char *code = json_string_value (json_object_get (e, "code"));
    const char *message = json_string_value (json_object_get (e, "message"));
    if (code && message)
        snprintf (out, outlen, "%d %s: %s", status, code, message);
    else
        snprintf (out, outlen, "HTTP %d%s%.200s", status, body && *body ? ": " : "",
                  body ? body : "");
    json_decref (j);
}

/* method path with body (JSON text or NULL); *answer gets the parsed JSON
   answer (may be NULL). The HTTP status, or -1 with a message printed. */
static int
s_call (run_t *r, const char *method, const char *path, const char *body, int timeout_ms,
        volatile sig_atomic_t *stop, json_t **answer, bool quiet_errors)
{
    char err[600];
    if (answer)
        *answer = NULL;
    httpc_t *h = httpc_connect (&r->url, timeout_ms, stop, err, sizeof err);
    if (!h) {
        if (!quiet_errors)
            s_msg ("%s %s: %s", method, path, err);
        return -1;
    }
    int status = -1;
    char *text = NULL;
    size_t len = 0;
    if (httpc_request (h, method, path, body ? "Content-Type: application/json\r\n" : NULL,
                       r->token, body, -1, body ? (int64_t)strlen (body) : 0)
            < 0
        || (status = httpc_read_head (h)) < 0 || httpc_read_body (h, MAX_ANSWER, &text, &len) < 0) {
        if (!quiet_errors)
            s_msg ("%s %s: %s", method, path, httpc_error (h));
        httpc_destroy (&h);
        return -1;
    }
    httpc_destroy (&h);
    if (status >= 300) {
        char d[700];
        s_describe_error (status, text, d, sizeof d);
        if (!quiet_errors)
            s_msg ("%s %s: %s", method, path, d);
    }
    if (answer)
        *answer = json_loads (text, JSON_DECODE_ANY, NULL);
    free (text);
    return status;
}

/* ---- sandbox ------------------------------------------------------------ */

static int
s_sandbox_create (run_t *r)
{
    json_t *req = json_object ();
    if (r->sandbox)
        json_object_set_new (req, "id", json_string (r->sandbox));
    else
        json_object_set_new (req, "keepalive_seconds", json_integer (KEEPALIVE_SECONDS));
    char *body = json_dumps (req, JSON_COMPACT);
    json_decref (req);
    json_t *ans = NULL;
    /* Not interruptible: a sandbox made while we were told to stop would
       be left behind until it expires. */
    int status = s_call (r, "POST", "/v1/sandboxes", body, CALL_TIMEOUT_MS, NULL, &ans, false);
    free (body);
    const char *id = json_string_value (json_object_get (ans, "id"));
    if ((status == 200 || status == 201) && id && strlen (id) < sizeof r->sandbox_id) {
        snprintf (r->sandbox_id, sizeof r->sandbox_id, "%s", id);
        r->created = !r->sandbox && status == 201;
        json_decref (ans);
        return 0;
    }
    if (status == 200 || status == 201)
        s_msg ("POST /v1/sandboxes: the answer has no sandbox id");
    json_decref (ans);
    return -1;
}

static void
s_sandbox_delete (run_t *r)
{
    if (!r->created)
        return;
    char path[300];
    snprintf (path, sizeof path, "/v1/sandboxes/%s", r->sandbox_id);
    /* Not interruptible: a second Ctrl-C must not leave the sandbox. */
    int status = s_call (r, "DELETE", path, NULL, DELETE_TIMEOUT_MS, NULL, NULL, false);
    if (status != 200 && status != 404)
        s_msg ("could not delete sandbox %s; it expires by itself within %d minutes", r->sandbox_id,
               KEEPALIVE_SECONDS / 60);
    r->created = false;
}

/* Keep the sandbox from expiring in the middle of a long run. */
static void
s_sandbox_extend (run_t *r)
{
    char path[300];
    snprintf (path, sizeof path, "/v1/sandboxes/%s", r->sandbox_id);
    char body[64];
    snprintf (body, sizeof body, "{\"keepalive_longer_by_seconds\":%d}", EXTEND_EVERY_MS / 1000);
    s_call (r, "PATCH", path, body, 10000, NULL, NULL, true);
}

/* ---- uploads -------------------------------------------------------------- */

static int
s_upload (run_t *r, const upload_t *u)
{
    int fd = open (u->local, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat (fd, &st) < 0) {
        s_msg ("--upload %s: %s", u->local, strerror (errno));
        if (fd >= 0)
            close (fd);
        return -1;
    }
    char enc[PATH_MAX * 3 + 16], path[sizeof enc + 200];
    const char *remote = u->remote;
    if (!s_url_path (remote[0] == '/' ? remote + 1 : remote, enc, sizeof enc)) {
        s_msg ("--upload %s: the remote path is too long", u->local);
        close (fd);
        return -1;
    }
    snprintf (path, sizeof path, "/v1/sandboxes/%s/files/%s%s?mkdir=1", r->sandbox_id,
              remote[0] == '/' ? "" : "workspace/", enc);
    char err[600];
    httpc_t *h = httpc_connect (&r->url, CALL_TIMEOUT_MS, &s_stop, err, sizeof err);
    if (!h) {
        s_msg ("--upload %s: %s", u->local, err);
        close (fd);
        return -1;
    }
    int status = -1;
    char *text = NULL;
    size_t len = 0;
    int rc = -1;
    if (httpc_request (h, "PUT", path, "Content-Type: application/octet-stream\r\n", r->token, NULL,
                       fd, (int64_t)st.st_size)
            < 0
        || (status = httpc_read_head (h)) < 0 || httpc_read_body (h, MAX_ANSWER, &text, &len) < 0) {
        s_msg ("--upload %s: %s", u->local, httpc_error (h));
    }
    else if (status != 200 && status != 201) {
        char d[700];
        s_describe_error (status, text, d, sizeof d);
        s_msg ("--upload %s: PUT %s: %s", u->local, path, d);
    }
    else {
        if (!r->quiet)
            s_msg ("uploaded %s to %s%s (%lld bytes)", u->local,
                   remote[0] == '/' ? "" : "/workspace/", remote, (long long)st.st_size);
        rc = 0;
    }
    free (text);
    httpc_destroy (&h);
    close (fd);
    return rc;
}

/* ---- progress --------------------------------------------------------------- */

static void
s_draw_bar (run_t *r)
{
    if (r->quiet || !r->tty)
        return;
    const int width = 30;
    int total = r->code_cells;
    int filled = total > 0 ? (int)((int64_t)r->done_cells * width / total) : width;
    char bar[width + 1];
    for (int i = 0; i < width; i++)
        bar[i] = i < filled ? '#' : '-';
    bar[width] = '\0';
    double secs = (double)(s_mono_ms () - r->t0_ms) / 1000.0;
    fprintf (stderr, "\r[%s] %d/%d cells  %.1f s%s\033[K", bar, r->done_cells, total, secs,
             r->errors ? (r->errors == 1 ? "  1 error" : "  errors") : "");
    fflush (stderr);
    r->bar_drawn = true;
    r->last_draw_ms = s_mono_ms ();
}

/* Called while waiting for the stream: redraw the clock, keep the sandbox. */
static void
s_tick (void *cls)
{
    run_t *r = cls;
    int64_t now = s_mono_ms ();
    if (r->bar_drawn && now - r->last_draw_ms >= 200)
        s_draw_bar (r);
    if (now - r->last_extend_ms >= EXTEND_EVERY_MS) {
        r->last_extend_ms = now;
        s_sandbox_extend (r);
    }
}

static void
s_on_output (run_t *r, json_t *ev)
{
    json_t *out = json_object_get (ev, "output");
    const char *type = json_string_value (json_object_get (out, "output_type"));
    if (type && !strcmp (type, "error")) {
        const char *ename = json_string_value (json_object_get (out, "ename"));
        const char *evalue = json_string_value (json_object_get (out, "evalue"));
        snprintf (r->cell_error, sizeof r->cell_error, "%s%s%s", ename ? ename : "error",
                  evalue && *evalue ? ": " : "", evalue ? evalue : "");
        /* one line: tracebacks' messages may hold newlines */
        for (char *p = r->cell_error; *p; p++)
            if (*p == '\n' || *p == '\r')
                *p = ' ';
    }
}

static void
s_on_cell_done (run_t *r, json_t *ev)
{
    r->done_cells++;
    const char *status = json_string_value (json_object_get (ev, "status"));
    json_int_t index = json_integer_value (json_object_get (ev, "index"));
    double secs = (double)json_integer_value (json_object_get (ev, "duration_ms")) / 1000.0;
    bool failed = status && !strcmp (status, "error");
    if (failed)
        r->errors++;
    if (!r->quiet && !r->tty) {
        if (failed)
            fprintf (stderr, "cell %d/%d (index %lld) error %.2f s: %s\n", r->done_cells,
                     r->code_cells, (long long)index, secs, r->cell_error);
        else
            fprintf (stderr, "cell %d/%d (index %lld) %s %.2f s\n", r->done_cells, r->code_cells,
                     (long long)index, status ? status : "?", secs);
    }
    if (failed && !r->first_error[0])
        snprintf (r->first_error, sizeof r->first_error, "%s",
                  r->cell_error[0] ? r->cell_error : "error");
    r->cell_error[0] = '\0';
    s_draw_bar (r);
}

/* ---- the run ------------------------------------------------------------ */

static int
s_write_notebook (run_t *r, json_t *nb, const char *out)
{
    char *text = json_dumps (nb, JSON_INDENT (1) | JSON_SORT_KEYS);
    if (!text) {
        s_msg ("cannot serialise the executed notebook");
        return -1;
    }
    size_t len = strlen (text);
    if (!strcmp (out, "-")) {
        bool ok = fwrite (text, 1, len, stdout) == len && fputc ('\n', stdout) != EOF
                  && fflush (stdout) == 0;
        free (text);
        if (!ok)
            s_msg ("writing the notebook to stdout: %s", strerror (errno));
        return ok ? 0 : -1;
    }
    /* A temporary file renamed over the target: never a half-written one. */
    char tmp[PATH_MAX];
    if ((size_t)snprintf (tmp, sizeof tmp, "%s.tmpXXXXXX", out) >= sizeof tmp) {
        free (text);
        s_msg ("%s: path too long", out);
        return -1;
    }
    int fd = mkstemp (tmp);
    if (fd < 0) {
        s_msg ("cannot write %s: %s", out, strerror (errno));
        free (text);
        return -1;
    }
    mode_t mask = umask (0);
    umask (mask);
    fchmod (fd, 0666 & ~mask);
    FILE *f = fdopen (fd, "w");
    bool ok = f && fwrite (text, 1, len, f) == len && fputc ('\n', f) != EOF;
    ok = (f ? fclose (f) == 0 : (close (fd), false)) && ok;
    free (text);
    if (!ok || rename (tmp, out) < 0) {
        s_msg ("cannot write %s: %s", out, strerror (errno));
        unlink (tmp);
        return -1;
    }
    return 0;
}

static void
s_output_path (run_t *r, char *out, size_t outlen)
{
    if (r->output) {
        snprintf (out, outlen, "%s", r->output);
        return;
    }
    const char *p = r->notebook_path;
    size_t n = strlen (p);
    if (n > 6 && !strcmp (p + n - 6, ".ipynb"))
        n -= 6;
    snprintf (out, outlen, "%.*s.out.ipynb", (int)n, p);
}

/* Run the notebook; 0, 1 (a cell failed) or 2. */
static int
s_run_notebook (run_t *r, json_t *notebook, const char *out_path)
{
    json_t *req
        = json_pack ("{s:O, s:b}", "notebook", notebook, "stop_on_error", !r->no_stop_on_error);
    if (r->language)
        json_object_set_new (req, "language", json_string (r->language));
    if (r->timeout_ms > 0)
        json_object_set_new (req, "timeout_ms", json_integer (r->timeout_ms));
    char *body = json_dumps (req, JSON_COMPACT);
    json_decref (req);
    if (!body) {
        s_msg ("out of memory");
        return EXIT_USAGE;
    }
    char path[300];
    snprintf (path, sizeof path, "/v1/sandboxes/%s/notebooks:run", r->sandbox_id);
    char err[600];
    httpc_t *h = httpc_connect (&r->url, CALL_TIMEOUT_MS, &s_stop, err, sizeof err);
    if (!h) {
        free (body);
        s_msg ("POST %s: %s", path, err);
        return EXIT_USAGE;
    }
    httpc_set_tick (h, s_tick, r);
    int rc = EXIT_USAGE;
    char *data = NULL;
    size_t len = 0;
    int status = -1;
    r->t0_ms = r->last_draw_ms = s_mono_ms ();
    r->last_extend_ms = r->t0_ms;
    if (httpc_request (h, "POST", path,
                       "Content-Type: application/json\r\nAccept: text/event-stream\r\n", r->token,
                       body, -1, (int64_t)strlen (body))
            < 0
        || (status = httpc_read_head (h)) < 0) {
        s_msg ("POST %s: %s", path, httpc_error (h));
        goto done;
    }
    if (status != 200 || !strstr (httpc_content_type (h), "text/event-stream")) {
        char *text = NULL;
        if (httpc_read_body (h, MAX_ANSWER, &text, &len) < 0) {
            s_msg ("POST %s: HTTP %d (%s)", path, status, httpc_error (h));
        }
        else {
            char d[700];
            s_describe_error (status, text, d, sizeof d);
            s_msg ("POST %s: %s", path, status == 200 ? "the answer is not an event stream" : d);
        }
        free (text);
        goto done;
    }
    long cell_ms = r->timeout_ms > 0 ? r->timeout_ms : 600000;
    httpc_set_timeout (h, (int)(cell_ms + STREAM_IDLE_SLACK_MS));
    bool finished = false;
    for (;;) {
        char name[64];
        int n = httpc_sse_next (h, name, sizeof name, &data, &len, MAX_EVENT);
        if (n < 0) {
            if (s_stop)
                s_msg ("interrupted; stopping the run");
            else
                s_msg ("the event stream failed: %s", httpc_error (h));
            break;
        }
        if (n == 0) {
            s_msg ("the broker closed the event stream before the run finished");
            break;
        }
        json_error_t jerr;
        json_t *ev = json_loadb (data, len, 0, &jerr);
        if (!ev) {
            s_msg ("event '%s' is not a JSON object: %s", name, jerr.text);
            break;
        }
        if (!strcmp (name, "start")) {
            r->code_cells = (int)json_integer_value (json_object_get (ev, "code_cells"));
            s_draw_bar (r);
        }
        else if (!strcmp (name, "output")) {
            s_on_output (r, ev);
        }
        else if (!strcmp (name, "cell_done")) {
            s_on_cell_done (r, ev);
        }
        else if (!strcmp (name, "error")) {
            const char *code = json_string_value (json_object_get (ev, "code"));
            const char *msg = json_string_value (json_object_get (ev, "message"));
            s_msg ("the broker failed the run: %s: %s", code ? code : "error", msg ? msg : "?");
            json_decref (ev);
            break;
        }
        else if (!strcmp (name, "done")) {
            json_t *nb = json_object_get (ev, "notebook");
            json_t *summary = json_object_get (ev, "summary");
            if (!json_is_object (nb)) {
                s_msg ("the done event has no notebook");
                json_decref (ev);
                break;
            }
            json_t *failed = json_object_get (summary, "failed_cell");
            int errors = (int)json_integer_value (json_object_get (summary, "errors"));
            if (r->bar_drawn) {
                s_draw_bar (r);
                fputc ('\n', stderr);
                r->bar_drawn = false;
            }
            if (s_write_notebook (r, nb, out_path) == 0) {
                rc = (errors > 0 || json_is_integer (failed)) ? EXIT_CELL_FAILED : 0;
                if (!r->quiet) {
                    int executed = (int)json_integer_value (json_object_get (summary, "executed"));
                    double secs
                        = (double)json_integer_value (json_object_get (summary, "duration_ms"))
                          / 1000.0;
                    s_msg ("wrote %s: %d of %d code cells run, %d error%s, %.2f s%s",
                           strcmp (out_path, "-") ? out_path : "stdout", executed,
                           (int)json_integer_value (json_object_get (summary, "code_cells")),
                           errors, errors == 1 ? "" : "s", secs,
                           json_is_integer (failed) && !r->no_stop_on_error
                               ? "; stopped at the failing cell"
                               : "");
                }
                if (json_is_integer (failed))
                    s_msg ("cell index %lld failed: %s", (long long)json_integer_value (failed),
                           r->first_error[0] ? r->first_error : "error");
            }
            finished = true;
            json_decref (ev);
            break;
        }
        json_decref (ev);
        /* A stream that never pauses must still keep the sandbox alive. */
        s_tick (r);
    }
    (void)finished;
done:
    if (r->bar_drawn) {
        fputc ('\n', stderr);
        r->bar_drawn = false;
    }
    httpc_destroy (&h);
    free (body);
    return rc;
}

/* ---- options ------------------------------------------------------------ */

static int
s_bad_usage (const char *fmt, ...)
{
    va_list ap;
    va_start (ap, fmt);
    fputs ("sandboxd-run: ", stderr);
    vfprintf (stderr, fmt, ap);
    fputs ("\nTry 'sandboxd-run --help'.\n", stderr);
    va_end (ap);
    return EXIT_USAGE;
}

static int
s_add_upload (run_t *r, const char *arg)
{
    if (r->n_uploads >= MAX_UPLOADS)
        return s_bad_usage ("--upload: at most %d files", MAX_UPLOADS);
    upload_t *u = &r->uploads[r->n_uploads];
    struct stat st;
    const char *colon = strrchr (arg, ':');
    /* A local name that itself holds ':' is taken whole when it exists. */
    if (colon && stat (arg, &st) < 0) {
        size_t ll = (size_t)(colon - arg);
        char *local = strndup (arg, ll);
        if (!local)
            return s_bad_usage ("out of memory");
        u->local = local;
        snprintf (u->remote, sizeof u->remote, "%s", colon + 1);
    }
    else {
        u->local = strdup (arg);
        if (!u->local)
            return s_bad_usage ("out of memory");
        const char *slash = strrchr (arg, '/');
        snprintf (u->remote, sizeof u->remote, "%s", slash ? slash + 1 : arg);
    }
    if (!u->local[0])
        return s_bad_usage ("--upload '%s': no local file named", arg);
    if (!u->remote[0] || u->remote[strlen (u->remote) - 1] == '/')
        return s_bad_usage ("--upload '%s': the remote path must name a file", arg);
    if (stat (u->local, &st) < 0)
        return s_bad_usage ("--upload '%s': %s: %s", arg, u->local, strerror (errno));
    if (!S_ISREG (st.st_mode))
        return s_bad_usage ("--upload '%s': %s is not a regular file", arg, u->local);
    if (access (u->local, R_OK) < 0)
        return s_bad_usage ("--upload '%s': %s: %s", arg, u->local, strerror (errno));
    r->n_uploads++;
    return 0;
}

static bool
s_header_safe (const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x21 || *p == 0x7f)
            return false;
    return true;
}

/* Parse argv into r. -1 to go on, else the exit status. */
static int
s_parse_args (run_t *r, int argc, char **argv)
{
    enum {
        OPT_URL = 256,
        OPT_TOKEN,
        OPT_SANDBOX,
        OPT_UPLOAD,
        OPT_LANG,
        OPT_TIMEOUT,
        OPT_NOSTOP,
        OPT_VERSION
    };
    static const struct option opts[] = {
        { "url", required_argument, NULL, OPT_URL },
        { "token", required_argument, NULL, OPT_TOKEN },
        { "sandbox", required_argument, NULL, OPT_SANDBOX },
        { "upload", required_argument, NULL, OPT_UPLOAD },
        { "language", required_argument, NULL, OPT_LANG },
        { "timeout-ms", required_argument, NULL, OPT_TIMEOUT },
        { "no-stop-on-error", no_argument, NULL, OPT_NOSTOP },
        { "output", required_argument, NULL, 'o' },
        { "quiet", no_argument, NULL, 'q' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, OPT_VERSION },
        { NULL, 0, NULL, 0 },
    };
    opterr = 0;
    int c;
    while ((c = getopt_long (argc, argv, ":o:qh", opts, NULL)) != -1) {
        switch (c) {
        case OPT_URL:
            r->url_text = optarg;
            break;
        case OPT_TOKEN:
            r->token = optarg;
            break;
        case OPT_SANDBOX:
            r->sandbox = optarg;
            break;
        case OPT_UPLOAD: {
            int rc = s_add_upload (r, optarg);
            if (rc)
                return rc;
            break;
        }
        case OPT_LANG:
            r->language = optarg;
            break;
        case OPT_TIMEOUT: {
            char *end;
            errno = 0;
            long v = strtol (optarg, &end, 10);
            if (errno || end == optarg || *end || v < 1 || v > 3600000)
                return s_bad_usage ("--timeout-ms '%s': must be an integer from 1 to 3600000",
                                    optarg);
            r->timeout_ms = v;
            break;
        }
        case OPT_NOSTOP:
            r->no_stop_on_error = true;
            break;
        case 'o':
            if (!optarg[0])
                return s_bad_usage ("--output: empty file name");
            r->output = optarg;
            break;
        case 'q':
            r->quiet = true;
            break;
        case 'h':
            s_usage (stdout);
            return 0;
        case OPT_VERSION:
            puts ("sandboxd-run " PACKAGE_VERSION);
            return 0;
        case ':':
            return s_bad_usage ("option '%s' needs a value", argv[optind - 1]);
        default:
            return s_bad_usage ("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc)
        return s_bad_usage ("no NOTEBOOK given");
    if (argc - optind > 1)
        return s_bad_usage ("one NOTEBOOK at a time (got '%s' and '%s')", argv[optind],
                            argv[optind + 1]);
    r->notebook_path = argv[optind];
    if (!r->url_text)
        r->url_text = getenv ("SANDBOXD_URL");
    if (!r->url_text || !*r->url_text)
        r->url_text = DEFAULT_URL;
    char err[1200];
    if (httpc_url_parse (r->url_text, &r->url, err, sizeof err) < 0)
        return s_bad_usage ("--url %s", err);
    if (!r->token)
        r->token = getenv ("SANDBOXD_TOKEN");
    if (!r->token || !*r->token)
        return s_bad_usage ("no token: pass --token TOKEN or set SANDBOXD_TOKEN");
    if (!s_header_safe (r->token) || strlen (r->token) > 1024)
        return s_bad_usage ("--token: white space or control characters in the token");
    if (r->language && strcmp (r->language, "python") && strcmp (r->language, "javascript")
        && strcmp (r->language, "typescript"))
        return s_bad_usage ("--language '%s': must be python, javascript or typescript",
                            r->language);
    if (r->sandbox) {
        size_t n = strlen (r->sandbox);
        bool ok = n >= 1 && n <= 63;
        for (size_t i = 0; ok && i < n; i++) {
            char ch = r->sandbox[i];
            ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9')
                 || (i > 0 && strchr ("_.-", ch));
        }
        if (!ok)
            return s_bad_usage ("--sandbox '%s': 1-63 of [A-Za-z0-9_.-], starting alphanumeric",
                                r->sandbox);
    }
    return -1;
}

/* Load the notebook file as a JSON object; NULL with a message. */
static json_t *
s_load_notebook (const char *path)
{
    struct stat st;
    if (stat (path, &st) < 0) {
        s_bad_usage ("%s: %s", path, strerror (errno));
        return NULL;
    }
    if (!S_ISREG (st.st_mode)) {
        s_bad_usage ("%s: not a regular file", path);
        return NULL;
    }
    if (st.st_size > MAX_NOTEBOOK_FILE) {
        s_bad_usage ("%s: %lld bytes; notebooks over %lld MiB are not sent", path,
                     (long long)st.st_size, MAX_NOTEBOOK_FILE >> 20);
        return NULL;
    }
    json_error_t jerr;
    json_t *nb = json_load_file (path, JSON_REJECT_DUPLICATES, &jerr);
    if (!nb) {
        s_bad_usage ("%s: not a notebook: invalid JSON at line %d, column %d: %s", path, jerr.line,
                     jerr.column, jerr.text);
        return NULL;
    }
    if (!json_is_object (nb) || !json_is_array (json_object_get (nb, "cells"))) {
        s_bad_usage ("%s: not a notebook: no \"cells\" list", path);
        json_decref (nb);
        return NULL;
    }
    return nb;
}

int
main (int argc, char **argv)
{
    static run_t run;
    run_t *r = &run;
    int rc = s_parse_args (r, argc, argv);
    if (rc >= 0)
        return rc;
    r->tty = isatty (STDERR_FILENO);
    s_run_for_msg = r;

    json_t *notebook = s_load_notebook (r->notebook_path);
    if (!notebook)
        return EXIT_USAGE;
    char out_path[PATH_MAX];
    s_output_path (r, out_path, sizeof out_path);

    struct sigaction sa = { .sa_handler = s_on_signal };
    sigemptyset (&sa.sa_mask);
    sigaction (SIGINT, &sa, NULL);
    sigaction (SIGTERM, &sa, NULL);
    sigaction (SIGHUP, &sa, NULL);
    signal (SIGPIPE, SIG_IGN);

    rc = EXIT_USAGE;
    if (s_sandbox_create (r) == 0) {
        if (!r->quiet)
            s_msg ("%s sandbox %s", r->created ? "created" : "using", r->sandbox_id);
        bool uploaded = true;
        for (int i = 0; i < r->n_uploads && uploaded && !s_stop; i++)
            uploaded = s_upload (r, &r->uploads[i]) == 0;
        if (uploaded && !s_stop)
            rc = s_run_notebook (r, notebook, out_path);
        s_sandbox_delete (r);
    }
    else if (r->created) {
        s_sandbox_delete (r);
    }
    json_decref (notebook);
    for (int i = 0; i < r->n_uploads; i++)
        free ((char *)r->uploads[i].local);
    if (s_stop && s_signal) {
        /* End by the signal, so that a calling shell or loop stops too. */
        signal (s_signal, SIG_DFL);
        raise (s_signal);
    }
    return rc;
}
