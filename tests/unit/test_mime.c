/* test_mime.c - PNG verification and downscaling, JPEG header checks. */
#include "mime.h"
#include "tap.h"

#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

/* A 3x2 baseline and a 17x9 progressive JPEG, written by Pillow. */
static const char *s_jpeg_3x2
    = "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAMCAgMCAgMDAwMEAwMEBQgFBQQEBQoHBwYIDAoMDAsKCwsNDhIQDQ4RDg"
      "sLEBYQERMUFRUVDA8XGBYUGBIUFRT/2wBDAQMEBAUEBQkFBQkUDQsNFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQU"
      "FBQUFBQUFBQUFBQUFBQUFBQUFBQUFBT/wAARCAACAAMDASIAAhEBAxEB/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAw"
      "QFBgcICQoL/8QAtRAAAgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkK"
      "FhcYGRolJicoKSo0NTY3ODk6Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKTlJWWl5iZmq"
      "KjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/8QAHwEAAwEBAQEB"
      "AQEBAQAAAAAAAAECAwQFBgcICQoL/8QAtREAAgECBAQDBAcFBAQAAQJ3AAECAxEEBSExBhJBUQdhcRMiMoEIFEKRob"
      "HBCSMzUvAVYnLRChYkNOEl8RcYGRomJygpKjU2Nzg5OkNERUZHSElKU1RVVldYWVpjZGVmZ2hpanN0dXZ3eHl6goOE"
      "hYaHiImKkpOUlZaXmJmaoqOkpaanqKmqsrO0tba3uLm6wsPExcbHyMnK0tPU1dbX2Nna4uPk5ebn6Onq8vP09fb3+P"
      "n6/9oADAMBAAIRAxEAPwDwSiiivz8/uA//2Q==";
static const char *s_jpeg_17x9_progressive
    = "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAMCAgMCAgMDAwMEAwMEBQgFBQQEBQoHBwYIDAoMDAsKCwsNDhIQDQ4RDg"
      "sLEBYQERMUFRUVDA8XGBYUGBIUFRT/2wBDAQMEBAUEBQkFBQkUDQsNFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQU"
      "FBQUFBQUFBQUFBQUFBQUFBQUFBQUFBT/wgARCAAJABEDASIAAhEBAxEB/8QAFQABAQAAAAAAAAAAAAAAAAAAAAb/xA"
      "AWAQEBAQAAAAAAAAAAAAAAAAAABgf/2gAMAwEAAhADEAAAAYET+4Af/8QAFBABAAAAAAAAAAAAAAAAAAAAIP/aAAgB"
      "AQABBQJf/8QAFBEBAAAAAAAAAAAAAAAAAAAAEP/aAAgBAwEBPwE//8QAFBEBAAAAAAAAAAAAAAAAAAAAEP/aAAgBAg"
      "EBPwE//8QAFBABAAAAAAAAAAAAAAAAAAAAIP/aAAgBAQAGPwJf/8QAFBABAAAAAAAAAAAAAAAAAAAAIP/aAAgBAQAB"
      "PyFf/9oADAMBAAIAAwAAABDzz//EABQRAQAAAAAAAAAAAAAAAAAAABD/2gAIAQMBAT8QP//EABQRAQAAAAAAAAAAAA"
      "AAAAAAABD/2gAIAQIBAT8QP//EABQQAQAAAAAAAAAAAAAAAAAAACD/2gAIAQEAAT8QX//Z";

typedef struct {
    uint8_t *data;
    size_t len;
} s_buf_t;

static char *
s_b64 (const uint8_t *bin, size_t n)
{
    size_t cap = sodium_base64_ENCODED_LEN (n, sodium_base64_VARIANT_ORIGINAL);
    char *s = malloc (cap);
    sodium_bin2base64 (s, cap, bin, n, sodium_base64_VARIANT_ORIGINAL);
    return s;
}

static s_buf_t
s_unb64 (const char *b64)
{
    size_t len = strlen (b64), n = 0;
    s_buf_t b = { malloc (len / 4 * 3 + 3), 0 };
    if (sodium_base642bin (b.data, len / 4 * 3 + 3, b64, len, " \r\n\t", &n, NULL,
                           sodium_base64_VARIANT_ORIGINAL)
        != 0)
        n = 0;
    b.len = n;
    return b;
}

