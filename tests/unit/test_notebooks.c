/* test_notebooks.c - notebook request validation (every refusal names its
   field), language resolution, turning runCode streaming events into
   nbformat outputs (merged streams, MIME bundles, display updates,
   clear_output, one error per cell, the output budget), and the reset that
   leaves unrun cells without outputs or counts. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "notebooks.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "testjson.h"

/* Parse body (a literal) with query q; returns the rc, err filled. */
static int
s_parse (const char *body, const notebooks_query_t *q, notebooks_request_t *req, err_t *err)
{
    json_t *b = s_j (body);
    memset (err, 0, sizeof *err);
    int rc = notebooks_request_parse (b, q, 1000, 3600000, req, err);
    json_decref (b);
    return rc;
}

/* True when parsing body fails with 400 invalid_field naming field. */
static bool
s_refused (const char *body, const notebooks_query_t *q, const char *field)
{
    notebooks_request_t req;
    err_t err;
    int rc = s_parse (body, q, &req, &err);
    if (rc == 0) {
        notebooks_request_clear (&req);
        return false;
    }
    char quoted[160];
    snprintf (quoted, sizeof quoted, "'%s'", field);
    bool ok
        = err.status == 400 && !strcmp (err.code, "invalid_field") && strstr (err.message, quoted);
    if (!ok)
        printf ("# got %d %s: %s\n", err.status, err.code, err.message);
    return ok;
}

#define NB(cells) "{'nbformat': 4, 'nbformat_minor': 5, 'metadata': {}, 'cells': " cells "}"

