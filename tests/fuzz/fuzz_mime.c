/* fuzz_mime.c - images from kernels: PNG decoded completely with libpng and
   downscaled, JPEG walked marker by marker. The input is the raw image; it
   is base64-encoded first, as kernels send images. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "mime.h"

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    if (size > (1 << 20))
        return 0;
    size_t blen = sodium_base64_ENCODED_LEN (size, sodium_base64_VARIANT_ORIGINAL);
    char *b64 = malloc (blen);
    if (!b64)
        return 0;
    sodium_bin2base64 (b64, blen, data, size, sodium_base64_VARIANT_ORIGINAL);
    err_t err = { 0 };
    mime_image_t img = { 0 };
    mime_image_opts_t opts = { .max_pixels = 1024, .max_side = 48 };
    if (mime_png_process (b64, strlen (b64), size & 1 ? &opts : NULL, &img, &err) == 0) {
        /* A resized PNG must itself be a valid PNG within the limits. */
        if (img.resized) {
            mime_image_t again = { 0 };
            err_t e2 = { 0 };
            if (mime_png_process (img.base64, strlen (img.base64), NULL, &again, &e2) < 0)
                abort ();
            if (again.width > 48 || again.height > 48 || (int64_t)again.width * again.height > 1024)
                abort ();
            mime_image_clear (&again);
        }
        mime_image_clear (&img);
    }
    int w = 0, h = 0;
    err_t e3 = { 0 };
    mime_jpeg_info (b64, strlen (b64), &w, &h, &e3);
    free (b64);
    return 0;
}
