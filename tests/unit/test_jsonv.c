/* test_jsonv.c - request body validation errors and UTF-8 repair of output bytes. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "jsonv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"

static json_t *
s_parse (const char *text)
{
    err_t err;
    return jsonv_parse_object (text, strlen (text), false, &err);
}

/* True when err is a 400 with the given code whose message contains needle. */
static bool
s_err_is (const err_t *err, const char *code, const char *needle)
{
    return err->status == 400 && strcmp (err->code, code) == 0 && strstr (err->message, needle);
}

/* ---- parsing ----------------------------------------------------------- */

static void
test_parse_object (void)
{
    err_t err;
    json_t *o = s_parse ("{\"image\":\"python\",\"n\":1}");
    ok (json_is_object (o) && json_object_size (o) == 2, "an object parses");
    json_decref (o);

    const char *not_objects[] = { "[1,2]", "\"text\"", "5", "null", "true" };
    for (size_t i = 0; i < sizeof not_objects / sizeof not_objects[0]; i++) {
        err_clear (&err);
        o = jsonv_parse_object (not_objects[i], strlen (not_objects[i]), true, &err);
        ok (!o && s_err_is (&err, "invalid_json", ""), "%s is rejected with 400 invalid_json",
            not_objects[i]);
        json_decref (o);
    }

    err_clear (&err);
    o = jsonv_parse_object ("{\"a\":", 5, false, &err);
    ok (!o && s_err_is (&err, "invalid_json", "line 1"),
        "truncated JSON: 400 invalid_json with position (%s)", err.message);

    err_clear (&err);
    const char *dup = "{\"a\":1,\"a\":2}";
    o = jsonv_parse_object (dup, strlen (dup), false, &err);
    ok (!o && s_err_is (&err, "invalid_json", ""), "duplicate keys rejected (%s)", err.message);

    err_clear (&err);
    const char *trailing = "{\"a\":1} {\"b\":2}";
    o = jsonv_parse_object (trailing, strlen (trailing), false, &err);
    ok (!o && s_err_is (&err, "invalid_json", ""), "trailing data after the object rejected");

    const char *framed = "{\"a\":1}GARBAGE";
    o = jsonv_parse_object (framed, 7, false, &err);
    ok (json_is_object (o), "only len bytes are parsed (bodies are not NUL-terminated)");
    json_decref (o);

    o = jsonv_parse_object ("", 0, true, &err);
    ok (json_is_object (o) && json_object_size (o) == 0, "empty body is {} when allowed");
    json_decref (o);
    err_clear (&err);
    o = jsonv_parse_object ("", 0, false, &err);
    ok (!o && s_err_is (&err, "invalid_json", "JSON object"), "empty body rejected otherwise");
}

static void
test_only_keys (void)
{
    err_t err;
    json_t *o = s_parse ("{\"image\":\"x\",\"limits\":{\"memory_mb\":64,\"gpu\":1}}");
    static const char *const top[] = { "image", "limits", "env", NULL };
    static const char *const limits[] = { "memory_mb", "cpus", "pids", NULL };
    ok (jsonv_only_keys (o, "", top, &err) == 0, "known keys pass");
    err_clear (&err);
    ok (jsonv_only_keys (json_object_get (o, "limits"), "limits.", limits, &err) == -1
            && s_err_is (&err, "invalid_field", "'limits.gpu'"),
        "unknown nested key named with its path: %s", err.message);
    static const char *const none[] = { NULL };
    err_clear (&err);
    ok (jsonv_only_keys (o, "", none, &err) == -1 && s_err_is (&err, "invalid_field", "unknown"),
        "empty allow-list rejects any key");
    json_decref (o);
}

/* ---- typed getters ----------------------------------------------------- */

