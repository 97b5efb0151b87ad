/* test_jupyter.c - TAP tests for the Jupyter wire protocol: signing, parsing,
   rejection of forged or malformed messages, frames recorded from a real
   IPython kernel, and a live ZeroMQ round trip. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "jupyter.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "tap.h"
#include "util.h"

#define DELIM     "<IDS|MSG>"
#define MAXF      64
#define VEC_KEY   "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define OTHER_KEY "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"

/* Test vectors: HMAC-SHA256 keyed with VEC_KEY's text over the four JSON
   frames, computed by Python's hmac module (a second implementation):
     python3 -c 'import hmac,hashlib; h=hmac.new(b"0123456789abcdef"*4,
                 digestmod=hashlib.sha256); [h.update(p) for p in PARTS];
                 print(h.hexdigest())' */
static const char *s_vec_parts[4]
    = { "{\"msg_id\":\"m1\",\"msg_type\":\"status\",\"session\":\"s1\",\"username\":\"u\","
        "\"date\":\"2026-01-01T00:00:00.000000Z\",\"version\":\"5.3\"}",
        "{}", "{}", "{\"execution_state\":\"idle\"}" };
#define VEC_SIG "2c5df4b505c3750e054c86f29d21aa7ab5ba5b2db333096b8f763f8352109ea3"

/* The same with whitespace a re-serialiser would remove: it must verify as
   sent. */
static const char *s_ws_parts[4]
    = { "{ \"msg_id\" : \"m2\",\n  \"msg_type\" : \"stream\" }", " { } ", "{}\n",
        "{\"name\": \"stdout\",   \"text\": \"hi\\n\"}" };
#define WS_SIG "e55c0b84c43037a29fba924570d5dfbae3ecad134e2fc848a74ddfcdd82ab4ba"

/* A hand-built message: frames point at data owned elsewhere, except those
   added with s_add_owned. */
typedef struct {
    void *f[MAXF];
    size_t len[MAXF];
    int owned[MAXF];
    int n;
} frames_t;

static void
s_add (frames_t *fr, const void *data, size_t len)
{
    if (fr->n >= MAXF)
        return;
    fr->f[fr->n] = (void *)data;
    fr->len[fr->n] = len;
    fr->owned[fr->n] = 0;
    fr->n++;
}

static void
s_add_str (frames_t *fr, const char *s)
{
    s_add (fr, s, strlen (s));
}

static void
s_add_owned (frames_t *fr, void *data, size_t len)
{
    s_add (fr, data, len);
    if (fr->n > 0 && fr->f[fr->n - 1] == data)
        fr->owned[fr->n - 1] = 1;
}

static void
s_frames_free (frames_t *fr)
{
    for (int i = 0; i < fr->n; i++)
        if (fr->owned[i])
            free (fr->f[i]);
    fr->n = 0;
}

/* Independent signer: HMAC-SHA256 built by hand from SHA-256 (RFC 2104),
   keyed with the key's text as jupyter_client does. */
static void
s_hmac_hex (const char *key_text, const char *const parts[4], const size_t lens[4], char out[65])
{
    unsigned char k0[64] = { 0 }, pad[64], inner[32], mac[32];
    size_t klen = strlen (key_text);
    if (klen > sizeof k0)
        crypto_hash_sha256 (k0, (const unsigned char *)key_text, klen);
    else
        memcpy (k0, key_text, klen);
    crypto_hash_sha256_state st;
    for (int i = 0; i < 64; i++)
        pad[i] = k0[i] ^ 0x36;
    crypto_hash_sha256_init (&st);
    crypto_hash_sha256_update (&st, pad, sizeof pad);
    for (int i = 0; i < 4; i++)
        crypto_hash_sha256_update (&st, (const unsigned char *)parts[i], lens[i]);
    crypto_hash_sha256_final (&st, inner);
    for (int i = 0; i < 64; i++)
        pad[i] = k0[i] ^ 0x5c;
    crypto_hash_sha256_init (&st);
    crypto_hash_sha256_update (&st, pad, sizeof pad);
    crypto_hash_sha256_update (&st, inner, sizeof inner);
    crypto_hash_sha256_final (&st, mac);
    sodium_bin2hex (out, 65, mac, sizeof mac);
}

/* ids..., delimiter, signature (computed with key_text over the parts
   unless sig is given), the four parts. */
static void
s_build (frames_t *fr, const char *key_text, const char *sig, const char *const parts[4])
{
    s_add_str (fr, DELIM);
    char *hex = malloc (65);
    if (sig)
        snprintf (hex, 65, "%s", sig);
    else {
        size_t lens[4];
        for (int i = 0; i < 4; i++)
            lens[i] = strlen (parts[i]);
        s_hmac_hex (key_text, parts, lens, hex);
    }
    s_add_owned (fr, hex, strlen (hex));
    for (int i = 0; i < 4; i++)
        s_add_str (fr, parts[i]);
}

static jupyter_session_t s_sess;

/* Decode fr with s_sess; true if it was rejected as a bad kernel message
   with a reason. */
static bool
s_rejected (frames_t *fr, const char *why_contains)
{
    err_t err;
    err_clear (&err);
    jupyter_msg_t *m = jupyter_msg_decode (&s_sess, fr->f, fr->len, fr->n, &err);
    bool rejected = m == NULL && err.status == 502 && strcmp (err.code, "bad_kernel_message") == 0
                    && err.message[0] != '\0'
                    && (!why_contains || strstr (err.message, why_contains) != NULL);
    if (!rejected)
        printf ("# got %s, status %d, message \"%s\"\n", m ? "a message" : "NULL", err.status,
                err.message);
    jupyter_msg_destroy (&m);
    s_frames_free (fr);
    return rejected;
}

