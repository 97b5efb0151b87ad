/* jupyter.c - the Jupyter wire protocol: building, signing, parsing and verifying messages. */
#include "jupyter.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "jsonv.h"

#define DELIM       "<IDS|MSG>"
#define DELIM_LEN   (sizeof DELIM - 1)
#define MAC_LEN     crypto_auth_hmacsha256_BYTES
#define SIG_HEX_LEN (MAC_LEN * 2)
#define MAX_NAME    256 /* longest msg_id or msg_type we accept */

/* The most frames one message can have: ids, delimiter, signature, the four
   JSON parts and the buffers. */
#define MAX_FRAMES (JUPYTER_MAX_IDS + 6 + JUPYTER_MAX_BUFFERS)

static const char *s_part_names[4] = { "header", "parent_header", "metadata", "content" };

/* A malloc'd copy of len bytes; never NULL for len 0 unless out of memory. */
static void *
s_dup (const void *data, size_t len)
{
    void *copy = malloc (len ? len : 1);
    if (copy && len)
        memcpy (copy, data, len);
    return copy;
}

/* A random (version 4) UUID as 32 lowercase hex characters plus NUL. */
static void
s_uuid4_hex (char out[33])
{
    unsigned char raw[16];
    randombytes_buf (raw, sizeof raw);
    raw[6] = (unsigned char)((raw[6] & 0x0f) | 0x40);
    raw[8] = (unsigned char)((raw[8] & 0x3f) | 0x80);
    sodium_bin2hex (out, 33, raw, sizeof raw);
}

/* Now as ISO 8601 UTC with microseconds, the precision jupyter_client
   itself writes ("2026-11-21T10:00:00.123456Z"). util_iso8601 stops at
   milliseconds, and message order within a millisecond matters to
   clients that sort by date. */