/* Encode pixels (format as for png_image) with the simplified writer. */
static s_buf_t
s_png_simple (uint32_t w, uint32_t h, uint32_t format, const void *pixels)
{
    png_image img;
    memset (&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    img.width = w;
    img.height = h;
    img.format = format;
    png_alloc_size_t size = PNG_IMAGE_PNG_SIZE_MAX (img);
    s_buf_t b = { malloc (size), 0 };
    if (!png_image_write_to_memory (&img, b.data, &size, 0, pixels, 0, NULL)) {
        fprintf (stderr, "write: %s\n", img.message);
        exit (2);
    }
    b.len = size;
    return b;
}

static void
s_write_fn (png_structp png, png_bytep data, size_t n)
{
    s_buf_t *b = png_get_io_ptr (png);
    b->data = realloc (b->data, b->len + n);
    memcpy (b->data + b->len, data, n);
    b->len += n;
}

static void
s_flush_fn (png_structp png)
{}

/* Encode with the classic writer, for what the simplified one cannot do:
   palettes with tRNS, 16-bit channels, interlacing, a fast zlib level for
   the big images. rows holds h rows of
   packed samples of the given type and depth (16-bit big-endian). */
static s_buf_t
s_png_classic (uint32_t w, uint32_t h, int depth, int ctype, int interlace, const uint8_t *rows,
               const png_color *palette, int npal, const uint8_t *trns, int ntrns)
{
    s_buf_t b = { NULL, 0 };
    png_structp png = png_create_write_struct (PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct (png);
    if (setjmp (png_jmpbuf (png))) {
        fprintf (stderr, "classic write failed\n");
        exit (2);
    }
    png_set_write_fn (png, &b, s_write_fn, s_flush_fn);
    png_set_compression_level (png, 1); /* quick to write; decoding costs the same */
    png_set_IHDR (png, info, w, h, depth, ctype, interlace, PNG_COMPRESSION_TYPE_DEFAULT,
                  PNG_FILTER_TYPE_DEFAULT);
    if (palette)
        png_set_PLTE (png, info, palette, npal);
    if (trns)
        png_set_tRNS (png, info, trns, ntrns, NULL);
    png_write_info (png, info);
    size_t rowbytes = png_get_rowbytes (png, info);
    png_bytep *rp = malloc (h * sizeof *rp);
    for (uint32_t y = 0; y < h; y++)
        rp[y] = (png_bytep)rows + rowbytes * y;
    png_write_image (png, rp);
    png_write_end (png, NULL);
    png_destroy_write_struct (&png, &info);
    free (rp);
    return b;
}

/* Decode a base64 PNG with libpng's simplified reader into RGBA. */
static uint8_t *
s_decode_rgba (const char *b64, uint32_t *w, uint32_t *h, bool *has_alpha)
{
    s_buf_t b = s_unb64 (b64);
    png_image img;
    memset (&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    uint8_t *px = NULL;
    if (png_image_begin_read_from_memory (&img, b.data, b.len)) {
        *has_alpha = (img.format & PNG_FORMAT_FLAG_ALPHA) != 0;
        img.format = PNG_FORMAT_RGBA;
        px = malloc (PNG_IMAGE_SIZE (img));
        if (!png_image_finish_read (&img, NULL, px, 0, NULL)) {
            free (px);
            px = NULL;
        }
        *w = img.width;
        *h = img.height;
    }
    png_image_free (&img);
    free (b.data);
    return px;
}

static uint32_t
s_crc (const uint8_t *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xEDB88320u & -(c & 1));
    }
    return c ^ 0xFFFFFFFFu;
}

static void
s_put32 (uint8_t *p, uint32_t v)
{
    p[0] = v >> 24, p[1] = v >> 16, p[2] = v >> 8, p[3] = v;
}

static uint32_t
s_get32 (const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3];
}

/* Offset of the first chunk of the given type, or 0. */
static size_t
s_find_chunk (const s_buf_t *b, const char *type)
{
    for (size_t pos = 8; pos + 12 <= b->len; pos += 12 + s_get32 (b->data + pos))
        if (memcmp (b->data + pos + 4, type, 4) == 0)
            return pos;
    return 0;
}

/* Run mime_png_process on raw PNG bytes. */
static int
s_process (const uint8_t *png, size_t len, int64_t max_pixels, int max_side, mime_image_t *out,
           err_t *err)
{
    char *b64 = s_b64 (png, len);
    mime_image_opts_t opts = { .max_pixels = max_pixels, .max_side = max_side };
    err_clear (err);
    int rc = mime_png_process (b64, strlen (b64), &opts, out, err);
    free (b64);
    return rc;
}

static bool
s_fails_with (const uint8_t *png, size_t len, const char *code, const char *needle)
{
    mime_image_t out;
    err_t err;
    int rc = s_process (png, len, 0, 0, &out, &err);
    bool good = rc < 0 && err.status == 422 && strcmp (err.code, code) == 0
                && (!needle || strstr (err.message, needle)) && !out.base64;
    if (!good)
        printf ("# rc %d status %d code %s message %s\n", rc, err.status, err.code, err.message);
    return good;
}

static uint8_t *
s_fill_rgb (uint32_t w, uint32_t h, uint8_t r, uint8_t g, uint8_t b)
{
    uint8_t *px = malloc ((size_t)w * h * 3);
    for (size_t i = 0; i < (size_t)w * h; i++)
        px[3 * i] = r, px[3 * i + 1] = g, px[3 * i + 2] = b;
    return px;
}