static void
test_request (void)
{
    notebooks_request_t req;
    err_t err;
    int rc = s_parse ("{'notebook': " NB ("[{'cell_type': 'code', 'source': ['1', '+1']}]") "}",
                      NULL, &req, &err);
    ok (rc == 0 && req.stop_on_error && req.timeout_ms == 600000 && !req.has_language
            && !req.context_id[0] && json_is_object (req.notebook),
        "a wrapper with a notebook: defaults stop_on_error true, timeout 600000 ms, no language");
    notebooks_request_clear (&req);

    rc = s_parse ("{'notebook': " NB ("[]") ", 'language': 'typescript', 'stop_on_error': false, "
                                            "'timeout_ms': 5, 'context_id': 'ctx-1'}",
                  NULL, &req, &err);
    ok (rc == 0 && req.has_language && req.language == KERNEL_TYPESCRIPT && !req.stop_on_error
            && req.timeout_ms == 5 && !strcmp (req.context_id, "ctx-1"),
        "the wrapper's options are read");
    notebooks_request_clear (&req);

    notebooks_query_t q = { "javascript", "false", "250", NULL };
    rc = s_parse (NB ("[{'cell_type': 'markdown', 'source': 'x'}]"), &q, &req, &err);
    ok (rc == 0 && req.has_language && req.language == KERNEL_JAVASCRIPT && !req.stop_on_error
            && req.timeout_ms == 250,
        "a bare notebook takes its options from the query string");
    notebooks_request_clear (&req);

    notebooks_query_t q2 = { NULL, "1", NULL, NULL };
    rc = s_parse ("{'notebook': " NB ("[]") ", 'stop_on_error': false}", &q2, &req, &err);
    ok (rc == 0 && !req.stop_on_error, "a wrapper's own field wins over the query string");
    notebooks_request_clear (&req);

    rc = s_parse (NB ("[{'cell_type': 'widget-thing', 'source': 3}]"), NULL, &req, &err);
    ok (rc == 0, "a cell of an unknown type is not judged (returned as it came)");
    notebooks_request_clear (&req);

    ok (s_refused ("{'notebook': {'nbformat': 3, 'cells': []}}", NULL, "notebook.nbformat"),
        "nbformat 3 is refused naming notebook.nbformat");
    ok (s_refused ("{'nbformat': '4', 'cells': []}", NULL, "nbformat"),
        "a string nbformat is refused naming nbformat");
    ok (s_refused ("{'nbformat': 4, 'nbformat_minor': -1, 'cells': []}", NULL, "nbformat_minor"),
        "a negative nbformat_minor is refused");
    ok (s_refused ("{'nbformat': 4, 'metadata': 1, 'cells': []}", NULL, "metadata"),
        "metadata must be an object");
    ok (s_refused ("{'nbformat': 4}", NULL, "cells"), "missing cells is refused naming cells");
    ok (s_refused (NB ("[{'cell_type': 'code', 'source': ''}, 5]"), NULL, "cells[1]"),
        "a cell that is not an object is named by index");
    ok (s_refused (NB ("[{'source': ''}]"), NULL, "cells[0].cell_type"), "a missing cell_type");
    ok (s_refused (NB ("[{'cell_type': 7, 'source': ''}]"), NULL, "cells[0].cell_type"),
        "a cell_type that is not a string");
    ok (s_refused (NB ("[{'cell_type': 'code', 'source': {}}]"), NULL, "cells[0].source"),
        "a source that is an object");
    ok (s_refused (NB ("[{'cell_type': 'raw', 'source': ['a', null]}]"), NULL, "cells[0].source"),
        "a source array with a null");
    ok (s_refused (NB ("[{'cell_type': 'code'}]"), NULL, "cells[0].source"), "a missing source");
    ok (s_refused (NB ("[{'cell_type': 'code', 'source': ['a', 'b\\u0000c']}]"), NULL,
                   "cells[0].source"),
        "a code source with a NUL");
    {
        char a[601], b[402], body[1300];
        memset (a, 'x', 600);
        a[600] = '\0';
        memset (b, 'y', 401);
        b[401] = '\0';
        snprintf (body, sizeof body, NB ("[{'cell_type': 'code', 'source': ['%s', '%s']}]"), a, b);
        ok (s_refused (body, NULL, "cells[0].source"),
            "a code source over the limit (joined from parts) is refused");
        snprintf (body, sizeof body, NB ("[{'cell_type': 'markdown', 'source': ['%s', '%s']}]"), a,
                  b);
        notebooks_request_t r2;
        err_t e2;
        ok (s_parse (body, NULL, &r2, &e2) == 0, "the code limit does not apply to markdown");
        notebooks_request_clear (&r2);
    }
    {
        size_t n = 10001;
        size_t cap = n * 40 + 200;
        char *body = malloc (cap);
        size_t o = (size_t)snprintf (body, cap, "{'nbformat': 4, 'cells': [");
        for (size_t i = 0; i < n; i++)
            o += (size_t)snprintf (body + o, cap - o, "%s{'cell_type': 'raw', 'source': ''}",
                                   i ? "," : "");
        snprintf (body + o, cap - o, "]}");
        ok (s_refused (body, NULL, "cells"), "10001 cells are refused naming cells");
        free (body);
    }
    ok (s_refused ("{'notebook': " NB ("[]") ", 'language': 'cobol'}", NULL, "language"),
        "an unknown language");
    ok (s_refused ("{'notebook': " NB ("[]") ", 'timeout_ms': 0}", NULL, "timeout_ms"),
        "timeout_ms 0");
    ok (s_refused ("{'notebook': " NB ("[]") ", 'timeout_ms': 3600001}", NULL, "timeout_ms"),
        "timeout_ms over the maximum");
    ok (s_refused ("{'notebook': " NB ("[]") ", 'stop_on_error': 1}", NULL, "stop_on_error"),
        "stop_on_error not a boolean");
    ok (s_refused ("{'notebook': " NB ("[]") ", 'extra': 1}", NULL, "extra"),
        "an unknown wrapper field is named");
    ok (s_refused ("{'notebook': []}", NULL, "notebook"), "a notebook that is not an object");
    ok (s_refused ("{'a': 1}", NULL, "notebook"), "a body with neither notebook nor cells");
    notebooks_query_t bq = { NULL, "maybe", NULL, NULL };
    ok (s_refused (NB ("[]"), &bq, "stop_on_error"), "?stop_on_error=maybe");
    notebooks_query_t tq = { NULL, NULL, "12x", NULL };
    ok (s_refused (NB ("[]"), &tq, "timeout_ms"), "?timeout_ms=12x");
    notebooks_query_t lq = { "perl", NULL, NULL, NULL };
    ok (s_refused (NB ("[]"), &lq, "language"), "?language=perl");
}

static bool
s_lang (const char *nb, kernel_lang_t want)
{
    json_t *j = s_j (nb);
    err_t err = { 0 };
    kernel_lang_t got = (kernel_lang_t)-1;
    int rc = notebooks_language (j, &got, &err);
    json_decref (j);
    return rc == 0 && got == want;
}

