/* mime.c - verify and downscale images from kernel rich results: PNGs are
   decoded in full with libpng, JPEGs are checked by their marker structure. */
#include "mime.h"

#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Ancillary chunks that can be large or compressed and that nothing here
   needs; libpng skips them unread (their CRCs are still checked). */
static const png_byte s_skip_chunks[] = "iCCP\0iTXt\0tEXt\0zTXt\0sPLT\0eXIf\0";
#define S_SKIP_CHUNKS_N    6
#define S_CHUNK_MALLOC_MAX (8u * 1024 * 1024)

/* Decode base64 (whitespace ignored, padding required) into a malloc'd
   buffer that the caller frees. The size bound is checked before anything
   is allocated. */
static int
s_base64_decode (const char *b64, size_t len, uint8_t **out, size_t *out_len, err_t *err)
{
    *out = NULL;
    *out_len = 0;
    if (!b64)
        return err_set (err, 422, "invalid_image", "no image data");
    if (len > MIME_MAX_BASE64_BYTES)
        return err_set (err, 422, "image_too_large",
                        "image data is %zu bytes of base64, more than the limit of %d", len,
                        MIME_MAX_BASE64_BYTES);
    size_t cap = len / 4 * 3 + 3;
    uint8_t *bin = malloc (cap);
    if (!bin)
        return err_set (err, 500, "internal", "out of memory decoding base64");
    size_t n = 0;
    if (sodium_base642bin (bin, cap, b64, len, " \t\r\n", &n, NULL, sodium_base64_VARIANT_ORIGINAL)
        != 0) {
        free (bin);
        return err_set (err, 422, "invalid_image", "image data is not valid base64");
    }
    *out = bin;
    *out_len = n;
    return 0;
}

/* Box (area-average) downscaler fed one source row at a time, so a big
   image never needs a full-size pixel buffer. Source column x covers
   [x*dw, (x+1)*dw) and output column ox covers [ox*sw, (ox+1)*sw) in the
   same integer units (rows likewise), so the weights are exact overlaps and
   every output pixel's weights sum to sw*sh. Because dw <= sw a source
   column touches at most two output columns (rows likewise).

   With alpha, colours are averaged premultiplied (weighted by alpha) and
   then divided by the summed alpha, so invisible pixels lend no colour to
   their neighbours; alpha itself is a plain average. Values are averaged as
   stored (sRGB-encoded), as most thumbnailers do, not in linear light. */
typedef struct {
    uint32_t sw, sh, dw, dh;
    int ch;           /* 3 (RGB) or 4 (RGBA) */
    uint32_t *col_ox; /* per source column: first output column it touches */
    uint32_t *col_w0; /* its weight there; dw - col_w0 goes to col_ox + 1 */
    uint64_t *hrow;   /* dw * ch horizontal sums of the current source row */
    uint64_t *acc[2]; /* dw * ch sums of output rows oy and oy + 1 */
    uint32_t y, oy;   /* next source row, output row being accumulated */
    uint8_t *pixels;  /* dw * dh * ch, the result */
} s_scaler_t;

static void
s_scaler_free (s_scaler_t *sc)
{
    free (sc->col_ox);
    free (sc->col_w0);
    free (sc->hrow);
    free (sc->acc[0]);
    free (sc->acc[1]);
    free (sc->pixels);
    memset (sc, 0, sizeof *sc);
}

static int
s_scaler_init (s_scaler_t *sc, uint32_t sw, uint32_t sh, int ch, uint32_t dw, uint32_t dh)
{
    memset (sc, 0, sizeof *sc);
    sc->sw = sw;
    sc->sh = sh;
    sc->dw = dw;
    sc->dh = dh;
    sc->ch = ch;
    size_t n = (size_t)dw * ch;
    sc->col_ox = malloc (sw * sizeof *sc->col_ox);
    sc->col_w0 = malloc (sw * sizeof *sc->col_w0);
    sc->hrow = malloc (n * sizeof *sc->hrow);
    sc->acc[0] = calloc (n, sizeof *sc->acc[0]);
    sc->acc[1] = calloc (n, sizeof *sc->acc[1]);
    sc->pixels = malloc (n * dh);
    if (!sc->col_ox || !sc->col_w0 || !sc->hrow || !sc->acc[0] || !sc->acc[1] || !sc->pixels) {
        s_scaler_free (sc);
        return -1;
    }
    for (uint32_t x = 0; x < sw; x++) {
        uint64_t start = (uint64_t)x * dw, end = start + dw;
        uint64_t ox = start / sw, boundary = (ox + 1) * sw;
        sc->col_ox[x] = (uint32_t)ox;
        sc->col_w0[x] = (uint32_t)((end < boundary ? end : boundary) - start);
    }
    return 0;
}

