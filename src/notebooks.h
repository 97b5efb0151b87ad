/* notebooks.h - running a Jupyter notebook (nbformat 4) cell by cell in a
   code context: request and notebook validation, language resolution,
   turning runCode streaming events into nbformat outputs, and assembling
   the executed notebook with its summary. No HTTP types: the caller hands
   in the parsed body and the query options, and gets events through a
   callback. */
#ifndef SANDBOXD_NOTEBOOKS_H
#define SANDBOXD_NOTEBOOKS_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "contexts.h"
#include "kernel.h"
#include "util.h"

#define NOTEBOOKS_MAX_CELLS 10000

/* Options as the query string gives them (the bare-notebook form); each
   NULL when absent. */
typedef struct {
    const char *language;
    const char *stop_on_error;
    const char *timeout_ms;
    const char *context_id;
} notebooks_query_t;

/* A validated request. */
typedef struct {
    json_t *notebook; /* owned: a copy of the input notebook */
    bool has_language;
    kernel_lang_t language; /* when has_language: the request's own choice */
    bool stop_on_error;
    int64_t timeout_ms;
    char context_id[64]; /* "" for a fresh context */
} notebooks_request_t;

/* Validate body (the wrapper {notebook, language?, stop_on_error?,
   timeout_ms?, context_id?} or the notebook itself, options then from q,
   which may be NULL) into req. Cell sources longer than max_source bytes
   and timeouts over max_timeout_ms are refused. 0, or -1 with a 400
   invalid_field naming the field. On success the caller must call
   notebooks_request_clear. */
int notebooks_request_parse (json_t *body, const notebooks_query_t *q, size_t max_source,
                             int64_t max_timeout_ms, notebooks_request_t *req, err_t *err);
void notebooks_request_clear (notebooks_request_t *req);

/* The language a notebook asks for: metadata.kernelspec (name python3 or
   python, tslab, jslab; else its language), then
   metadata.language_info.name, then python. 0, or -1 with a 400 naming
   the metadata field that names a language this service cannot run. */
int notebooks_language (json_t *notebook, kernel_lang_t *out, err_t *err);

/* The source of a cell (a string or an array of strings) as one string.
   Caller frees; NULL when it has neither shape. */
char *notebooks_source (json_t *cell);

/* ---- one code cell's outputs ---------------------------------------------- */

typedef struct _notebooks_cell_t notebooks_cell_t;

/* Outputs of one run, kept within max_bytes (past it, further outputs are
   dropped and the cell marked truncated). Caller owns. */
notebooks_cell_t *notebooks_cell_new (size_t max_bytes);
void notebooks_cell_destroy (notebooks_cell_t **self_p);

/* Apply one runCode streaming event {"event", "data"} (see execution.h) the
   way Jupyter front ends do: streams appended (consecutive ones of the same
   name merged), results as execute_result or display_data, display updates
   replacing the data of every output with that display_id, clear_output
   (wait or not), errors (a later error replaces an earlier one: a timeout
   reports TimeoutError, not the KeyboardInterrupt its interrupt raised).
   Returns the new nbformat output this event added, as a client streaming
   the run should see it (a stream chunk unmerged), or NULL when it added
   none. Caller owns the return value. */
json_t *notebooks_cell_apply (notebooks_cell_t *self, json_t *event);

/* The cell's outputs as an nbformat 4 array (new reference); execute_result
   outputs get count (or null when count < 0). */
json_t *notebooks_cell_outputs (notebooks_cell_t *self, json_int_t count);

/* The count the kernel announced, or -1. */
json_int_t notebooks_cell_count (const notebooks_cell_t *self);
bool notebooks_cell_failed (const notebooks_cell_t *self);
bool notebooks_cell_truncated (const notebooks_cell_t *self);
/* Bytes the outputs hold, as counted against max_bytes. */
size_t notebooks_cell_bytes (const notebooks_cell_t *self);

/* ---- the executed notebook ----------------------------------------------- */

/* Reset a notebook for a run, as nbclient does: every code cell gets
   outputs [] and execution_count null; metadata.language_info.name is set
   when missing. */
void notebooks_reset (json_t *notebook, kernel_lang_t lang);

/* ---- running ---------------------------------------------------------------- */

/* Progress: event is start, cell_start, output or cell_done, data (stolen)
   its payload (docs/api.md, "Notebooks"). Called with event NULL and data
   NULL now and then just to ask. Returns nonzero when the client has gone:
   the run is then interrupted. */
typedef int (notebooks_sink_fn) (void *arg, const char *event, json_t *data);

typedef struct _notebooks_job_t notebooks_job_t;

/* Resolve the language and the context: a fresh one (created here) or the
   request's context_id, checked to exist and to match an explicit
   language. Errors (404, 409, 400, 503 ...) come before any cell runs.
   Steals req's contents on success (req is cleared). Caller owns the job
   and must pass it to notebooks_run or notebooks_job_free. */
notebooks_job_t *notebooks_prepare (contexts_t *ctxs, const config_t *cfg, const char *tenant,
                                    const char *sid, notebooks_request_t *req, err_t *err);

/* Run every code cell in order and return {"notebook", "summary"} (caller
   owns), or NULL with err when the broker failed mid-run or the client
   went away. The caller then frees job (notebooks_job_free), which deletes
   a context the job created: after delivering the result, since a kernel's
   orderly shutdown takes ~0.3 s. */
json_t *notebooks_run (notebooks_job_t *job, notebooks_sink_fn *sink, void *arg, err_t *err);

/* Free a job that will not run, deleting a context it created. */
void notebooks_job_free (notebooks_job_t *job);

#endif