static bool
s_str_is (json_t *obj, const char *key, const char *want)
{
    const char *v = json_string_value (json_object_get (obj, key));
    return v && strcmp (v, want) == 0;
}

static bool
s_is_lower_hex (const char *s, size_t len)
{
    if (strlen (s) != len)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!strchr ("0123456789abcdef", s[i]))
            return false;
    return true;
}

static void
test_session (void)
{
    jupyter_session_t a, b;
    jupyter_session_init (&a);
    jupyter_session_init (&b);
    char hex[65];
    sodium_bin2hex (hex, sizeof hex, a.key, sizeof a.key);
    ok (s_is_lower_hex (a.key_hex, 64) && strcmp (hex, a.key_hex) == 0,
        "fresh session: 64 lowercase hex key digits that match the key bytes");
    ok (s_is_lower_hex (a.session, 32) && a.session[12] == '4', "session id is a uuid4 in hex");
    ok (strcmp (a.key_hex, b.key_hex) != 0 && strcmp (a.session, b.session) != 0,
        "two sessions get different keys and ids");

    err_t err;
    err_clear (&err);
    ok (jupyter_session_set_key (&a, VEC_KEY, &err) == 0 && strcmp (a.key_hex, VEC_KEY) == 0
            && a.key[0] == 0x01 && a.key[31] == 0xef,
        "set_key loads a 64-digit hex key");
    const char *bad[] = { "", "0123", VEC_KEY "0",
                          "0123456789abcdef0123456789abcdef0123456789abcdef"
                          "0123456789abcdeg",
                          "6a93be9d-305e-4402-a9d0-c676fd63f49c" };
    int rejected = 0;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err_clear (&err);
        rejected += jupyter_session_set_key (&a, bad[i], &err) < 0 && err.status != 0;
    }
    ok (rejected == 5 && strcmp (a.key_hex, VEC_KEY) == 0,
        "set_key rejects empty, short, long, non-hex and uuid keys and keeps the old one");

    json_t *ci = jupyter_connection_info (&a, "/run/k/kernel", "python3");
    ok (ci && s_str_is (ci, "transport", "ipc") && s_str_is (ci, "ip", "/run/k/kernel")
            && json_integer_value (json_object_get (ci, "shell_port")) == 1
            && json_integer_value (json_object_get (ci, "iopub_port")) == 2
            && json_integer_value (json_object_get (ci, "stdin_port")) == 3
            && json_integer_value (json_object_get (ci, "control_port")) == 4
            && json_integer_value (json_object_get (ci, "hb_port")) == 5
            && s_str_is (ci, "key", VEC_KEY) && s_str_is (ci, "signature_scheme", "hmac-sha256")
            && s_str_is (ci, "kernel_name", "python3") && json_object_size (ci) == 10,
        "connection info has transport, ip, five ports, key, scheme and kernel name");
    json_decref (ci);
}

static void
test_new (void)
{
    jupyter_msg_t *m
        = jupyter_msg_new (&s_sess, "execute_request", json_pack ("{s:s}", "code", "1+1"));
    ok (m != NULL, "msg_new builds a message");
    if (!m)
        return;
    const char *date = json_string_value (json_object_get (m->header, "date"));
    ok (s_is_lower_hex (jupyter_msg_id (m), 32) && jupyter_msg_id (m)[12] == '4'
            && strchr ("89ab", jupyter_msg_id (m)[16]),
        "msg_id is a uuid4 in hex: %s", jupyter_msg_id (m));
    ok (strcmp (jupyter_msg_type (m), "execute_request") == 0
            && s_str_is (m->header, "session", s_sess.session)
            && s_str_is (m->header, "username", s_sess.username)
            && s_str_is (m->header, "version", "5.3"),
        "header has msg_type, our session and username, version 5.3");
    ok (date && strlen (date) == 27 && date[4] == '-' && date[10] == 'T' && date[19] == '.'
            && date[26] == 'Z',
        "date is ISO 8601 UTC with microseconds: %s", date ? date : "(none)");
    ok (json_is_object (m->parent_header) && json_object_size (m->parent_header) == 0
            && json_is_object (m->metadata) && json_object_size (m->metadata) == 0
            && s_str_is (m->content, "code", "1+1") && m->nids == 0 && m->nbuffers == 0,
        "empty parent and metadata, content stolen");
    ok (strcmp (jupyter_parent_id (m), "") == 0, "parent id of a request is \"\"");
    jupyter_msg_t *m2 = jupyter_msg_new (&s_sess, "execute_request", NULL);
    ok (m2 && json_is_object (m2->content) && strcmp (jupyter_msg_id (m), jupyter_msg_id (m2)) != 0,
        "content NULL becomes {}; msg_ids are unique");
    jupyter_msg_destroy (&m2);
    ok (m2 == NULL, "destroy nulls the caller's pointer");
    jupyter_msg_destroy (&m2);
    jupyter_msg_destroy (NULL);
    ok (jupyter_msg_new (&s_sess, NULL, NULL) == NULL
            && jupyter_msg_new (&s_sess, "", json_object ()) == NULL
            && jupyter_msg_new (&s_sess, "x", json_array ()) == NULL,
        "msg_new refuses a missing type or non-object content (without leaking it)");
    ok (strcmp (jupyter_msg_type (NULL), "") == 0 && strcmp (jupyter_msg_id (NULL), "") == 0,
        "accessors on NULL give \"\"");
    jupyter_msg_destroy (&m);
}