static void
s_scaler_emit (s_scaler_t *sc)
{
    const uint64_t total = (uint64_t)sc->sw * sc->sh;
    const uint64_t *a = sc->acc[0];
    uint8_t *o = sc->pixels + (size_t)sc->oy * sc->dw * sc->ch;
    if (sc->ch == 3) {
        for (size_t i = 0; i < (size_t)sc->dw * 3; i++)
            o[i] = (uint8_t)((a[i] + total / 2) / total);
        return;
    }
    for (uint32_t x = 0; x < sc->dw; x++, a += 4, o += 4) {
        uint64_t asum = a[3];
        o[3] = (uint8_t)((asum + total / 2) / total);
        for (int c = 0; c < 3; c++)
            o[c] = asum ? (uint8_t)((a[c] + asum / 2) / asum) : 0;
    }
}

static void
s_scaler_push (s_scaler_t *sc, const uint8_t *src)
{
    const uint32_t dw = sc->dw;
    const size_t n = (size_t)dw * sc->ch;
    uint64_t *h = sc->hrow;
    memset (h, 0, n * sizeof *h);
    if (sc->ch == 4) {
        for (uint32_t x = 0; x < sc->sw; x++, src += 4) {
            uint64_t a = src[3], r = src[0] * a, g = src[1] * a, b = src[2] * a;
            uint64_t w0 = sc->col_w0[x], w1 = dw - w0;
            uint64_t *p = h + (size_t)sc->col_ox[x] * 4;
            p[0] += r * w0, p[1] += g * w0, p[2] += b * w0, p[3] += a * w0;
            if (w1)
                p[4] += r * w1, p[5] += g * w1, p[6] += b * w1, p[7] += a * w1;
        }
    }
    else {
        for (uint32_t x = 0; x < sc->sw; x++, src += 3) {
            uint64_t w0 = sc->col_w0[x], w1 = dw - w0;
            uint64_t *p = h + (size_t)sc->col_ox[x] * 3;
            p[0] += src[0] * w0, p[1] += src[1] * w0, p[2] += src[2] * w0;
            if (w1)
                p[3] += src[0] * w1, p[4] += src[1] * w1, p[5] += src[2] * w1;
        }
    }

    uint64_t start = (uint64_t)sc->y * sc->dh, end = start + sc->dh;
    uint64_t oy = start / sc->sh, boundary = (oy + 1) * sc->sh;
    if (oy != sc->oy) {
        /* The row above is complete: no later source row reaches it. */
        s_scaler_emit (sc);
        uint64_t *t = sc->acc[0];
        sc->acc[0] = sc->acc[1];
        sc->acc[1] = t;
        memset (t, 0, n * sizeof *t);
        sc->oy++;
    }
    uint64_t w0 = (end < boundary ? end : boundary) - start, w1 = sc->dh - w0;
    uint64_t *a0 = sc->acc[0], *a1 = sc->acc[1];
    for (size_t i = 0; i < n; i++)
        a0[i] += h[i] * w0;
    if (w1)
        for (size_t i = 0; i < n; i++)
            a1[i] += h[i] * w1;
    if (++sc->y == sc->sh)
        s_scaler_emit (sc);
}

/* The output size for a w x h image: the aspect ratio kept (sides rounded
   to the nearest pixel), at least 1x1, and within both limits. Returns
   false when no limit asks for a resize. */
static bool
s_target_size (uint32_t w, uint32_t h, int64_t max_pixels, int max_side, uint32_t *tw, uint32_t *th)
{
    uint32_t longer = w > h ? w : h;
    bool side = max_side > 0 && longer > (uint32_t)max_side;
    bool area = max_pixels > 0 && (int64_t)w * h > max_pixels;
    if (!side && !area)
        return false;
    double s = 1.0;
    if (side)
        s = (double)max_side / longer;
    if (area)
        s = fmin (s, sqrt ((double)max_pixels / ((double)w * h)));
    int64_t a = llround (w * s), b = llround (h * s);
    a = a < 1 ? 1 : a > w ? w : a;
    b = b < 1 ? 1 : b > h ? h : b;
    if (side) {
        a = a > max_side ? max_side : a;
        b = b > max_side ? max_side : b;
    }
    /* Rounding both sides up can overshoot the area; so can the 1-pixel
       floor of a very thin image, which then cannot keep its aspect. */
    while (area && a * b > max_pixels) {
        if (a >= b && a > 1)
            a = max_pixels / b > 1 ? max_pixels / b : 1;
        else
            b = max_pixels / a > 1 ? max_pixels / a : 1;
    }
    *tw = (uint32_t)a;
    *th = (uint32_t)b;
    return true;
}