static bool
s_lang_refused (const char *nb, const char *field)
{
    json_t *j = s_j (nb);
    err_t err = { 0 };
    kernel_lang_t got;
    int rc = notebooks_language (j, &got, &err);
    json_decref (j);
    char quoted[96];
    snprintf (quoted, sizeof quoted, "'%s'", field);
    return rc < 0 && err.status == 400 && strstr (err.message, quoted);
}

static void
test_language (void)
{
    ok (s_lang ("{'metadata': {}}", KERNEL_PYTHON), "no metadata: python");
    ok (s_lang ("{}", KERNEL_PYTHON), "no metadata at all: python");
    ok (s_lang ("{'metadata': {'kernelspec': {'name': 'python3'}}}", KERNEL_PYTHON), "python3");
    ok (s_lang ("{'metadata': {'kernelspec': {'name': 'tslab'}}}", KERNEL_TYPESCRIPT),
        "tslab → typescript");
    ok (s_lang ("{'metadata': {'kernelspec': {'name': 'jslab'}}}", KERNEL_JAVASCRIPT),
        "jslab → javascript");
    ok (s_lang ("{'metadata': {'kernelspec': {'name': 'conda-env-x-py', 'language': 'python'}}}",
                KERNEL_PYTHON),
        "an unknown kernel name with language python → python");
    ok (s_lang ("{'metadata': {'kernelspec': {'name': 'tslab'}, 'language_info': {'name': "
                "'python'}}}",
                KERNEL_TYPESCRIPT),
        "the kernelspec beats language_info");
    ok (s_lang ("{'metadata': {'language_info': {'name': 'javascript'}}}", KERNEL_JAVASCRIPT),
        "language_info.name when there is no kernelspec");
    ok (s_lang_refused ("{'metadata': {'kernelspec': {'name': 'ir', 'language': 'R'}}}",
                        "metadata.kernelspec"),
        "an R kernelspec is refused naming metadata.kernelspec");
    ok (s_lang_refused ("{'metadata': {'language_info': {'name': 'ruby'}}}",
                        "metadata.language_info.name"),
        "language_info ruby is refused naming metadata.language_info.name");
}

/* Feed an event literal; returns the output it produced (caller owns). */
static json_t *
s_ev (notebooks_cell_t *c, const char *event)
{
    json_t *e = s_j (event);
    json_t *out = notebooks_cell_apply (c, e);
    json_decref (e);
    return out;
}

/* Feed and forget. */
static void
s_feed (notebooks_cell_t *c, const char *event)
{
    json_decref (s_ev (c, event));
}

static bool
s_outputs_are (notebooks_cell_t *c, json_int_t count, const char *want)
{
    json_t *got = notebooks_cell_outputs (c, count);
    json_t *w = s_j (want);
    bool eq = json_equal (got, w);
    if (!eq) {
        char *g = json_dumps (got, JSON_COMPACT);
        printf ("# got %s\n", g);
        free (g);
    }
    json_decref (got);
    json_decref (w);
    return eq;
}