static void
test_round_trip (void)
{
    jupyter_msg_t *m = jupyter_msg_new (
        &s_sess, "comm_msg",
        json_pack ("{s:s%, s:[i,f,b,n], s:s}", "text", "caf\xc3\xa9 \xe2\x9c\x93 a\0b", (size_t)13,
                   "list", 1, 2.5, 1, "unicode", "\xf0\x9f\x90\x8d"));
    if (!m) {
        ok (0, "round trip message built");
        return;
    }
    json_object_set_new (m->parent_header, "msg_id", json_string ("parent-1"));
    json_object_set_new (m->metadata, "deleted", json_false ());
    m->ids[0] = strdup ("router-id");
    m->ids_len[0] = 9;
    m->ids[1] = malloc (4);
    memcpy (m->ids[1], "\0\x01\xff\x80", 4);
    m->ids_len[1] = 4;
    m->nids = 2;
    m->buffers[0] = malloc (1);
    m->buffers_len[0] = 0;
    m->buffers[1] = malloc (256);
    for (int i = 0; i < 256; i++)
        ((unsigned char *)m->buffers[1])[i] = (unsigned char)i;
    m->buffers_len[1] = 256;
    m->buffers[2] = strdup ("{not json}");
    m->buffers_len[2] = 10;
    m->nbuffers = 3;

    void *f[MAXF];
    size_t len[MAXF];
    ok (jupyter_msg_encode (&s_sess, m, f, len, 10) == -1,
        "encode refuses when frames[] is one short");
    int n = jupyter_msg_encode (&s_sess, m, f, len, MAXF);
    ok (n == 11, "encode gives 2 ids + delimiter + signature + 4 JSON + 3 buffers = 11 frames");
    if (n != 11) {
        jupyter_msg_destroy (&m);
        return;
    }
    ok (len[2] == 9 && memcmp (f[2], DELIM, 9) == 0, "frame 2 is the delimiter");
    char sig[65];
    snprintf (sig, sizeof sig, "%.*s", (int)len[3], (char *)f[3]);
    char want[65];
    const char *parts[4] = { f[4], f[5], f[6], f[7] };
    s_hmac_hex (s_sess.key_hex, parts, len + 4, want);
    ok (len[3] == 64 && strcmp (sig, want) == 0,
        "signature is lowercase hex HMAC-SHA256 over the JSON frames (checked independently)");
    ok (len[5] == 21 && memcmp (f[5], "{\"msg_id\":\"parent-1\"}", 21) == 0
            && memmem (f[4], len[4], ", ", 2) == NULL && memmem (f[4], len[4], "\": ", 3) == NULL,
        "JSON frames are compact");

    err_t err;
    err_clear (&err);
    jupyter_msg_t *d = jupyter_msg_decode (&s_sess, f, len, n, &err);
    ok (d != NULL, "decode accepts what encode produced: %s", err.message);
    if (d) {
        ok (json_equal (d->header, m->header) && json_equal (d->parent_header, m->parent_header)
                && json_equal (d->metadata, m->metadata) && json_equal (d->content, m->content),
            "header, parent, metadata and content survive (UTF-8, NUL, numbers, booleans)");
        ok (d->nids == 2 && d->ids_len[0] == 9 && memcmp (d->ids[0], "router-id", 9) == 0
                && d->ids_len[1] == 4 && memcmp (d->ids[1], "\0\x01\xff\x80", 4) == 0,
            "routing ids survive byte for byte");
        ok (d->nbuffers == 3 && d->buffers_len[0] == 0 && d->buffers_len[1] == 256
                && memcmp (d->buffers[1], m->buffers[1], 256) == 0 && d->buffers_len[2] == 10
                && memcmp (d->buffers[2], "{not json}", 10) == 0,
            "binary buffers survive, including an empty one");
        ok (strcmp (jupyter_parent_id (d), "parent-1") == 0
                && strcmp (jupyter_msg_id (d), jupyter_msg_id (m)) == 0,
            "accessors read the decoded ids");
    }
    jupyter_msg_destroy (&d);

    jupyter_session_t other;
    jupyter_session_init (&other);
    err_clear (&err);
    d = jupyter_msg_decode (&other, f, len, n, &err);
    ok (d == NULL && err.status == 502, "a message signed with another session's key is rejected");
    jupyter_msg_destroy (&d);
    for (int i = 0; i < n; i++)
        free (f[i]);

    m->nbuffers = 0;
    free (m->buffers[0]);
    free (m->buffers[1]);
    free (m->buffers[2]);
    json_decref (m->parent_header);
    json_decref (m->metadata);
    m->parent_header = m->metadata = NULL;
    n = jupyter_msg_encode (&s_sess, m, f, len, MAXF);
    ok (n == 8 && len[5] == 2 && memcmp (f[5], "{}", 2) == 0 && len[6] == 2
            && memcmp (f[6], "{}", 2) == 0,
        "NULL parent_header and metadata are sent as {}");
    for (int i = 0; i < n; i++)
        free (f[i]);
    jupyter_msg_destroy (&m);
}