/* Everything one PNG decode owns, in one place: after a longjmp the
   setjmp function returns at once and the caller frees it all, so nothing
   the error path needs lives in that function's locals. */
typedef struct {
    png_structp png;
    png_infop info;
    const uint8_t *data;
    size_t len, pos;
    char msg[256]; /* libpng's error message */
    const mime_image_opts_t *opts;
    mime_image_t *out;
    err_t *err;
    int channels;      /* 3 or 4 after the transforms */
    uint8_t *row;      /* one source row */
    uint8_t *image;    /* the whole image: interlaced and resized only */
    png_bytep *rows;   /* row pointers into image */
    s_scaler_t scaler; /* when resizing */
} s_png_t;

static void
s_png_error (png_structp png, png_const_charp msg)
{
    s_png_t *d = png_get_error_ptr (png);
    snprintf (d->msg, sizeof d->msg, "%s", msg);
    png_longjmp (png, 1);
}

static void
s_png_warning (png_structp png, png_const_charp msg)
{
    /* Benign problems (a bad ancillary chunk, say) do not make an image
       unusable, and nobody here would read them. */
}

static void
s_png_read (png_structp png, png_bytep buf, size_t n)
{
    s_png_t *d = png_get_io_ptr (png);
    if (n > d->len - d->pos)
        png_error (png, "file is truncated");
    memcpy (buf, d->data + d->pos, n);
    d->pos += n;
}

/* Read the whole PNG (every row and every chunk through IEND, so a cut
   IDAT or a bad CRC fails), downscaling on the way when asked. */
static int
s_png_decode (s_png_t *d)
{
    if (setjmp (png_jmpbuf (d->png)))
        return err_set (d->err, 422, "invalid_image", "invalid PNG: %s", d->msg);

    png_read_info (d->png, d->info);
    png_uint_32 w = png_get_image_width (d->png, d->info);
    png_uint_32 h = png_get_image_height (d->png, d->info);
    if (w > MIME_MAX_IMAGE_SIDE || h > MIME_MAX_IMAGE_SIDE
        || (int64_t)w * h > MIME_MAX_IMAGE_PIXELS)
        return err_set (d->err, 422, "image_too_large",
                        "PNG is %ux%u pixels, more than the limit of %d per side and %lld in all",
                        (unsigned)w, (unsigned)h, MIME_MAX_IMAGE_SIDE,
                        (long long)MIME_MAX_IMAGE_PIXELS);
    d->out->width = d->out->original_width = (int)w;
    d->out->height = d->out->original_height = (int)h;

    /* Normalise to 8-bit RGB or RGBA: palette and low-depth grey expand,
       tRNS becomes alpha, 16-bit scales down with rounding. */
    png_set_expand (d->png);
    png_set_scale_16 (d->png);
    png_set_gray_to_rgb (d->png);
    int passes = png_set_interlace_handling (d->png);
    png_read_update_info (d->png, d->info);
    d->channels = png_get_channels (d->png, d->info);
    size_t rowbytes = png_get_rowbytes (d->png, d->info);
    if ((d->channels != 3 && d->channels != 4) || png_get_bit_depth (d->png, d->info) != 8
        || rowbytes != (size_t)w * d->channels)
        return err_set (d->err, 500, "internal", "unexpected PNG layout after transforms");

    uint32_t tw = w, th = h;
    bool resize = s_target_size (w, h, d->opts ? d->opts->max_pixels : 0,
                                 d->opts ? d->opts->max_side : 0, &tw, &th);
    if (resize && s_scaler_init (&d->scaler, w, h, d->channels, tw, th) < 0)
        return err_set (d->err, 500, "internal", "out of memory resizing a %ux%u PNG", (unsigned)w,
                        (unsigned)h);

    if (resize && passes > 1) {
        /* Adam7 spreads each row over seven passes: only here is the whole
           image held, and its size is bounded by MIME_MAX_IMAGE_PIXELS. */
        d->image = malloc (rowbytes * h);
        d->rows = malloc (h * sizeof *d->rows);
        if (!d->image || !d->rows)
            return err_set (d->err, 500, "internal", "out of memory decoding a %ux%u PNG",
                            (unsigned)w, (unsigned)h);
        for (png_uint_32 y = 0; y < h; y++)
            d->rows[y] = d->image + rowbytes * y;
        png_read_image (d->png, d->rows);
        for (png_uint_32 y = 0; y < h; y++)
            s_scaler_push (&d->scaler, d->rows[y]);
    }
    else {
        /* One row buffer: a non-interlaced image streams into the scaler,
           and without a resize the rows (of every pass) are decoded only
           to verify them. */
        d->row = malloc (rowbytes);
        if (!d->row)
            return err_set (d->err, 500, "internal", "out of memory decoding a PNG");
        for (int p = 0; p < passes; p++)
            for (png_uint_32 y = 0; y < h; y++) {
                png_read_row (d->png, d->row, NULL);
                if (resize)
                    s_scaler_push (&d->scaler, d->row);
            }
    }
    png_read_end (d->png, NULL);

    if (resize) {
        d->out->width = (int)tw;
        d->out->height = (int)th;
        d->out->resized = true;
    }
    return 0;
}

