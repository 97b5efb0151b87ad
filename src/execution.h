/* execution.h - one runCode execution, assembled from the messages the
   kernel sent in reply to it (iopub stream, display_data, execute_result,
   update_display_data, clear_output, error, execute_input, status, and the
   shell execute_reply). Pure data handling: no sockets, no HTTP. Every
   content object came from a kernel running tenant code, so every field is
   type-checked and every size bounded. */
#ifndef SANDBOXD_EXECUTION_H
#define SANDBOXD_EXECUTION_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "mime.h"

typedef struct _execution_t execution_t;

/* Bounds besides max_bytes: results kept, log entries kept (stdout and
   stderr together), and the error (name, value and traceback lines, which
   have their own budget so that a flood of output never hides it). */
#define EXECUTION_MAX_RESULTS     10000
#define EXECUTION_MAX_LOG_ENTRIES 100000
#define EXECUTION_MAX_ERROR_BYTES (1u << 20)
#define EXECUTION_MAX_TRACEBACK   10000

/* max_bytes bounds everything the execution keeps (results and logs);
   past it, further output is dropped and the execution is marked
   truncated. With img, every PNG and JPEG in a result is verified (mime/):
   a bad one is dropped from the result and its reason put in the result's
   "errors" {field: message}; a good one's size goes to "metadata" {field:
   {width, height, ...}}, and PNGs over img's limits are downscaled. NULL
   img: results are mapped but images not checked. Caller owns the result
   and must destroy it. */
execution_t *execution_new (size_t max_bytes, const mime_image_opts_t *img);
void execution_destroy (execution_t **self_p);

/* Apply one message that belongs to this execution (the caller matched its
   parent msg_id). channel is "iopub" or "shell". Returns a new JSON array
   (caller owns, possibly empty) of streaming events, each
   {"event": NAME, "data": OBJECT}, with NAME one of stdout, stderr, result,
   display_update, clear_output, error, execution_count. Messages of other
   types, or with malformed content, produce no event and change nothing.
   NULL only when out of memory. */
json_t *execution_apply (execution_t *self, const char *channel, const char *msg_type,
                         json_t *content);

/* True when the kernel answered that it skipped the cell without running
   it (IPython "aborted" after an earlier failure with stop_on_error; TSLab
   "abort" for 200 ms after any failure). */
bool execution_aborted (const execution_t *self);

/* True once both the shell execute_reply and iopub status "idle" arrived. */
bool execution_done (const execution_t *self);

/* Record a broker-side failure (TimeoutError, KernelDied, ...) as the
   execution's error, replacing none that the kernel already reported
   unless force. Returns the streaming event for it (caller owns), or NULL
   when the earlier error was kept. */
json_t *execution_fail (execution_t *self, const char *name, const char *value, bool force);

/* The Execution object: {results: [...], logs: {stdout: [...], stderr:
   [...]}, error: {name, value, traceback} | null, execution_count: N | null,
   truncated: bool}. Caller owns. */
json_t *execution_to_json (const execution_t *self);

/* Convert one MIME bundle (data object) into a result object:
   text/plain→text, text/html→html, text/markdown→markdown,
   image/svg+xml→svg, image/png→png, image/jpeg→jpeg, application/pdf→pdf,
   text/latex→latex, application/json→json, application/javascript→
   javascript, application/vnd.sandboxd.data+json→data,
   application/vnd.sandboxd.chart+json→chart, anything else into
   extra{mime: value}; plus "formats" (the
   field names present, in that order), "is_main_result" and "display_id"
   (string or null). Caller owns. */
json_t *execution_result_from_bundle (json_t *data, bool is_main, const char *display_id);

/* The other way: the MIME bundle {mime: value} a result object stands for,
   its fields mapped back to their MIME types (text→text/plain, ...,
   chart→application/vnd.sandboxd.chart+json) and "extra" spread out.
   Fields that are not MIME data (formats, metadata, errors, ...) are left
   out. Caller owns; NULL when result is not an object. */
json_t *execution_result_to_bundle (json_t *result);

#endif