static void
test_no_resize (void)
{
    uint8_t *px = s_fill_rgb (64, 48, 10, 20, 30);
    s_buf_t p = s_png_simple (64, 48, PNG_FORMAT_RGB, px);
    mime_image_t out;
    err_t err;
    ok (s_process (p.data, p.len, 0, 0, &out, &err) == 0, "RGB PNG without limits: %s",
        err.message);
    ok (out.width == 64 && out.height == 48 && out.original_width == 64 && out.original_height == 48
            && !out.resized && !out.base64,
        "dimensions reported, nothing resized");
    ok (s_process (p.data, p.len, 64 * 48, 64, &out, &err) == 0 && !out.resized && !out.base64,
        "limits exactly met: no resize");

    /* NULL opts, and base64 broken into 76-column lines as Jupyter sends. */
    char *b64 = s_b64 (p.data, p.len);
    size_t n = strlen (b64);
    char *wrapped = malloc (n + n / 76 * 2 + 8);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (i && i % 76 == 0)
            wrapped[k++] = '\r', wrapped[k++] = '\n';
        wrapped[k++] = b64[i];
    }
    wrapped[k++] = '\n';
    ok (mime_png_process (wrapped, k, NULL, &out, &err) == 0 && out.width == 64,
        "line-wrapped base64 and NULL opts accepted");
    free (wrapped);
    free (b64);
    free (p.data);
    free (px);

    /* Grey, grey+alpha, RGBA through the simplified writer. */
    uint8_t g[40 * 30 * 4];
    for (size_t i = 0; i < sizeof g; i++)
        g[i] = (uint8_t)(i * 7);
    const struct {
        uint32_t format;
        const char *name;
    } fmts[] = { { PNG_FORMAT_GRAY, "grey" },
                 { PNG_FORMAT_GA, "grey+alpha" },
                 { PNG_FORMAT_RGBA, "RGBA" } };
    for (size_t i = 0; i < sizeof fmts / sizeof fmts[0]; i++) {
        p = s_png_simple (40, 30, fmts[i].format, g);
        ok (s_process (p.data, p.len, 0, 0, &out, &err) == 0 && out.width == 40 && out.height == 30,
            "%s PNG verified", fmts[i].name);
        free (p.data);
    }
}

static void
test_classic_formats (void)
{
    mime_image_t out;
    err_t err;
    uint32_t w = 300, h = 200;

    /* 4-bit palette with a transparent entry: left half transparent. */
    png_color pal[2] = { { 255, 0, 0 }, { 0, 0, 255 } };
    uint8_t trns[2] = { 0, 255 };
    uint8_t *rows = calloc ((w + 1) / 2 * h, 1);
    for (uint32_t y = 0; y < h; y++)
        for (uint32_t x = w / 2; x < w; x++)
            rows[y * ((w + 1) / 2) + x / 2] |= (x & 1) ? 0x01 : 0x10;
    s_buf_t p = s_png_classic (w, h, 4, PNG_COLOR_TYPE_PALETTE, PNG_INTERLACE_NONE, rows, pal, 2,
                               trns, 2);
    ok (s_process (p.data, p.len, 0, 0, &out, &err) == 0 && out.width == 300, "palette PNG: %s",
        err.message);
    ok (s_process (p.data, p.len, 0, 60, &out, &err) == 0 && out.resized && out.width == 60
            && out.height == 40,
        "palette+tRNS PNG downscaled to 60x40");
    uint32_t ow, oh;
    bool alpha = false;
    uint8_t *d = out.base64 ? s_decode_rgba (out.base64, &ow, &oh, &alpha) : NULL;
    ok (d && alpha && d[3] == 0 && d[(59 + 39 * 60) * 4 + 2] == 255
            && d[(59 + 39 * 60) * 4 + 3] == 255,
        "tRNS became alpha: transparent left, opaque blue right");
    free (d);
    mime_image_clear (&out);
    free (rows);
    free (p.data);

    /* 16-bit RGBA, solid: scaled to 8 bits with rounding. */
    uint8_t *r16 = malloc ((size_t)w * h * 8);
    for (size_t i = 0; i < (size_t)w * h; i++) {
        static const uint16_t v[4] = { 0x1234, 0x8080, 0xFEFF, 0xFFFF };
        for (int c = 0; c < 4; c++)
            r16[i * 8 + c * 2] = v[c] >> 8, r16[i * 8 + c * 2 + 1] = v[c] & 0xFF;
    }
    p = s_png_classic (w, h, 16, PNG_COLOR_TYPE_RGB_ALPHA, PNG_INTERLACE_NONE, r16, NULL, 0, NULL,
                       0);
    ok (s_process (p.data, p.len, 0, 100, &out, &err) == 0 && out.width == 100 && out.height == 67,
        "16-bit RGBA PNG downscaled to 100x67: %s", err.message);
    d = out.base64 ? s_decode_rgba (out.base64, &ow, &oh, &alpha) : NULL;
    ok (d && d[0] == 0x12 && d[1] == 0x80 && d[2] == 0xFE && d[3] == 0xFF,
        "16-bit samples scaled to 8 bits (%d %d %d %d)", d ? d[0] : -1, d ? d[1] : -1,
        d ? d[2] : -1, d ? d[3] : -1);
    free (d);
    mime_image_clear (&out);
    free (r16);
    free (p.data);

    /* Adam7-interlaced RGB gradient: verified, and downscaled like the
       same image not interlaced. */
    uint8_t *grad = malloc ((size_t)w * h * 3);
    for (uint32_t y = 0; y < h; y++)
        for (uint32_t x = 0; x < w; x++) {
            uint8_t *q = grad + ((size_t)y * w + x) * 3;
            q[0] = (uint8_t)(x * 255 / (w - 1)), q[1] = (uint8_t)(y * 255 / (h - 1)),
            q[2] = (uint8_t)(x ^ y);
        }
    s_buf_t pi
        = s_png_classic (w, h, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_ADAM7, grad, NULL, 0, NULL, 0);
    s_buf_t pn
        = s_png_classic (w, h, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, grad, NULL, 0, NULL, 0);
    ok (s_process (pi.data, pi.len, 0, 0, &out, &err) == 0 && out.width == 300,
        "interlaced PNG verified");
    mime_image_t out2;
    ok (s_process (pi.data, pi.len, 0, 97, &out, &err) == 0
            && s_process (pn.data, pn.len, 0, 97, &out2, &err) == 0,
        "interlaced and plain PNGs downscaled");
    uint32_t w2, h2;
    uint8_t *d1 = s_decode_rgba (out.base64, &ow, &oh, &alpha);
    uint8_t *d2 = s_decode_rgba (out2.base64, &w2, &h2, &alpha);
    ok (d1 && d2 && ow == 97 && oh == 65 && w2 == 97 && h2 == 65 && !alpha
            && memcmp (d1, d2, (size_t)ow * oh * 4) == 0,
        "interlaced and plain give identical pixels, RGB output");
    free (d1);
    free (d2);
    mime_image_clear (&out);
    mime_image_clear (&out2);
    for (size_t cut = 8; cut < pi.len; cut += pi.len / 7)
        ok (s_fails_with (pi.data, cut, "invalid_image", NULL), "interlaced PNG cut at %zu fails",
            cut);
    free (pi.data);
    free (pn.data);
    free (grad);
}