static void
test_string (void)
{
    err_t err;
    json_t *o = s_parse ("{\"name\":\"abc\",\"num\":5,\"nul\":null}");
    const char *s = "untouched";
    ok (jsonv_string (o, "", "name", true, 3, &s, &err) == 0 && strcmp (s, "abc") == 0,
        "string of exactly max_len accepted");
    err_clear (&err);
    ok (jsonv_string (o, "", "name", true, 2, &s, &err) == -1
            && s_err_is (&err, "invalid_field", "field 'name'"),
        "too long names the field: %s", err.message);
    err_clear (&err);
    ok (jsonv_string (o, "", "num", false, 10, &s, &err) == -1
            && s_err_is (&err, "invalid_field", "field 'num': must be a string"),
        "number where a string is expected: %s", err.message);
    s = "untouched";
    ok (jsonv_string (o, "", "missing", false, 10, &s, &err) == 0 && strcmp (s, "untouched") == 0,
        "absent optional leaves the output untouched");
    ok (jsonv_string (o, "", "nul", false, 10, &s, &err) == 0 && strcmp (s, "untouched") == 0,
        "null counts as absent");
    err_clear (&err);
    ok (jsonv_string (o, "", "missing", true, 10, &s, &err) == -1
            && s_err_is (&err, "invalid_field", "field 'missing' is required"),
        "absent required: %s", err.message);

    json_object_set_new (o, "bin", json_stringn ("a\0b", 3));
    err_clear (&err);
    ok (jsonv_string (o, "", "bin", false, 10, &s, &err) == -1
            && s_err_is (&err, "invalid_field", "NUL"),
        "embedded NUL rejected (it would silently truncate a path or command)");
    json_decref (o);
}

static void
test_int (void)
{
    err_t err;
    json_t *o = s_parse ("{\"i\":5,\"r\":5.0,\"h\":5.5,\"e\":1e2,\"s\":\"1024\",\"b\":true,"
                         "\"neg\":-3,\"huge\":1e300}");
    int64_t n = -1;
    ok (jsonv_int (o, "", "i", false, 0, 10, &n, &err) == 0 && n == 5, "integer 5 accepted");
    n = -1;
    ok (jsonv_int (o, "", "r", false, 0, 10, &n, &err) == 0 && n == 5, "5.0 accepted as 5");
    n = -1;
    ok (jsonv_int (o, "", "e", false, 0, 1000, &n, &err) == 0 && n == 100, "1e2 accepted as 100");
    n = -1;
    err_clear (&err);
    ok (jsonv_int (o, "limits.", "h", false, 0, 10, &n, &err) == -1 && n == -1
            && s_err_is (&err, "invalid_field", "field 'limits.h': must be an integer"),
        "5.5 rejected: %s", err.message);
    err_clear (&err);
    ok (jsonv_int (o, "limits.", "s", false, 16, 8192, &n, &err) == -1
            && s_err_is (&err, "invalid_field", "field 'limits.s'"),
        "string rejected: %s", err.message);
    err_clear (&err);
    ok (jsonv_int (o, "", "b", false, 0, 10, &n, &err) == -1
            && s_err_is (&err, "invalid_field", "field 'b'"),
        "boolean rejected");
    err_clear (&err);
    ok (jsonv_int (o, "", "huge", false, 0, 10, &n, &err) == -1
            && s_err_is (&err, "invalid_field", "field 'huge'"),
        "1e300 rejected, not wrapped");

    json_t *lim = s_parse ("{\"memory_mb\":15,\"lo\":16,\"hi\":8192,\"over\":8193}");
    err_clear (&err);
    ok (jsonv_int (lim, "limits.", "memory_mb", false, 16, 8192, &n, &err) == -1
            && s_err_is (&err, "invalid_field", "field 'limits.memory_mb'")
            && strstr (err.message, "16") && strstr (err.message, "8192"),
        "below min names field and range: %s", err.message);
    ok (jsonv_int (lim, "limits.", "lo", false, 16, 8192, &n, &err) == 0 && n == 16,
        "min is inclusive");
    ok (jsonv_int (lim, "limits.", "hi", false, 16, 8192, &n, &err) == 0 && n == 8192,
        "max is inclusive");
    err_clear (&err);
    ok (jsonv_int (lim, "limits.", "over", false, 16, 8192, &n, &err) == -1
            && s_err_is (&err, "invalid_field", "field 'limits.over'"),
        "above max rejected");
    err_clear (&err);
    ok (jsonv_int (o, "", "neg", false, 0, 10, &n, &err) == -1, "negative below 0 rejected");

    n = 77;
    ok (jsonv_int (o, "", "missing", false, 0, 10, &n, &err) == 0 && n == 77,
        "absent optional leaves the output untouched");
    err_clear (&err);
    ok (jsonv_int (o, "limits.", "pids", true, 0, 10, &n, &err) == -1
            && s_err_is (&err, "invalid_field", "field 'limits.pids' is required"),
        "absent required: %s", err.message);
    json_decref (lim);
    json_decref (o);
}

