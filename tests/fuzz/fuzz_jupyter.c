/* fuzz_jupyter.c - the Jupyter wire protocol: frames as a kernel (tenant
   code) may send them, split on a separator, decoded and signature-checked
   with a fixed key. Half the inputs are signed correctly first, so the
   fuzzer also gets past the HMAC into the JSON and shape checks. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "jupyter.h"

#define MAX_FRAMES 16
static const char KEY[] = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    static jupyter_session_t s;
    static int ready;
    if (!ready) {
        err_t err = { 0 };
        if (sodium_init () < 0)
            abort ();
        jupyter_session_init (&s);
        if (jupyter_session_set_key (&s, KEY, &err) < 0)
            abort ();
        ready = 1;
    }
    if (size < 1)
        return 0;
    int sign = data[0] & 1;
    data++;
    size--;

    /* Frames are separated by the two bytes "\n|". */
    void *frames[MAX_FRAMES];
    size_t lens[MAX_FRAMES];
    char *copy = malloc (size + 1);
    if (!copy)
        return 0;
    memcpy (copy, data, size);
    int n = 0;
    size_t start = 0;
    for (size_t i = 0; i + 1 < size && n < MAX_FRAMES - 1; i++)
        if (copy[i] == '\n' && copy[i + 1] == '|') {
            frames[n] = copy + start;
            lens[n++] = i - start;
            start = i + 2;
            i++;
        }
    frames[n] = copy + start;
    lens[n++] = size - start;

    char sig[65];
    if (sign) {
        /* Put a valid signature after the delimiter, if there is room. */
        for (int i = 0; i + 5 < n; i++)
            if (lens[i] == 9 && !memcmp (frames[i], "<IDS|MSG>", 9)) {
                crypto_auth_hmacsha256_state st;
                unsigned char mac[32];
                crypto_auth_hmacsha256_init (&st, (const unsigned char *)KEY, 64);
                for (int k = i + 2; k < i + 6; k++)
                    crypto_auth_hmacsha256_update (&st, frames[k], lens[k]);
                crypto_auth_hmacsha256_final (&st, mac);
                sodium_bin2hex (sig, sizeof sig, mac, sizeof mac);
                frames[i + 1] = sig;
                lens[i + 1] = 64;
                break;
            }
    }
    err_t err = { 0 };
    jupyter_msg_t *msg = jupyter_msg_decode (&s, frames, lens, n, &err);
    if (msg) {
        (void)jupyter_msg_type (msg);
        (void)jupyter_parent_id (msg);
        /* A decoded message must re-encode. */
        void *out[MAX_FRAMES + JUPYTER_MAX_BUFFERS];
        size_t olens[MAX_FRAMES + JUPYTER_MAX_BUFFERS];
        int m = jupyter_msg_encode (&s, msg, out, olens, MAX_FRAMES + JUPYTER_MAX_BUFFERS);
        for (int i = 0; i < m; i++)
            free (out[i]);
        jupyter_msg_destroy (&msg);
    }
    free (copy);
    return 0;
}
