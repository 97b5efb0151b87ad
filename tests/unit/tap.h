/* tap.h - a minimal Test Anything Protocol emitter for unit tests. */
#ifndef SANDBOXD_TAP_H
#define SANDBOXD_TAP_H

#include <stdio.h>

static int tap_n = 0, tap_failed = 0;

#define ok(cond, ...)                                                                              \
    do {                                                                                           \
        int ok_ = (cond);                                                                          \
        printf ("%sok %d - ", ok_ ? "" : "not ", ++tap_n);                                         \
        printf (__VA_ARGS__);                                                                      \
        printf ("\n");                                                                             \
        if (!ok_) {                                                                                \
            tap_failed++;                                                                          \
            printf ("# failed at %s:%d: %s\n", __FILE__, __LINE__, #cond);                         \
        }                                                                                          \
        fflush (stdout);                                                                           \
    } while (0)

#define tap_done() (printf ("1..%d\n", tap_n), tap_failed ? 1 : 0)

#endif