static void
test_number_bool (void)
{
    err_t err;
    json_t *o = s_parse ("{\"cpus\":0.5,\"two\":2,\"s\":\"1\",\"neg\":-1,\"t\":true,\"f\":false,"
                         "\"one\":1,\"str\":\"true\"}");
    double d = -1;
    ok (jsonv_number (o, "limits.", "cpus", false, 0.01, 4, &d, &err) == 0 && d == 0.5,
        "0.5 accepted");
    ok (jsonv_number (o, "limits.", "two", false, 0.01, 4, &d, &err) == 0 && d == 2.0,
        "integer 2 accepted as a number");
    err_clear (&err);
    ok (jsonv_number (o, "limits.", "s", false, 0.01, 4, &d, &err) == -1
            && s_err_is (&err, "invalid_field", "field 'limits.s': must be a number"),
        "string rejected: %s", err.message);
    err_clear (&err);
    ok (jsonv_number (o, "limits.", "neg", false, 0.01, 4, &d, &err) == -1
            && s_err_is (&err, "invalid_field", "field 'limits.neg'"),
        "below range rejected");
    err_clear (&err);
    ok (jsonv_number (o, "limits.", "two", false, 0.01, 1.5, &d, &err) == -1,
        "above range rejected");
    err_clear (&err);
    ok (jsonv_number (o, "limits.", "cpus_x", true, 0.01, 4, &d, &err) == -1
            && s_err_is (&err, "invalid_field", "field 'limits.cpus_x' is required"),
        "absent required number rejected");

    bool b = false;
    ok (jsonv_bool (o, "", "t", &b, &err) == 0 && b, "true accepted");
    ok (jsonv_bool (o, "", "f", &b, &err) == 0 && !b, "false accepted");
    err_clear (&err);
    ok (jsonv_bool (o, "", "one", &b, &err) == -1
            && s_err_is (&err, "invalid_field", "field 'one': must be true or false"),
        "1 is not a boolean");
    err_clear (&err);
    ok (jsonv_bool (o, "", "str", &b, &err) == -1 && s_err_is (&err, "invalid_field", "'str'"),
        "\"true\" is not a boolean");
    b = true;
    ok (jsonv_bool (o, "", "missing", &b, &err) == 0 && b, "absent leaves the output untouched");
    json_decref (o);
}

/* ---- environment maps -------------------------------------------------- */

static int
s_env (const char *body, size_t max_entries, size_t max_bytes, json_t **out, err_t *err)
{
    json_t *o = s_parse (body);
    if (!o) {
        err_set (err, 0, "test", "test body does not parse");
        return -2;
    }
    err_clear (err);
    int rc = jsonv_env (o, "", "env", max_entries, max_bytes, out, err);
    json_decref (o);
    return rc;
}