static void
test_vectors (void)
{
    jupyter_session_t vs;
    jupyter_session_init (&vs);
    err_t err;
    err_clear (&err);
    jupyter_session_set_key (&vs, VEC_KEY, &err);

    char mine[65];
    size_t lens[4];
    for (int i = 0; i < 4; i++)
        lens[i] = strlen (s_vec_parts[i]);
    s_hmac_hex (VEC_KEY, s_vec_parts, lens, mine);
    ok (strcmp (mine, VEC_SIG) == 0, "hand-built HMAC agrees with Python's hmac on the vector");

    frames_t fr = { 0 };
    s_build (&fr, NULL, VEC_SIG, s_vec_parts);
    jupyter_msg_t *m = jupyter_msg_decode (&vs, fr.f, fr.len, fr.n, &err);
    ok (m && strcmp (jupyter_msg_type (m), "status") == 0 && strcmp (jupyter_msg_id (m), "m1") == 0
            && s_str_is (m->content, "execution_state", "idle"),
        "frames signed by Python's hmac decode and verify: %s", err.message);
    jupyter_msg_destroy (&m);
    s_frames_free (&fr);

    s_build (&fr, NULL, WS_SIG, s_ws_parts);
    m = jupyter_msg_decode (&vs, fr.f, fr.len, fr.n, &err);
    ok (m && strcmp (jupyter_msg_type (m), "stream") == 0 && s_str_is (m->content, "text", "hi\n"),
        "frames with extra whitespace verify against a signature over the bytes as sent");
    jupyter_msg_destroy (&m);
    s_frames_free (&fr);

    /* The same message, but signed over its compact re-serialisation: a
       decoder that re-serialised before checking would accept this. */
    const char *compact[4] = { "{\"msg_id\":\"m2\",\"msg_type\":\"stream\"}", "{}", "{}",
                               "{\"name\":\"stdout\",\"text\":\"hi\\n\"}" };
    char resig[65];
    for (int i = 0; i < 4; i++)
        lens[i] = strlen (compact[i]);
    s_hmac_hex (VEC_KEY, compact, lens, resig);
    s_build (&fr, NULL, resig, s_ws_parts);
    m = jupyter_msg_decode (&vs, fr.f, fr.len, fr.n, &err);
    ok (m == NULL && err.status == 502,
        "a signature over re-serialised JSON does not verify the bytes as sent");
    jupyter_msg_destroy (&m);
    s_frames_free (&fr);

    s_build (&fr, NULL, VEC_SIG, s_vec_parts);
    jupyter_session_t os;
    jupyter_session_init (&os);
    jupyter_session_set_key (&os, OTHER_KEY, &err);
    m = jupyter_msg_decode (&os, fr.f, fr.len, fr.n, &err);
    ok (m == NULL && err.status == 502, "the vector does not verify with a different key");
    s_frames_free (&fr);
}