/* The area-average reference in doubles: each output pixel is the mean of
   the source area it covers, colours weighted by alpha. */
static void
s_reference (const uint8_t *src, uint32_t sw, uint32_t sh, int ch, uint32_t dw, uint32_t dh,
             double *ref)
{
    double fx = (double)sw / dw, fy = (double)sh / dh;
    for (uint32_t oy = 0; oy < dh; oy++)
        for (uint32_t ox = 0; ox < dw; ox++) {
            double sum[4] = { 0 }, wsum = 0;
            for (uint32_t y = 0; y < sh; y++) {
                double wy = fmin (y + 1, (oy + 1) * fy) - fmax (y, oy * fy);
                if (wy <= 0)
                    continue;
                for (uint32_t x = 0; x < sw; x++) {
                    double wx = fmin (x + 1, (ox + 1) * fx) - fmax (x, ox * fx);
                    if (wx <= 0)
                        continue;
                    const uint8_t *p = src + ((size_t)y * sw + x) * ch;
                    double a = ch == 4 ? p[3] : 1, wt = wx * wy;
                    for (int c = 0; c < 3; c++)
                        sum[c] += p[c] * a * wt;
                    sum[3] += a * wt;
                    wsum += wt;
                }
            }
            double *r = ref + ((size_t)oy * dw + ox) * 4;
            for (int c = 0; c < 3; c++)
                r[c] = sum[3] > 0 ? sum[c] / sum[3] : 0;
            r[3] = ch == 4 ? sum[3] / wsum : 255;
        }
}

static void
test_box_filter (void)
{
    /* Pseudo-random pixels against the reference, RGB and RGBA, at
       awkward ratios. */
    uint32_t sw = 137, sh = 91;
    uint8_t *src = malloc ((size_t)sw * sh * 4);
    uint32_t seed = 12345;
    for (size_t i = 0; i < (size_t)sw * sh * 4; i++) {
        seed = seed * 1103515245 + 12345;
        src[i] = (uint8_t)(seed >> 16);
    }
    for (size_t i = 3; i < (size_t)sw * sh * 4; i += 40)
        src[i] = 0; /* some fully transparent pixels */
    const int sides[] = { 50, 13, 1 };
    for (int ch = 3; ch <= 4; ch++) {
        s_buf_t p = s_png_simple (sw, sh, ch == 4 ? PNG_FORMAT_RGBA : PNG_FORMAT_RGB, src);
        for (size_t k = 0; k < sizeof sides / sizeof sides[0]; k++) {
            mime_image_t out;
            err_t err;
            int rc = s_process (p.data, p.len, 0, sides[k], &out, &err);
            uint32_t dw = sides[k], dh = (uint32_t)lround ((double)sh * sides[k] / sw);
            dh = dh ? dh : 1;
            uint32_t ow = 0, oh = 0;
            bool alpha = false;
            uint8_t *d = rc == 0 ? s_decode_rgba (out.base64, &ow, &oh, &alpha) : NULL;
            double *ref = malloc ((size_t)dw * dh * 4 * sizeof *ref);
            s_reference (src, sw, sh, ch, dw, dh, ref);
            double worst = 0;
            for (size_t i = 0; d && ow == dw && oh == dh && i < (size_t)dw * dh * 4; i++) {
                /* Colour under (near-)zero alpha is unconstrained. */
                if (ch == 4 && i % 4 != 3 && ref[i - i % 4 + 3] < 1)
                    continue;
                worst = fmax (worst, fabs (d[i] - ref[i]));
            }
            ok (d && ow == dw && oh == dh && alpha == (ch == 4) && worst <= 1.0,
                "%s %ux%u -> %ux%u matches the area-average reference (worst %.2f)",
                ch == 4 ? "RGBA" : "RGB", sw, sh, dw, dh, worst);
            free (ref);
            free (d);
            mime_image_clear (&out);
        }
        free (p.data);
    }
    free (src);
}

