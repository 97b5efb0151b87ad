/* testjson.h - JSON literals in unit tests. */
#ifndef SANDBOXD_TESTJSON_H
#define SANDBOXD_TESTJSON_H

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* JSON from a test literal written with ' for " (so the texts must not
   contain an apostrophe). Exits on a typo in the test itself. */
static json_t *
s_j (const char *text)
{
    char *copy = strdup (text);
    for (char *p = copy; *p; p++)
        if (*p == '\'')
            *p = '"';
    json_error_t jerr;
    json_t *v = json_loads (copy, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (!v) {
        fprintf (stderr, "bad JSON in test: %s: %s\n", jerr.text, copy);
        exit (2);
    }
    free (copy);
    return v;
}

#endif