static void
test_rejections (void)
{
    const char *K = s_sess.key_hex;
    const char *good_hdr = "{\"msg_id\":\"x\",\"msg_type\":\"stream\"}";
    const char *good[4] = { good_hdr, "{}", "{}", "{\"name\":\"stdout\",\"text\":\"t\"}" };
    frames_t fr = { 0 };
    char sig[65];
    size_t lens[4];
    for (int i = 0; i < 4; i++)
        lens[i] = strlen (good[i]);
    s_hmac_hex (K, good, lens, sig);

    s_build (&fr, K, NULL, good);
    err_t err;
    err_clear (&err);
    jupyter_msg_t *m = jupyter_msg_decode (&s_sess, fr.f, fr.len, fr.n, &err);
    ok (m != NULL, "control: the well-formed message decodes");
    jupyter_msg_destroy (&m);
    s_frames_free (&fr);

    char flipped[65];
    memcpy (flipped, sig, 65);
    flipped[17] = flipped[17] == '0' ? '1' : '0';
    s_build (&fr, NULL, flipped, good);
    ok (s_rejected (&fr, "signature"), "one hex digit of the signature flipped");

    s_build (&fr, NULL, "", good);
    ok (s_rejected (&fr, "empty signature"), "empty signature (unsigned message)");

    char upper[65];
    for (int i = 0; i < 65; i++)
        upper[i] = (char)(sig[i] >= 'a' && sig[i] <= 'f' ? sig[i] - 32 : sig[i]);
    s_build (&fr, NULL, upper, good);
    ok (strcmp (upper, sig) != 0 && s_rejected (&fr, "signature"),
        "the right signature in uppercase hex");

    char nonhex[65];
    memcpy (nonhex, sig, 65);
    nonhex[40] = 'g';
    s_build (&fr, NULL, nonhex, good);
    ok (s_rejected (&fr, "signature"), "a non-hex character in the signature");

    char shortsig[65];
    memcpy (shortsig, sig, 65);
    shortsig[63] = '\0';
    s_build (&fr, NULL, shortsig, good);
    ok (s_rejected (&fr, "signature"), "a signature one digit short");

    char padded[70];
    snprintf (padded, sizeof padded, "%s00", sig);
    fr.n = 0;
    s_add_str (&fr, DELIM);
    s_add_str (&fr, padded);
    for (int i = 0; i < 4; i++)
        s_add_str (&fr, good[i]);
    ok (s_rejected (&fr, "signature"), "a signature with trailing digits");

    fr.n = 0;
    s_add_str (&fr, "id");
    s_add_str (&fr, sig);
    for (int i = 0; i < 4; i++)
        s_add_str (&fr, good[i]);
    ok (s_rejected (&fr, "delimiter"), "missing <IDS|MSG> delimiter");

    fr.n = 0;
    s_add_str (&fr, "<IDS|MSG");
    s_add_str (&fr, sig);
    for (int i = 0; i < 4; i++)
        s_add_str (&fr, good[i]);
    ok (s_rejected (&fr, "delimiter"), "a truncated delimiter is not a delimiter");

    fr.n = 0;
    s_add_str (&fr, DELIM);
    s_add_str (&fr, sig);
    for (int i = 0; i < 3; i++)
        s_add_str (&fr, good[i]);
    ok (s_rejected (&fr, "frames after the delimiter"), "too few frames (3 JSON parts)");

    ok (s_rejected (&fr, NULL), "no frames at all");

    const char *arr[4] = { good_hdr, "{}", "{}", "[1,2]" };
    s_build (&fr, K, NULL, arr);
    ok (s_rejected (&fr, "content is not a JSON object"), "content that is an array (signed)");

    const char *hdr_str[4] = { "\"header\"", "{}", "{}", "{}" };
    s_build (&fr, K, NULL, hdr_str);
    ok (s_rejected (&fr, "header is not a JSON object"), "header that is a string (signed)");

    const char *par_null[4] = { good_hdr, "null", "{}", "{}" };
    s_build (&fr, K, NULL, par_null);
    ok (s_rejected (&fr, "parent_header"), "parent_header null (signed)");

    const char *trunc[4] = { good_hdr, "{}", "{}", "{\"name\":" };
    s_build (&fr, K, NULL, trunc);
    ok (s_rejected (&fr, "not valid JSON"), "truncated JSON content (signed)");

    const char *two[4] = { good_hdr, "{}", "{}", "{} {}" };
    s_build (&fr, K, NULL, two);
    ok (s_rejected (&fr, "not valid JSON"), "two JSON values in one frame (signed)");

    const char *no_type[4] = { "{\"msg_id\":\"x\"}", "{}", "{}", "{}" };
    s_build (&fr, K, NULL, no_type);
    ok (s_rejected (&fr, "msg_type"), "header lacking msg_type (signed)");

    const char *int_type[4] = { "{\"msg_id\":\"x\",\"msg_type\":7}", "{}", "{}", "{}" };
    s_build (&fr, K, NULL, int_type);
    ok (s_rejected (&fr, "msg_type"), "header msg_type not a string (signed)");

    const char *no_id[4] = { "{\"msg_type\":\"status\"}", "{}", "{}", "{}" };
    s_build (&fr, K, NULL, no_id);
    ok (s_rejected (&fr, "msg_id"), "header lacking msg_id (signed)");

    char long_hdr[400];
    snprintf (long_hdr, sizeof long_hdr, "{\"msg_id\":\"x\",\"msg_type\":\"%0257d\"}", 0);
    const char *long_type[4] = { long_hdr, "{}", "{}", "{}" };
    s_build (&fr, K, NULL, long_type);
    ok (s_rejected (&fr, "msg_type"), "header msg_type of 257 bytes (signed)");

    fr.n = 0;
    for (int i = 0; i < JUPYTER_MAX_IDS; i++)
        s_add_str (&fr, "id");
    s_build (&fr, K, NULL, good);
    m = jupyter_msg_decode (&s_sess, fr.f, fr.len, fr.n, &err);
    ok (m && m->nids == JUPYTER_MAX_IDS, "%d routing ids are accepted", JUPYTER_MAX_IDS);
    jupyter_msg_destroy (&m);
    s_frames_free (&fr);

    for (int i = 0; i < JUPYTER_MAX_IDS + 1; i++)
        s_add_str (&fr, "id");
    s_build (&fr, K, NULL, good);
    ok (s_rejected (&fr, "identities"), "%d routing ids are too many", JUPYTER_MAX_IDS + 1);

    s_build (&fr, K, NULL, good);
    for (int i = 0; i < JUPYTER_MAX_BUFFERS; i++)
        s_add_str (&fr, "buf");
    m = jupyter_msg_decode (&s_sess, fr.f, fr.len, fr.n, &err);
    ok (m && m->nbuffers == JUPYTER_MAX_BUFFERS, "%d buffers are accepted", JUPYTER_MAX_BUFFERS);
    jupyter_msg_destroy (&m);
    s_frames_free (&fr);

    s_build (&fr, K, NULL, good);
    for (int i = 0; i < JUPYTER_MAX_BUFFERS + 1; i++)
        s_add_str (&fr, "buf");
    ok (s_rejected (&fr, "buffers"), "%d buffers are too many", JUPYTER_MAX_BUFFERS + 1);

    /* Big frames: one allocation, referenced several times. */
    char *big = calloc (1, JUPYTER_MAX_FRAME + 1);
    if (!big) {
        ok (0, "allocate a big frame");
        return;
    }
    s_build (&fr, K, NULL, good);
    s_add (&fr, big, JUPYTER_MAX_FRAME);
    m = jupyter_msg_decode (&s_sess, fr.f, fr.len, fr.n, &err);
    ok (m && m->nbuffers == 1 && m->buffers_len[0] == JUPYTER_MAX_FRAME,
        "a buffer of exactly JUPYTER_MAX_FRAME bytes is accepted");
    jupyter_msg_destroy (&m);
    s_frames_free (&fr);

    s_build (&fr, K, NULL, good);
    s_add (&fr, big, JUPYTER_MAX_FRAME + 1);
    ok (s_rejected (&fr, "frame"), "a buffer one byte over JUPYTER_MAX_FRAME");

    fr.n = 0;
    s_add_str (&fr, DELIM);
    s_add_str (&fr, sig);
    s_add (&fr, big, JUPYTER_MAX_FRAME + 1);
    for (int i = 1; i < 4; i++)
        s_add_str (&fr, good[i]);
    ok (s_rejected (&fr, "frame"), "an oversize header frame");

    s_build (&fr, K, NULL, good);
    for (unsigned i = 0; i <= JUPYTER_MAX_MESSAGE / JUPYTER_MAX_FRAME; i++)
        s_add (&fr, big, JUPYTER_MAX_FRAME);
    ok (s_rejected (&fr, "exceeds"), "frames each within the limit but over JUPYTER_MAX_MESSAGE");
    free (big);
}