static void
test_large (void)
{
    const uint32_t w = 4000, h = 3000;
    mime_image_t out;
    err_t err;
    uint32_t ow, oh;
    bool alpha;

    /* Gradients with some noise, for timing: photo-like, not trivially
       compressible. */
    uint8_t *px = malloc ((size_t)w * h * 3);
    uint32_t seed = 1;
    for (uint32_t y = 0; y < h; y++)
        for (uint32_t x = 0; x < w; x++) {
            uint8_t *q = px + ((size_t)y * w + x) * 3;
            seed = seed * 1103515245 + 12345;
            q[0] = (uint8_t)(x * 255 / (w - 1));
            q[1] = (uint8_t)(y * 255 / (h - 1));
            q[2] = (uint8_t)((x + y) / 28 + (seed >> 28));
        }
    s_buf_t p
        = s_png_classic (w, h, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, px, NULL, 0, NULL, 0);
    char *b64 = s_b64 (p.data, p.len);
    mime_image_opts_t opts = { .max_side = 1024 };
    int64_t t0 = util_mono_us ();
    int rc = mime_png_process (b64, strlen (b64), &opts, &out, &err);
    int64_t t1 = util_mono_us ();
    printf ("# 4000x3000 RGB (%zu bytes of base64) -> 1024x768: %.1f ms\n", strlen (b64),
            (t1 - t0) / 1000.0);
    ok (rc == 0 && out.resized && out.width == 1024 && out.height == 768
            && out.original_width == 4000 && out.original_height == 3000 && out.base64,
        "4000x3000 with max_side 1024 -> 1024x768, original reported");
    uint8_t *d = rc == 0 ? s_decode_rgba (out.base64, &ow, &oh, &alpha) : NULL;
    ok (d && ow == 1024 && oh == 768 && !alpha, "re-encoded PNG decodes to 1024x768 RGB");
    /* Red runs left to right and green top to bottom: corners stay put. */
    ok (d && d[0] < 3 && d[1] < 3 && d[(1023) * 4] > 252 && d[(767 * 1024) * 4 + 1] > 252,
        "gradient corners preserved");
    free (d);
    mime_image_clear (&out);
    free (b64);
    free (p.data);

    /* Solid colour survives exactly. */
    for (size_t i = 0; i < (size_t)w * h; i++)
        px[3 * i] = 12, px[3 * i + 1] = 200, px[3 * i + 2] = 99;
    p = s_png_classic (w, h, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, px, NULL, 0, NULL, 0);
    ok (s_process (p.data, p.len, 0, 1024, &out, &err) == 0 && out.width == 1024
            && out.height == 768,
        "solid 4000x3000 downscaled");
    d = out.base64 ? s_decode_rgba (out.base64, &ow, &oh, &alpha) : NULL;
    bool same = d != NULL;
    for (size_t i = 0; same && i < (size_t)ow * oh; i++)
        same = d[4 * i] == 12 && d[4 * i + 1] == 200 && d[4 * i + 2] == 99 && d[4 * i + 3] == 255;
    ok (same, "every pixel keeps the colour (12, 200, 99)");
    free (d);
    mime_image_clear (&out);

    /* The pixel limit, alone and with the side limit. */
    ok (s_process (p.data, p.len, 1000000, 0, &out, &err) == 0 && out.resized
            && (int64_t)out.width * out.height <= 1000000
            && abs (out.width - (int)lround (4000 * sqrt (1e6 / 12e6))) <= 1
            && abs (out.height - (int)lround (3000 * sqrt (1e6 / 12e6))) <= 1,
        "max_pixels 1000000 -> %dx%d (%lld pixels)", out.width, out.height,
        (long long)out.width * out.height);
    mime_image_clear (&out);
    ok (s_process (p.data, p.len, 100000, 500, &out, &err) == 0 && out.width <= 500
            && out.height <= 500 && (int64_t)out.width * out.height <= 100000
            && fabs ((double)out.width / out.height - 4.0 / 3) < 0.01,
        "max_pixels 100000 and max_side 500 -> %dx%d", out.width, out.height);
    mime_image_clear (&out);
    free (p.data);

    /* Half black, half white, with the edge inside an output column:
       source x < 2005 is black; output column 513 covers source
       [2003.906, 2007.813), 2.8125 of its 3.90625 columns white. */
    for (uint32_t y = 0; y < h; y++)
        for (uint32_t x = 0; x < w; x++)
            memset (px + ((size_t)y * w + x) * 3, x < 2005 ? 0 : 255, 3);
    p = s_png_classic (w, h, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, px, NULL, 0, NULL, 0);
    ok (s_process (p.data, p.len, 0, 1024, &out, &err) == 0, "black/white image downscaled");
    d = out.base64 ? s_decode_rgba (out.base64, &ow, &oh, &alpha) : NULL;
    bool edge = d && ow == 1024 && oh == 768;
    int expect = (int)lround (255 * 2.8125 / 3.90625);
    for (uint32_t y = 0; edge && y < oh; y++)
        for (uint32_t x = 0; edge && x < ow; x++) {
            const uint8_t *q = d + ((size_t)y * ow + x) * 4;
            int want = x < 513 ? 0 : x > 513 ? 255 : expect;
            edge = q[0] == want && q[1] == want && q[2] == want;
        }
    ok (edge, "black stays black, white stays white, the edge column is %d grey", expect);
    free (d);
    mime_image_clear (&out);
    free (p.data);
    free (px);

    /* Transparent red beside opaque blue: the edge pixel is blue at half
       alpha, no red bleeds in (premultiplied averaging). */
    uint8_t *rgba = malloc (40 * 10 * 4);
    for (uint32_t y = 0; y < 10; y++)
        for (uint32_t x = 0; x < 40; x++) {
            uint8_t *q = rgba + (y * 40 + x) * 4;
            q[0] = x < 20 ? 255 : 0, q[1] = 0, q[2] = x < 20 ? 0 : 255, q[3] = x < 20 ? 0 : 255;
        }
    p = s_png_simple (40, 10, PNG_FORMAT_RGBA, rgba);
    ok (s_process (p.data, p.len, 0, 4, &out, &err) == 0 && out.width == 4 && out.height == 1,
        "RGBA 40x10 -> 4x1");
    d = out.base64 ? s_decode_rgba (out.base64, &ow, &oh, &alpha) : NULL;
    ok (d && alpha && d[3] == 0 && d[7] == 0 && d[8] == 0 && d[10] == 255 && d[11] == 255,
        "RGBA kept, no bleeding");
    free (d);
    mime_image_clear (&out);
    ok (s_process (p.data, p.len, 0, 8, &out, &err) == 0 && out.width == 8 && out.height == 2,
        "RGBA 40x10 -> 8x2");
    mime_image_clear (&out);
    free (p.data);
    for (uint32_t y = 0; y < 10; y++)
        for (uint32_t x = 0; x < 40; x++)
            rgba[(y * 40 + x) * 4 + 3] = x < 18 ? 0 : 255;
    p = s_png_simple (40, 10, PNG_FORMAT_RGBA, rgba);
    ok (s_process (p.data, p.len, 0, 4, &out, &err) == 0, "RGBA with the edge mid-pixel");
    d = out.base64 ? s_decode_rgba (out.base64, &ow, &oh, &alpha) : NULL;
    /* Output pixel 1 covers x 10..19: 18, 19 are visible red. */
    ok (d && d[4] == 255 && d[6] == 0 && d[7] == 51, "edge pixel: red at alpha 51 (%d,%d,%d,%d)",
        d ? d[4] : -1, d ? d[5] : -1, d ? d[6] : -1, d ? d[7] : -1);
    free (d);
    mime_image_clear (&out);
    free (p.data);
    free (rgba);
}