static void
test_outputs (void)
{
    notebooks_cell_t *c = notebooks_cell_new (1 << 20);
    s_feed (c, "{'event': 'execution_count', 'data': {'execution_count': 7}}");
    json_t *first = s_ev (c, "{'event': 'stdout', 'data': {'text': 'a\\n'}}");
    json_t *second = s_ev (c, "{'event': 'stdout', 'data': {'text': 'b\\n'}}");
    json_t *want = s_j ("{'output_type': 'stream', 'name': 'stdout', 'text': 'b\\n'}");
    ok (json_equal (second, want), "a stream chunk comes back unmerged, for streaming");
    json_decref (want);
    want = s_j ("{'output_type': 'stream', 'name': 'stdout', 'text': 'a\\n'}");
    ok (json_equal (first, want), "... and an earlier chunk is not changed by the merge");
    json_decref (want);
    json_decref (first);
    json_decref (second);
    s_feed (c, "{'event': 'stderr', 'data': {'text': 'e\\n'}}");
    s_feed (c, "{'event': 'stdout', 'data': {'text': 'c\\n'}}");
    json_t *res = s_ev (c, "{'event': 'result', 'data': {'text': '2', 'html': '<b>2</b>', "
                           "'chart': {'type': 'line'}, 'extra': {'text/x-custom': 'z'}, "
                           "'formats': ['text', 'html', 'chart'], 'metadata': {'png': {}}, "
                           "'is_main_result': true, 'display_id': null}}");
    ok (res && json_integer_value (json_object_get (res, "execution_count")) == 7,
        "an execute_result streamed after the count carries it");
    json_decref (res);
    ok (s_outputs_are (c, 7,
                       "[{'output_type': 'stream', 'name': 'stdout', 'text': 'a\\nb\\n'},"
                       " {'output_type': 'stream', 'name': 'stderr', 'text': 'e\\n'},"
                       " {'output_type': 'stream', 'name': 'stdout', 'text': 'c\\n'},"
                       " {'output_type': 'execute_result', 'execution_count': 7, 'metadata': {},"
                       "  'data': {'text/plain': '2', 'text/html': '<b>2</b>',"
                       "   'application/vnd.sandboxd.chart+json': {'type': 'line'},"
                       "   'text/x-custom': 'z'}}]"),
        "consecutive same-name streams merge, others stay apart; a result's fields map back to "
        "MIME types");
    ok (notebooks_cell_count (c) == 7 && !notebooks_cell_failed (c), "count 7, not failed");
    notebooks_cell_destroy (&c);

    c = notebooks_cell_new (1 << 20);
    s_feed (c, "{'event': 'result', 'data': {'png': 'iVBORw0KGgo=', 'text': '<Figure>', "
               "'is_main_result': false, 'display_id': 'd1'}}");
    s_feed (c, "{'event': 'result', 'data': {'text': 'other', 'is_main_result': false, "
               "'display_id': null}}");
    s_feed (c, "{'event': 'display_update', 'data': {'display_id': 'd1', 'result': {'text': "
               "'new', 'svg': '<svg/>', 'is_main_result': false, 'display_id': 'd1'}}}");
    ok (s_outputs_are (c, -1,
                       "[{'output_type': 'display_data', 'metadata': {}, 'data': {'text/plain': "
                       "'new', 'image/svg+xml': '<svg/>'}},"
                       " {'output_type': 'display_data', 'metadata': {}, 'data': {'text/plain': "
                       "'other'}}]"),
        "a display update replaces the data of the output with that display_id only");
    s_feed (c, "{'event': 'clear_output', 'data': {'wait': true}}");
    {
        json_t *o = notebooks_cell_outputs (c, -1);
        ok (json_array_size (o) == 2,
            "clear_output(wait=True) keeps the outputs until the next one");
        json_decref (o);
    }
    s_feed (c, "{'event': 'stdout', 'data': {'text': '50%'}}");
    ok (s_outputs_are (c, -1, "[{'output_type': 'stream', 'name': 'stdout', 'text': '50%'}]"),
        "... and drops them when the next output arrives");
    s_feed (c, "{'event': 'clear_output', 'data': {'wait': false}}");
    ok (s_outputs_are (c, -1, "[]"), "clear_output() empties the outputs at once");
    notebooks_cell_destroy (&c);

    c = notebooks_cell_new (1 << 20);
    s_feed (c, "{'event': 'stdout', 'data': {'text': 'before'}}");
    json_t *e1 = s_ev (c, "{'event': 'error', 'data': {'name': 'KeyboardInterrupt', 'value': '', "
                          "'traceback': ['tb1']}}");
    json_t *e2 = s_ev (c, "{'event': 'error', 'data': {'name': 'TimeoutError', 'value': 'the "
                          "execution exceeded its timeout of 5 ms', 'traceback': []}}");
    ok (e1 && e2 && !strcmp (json_string_value (json_object_get (e2, "ename")), "TimeoutError"),
        "each error is streamed");
    json_decref (e1);
    json_decref (e2);
    ok (s_outputs_are (c, -1,
                       "[{'output_type': 'stream', 'name': 'stdout', 'text': 'before'},"
                       " {'output_type': 'error', 'ename': 'TimeoutError', 'evalue': 'the "
                       "execution exceeded its timeout of 5 ms', 'traceback': []}]"),
        "a later error replaces the earlier one: a timeout reads TimeoutError");
    ok (notebooks_cell_failed (c), "the cell failed");
    notebooks_cell_destroy (&c);

    c = notebooks_cell_new (1 << 20);
    ok (!s_ev (c, "{'event': 'stdout', 'data': {'text': 5}}")
            && !s_ev (c, "{'event': 'result', 'data': 'x'}")
            && !s_ev (c, "{'event': 'bogus', 'data': {}}") && !s_ev (c, "{'data': {}}")
            && !s_ev (c, "{'event': 'error', 'data': {'name': 1, 'value': ''}}"),
        "malformed events add nothing");
    ok (s_outputs_are (c, -1, "[]"), "... the outputs stay empty");
    notebooks_cell_destroy (&c);

    c = notebooks_cell_new (100);
    s_feed (c, "{'event': 'stdout', 'data': {'text': '0123456789'}}");
    char big[256];
    snprintf (big, sizeof big, "{'event': 'stdout', 'data': {'text': '%0150d'}}", 1);
    s_feed (c, big);
    s_feed (c, "{'event': 'stderr', 'data': {'text': 'late'}}");
    s_feed (c, "{'event': 'error', 'data': {'name': 'E', 'value': 'v', 'traceback': []}}");
    json_t *o = notebooks_cell_outputs (c, -1);
    size_t n = json_array_size (o);
    ok (notebooks_cell_truncated (c) && n == 3
            && !strcmp (json_string_value (json_object_get (json_array_get (o, 0), "text")),
                        "0123456789")
            && !strcmp (json_string_value (json_object_get (json_array_get (o, 1), "output_type")),
                        "error")
            && strstr (json_string_value (json_object_get (json_array_get (o, 2), "text")),
                       "truncated"),
        "past the budget outputs are dropped, the error is still kept, and a note says so");
    json_decref (o);
    ok (notebooks_cell_bytes (c) <= 200, "the bytes counted stay near the budget (%zu)",
        notebooks_cell_bytes (c));
    notebooks_cell_destroy (&c);
    notebooks_cell_destroy (&c);
    ok (1, "destroying twice is harmless");

    c = notebooks_cell_new (10);
    s_feed (c, "{'event': 'error', 'data': {'name': 'LongErrorName', 'value': 'a long value', "
               "'traceback': ['line one', 'line two']}}");
    s_feed (c, "{'event': 'stdout', 'data': {'text': 'x'}}");
    s_feed (c, "{'event': 'result', 'data': {'text': 'y', 'is_main_result': false}}");
    o = notebooks_cell_outputs (c, -1);
    ok (json_array_size (o) == 2 && notebooks_cell_truncated (c) && notebooks_cell_bytes (c) > 10,
        "an error kept past the budget overdraws it, and later outputs are still dropped");
    json_decref (o);
    notebooks_cell_destroy (&c);
}