/* Bytes a real kernel sends when tenant code prints lone surrogates: JSON
   that is not UTF-8, correctly signed. */
static void
test_invalid_utf8 (void)
{
    const char *K = s_sess.key_hex;
    const char *parts[4] = { "{\"msg_id\":\"x\",\"msg_type\":\"stream\"}", "{}", "{}",
                             "{\"name\":\"stdout\",\"text\":\"x\xff\xed\xa0\x80y\"}" };
    frames_t fr = { 0 };
    s_build (&fr, K, NULL, parts);
    err_t err;
    err_clear (&err);
    jupyter_msg_t *m = jupyter_msg_decode (&s_sess, fr.f, fr.len, fr.n, &err);
    ok (m && s_str_is (m->content, "text", "x\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbdy"),
        "signed JSON with invalid UTF-8 decodes with U+FFFD in place of each bad byte: %s",
        err.message);
    jupyter_msg_destroy (&m);
    s_frames_free (&fr);

    const char *bad_sig_parts[4] = { parts[0], parts[1], parts[2], parts[3] };
    s_build (&fr, OTHER_KEY, NULL, bad_sig_parts);
    ok (s_rejected (&fr, "signature"), "...but only once its signature has verified");
}

static void
test_fixture (void)
{
    const char *srcdir = getenv ("SANDBOXD_SRCDIR");
    char path[4096];
    snprintf (path, sizeof path, "%s/tests/unit/fixtures/jupyter_frames.json",
              srcdir && *srcdir ? srcdir : ".");
    json_error_t jerr;
    json_t *fx = json_load_file (path, 0, &jerr);
    ok (fx != NULL, "fixture %s loads: %s", path, fx ? "" : jerr.text);
    if (!fx)
        return;
    printf ("# recorded from %s\n", json_string_value (json_object_get (fx, "kernel")));

    jupyter_session_t ks, other;
    jupyter_session_init (&ks);
    jupyter_session_init (&other);
    err_t err;
    err_clear (&err);
    ok (jupyter_session_set_key (&ks, json_string_value (json_object_get (fx, "key")), &err) == 0,
        "fixture key loads");

    json_t *msgs = json_object_get (fx, "messages");
    size_t i;
    json_t *rec;
    int total = 0, decoded = 0, types_ok = 0, forged = 0, ids_ok = 0;
    int seen_result = 0, seen_reply = 0, seen_nul = 0, seen_scrubbed = 0, seen_status = 0,
        seen_input = 0;
    json_array_foreach (msgs, i, rec)
    {
        json_t *jframes = json_object_get (rec, "frames");
        void *f[MAXF];
        size_t len[MAXF];
        int n = 0;
        size_t j;
        json_t *jf;
        json_array_foreach (jframes, j, jf)
        {
            if (n >= MAXF)
                break;
            const char *b64 = json_string_value (jf);
            size_t b64len = b64 ? strlen (b64) : 0, binlen = 0;
            f[n] = malloc (b64len + 1);
            if (sodium_base642bin (f[n], b64len + 1, b64 ? b64 : "", b64len, NULL, &binlen, NULL,
                                   sodium_base64_VARIANT_ORIGINAL)
                != 0)
                binlen = 0;
            len[n++] = binlen;
        }
        total++;
        const char *channel = json_string_value (json_object_get (rec, "channel"));
        const char *type = json_string_value (json_object_get (rec, "msg_type"));
        err_clear (&err);
        jupyter_msg_t *m = jupyter_msg_decode (&ks, f, len, n, &err);
        if (!m)
            printf ("# fixture message %zu (%s) rejected: %s\n", i, type, err.message);
        if (m) {
            decoded++;
            types_ok += type && strcmp (type, jupyter_msg_type (m)) == 0
                        && jupyter_parent_id (m)[0] != '\0';
            /* iopub carries its topic as the one routing id; a DEALER on
               shell receives none. */
            if (channel && strcmp (channel, "iopub") == 0)
                ids_ok += m->nids == 1
                          && ((m->ids_len[0] > 7 && memcmp (m->ids[0], "kernel.", 7) == 0)
                              || (m->ids_len[0] > 7 && memcmp (m->ids[0], "stream.", 7) == 0));
            else
                ids_ok += m->nids == 0;
            const char *mt = jupyter_msg_type (m);
            json_t *data = json_object_get (m->content, "data");
            if (strcmp (mt, "execute_result") == 0 && s_str_is (data, "text/plain", "2"))
                seen_result++;
            if (strcmp (mt, "execute_reply") == 0 && s_str_is (m->content, "status", "ok"))
                seen_reply++;
            if (strcmp (mt, "status") == 0)
                seen_status++;
            if (strcmp (mt, "execute_input") == 0 && s_str_is (m->content, "code", "1+1"))
                seen_input++;
            json_t *text = json_object_get (m->content, "text");
            if (strcmp (mt, "stream") == 0 && json_string_length (text) == 3
                && memcmp (json_string_value (text), "a\0b", 3) == 0)
                seen_nul++;
            if (strcmp (mt, "stream") == 0 && s_str_is (m->content, "text", "x\xef\xbf\xbdy"))
                seen_scrubbed++;
        }
        jupyter_msg_destroy (&m);
        m = jupyter_msg_decode (&other, f, len, n, &err);
        forged += m == NULL && err.status == 502;
        jupyter_msg_destroy (&m);
        for (int k = 0; k < n; k++)
            free (f[k]);
    }
    ok (total >= 5 && decoded == total, "all %d recorded kernel messages decode and verify (%d)",
        total, decoded);
    ok (types_ok == total, "their msg_type matches the recording and each has a parent msg_id");
    ok (ids_ok == total, "iopub messages carry one topic id (kernel.<id>.<type>, stream.<name>), "
                         "shell replies none");
    ok (seen_status >= 2 && seen_input >= 1 && seen_result == 1 && seen_reply >= 1,
        "status, execute_input, execute_result (\"2\" for 1+1) and execute_reply are there");
    ok (seen_nul == 1, "a stream with a NUL character keeps it");
    ok (seen_scrubbed == 1, "a stream with a lone surrogate (raw 0xff from the kernel) decodes "
                            "with U+FFFD");
    ok (forged == total, "none of them verify with another key");
    json_decref (fx);
}

