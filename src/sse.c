/* sse.c - Server-Sent Events framing. */
#include "sse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *
sse_format (const char *event, const json_t *data, size_t *len)
{
    char *json = json_dumps (data, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!json)
        return NULL;
    size_t n = strlen (event) + strlen (json) + 32;
    char *out = malloc (n);
    if (out) {
        int w = snprintf (out, n, "event: %s\ndata: %s\n\n", event, json);
        *len = (size_t)w;
    }
    free (json);
    return out;
}