static void
s_date (char *buf, size_t size)
{
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r (&ts.tv_sec, &tm);
    char base[24];
    strftime (base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf (buf, size, "%s.%06dZ", base, (int)(ts.tv_nsec / 1000 % 1000000));
}

/* The hex HMAC-SHA256 of the four JSON parts, keyed, as jupyter_client
   does, with the key's text from the connection file (not its decoded
   bytes). */
static void
s_sign (const jupyter_session_t *s, void *const *parts, const size_t *lens,
        unsigned char mac[MAC_LEN])
{
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init (&st, (const unsigned char *)s->key_hex, strlen (s->key_hex));
    for (int i = 0; i < 4; i++)
        crypto_auth_hmacsha256_update (&st, parts[i], lens[i]);
    crypto_auth_hmacsha256_final (&st, mac);
    sodium_memzero (&st, sizeof st);
}

/* Parse one JSON frame that must hold an object. The signature has been
   checked already, so the bytes are the kernel's own: ipykernel packs with
   Python's "surrogateescape", so text a tenant printed with lone surrogates
   arrives as bytes that are not UTF-8. Rather than lose that output, such
   bytes become U+FFFD and the frame is parsed again. NUL characters
   ("\u0000", also tenant output) are allowed. */
static json_t *
s_parse_object (const void *buf, size_t len, const char *what, err_t *err)
{
    json_error_t jerr;
    json_t *obj = json_loadb (buf, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (!obj) {
        size_t clean_len = 0;
        char *clean = jsonv_utf8_scrub (buf, len, &clean_len);
        if (clean) {
            obj = json_loadb (clean, clean_len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
            free (clean);
        }
    }
    if (!obj) {
        err_set (err, 502, "bad_kernel_message", "%s is not valid JSON: %s (line %d, column %d)",
                 what, jerr.text, jerr.line, jerr.column);
        return NULL;
    }
    if (!json_is_object (obj)) {
        json_decref (obj);
        err_set (err, 502, "bad_kernel_message", "%s is not a JSON object", what);
        return NULL;
    }
    return obj;
}

/* True if header[key] is a string of 1..MAX_NAME bytes. */
static bool
s_header_name (json_t *header, const char *key)
{
    json_t *v = json_object_get (header, key);
    return json_is_string (v) && json_string_length (v) > 0 && json_string_length (v) <= MAX_NAME;
}

static bool
s_is_lower_hex (const char *p, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return false;
    return true;
}

void
jupyter_session_init (jupyter_session_t *s)
{
    if (!s)
        return;
    memset (s, 0, sizeof *s);
    if (sodium_init () < 0)
        log_error ("jupyter: libsodium failed to initialise");
    randombytes_buf (s->key, sizeof s->key);
    sodium_bin2hex (s->key_hex, sizeof s->key_hex, s->key, sizeof s->key);
    s_uuid4_hex (s->session);
    snprintf (s->username, sizeof s->username, "sandboxd");
}

int
jupyter_session_set_key (jupyter_session_t *s, const char *key_hex, err_t *err)
{
    if (!s || !key_hex)
        return err_set (err, 500, "internal", "no session key given");
    size_t len = strlen (key_hex);
    unsigned char key[JUPYTER_KEY_LEN];
    size_t bin_len = 0;
    const char *end = NULL;
    if (len != JUPYTER_KEY_LEN * 2
        || sodium_hex2bin (key, sizeof key, key_hex, len, NULL, &bin_len, &end) != 0
        || bin_len != sizeof key || end != key_hex + len)
        return err_set (err, 500, "invalid_config",
                        "session key must be %d hexadecimal digits (got %zu characters)",
                        JUPYTER_KEY_LEN * 2, len);
    memcpy (s->key, key, sizeof key);
    memcpy (s->key_hex, key_hex, len + 1);
    sodium_memzero (key, sizeof key);
    return 0;
}

jupyter_msg_t *
jupyter_msg_new (const jupyter_session_t *s, const char *msg_type, json_t *content)
{
    if (!content)
        content = json_object ();
    if (!s || !msg_type || !*msg_type || strlen (msg_type) > MAX_NAME
        || !json_is_object (content)) {
        json_decref (content);
        return NULL;
    }
    jupyter_msg_t *msg = calloc (1, sizeof *msg);
    if (!msg) {
        json_decref (content);
        return NULL;
    }
    char msg_id[33], date[48];
    s_uuid4_hex (msg_id);
    s_date (date, sizeof date);
    msg->header = json_pack ("{s:s, s:s, s:s, s:s, s:s, s:s}", "msg_id", msg_id, "msg_type",
                             msg_type, "session", s->session, "username", s->username, "date", date,
                             "version", "5.3");
    msg->parent_header = json_object ();
    msg->metadata = json_object ();
    msg->content = content;
    if (!msg->header || !msg->parent_header || !msg->metadata) {
        jupyter_msg_destroy (&msg);
        return NULL;
    }
    return msg;
}

void
jupyter_msg_destroy (jupyter_msg_t **msg_p)
{
    if (!msg_p || !*msg_p)
        return;
    jupyter_msg_t *msg = *msg_p;
    for (int i = 0; i < msg->nids && i < JUPYTER_MAX_IDS; i++)
        free (msg->ids[i]);
    for (int i = 0; i < msg->nbuffers && i < JUPYTER_MAX_BUFFERS; i++)
        free (msg->buffers[i]);
    json_decref (msg->header);
    json_decref (msg->parent_header);
    json_decref (msg->metadata);
    json_decref (msg->content);
    free (msg);
    *msg_p = NULL;
}

static const char *
s_string_in (json_t *obj, const char *key)
{
    const char *v = json_string_value (json_object_get (obj, key));
    return v ? v : "";
}

const char *
jupyter_msg_type (const jupyter_msg_t *msg)
{
    return msg ? s_string_in (msg->header, "msg_type") : "";
}

const char *
jupyter_msg_id (const jupyter_msg_t *msg)
{
    return msg ? s_string_in (msg->header, "msg_id") : "";
}

const char *
jupyter_parent_id (const jupyter_msg_t *msg)
{
    return msg ? s_string_in (msg->parent_header, "msg_id") : "";
}

int
jupyter_msg_encode (const jupyter_session_t *s, const jupyter_msg_t *msg, void **frames,
                    size_t *lens, int max_frames)
{
    if (!s || !msg || !frames || !lens || !json_is_object (msg->header) || msg->nids < 0
        || msg->nids > JUPYTER_MAX_IDS || msg->nbuffers < 0 || msg->nbuffers > JUPYTER_MAX_BUFFERS)
        return -1;
    int n = msg->nids + 6 + msg->nbuffers;
    if (n > max_frames)
        return -1;
    for (int i = 0; i < n; i++)
        frames[i] = NULL;

    int f = 0;
    for (int i = 0; i < msg->nids; i++, f++) {
        if (!msg->ids[i] && msg->ids_len[i])
            goto fail;
        lens[f] = msg->ids_len[i];
        if (!(frames[f] = s_dup (msg->ids[i], lens[f])))
            goto fail;
    }
    lens[f] = DELIM_LEN;
    if (!(frames[f++] = s_dup (DELIM, DELIM_LEN)))
        goto fail;
    int sig = f++;
    json_t *parts[4] = { msg->header, msg->parent_header, msg->metadata, msg->content };
    for (int i = 0; i < 4; i++, f++) {
        if (parts[i] && !json_is_object (parts[i]))
            goto fail;
        frames[f] = parts[i] ? jsonv_dumps (parts[i]) : s_dup ("{}", 3);
        if (!frames[f])
            goto fail;
        lens[f] = strlen (frames[f]);
    }
    for (int i = 0; i < msg->nbuffers; i++, f++) {
        if (!msg->buffers[i] && msg->buffers_len[i])
            goto fail;
        lens[f] = msg->buffers_len[i];
        if (!(frames[f] = s_dup (msg->buffers[i], lens[f])))
            goto fail;
    }

    unsigned char mac[MAC_LEN];
    s_sign (s, frames + sig + 1, lens + sig + 1, mac);
    char hex[SIG_HEX_LEN + 1];
    sodium_bin2hex (hex, sizeof hex, mac, sizeof mac);
    lens[sig] = SIG_HEX_LEN;
    if (!(frames[sig] = s_dup (hex, SIG_HEX_LEN)))
        goto fail;
    return n;

fail:
    for (int i = 0; i < n; i++) {
        free (frames[i]);
        frames[i] = NULL;
    }
    return -1;
}

int
jupyter_msg_send (const jupyter_session_t *s, void *zsock, const jupyter_msg_t *msg, err_t *err)
{
    void *frames[MAX_FRAMES];
    size_t lens[MAX_FRAMES];
    int n = jupyter_msg_encode (s, msg, frames, lens, MAX_FRAMES);
    if (n < 0)
        return err_set (err, 500, "internal", "cannot encode a %s message", jupyter_msg_type (msg));
    int rc = 0;
    for (int i = 0; i < n; i++) {
        int flags = i + 1 < n ? ZMQ_SNDMORE : 0;
        int sent;
        while ((sent = zmq_send (zsock, frames[i], lens[i], flags)) < 0 && errno == EINTR)
            ;
        if (sent < 0) {
            /* ZeroMQ delivers whole messages or nothing, so stopping here
               sends nothing. EAGAIN (send timeout or high-water mark) and
               EHOSTUNREACH (mandatory routing) mean the kernel is not
               taking messages. */
            int e = errno;
            if (e == EAGAIN || e == EHOSTUNREACH)
                rc = err_set (err, 503, "kernel_unavailable", "kernel is not accepting %s: %s",
                              jupyter_msg_type (msg), zmq_strerror (e));
            else
                rc = err_set (err, 500, "internal", "sending %s: %s", jupyter_msg_type (msg),
                              zmq_strerror (e));
            break;
        }
    }
    for (int i = 0; i < n; i++)
        free (frames[i]);
    return rc;
}

jupyter_msg_t *
jupyter_msg_decode (const jupyter_session_t *s, void *const *frames, const size_t *lens,
                    int nframes, err_t *err)
{
    if (!s || !frames || !lens || nframes <= 0) {
        err_set (err, 502, "bad_kernel_message", "empty message");
        return NULL;
    }
    size_t total = 0;
    for (int i = 0; i < nframes; i++) {
        if (lens[i] > JUPYTER_MAX_FRAME) {
            err_set (err, 502, "bad_kernel_message", "frame %d is %zu bytes (limit %u)", i, lens[i],
                     JUPYTER_MAX_FRAME);
            return NULL;
        }
        if (!frames[i] && lens[i]) {
            err_set (err, 502, "bad_kernel_message", "frame %d has no data", i);
            return NULL;
        }
        total += lens[i];
        if (total > JUPYTER_MAX_MESSAGE) {
            err_set (err, 502, "bad_kernel_message", "message exceeds %u bytes",
                     JUPYTER_MAX_MESSAGE);
            return NULL;
        }
    }

    int nids = 0;
    while (nids < nframes
           && !(lens[nids] == DELIM_LEN && memcmp (frames[nids], DELIM, DELIM_LEN) == 0))
        nids++;
    if (nids == nframes) {
        err_set (err, 502, "bad_kernel_message", "no <IDS|MSG> delimiter in %d frames", nframes);
        return NULL;
    }
    if (nids > JUPYTER_MAX_IDS) {
        err_set (err, 502, "bad_kernel_message", "%d routing identities (limit %d)", nids,
                 JUPYTER_MAX_IDS);
        return NULL;
    }
    int after = nframes - nids - 1;
    if (after < 5) {
        err_set (err, 502, "bad_kernel_message",
                 "%d frames after the delimiter (need a signature and 4 JSON parts)", after);
        return NULL;
    }
    int nbuffers = after - 5;
    if (nbuffers > JUPYTER_MAX_BUFFERS) {
        err_set (err, 502, "bad_kernel_message", "%d buffers (limit %d)", nbuffers,
                 JUPYTER_MAX_BUFFERS);
        return NULL;
    }

    /* Verify before parsing: nothing unauthenticated reaches the JSON
       parser. The comparison is on the decoded 32 bytes, in constant
       time; jupyter_client writes lowercase hex, so anything else is a
       forgery or a bug. */
    const char *sig = frames[nids + 1];
    size_t sig_len = lens[nids + 1];
    if (sig_len == 0) {
        err_set (err, 502, "bad_kernel_message", "unsigned message (empty signature)");
        return NULL;
    }
    unsigned char got[MAC_LEN], want[MAC_LEN];
    size_t bin_len = 0;
    if (sig_len != SIG_HEX_LEN || !s_is_lower_hex (sig, sig_len)
        || sodium_hex2bin (got, sizeof got, sig, sig_len, NULL, &bin_len, NULL) != 0
        || bin_len != MAC_LEN) {
        err_set (err, 502, "bad_kernel_message",
                 "malformed signature (%zu bytes, want %d lowercase hex digits)", sig_len,
                 (int)SIG_HEX_LEN);
        return NULL;
    }
    s_sign (s, frames + nids + 2, lens + nids + 2, want);
    if (sodium_memcmp (got, want, MAC_LEN) != 0) {
        err_set (err, 502, "bad_kernel_message", "signature does not match");
        return NULL;
    }

    jupyter_msg_t *msg = calloc (1, sizeof *msg);
    if (!msg) {
        err_set (err, 500, "internal", "out of memory");
        return NULL;
    }
    json_t **parts[4] = { &msg->header, &msg->parent_header, &msg->metadata, &msg->content };
    for (int i = 0; i < 4; i++) {
        *parts[i] = s_parse_object (frames[nids + 2 + i], lens[nids + 2 + i], s_part_names[i], err);
        if (!*parts[i])
            goto fail;
    }
    if (!s_header_name (msg->header, "msg_id") || !s_header_name (msg->header, "msg_type")) {
        err_set (err, 502, "bad_kernel_message",
                 "header lacks a string msg_id and msg_type of 1..%d bytes", MAX_NAME);
        goto fail;
    }
    for (int i = 0; i < nids; i++) {
        if (!(msg->ids[i] = s_dup (frames[i], lens[i])))
            goto oom;
        msg->ids_len[i] = lens[i];
        msg->nids++;
    }
    for (int i = 0; i < nbuffers; i++) {
        int f = nids + 6 + i;
        if (!(msg->buffers[i] = s_dup (frames[f], lens[f])))
            goto oom;
        msg->buffers_len[i] = lens[f];
        msg->nbuffers++;
    }
    return msg;

oom:
    err_set (err, 500, "internal", "out of memory");
fail:
    jupyter_msg_destroy (&msg);
    return NULL;
}

jupyter_msg_t *
jupyter_msg_recv (const jupyter_session_t *s, void *zsock, int flags, err_t *err)
{
    err_t local;
    if (!err)
        err = &local;
    zmq_msg_t parts[MAX_FRAMES];
    int n = 0, seen = 0;
    size_t total = 0;
    bool oversize = false;
    for (;;) {
        zmq_msg_t part;
        zmq_msg_init (&part);
        int rc;
        while ((rc = zmq_msg_recv (&part, zsock, flags)) < 0 && errno == EINTR && seen > 0)
            ;
        if (rc < 0) {
            int e = errno;
            zmq_msg_close (&part);
            for (int i = 0; i < n; i++)
                zmq_msg_close (&parts[i]);
            if (seen == 0 && (e == EAGAIN || e == EINTR)) {
                err_clear (err);
                return NULL;
            }
            err_set (err, 500, "internal", "receiving from kernel: %s", zmq_strerror (e));
            return NULL;
        }
        /* The remaining parts of a multipart message are already queued:
           once the first has arrived the rest never block. */
        flags &= ~ZMQ_DONTWAIT;
        seen++;
        bool more = zmq_msg_more (&part);
        total += zmq_msg_size (&part);
        if (zmq_msg_size (&part) > JUPYTER_MAX_FRAME || total > JUPYTER_MAX_MESSAGE)
            oversize = true;
        if (n < MAX_FRAMES && !oversize)
            parts[n++] = part; /* moves ownership */
        else
            zmq_msg_close (&part);
        if (!more)
            break;
    }

    jupyter_msg_t *msg = NULL;
    if (oversize) {
        err_set (err, 502, "bad_kernel_message", "message of %d frames exceeds the size limits",
                 seen);
    }
    else if (seen > n) {
        err_set (err, 502, "bad_kernel_message", "%d frames (limit %d)", seen, MAX_FRAMES);
    }
    else {
        void *data[MAX_FRAMES];
        size_t lens[MAX_FRAMES];
        for (int i = 0; i < n; i++) {
            data[i] = zmq_msg_data (&parts[i]);
            lens[i] = zmq_msg_size (&parts[i]);
        }
        msg = jupyter_msg_decode (s, data, lens, n, err);
    }
    for (int i = 0; i < n; i++)
        zmq_msg_close (&parts[i]);
    if (!msg)
        log_warn ("jupyter: dropped a kernel message: %s", err->message);
    return msg;
}

json_t *
jupyter_connection_info (const jupyter_session_t *s, const char *ipc_base, const char *kernel_name)
{
    if (!s || !ipc_base || !kernel_name)
        return NULL;
    return json_pack ("{s:s, s:s, s:i, s:i, s:i, s:i, s:i, s:s, s:s, s:s}", "transport", "ipc",
                      "ip", ipc_base, "shell_port", 1, "iopub_port", 2, "stdin_port", 3,
                      "control_port", 4, "hb_port", 5, "key", s->key_hex, "signature_scheme",
                      "hmac-sha256", "kernel_name", kernel_name);
}