static void
test_env (void)
{
    err_t err;
    json_t *o = s_parse ("{\"env\":{\"PATH\":\"/bin\",\"_x1\":\"\",\"lower_2\":\"a b=c\"}}");
    json_t *env = NULL;
    ok (jsonv_env (o, "", "env", 10, 1024, &env, &err) == 0 && env == json_object_get (o, "env")
            && json_object_size (env) == 3,
        "valid map accepted and returned borrowed");
    json_decref (o);

    env = NULL;
    ok (s_env ("{\"other\":1}", 10, 1024, &env, &err) == 0 && env == NULL, "absent env is fine");

    const char *bad_names[]
        = { "{\"env\":{\"1A\":\"x\"}}",  "{\"env\":{\"A-B\":\"x\"}}",
            "{\"env\":{\"\":\"x\"}}",    "{\"env\":{\"A B\":\"x\"}}",
            "{\"env\":{\"A=B\":\"x\"}}", "{\"env\":{\"\\u00c9T\\u00c9\":\"x\"}}" };
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++)
        ok (s_env (bad_names[i], 10, 1024, &env, &err) == -1
                && s_err_is (&err, "invalid_field", "invalid variable name"),
            "bad name rejected: %s", bad_names[i]);
    ok (s_env ("{\"env\":{\"1A\":\"x\"}}", 10, 1024, &env, &err) == -1
            && strstr (err.message, "'1A'") && strstr (err.message, "field 'env'"),
        "message names the field and the variable: %s", err.message);

    char longname[300];
    snprintf (longname, sizeof longname, "{\"env\":{\"%0257d\":\"x\"}}", 0);
    longname[9] = 'A';
    ok (s_env (longname, 10, 1 << 20, &env, &err) == -1
            && s_err_is (&err, "invalid_field", "invalid variable name"),
        "a 257-character name is rejected");

    const char *bad_values[]
        = { "{\"env\":{\"A\":5}}", "{\"env\":{\"A\":null}}", "{\"env\":{\"A\":true}}",
            "{\"env\":{\"A\":[\"x\"]}}", "{\"env\":{\"A\":{}}}" };
    for (size_t i = 0; i < sizeof bad_values / sizeof bad_values[0]; i++)
        ok (s_env (bad_values[i], 10, 1024, &env, &err) == -1
                && s_err_is (&err, "invalid_field", "field 'env.A': must be a string"),
            "non-string value rejected: %s", bad_values[i]);

    ok (s_env ("{\"env\":[\"A=1\"]}", 10, 1024, &env, &err) == -1
            && s_err_is (&err, "invalid_field", "field 'env'"),
        "array instead of object rejected");
    ok (s_env ("{\"env\":\"A=1\"}", 10, 1024, &env, &err) == -1,
        "string instead of object rejected");

    ok (s_env ("{\"env\":{\"A\":\"1\",\"B\":\"2\"}}", 2, 1024, &env, &err) == 0,
        "exactly max_entries accepted");
    ok (s_env ("{\"env\":{\"A\":\"1\",\"B\":\"2\",\"C\":\"3\"}}", 2, 1024, &env, &err) == -1
            && s_err_is (&err, "invalid_field", "more than 2"),
        "too many entries rejected: %s", err.message);
    /* "A=123456789\0" takes 1 + 9 + 2 = 12 bytes */
    ok (s_env ("{\"env\":{\"A\":\"123456789\"}}", 10, 12, &env, &err) == 0,
        "total size at the limit accepted");
    ok (s_env ("{\"env\":{\"A\":\"123456789\"}}", 10, 11, &env, &err) == -1
            && s_err_is (&err, "invalid_field", "larger than 11 bytes"),
        "too large rejected: %s", err.message);
}

/* ---- untrusted bytes to JSON ------------------------------------------- */

/* The JSON string made from bytes equals the expected bytes exactly. */
static bool
s_repair_is (const char *in, size_t in_len, const char *want, size_t want_len)
{
    json_t *s = jsonv_string_from_bytes (in, in_len);
    bool eq = s && json_string_length (s) == want_len
              && memcmp (json_string_value (s), want, want_len) == 0;
    json_decref (s);
    return eq;
}

/* The JSON string made from bytes is prefix followed by 1..max_fffd
   replacement characters and nothing else. */
static bool
s_repair_is_prefix_fffd (const char *in, size_t in_len, const char *prefix, size_t max_fffd)
{
    json_t *s = jsonv_string_from_bytes (in, in_len);
    const char *v = s ? json_string_value (s) : NULL;
    size_t n = s ? json_string_length (s) : 0, plen = strlen (prefix);
    bool good = v && n > plen && (n - plen) % 3 == 0 && (n - plen) / 3 <= max_fffd
                && memcmp (v, prefix, plen) == 0;
    for (size_t i = plen; good && i < n; i += 3)
        good = memcmp (v + i, "\xEF\xBF\xBD", 3) == 0;
    json_decref (s);
    return good;
}

