/*
 * verify_json.c -- strict recursive-descent parser for kcat -J envelope
 * lines (what it accepts: verify_json.h). It decodes only the fields
 * kwal-verify needs and validates-and-skips everything else.
 */
#include "verify_json.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 32

typedef struct {
    const char *s;      /* start of the line (for positions in errors) */
    const char *p;
    const char *end;
    char *err;
    size_t err_size;
} jp_t;

__attribute__((format(printf, 2, 3)))
static bool jfail(jp_t *j, const char *fmt, ...)
{
    char msg[160];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(j->err, j->err_size, "%s at byte %ld", msg, (long)(j->p - j->s));
    return false;
}

static void ws(jp_t *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static bool jstr_put(jp_t *j, kw_jstr_t *out, const char *b, size_t n)
{
    if (out == NULL)
        return true;
    if (out->len + n + 1 > out->cap) {
        size_t cap = out->cap ? out->cap : 256;
        char *np;

        while (cap < out->len + n + 1)
            cap *= 2;
        if ((np = realloc(out->p, cap)) == NULL)
            return jfail(j, "out of memory");
        out->p = np;
        out->cap = cap;
    }
    memcpy(out->p + out->len, b, n);
    out->len += n;
    out->p[out->len] = '\0';
    return true;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool hex4(jp_t *j, unsigned *out)
{
    unsigned v = 0;

    if (j->end - j->p < 4)
        return jfail(j, "short \\u escape");
    for (int i = 0; i < 4; i++) {
        int h = hexval(j->p[i]);

        if (h < 0)
            return jfail(j, "bad hex digit in \\u escape");
        v = (v << 4) | (unsigned)h;
    }
    j->p += 4;
    *out = v;
    return true;
}

static bool put_utf8(jp_t *j, kw_jstr_t *out, unsigned cp)
{
    char b[4];
    size_t n;

    if (cp < 0x80) {
        b[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (char)(0xc0 | (cp >> 6));
        b[1] = (char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        b[0] = (char)(0xe0 | (cp >> 12));
        b[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        b[2] = (char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        b[0] = (char)(0xf0 | (cp >> 18));
        b[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        b[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        b[3] = (char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    return jstr_put(j, out, b, n);
}

/* A string starting at j->p (the opening quote); decoded into out unless
 * out is NULL. */
static bool parse_string(jp_t *j, kw_jstr_t *out)
{
    if (out != NULL) {
        out->len = 0;
        out->null = false;
        out->present = true;
        if (!jstr_put(j, out, "", 0))
            return false;
    }
    if (j->p >= j->end || *j->p != '"')
        return jfail(j, "expected a string");
    j->p++;
    for (;;) {
        const char *run = j->p;
        unsigned cp, lo;
        char c;

        while (j->p < j->end && *j->p != '"' && *j->p != '\\' &&
               (unsigned char)*j->p >= 0x20)
            j->p++;
        if (!jstr_put(j, out, run, (size_t)(j->p - run)))
            return false;
        if (j->p >= j->end)
            return jfail(j, "unterminated string");
        c = *j->p;
        if (c == '"') {
            j->p++;
            return true;
        }
        if (c != '\\')
            return jfail(j, "raw control character 0x%02x in string", (unsigned)c);
        if (++j->p >= j->end)
            return jfail(j, "unterminated escape");
        c = *j->p++;
        switch (c) {
        case '"': case '\\': case '/':
            if (!jstr_put(j, out, &c, 1))
                return false;
            break;
        case 'b': c = '\b'; if (!jstr_put(j, out, &c, 1)) return false; break;
        case 'f': c = '\f'; if (!jstr_put(j, out, &c, 1)) return false; break;
        case 'n': c = '\n'; if (!jstr_put(j, out, &c, 1)) return false; break;
        case 'r': c = '\r'; if (!jstr_put(j, out, &c, 1)) return false; break;
        case 't': c = '\t'; if (!jstr_put(j, out, &c, 1)) return false; break;
        case 'u':
            if (!hex4(j, &cp))
                return false;
            if (cp >= 0xdc00 && cp <= 0xdfff)
                return jfail(j, "lone low surrogate \\u%04x", cp);
            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (j->end - j->p < 2 || j->p[0] != '\\' || j->p[1] != 'u')
                    return jfail(j, "high surrogate \\u%04x without its pair", cp);
                j->p += 2;
                if (!hex4(j, &lo))
                    return false;
                if (lo < 0xdc00 || lo > 0xdfff)
                    return jfail(j, "high surrogate \\u%04x followed by \\u%04x", cp, lo);
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            }
            if (!put_utf8(j, out, cp))
                return false;
            break;
        default:
            j->p--;
            return jfail(j, "bad escape \\%c", c);
        }
    }
}

/* A number in JSON's grammar. With out != NULL it must be an integer that
 * fits int64_t. */
static bool parse_number(jp_t *j, int64_t *out)
{
    const char *start = j->p;
    bool integer = true;
    long long v;
    char buf[32], *endp;

    if (j->p < j->end && *j->p == '-')
        j->p++;
    if (j->p >= j->end || *j->p < '0' || *j->p > '9')
        return jfail(j, "expected a number");
    if (*j->p == '0')
        j->p++;
    else
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
            j->p++;
    if (j->p < j->end && *j->p == '.') {
        integer = false;
        j->p++;
        if (j->p >= j->end || *j->p < '0' || *j->p > '9')
            return jfail(j, "expected a digit after '.'");
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
            j->p++;
    }
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        integer = false;
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
            j->p++;
        if (j->p >= j->end || *j->p < '0' || *j->p > '9')
            return jfail(j, "expected a digit in the exponent");
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
            j->p++;
    }
    if (out == NULL)
        return true;
    if (!integer || (size_t)(j->p - start) >= sizeof(buf)) {
        j->p = start;
        return jfail(j, "expected an integer");
    }
    memcpy(buf, start, (size_t)(j->p - start));
    buf[j->p - start] = '\0';
    errno = 0;
    v = strtoll(buf, &endp, 10);
    if (errno != 0 || *endp != '\0') {
        j->p = start;
        return jfail(j, "integer out of range");
    }
    *out = v;
    return true;
}

static bool literal(jp_t *j, const char *lit)
{
    size_t n = strlen(lit);

    if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0)
        return jfail(j, "expected %s", lit);
    j->p += n;
    return true;
}

static bool skip_value(jp_t *j, int depth);

static bool skip_container(jp_t *j, int depth, char close)
{
    j->p++;   /* '[' or '{' */
    ws(j);
    if (j->p < j->end && *j->p == close) {
        j->p++;
        return true;
    }
    for (;;) {
        ws(j);
        if (close == '}') {
            if (!parse_string(j, NULL))
                return false;
            ws(j);
            if (j->p >= j->end || *j->p != ':')
                return jfail(j, "expected ':'");
            j->p++;
            ws(j);
        }
        if (!skip_value(j, depth + 1))
            return false;
        ws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            continue;
        }
        if (j->p < j->end && *j->p == close) {
            j->p++;
            return true;
        }
        return jfail(j, "expected ',' or '%c'", close);
    }
}

static bool skip_value(jp_t *j, int depth)
{
    if (depth > MAX_DEPTH)
        return jfail(j, "nested deeper than %d", MAX_DEPTH);
    if (j->p >= j->end)
        return jfail(j, "expected a value");
    switch (*j->p) {
    case '"': return parse_string(j, NULL);
    case '{': return skip_container(j, depth, '}');
    case '[': return skip_container(j, depth, ']');
    case 't': return literal(j, "true");
    case 'f': return literal(j, "false");
    case 'n': return literal(j, "null");
    default: return parse_number(j, NULL);
    }
}

/* A string or null into out. */
static bool string_or_null(jp_t *j, kw_jstr_t *out)
{
    if (j->p < j->end && *j->p == 'n') {
        if (!literal(j, "null"))
            return false;
        out->present = true;
        out->null = true;
        out->len = 0;
        return true;
    }
    return parse_string(j, out);
}

bool kw_envelope_parse(const char *line, size_t len, kw_envelope_t *env,
                       char *err, size_t err_size)
{
    jp_t j = { line, line, line + len, err, err_size };
    kw_jstr_t name = { 0 };
    bool ok = false;

    env->topic.present = env->key.present = env->payload.present = false;
    env->tstype.present = false;
    env->has_partition = env->has_offset = env->has_ts = false;
    env->key.null = true;

    ws(&j);
    if (j.p >= j.end || *j.p != '{') {
        jfail(&j, "expected '{'");
        goto done;
    }
    j.p++;
    ws(&j);
    if (j.p < j.end && *j.p == '}') {
        j.p++;
    } else {
        for (;;) {
            const char *field_at;

            ws(&j);
            field_at = j.p;
            if (!parse_string(&j, &name))
                goto done;
            ws(&j);
            if (j.p >= j.end || *j.p != ':') {
                jfail(&j, "expected ':'");
                goto done;
            }
            j.p++;
            ws(&j);
#define DUP(cond) do { if (cond) { j.p = field_at; \
        jfail(&j, "field \"%s\" given twice", name.p); goto done; } } while (0)
            if (strcmp(name.p, "topic") == 0) {
                DUP(env->topic.present);
                if (!parse_string(&j, &env->topic))
                    goto done;
            } else if (strcmp(name.p, "partition") == 0) {
                DUP(env->has_partition);
                if (!parse_number(&j, &env->partition))
                    goto done;
                env->has_partition = true;
            } else if (strcmp(name.p, "offset") == 0) {
                DUP(env->has_offset);
                if (!parse_number(&j, &env->offset))
                    goto done;
                env->has_offset = true;
            } else if (strcmp(name.p, "ts") == 0) {
                DUP(env->has_ts);
                if (!parse_number(&j, &env->ts))
                    goto done;
                env->has_ts = true;
            } else if (strcmp(name.p, "tstype") == 0) {
                DUP(env->tstype.present);
                if (!parse_string(&j, &env->tstype))
                    goto done;
            } else if (strcmp(name.p, "key") == 0) {
                DUP(env->key.present);
                if (!string_or_null(&j, &env->key))
                    goto done;
            } else if (strcmp(name.p, "payload") == 0) {
                DUP(env->payload.present);
                if (!string_or_null(&j, &env->payload))
                    goto done;
            } else if (!skip_value(&j, 1)) {
                goto done;
            }
#undef DUP
            ws(&j);
            if (j.p < j.end && *j.p == ',') {
                j.p++;
                continue;
            }
            if (j.p < j.end && *j.p == '}') {
                j.p++;
                break;
            }
            jfail(&j, "expected ',' or '}'");
            goto done;
        }
    }
    ws(&j);
    if (j.p != j.end) {
        jfail(&j, "trailing characters after the object");
        goto done;
    }
    if (!env->topic.present || !env->has_partition || !env->has_offset ||
        !env->payload.present) {
        snprintf(err, err_size, "missing field \"%s\"",
                 !env->topic.present ? "topic" : !env->has_partition ? "partition" :
                 !env->has_offset ? "offset" : "payload");
        goto done;
    }
    if (!env->key.present)
        env->key.null = true;
    ok = true;
done:
    free(name.p);
    return ok;
}

void kw_envelope_free(kw_envelope_t *env)
{
    free(env->topic.p);
    free(env->key.p);
    free(env->payload.p);
    free(env->tstype.p);
    memset(env, 0, sizeof(*env));
}
