/* sse.h - Server-Sent Events framing. */
#ifndef SANDBOXD_SSE_H
#define SANDBOXD_SSE_H

#include <jansson.h>
#include <stddef.h>

/* "event: NAME\ndata: <compact JSON>\n\n" in a new buffer the caller frees.
   The event name must not contain CR or LF; JSON text never does. NULL on
   allocation failure. */
char *sse_format (const char *event, const json_t *data, size_t *len);

/* A comment line that keeps idle proxies and clients from timing out. */
#define SSE_KEEPALIVE ": keepalive\n\n"

#endif