static void
test_aspect (void)
{
    mime_image_t out;
    err_t err;
    struct {
        uint32_t w, h;
        int64_t max_pixels;
        int max_side;
        int ew, eh;
    } cases[] = {
        { 300, 4000, 0, 1000, 75, 1000 }, /* tall */
        { 301, 4000, 0, 1000, 75, 1000 }, /* 75.25 rounds down */
        { 303, 4000, 0, 1000, 76, 1000 }, /* 75.75 rounds up */
        { 20000, 1, 100, 0, 100, 1 },     /* thin: a side of at least 1 */
        { 1, 3000, 0, 10, 1, 10 },        /* thin and tall */
        { 2000, 3, 0, 1, 1, 1 },          /* max_side 1 */
        { 1000, 1000, 1, 0, 1, 1 },       /* max_pixels 1 */
        { 5000, 20, 1000, 0, 500, 2 },    /* exactly at the area */
        { 640, 480, 0, 639, 639, 479 },   /* just over */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t *px = s_fill_rgb (cases[i].w, cases[i].h, 1, 2, 3);
        s_buf_t p = s_png_simple (cases[i].w, cases[i].h, PNG_FORMAT_RGB, px);
        int rc = s_process (p.data, p.len, cases[i].max_pixels, cases[i].max_side, &out, &err);
        uint32_t ow = 0, oh = 0;
        bool alpha;
        uint8_t *d = rc == 0 ? s_decode_rgba (out.base64, &ow, &oh, &alpha) : NULL;
        ok (rc == 0 && out.resized && out.width == cases[i].ew && out.height == cases[i].eh && d
                && (int)ow == cases[i].ew && (int)oh == cases[i].eh && d[0] == 1 && d[1] == 2
                && d[2] == 3,
            "%ux%u, max_pixels %lld, max_side %d -> %dx%d (got %dx%d)", cases[i].w, cases[i].h,
            (long long)cases[i].max_pixels, cases[i].max_side, cases[i].ew, cases[i].eh, out.width,
            out.height);
        free (d);
        mime_image_clear (&out);
        free (p.data);
        free (px);
    }
}

