#include "size.h"

#include <stddef.h>

const char vgpu_size_forms[] =
    "plain bytes (e.g. 4294967296) or a number with a binary unit k/m/g/t, optionally followed by "
    "i and/or b, any case (e.g. 4096m, 4096M, 4g, 4Gi, 4GiB)";

static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Parses the leading decimal digits; returns the position after them or NULL. */
static const char *parse_digits(const char *p, uint64_t *out)
{
    uint64_t v = 0;
    const char *start = p;
    while (*p >= '0' && *p <= '9') {
        uint64_t d = (uint64_t)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return NULL;
        v = v * 10 + d;
        p++;
    }
    if (p == start)
        return NULL;
    *out = v;
    return p;
}

static const char *skip_blanks(const char *p)
{
    while (is_blank(*p))
        p++;
    return p;
}

/* Leading blanks and the decimal digits after them; the position after the digits, or NULL. */
static const char *leading_number(const char *s, uint64_t *out)
{
    return s == NULL ? NULL : parse_digits(skip_blanks(s), out);
}

/* Only blanks are left. */
static bool at_end(const char *p)
{
    return *skip_blanks(p) == '\0';
}

bool vgpu_parse_size(const char *s, uint64_t *out)
{
    uint64_t v;
    const char *p = leading_number(s, &v);
    if (p == NULL)
        return false;
    unsigned shift = 0;
    switch (*p) {
    case 'k':
    case 'K':
        shift = 10;
        break;
    case 'm':
    case 'M':
        shift = 20;
        break;
    case 'g':
    case 'G':
        shift = 30;
        break;
    case 't':
    case 'T':
        shift = 40;
        break;
    default:
        break;
    }
    if (shift != 0) {
        p++;
        if (*p == 'i' || *p == 'I')
            p++;
        if (*p == 'b' || *p == 'B')
            p++;
    } else if (*p == 'b' || *p == 'B') {
        p++;
    }
    if (!at_end(p))
        return false;
    if (shift != 0 && v > (UINT64_MAX >> shift))
        return false;
    *out = v << shift;
    return true;
}

/* Blanks, decimal digits, an optional '%' when allowed, blanks, and nothing else. */
static bool parse_whole(const char *s, bool percent_sign, uint64_t *out)
{
    uint64_t v;
    const char *p = leading_number(s, &v);
    if (p == NULL)
        return false;
    if (percent_sign && *p == '%')
        p++;
    if (!at_end(p))
        return false;
    *out = v;
    return true;
}

bool vgpu_parse_uint(const char *s, uint64_t *out)
{
    return parse_whole(s, false, out);
}

bool vgpu_parse_percent(const char *s, unsigned *out)
{
    uint64_t v;
    if (!parse_whole(s, true, &v) || v > 100)
        return false;
    *out = (unsigned)v;
    return true;
}