/* Send raw frames; the last without SNDMORE. */
static void
s_send_raw (void *sock, int n, const char *const *parts)
{
    for (int i = 0; i < n; i++)
        zmq_send (sock, parts[i], strlen (parts[i]), i + 1 < n ? ZMQ_SNDMORE : 0);
}

/* Receive with a deadline so a broken test fails instead of hanging. */
static jupyter_msg_t *
s_recv (void *sock, err_t *err)
{
    zmq_pollitem_t it = { sock, 0, ZMQ_POLLIN, 0 };
    if (zmq_poll (&it, 1, 2000) <= 0) {
        err_set (err, 599, "timeout", "nothing arrived");
        return NULL;
    }
    return jupyter_msg_recv (&s_sess, sock, ZMQ_DONTWAIT, err);
}

static void
test_live (void)
{
    void *ctx = zmq_ctx_new ();
    void *router = zmq_socket (ctx, ZMQ_ROUTER);
    void *dealer = zmq_socket (ctx, ZMQ_DEALER);
    int one = 1;
    zmq_setsockopt (router, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt (dealer, ZMQ_ROUTING_ID, "client-1", 8);
    int linger = 0;
    zmq_setsockopt (router, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt (dealer, ZMQ_LINGER, &linger, sizeof linger);
    ok (zmq_bind (router, "inproc://test_jupyter") == 0
            && zmq_connect (dealer, "inproc://test_jupyter") == 0,
        "inproc ROUTER/DEALER pair");

    err_t err;
    err_set (&err, 1, "x", "stale");
    jupyter_msg_t *none = jupyter_msg_recv (&s_sess, router, ZMQ_DONTWAIT, &err);
    ok (none == NULL && err.status == 0,
        "recv with ZMQ_DONTWAIT and nothing queued: NULL, status 0");

    jupyter_msg_t *req = jupyter_msg_new (
        &s_sess, "execute_request", json_pack ("{s:s, s:b}", "code", "print(1)", "silent", 0));
    req->buffers[0] = strdup ("blob");
    req->buffers_len[0] = 4;
    req->nbuffers = 1;
    err_clear (&err);
    ok (jupyter_msg_send (&s_sess, dealer, req, &err) == 0, "send on DEALER: %s", err.message);
    jupyter_msg_t *got = s_recv (router, &err);
    ok (got && got->nids == 1 && got->ids_len[0] == 8 && memcmp (got->ids[0], "client-1", 8) == 0,
        "ROUTER receives it with the DEALER's routing id");
    ok (got && json_equal (got->header, req->header) && json_equal (got->content, req->content)
            && got->nbuffers == 1 && got->buffers_len[0] == 4
            && memcmp (got->buffers[0], "blob", 4) == 0,
        "same header, content and buffer as sent");

    jupyter_msg_t *reply
        = jupyter_msg_new (&s_sess, "execute_reply", json_pack ("{s:s}", "status", "ok"));
    if (got && reply) {
        json_decref (reply->parent_header);
        reply->parent_header = json_incref (got->header);
        reply->ids[0] = got->ids[0];
        reply->ids_len[0] = got->ids_len[0];
        got->ids[0] = NULL;
        got->nids = 0;
        reply->nids = 1;
    }
    err_clear (&err);
    ok (reply && jupyter_msg_send (&s_sess, router, reply, &err) == 0,
        "ROUTER replies to that id: %s", err.message);
    jupyter_msg_t *back = s_recv (dealer, &err);
    ok (back && back->nids == 0 && strcmp (jupyter_parent_id (back), jupyter_msg_id (req)) == 0
            && strcmp (jupyter_msg_type (back), "execute_reply") == 0,
        "DEALER gets the reply, without ids, parented to the request");
    jupyter_msg_destroy (&back);
    jupyter_msg_destroy (&got);

    /* Garbage, then a good message: capture stderr to see the warning. */
    fflush (stderr);
    int saved = dup (2);
    char logpath[] = "/tmp/test_jupyter_log.XXXXXX";
    int logfd = mkstemp (logpath);
    if (logfd >= 0)
        dup2 (logfd, 2);
    const char *garbage[] = { "hello", "not", "jupyter" };
    s_send_raw (dealer, 3, garbage);
    err_clear (&err);
    got = s_recv (router, &err);
    ok (got == NULL && err.status == 502 && strcmp (err.code, "bad_kernel_message") == 0,
        "garbage multipart: NULL and 502 bad_kernel_message (%s)", err.message);
    const char *forged[] = { DELIM,
                             "00000000000000000000000000000000"
                             "00000000000000000000000000000000",
                             "{\"msg_id\":\"f\",\"msg_type\":\"status\"}",
                             "{}",
                             "{}",
                             "{}" };
    s_send_raw (dealer, 6, forged);
    got = s_recv (router, &err);
    ok (got == NULL && err.status == 502, "well-formed but forged message: 502 (%s)", err.message);
    const char *many[200];
    for (int i = 0; i < 200; i++)
        many[i] = "x";
    s_send_raw (dealer, 200, many);
    got = s_recv (router, &err);
    ok (got == NULL && err.status == 502, "200-frame message is drained and dropped (%s)",
        err.message);
    char *big = calloc (1, JUPYTER_MAX_FRAME + 1);
    zmq_send (dealer, DELIM, 9, ZMQ_SNDMORE);
    zmq_send (dealer, big, JUPYTER_MAX_FRAME + 1, 0);
    free (big);
    got = s_recv (router, &err);
    ok (got == NULL && err.status == 502, "oversize frame is drained and dropped (%s)",
        err.message);
    fflush (stderr);
    dup2 (saved, 2);
    close (saved);
    char logbuf[4096] = "";
    if (logfd >= 0) {
        ssize_t r = pread (logfd, logbuf, sizeof logbuf - 1, 0);
        logbuf[r > 0 ? r : 0] = '\0';
        close (logfd);
        unlink (logpath);
    }
    ok (strstr (logbuf, "WARN") && strstr (logbuf, "delimiter")
            && strstr (logbuf, "signature does not match") && strstr (logbuf, "frames (limit")
            && strstr (logbuf, "size limits") && !strstr (logbuf, s_sess.key_hex),
        "each drop is logged at warn with its reason, never with the key");

    err_clear (&err);
    ok (jupyter_msg_send (&s_sess, dealer, req, &err) == 0, "send again after the garbage");
    got = s_recv (router, &err);
    ok (got && strcmp (jupyter_msg_id (got), jupyter_msg_id (req)) == 0,
        "the next good message still arrives intact");
    jupyter_msg_destroy (&got);

    reply->ids[0] = realloc (reply->ids[0], 7);
    memcpy (reply->ids[0], "nobody!", 7);
    reply->ids_len[0] = 7;
    err_clear (&err);
    ok (jupyter_msg_send (&s_sess, router, reply, &err) < 0 && err.status == 503,
        "sending to an unknown routing id fails with 503 (%s)", err.message);

    jupyter_msg_destroy (&reply);
    jupyter_msg_destroy (&req);
    zmq_close (dealer);
    zmq_close (router);
    zmq_ctx_term (ctx);
}

/* Cost per message of a typical execute_request, run for a fixed time so
   the figure is printed under valgrind too. */
static void
test_timing (void)
{
    jupyter_msg_t *m = jupyter_msg_new (
        &s_sess, "execute_request",
        json_pack ("{s:s, s:b, s:b, s:{}, s:b, s:b}", "code",
                   "import numpy as np\nx = np.arange(10)\nprint(x.sum())\n", "silent", 0,
                   "store_history", 1, "user_expressions", "allow_stdin", 0, "stop_on_error", 1));
    void *f[MAXF];
    size_t len[MAXF];
    int n = 0, iters = 0, good = 0;
    int64_t enc_us = 0, dec_us = 0, start = util_mono_us ();
    while (util_mono_us () - start < 200000) {
        int64_t t0 = util_mono_us ();
        n = jupyter_msg_encode (&s_sess, m, f, len, MAXF);
        int64_t t1 = util_mono_us ();
        jupyter_msg_t *d = n > 0 ? jupyter_msg_decode (&s_sess, f, len, n, NULL) : NULL;
        int64_t t2 = util_mono_us ();
        good += d != NULL;
        jupyter_msg_destroy (&d);
        for (int i = 0; i < n; i++)
            free (f[i]);
        enc_us += t1 - t0;
        dec_us += t2 - t1;
        iters++;
    }
    ok (iters > 0 && good == iters, "%d encode/decode cycles all verify", iters);
    printf ("# per message (%d frames): encode %.2f us, decode %.2f us\n", n,
            (double)enc_us / iters, (double)dec_us / iters);
    jupyter_msg_destroy (&m);
}

int
main (void)
{
    if (sodium_init () < 0) {
        printf ("Bail out! libsodium\n");
        return 1;
    }
    jupyter_session_init (&s_sess);
    test_session ();
    test_new ();
    test_round_trip ();
    test_vectors ();
    test_rejections ();
    test_invalid_utf8 ();
    test_fixture ();
    test_live ();
    test_timing ();
    return tap_done ();
}