static void
test_corrupt (void)
{
    mime_image_t out;
    err_t err;
    ok (mime_png_process ("!!!!", 4, NULL, &out, &err) < 0 && err.status == 422
            && strcmp (err.code, "invalid_image") == 0 && strstr (err.message, "base64"),
        "bad base64 refused: %s", err.message);
    ok (mime_png_process ("aGVsbG8", 7, NULL, &out, &err) < 0 && strstr (err.message, "base64"),
        "unpadded base64 refused");
    ok (mime_png_process ("", 0, NULL, &out, &err) < 0 && err.status == 422, "empty refused");
    ok (mime_png_process (NULL, 0, NULL, &out, &err) < 0 && err.status == 422, "NULL refused");
    ok (mime_png_process ("aGVsbG8gd29ybGQh", 16, NULL, &out, &err) < 0
            && strstr (err.message, "not a PNG"),
        "not a PNG: %s", err.message);
    ok (mime_jpeg_info (s_jpeg_3x2, strlen (s_jpeg_3x2), NULL, NULL, &err) == 0
            && mime_png_process (s_jpeg_3x2, strlen (s_jpeg_3x2), NULL, &out, &err) < 0
            && strstr (err.message, "not a PNG"),
        "a JPEG is not a PNG");
    mime_image_opts_t neg = { .max_side = -1 };
    ok (mime_png_process ("", 0, &neg, &out, &err) < 0 && err.status == 400, "negative limit: 400");

    /* Over 64 MiB of base64 is refused before decoding. */
    size_t big = MIME_MAX_BASE64_BYTES + 4;
    char *huge = malloc (big);
    memset (huge, 'A', big);
    ok (mime_png_process (huge, big, NULL, &out, &err) < 0
            && strcmp (err.code, "image_too_large") == 0,
        "%zu bytes of base64 refused: %s", big, err.message);
    ok (mime_jpeg_info (huge, big, NULL, NULL, &err) < 0
            && strcmp (err.code, "image_too_large") == 0,
        "and for JPEG");
    free (huge);

    uint8_t *px = malloc (200 * 150 * 3);
    for (size_t i = 0; i < 200 * 150 * 3; i++)
        px[i] = (uint8_t)(i * 31 + i / 600);
    s_buf_t p = s_png_simple (200, 150, PNG_FORMAT_RGB, px);
    free (px);
    ok (s_process (p.data, p.len, 0, 0, &out, &err) == 0, "the sample PNG is good (%zu bytes)",
        p.len);
    size_t ihdr = s_find_chunk (&p, "IHDR"), idat = s_find_chunk (&p, "IDAT"),
           iend = s_find_chunk (&p, "IEND");
    uint32_t idat_len = s_get32 (p.data + idat);
    ok (ihdr == 8 && idat > ihdr && iend > idat && iend + 12 == p.len, "chunks found");

    ok (s_fails_with (p.data, 8, "invalid_image", NULL), "signature only");
    ok (s_fails_with (p.data, 33, "invalid_image", NULL), "signature and IHDR only");
    ok (s_fails_with (p.data, idat + 8 + idat_len / 2, "invalid_image", NULL), "cut mid-IDAT");
    ok (s_fails_with (p.data, idat + 8 + idat_len, "invalid_image", NULL), "cut before IDAT's CRC");
    ok (s_fails_with (p.data, iend, "invalid_image", NULL), "IEND missing");
    ok (s_fails_with (p.data, p.len - 1, "invalid_image", NULL), "IEND's CRC cut");
    bool all = true;
    for (size_t cut = 0; cut < p.len; cut += 1 + cut / 16) {
        mime_image_t o;
        all = all && s_process (p.data, cut, 0, 50, &o, &err) < 0 && !o.base64;
    }
    ok (all, "every prefix fails, also when a resize was asked for");

    uint8_t *bad = malloc (p.len);
    memcpy (bad, p.data, p.len);
    bad[idat + 8 + idat_len + 3] ^= 0x01;
    ok (s_fails_with (bad, p.len, "invalid_image", "CRC"), "flipped IDAT CRC byte");
    memcpy (bad, p.data, p.len);
    bad[ihdr + 8 + 13] ^= 0x80;
    ok (s_fails_with (bad, p.len, "invalid_image", "CRC"), "flipped IHDR CRC byte");
    memcpy (bad, p.data, p.len);
    bad[p.len - 1] ^= 0x01;
    ok (s_fails_with (bad, p.len, "invalid_image", "CRC"), "flipped IEND CRC byte");

    /* Damage the compressed data but fix the CRC: zlib must catch it. */
    memcpy (bad, p.data, p.len);
    bad[idat + 8 + idat_len / 2] ^= 0x55;
    s_put32 (bad + idat + 8 + idat_len, s_crc (bad + idat + 4, 4 + idat_len));
    ok (s_fails_with (bad, p.len, "invalid_image", NULL), "damaged deflate data, CRC fixed");
    memcpy (bad, p.data, p.len);
    bad[idat + 8 + idat_len - 1] ^= 0x01; /* the Adler-32 */
    s_put32 (bad + idat + 8 + idat_len, s_crc (bad + idat + 4, 4 + idat_len));
    ok (s_fails_with (bad, p.len, "invalid_image", NULL), "bad Adler-32, CRC fixed");

    /* Absurd sizes in a valid IHDR: refused on the header, before the
       (much too short) image data would be read. */
    const uint32_t dims[][2] = { { 100000, 100000 }, { 20000, 20000 }, { 70000, 10 },
                                 { 10, 65536 },      { 2000000, 1 },   { 1, 0x7fffffff } };
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++) {
        memcpy (bad, p.data, p.len);
        s_put32 (bad + ihdr + 8, dims[i][0]);
        s_put32 (bad + ihdr + 12, dims[i][1]);
        s_put32 (bad + ihdr + 8 + 13, s_crc (bad + ihdr + 4, 4 + 13));
        ok (s_fails_with (bad, p.len, "image_too_large", "more than the limit"),
            "%ux%u refused on its header", dims[i][0], dims[i][1]);
    }
    memcpy (bad, p.data, p.len);
    s_put32 (bad + ihdr + 8, 0);
    s_put32 (bad + ihdr + 8 + 13, s_crc (bad + ihdr + 4, 4 + 13));
    ok (s_fails_with (bad, p.len, "invalid_image", NULL), "zero width refused");
    /* A bigger (but allowed) IHDR over the same data runs out of data. */
    memcpy (bad, p.data, p.len);
    s_put32 (bad + ihdr + 12, 151);
    s_put32 (bad + ihdr + 8 + 13, s_crc (bad + ihdr + 4, 4 + 13));
    ok (s_fails_with (bad, p.len, "invalid_image", NULL), "IHDR one row taller than the data");
    free (bad);
    free (p.data);

    mime_image_clear (NULL);
    mime_image_clear (&out);
    ok (out.base64 == NULL, "mime_image_clear is safe on NULL and twice");
}

