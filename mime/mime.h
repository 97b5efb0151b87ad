/* mime.h - checks and transforms for rich results: images are decoded and
   verified with libpng (PNG) or by their headers (JPEG), and PNGs larger
   than a client asks for are downscaled and re-encoded. Everything here
   comes from a kernel that runs tenant code: sizes are bounded and no
   malformed image is ever passed on as good. */
#ifndef SANDBOXD_MIME_H
#define SANDBOXD_MIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define MIME_MAX_IMAGE_PIXELS (100LL * 1000 * 1000) /* refuse to decode more */
#define MIME_MAX_IMAGE_SIDE   65535                 /* pixels, either side */
#define MIME_MAX_BASE64_BYTES (64 * 1024 * 1024)    /* refuse longer base64 input */

typedef struct {
    int64_t max_pixels; /* 0 = no limit: downscale when width*height exceeds it */
    int max_side;       /* 0 = no limit: downscale when the longer side exceeds it */
} mime_image_opts_t;

typedef struct {
    int width, height;                   /* of the image passed on */
    int original_width, original_height; /* as the kernel sent it */
    bool resized;
    char *base64; /* the re-encoded PNG when resized (caller frees), else NULL */
} mime_image_t;

/* Decode a base64 PNG completely with libpng (a truncated or corrupt one
   fails with 422 "invalid_image" and a reason), fill out, and when opts
   ask for it, downscale keeping the aspect ratio (box/area-average filter,
   the result no larger than both limits) and re-encode as 8-bit RGBA or
   RGB PNG in out->base64. Whitespace in the base64 is ignored. opts may be
   NULL (no limits); negative limits fail with 400 "invalid_field". Input
   over MIME_MAX_BASE64_BYTES, or an image over MIME_MAX_IMAGE_SIDE or
   MIME_MAX_IMAGE_PIXELS, fails with 422 "image_too_large" before anything
   is allocated for it. On failure out holds nothing to free. */
int mime_png_process (const char *b64, size_t len, const mime_image_opts_t *opts, mime_image_t *out,
                      err_t *err);

/* Read a base64 JPEG's dimensions from its SOF marker, checking the SOI
   marker and the segment structure through the scans to the EOI marker, so
   a cut file fails too (bytes after EOI are ignored). 422 "invalid_image"
   if malformed, 422 "image_too_large" over the limits above. The entropy-
   coded data itself is not decoded. JPEGs are not resized. */
int mime_jpeg_info (const char *b64, size_t len, int *width, int *height, err_t *err);

/* Free img->base64 and zero *img. No operation if img is NULL. */
void mime_image_clear (mime_image_t *img);

#endif