static void
test_reset (void)
{
    json_t *nb
        = s_j (NB ("[{'cell_type': 'markdown', 'source': 'm', 'metadata': {}},"
                   " {'cell_type': 'code', 'source': 'x', 'execution_count': 4, "
                   "'outputs': [{'output_type': 'stream', 'name': 'stdout', 'text': 'old'}], "
                   "'metadata': {'tags': ['t']}}]"));
    notebooks_reset (nb, KERNEL_TYPESCRIPT);
    json_t *want = s_j (NB ("[{'cell_type': 'markdown', 'source': 'm', 'metadata': {}},"
                            " {'cell_type': 'code', 'source': 'x', 'execution_count': null, "
                            "'outputs': [], 'metadata': {'tags': ['t']}}]"));
    json_object_set_new (json_object_get (want, "metadata"), "language_info",
                         json_pack ("{s:s}", "name", "typescript"));
    ok (json_equal (nb, want),
        "reset clears code cells' outputs and counts (what an unrun cell keeps after a failure), "
        "leaves other cells, and fills in language_info.name");
    json_decref (want);
    json_object_set_new (json_object_get (nb, "metadata"), "language_info",
                         json_pack ("{s:s}", "name", "python"));
    notebooks_reset (nb, KERNEL_TYPESCRIPT);
    ok (!strcmp (json_string_value (json_object_get (
                     json_object_get (json_object_get (nb, "metadata"), "language_info"), "name")),
                 "python"),
        "an existing language_info.name is left alone");
    json_decref (nb);

    json_t *cell = s_j ("{'source': ['a\\n', 'b']}");
    char *src = notebooks_source (cell);
    ok (src && !strcmp (src, "a\nb"), "a source array is joined");
    free (src);
    json_decref (cell);
}

int
main (void)
{
    test_request ();
    test_language ();
    test_outputs ();
    test_reset ();
    return tap_done ();
}