static void
test_jpeg (void)
{
    err_t err;
    int w = -1, h = -1;
    ok (mime_jpeg_info (s_jpeg_3x2, strlen (s_jpeg_3x2), &w, &h, &err) == 0 && w == 3 && h == 2,
        "baseline JPEG: %dx%d", w, h);
    w = h = -1;
    ok (mime_jpeg_info (s_jpeg_17x9_progressive, strlen (s_jpeg_17x9_progressive), &w, &h, &err)
                == 0
            && w == 17 && h == 9,
        "progressive JPEG: %dx%d", w, h);

    s_buf_t j = s_unb64 (s_jpeg_3x2);
    bool all = true;
    for (size_t cut = 0; cut < j.len; cut++) {
        char *b = s_b64 (j.data, cut);
        all = all && mime_jpeg_info (b, strlen (b), &w, &h, &err) < 0 && err.status == 422;
        free (b);
    }
    ok (all, "every one of %zu prefixes fails", j.len);
    s_buf_t p = s_unb64 (s_jpeg_17x9_progressive);
    all = true;
    for (size_t cut = 0; cut < p.len; cut++) {
        char *b = s_b64 (p.data, cut);
        all = all && mime_jpeg_info (b, strlen (b), &w, &h, &err) < 0;
        free (b);
    }
    ok (all, "and of the progressive one");
    free (p.data);

    uint8_t *m = malloc (j.len + 16);
    memcpy (m, j.data, j.len);
    memset (m + j.len, 0, 16);
    char *b = s_b64 (m, j.len + 16);
    ok (mime_jpeg_info (b, strlen (b), &w, &h, &err) == 0 && w == 3, "bytes after EOI are ignored");
    free (b);

    /* Locate the SOF0 to damage it. */
    size_t sof = 0;
    for (size_t i = 2; i + 1 < j.len; i++)
        if (j.data[i] == 0xFF && j.data[i + 1] == 0xC0) {
            sof = i;
            break;
        }
    ok (sof > 0, "SOF0 at %zu", sof);
    const struct {
        size_t off;
        uint8_t val;
        const char *what;
    } damage[] = {
        { 0, 0x00, "no SOI" },
        { 2, 0x00, "no marker after SOI" },
        { 4, 0xFF, "segment length overruns the file" },
        { 4, 0x00, "segment length below 2" },
        { 0, 0, "SOF with zero width" }, /* filled in below */
        { 0, 0, "SOF with a wrong length" },
        { 0, 0, "SOF renamed to DHT: no frame before the scan" },
    };
    for (size_t i = 0; i < sizeof damage / sizeof damage[0]; i++) {
        memcpy (m, j.data, j.len);
        if (i == 4)
            m[sof + 7] = 0, m[sof + 8] = 0;
        else if (i == 5)
            m[sof + 3] = 9;
        else if (i == 6)
            m[sof + 1] = 0xC4;
        else if (i == 3)
            m[4] = 0, m[5] = 1;
        else
            m[damage[i].off] = damage[i].val;
        b = s_b64 (m, j.len);
        ok (mime_jpeg_info (b, strlen (b), &w, &h, &err) < 0 && err.status == 422
                && strcmp (err.code, "invalid_image") == 0,
            "%s: %s", damage[i].what, err.message);
        free (b);
    }
    /* A frame header claiming 65535x65535 is over the pixel limit. */
    memcpy (m, j.data, j.len);
    memset (m + sof + 5, 0xFF, 4);
    b = s_b64 (m, j.len);
    ok (mime_jpeg_info (b, strlen (b), &w, &h, &err) < 0
            && strcmp (err.code, "image_too_large") == 0,
        "65535x65535 JPEG refused");
    free (b);
    ok (mime_jpeg_info ("!!", 2, &w, &h, &err) < 0 && strstr (err.message, "base64"), "bad base64");
    free (m);
    free (j.data);
}

int
main (void)
{
    test_no_resize ();
    test_classic_formats ();
    test_box_filter ();
    test_large ();
    test_aspect ();
    test_corrupt ();
    test_jpeg ();
    return tap_done ();
}