/* Encode the scaler's result as an 8-bit RGB/RGBA PNG in base64 into
   out->base64. */
static int
s_png_encode (const s_scaler_t *sc, mime_image_t *out, err_t *err)
{
    png_image img;
    memset (&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    img.width = sc->dw;
    img.height = sc->dh;
    img.format = sc->ch == 4 ? PNG_FORMAT_RGBA : PNG_FORMAT_RGB;
    /* The worst case is allocated so that the image is compressed once. */
    png_alloc_size_t size = PNG_IMAGE_PNG_SIZE_MAX (img);
    uint8_t *png cleanup_free = malloc (size);
    if (!png)
        return err_set (err, 500, "internal", "out of memory encoding a PNG");
    if (!png_image_write_to_memory (&img, png, &size, 0, sc->pixels, 0, NULL)) {
        err_set (err, 500, "internal", "encoding the resized PNG: %s", img.message);
        png_image_free (&img);
        return -1;
    }
    size_t b64len = sodium_base64_ENCODED_LEN (size, sodium_base64_VARIANT_ORIGINAL);
    out->base64 = malloc (b64len);
    if (!out->base64)
        return err_set (err, 500, "internal", "out of memory encoding base64");
    sodium_bin2base64 (out->base64, b64len, png, size, sodium_base64_VARIANT_ORIGINAL);
    return 0;
}

int
mime_png_process (const char *b64, size_t len, const mime_image_opts_t *opts, mime_image_t *out,
                  err_t *err)
{
    if (!out)
        return err_set (err, 500, "internal", "mime_png_process: no output");
    memset (out, 0, sizeof *out);
    if (opts && (opts->max_pixels < 0 || opts->max_side < 0))
        return err_set (err, 400, "invalid_field", "image size limits must not be negative");

    uint8_t *bin cleanup_free = NULL;
    size_t n = 0;
    if (s_base64_decode (b64, len, &bin, &n, err) < 0)
        return -1;
    if (n < 8 || png_sig_cmp (bin, 0, 8) != 0)
        return err_set (err, 422, "invalid_image", "not a PNG image");

    s_png_t d = { .data = bin, .len = n, .opts = opts, .out = out, .err = err };
    d.png = png_create_read_struct (PNG_LIBPNG_VER_STRING, &d, s_png_error, s_png_warning);
    if (d.png)
        d.info = png_create_info_struct (d.png);
    int rc;
    if (!d.png || !d.info) {
        rc = err_set (err, 500, "internal", "out of memory creating a PNG reader");
    }
    else {
        png_set_read_fn (d.png, &d, s_png_read);
        /* libpng's own default size limits would fail big images with a
           bare "Invalid IHDR data"; the check after the header says more. */
        png_set_user_limits (d.png, PNG_UINT_31_MAX, PNG_UINT_31_MAX);
        png_set_chunk_malloc_max (d.png, S_CHUNK_MALLOC_MAX);
        png_set_keep_unknown_chunks (d.png, PNG_HANDLE_CHUNK_NEVER, s_skip_chunks, S_SKIP_CHUNKS_N);
        rc = s_png_decode (&d);
        if (rc == 0 && out->resized)
            rc = s_png_encode (&d.scaler, out, err);
    }
    png_destroy_read_struct (&d.png, &d.info, NULL);
    free (d.row);
    free (d.image);
    free (d.rows);
    s_scaler_free (&d.scaler);
    if (rc < 0)
        mime_image_clear (out);
    return rc;
}

static bool
s_jpeg_is_sof (uint8_t m)
{
    /* C4 (DHT), C8 (JPG) and CC (DAC) share the range but are not frames. */
    return m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
}

static int
s_jpeg_bad (err_t *err, const char *why, size_t pos)
{
    return err_set (err, 422, "invalid_image", "invalid JPEG: %s at offset %zu", why, pos);
}

int
mime_jpeg_info (const char *b64, size_t len, int *width, int *height, err_t *err)
{
    uint8_t *d cleanup_free = NULL;
    size_t n = 0;
    if (s_base64_decode (b64, len, &d, &n, err) < 0)
        return -1;
    if (n < 4 || d[0] != 0xFF || d[1] != 0xD8)
        return err_set (err, 422, "invalid_image", "not a JPEG image");

    size_t pos = 2;
    int w = 0, h = 0;
    bool frame = false, scan = false;
    for (;;) {
        if (pos >= n)
            return s_jpeg_bad (err, "truncated before the EOI marker", pos);
        if (d[pos] != 0xFF)
            return s_jpeg_bad (err, "expected a marker", pos);
        while (pos < n && d[pos] == 0xFF) /* fill bytes may precede a marker */
            pos++;
        if (pos >= n)
            return s_jpeg_bad (err, "truncated in a marker", pos);
        uint8_t m = d[pos++];
        if (m == 0xD9) {
            if (!frame || !scan)
                return s_jpeg_bad (err, "EOI before any frame and scan", pos - 2);
            break;
        }
        if (m == 0x00 || m == 0xD8)
            return s_jpeg_bad (err, "unexpected marker", pos - 2);
        if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) /* TEM, RSTn: no length */
            continue;
        if (n - pos < 2)
            return s_jpeg_bad (err, "truncated in a segment length", pos);
        size_t seg = (size_t)d[pos] << 8 | d[pos + 1];
        if (seg < 2)
            return s_jpeg_bad (err, "segment length below 2", pos);
        if (seg > n - pos)
            return s_jpeg_bad (err, "truncated segment", pos);
        if (s_jpeg_is_sof (m) && !frame) {
            /* Lf, P, Y, X, Nf, then three bytes per component. */
            if (seg < 8 || d[pos + 7] == 0 || seg != 8 + 3 * (size_t)d[pos + 7])
                return s_jpeg_bad (err, "malformed frame header", pos);
            h = d[pos + 3] << 8 | d[pos + 4];
            w = d[pos + 5] << 8 | d[pos + 6];
            if (w == 0 || h == 0)
                return s_jpeg_bad (err, "zero width or height (DNL is not supported)", pos);
            frame = true;
        }
        pos += seg;
        if (m == 0xDA) {
            if (!frame)
                return s_jpeg_bad (err, "scan before the frame header", pos - seg - 2);
            scan = true;
            /* Entropy-coded data runs to the next marker other than a
               stuffed 0xFF00 or a restart marker. */
            for (;;) {
                const uint8_t *ff = memchr (d + pos, 0xFF, n - pos);
                if (!ff || (size_t)(ff - d) + 1 >= n)
                    return s_jpeg_bad (err, "truncated in scan data", n);
                pos = (size_t)(ff - d);
                uint8_t next = d[pos + 1];
                if (next == 0x00 || (next >= 0xD0 && next <= 0xD7))
                    pos += 2;
                else if (next == 0xFF)
                    pos += 1;
                else
                    break;
            }
        }
    }
    if ((int64_t)w * h > MIME_MAX_IMAGE_PIXELS)
        return err_set (err, 422, "image_too_large",
                        "JPEG is %dx%d pixels, more than the limit of %lld", w, h,
                        (long long)MIME_MAX_IMAGE_PIXELS);
    if (width)
        *width = w;
    if (height)
        *height = h;
    return 0;
}

void
mime_image_clear (mime_image_t *img)
{
    if (!img)
        return;
    free (img->base64);
    memset (img, 0, sizeof *img);
}
