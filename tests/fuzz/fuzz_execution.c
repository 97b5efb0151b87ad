/* fuzz_execution.c - what a kernel sends back about a run: iopub and shell
   message contents (stream, display_data, execute_result, error, status,
   execute_reply, clear_output, update_display_data) assembled into an
   Execution, with MIME bundles normalised and images checked. The input is
   a JSON array of [channel, msg_type, content] triples. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "execution.h"

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    json_error_t jerr;
    json_t *msgs = json_loadb ((const char *)data, size, 0, &jerr);
    if (!json_is_array (msgs)) {
        json_decref (msgs);
        return 0;
    }
    mime_image_opts_t img = { .max_pixels = 4096, .max_side = 64 };
    execution_t *ex = execution_new (1 << 20, &img);
    size_t i;
    json_t *m;
    json_array_foreach (msgs, i, m)
    {
        const char *channel = json_string_value (json_array_get (m, 0));
        const char *type = json_string_value (json_array_get (m, 1));
        json_t *content = json_array_get (m, 2);
        if (!channel || !type || !content)
            continue;
        json_t *events = execution_apply (ex, channel, type, content);
        json_decref (events);
        (void)execution_done (ex);
        (void)execution_aborted (ex);
    }
    json_decref (execution_fail (ex, "TimeoutError", "fuzz", false));
    json_t *out = execution_to_json (ex);
    char *text = json_dumps (out, 0);
    free (text);
    json_decref (out);
    json_t *bundle = json_array_get (msgs, 0);
    if (json_is_object (bundle))
        json_decref (execution_result_from_bundle (bundle, true, NULL));
    execution_destroy (&ex);
    json_decref (msgs);
    return 0;
}