/* What a client receives parses under a strict JSON parser. */
static bool
s_roundtrips (const char *in, size_t in_len)
{
    json_t *s = jsonv_string_from_bytes (in, in_len);
    char *text = s ? jsonv_dumps (s) : NULL;
    json_error_t jerr;
    json_t *back = text ? json_loads (text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr) : NULL;
    bool good = back && json_is_string (back) && json_equal (back, s);
    json_decref (back);
    free (text);
    json_decref (s);
    return good;
}

#define FFFD    "\xEF\xBF\xBD"
#define IN(lit) lit, sizeof lit - 1

static void
test_string_from_bytes (void)
{
    ok (s_repair_is (IN ("hello"), IN ("hello")), "ASCII unchanged");
    const char utf8[] = "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 \xF4\x8F\xBF\xBF";
    ok (s_repair_is (IN (utf8), IN (utf8)), "valid 2-, 3- and 4-byte sequences unchanged");
    ok (s_repair_is (IN (""), IN ("")), "empty input gives an empty string");

    ok (s_repair_is (IN ("\xFF"), IN (FFFD)), "0xFF becomes U+FFFD");
    ok (s_repair_is (IN ("a\xFF"
                         "b"),
                     IN ("a" FFFD "b")),
        "invalid byte between valid ones: only it is replaced");
    ok (s_repair_is (IN ("\x80"), IN (FFFD)), "lone continuation byte replaced");

    ok (s_repair_is_prefix_fffd (IN ("ab\xE2\x82"), "ab", 2),
        "truncated 3-byte sequence at the end replaced");
    ok (s_repair_is_prefix_fffd (IN ("x\xF0\x9F\x98"), "x", 3),
        "truncated 4-byte sequence at the end replaced");

    ok (s_repair_is (IN ("\xC0\x80"), IN (FFFD FFFD)),
        "overlong NUL (C0 80) does not decode to NUL");
    ok (s_repair_is (IN ("\xE0\x80\xAF"), IN (FFFD FFFD FFFD)), "overlong '/' (E0 80 AF) replaced");
    ok (s_repair_is (IN ("\xED\xA0\x80"), IN (FFFD FFFD FFFD)),
        "UTF-16 surrogate (ED A0 80) replaced");
    ok (s_repair_is (IN ("\xF4\x90\x80\x80"), IN (FFFD FFFD FFFD FFFD)),
        "code point above U+10FFFF replaced");

    ok (s_repair_is (IN ("a\0b"), IN ("a\0b")), "embedded NUL kept (length 3)");
    json_t *z = jsonv_string_from_bytes (IN ("a\0b"));
    char *zt = jsonv_dumps (z);
    ok (zt && strcmp (zt, "\"a\\u0000b\"") == 0, "NUL serialised as \\u0000: %s", zt);
    free (zt);
    json_decref (z);

    const char *mixed[]
        = { "\xFF\xFE", "ok\xC3", "\xED\xBF\xBF tail", "\xC1\xBF", "\xF8\x88\x80\x80" };
    for (size_t i = 0; i < sizeof mixed / sizeof mixed[0]; i++)
        ok (s_roundtrips (mixed[i], strlen (mixed[i])),
            "repaired bytes #%zu serialise to JSON a strict parser accepts", i);

    json_t *obj = json_pack ("{s:i}", "a", 1);
    char *text = jsonv_dumps (obj);
    ok (text && strcmp (text, "{\"a\":1}") == 0, "jsonv_dumps is compact");
    free (text);
    json_decref (obj);
}

int
main (void)
{
    test_parse_object ();
    test_only_keys ();
    test_string ();
    test_int ();
    test_number_bool ();
    test_env ();
    test_string_from_bytes ();
    return tap_done ();
}
