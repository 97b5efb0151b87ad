/* fuzz_jsonv.c - request bodies: JSON object parsing, the field getters
   every route uses, environment maps and the UTF-8 scrubber applied to
   untrusted output. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jsonv.h"

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    err_t err = { 0 };
    size_t n = 0;
    char *clean = jsonv_utf8_scrub ((const char *)data, size, &n);
    free (clean);
    json_t *s = jsonv_string_from_bytes ((const char *)data, size);
    char *dumped = s ? jsonv_dumps (s) : NULL;
    free (dumped);
    json_decref (s);

    json_t *obj = jsonv_parse_object ((const char *)data, size, true, &err);
    if (!obj)
        return 0;
    static const char *const keys[] = { "command", "cwd", "env", "timeout_ms", "id", NULL };
    const char *str = NULL;
    int64_t i = 0;
    double d = 0;
    bool b = false;
    json_t *env = NULL;
    err_t e2 = { 0 };
    jsonv_only_keys (obj, "", keys, &e2);
    jsonv_string (obj, "", "command", true, 65536, &str, &e2);
    jsonv_string (obj, "", "cwd", false, 4096, &str, &e2);
    jsonv_int (obj, "", "timeout_ms", false, 1, 86400000, &i, &e2);
    jsonv_number (obj, "limits.", "cpus", false, 0.01, 64, &d, &e2);
    jsonv_bool (obj, "", "stream", &b, &e2);
    jsonv_env (obj, "", "env", 256, 65536, &env, &e2);
    json_t *limits = json_object_get (obj, "limits");
    if (json_is_object (limits))
        jsonv_int (limits, "limits.", "memory_mb", false, 16, 65536, &i, &e2);
    json_decref (obj);
    return 0;
}
