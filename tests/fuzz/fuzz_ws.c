/* fuzz_ws.c - WebSocket client frames as the gateway reads them: the
   input is split into feeds at points the input itself chooses, with a
   message limit it chooses too, and every message and control frame is
   drained until the parser wants more bytes or refuses the stream. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ws.h"

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t max = (size_t)(data[0] + 1) * 64; /* 64 B .. 16 KiB */
    size_t step = (size_t)data[1] % 32 + 1;
    data += 2;
    size -= 2;
    ws_t *ws = ws_new (-1, max);
    if (!ws)
        return 0;
    for (size_t off = 0; off < size;) {
        size_t k = size - off < step ? size - off : step;
        if (ws_feed (ws, data + off, k) < 0)
            break;
        off += k;
        int op, code = 0, r;
        const unsigned char *d;
        size_t len;
        while ((r = ws_next (ws, &op, &d, &len, &code)) == 1) {
            /* touch every byte handed out, so a bad pointer or length shows */
            volatile unsigned sum = 0;
            for (size_t i = 0; i < len; i++)
                sum += d[i];
            if ((op < 0x8 && len > max) || (op >= 0x8 && len > 125))
                abort ();
        }
        if (r < 0) {
            if (code != 1002 && code != 1009)
                abort ();
            break;
        }
    }
    ws_destroy (&ws);
    return 0;
}
